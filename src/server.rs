//! The server: composes the parts — store, auth core, session registry,
//! MQTT broker, XMPP IM service — binds every listener on one tokio runtime,
//! runs their accept loops, the token expiry task, the session sweep and the
//! admin socket, and shuts down gracefully. It only composes: the
//! connection plumbing is [`crate::net`]'s, sessions are
//! [`crate::session`]'s.
//!
//! [`Server::bind`] does everything that can fail at start (store, TLS, ports) so
//! that `main` can print the `listening …` lines and `ready` only once all is
//! bound; [`Server::run`] serves until the shutdown future resolves, then stops
//! accepting, lets in-flight work finish (bounded), flushes the store and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthCore, AuthError};
use crate::config::{Config, Listener, Module};
use crate::ctl::{self, CtlContext, LiveServer};
use crate::mqtt::broker::Broker;
use crate::mqtt::listener::MqttContext;
use crate::net::{accept_loop, Acceptor, OpenConns, Stream};
use crate::oauth::{self, OauthState};
use crate::session::{FlowLimits, Kick, Protocol, Registry, SystemClock};
use crate::store::{Store, StoreError};
use crate::tls::{self, TlsError};
use crate::xmpp::listener::XmppContext;

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
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Shared by every connection task.
pub struct Shared {
    /// This node's link to the others, in a cluster.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub config: Arc<Config>,
    pub auth: Arc<AuthCore>,
    pub registry: Arc<Registry>,
    pub broker: Arc<Broker>,
    pub tls: Option<TlsAcceptor>,
    /// What a reload (SIGHUP, `ctl reload`) swaps: certificate, access
    /// rules, log level, limits.
    pub reloader: Arc<Reloader>,
    pub shutdown: CancellationToken,
    /// Connections open on every listener: the shutdown waits for none.
    pub open: Arc<OpenConns>,
    /// XMPP: the routing table, rosters and offline messages of every c2s listener.
    pub xmpp: Arc<crate::xmpp::ImServer>,
    /// XMPP: resumable sessions (XEP-0198) of every c2s listener.
    pub xmpp_resumable: Arc<dashmap::DashMap<String, crate::xmpp::listener::SmHandle>>,
    /// The RFC 8414 metadata URL of this server's OAuth endpoints (XEP-0493),
    /// if it serves them: `oauth_issuer`'s, else the first HTTPS (or HTTP)
    /// listener's as bound.
    pub oauth_metadata: Option<Arc<str>>,
    /// Each listener's open connections, by protocol and transport (the
    /// connections metric, read when scraped).
    pub listener_conns: std::sync::Mutex<Vec<ListenerConns>>,
    /// When the server started (uptime).
    pub started: Instant,
}

/// A listener's protocol, transport and count of open connections.
pub type ListenerConns = (
    &'static str,
    &'static str,
    Arc<std::sync::atomic::AtomicUsize>,
);

/// Metrics, SIGHUP, the OAuth metadata URL.
mod ops;
use ops::{oauth_metadata_url, reload_on_sighup, serve_metrics};
/// Reloading the config of a running server.
pub mod reload;
use reload::Reloader;

struct Bound {
    listener: Listener,
    tcp: TcpListener,
    addr: SocketAddr,
}

/// A server whose listeners are bound but not yet serving.
pub struct Server {
    shared: Arc<Shared>,
    store: Store,
    bound: Vec<Bound>,
    admin: tokio::net::UnixListener,
    started: Instant,
}

