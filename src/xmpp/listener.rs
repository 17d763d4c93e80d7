//! The c2s connection task: the thin I/O shell around [`C2s`] and [`ImServer`].
//!
//! One task per connection, under the shared accept loop's connection limit.
//! It waits on whichever comes first — bytes from the socket, stanzas queued
//! for the session by others, a kick (replaced by a new session, or too slow),
//! the login token ending, server shutdown, or the negotiation deadline — and
//! carries out the [`Output`]s of the state machine.
//!
//! Idle cost: the socket is read through a per-thread scratch buffer, so an
//! idle connection holds no read buffer (the parser keeps bytes only while a
//! stanza is incomplete); writes are batched into a buffer dropped once
//! flushed; the negotiation timer is dropped after binding; and the session
//! queue exists only once a resource is bound.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::c2s::{C2s, Output, TlsPolicy};
use super::im::{ImServer, ImSession};
use super::router::Route;
use super::sasl::{self, AuthRequest};
use super::sm::{self, SmLimits, StreamMgmt, NS_SM};
use super::stanza::StreamCondition;
use super::stream::{Limits, XmlStream};
use crate::auth::AuthCore;
use crate::config::Listener;
use crate::net::{accept_loop, Acceptor, Stream};
use crate::session::{Kick, Registry};

/// XEP-0198 resumption: how a session's task outlives its socket.
mod resume;
pub use resume::SmHandle;
use resume::{poll_resumption, Refused, Resumption};
/// XEP-0388 SASL2 success: resumption, Bind 2 and FAST tokens inline.
mod sasl2;

/// How long a write may stall before the peer is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of presence held back for an inactive client (XEP-0352) before it
/// is all written anyway.
const HELD_BYTES: usize = 256 * 1024;

/// What every c2s connection task shares.
pub struct XmppContext {
    pub auth: Arc<AuthCore>,
    pub im: Arc<ImServer>,
    pub registry: Arc<Registry>,
    /// The server's TLS acceptor (direct TLS and STARTTLS), if it has one.
    pub tls: Option<TlsAcceptor>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub hosts: Arc<[String]>,
    /// The XML limits, swapped whole by a reload (a connection keeps the
    /// ones it began with).
    pub limits: Arc<arc_swap::ArcSwap<Limits>>,
    /// Seconds a connection may take from connecting to a bound resource.
    pub negotiation_timeout: u64,
    /// XEP-0352: presence stanzas held back for an inactive client before
    /// they are all written anyway.
    pub csi_max_held: usize,
    /// XEP-0198: seconds a session whose connection was lost waits for a
    /// resumption (0: no resumption).
    pub resume_timeout: u64,
    /// XEP-0198: bounds of a session's unacknowledged stanzas.
    pub sm_limits: SmLimits,
    /// XEP-0198: resumable sessions by resumption id, shared by every c2s
    /// listener (a session begun on 5222 may resume on 5223).
    pub resumable: Arc<DashMap<String, SmHandle>>,
    /// XEP-0493: the OAuth metadata URL (RFC 8414) named in OAUTHBEARER's
    /// error, so a client without a token learns where to get one.
    pub oauth_metadata: Option<Arc<str>>,
}

/// Serves one c2s listener until shutdown.
pub async fn serve(
    tcp: TcpListener,
    listener: Listener,
    acceptor: Acceptor,
    ctx: Arc<XmppContext>,
) {
    let policy = TlsPolicy {
        secure: listener.tls,
        starttls: listener.starttls && !listener.tls,
        required: listener.requires_starttls(),
    };
    let c = ctx.clone();
    accept_loop(tcp, acceptor, move |tcp, peer, permit| {
        let ctx = c.clone();
        let span = span(peer);
        async move {
            let _permit = permit;
            let tls = if policy.secure {
                match ctx.tls.as_ref() {
                    Some(t) => Some(t),
                    None => return,
                }
            } else {
                None
            };
            let Some(stream) = Box::pin(Stream::accept(tcp, tls)).await else {
                return;
            };
            let c2s = C2s::new(ctx.hosts.clone(), policy, ctx.registry.entropy().clone())
                .with_oauth_metadata(ctx.oauth_metadata.clone());
            Box::pin(Connection::new(stream, c2s, ctx, peer.ip()).run()).await;
        }
        .instrument(span)
    })
    .await;
    // Accepting has stopped: tell bound sessions to say goodbye.
    ctx.im.router.kick_all(Kick::Shutdown);
}

