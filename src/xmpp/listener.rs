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

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::c2s::{C2s, Output, TlsPolicy};
use super::im::{ImServer, ImSession};
use super::router::{Kick, Route};
use super::sasl::{self, AuthRequest};
use super::stanza::StreamCondition;
use super::stream::{Limits, XmlStream};
use crate::auth::{AuthCore, TokenEnd};
use crate::config::Listener;
use crate::net::{accept_loop, Acceptor, Stream};
use crate::registry::{Protocol, Registry, SessionInfo};

/// How long a write may stall before the peer is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every c2s connection task shares.
pub struct XmppContext {
    pub auth: Arc<AuthCore>,
    pub im: Arc<ImServer>,
    pub registry: Arc<Registry>,
    /// The server's TLS acceptor (direct TLS and STARTTLS), if it has one.
    pub tls: Option<TlsAcceptor>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub hosts: Arc<[String]>,
    pub limits: Limits,
    /// Seconds a connection may take from connecting to a bound resource.
    pub negotiation_timeout: u64,
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
        let span = tracing::info_span!("c2s", %peer, jid = tracing::field::Empty);
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
            let c2s = C2s::new(ctx.hosts.clone(), policy);
            Box::pin(Connection::new(stream, c2s, ctx).run()).await;
        }
        .instrument(span)
    })
    .await;
    // Accepting has stopped: tell bound sessions to say goodbye.
    ctx.im.router.kick_all(Kick::Shutdown);
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

/// A bound session: its IM state and its admin-registry entry.
struct Bound {
    im: ImSession,
    registry_key: u64,
}

/// Resolves when the login token ends (boxed: only token sessions have one).
type TokenWatch = Pin<Box<dyn Future<Output = TokenEnd> + Send>>;

/// What woke a bound session.
enum Wake {
    Read(io::Result<usize>),
    Queued,
    Kicked(Kick),
    TokenEnded(TokenEnd),
}

struct Connection {
    conn: Stream,
    parser: XmlStream,
    c2s: C2s,
    ctx: Arc<XmppContext>,
    /// Boxed: absent until a resource is bound.
    bound: Option<Box<Bound>>,
    /// The bound session's route (its queue and kicks), kept apart from
    /// `bound` so the wait can borrow it separately.
    route: Option<Arc<Route>>,
    token: Option<TokenWatch>,
    /// Until binding: the negotiation deadline.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes waiting to be written (empty, unallocated, when idle).
    wbuf: Vec<u8>,
    closing: bool,
    /// Alternates which source a bound session's wait looks at first, so
    /// neither a chatty client nor a busy queue starves the other.
    route_first: bool,
}

