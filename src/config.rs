//! Configuration: TOML text -> typed [`Config`].
//!
//! Option names follow ejabberd where ejabberd has one (`hosts`, `certfiles`,
//! `oauth_expire`, `oauth_access`, `oauth_client_id_check`, `listen`). Every key has
//! an embedded default, so `Config::default()` is what `petrel serve` runs with no
//! `--config`. Loading reports the first problem as one line naming the key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration problem, already phrased for an operator: `key: problem`.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    /// XMPP client-to-server.
    C2s,
    /// MQTT 3.1.1 and 5.0.
    Mqtt,
    /// OAuth endpoints, MQTT and XMPP over WebSocket.
    Http,
    /// Prometheus metrics at `/metrics` (plain HTTP; loopback by default).
    Metrics,
}

impl Module {
    pub fn name(self) -> &'static str {
        match self {
            Module::C2s => "c2s",
            Module::Mqtt => "mqtt",
            Module::Http => "http",
            Module::Metrics => "metrics",
        }
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One `[[listen]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub module: Module,
    /// 0 picks a free port; the `listening` line shows the real one.
    pub port: u16,
    #[serde(default = "loopback")]
    pub ip: IpAddr,
    /// TLS from the first byte (MQTT 8883, HTTPS 5443, XMPP 5223).
    #[serde(default)]
    pub tls: bool,
    /// XMPP only: offer STARTTLS on a plain listener.
    #[serde(default)]
    pub starttls: bool,
    /// XMPP only: refuse to authenticate before STARTTLS. Default: true except on
    /// loopback listeners.
    #[serde(default)]
    pub starttls_required: Option<bool>,
    /// Connections served at once; further ones wait in the kernel's backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections from one address at once (0: no cap). Default: 256 on
    /// HTTP listeners; none on MQTT and XMPP ones, where whole fleets come
    /// from behind one carrier NAT.
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
}

impl Listener {
    pub fn new(module: Module, port: u16, tls: bool) -> Self {
        Listener {
            module,
            port,
            ip: loopback(),
            tls,
            starttls: module == Module::C2s && !tls,
            starttls_required: None,
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
        }
    }

    /// The per-address connection cap in force (0: none).
    pub fn per_ip_cap(&self) -> usize {
        self.max_connections_per_ip.unwrap_or(match self.module {
            Module::Http | Module::Metrics => 256,
            Module::C2s | Module::Mqtt => 0,
        })
    }

    /// Whether clients must use TLS before authenticating on this c2s listener.
    pub fn requires_starttls(&self) -> bool {
        !self.tls && self.starttls && self.starttls_required.unwrap_or(!self.ip.is_loopback())
    }
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_max_connections() -> usize {
    100_000
}

/// Who may get OAuth tokens (`oauth_access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OauthAccess {
    All,
    /// Only these bare JIDs.
    Only(Vec<String>),
}

/// How `/oauth/token` treats the client (`oauth_client_id_check`), as in ejabberd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIdCheck {
    /// Any client id, registered or not, and no secret is checked.
    Allow,
    /// The client must be registered and authenticate with its secret.
    Db,
    /// Token requests are refused for every client.
    Deny,
}