fn span(peer: std::net::SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "c2s",
        %peer,
        jid = tracing::field::Empty,
        session = tracing::field::Empty
    )
}

/// Serves one connection whose stream is already open (XMPP over
/// WebSocket): the same negotiation, login and session as on TCP.
pub async fn serve_stream(
    stream: Stream,
    peer: std::net::SocketAddr,
    policy: TlsPolicy,
    ctx: Arc<XmppContext>,
) {
    let c2s = C2s::new(ctx.hosts.clone(), policy, ctx.registry.entropy().clone())
        .with_oauth_metadata(ctx.oauth_metadata.clone());
    Box::pin(Connection::new(stream, c2s, ctx, peer.ip()).run())
        .instrument(span(peer))
        .await;
}

/// Reads what the socket has into the parser: the number of bytes read (0
/// at end of stream).
fn poll_read_into(
    conn: &mut Stream,
    parser: &mut XmlStream,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    conn.poll_read_with(cx, |bytes| parser.feed(bytes))
}

fn read_into<'a>(
    conn: &'a mut Stream,
    parser: &'a mut XmlStream,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| poll_read_into(conn, parser, cx))
}

/// What woke a bound session.
enum Wake {
    Read(io::Result<usize>),
    /// The session has news: stanzas queued, a kick, a takeover.
    Session,
    /// A new connection resumes this session (XEP-0198).
    Resume(Box<Resumption>),
    /// Detached, and no resumption came in time.
    Expired,
}

struct Connection {
    /// Where the client connects from (the login throttle's key).
    peer: std::net::IpAddr,
    conn: Stream,
    parser: XmlStream,
    c2s: C2s,
    ctx: Arc<XmppContext>,
    /// Boxed: absent until a resource is bound.
    bound: Option<Box<ImSession>>,
    /// The bound session's route (its queue and kicks) and the generation
    /// this connection owns, kept apart from `bound` so the wait can borrow
    /// them separately.
    route: Option<(Arc<Route>, u64)>,
    /// Until binding: the negotiation deadline.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes waiting to be written (empty, unallocated, when idle).
    wbuf: Vec<u8>,
    /// Stanzas taken from the session's queue into `wbuf` and not yet
    /// known to be written: routed again if the connection fails first.
    unwritten: Vec<bytes::Bytes>,
    closing: bool,
    /// Alternates which source a bound session's wait looks at first, so
    /// neither a chatty client nor a busy queue starves the other.
    route_first: bool,
    /// XEP-0198 on this stream (boxed: absent unless enabled).
    sm: Option<Box<StreamMgmt>>,
    /// Resumptions of this session arrive here (when resumable).
    resumptions: Option<mpsc::Receiver<Box<Resumption>>>,
    /// The connection was lost and the session waits for a resumption
    /// until this deadline.
    detached: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The unacknowledged queue went over its limits.
    sm_overflow: bool,
    /// XEP-0352: the client said it is inactive.
    inactive: bool,
    /// A resumption that arrived while a write to the old socket hung: the
    /// socket was given up; the run loop adopts this next.
    resumed_while_writing: Option<Box<Resumption>>,
    /// Presence held back while inactive: the latest from each sender,
    /// oldest first.
    held: Vec<(String, bytes::Bytes)>,
}