impl Connection {
    /// Boxed: an async fn keeps its arguments twice in its future (once as
    /// received, once as the local), so the task holds a pointer instead.
    fn new(conn: Stream, c2s: C2s, ctx: Arc<XmppContext>) -> Box<Connection> {
        let timeout = Duration::from_secs(ctx.negotiation_timeout);
        Box::new(Connection {
            conn,
            parser: XmlStream::new(ctx.limits),
            c2s,
            ctx,
            bound: None,
            route: None,
            token: None,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            wbuf: Vec::new(),
            closing: false,
            route_first: false,
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
            let wake = self.wait_bound().await;
            let mut out = Vec::new();
            match wake {
                Wake::Read(Ok(0) | Err(_)) => break,
                Wake::Read(Ok(_)) => {
                    Box::pin(self.drain_parser()).await;
                    self.parser.release_idle_buffer();
                }
                Wake::Queued => {
                    if let Some(route) = self.route.as_ref() {
                        // Batch whatever is queued, up to a bound.
                        while self.wbuf.len() < 64 * 1024 {
                            match route.try_recv() {
                                Some(b) => self.wbuf.extend_from_slice(&b),
                                None => break,
                            }
                        }
                    }
                }
                Wake::Kicked(why) => self.kicked(why, &mut out),
                Wake::TokenEnded(end) => self.c2s.token_ended(end, &mut out),
            }
            if !out.is_empty() {
                Box::pin(self.execute(out)).await;
            }
            if !self.wbuf.is_empty() && Box::pin(self.flush()).await.is_err() {
                break;
            }
        }
        Box::pin(self.finish()).await;
    }

    /// Until a resource is bound (or the stream ends): the socket, the
    /// deadline, shutdown and, after a token login, the token's end.
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
                end = token_end(&mut self.token) => self.c2s.token_ended(end, &mut out),
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

    /// A bound session's wait: one `poll_fn` over the socket, the route
    /// (queued stanzas and kicks share one waker) and the token.
    fn wait_bound(&mut self) -> impl Future<Output = Wake> + '_ {
        self.route_first = !self.route_first;
        let route_first = self.route_first;
        let Connection {
            conn,
            parser,
            route,
            token,
            ..
        } = self;
        std::future::poll_fn(move |cx| {
            let route = route.as_ref().expect("bound");
            let from_route = |cx: &mut Context<'_>| {
                route.register(cx);
                if let Some(k) = route.kick_reason() {
                    return Poll::Ready(Wake::Kicked(k));
                }
                if route.has_queued() {
                    return Poll::Ready(Wake::Queued);
                }
                Poll::Pending
            };
            if route_first {
                if let Poll::Ready(w) = from_route(cx) {
                    return Poll::Ready(w);
                }
            }
            if let Poll::Ready(r) = poll_read_into(conn, parser, cx) {
                return Poll::Ready(Wake::Read(r));
            }
            if !route_first {
                if let Poll::Ready(w) = from_route(cx) {
                    return Poll::Ready(w);
                }
            }
            if let Some(t) = token.as_mut() {
                if let Poll::Ready(end) = t.as_mut().poll(cx) {
                    return Poll::Ready(Wake::TokenEnded(end));
                }
            }
            Poll::Pending
        })
    }

    fn kicked(&mut self, why: Kick, out: &mut Vec<Output>) {
        let (cond, text) = match why {
            Kick::Conflict => (
                StreamCondition::Conflict,
                "replaced by a new session for this resource",
            ),
            Kick::Overflow => (
                StreamCondition::PolicyViolation,
                "too many stanzas queued for a slow reader",
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
                Output::ResetParser => {
                    self.parser.reset();
                    self.token = self
                        .c2s
                        .grant()
                        .cloned()
                        .map(|g| Box::pin(async move { g.ended().await }) as TokenWatch);
                }
                Output::Auth(req) => {
                    let reply = Self::authenticate(self.ctx.auth.clone(), req).await;
                    let mut more = Vec::new();
                    self.c2s.auth_reply(reply, &mut more);
                    for m in more.into_iter().rev() {
                        queue.push_front(m);
                    }
                }
                Output::Bind(jid) => self.bind(jid),
                Output::Stanza(el) => {
                    let Some(b) = self.bound.as_mut() else {
                        continue;
                    };
                    let fx = self.ctx.im.handle(&mut b.im, el).await;
                    if fx.flush {
                        if let Err(e) = self.ctx.auth.store().barrier().await {
                            // What the replies acknowledge was not kept.
                            tracing::error!(error = %e, "store barrier failed");
                            self.closing = true;
                            return;
                        }
                    }
                    for r in fx.replies {
                        self.wbuf.extend_from_slice(&r);
                    }
                }
                Output::Close => self.closing = true,
            }
        }
    }

    /// Runs a credential check (a free function of the auth core, so no
    /// borrow of the connection lives across the await).
    async fn authenticate(auth: Arc<crate::auth::AuthCore>, req: AuthRequest) -> sasl::AuthReply {
        if let AuthRequest::Login(r) = req {
            // Tokens are checked in memory, a password on a blocking thread.
            return sasl::AuthReply::Login(auth.login_async(r).await);
        }
        match tokio::task::spawn_blocking(move || sasl::perform(&auth, req)).await {
            Ok(r) => r,
            Err(_) => sasl::AuthReply::ScramKeys(Err(crate::auth::AuthError::BadPassword)),
        }
    }

    fn bind(&mut self, jid: super::stanza::Jid) {
        let Some(user) = self.c2s.user().cloned() else {
            return;
        };
        let scopes = self.c2s.grant().map(|g| g.scopes().clone());
        tracing::Span::current().record("jid", tracing::field::display(&jid));
        let registry_key = self.ctx.registry.add(std::sync::Arc::new(SessionInfo {
            protocol: Protocol::Xmpp,
            name: jid.to_string(),
            account: Some(user.to_string()),
            since: crate::auth::now(),
        }));
        let im = self.im().open_session(jid, user, scopes);
        if self.ctx.shutdown.is_cancelled() {
            // Bound while the listener was kicking everyone out.
            im.route.kick(Kick::Shutdown);
        }
        self.route = Some(im.route.clone());
        self.bound = Some(Box::new(Bound { im, registry_key }));
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
        let write = self.conn.write_all(&buf);
        // A session kicked while its peer does not read (the usual reason for
        // an overflow) is dropped at once instead of after the write timeout.
        // Once the stream is closing the goodbye itself is being written.
        let watch_kick = !self.c2s.is_closed();
        tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
                Ok(r) => r,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            },
            _ = kicked(&self.route), if watch_kick => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    async fn finish(mut self: Box<Self>) {
        if let Some(b) = self.bound.take() {
            self.ctx.registry.remove(b.registry_key);
            self.ctx.im.close_session(b.im).await;
            tracing::info!("session closed");
        }
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.shutdown()).await;
    }
}

async fn kicked(route: &Option<Arc<Route>>) -> Kick {
    match route {
        Some(r) => r.kicked().await,
        None => std::future::pending().await,
    }
}

async fn token_end(token: &mut Option<TokenWatch>) -> TokenEnd {
    match token {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn deadline(d: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match d {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}