/// The whole configuration, with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub hosts: Vec<String>,
    pub data_dir: PathBuf,
    /// Which store backend keeps the server's state (`store`).
    pub store: crate::store::StoreKind,
    /// PEM files holding the certificate chain and the private key; empty means a
    /// development certificate is made in `data_dir` on first start.
    pub certfiles: Vec<PathBuf>,
    pub oauth_expire: u64,
    pub oauth_access: OauthAccess,
    pub oauth_client_id_check: ClientIdCheck,
    /// The RFC 8414 issuer; `None`: each HTTP listener's own URL.
    pub oauth_issuer: Option<String>,
    /// Seconds an access token lives at most when a refresh token comes
    /// with it (`oauth_expire_with_refresh`): short, since it renews.
    pub oauth_expire_with_refresh: u64,
    /// Seconds a refresh token lives (`oauth_refresh_expire`); each
    /// exchange gives a new one with the full lifetime.
    pub oauth_refresh_expire: u64,
    /// The legacy grants RFC 9700 advises against (password, implicit):
    /// `oauth_legacy_grants = false` turns both off.
    pub oauth_legacy_grants: bool,
    /// The admin HTTP API (`POST /api/<command>` on the HTTP listeners,
    /// with a `petrel:admin` token); off unless set.
    pub http_api: bool,
    /// The file this config was read from (a reload reads it again).
    pub source: Option<PathBuf>,
    /// Seconds an authorization code lives (`oauth_code_expire`, at most 60).
    pub oauth_code_expire: u64,
    /// Authorization codes waiting for their exchange, at most
    /// (`oauth_max_pending_codes`); past it the sign-in page asks to retry.
    pub oauth_max_pending_codes: usize,
    /// Seconds a device authorization waits for the user
    /// (`oauth_device_code_expire`).
    pub oauth_device_code_expire: u64,
    /// Seconds a device waits between polls (`oauth_device_interval`).
    pub oauth_device_interval: u64,
    /// Device authorizations pending from one address (IPv6: one /64)
    /// at most (`oauth_max_device_codes_per_ip`).
    pub oauth_max_device_codes_per_ip: u32,
    /// Bytes of the `scope` parameter at most (`oauth_max_scope_length`).
    pub oauth_max_scope_length: usize,
    pub listen: Vec<Listener>,
    pub max_stanza_size: usize,
    /// XMPP parser limits (see `xmpp::stream::Limits`).
    pub xml_max_header_size: usize,
    pub xml_max_depth: usize,
    pub xml_max_attributes: usize,
    pub xml_max_children: usize,
    pub xml_max_elements: usize,
    pub xml_max_namespace_length: usize,
    /// HTTP: seconds for a request's headers, for a whole request (body and
    /// answer), and between HTTP/2 keep-alive pings.
    pub http_header_timeout: u64,
    pub http_request_timeout: u64,
    pub http2_keep_alive: u64,
    /// HTTP: seconds a connection may sit with no request after its last one.
    pub http_idle_timeout: u64,
    /// XMPP: offline messages kept per account.
    pub max_offline_messages: usize,
    /// XMPP: seconds a connection may take from connecting to a bound resource.
    pub negotiation_timeout: u64,
    /// XMPP: presence stanzas (one per sender) held back for a client that
    /// said it is inactive (XEP-0352) before they are written anyway.
    pub csi_max_held: usize,
    /// XMPP: JIDs one account may block (XEP-0191).
    pub max_blocklist_items: usize,
    /// XEP-0049: private elements one account may keep.
    pub max_private_items: usize,
    /// XEP-0045 group chat on `conference.<host>` (`[muc]`).
    pub muc: crate::xmpp::muc::MucConfig,
    /// XEP-0363 HTTP file upload on `upload.<host>` (`[upload]`).
    pub upload: crate::xmpp::upload::UploadConfig,
    /// XEP-0163 PEP limits (`[pep]`).
    pub pep: crate::xmpp::pep::PepConfig,
    /// The XEP-0060 service on `pubsub.<host>` (`[pubsub]`).
    pub pubsub: crate::xmpp::pubsub::PubsubConfig,
    /// The MQTT ⇄ XMPP bridge (`[bridge]`, `[[bridge.rule]]`).
    pub bridge: crate::bridge::BridgeConfig,
    /// Several nodes as one service (`[cluster]`; absent: one node).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// XMPP: seconds a session whose connection was lost waits for a
    /// XEP-0198 resumption (0: resumption off).
    pub resume_timeout: u64,
    /// XMPP: stanzas and bytes sent to a client and not yet acknowledged
    /// (XEP-0198) before the session is ended.
    pub sm_max_unacked: usize,
    pub sm_max_unacked_bytes: usize,
    /// XMPP: what an account archives unless its preferences say otherwise
    /// (XEP-0313: always, roster, never).
    pub mam_default: crate::xmpp::mam::Policy,
    /// XMPP: archive query results per page at most.
    pub mam_max_page: usize,
    /// XMPP: days archived messages are kept (0: for ever).
    pub mam_retention_days: u64,
    /// XMPP: seconds a XEP-0484 FAST token lives (a login with one that has
    /// less than half of this left gets a new one).
    pub fast_token_expire: u64,
    /// XMPP: FAST tokens one account may hold, all its client installations
    /// together (the oldest are revoked first).
    pub fast_max_tokens: usize,
    pub mqtt_allow_anonymous: bool,
    pub mqtt_max_packet_size: u32,
    /// Login throttle (see `auth::throttle`).
    pub login_failures_allowed: u32,
    pub login_failure_window: u64,
    pub login_backoff_max: u64,
    /// Password hashes (PBKDF2) running at once.
    pub password_hash_concurrency: usize,
    /// QoS 1/2 messages a detached persistent MQTT session may have queued.
    pub mqtt_max_queue: usize,
    /// MQTT limits (see `mqtt::session::MqttLimits`).
    pub mqtt_max_connect_size: usize,
    pub mqtt_max_filters_per_subscribe: usize,
    pub mqtt_max_subscriptions: usize,
    pub mqtt_max_topic_levels: usize,
    pub mqtt_max_topic_length: usize,
    pub mqtt_max_sessions_per_account: usize,
    pub mqtt_max_session_expiry: u32,
    /// MQTT: the longest keep-alive a client may use, seconds; 0: no cap
    /// (`mqtt_max_keepalive`).
    pub mqtt_max_keepalive: u16,
    /// Largest WebSocket frame MQTT over WebSocket takes
    /// (`mqtt_ws_max_frame_size`): memory a peer pins per connection
    /// before it logs in, as `mqtt_max_connect_size` does on TCP.
    pub mqtt_ws_max_frame_size: usize,
    /// Seconds between `$SYS/broker/…` updates; 0: none (`mqtt_sys_interval`).
    pub mqtt_sys_interval: u64,
    /// MQTT access rules (`[[mqtt_acl]]`, `mqtt_acl_default`).
    pub mqtt_acl: crate::mqtt::acl::Acl,
    pub mqtt_max_retained: usize,
    /// MQTT: bytes of retained messages per domain.
    pub mqtt_max_retained_bytes: u64,
    /// Bytes a session's queue may hold before its senders are made to wait.
    pub session_queue_high_water: u32,
    /// Seconds a session may drain nothing (with senders waiting) before it
    /// is cut off as a slow consumer.
    pub slow_consumer_timeout: u64,
    pub log_level: String,
    /// `text` (the default) or `json`: one JSON object per line, with the
    /// connection's span fields (peer, account, client id or JID, session).
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hosts: vec!["localhost".into()],
            data_dir: PathBuf::from("./petrel-data"),
            store: crate::store::StoreKind::Sled,
            certfiles: Vec::new(),
            oauth_expire: 2_592_000,
            oauth_access: OauthAccess::All,
            oauth_client_id_check: ClientIdCheck::Db,
            oauth_issuer: None,
            oauth_expire_with_refresh: 3600,
            oauth_refresh_expire: 2_592_000,
            oauth_legacy_grants: true,
            http_api: false,
            source: None,
            oauth_code_expire: 60,
            oauth_max_pending_codes: 10_000,
            oauth_device_code_expire: 600,
            oauth_device_interval: 5,
            oauth_max_device_codes_per_ip: 20,
            oauth_max_scope_length: 1024,
            listen: default_listeners(),
            max_stanza_size: 262_144,
            xml_max_header_size: 4096,
            xml_max_depth: 32,
            xml_max_attributes: 64,
            xml_max_children: 1024,
            xml_max_elements: 4096,
            xml_max_namespace_length: 512,
            negotiation_timeout: 60,
            csi_max_held: 500,
            max_blocklist_items: 1000,
            max_private_items: 100,
            muc: Default::default(),
            upload: Default::default(),
            pep: Default::default(),
            pubsub: Default::default(),
            bridge: Default::default(),
            cluster: None,
            resume_timeout: 300,
            sm_max_unacked: 5000,
            sm_max_unacked_bytes: 4 * 1024 * 1024,
            mam_default: crate::xmpp::mam::Policy::Always,
            mam_max_page: 250,
            mam_retention_days: 0,
            // Prosody's default: three weeks.
            fast_token_expire: 21 * 86_400,
            fast_max_tokens: 32,
            max_offline_messages: 500,
            http_header_timeout: 30,
            http_request_timeout: 30,
            http2_keep_alive: 20,
            http_idle_timeout: 120,
            mqtt_allow_anonymous: false,
            mqtt_max_packet_size: 1 << 20,
            mqtt_max_queue: 1000,
            login_failures_allowed: 5,
            login_failure_window: 300,
            login_backoff_max: 300,
            password_hash_concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            mqtt_max_connect_size: 65_536,
            mqtt_max_filters_per_subscribe: 32,
            mqtt_max_subscriptions: 1000,
            mqtt_max_topic_levels: 32,
            mqtt_max_topic_length: 1024,
            mqtt_max_sessions_per_account: 10_000,
            mqtt_max_session_expiry: 604_800,
            mqtt_max_keepalive: 0,
            mqtt_ws_max_frame_size: 65_536,
            mqtt_sys_interval: 10,
            mqtt_acl: crate::mqtt::acl::Acl::default(),
            mqtt_max_retained: 100_000,
            mqtt_max_retained_bytes: 1 << 30,
            session_queue_high_water: 256 * 1024,
            slow_consumer_timeout: 30,
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// The default ports of CONVENTIONS.md, all on loopback: those of the modules
/// served (all of them).
pub fn default_listeners() -> Vec<Listener> {
    vec![
        Listener::new(Module::C2s, 5222, false),
        Listener::new(Module::C2s, 5223, true),
        Listener::new(Module::Mqtt, 1883, false),
        Listener::new(Module::Mqtt, 8883, true),
        Listener::new(Module::Http, 5280, false),
        Listener::new(Module::Http, 5443, true),
        Listener::new(Module::Metrics, 9100, false),
    ]
}

