//! A future run inside a tracing span.

use std::future::Future;

pin_project_lite::pin_project! {
    /// A future run inside a tracing span, like `tracing::Instrumented`, but
    /// a span that is disabled (the log level filters it out) costs one
    /// pointer in the task instead of a whole `Span`.
    pub struct Traced<F> {
        span: Option<Box<tracing::Span>>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Traced<F> {
    pub fn new(fut: F, span: tracing::Span) -> Traced<F> {
        Traced {
            span: (!span.is_disabled()).then(|| Box::new(span)),
            fut,
        }
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_deref().map(|s| s.enter());
        this.fut.poll(cx)
    }
}
