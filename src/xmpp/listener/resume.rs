//! XEP-0198 resumption for the c2s connection task: the session's task
//! outlives its socket. A lost connection leaves a resumable session
//! detached (still registered and receiving, its stanzas going to the
//! unacknowledged queue) until `resume_timeout`; a `<resume/>` on a new
//! connection hands that connection's socket and parser to the waiting task
//! over a channel found by resumption id, so one task owns one session from
//! bind to end.

use super::*;

/// How long a resuming connection waits for the session's task to take it.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How a new connection reaches the task of a resumable session.
pub struct SmHandle {
    account: crate::auth::BareJid,
    tx: mpsc::Sender<Box<Resumption>>,
}

/// A new connection asks to resume a session (XEP-0198 §5): its socket and
/// parser go to the session's task, which answers whether it took them.
pub(super) struct Resumption {
    pub(super) stream: Stream,
    pub(super) parser: XmlStream,
    pub(super) peer: std::net::IpAddr,
    /// Stanzas the client handled.
    pub(super) h: u32,
    /// The new login's token, and its scopes (kept apart: a FAST login
    /// that invalidated its token has scopes and no token).
    pub(super) grant: Option<crate::auth::Grant>,
    pub(super) scopes: Option<crate::auth::Scopes>,
    /// A resumption inline in a SASL2 login (XEP-0388): `<resumed/>` goes
    /// inside the `<success/>`, with these parts.
    pub(super) sasl2: Option<Sasl2Resume>,
    pub(super) done: oneshot::Sender<Result<(), Refused>>,
}

/// What a SASL2 `<success/>` carries beside `<resumed/>`.
pub(super) struct Sasl2Resume {
    pub(super) data: Option<Vec<u8>>,
    pub(super) token: Option<Vec<u8>>,
}

/// A resumption the session refused: the socket and parser back, and the
/// `<failed/>` to send.
pub(super) struct Refused {
    pub(super) stream: Stream,
    pub(super) parser: XmlStream,
    pub(super) failed: Vec<u8>,
}

/// The XEP-0198 `<enabled/>` answer.
fn enabled(id: Option<&str>, max: u64) -> Vec<u8> {
    match id {
        Some(id) => {
            format!("<enabled xmlns='{NS_SM}' id='{id}' resume='true' max='{max}'/>").into_bytes()
        }
        None => format!("<enabled xmlns='{NS_SM}'/>").into_bytes(),
    }
}

/// A resumption of this session that has arrived, if one has (registering
/// the waker otherwise).
pub(super) fn poll_resumption(
    rx: &mut Option<mpsc::Receiver<Box<Resumption>>>,
    cx: &mut Context<'_>,
) -> Option<Box<Resumption>> {
    match rx.as_mut()?.poll_recv(cx) {
        Poll::Ready(r) => r,
        Poll::Pending => None,
    }
}