/// The file's shape; every key optional so that defaults fill the gaps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hosts: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    store_readers: Option<usize>,
    certfiles: Option<Vec<PathBuf>>,
    oauth_expire: Option<u64>,
    oauth_access: Option<RawAccess>,
    oauth_client_id_check: Option<ClientIdCheck>,
    oauth_issuer: Option<String>,
    oauth_expire_with_refresh: Option<u64>,
    oauth_refresh_expire: Option<u64>,
    oauth_legacy_grants: Option<bool>,
    http_api: Option<bool>,
    oauth_code_expire: Option<u64>,
    oauth_max_pending_codes: Option<usize>,
    oauth_device_code_expire: Option<u64>,
    oauth_device_interval: Option<u64>,
    oauth_max_device_codes_per_ip: Option<u32>,
    oauth_max_scope_length: Option<usize>,
    listen: Option<Vec<Listener>>,
    max_stanza_size: Option<usize>,
    xml_max_header_size: Option<usize>,
    xml_max_depth: Option<usize>,
    xml_max_attributes: Option<usize>,
    xml_max_children: Option<usize>,
    xml_max_elements: Option<usize>,
    xml_max_namespace_length: Option<usize>,
    negotiation_timeout: Option<u64>,
    csi_max_held: Option<usize>,
    max_blocklist_items: Option<usize>,
    max_private_items: Option<usize>,
    muc: Option<crate::xmpp::muc::MucConfig>,
    upload: Option<crate::xmpp::upload::UploadConfig>,
    pep: Option<crate::xmpp::pep::PepConfig>,
    pubsub: Option<crate::xmpp::pubsub::PubsubConfig>,
    bridge: Option<crate::bridge::BridgeConfig>,
    cluster: Option<crate::cluster::ClusterConfig>,
    resume_timeout: Option<u64>,
    sm_max_unacked: Option<usize>,
    sm_max_unacked_bytes: Option<usize>,
    mam_default: Option<String>,
    mam_max_page: Option<usize>,
    mam_retention_days: Option<u64>,
    fast_token_expire: Option<u64>,
    fast_max_tokens: Option<usize>,
    max_offline_messages: Option<usize>,
    http_header_timeout: Option<u64>,
    http_request_timeout: Option<u64>,
    http2_keep_alive: Option<u64>,
    http_idle_timeout: Option<u64>,
    mqtt_allow_anonymous: Option<bool>,
    mqtt_max_packet_size: Option<u32>,
    mqtt_max_queue: Option<usize>,
    login_failures_allowed: Option<u32>,
    login_failure_window: Option<u64>,
    login_backoff_max: Option<u64>,
    password_hash_concurrency: Option<usize>,
    mqtt_max_connect_size: Option<usize>,
    mqtt_max_filters_per_subscribe: Option<usize>,
    mqtt_max_subscriptions: Option<usize>,
    mqtt_max_topic_levels: Option<usize>,
    mqtt_max_topic_length: Option<usize>,
    mqtt_max_sessions_per_account: Option<usize>,
    mqtt_max_session_expiry: Option<u32>,
    mqtt_max_keepalive: Option<u16>,
    mqtt_sys_interval: Option<u64>,
    mqtt_ws_max_frame_size: Option<usize>,
    mqtt_acl: Option<Vec<crate::mqtt::acl::RawRule>>,
    mqtt_acl_default: Option<crate::mqtt::acl::Permission>,
    mqtt_max_retained: Option<usize>,
    mqtt_max_retained_bytes: Option<u64>,
    session_queue_high_water: Option<u32>,
    slow_consumer_timeout: Option<u64>,
    log_level: Option<String>,
    log_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAccess {
    Word(String),
    List(Vec<String>),
}