impl Connection {
    /// Boxed: an async fn keeps its arguments twice in its future (once as
    /// received, once as the local), so the task holds a pointer instead.
    fn new(
        conn: Stream,
        c2s: C2s,
        ctx: Arc<XmppContext>,
        peer: std::net::IpAddr,
    ) -> Box<Connection> {
        let timeout = Duration::from_secs(ctx.negotiation_timeout);
        Box::new(Connection {
            peer,
            conn,
            parser: XmlStream::new(**ctx.limits.load()),
            c2s,
            ctx,
            bound: None,
            route: None,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            wbuf: Vec::new(),
            unwritten: Vec::new(),
            closing: false,
            route_first: false,
            sm: None,
            resumptions: None,
            detached: None,
            sm_overflow: false,
            inactive: false,
            held: Vec::new(),
            resumed_while_writing: None,
        })
    }

    fn im(&self) -> &ImServer {
        &self.ctx.im
    }

    /// Negotiation (boxed: it holds the large waits), then the bound
    /// session's small wait loop, then the goodbye.
    async fn run(mut self: Box<Self>) {
        tracing::debug!("connected");
        Box::pin(self.negotiate()).await;
        while !self.closing {
            let wake = if let Some(r) = self.resumed_while_writing.take() {
                Wake::Resume(r)
            } else if self.detached.is_some() {
                self.wait_detached().await
            } else {
                self.wait_bound().await
            };
            match wake {
                Wake::Read(Ok(0) | Err(_)) => {
                    if self.detach() {
                        continue;
                    }
                    break;
                }
                Wake::Read(Ok(_)) => {
                    Box::pin(self.drain_parser()).await;
                    self.parser.release_idle_buffer();
                }
                Wake::Session => {
                    if let Some(out) = self.session_news() {
                        Box::pin(self.execute(out)).await;
                    }
                }
                Wake::Resume(r) => Box::pin(self.adopt(r)).await,
                Wake::Expired => {
                    tracing::info!("no resumption in time: the session ends");
                    break;
                }
            }
            if self.sm_overflow {
                self.sm_overflow = false;
                let mut out = Vec::new();
                self.c2s.fail_stream(
                    StreamCondition::PolicyViolation,
                    "too many unacknowledged stanzas",
                    &mut out,
                );
                Box::pin(self.execute(out)).await;
                // A detached session ends here too.
                self.closing = true;
            }
            if self.detached.is_some() {
                // Nobody to write to: what matters is in the unacknowledged
                // queue.
                self.wbuf.clear();
                continue;
            }
            if !self.closing && self.sm.as_ref().is_some_and(|s| s.wants_ack()) {
                self.wbuf.extend_from_slice(sm::REQUEST);
                if let Some(s) = self.sm.as_mut() {
                    s.r_outstanding = true;
                }
            }
            if !self.wbuf.is_empty() && Box::pin(self.flush()).await.is_err() {
                if self.detach() {
                    continue;
                }
                break;
            }
        }
        Box::pin(self.finish()).await;
    }

    /// The session has news: a kick (or takeover) becomes the stream's
    /// goodbye (returned for `execute`); queued stanzas go to the write
    /// buffer, a batch at a time.
    fn session_news(&mut self) -> Option<Vec<Output>> {
        let (route, gen) = self.route.clone()?;
        let why = match route.take_kick(gen) {
            Err(crate::session::TakenOver) => Some(Kick::Replaced),
            Ok(k) => k,
        };
        if let Some(why) = why {
            let mut out = Vec::new();
            self.kicked(why, &mut out);
            return Some(out);
        }
        if self.detached.is_none() && self.sm.as_ref().is_some_and(|s| !s.within_limits()) {
            // Too much unacknowledged: take nothing more from the queue (its
            // senders wait, as for any slow reader) until the client's next
            // <a/> makes room; the run loop asks for it.
            return None;
        }
        let limits = *self.ctx.registry.limits();
        let now = self.ctx.registry.now_ms();
        while self.wbuf.len() < 64 * 1024 {
            match route.pop(&limits, now) {
                Some(b) => {
                    if self.inactive {
                        if let Some(from) = holdable_presence(&b) {
                            self.hold(from, b);
                            continue;
                        }
                        // Anything else goes out at once, after what was
                        // held (kept in order).
                        self.release_held();
                    }
                    self.emit(b, true);
                }
                None => {
                    route.lock().release_idle_queue();
                    return None;
                }
            }
        }
        // More than a batch waits: look again after writing this one.
        route.wake();
        None
    }