impl Connection {
    /// The connection is lost: a resumable session waits for a resumption
    /// (XEP-0198 §5) instead of ending. False if it cannot.
    pub(super) fn detach(&mut self) -> bool {
        let resumable = self.sm.as_ref().is_some_and(|s| s.id.is_some());
        if !resumable
            || self.c2s.is_closed()
            || self.closing
            || self.ctx.shutdown.is_cancelled()
            || self.must_leave()
        {
            return false;
        }
        if self.detached.is_none() {
            tracing::info!(
                unacked = self.sm.as_ref().map_or(0, |s| s.unacked_len()),
                "connection lost: the session waits for a resumption"
            );
            let timeout = Duration::from_secs(self.ctx.resume_timeout);
            self.detached = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        self.conn = Stream::Gone;
        self.wbuf.clear();
        true
    }

    /// A detached session's wait: a resumption, news for the session (what
    /// is queued goes to the unacknowledged queue), or the deadline.
    pub(super) fn wait_detached(&mut self) -> impl Future<Output = Wake> + '_ {
        let Connection {
            route,
            resumptions,
            detached,
            ..
        } = self;
        std::future::poll_fn(move |cx| {
            if let Some(r) = poll_resumption(resumptions, cx) {
                return Poll::Ready(Wake::Resume(r));
            }
            let (route, gen) = route.as_ref().expect("bound");
            if route.register(*gen, cx.waker()) {
                return Poll::Ready(Wake::Session);
            }
            if let Some(d) = detached.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Expired);
                }
            }
            Poll::Pending
        })
    }

    /// Takes over a new connection that resumes this session: its socket
    /// replaces ours (a live old one is dropped), the client hears
    /// `<resumed/>` and gets again what it did not acknowledge, in order.
    pub(super) async fn adopt(&mut self, r: Box<Resumption>) {
        let r = *r;
        if self.must_leave() {
            // Taken over by a new bind (or kicked) before the resumption
            // came: there is nothing to resume.
            let _ = r.done.send(Err(Refused {
                stream: r.stream,
                parser: r.parser,
                failed: sm::failed("item-not-found", None),
            }));
            return;
        }
        let Some(sm) = self.sm.as_mut() else {
            return;
        };
        if let Err(e) = sm.ack(r.h) {
            tracing::info!(
                h = r.h,
                sent = e.sent,
                "a resumption acknowledged more than was sent"
            );
            let _ = r.done.send(Err(Refused {
                stream: r.stream,
                parser: r.parser,
                failed: sm::failed("unexpected-request", self.c2s.sm_handled()),
            }));
            return;
        }
        let resend: Vec<bytes::Bytes> = sm.unacked().cloned().collect();
        let previd = sm.id.clone().unwrap_or_default();
        sm.r_outstanding = false;
        if r.done.send(Ok(())).is_err() {
            // The new connection's task is gone: nothing to take over.
            return;
        }
        self.conn = r.stream;
        self.parser = r.parser;
        self.peer = r.peer;
        self.detached = None;
        self.wbuf.clear();
        self.inactive = false;
        if let Some((route, _)) = &self.route {
            self.ctx.registry.set_grant(route, r.grant.clone());
        }
        if let Some(im) = self.bound.as_mut() {
            im.scopes = r.scopes.clone();
        }
        tracing::info!(resent = resend.len(), "session resumed");
        let h = self.c2s.sm_handled().unwrap_or(0);
        let resumed = format!("<resumed xmlns='{NS_SM}' previd='{previd}' h='{h}'/>").into_bytes();
        match r.sasl2 {
            Some(s) => {
                let parts = super::super::sasl2::SuccessParts {
                    data: s.data,
                    identifier: self.c2s.jid().map(|j| j.to_string()).unwrap_or_default(),
                    resume: Some(resumed),
                    bound: None,
                    token: s.token,
                };
                self.wbuf
                    .extend_from_slice(&super::super::sasl2::success(&parts));
                self.wbuf.extend_from_slice(&self.c2s.features_bytes());
            }
            None => self.wbuf.extend_from_slice(&resumed),
        }
        for b in resend {
            self.wbuf.extend_from_slice(&b);
        }
        // What was held back goes out now; the new stream starts active.
        self.release_held();
        // Stanzas the client sent right after <resume/>.
        Box::pin(self.drain_parser()).await;
    }

    /// XEP-0198 `<enable/>`: stream management from here on; with
    /// resumption, the session is findable by a fresh id. The `<enabled/>`
    /// answer.
    pub(super) fn enable_sm(&mut self, resume: bool) -> Vec<u8> {
        let resumable = resume && self.ctx.resume_timeout > 0;
        let id = resumable.then(|| {
            hex::encode(crate::session::random::<16>(
                self.ctx.registry.entropy().as_ref(),
            ))
        });
        if let (Some(id), Some(im)) = (&id, self.bound.as_ref()) {
            let (tx, rx) = mpsc::channel(1);
            self.ctx.resumable.insert(
                id.clone(),
                SmHandle {
                    account: im.user.clone(),
                    tx,
                },
            );
            self.resumptions = Some(rx);
        }
        let answer = enabled(id.as_deref(), self.ctx.resume_timeout);
        self.sm = Some(Box::new(StreamMgmt::new(id, self.ctx.sm_limits)));
        answer
    }

    /// XEP-0198 `<resume/>` on a new stream: hands this connection to the
    /// session's task. `Ok` when it took it (this task is done); the
    /// `<failed/>` to send otherwise (the client may bind instead).
    pub(super) async fn resume(
        &mut self,
        previd: String,
        h: u32,
        sasl2: Option<Sasl2Resume>,
    ) -> Result<(), Vec<u8>> {
        let tx = self
            .ctx
            .resumable
            .get(&previd)
            .filter(|e| Some(&e.account) == self.c2s.user())
            .map(|e| e.tx.clone());
        let Some(tx) = tx else {
            return Err(sm::failed("item-not-found", None));
        };
        if self.flush().await.is_err() {
            // Nothing can be written to this connection: it is done.
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let r = Box::new(Resumption {
            stream: std::mem::replace(&mut self.conn, Stream::Gone),
            parser: std::mem::replace(&mut self.parser, XmlStream::new(**self.ctx.limits.load())),
            peer: self.peer,
            h,
            grant: self.c2s.grant().cloned(),
            scopes: self.c2s.scopes().cloned(),
            sasl2,
            done,
        });
        if let Err(e) = tx.try_send(r) {
            // The session is ending, or another resumption is under way.
            let r = e.into_inner();
            self.conn = r.stream;
            self.parser = r.parser;
            return Err(sm::failed("item-not-found", None));
        }
        match tokio::time::timeout(HANDOVER_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(refused))) => {
                self.conn = refused.stream;
                self.parser = refused.parser;
                Err(refused.failed)
            }
            // The session ended holding the socket, or is stuck: this
            // connection cannot go on.
            _ => Ok(()),
        }
    }
}