/// Sets a count key: at least `min`.
fn at_least<T: PartialOrd + Copy + std::fmt::Display>(
    key: &'static str,
    value: Option<T>,
    field: &mut T,
    min: T,
) -> Result<(), ConfigError> {
    if let Some(v) = value {
        if v < min {
            return Err(ConfigError::new(key, format!("must be at least {min}")));
        }
        *field = v;
    }
    Ok(())
}

/// Sets a duration key given in seconds: at least 1, at most `max`.
fn seconds_in(
    key: &'static str,
    value: Option<u64>,
    field: &mut u64,
    max: u64,
) -> Result<(), ConfigError> {
    if let Some(v) = value {
        if v == 0 || v > max {
            return Err(ConfigError::new(
                key,
                if max == u64::MAX {
                    "must be at least 1 second".to_string()
                } else {
                    format!("must be 1 to {max} seconds")
                },
            ));
        }
        *field = v;
    }
    Ok(())
}

impl Config {
    /// The XMPP services turned on (`[muc]`, `[upload]`, `[pubsub]`).
    /// Upload needs an HTTP listener to take the files: without one it is
    /// off.
    pub fn services(&self) -> crate::xmpp::services::Services {
        use crate::xmpp::services::{Service, Services};
        let http = self.listen.iter().any(|l| l.module == Module::Http);
        Services::new(
            [
                (self.muc.enabled, Service::Muc),
                (self.upload.enabled && http, Service::Upload),
                (self.pubsub.enabled, Service::Pubsub),
                (self.bridge.direct, Service::Mqtt),
            ]
            .into_iter()
            .filter_map(|(on, s)| on.then_some(s)),
        )
    }