    /// The session was taken over or kicked: this task must end it.
    fn must_leave(&self) -> bool {
        self.route
            .as_ref()
            .is_some_and(|(r, gen)| r.generation() != *gen || r.lock().kick.is_some())
    }

    /// Holds back a presence while the client is inactive: a newer one from
    /// the same sender replaces the older; past `csi_max_held` senders
    /// everything goes out.
    fn hold(&mut self, from: String, b: bytes::Bytes) {
        if let Some(i) = self.held.iter().position(|(f, _)| *f == from) {
            self.held.remove(i);
        }
        self.held.push((from, b));
        let bytes: usize = self.held.iter().map(|(_, b)| b.len()).sum();
        if self.held.len() > self.ctx.csi_max_held || bytes > HELD_BYTES {
            self.release_held();
        }
    }

    /// Writes what was held back.
    fn release_held(&mut self) {
        for (_, b) in std::mem::take(&mut self.held) {
            self.emit(b, false);
        }
    }

    /// A stanza for the client: into the write buffer, and kept until the
    /// client acknowledges it (stream management) or, for one `queued` for
    /// the session by others, until it is written — either way routed again
    /// if the session ends first.
    fn emit(&mut self, b: bytes::Bytes, queued: bool) {
        self.wbuf.extend_from_slice(&b);
        if let Some(sm) = self.sm.as_mut() {
            // Over the limits a connected client is not cut off (the queue
            // stops being taken from); a detached session ends.
            self.sm_overflow |= !sm.sent(b) && self.detached.is_some();
        } else if queued {
            self.unwritten.push(b);
        }
    }

    /// Until a resource is bound (or the stream ends): the socket, the
    /// deadline and shutdown.
    async fn negotiate(&mut self) {
        while !self.closing && self.bound.is_none() {
            let mut out = Vec::new();
            tokio::select! {
                r = read_into(&mut self.conn, &mut self.parser) => match r {
                    Ok(0) | Err(_) => {
                        self.closing = true;
                        return;
                    }
                    Ok(_) => {
                        self.drain_parser().await;
                        self.parser.release_idle_buffer();
                    }
                },
                _ = self.ctx.shutdown.cancelled() => {
                    self.c2s.fail_stream(StreamCondition::SystemShutdown, "the server is shutting down", &mut out);
                },
                _ = deadline(&mut self.deadline) => self.c2s.timed_out(&mut out),
            }
            self.execute(out).await;
            if self.flush().await.is_err() {
                self.closing = true;
            }
        }
    }