impl Server {
    /// Opens the store, loads TLS and binds every listener and the admin socket.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let config = Arc::new(config);
        // The listeners first: a port in use stops the start before the
        // data directory, the store or a development certificate is made.
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
        let data_dir_error = |source| ServerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        };
        crate::data_dir::prepare(&config.data_dir).map_err(data_dir_error)?;
        // Opening the store and loading what lives in memory (tokens,
        // retained messages, persistent sessions) reads the store: off the
        // async workers.
        let c = config.clone();
        let registry = Arc::new(Registry::new(
            FlowLimits {
                high_water: config.session_queue_high_water,
                slow_consumer: Duration::from_secs(config.slow_consumer_timeout),
            },
            Arc::new(SystemClock::default()),
        ));
        let r = registry.clone();
        let (store, auth, broker) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&c.store, &c.data_dir)?;
            let auth = Arc::new(AuthCore::new(store.clone(), &c)?);
            // Read (or made) here, off the async threads, not at the first
            // FAST login; a problem is logged and FAST logins then fail.
            let _ = auth.prepare_fast_key();
            let mut broker = Broker::new(&c.hosts, store.clone(), r, c.mqtt_max_queue)?;
            broker.max_retained = c.mqtt_max_retained.into();
            broker.max_retained_bytes = c.mqtt_max_retained_bytes.into();
            broker.acl = arc_swap::ArcSwap::from_pointee(c.mqtt_acl.clone());
            broker.max_session_expiry = c.mqtt_max_session_expiry;
            // In a cluster, each node restores the sessions it held.
            if let Some(cl) = &c.cluster {
                broker.set_node(&cl.node);
            }
            let broker = Arc::new(broker);
            // Restored sessions expire through the registry's sweep.
            let restored = broker.restore_sessions()?;
            tracing::info!(count = restored, "restored persistent MQTT sessions");
            Ok::<_, ServerError>((store, auth, broker))
        })
        .await
        .expect("opening the store does not panic")?;
        // Token ends and account changes end sessions, in every protocol
        // and, in a cluster, on every node.
        let cluster = match &config.cluster {
            Some(c) => {
                let cluster = crate::cluster::Cluster::connect(c, registry.clone())
                    .await
                    .map_err(ServerError::Cluster)?;
                auth.set_shared_store();
                auth.set_events(cluster.clone());
                cluster.attach_broker(&broker);
                tracing::info!(node = %c.node, "joined the cluster");
                Some(cluster)
            }
            None => {
                auth.set_events(registry.clone());
                None
            }
        };
        // The store's files, as sled made them: owner-only.
        crate::data_dir::tighten(&config.data_dir).map_err(data_dir_error)?;
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
        let admin = ctl::socket::bind(&config.data_dir).map_err(ServerError::AdminSocket)?;
        let mut xmpp = crate::xmpp::ImServer::with_offline_limit(
            auth.clone(),
            crate::xmpp::Router::new(registry.clone()),
            config.max_offline_messages,
        );
        xmpp.blocks.max_items = config.max_blocklist_items;
        xmpp.account_xml.max_private = config.max_private_items;
        xmpp.services = config.services();
        xmpp.upload = open_uploads(&config, &bound, &registry).await?;
        xmpp.pep = crate::xmpp::pep::Pep::new(auth.store().clone(), config.pep.clone());
        xmpp.pubsub = crate::xmpp::pubsub::Pubsub::new(auth.store().clone(), config.pubsub.clone());
        if config.pubsub.enabled {
            let nodes = xmpp.pubsub.load().await.map_err(ServerError::Store)?;
            tracing::info!(nodes, "pubsub nodes loaded");
        }
        xmpp.muc = crate::xmpp::muc::Muc::new(auth.store().clone(), config.muc.clone());
        xmpp.mam.default = config.mam_default;
        xmpp.mam.max_page = config.mam_max_page;
        if let Some(c) = &config.cluster {
            xmpp.mam.set_node(&c.node);
        }
        let xmpp = Arc::new(xmpp);
        let shutdown = CancellationToken::new();
        // Stanzas to and presence from the other nodes' sessions.
        if let Some(c) = &cluster {
            c.start_xmpp(&xmpp, shutdown.clone())
                .await
                .map_err(ServerError::Cluster)?;
        }
        // The bridge joins both sides; checked with the config already.
        let bridge = Arc::new(
            crate::bridge::Bridge::new(config.bridge.clone(), &broker)
                .expect("bridge rules were checked with the config"),
        );
        bridge.attach(&xmpp);
        let _ = xmpp.bridge.set(bridge.clone());
        let _ = broker.bridge.set(bridge);
        let oauth_metadata = oauth_metadata_url(&config, &bound);
        let tls = tls.map(Arc::new);
        let reloader = Arc::new(Reloader::new(&config, tls.clone(), broker.clone()));
        let shared = Arc::new(Shared {
            oauth_metadata,
            listener_conns: Default::default(),
            started: Instant::now(),
            xmpp,
            xmpp_resumable: Default::default(),
            config,
            auth,
            registry,
            broker,
            tls: tls.as_ref().map(|t| t.acceptor.clone()),
            reloader,
            shutdown,
            open: Arc::new(OpenConns::default()),
            cluster,
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
        // The other nodes first: a client served here must reach them.
        let cluster_tasks = match &shared.cluster {
            Some(c) => c
                .listen(shared.auth.clone())
                .await
                .map_err(ServerError::Cluster)?,
            None => Vec::new(),
        };
        let mut loops = Vec::new();
        for b in bound {
            let shared = shared.clone();
            loops.push(tokio::spawn(async move {
                match b.listener.module {
                    Module::Http => serve_http(b, shared).await,
                    Module::Mqtt => serve_mqtt(b, shared).await,
                    Module::Metrics => serve_metrics(b, shared).await,
                    Module::C2s => serve_c2s(b, shared).await,
                }
            }));
        }
        let ctx = Arc::new(CtlContext {
            auth: shared.auth.clone(),
            live: Some(LiveServer {
                registry: shared.registry.clone(),
                started,
                reload: Some(shared.reloader.clone()),
                cluster: shared.cluster.clone(),
            }),
        });
        let hangups = tokio::spawn(reload_on_sighup(
            shared.reloader.clone(),
            shared.shutdown.clone(),
        ));
        let admin_task = tokio::spawn(ctl::socket::serve(admin, ctx));
        let expiry = tokio::spawn(shared.auth.clone().run_expiry(shared.shutdown.clone()));
        let upload_sweep = shared
            .xmpp
            .upload
            .clone()
            .map(|u| tokio::spawn(crate::xmpp::upload::run_expiry(u, shared.shutdown.clone())));
        let archive_pruner = tokio::spawn(prune_archives(
            shared.xmpp.clone(),
            shared.shutdown.clone(),
            shared.config.mam_retention_days,
        ));
        let sweeper = tokio::spawn(sweep(
            shared.registry.clone(),
            shared.broker.clone(),
            shared.shutdown.clone(),
            shared.config.mqtt_sys_interval,
        ));

        shutdown.await;
        tracing::info!("shutting down");
        shared.shutdown.cancel();
        // Live MQTT sessions wait on their session, not on the token: kick
        // them (the c2s listeners kick theirs when they stop accepting).
        shared
            .registry
            .kick_all(Some(Protocol::Mqtt), Kick::Shutdown);
        admin_task.abort();
        for l in loops {
            let _ = l.await;
        }
        let _ = sweeper.await;
        let _ = hangups.await;
        let _ = expiry.await;
        let _ = archive_pruner.await;
        if let Some(t) = upload_sweep {
            let _ = t.await;
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, shared.open.drained())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        }
        let _ = std::fs::remove_file(ctl::socket::socket_path(&shared.config.data_dir));
        store.barrier().await?;
        // Every connection is closed and its state saved: the others may
        // adopt this node's sessions now.
        if let Some(c) = &shared.cluster {
            c.leave().await;
        }
        for t in cluster_tasks {
            let _ = t.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// XEP-0363: the upload service when `config.services()` has it (enabled,
/// and an HTTP listener to take the files), its URLs under `[upload] url`
/// or else the first HTTP listener's address.
async fn open_uploads(
    config: &Arc<Config>,
    bound: &[Bound],
    registry: &Arc<Registry>,
) -> Result<Option<Arc<crate::xmpp::upload::Uploads>>, ServerError> {
    use crate::xmpp::services::Service;
    if !config.services().is_on(Service::Upload) {
        if config.upload.enabled {
            tracing::info!("[upload] is enabled but there is no http listener: upload service off");
        }
        return Ok(None);
    }
    let base = match &config.upload.url {
        Some(u) => u.clone(),
        None => {
            let Some(b) = bound.iter().find(|b| b.listener.module == Module::Http) else {
                return Ok(None);
            };
            let scheme = if b.listener.tls { "https" } else { "http" };
            format!("{scheme}://{}:{}", config.default_host(), b.addr.port())
        }
    };
    let (c, clock, entropy) = (
        config.clone(),
        registry.clock().clone(),
        registry.entropy().clone(),
    );
    let uploads = tokio::task::spawn_blocking(move || {
        let u = crate::xmpp::upload::Uploads::open(
            c.upload.clone(),
            base,
            &c.data_dir,
            clock,
            entropy,
        )?;
        // Before anything is served: no file past max_days is handed out
        // after a restart (then hourly, `run_expiry`).
        crate::xmpp::upload::sweep_logged(&u);
        Ok(u)
    })
    .await
    .expect("opening the upload directory does not panic")
    .map_err(|source| ServerError::DataDir {
        path: config
            .data_dir
            .join(crate::xmpp::upload::UPLOAD_DIR)
            .display()
            .to_string(),
        source,
    })?;
    Ok(Some(Arc::new(uploads)))
}

/// XEP-0313 retention: at start and then hourly, archived messages older
/// than `retention_days` (0: kept for ever) are deleted.
async fn prune_archives(
    im: Arc<crate::xmpp::ImServer>,
    shutdown: CancellationToken,
    retention_days: u64,
) {
    if retention_days == 0 {
        return;
    }
    loop {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let cutoff = now_ms.saturating_sub(retention_days.saturating_mul(86_400_000));
        match im.mam.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "archived messages past mam_retention_days deleted"
            ),
            Err(e) => tracing::error!(error = %e, "could not prune the archives"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Twice a second: keep-alive deadlines of live sessions and the expiry of
/// detached ones, for every session (so no idle connection needs a timer of
/// its own). Token ends do not wait for it: they arrive as events.
/// Every `sys_interval` seconds (0: never) it also publishes the `$SYS`
/// statistics.
async fn sweep(
    registry: Arc<Registry>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    sys_interval: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut next_sys = started;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if sys_interval > 0 && Instant::now() >= next_sys {
            next_sys = Instant::now() + Duration::from_secs(sys_interval);
            let online = registry.online_by_domain(Protocol::Mqtt);
            broker.publish_sys(started.elapsed().as_secs(), &online);
        }
        let expired = registry.sweep();
        // Only MQTT sessions outlive their connections today.
        if !expired.is_empty() && broker.end_expired(&expired) {
            if let Err(e) = broker.store().barrier().await {
                tracing::error!(error = %e, "store barrier failed");
            }
        }
    }
}

impl Shared {
    /// The accept loop settings of listener `b`.
    fn acceptor(&self, b: &Bound) -> Acceptor {
        let here = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let transport = if b.listener.tls { "tls" } else { "tcp" };
        let protocol = match b.listener.module {
            Module::C2s => "xmpp",
            Module::Mqtt => "mqtt",
            // Upgrades to WebSocket included.
            Module::Http => "http",
            Module::Metrics => "metrics",
        };
        self.listener_conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((protocol, transport, here.clone()));
        Acceptor {
            name: b.listener.module.name(),
            max_connections: b.listener.max_connections,
            max_per_ip: b.listener.per_ip_cap(),
            open: self.open.clone(),
            here,
            shutdown: self.shutdown.clone(),
        }
    }

    /// The TLS acceptor for a listener with `tls = true`, else none.
    fn tls_for(&self, b: &Bound) -> Option<TlsAcceptor> {
        if b.listener.tls {
            self.tls.clone()
        } else {
            None
        }
    }
}

/// The OAuth routes (warp) served through hyper on our own accept loop, since
/// warp 0.4 has no TLS: plain or TLS, HTTP/1.1 or h2, with a header timeout
/// against slow clients and a graceful goodbye at shutdown.
async fn serve_http(b: Bound, shared: Arc<Shared>) {
    let state = OauthState::new(
        shared.auth.clone(),
        &shared.config,
        b.listener.tls,
        b.addr.port(),
    );
    // MQTT over WebSocket at /mqtt (TLS here is the HTTPS listener's).
    let mqtt_ctx = Arc::new(MqttContext {
        broker: shared.broker.clone(),
        auth: shared.auth.clone(),
        settings: shared.reloader.mqtt.clone(),
        shutdown: shared.shutdown.clone(),
        tls: None,
    });
    let mqtt_ws = crate::mqtt::websocket::route(
        mqtt_ctx,
        shared.config.mqtt_max_packet_size as usize,
        shared.config.mqtt_ws_max_frame_size,
    );
    // The admin API when configured (before the OAuth routes, which answer
    // every other path).
    let api = crate::oauth::api::route(shared.config.http_api.then(|| {
        Arc::new(CtlContext {
            auth: shared.auth.clone(),
            live: Some(LiveServer {
                registry: shared.registry.clone(),
                started: shared.started,
                reload: Some(shared.reloader.clone()),
                cluster: shared.cluster.clone(),
            }),
        })
    }));
    // XMPP over WebSocket at /xmpp-websocket, and XEP-0156 host-meta.
    let xmpp_ws = crate::xmpp::websocket::route(
        xmpp_context(&shared),
        b.listener.tls,
        shared.config.max_stanza_size,
    );
    let host_meta = crate::xmpp::websocket::host_meta(b.listener.tls);
    // XEP-0363 uploads at /upload/… (nothing when the service is off).
    let upload = crate::xmpp::upload::http::route(shared.xmpp.upload.clone());
    let routes = warp::Filter::or(
        warp::Filter::or(
            warp::Filter::or(upload, warp::Filter::or(mqtt_ws, api)),
            warp::Filter::or(xmpp_ws, host_meta),
        ),
        oauth::routes(state, b.listener.tls),
    );
    let tls = shared.tls_for(&b);
    let shutdown = shared.shutdown.clone();
    let acceptor = shared.acceptor(&b);
    let c = &shared.config;
    let (headers, request, upload, ping, idle) = (
        Duration::from_secs(c.http_header_timeout),
        Duration::from_secs(c.http_request_timeout),
        Duration::from_secs(c.upload.put_timeout),
        Duration::from_secs(c.http2_keep_alive),
        Duration::from_secs(c.http_idle_timeout),
    );
    accept_loop(b.tcp, acceptor, move |tcp, peer, permit| {
        let routes = routes.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        async move {
            // Held here, or by the MQTT connection an upgrade to /mqtt
            // becomes.
            let permit = Arc::new(std::sync::Mutex::new(Some(permit)));
            // The TLS handshake is bounded like the request headers.
            let Ok(Some(io)) =
                tokio::time::timeout(headers, Stream::accept(tcp, tls.as_ref())).await
            else {
                return;
            };
            // The peer's address rides on every request (the login
            // throttle), and a request — its body included — has
            // `http_request_timeout` to be read and answered (an upload
            // `[upload] put_timeout`).
            let activity = Arc::new(HttpActivity::default());
            let inner = TowerToHyperService::new(warp::service(routes));
            let seen = activity.clone();
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(oauth::PeerIp(peer.ip()));
                    req.extensions_mut().insert(crate::mqtt::websocket::WsConn {
                        peer,
                        permit: permit.clone(),
                    });
                    let limit = if crate::xmpp::upload::http::is_upload_put(&req) {
                        upload
                    } else {
                        request
                    };
                    let call = hyper::service::Service::call(&inner, req);
                    let busy = seen.begin();
                    async move {
                        let r = match tokio::time::timeout(limit, call).await {
                            Ok(r) => r,
                            Err(_) => Ok(warp::Reply::into_response(warp::reply::with_status(
                                "request took too long\n",
                                warp::http::StatusCode::REQUEST_TIMEOUT,
                            ))),
                        };
                        drop(busy);
                        r
                    }
                },
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(headers);
            // h2: a peer that stops answering pings is dropped.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(ping)
                .keep_alive_timeout(ping)
                .max_concurrent_streams(32);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                // Nothing asked for too long: before the first request
                // (which covers a client that never sends a byte, or half
                // an HTTP/2 preface) `http_header_timeout`, between requests
                // `http_idle_timeout` — whatever hyper's own timers cover.
                _ = activity.idle_for(headers, idle) => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(5), conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        }
    })
    .await;
}

/// An HTTP connection's requests in progress and when the last one began
/// or ended, for its idle timeout.
struct HttpActivity {
    since: tokio::time::Instant,
    /// Requests in progress.
    active: std::sync::atomic::AtomicUsize,
    /// Milliseconds after `since` of the last request's start or end; 0: none yet.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for HttpActivity {
    fn default() -> Self {
        HttpActivity {
            since: tokio::time::Instant::now(),
            active: Default::default(),
            last_ms: Default::default(),
        }
    }
}

/// A request in progress (see [`HttpActivity`]).
struct HttpBusy(Arc<HttpActivity>);

impl Drop for HttpBusy {
    fn drop(&mut self) {
        self.0.touch();
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl HttpActivity {
    fn touch(&self) {
        let ms = self.since.elapsed().as_millis().max(1) as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Release);
    }

    fn begin(self: &Arc<Self>) -> HttpBusy {
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.touch();
        HttpBusy(self.clone())
    }

    /// Resolves once no request has been in progress for `first` (before
    /// any request) or `between` (after one).
    async fn idle_for(&self, first: Duration, between: Duration) {
        use std::sync::atomic::Ordering;
        loop {
            let last = self.last_ms.load(Ordering::Acquire);
            let (from, limit) = if last == 0 {
                (Duration::ZERO, first)
            } else {
                (Duration::from_millis(last), between)
            };
            tokio::time::sleep_until(self.since + from + limit).await;
            if self.active.load(Ordering::Acquire) == 0
                && self.last_ms.load(Ordering::Acquire) == last
            {
                return;
            }
            if self.active.load(Ordering::Acquire) > 0 {
                // A request is being served: look again in a second.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// MQTT 3.1.1/5 on plain TCP (1883) or TLS (8883).
async fn serve_mqtt(b: Bound, shared: Arc<Shared>) {
    let ctx = Arc::new(MqttContext {
        broker: shared.broker.clone(),
        auth: shared.auth.clone(),
        settings: shared.reloader.mqtt.clone(),
        shutdown: shared.shutdown.clone(),
        tls: shared.tls_for(&b),
    });
    let acceptor = shared.acceptor(&b);
    accept_loop(b.tcp, acceptor, move |stream, peer, permit| {
        crate::mqtt::listener::serve(stream, peer, ctx.clone(), permit)
    })
    .await;
}

/// XMPP client-to-server: plain with STARTTLS (5222) or direct TLS (5223).
async fn serve_c2s(b: Bound, shared: Arc<Shared>) {
    let ctx = xmpp_context(&shared);
    let acceptor = shared.acceptor(&b);
    crate::xmpp::listener::serve(b.tcp, b.listener, acceptor, ctx).await;
}

/// What every XMPP connection task shares (TCP and WebSocket alike).
fn xmpp_context(shared: &Shared) -> Arc<XmppContext> {
    let c = &shared.config;
    Arc::new(XmppContext {
        auth: shared.auth.clone(),
        im: shared.xmpp.clone(),
        registry: shared.registry.clone(),
        tls: shared.tls.clone(),
        shutdown: shared.shutdown.clone(),
        hosts: c.hosts.clone().into(),
        limits: shared.reloader.xml.clone(),
        negotiation_timeout: c.negotiation_timeout,
        csi_max_held: c.csi_max_held,
        resume_timeout: c.resume_timeout,
        sm_limits: crate::xmpp::sm::SmLimits {
            max_stanzas: c.sm_max_unacked,
            max_bytes: c.sm_max_unacked_bytes,
        },
        resumable: shared.xmpp_resumable.clone(),
        oauth_metadata: shared.oauth_metadata.clone(),
    })
}