    /// Reads and checks a TOML file. Relative `data_dir` and `certfiles` stay
    /// relative to the working directory, as ejabberd's do.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let mut c = Config::parse(&text)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parses TOML text; the error names the offending key.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(syntax)", one_line(&e.to_string())))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(top level)".into()
            } else {
                key
            };
            ConfigError::new(key, one_line(&e.inner().to_string()))
        })?;
        let mut c = Config::default();
        if let Some(h) = raw.hosts {
            c.hosts = h;
        }
        if let Some(d) = raw.data_dir {
            c.data_dir = d;
        }
        if let Some(s) = raw.store {
            c.store =
                crate::store::StoreKind::parse(&s).map_err(|p| ConfigError::new("store", p))?;
        }
        if let Some(n) = raw.store_readers {
            if n > 64 {
                return Err(ConfigError::new("store_readers", "at most 64"));
            }
            if let crate::store::StoreKind::Postgres(url) = &mut c.store {
                url.1 = n;
            }
        }
        if let Some(f) = raw.certfiles {
            c.certfiles = f;
        }
        if let Some(e) = raw.oauth_expire {
            c.oauth_expire = e;
        }
        if let Some(a) = raw.oauth_access {
            c.oauth_access = match a {
                RawAccess::Word(w) if w == "all" => OauthAccess::All,
                RawAccess::Word(w) => {
                    return Err(ConfigError::new(
                        "oauth_access",
                        format!("expected \"all\" or a list of JIDs, got \"{w}\""),
                    ))
                }
                RawAccess::List(l) => {
                    OauthAccess::Only(l.iter().map(|j| j.to_lowercase()).collect())
                }
            };
        }
        if let Some(m) = raw.oauth_client_id_check {
            c.oauth_client_id_check = m;
        }
        if let Some(i) = raw.oauth_issuer {
            let ok = (i.starts_with("https://") || i.starts_with("http://"))
                && !i.contains(['?', '#'])
                && !i.ends_with('/');
            if !ok {
                return Err(ConfigError::new(
                    "oauth_issuer",
                    "must be an http(s) URL without query, fragment or trailing slash (RFC 8414)",
                ));
            }
            c.oauth_issuer = Some(i);
        }
        seconds_in(
            "oauth_expire_with_refresh",
            raw.oauth_expire_with_refresh,
            &mut c.oauth_expire_with_refresh,
            u64::MAX,
        )?;
        seconds_in(
            "oauth_refresh_expire",
            raw.oauth_refresh_expire,
            &mut c.oauth_refresh_expire,
            u64::MAX,
        )?;
        if let Some(b) = raw.http_api {
            c.http_api = b;
        }
        if let Some(b) = raw.oauth_legacy_grants {
            c.oauth_legacy_grants = b;
        }
        seconds_in(
            "oauth_code_expire",
            raw.oauth_code_expire,
            &mut c.oauth_code_expire,
            60,
        )?;
        at_least(
            "oauth_max_pending_codes",
            raw.oauth_max_pending_codes,
            &mut c.oauth_max_pending_codes,
            1,
        )?;
        seconds_in(
            "oauth_device_code_expire",
            raw.oauth_device_code_expire,
            &mut c.oauth_device_code_expire,
            86_400,
        )?;
        seconds_in(
            "oauth_device_interval",
            raw.oauth_device_interval,
            &mut c.oauth_device_interval,
            3600,
        )?;
        at_least(
            "oauth_max_device_codes_per_ip",
            raw.oauth_max_device_codes_per_ip,
            &mut c.oauth_max_device_codes_per_ip,
            1,
        )?;
        // Room for `sasl_auth` at least.
        at_least(
            "oauth_max_scope_length",
            raw.oauth_max_scope_length,
            &mut c.oauth_max_scope_length,
            9,
        )?;
        if let Some(l) = raw.listen {
            c.listen = l;
        }
        if let Some(s) = raw.max_stanza_size {
            c.max_stanza_size = s;
        }
        if let Some(n) = raw.login_failures_allowed {
            c.login_failures_allowed = n;
        }
        // Zero would switch the brake off unnoticed; a year is longer than
        // any sensible setting.
        seconds_in(
            "login_failure_window",
            raw.login_failure_window,
            &mut c.login_failure_window,
            31_536_000,
        )?;
        seconds_in(
            "login_backoff_max",
            raw.login_backoff_max,
            &mut c.login_backoff_max,
            31_536_000,
        )?;
        if let Some(h) = raw.password_hash_concurrency {
            if h == 0 {
                return Err(ConfigError::new(
                    "password_hash_concurrency",
                    "must be at least 1",
                ));
            }
            c.password_hash_concurrency = h;
        }
        if let Some(e) = raw.mqtt_max_session_expiry {
            c.mqtt_max_session_expiry = e;
        }
        if let Some(k) = raw.mqtt_max_keepalive {
            c.mqtt_max_keepalive = k;
        }
        at_least(
            "mqtt_ws_max_frame_size",
            raw.mqtt_ws_max_frame_size,
            &mut c.mqtt_ws_max_frame_size,
            256,
        )?;
        if let Some(i) = raw.mqtt_sys_interval {
            if i > 86_400 {
                return Err(ConfigError::new(
                    "mqtt_sys_interval",
                    "must be 0 (off) to 86400 seconds",
                ));
            }
            c.mqtt_sys_interval = i;
        }
        if raw.mqtt_acl.is_some() || raw.mqtt_acl_default.is_some() {
            let default = raw
                .mqtt_acl_default
                .unwrap_or(crate::mqtt::acl::Permission::Allow);
            c.mqtt_acl =
                crate::mqtt::acl::Acl::new(raw.mqtt_acl.as_deref().unwrap_or(&[]), default)
                    .map_err(|e| ConfigError::new("mqtt_acl", e))?;
        }
        for (value, field) in [
            (raw.mqtt_max_connect_size, &mut c.mqtt_max_connect_size),
            (
                raw.mqtt_max_filters_per_subscribe,
                &mut c.mqtt_max_filters_per_subscribe,
            ),
            (raw.mqtt_max_subscriptions, &mut c.mqtt_max_subscriptions),
            (raw.mqtt_max_topic_levels, &mut c.mqtt_max_topic_levels),
            (raw.mqtt_max_topic_length, &mut c.mqtt_max_topic_length),
            (
                raw.mqtt_max_sessions_per_account,
                &mut c.mqtt_max_sessions_per_account,
            ),
            (raw.mqtt_max_retained, &mut c.mqtt_max_retained),
            (raw.xml_max_header_size, &mut c.xml_max_header_size),
            (raw.xml_max_depth, &mut c.xml_max_depth),
            (raw.xml_max_attributes, &mut c.xml_max_attributes),
            (raw.xml_max_children, &mut c.xml_max_children),
            (raw.xml_max_elements, &mut c.xml_max_elements),
            (
                raw.xml_max_namespace_length,
                &mut c.xml_max_namespace_length,
            ),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        if let Some(b) = raw.mqtt_max_retained_bytes {
            c.mqtt_max_retained_bytes = b;
        }
        if let Some(t) = raw.negotiation_timeout {
            c.negotiation_timeout = t;
        }
        if let Some(m) = raw.max_offline_messages {
            c.max_offline_messages = m;
        }
        if let Some(m) = raw.csi_max_held {
            c.csi_max_held = m;
        }
        if let Some(m) = raw.max_private_items {
            c.max_private_items = m;
        }
        if let Some(m) = raw.muc {
            c.muc = m;
        }
        if let Some(u) = raw.upload {
            c.upload = u;
        }
        if let Some(p) = raw.pep {
            c.pep = p;
        }
        if let Some(b) = raw.bridge {
            c.bridge = b;
        }
        if let Some(cl) = raw.cluster {
            if let Err((key, why)) = cl.check() {
                return Err(ConfigError::new(format!("cluster.{key}"), why));
            }
            if !matches!(c.store, crate::store::StoreKind::Postgres(_)) {
                return Err(ConfigError::new(
                    "cluster",
                    "a cluster shares its store: set store = \"postgres://…\"",
                ));
            }
            c.cluster = Some(cl);
        }
        if let Some(p) = raw.pubsub {
            c.pubsub = p;
        }
        if let Some(m) = raw.max_blocklist_items {
            c.max_blocklist_items = m;
        }
        if let Some(t) = raw.resume_timeout {
            c.resume_timeout = t;
        }
        if let Some(m) = raw.sm_max_unacked {
            c.sm_max_unacked = m;
        }
        if let Some(m) = raw.sm_max_unacked_bytes {
            c.sm_max_unacked_bytes = m;
        }
        if let Some(d) = raw.mam_default {
            c.mam_default = crate::xmpp::mam::Policy::parse(&d).ok_or_else(|| {
                ConfigError::new("mam_default", "must be \"always\", \"roster\" or \"never\"")
            })?;
        }
        if let Some(m) = raw.mam_max_page {
            c.mam_max_page = m;
        }
        if let Some(d) = raw.mam_retention_days {
            c.mam_retention_days = d;
        }
        if let Some(t) = raw.fast_token_expire {
            if t == 0 {
                return Err(ConfigError::new(
                    "fast_token_expire",
                    "must be at least 1 second",
                ));
            }
            c.fast_token_expire = t;
        }
        if let Some(m) = raw.fast_max_tokens {
            if m == 0 {
                return Err(ConfigError::new("fast_max_tokens", "must be at least 1"));
            }
            c.fast_max_tokens = m;
        }
        seconds_in(
            "http_header_timeout",
            raw.http_header_timeout,
            &mut c.http_header_timeout,
            u64::MAX,
        )?;
        seconds_in(
            "http_request_timeout",
            raw.http_request_timeout,
            &mut c.http_request_timeout,
            u64::MAX,
        )?;
        seconds_in(
            "http2_keep_alive",
            raw.http2_keep_alive,
            &mut c.http2_keep_alive,
            u64::MAX,
        )?;
        seconds_in(
            "http_idle_timeout",
            raw.http_idle_timeout,
            &mut c.http_idle_timeout,
            u64::MAX,
        )?;
        if let Some(a) = raw.mqtt_allow_anonymous {
            c.mqtt_allow_anonymous = a;
        }
        if let Some(m) = raw.mqtt_max_packet_size {
            c.mqtt_max_packet_size = m;
        }
        if let Some(q) = raw.mqtt_max_queue {
            c.mqtt_max_queue = q;
        }
        if let Some(h) = raw.session_queue_high_water {
            c.session_queue_high_water = h;
        }
        if let Some(t) = raw.slow_consumer_timeout {
            c.slow_consumer_timeout = t;
        }
        if let Some(f) = raw.log_format {
            c.log_format = match f.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::new(
                        "log_format",
                        "must be \"text\" or \"json\"",
                    ))
                }
            };
        }
        if let Some(l) = raw.log_level {
            c.log_level = l;
        }
        c.check()?;
        Ok(c)
    }

    fn check(&mut self) -> Result<(), ConfigError> {
        let tables = [
            ("muc", self.muc.check()),
            ("upload", self.upload.check()),
            ("pep", self.pep.check()),
            ("pubsub", self.pubsub.check()),
            ("bridge", self.bridge.check()),
        ];
        for (table, checked) in tables {
            if let Err((key, why)) = checked {
                return Err(ConfigError::new(format!("{table}.{key}"), why));
            }
        }
        if self.hosts.is_empty() {
            return Err(ConfigError::new("hosts", "at least one host is needed"));
        }
        for (i, h) in self.hosts.iter_mut().enumerate() {
            *h = h.to_lowercase();
            if !crate::auth::jid::valid_domain(h) {
                return Err(ConfigError::new(
                    format!("hosts[{i}]"),
                    format!("\"{h}\" is not a valid domain name"),
                ));
            }
        }
        if self.oauth_expire == 0 {
            return Err(ConfigError::new(
                "oauth_expire",
                "must be at least 1 second",
            ));
        }
        if let OauthAccess::Only(list) = &self.oauth_access {
            for (i, j) in list.iter().enumerate() {
                if crate::auth::jid::BareJid::parse(j).is_err() {
                    return Err(ConfigError::new(
                        format!("oauth_access[{i}]"),
                        format!("\"{j}\" is not a bare JID"),
                    ));
                }
            }
        }
        if self.certfiles.len() == 1 {
            // One file may hold both chain and key; that is fine.
        }
        for (i, f) in self.certfiles.iter().enumerate() {
            if !f.exists() {
                return Err(ConfigError::new(
                    format!("certfiles[{i}]"),
                    format!("{} does not exist", f.display()),
                ));
            }
        }
        if self.max_stanza_size < 4096 {
            return Err(ConfigError::new(
                "max_stanza_size",
                "must be at least 4096 bytes",
            ));
        }
        if self.session_queue_high_water < 4096 {
            return Err(ConfigError::new(
                "session_queue_high_water",
                "must be at least 4096 bytes",
            ));
        }
        if self.slow_consumer_timeout == 0 {
            return Err(ConfigError::new(
                "slow_consumer_timeout",
                "must be at least 1 second",
            ));
        }
        for (key, value, least) in [
            ("xml_max_header_size", self.xml_max_header_size, 512),
            ("xml_max_depth", self.xml_max_depth, 4),
            ("xml_max_attributes", self.xml_max_attributes, 8),
            ("xml_max_children", self.xml_max_children, 16),
            ("xml_max_elements", self.xml_max_elements, 64),
            (
                "xml_max_namespace_length",
                self.xml_max_namespace_length,
                64,
            ),
            ("mqtt_max_connect_size", self.mqtt_max_connect_size, 1024),
            (
                "mqtt_max_filters_per_subscribe",
                self.mqtt_max_filters_per_subscribe,
                1,
            ),
            ("mqtt_max_subscriptions", self.mqtt_max_subscriptions, 1),
            ("mqtt_max_topic_levels", self.mqtt_max_topic_levels, 1),
            ("mqtt_max_topic_length", self.mqtt_max_topic_length, 16),
            (
                "mqtt_max_sessions_per_account",
                self.mqtt_max_sessions_per_account,
                1,
            ),
        ] {
            if value < least {
                return Err(ConfigError::new(key, format!("must be at least {least}")));
            }
        }
        if self.negotiation_timeout == 0 {
            return Err(ConfigError::new(
                "negotiation_timeout",
                "must be at least 1 second",
            ));
        }
        if self.mqtt_max_packet_size < 128 {
            return Err(ConfigError::new(
                "mqtt_max_packet_size",
                "must be at least 128 bytes",
            ));
        }
        if self.mqtt_max_queue == 0 {
            return Err(ConfigError::new("mqtt_max_queue", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::new(
                "log_level",
                format!("\"{}\" is not a log filter", self.log_level),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listen.iter().enumerate() {
            if l.port != 0 && !seen.insert((l.ip, l.port)) {
                return Err(ConfigError::new(
                    format!("listen[{i}].port"),
                    format!("{}:{} is used by an earlier listener", l.ip, l.port),
                ));
            }
            if l.tls && l.starttls {
                return Err(ConfigError::new(
                    format!("listen[{i}].starttls"),
                    "a tls listener cannot also offer starttls",
                ));
            }
            if l.module == Module::Metrics && l.tls {
                return Err(ConfigError::new(
                    format!("listen[{i}].tls"),
                    "a metrics listener is plain HTTP (tls = true is not served there)",
                ));
            }
            if l.module != Module::C2s && (l.starttls || l.starttls_required.is_some()) {
                return Err(ConfigError::new(
                    format!("listen[{i}].starttls"),
                    "only c2s listeners speak STARTTLS",
                ));
            }
            if l.max_connections == 0 {
                return Err(ConfigError::new(
                    format!("listen[{i}].max_connections"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// The first hosted domain: where a bare localpart belongs.
    pub fn default_host(&self) -> &str {
        &self.hosts[0]
    }

    pub fn is_hosted(&self, domain: &str) -> bool {
        self.hosts.iter().any(|h| h == domain)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