    /// A bound session's wait: one `poll_fn` over the socket and the
    /// session (queued stanzas, kicks and takeovers share one waker).
    fn wait_bound(&mut self) -> impl Future<Output = Wake> + '_ {
        self.route_first = !self.route_first;
        let route_first = self.route_first;
        let Connection {
            conn,
            parser,
            route,
            resumptions,
            ..
        } = self;
        std::future::poll_fn(move |cx| {
            if let Some(r) = poll_resumption(resumptions, cx) {
                return Poll::Ready(Wake::Resume(r));
            }
            let (route, gen) = route.as_ref().expect("bound");
            let mut session = None;
            if route_first && route.register(*gen, cx.waker()) {
                return Poll::Ready(Wake::Session);
            }
            if let Poll::Ready(r) = poll_read_into(conn, parser, cx) {
                return Poll::Ready(Wake::Read(r));
            }
            if !route_first && route.register(*gen, cx.waker()) {
                session = Some(Wake::Session);
            }
            match session {
                Some(w) => Poll::Ready(w),
                None => Poll::Pending,
            }
        })
    }

    fn kicked(&mut self, why: Kick, out: &mut Vec<Output>) {
        let (cond, text) = match why {
            Kick::Replaced => (
                StreamCondition::Conflict,
                "replaced by a new session for this resource",
            ),
            Kick::TokenEnded(end) => return self.c2s.token_ended(end, out),
            Kick::AccountChanged => (
                StreamCondition::NotAuthorized,
                "the account was deleted or its password changed",
            ),
            Kick::KeepAlive => (
                StreamCondition::ConnectionTimeout,
                "no traffic for too long",
            ),
            Kick::SlowConsumer => (
                StreamCondition::PolicyViolation,
                "stanzas queued for this session were not read",
            ),
            Kick::Shutdown => (
                StreamCondition::SystemShutdown,
                "the server is shutting down",
            ),
        };
        self.c2s.fail_stream(cond, text, out);
    }

    /// Feeds every complete event to the state machine, stopping where the
    /// stream restarts (the parser is reset then) or ends.
    async fn drain_parser(&mut self) {
        while !self.closing && !self.c2s.is_closed() {
            let mut out = Vec::new();
            let restart = match self.parser.next_event() {
                Ok(Some(ev)) => {
                    self.c2s.event(ev, &mut out);
                    out.iter()
                        .any(|o| matches!(o, Output::StartTls | Output::ResetParser))
                }
                Ok(None) => return,
                Err(e) => {
                    self.c2s.parse_error(&e, &mut out);
                    true
                }
            };
            self.execute(out).await;
            if restart {
                return;
            }
        }
    }

    /// Carries out the state machine's outputs in order (including those that
    /// answers to credential checks produce).
    async fn execute(&mut self, out: Vec<Output>) {
        let mut queue: std::collections::VecDeque<Output> = out.into();
        while let Some(o) = queue.pop_front() {
            match o {
                Output::Send(b) => self.wbuf.extend_from_slice(&b),
                Output::StartTls => {
                    if self.starttls().await.is_err() {
                        self.closing = true;
                        return;
                    }
                }
                Output::ResetParser => self.parser.reset(),
                Output::Auth(req) => {
                    let cb = self.conn.channel_binding_exporter();
                    let reply = Self::authenticate(self.ctx.auth.clone(), req, self.peer, cb).await;
                    let mut more = Vec::new();
                    self.c2s.auth_reply(reply, &mut more);
                    for m in more.into_iter().rev() {
                        queue.push_front(m);
                    }
                }
                Output::Bind(jid) => self.bind(jid).await,
                Output::Stanza(el) => {
                    let Some(im) = self.bound.as_mut() else {
                        continue;
                    };
                    let fx = self.ctx.im.handle(im, el).await;
                    if fx.flush {
                        if let Err(e) = self.ctx.auth.store().barrier().await {
                            // What the replies acknowledge was not kept.
                            tracing::error!(error = %e, "store barrier failed");
                            self.closing = true;
                            return;
                        }
                    }
                    for r in fx.replies {
                        self.emit(r, false);
                    }
                    if let Some(target) = fx.congested {
                        self.wait_for_room(target).await;
                    }
                }
                Output::Reply(b) => self.emit(b, false),
                Output::SmEnable { resume } => {
                    let enabled = self.enable_sm(resume);
                    self.wbuf.extend_from_slice(&enabled);
                }
                Output::SmAck(h) => {
                    let Some(sm) = self.sm.as_mut() else { continue };
                    let was_full = !sm.within_limits();
                    let acked = sm.ack(h);
                    if was_full && sm.within_limits() {
                        // Room again: take from the queue.
                        if let Some((route, _)) = &self.route {
                            route.wake();
                        }
                    }
                    if let Err(e) = acked {
                        let app = super::element::Element::new("handled-count-too-high", NS_SM)
                            .with_attr("h", h.to_string())
                            .with_attr("send-count", e.sent.to_string());
                        let mut more = Vec::new();
                        self.c2s.fail_stream_with(
                            StreamCondition::UndefinedCondition,
                            "acknowledged more stanzas than were sent",
                            Some(app),
                            &mut more,
                        );
                        for m in more.into_iter().rev() {
                            queue.push_front(m);
                        }
                    }
                }
                Output::SmResume { previd, h } => match self.resume(previd, h, None).await {
                    Ok(()) => {
                        // The socket now belongs to the resumed session.
                        self.closing = true;
                        return;
                    }
                    Err(failed) => self.wbuf.extend_from_slice(&failed),
                },
                Output::Sasl2(done) => {
                    if self.sasl2_done(*done).await {
                        // Resumed: the socket belongs to that session.
                        self.closing = true;
                        return;
                    }
                }
                Output::ClientState(active) => {
                    self.inactive = !active;
                    if active {
                        self.release_held();
                    }
                }
                Output::Close => self.closing = true,
            }
        }
    }

    /// Flow control: the stanza just handled filled `target`'s queue to its
    /// high-water mark, so nothing more is read from this client until the
    /// queue has room (or `target`, draining nothing, is cut off). Meanwhile
    /// this session's own queue is still written out, so two sessions
    /// sending to each other never wait on each other.
    async fn wait_for_room(&mut self, target: Arc<dyn crate::session::Handle>) {
        let Some((own, gen)) = self.route.clone() else {
            return;
        };
        if own.id() == target.id() {
            // Its own queue: this task is the one that drains it.
            return;
        }
        let limits = *self.ctx.registry.limits();
        let room = crate::session::wait_for_room(target.as_ref(), &limits);
        tokio::pin!(room);
        loop {
            tokio::select! {
                _ = &mut room => return,
                _ = own.news(gen) => {}
            }
            if let Some(out) = self.session_news() {
                // Kicked while waiting: say goodbye, stop waiting.
                Box::pin(self.execute(out)).await;
                return;
            }
            if self.flush().await.is_err() {
                // A resumable session waits for its client to come back.
                if !self.detach() {
                    self.closing = true;
                }
                return;
            }
        }
    }

    /// Runs a credential check (a free function of the auth core, so no
    /// borrow of the connection lives across the await).
    async fn authenticate(
        auth: Arc<crate::auth::AuthCore>,
        req: AuthRequest,
        peer: std::net::IpAddr,
        cb: Option<Vec<u8>>,
    ) -> sasl::AuthReply {
        let req = match req {
            AuthRequest::Login(mut r) => {
                // Tokens are checked in memory, a password on a blocking thread.
                r.peer = Some(peer);
                return sasl::AuthReply::Login(auth.login_async(r).await);
            }
            AuthRequest::ScramKeys {
                user, name, hash, ..
            } => AuthRequest::ScramKeys {
                user,
                name,
                hash,
                peer: Some(peer),
            },
            AuthRequest::Fast {
                user,
                agent,
                mechanism,
                proof,
                ..
            } => {
                // In memory, like a token login: checked in place.
                let req = AuthRequest::Fast {
                    user,
                    agent,
                    mechanism,
                    proof,
                    cb: if mechanism.binds_channel() { cb } else { None },
                    peer: Some(peer),
                };
                return sasl::perform(&auth, req);
            }
        };
        match tokio::task::spawn_blocking(move || sasl::perform(&auth, req)).await {
            Ok(r) => r,
            Err(_) => sasl::AuthReply::ScramKeys(Err(crate::auth::AuthError::BadPassword), None),
        }
    }

    async fn bind(&mut self, jid: super::stanza::Jid) {
        let Some(user) = self.c2s.user().cloned() else {
            return;
        };
        // Held on another node of a cluster: taken over there first.
        self.ctx
            .im
            .router
            .take_over_elsewhere(&jid.to_string())
            .await;
        let grant = self.c2s.grant().cloned();
        let scopes = self.c2s.scopes().cloned();
        tracing::Span::current().record("jid", tracing::field::display(&jid));
        let im = self.im().open_session(jid, user, scopes);
        // The session ends with its token (revoked or expired), through
        // the registry's token index.
        self.ctx.registry.set_grant(&im.route, grant);
        if self.ctx.shutdown.is_cancelled() {
            // Bound while the listener was kicking everyone out.
            im.route.kick(Kick::Shutdown);
        }
        tracing::Span::current().record("session", im.route.id());
        self.route = Some((im.route.clone(), im.generation));
        self.bound = Some(Box::new(im));
        self.deadline = None;
        tracing::info!("session bound");
    }

    async fn starttls(&mut self) -> io::Result<()> {
        self.flush().await?;
        if self.parser.buffered() > 0 {
            // Bytes after <starttls/> were sent in the clear: refuse them.
            return Err(io::ErrorKind::InvalidData.into());
        }
        let Some(acceptor) = self.ctx.tls.clone() else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        self.conn.start_tls(&acceptor).await?;
        self.parser.reset();
        Ok(())
    }

    /// Writes and flushes what is pending, then drops the buffer.
    async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        // A session kicked while its peer does not read (a slow consumer)
        // is dropped at once instead of after the write timeout. Once the
        // stream is closing the goodbye itself is being written.
        let watch_kick = !self.c2s.is_closed();
        let route = self.route.clone();
        let Connection {
            conn,
            resumptions,
            resumed_while_writing,
            ..
        } = self;
        let write = conn.write_all(&buf);
        // A resumption while a write to the old socket hangs (a phone whose
        // radio dropped with its buffers full): the old socket is given up
        // at once and the new one taken, instead of failing the resumption
        // after its handover wait.
        // One at a time: a second waits in the channel for the first's end.
        let can_take = resumed_while_writing.is_none();
        let resumption = std::future::poll_fn(|cx| match poll_resumption(resumptions, cx) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        });
        let written = tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
                Ok(r) => r,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            },
            _ = kicked(route), if watch_kick => Err(io::ErrorKind::BrokenPipe.into()),
            r = resumption, if can_take => {
                *resumed_while_writing = Some(r);
                Err(io::ErrorKind::BrokenPipe.into())
            }
        };
        if written.is_ok() {
            self.unwritten.clear();
        }
        written
    }

    async fn finish(mut self: Box<Self>) {
        if let Some(rx) = self.resumptions.as_mut() {
            // No resumption reaches this session any more; one that was on
            // its way gets its socket back and a <failed/>.
            rx.close();
            let mut waiting: Vec<Box<Resumption>> =
                self.resumed_while_writing.take().into_iter().collect();
            while let Ok(r) = rx.try_recv() {
                waiting.push(r);
            }
            for r in waiting {
                let _ = r.done.send(Err(Refused {
                    stream: r.stream,
                    parser: r.parser,
                    failed: sm::failed("item-not-found", None),
                }));
            }
        }
        if let Some(sm) = self.sm.as_mut() {
            if let Some(id) = &sm.id {
                self.ctx.resumable.remove(id);
            }
            // Not acknowledged: back in front of the queue, for
            // close_session to route again (messages to other resources or
            // offline storage, requests answered with an error).
            let unacked = sm.take_unacked();
            if let Some(im) = self.bound.as_ref() {
                let mut st = im.route.lock();
                for b in unacked.into_iter().rev() {
                    st.requeue_front(b);
                }
            }
        }
        if let Some(im) = self.bound.take() {
            if !self.unwritten.is_empty() {
                // Taken from the queue but never written: back in front of
                // what is left, for close_session to route again.
                let mut st = im.route.lock();
                for b in self.unwritten.drain(..).rev() {
                    st.requeue_front(b);
                }
            }
            self.ctx.im.close_session(*im).await;
            tracing::info!("session closed");
        }
        let _ = self.flush().await;
        self.conn.close(Duration::from_secs(2)).await;
    }
}

/// Resolves when the bound session must leave (kicked or taken over).
async fn kicked(route: Option<(Arc<Route>, u64)>) {
    match route {
        Some((r, gen)) => std::future::poll_fn(|cx| r.poll_kicked(gen, cx)).await,
        None => std::future::pending().await,
    }
}

/// The sender of an available or unavailable presence (what an inactive
/// client need not see at once, XEP-0352 §5); `None` for anything else,
/// subscription requests included.
fn holdable_presence(b: &[u8]) -> Option<String> {
    if !b.starts_with(b"<presence") {
        return None;
    }
    let el = super::stream::read_back(b)?;
    match el.attr("type") {
        None | Some("unavailable") => el.attr("from").map(str::to_owned),
        _ => None,
    }
}

async fn deadline(d: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match d {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}
