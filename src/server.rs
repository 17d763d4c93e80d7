//! The server: binds every listener on one tokio runtime, runs their accept loops,
//! the token sweeper and the admin socket, and shuts down gracefully.
//!
//! [`Server::bind`] does everything that can fail at start (store, TLS, ports) so
//! that `main` can print the `listening …` lines and `ready` only once all is
//! bound; [`Server::run`] serves until the shutdown future resolves, then stops
//! accepting, lets in-flight work finish (bounded), flushes the store and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthCore, AuthError};
use crate::config::{Config, Listener, Module};
use crate::ctl::{self, CtlContext, LiveServer};
use crate::mqtt::broker::Broker;
use crate::mqtt::listener::MqttContext;
use crate::mqtt::session::MqttSettings;
use crate::oauth::{self, OauthState};
use crate::registry::Registry;
use crate::store::{SledStore, Store, StoreError};
use crate::tls::{self, TlsError};

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("listen {module} {addr}: {source}")]
    Bind {
        module: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    AdminSocket(std::io::Error),
}

/// Shared by every connection task.
pub struct Shared {
    pub config: Arc<Config>,
    pub auth: Arc<AuthCore>,
    pub registry: Arc<Registry>,
    pub broker: Arc<Broker>,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: CancellationToken,
    /// Connections open on every listener: the shutdown waits for none.
    pub open: Arc<OpenConns>,
    /// XMPP: the routing table, rosters and offline messages of every c2s listener.
    pub xmpp: Arc<crate::xmpp::ImServer>,
}

struct Bound {
    listener: Listener,
    tcp: TcpListener,
    addr: SocketAddr,
}

/// A server whose listeners are bound but not yet serving.
pub struct Server {
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    bound: Vec<Bound>,
    admin: tokio::net::UnixListener,
    started: Instant,
}

impl Server {
    /// Opens the store, loads TLS and binds every listener and the admin socket.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.data_dir)?);
        let auth = Arc::new(AuthCore::new(store.clone(), &config)?);
        let broker = Arc::new(Broker::new(
            &config.hosts,
            store.clone(),
            config.mqtt_max_queue,
        )?);
        let needs_tls = config.listen.iter().any(|l| l.tls || l.starttls);
        let tls = if needs_tls {
            Some(tls::acceptor(
                &config.certfiles,
                &config.data_dir,
                &config.hosts,
            )?)
        } else {
            None
        };
        let mut bound = Vec::new();
        for l in &config.listen {
            let want = SocketAddr::new(l.ip, l.port);
            let tcp = TcpListener::bind(want)
                .await
                .map_err(|source| ServerError::Bind {
                    module: l.module.name(),
                    addr: want,
                    source,
                })?;
            let addr = tcp.local_addr().map_err(|source| ServerError::Bind {
                module: l.module.name(),
                addr: want,
                source,
            })?;
            bound.push(Bound {
                listener: l.clone(),
                tcp,
                addr,
            });
        }
        let admin = ctl::socket::bind(&config.data_dir).map_err(ServerError::AdminSocket)?;
        let xmpp = Arc::new(crate::xmpp::ImServer::new(
            auth.clone(),
            crate::xmpp::Router::default(),
        ));
        // Restored sessions expire through the broker's sweep.
        let restored = broker.restore_sessions()?;
        tracing::info!(count = restored, "restored persistent MQTT sessions");
        let shared = Arc::new(Shared {
            xmpp,
            config,
            auth,
            registry: Arc::new(Registry::new()),
            broker,
            tls,
            shutdown: CancellationToken::new(),
            open: Arc::new(OpenConns::default()),
        });
        Ok(Server {
            shared,
            store,
            bound,
            admin,
            started: Instant::now(),
        })
    }

    /// `(module, address)` of every bound listener, in config order.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        self.bound
            .iter()
            .map(|b| (b.listener.module.name(), b.addr))
            .collect()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            shared,
            store,
            bound,
            admin,
            started,
        } = self;
        let mut loops = Vec::new();
        for b in bound {
            let shared = shared.clone();
            loops.push(tokio::spawn(async move {
                match b.listener.module {
                    Module::Http => serve_http(b, shared).await,
                    Module::Mqtt => serve_mqtt(b, shared).await,
                    Module::C2s => crate::xmpp::listener::serve(b.tcp, b.listener, shared).await,
                }
            }));
        }
        let ctx = Arc::new(CtlContext {
            auth: shared.auth.clone(),
            live: Some(LiveServer {
                registry: shared.registry.clone(),
                started,
            }),
        });
        let admin_task = tokio::spawn(ctl::socket::serve(admin, ctx));
        let sweeper = tokio::spawn(sweep(shared.auth.clone(), shared.shutdown.clone()));
        let mqtt_sweeper = tokio::spawn(sweep_mqtt(shared.broker.clone(), shared.shutdown.clone()));

        shutdown.await;
        tracing::info!("shutting down");
        shared.shutdown.cancel();
        // Live MQTT sessions wait on their slot, not on the token: kick them.
        shared
            .broker
            .kick_all(crate::mqtt::codec::reason::SERVER_SHUTTING_DOWN);
        admin_task.abort();
        for l in loops {
            let _ = l.await;
        }
        let _ = sweeper.await;
        let _ = mqtt_sweeper.await;
        if tokio::time::timeout(DRAIN_TIMEOUT, shared.open.drained())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        }
        let _ = std::fs::remove_file(ctl::socket::socket_path(&shared.config.data_dir));
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .expect("flush does not panic")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Twice a second: MQTT keep-alive deadlines, token ends and session
/// expiry, for every session.
async fn sweep_mqtt(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = broker.sweep();
        if expired.is_empty() {
            continue;
        }
        let b = broker.clone();
        let done = tokio::task::spawn_blocking(move || {
            if b.end_expired(expired) {
                b.store().flush()?;
            }
            Ok::<(), crate::store::StoreError>(())
        });
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "store flush failed"),
            Err(e) => tracing::error!(error = %e, "ending expired sessions failed"),
        }
    }
}

