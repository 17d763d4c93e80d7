//! What the server does beside serving its protocols: the Prometheus
//! metrics listener, reloading on SIGHUP, and where the OAuth metadata is
//! (for XEP-0493).

use super::*;

/// SIGHUP reloads the config (what `ctl reload` does, see [`Reloader`]); a
/// bad config is logged and the old one stays.
pub(super) async fn reload_on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: reload with `petrel ctl reload`");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let r = reloader.clone();
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Ok(done)) => tracing::info!("SIGHUP: {done}"),
            Ok(Err(e)) => tracing::error!("SIGHUP: {e}"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
        }
    }
}

/// Where the RFC 8414 metadata document is served (see
/// [`Shared::oauth_metadata`]); the issuer is computed as the OAuth routes
/// compute it.
pub(super) fn oauth_metadata_url(config: &Config, bound: &[Bound]) -> Option<Arc<str>> {
    let issuer = match &config.oauth_issuer {
        Some(i) => i.trim_end_matches('/').to_string(),
        None => {
            let http = |tls: bool| {
                bound
                    .iter()
                    .find(|b| b.listener.module == Module::Http && b.listener.tls == tls)
            };
            let (b, scheme) = match http(true) {
                Some(b) => (b, "https"),
                None => (http(false)?, "http"),
            };
            format!("{scheme}://{}:{}", config.default_host(), b.addr.port())
        }
    };
    Some(format!("{issuer}/.well-known/oauth-authorization-server").into())
}

/// Prometheus metrics: `GET /metrics` answers the OpenMetrics text of
/// [`crate::metrics`], with what is a state read now; anything else 404.
/// HTTP/1.1, one request at a time per connection, bounded like the HTTP
/// listener's.
pub(super) async fn serve_metrics(b: Bound, shared: Arc<Shared>) {
    use hyper::{Response, StatusCode};
    let shutdown = shared.shutdown.clone();
    let acceptor = shared.acceptor(&b);
    let headers = Duration::from_secs(shared.config.http_header_timeout);
    accept_loop(b.tcp, acceptor, move |tcp, peer, permit| {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        async move {
            let _permit = permit;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let ok =
                            req.method() == hyper::Method::GET && req.uri().path() == "/metrics";
                        let resp = if ok {
                            let mut queued = vec![("mqtt", 0u64), ("xmpp", 0u64)];
                            for s in shared.registry.sessions() {
                                queued[usize::from(s.protocol == Protocol::Xmpp)].1 +=
                                    s.queued as u64;
                            }
                            let state = crate::metrics::State {
                                sessions: vec![
                                    ("mqtt", shared.registry.len(Protocol::Mqtt) as u64),
                                    ("xmpp", shared.registry.len(Protocol::Xmpp) as u64),
                                ],
                                retained: shared.broker.retained_count(),
                                store_records: shared.auth.store().records(),
                                queued,
                                connections: shared
                                    .listener_conns
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .iter()
                                    .map(|(p, t, n)| {
                                        (
                                            *p,
                                            *t,
                                            n.load(std::sync::atomic::Ordering::Relaxed) as u64,
                                        )
                                    })
                                    .collect(),
                            };
                            let body = tokio::task::spawn_blocking(move || {
                                crate::metrics::metrics().encode(&state)
                            })
                            .await
                            .unwrap_or_default();
                            Response::builder()
                                .header(
                                    hyper::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(body)
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body("not found\n".to_string())
                        };
                        Ok::<_, std::convert::Infallible>(resp.expect("a valid response"))
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(headers)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        }
    })
    .await;
}