/// Expires tokens every second and tells their sessions.
async fn sweep(auth: Arc<AuthCore>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let a = auth.clone();
        match tokio::task::spawn_blocking(move || a.sweep_expired(crate::auth::now())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(count = n, "expired tokens"),
            Ok(Err(e)) => tracing::error!(error = %e, "token sweep failed"),
            Err(e) => tracing::error!(error = %e, "token sweep panicked"),
        }
    }
}

/// Accepts connections under the listener's connection limit, backing off on
/// errors (e.g. out of file descriptors), and hands each to `handle` in a task
/// the shutdown waits for. The handler's future holds the connection's permit
/// (so it is spawned as is: wrapping it in another async block would store the
/// whole future twice in every task).
pub async fn accept_loop<F, Fut>(
    tcp: TcpListener,
    listener: &Listener,
    shared: Arc<Shared>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Limit {
        slots: Semaphore::new(listener.max_connections),
        open: shared.open.clone(),
    });
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            p = limit.slots.acquire() => p.expect("semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = tcp.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                permit.forget();
                limit.open.count.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(handle(stream, peer, ConnPermit(limit.clone())));
            }
            Err(e) => {
                tracing::warn!(error = %e, module = listener.module.name(), "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// How many connections are open on all listeners.
#[derive(Default)]
pub struct OpenConns {
    count: AtomicUsize,
    none_left: tokio::sync::Notify,
}

impl OpenConns {
    /// Waits until no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One listener's `max_connections`, and the count of all open ones.
struct Limit {
    slots: Semaphore,
    open: Arc<OpenConns>,
}

/// A connection's place under its listener's `max_connections` (and in the
/// count the shutdown drains), given back when dropped. One pointer: it lives
/// in every connection's task.
pub struct ConnPermit(Arc<Limit>);

impl ConnPermit {
    #[cfg(test)]
    pub fn for_test() -> ConnPermit {
        let open = Arc::new(OpenConns::default());
        open.count.fetch_add(1, Ordering::AcqRel);
        ConnPermit(Arc::new(Limit {
            slots: Semaphore::new(0),
            open,
        }))
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.slots.add_permits(1);
        if self.0.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.open.none_left.notify_waiters();
        }
    }
}

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

/// A byte stream, plain TCP or TLS: listeners that serve both share one code path.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Completes the TLS handshake (bounded by [`HANDSHAKE_TIMEOUT`]) when `tls` is set.
pub async fn maybe_tls(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
    peer: SocketAddr,
) -> Option<Box<dyn Io>> {
    match tls {
        None => Some(Box::new(stream)),
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => Some(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
    }
}

/// The OAuth routes (warp) served through hyper on our own accept loop, since
/// warp 0.4 has no TLS: plain or TLS, HTTP/1.1 or h2, with a header timeout
/// against slow clients and a graceful goodbye at shutdown.
async fn serve_http(b: Bound, shared: Arc<Shared>) {
    let state = OauthState::new(shared.auth.clone(), &shared.config);
    let routes = oauth::routes(state, b.listener.tls);
    let tls = if b.listener.tls {
        shared.tls.clone()
    } else {
        None
    };
    let shutdown = shared.shutdown.clone();
    accept_loop(
        b.tcp,
        &b.listener,
        shared.clone(),
        move |stream, peer, permit| {
            let routes = routes.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            async move {
                let _permit = permit;
                let Some(io) = maybe_tls(stream, tls.as_ref(), peer).await else {
                    return;
                };
                let svc = TowerToHyperService::new(warp::service(routes));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30));
                let conn = builder.serve_connection(TokioIo::new(io), svc);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "http connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// MQTT 3.1.1/5 on plain TCP (1883) or TLS (8883).
async fn serve_mqtt(b: Bound, shared: Arc<Shared>) {
    let c = &shared.config;
    let ctx = Arc::new(MqttContext {
        broker: shared.broker.clone(),
        auth: shared.auth.clone(),
        registry: shared.registry.clone(),
        settings: Arc::new(MqttSettings {
            default_host: c.default_host().to_string(),
            allow_anonymous: c.mqtt_allow_anonymous,
            max_packet_size: c.mqtt_max_packet_size,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
        }),
        shutdown: shared.shutdown.clone(),
        tls: if b.listener.tls {
            shared.tls.clone()
        } else {
            None
        },
    });
    accept_loop(
        b.tcp,
        &b.listener,
        shared.clone(),
        move |stream, peer, permit| crate::mqtt::listener::serve(stream, peer, ctx.clone(), permit),
    )
    .await;
}
