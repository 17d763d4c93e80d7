//! The generator's command line and the checked [`Plan`] it turns into.
//!
//! Parsing (clap) and checking are separate: [`Options`] is what the user
//! typed, [`Options::plan`] refuses what the generator must not do (a target
//! or source address off loopback, an unbounded run, X-OAUTH2 over MQTT
//! 3.1.1, SCRAM over MQTT, an XMPP user without a domain…) and fills in what
//! each scenario needs (the default port of its protocol, for one). Tests build a [`Plan`]
//! directly or through [`Options::parse_from_args`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::{is_loopback, resolve_loopback, LoadError, MAX_DURATION};
use crate::mqtt::codec::{QoS, Version};

/// Most client connections one run may open (the machine allows 20,000 open
/// files per process; the broker needs its own share).
pub const MAX_CONNECTIONS: u64 = 20_000;
/// Longest payload a publisher may send.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes of the header every payload starts with: send time (ns since the
/// run's start, u64), publisher index (u32) and sequence number (u64).
pub const PAYLOAD_HEADER: usize = 20;
/// Characters of the header every xmpp-chat body starts with: the same three
/// numbers in hex, `-`-separated (16 + 1 + 8 + 1 + 16).
pub const XMPP_BODY_HEADER: usize = 42;
/// Characters of the header every bridge payload starts with: send time,
/// sender index, sequence number and the run's nonce in hex, `-`-separated
/// (16 + 1 + 8 + 1 + 16 + 1 + 8).
pub const BRIDGE_HEADER: usize = 51;
/// Most logins one xmpp-login run makes when they are not held (each is
/// closed before the run ends, so open files are not the bound; ephemeral
/// ports in TIME_WAIT are, spread them with --source-ips).
pub const MAX_LOGINS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N connections opened at a rate and held; connect latency, memory.
    MqttConn,
    /// Publishers and subscribers; throughput, end-to-end latency, losses.
    #[value(name = "mqtt-pubsub")]
    MqttPubSub,
    /// XMPP logins (stream, SASL, restart, bind) at a rate; login rate,
    /// latency, failures.
    XmppLogin,
    /// XMPP one-to-one chat between pairs of sessions; throughput,
    /// end-to-end latency, losses.
    XmppChat,
    /// The MQTT ⇄ XMPP bridge, MQTT → XMPP: MQTT publishers on their own
    /// topics, XMPP sessions subscribed to the PubSub nodes a bridge rule
    /// maps them to; throughput, end-to-end latency, losses.
    Bridge,
    /// The bridge the other way: XMPP sessions publishing PubSub items
    /// (iq set, a window of results), MQTT subscribers on the topics.
    BridgeBack,
    /// A reconnect storm: --count devices with persistent sessions
    /// subscribe, all drop at once, QoS 1 messages are queued for them
    /// (--queued each), then all reconnect together; time until all are
    /// back and have their messages, broker peak memory, failures.
    MqttStorm,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::MqttConn => "mqtt-conn",
            Scenario::MqttPubSub => "mqtt-pubsub",
            Scenario::XmppLogin => "xmpp-login",
            Scenario::XmppChat => "xmpp-chat",
            Scenario::Bridge => "bridge",
            Scenario::BridgeBack => "bridge-back",
            Scenario::MqttStorm => "mqtt-storm",
        }
    }

    /// Whether the scenario speaks XMPP only (else MQTT, or both).
    pub fn is_xmpp(self) -> bool {
        matches!(self, Scenario::XmppLogin | Scenario::XmppChat)
    }

    /// Whether the scenario speaks both protocols (MQTT at --target, XMPP
    /// at --xmpp-target).
    pub fn is_bridge(self) -> bool {
        matches!(self, Scenario::Bridge | Scenario::BridgeBack)
    }
}

/// How clients log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// MQTT 5 Authentication Method X-OAUTH2, the token in CONNECT; XMPP
    /// SASL X-OAUTH2 (`NUL localpart NUL token`).
    #[value(name = "x-oauth2")]
    XOauth2,
    /// Username from --user-pattern, --password (XMPP: SASL PLAIN).
    #[value(alias = "plain")]
    Password,
    /// Username from --user-pattern, a token as the password (XMPP: SASL
    /// PLAIN with the token, which Petrel accepts).
    TokenAsPassword,
    /// XMPP only: SASL SCRAM-SHA-256 with --password; the server's
    /// signature is verified.
    #[value(name = "scram-sha-256")]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MQTT only: no credentials (anonymous brokers such as a test Mosquitto).
    None,
    /// XMPP only: SASL2 (XEP-0388) with a XEP-0484 FAST token and Bind 2, one
    /// round trip; each user's token is fetched first (a SASL2 PLAIN login
    /// with --password asking for one), outside the measured phase.
    Fast,
}

/// Who publishes where and who listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Publisher i to subscriber i on its own topic (needs P = S).
    OneToOne,
    /// Every publisher on its own topic; every subscriber takes them all
    /// with one `+` wildcard.
    FanIn,
    /// Every publisher on one topic that every subscriber subscribes to.
    FanOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MqttVersion {
    #[value(name = "5")]
    V5,
    #[value(name = "3")]
    V311,
}

/// The command line: `load SCENARIO [OPTIONS]`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "load",
    about = "Petrel load generator: loopback targets only, every run bounded",
    after_help = "Scenarios: mqtt-conn (--count connections at --rate per second, held for \
--duration), mqtt-pubsub (--publishers/--subscribers in --layout, --count messages per \
publisher at --rate per second, for --duration), xmpp-login (--count logins at --rate per \
second, each closed once bound, or held for --duration with --hold), xmpp-chat (--pairs pairs \
of sessions, each sending --count messages to its partner at --rate per second with at most \
--inflight undelivered, for --duration), bridge (--pairs MQTT publishers, each on its topic of \
--topic-pattern at --rate, to as many XMPP sessions subscribed to the nodes a bridge rule maps \
the topics to), bridge-back (--pairs XMPP sessions publishing items to the nodes, at most \
--inflight unanswered, to as many MQTT subscribers), mqtt-storm (--count devices with \
persistent sessions, --session-expiry, default 3600 s, subscribe; all drop at once; --queued \
QoS 1 messages each are published to them; all reconnect together, at most \
--connect-concurrency handshakes at once, and are waited for at most --duration). XMPP users come from --user-pattern \
(localpart@domain; the domain is the stream's `to`)."
)]
pub struct Options {
    /// What to run; without it the usage is printed.
    #[arg(value_enum)]
    pub scenario: Option<Scenario>,
    /// Server address (must resolve to 127.0.0.0/8 or ::1). Default
    /// 127.0.0.1:1883 for MQTT (8883 with --tls), 127.0.0.1:5222 for XMPP
    /// (5223 with --tls). The bridge scenarios: the MQTT address. The MQTT
    /// scenarios take several, comma-separated (the nodes of a cluster):
    /// connection i goes to address i mod n, and publisher i to the one
    /// after it, so a publisher and its subscriber sit on different nodes.
    #[arg(long)]
    pub target: Option<String>,
    /// bridge, bridge-back: the XMPP (c2s) address, default 127.0.0.1:5222
    /// (5223 with --tls).
    #[arg(long)]
    pub xmpp_target: Option<String>,
    /// bridge, bridge-back: MQTT topic of pair i (`%d` becomes i).
    #[arg(long, default_value = "bench/%d/data")]
    pub topic_pattern: String,
    /// bridge, bridge-back: PubSub node of pair i, the name the server's
    /// bridge rule gives topic i (default: the topic itself, as a rule
    /// `mqtt = "bench/+/data"`, `node = "bench/{1}/data"` does).
    #[arg(long)]
    pub node_pattern: Option<String>,
    /// bridge, bridge-back: the PubSub service (default pubsub.<domain of
    /// --user-pattern>).
    #[arg(long)]
    pub pubsub_service: Option<String>,
    /// TLS from the first byte (MQTT over TLS, XMPP direct TLS); the
    /// certificate is not verified (loopback only).
    #[arg(long)]
    pub tls: bool,
    /// XMPP: STARTTLS on the plain port before authenticating; the
    /// certificate is not verified (loopback only).
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,
    #[arg(long, value_enum, default_value = "5")]
    pub mqtt_version: MqttVersion,
    #[arg(long, value_enum, default_value = "x-oauth2")]
    pub auth: AuthMode,
    /// Usernames; `%d` becomes the user index (connection index mod --users).
    /// XMPP: localpart@domain, the localpart is what SASL sends.
    #[arg(long, default_value = "user%d@localhost")]
    pub user_pattern: String,
    /// Distinct users the connections cycle through (xmpp-chat: session c
    /// logs in as user c mod --users; give at least 2 × --pairs for one
    /// session per account).
    #[arg(long, default_value_t = 1)]
    pub users: u64,
    /// Password of every user (auth password; the password grant).
    #[arg(long, default_value = "")]
    pub password: String,
    /// With --auth x-oauth2, also put the username (--user-pattern) in
    /// CONNECT. ejabberd's mod_mqtt checks the token against that user and
    /// refuses a CONNECT without one; Petrel accepts it when it names the
    /// token's owner. Token line i must belong to user i.
    #[arg(long)]
    pub username_with_token: bool,
    /// Tokens, one per line, used round-robin (line i serves user i mod --users).
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Fetch one token per user with the password grant from this URL
    /// (e.g. http://127.0.0.1:5280/oauth/token).
    #[arg(long)]
    pub oauth_url: Option<String>,
    #[arg(long, default_value = "")]
    pub client_id: String,
    #[arg(long, default_value = "")]
    pub client_secret: String,
    /// Seconds: how long connections are held (mqtt-conn, xmpp-login
    /// --hold) or senders run (mqtt-pubsub, xmpp-chat). At most 600.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// mqtt-conn: connections to open (default 100). xmpp-login: logins
    /// (default 100). mqtt-pubsub, xmpp-chat: messages per sender (default:
    /// until --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// mqtt-conn, xmpp-login: connections opened per second (default 1000).
    /// mqtt-pubsub, xmpp-chat: messages per second per sender (default
    /// unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// xmpp-chat: pairs of sessions; session 2i and 2i+1 talk to each other.
    /// bridge, bridge-back: pairs of an MQTT client and an XMPP session,
    /// both logged in as user i mod --users.
    #[arg(long, default_value_t = 1)]
    pub pairs: u64,
    /// xmpp-login: keep every login open (whitespace keepalives) until
    /// --duration ends instead of closing it once bound.
    #[arg(long)]
    pub hold: bool,
    /// xmpp-login: send initial presence once bound (xmpp-chat always does).
    #[arg(long)]
    pub presence: bool,
    /// xmpp-chat: address the partner's bare JID instead of its bound full
    /// JID (needs --users >= 2 × --pairs, one session per account).
    #[arg(long)]
    pub to_bare: bool,
    #[arg(long, default_value_t = 1)]
    pub publishers: u64,
    #[arg(long, default_value_t = 1)]
    pub subscribers: u64,
    #[arg(long, value_enum, default_value = "one-to-one")]
    pub layout: Layout,
    /// QoS of the publishes (bridge-back: of the MQTT subscriptions).
    /// Default 0; 1 for the bridge scenarios.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Bytes per message (at least 20: send time, publisher, sequence);
    /// xmpp-chat: characters of the body (at least 42, the same in hex).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// QoS 1/2 messages a publisher may have unacknowledged (also capped by
    /// the broker's Receive Maximum); xmpp-chat: messages a sender may have
    /// sent that its partner has not received yet.
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// Keep Alive in CONNECT, seconds; clients ping at half of it. XMPP
    /// sessions send a whitespace keepalive at half of it.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// MQTT: subscribers (mqtt-pubsub) and held connections (mqtt-conn)
    /// keep a persistent session for this many seconds (MQTT 5 Session
    /// Expiry Interval; 3.1.1: Clean Session 0 when above 0), so a broker
    /// stores each QoS 1/2 message for them before acknowledging it.
    #[arg(long, default_value_t = 0)]
    pub session_expiry: u32,
    /// mqtt-storm: QoS 1 messages queued for each device while it is away.
    #[arg(long, default_value_t = 1)]
    pub queued: u32,
    /// Handshakes (XMPP: whole logins) in progress at once while connecting.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: u64,
    /// Broker process to watch in /proc: CPU time and RSS over the run, and
    /// for mqtt-conn the RSS per held connection.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Comma-separated addresses in 127.0.0.0/8 that client sockets bind to,
    /// round-robin.
    #[arg(long, value_delimiter = ',', value_parser = parse_source_ip)]
    pub source_ips: Vec<IpAddr>,
    /// JSON report (default target/load/<scenario>-<unix time>.json; the SVG
    /// chart goes beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads of the generator's runtime (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No live progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--source-ips` entries: 127.0.0.0/8 only (the point is many source
/// addresses, which only IPv4 loopback has).
pub fn parse_source_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not an IP address: {e}"))?;
    match ip {
        IpAddr::V4(_) if is_loopback(ip) => Ok(ip),
        _ => Err(format!(
            "{ip} is not in 127.0.0.0/8 (source addresses must be IPv4 loopback)"
        )),
    }
}

/// Where tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// No tokens (auth password or none).
    None,
    /// Given tokens, used round-robin.
    List(Vec<String>),
    /// Fetched per user with the password grant before the run.
    OAuth {
        url: String,
        client_id: String,
        client_secret: String,
    },
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    /// The first of `targets`.
    pub target: SocketAddr,
    /// Every `--target` address (MQTT scenarios may give several).
    pub targets: Vec<SocketAddr>,
    /// bridge, bridge-back: the XMPP address (`target` is the MQTT one).
    pub xmpp_target: Option<SocketAddr>,
    /// bridge, bridge-back: topic and node of pair i (`%d`), and the
    /// PubSub service's JID.
    pub topic_pattern: String,
    pub node_pattern: String,
    pub pubsub_service: String,
    /// The name as given, for TLS server name indication.
    pub target_host: String,
    /// TLS from the first byte.
    pub tls: bool,
    /// XMPP STARTTLS.
    pub starttls: bool,
    pub version: Version,
    pub auth: AuthMode,
    pub user_pattern: String,
    pub users: u64,
    pub password: String,
    /// x-oauth2: the username goes in CONNECT beside the token.
    pub username_with_token: bool,
    pub tokens: TokenSource,
    pub duration: Duration,
    /// mqtt-conn: connections; xmpp-login: logins; mqtt-pubsub, xmpp-chat:
    /// messages per sender (None: until the duration ends).
    pub count: Option<u64>,
    /// mqtt-conn, xmpp-login: connects/s; mqtt-pubsub, xmpp-chat: messages/s
    /// per sender.
    pub rate: Option<f64>,
    /// xmpp-chat: pairs of sessions.
    pub pairs: u64,
    /// xmpp-login: hold the logins for the duration.
    pub hold: bool,
    /// xmpp-login: initial presence once bound.
    pub presence: bool,
    /// xmpp-chat: messages to the partner's bare JID.
    pub to_bare: bool,
    pub publishers: u64,
    pub subscribers: u64,
    pub layout: Layout,
    pub qos: QoS,
    pub payload: usize,
    pub inflight: u16,
    pub keep_alive: u16,
    pub session_expiry: u32,
    /// mqtt-storm: messages queued per device.
    pub queued: u32,
    pub connect_concurrency: u64,
    pub pid: Option<u32>,
    pub source_ips: Vec<IpAddr>,
}

impl Options {
    /// Parses arguments as the CLI gets them (program name first). Cargo
    /// adds `--bench` when it runs a bench target; it is ignored.
    pub fn parse_from_args<I, T>(args: I) -> Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(Into::into)
            .filter(|a| a != "--bench")
            .collect();
        Options::try_parse_from(args)
    }

    /// Checks the options and reads the token file. `None` when no scenario
    /// was given (the CLI prints its usage then).
    pub fn plan(&self) -> Result<Option<Plan>, LoadError> {
        let Some(scenario) = self.scenario else {
            return Ok(None);
        };
        let refuse = |m: String| Err(LoadError::Refused(m));
        let xmpp = scenario.is_xmpp();
        let bridge = scenario.is_bridge();
        let target_given = self.target.clone().unwrap_or_else(|| {
            let port = match (xmpp, self.tls) {
                (false, false) => 1883,
                (false, true) => 8883,
                (true, false) => 5222,
                (true, true) => 5223,
            };
            format!("127.0.0.1:{port}")
        });
        let targets = target_given
            .split(',')
            .map(|t| resolve_loopback(t.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.len() > 1 && (xmpp || bridge) {
            return refuse(
                "several --target addresses are for the MQTT scenarios (mqtt-conn, mqtt-pubsub, mqtt-storm)"
                    .into(),
            );
        }
        let target = targets[0];
        let xmpp_target = match (&self.xmpp_target, bridge) {
            (Some(_), false) => {
                return refuse(
                    "--xmpp-target is for the bridge scenarios (bridge, bridge-back)".into(),
                )
            }
            (given, true) => Some(resolve_loopback(given.as_deref().unwrap_or(if self.tls {
                "127.0.0.1:5223"
            } else {
                "127.0.0.1:5222"
            }))?),
            (None, false) => None,
        };
        let target_host = target_given
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_default();
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return refuse(format!(
                "--duration must be positive, not {}",
                self.duration
            ));
        }
        let duration = Duration::from_secs_f64(self.duration).min(MAX_DURATION);
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return refuse(format!("--rate must be positive, not {r}"));
            }
        }
        let version = match self.mqtt_version {
            MqttVersion::V5 => Version::V5,
            MqttVersion::V311 => Version::V311,
        };
        if !xmpp && self.auth == AuthMode::XOauth2 && version == Version::V311 {
            return refuse(
                "--auth x-oauth2 needs MQTT 5; with --mqtt-version 3 use token-as-password".into(),
            );
        }
        if !xmpp && self.auth == AuthMode::ScramSha256 {
            return refuse("--auth scram-sha-256 is for the XMPP scenarios".into());
        }
        if (xmpp || bridge) && self.auth == AuthMode::None {
            return refuse("the XMPP scenarios need credentials: --auth x-oauth2, password (plain), scram-sha-256 or token-as-password".into());
        }
        if !xmpp && !bridge && self.starttls {
            return refuse(
                "--starttls is for the XMPP scenarios (MQTT has only --tls from the first byte)"
                    .into(),
            );
        }
        if self.users == 0 {
            return refuse("--users must be at least 1".into());
        }
        if self.username_with_token && self.auth != AuthMode::XOauth2 {
            return refuse("--username-with-token goes with --auth x-oauth2".into());
        }
        let named_users = xmpp
            || bridge
            || self.username_with_token
            || matches!(self.auth, AuthMode::Password | AuthMode::TokenAsPassword);
        if named_users && !self.user_pattern.contains("%d") && self.users > 1 {
            return refuse("--user-pattern needs %d when --users is more than 1".into());
        }
        if !xmpp && self.auth == AuthMode::Fast {
            return refuse("--auth fast is an XMPP login (SASL2 + FAST)".into());
        }
        if xmpp
            && matches!(
                self.auth,
                AuthMode::Password | AuthMode::ScramSha256 | AuthMode::Fast
            )
            && self.password.is_empty()
        {
            return refuse("XMPP password logins need --password".into());
        }
        if xmpp || bridge {
            match self.user_pattern.split_once('@') {
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains(['@', '/']) => {}
                _ => {
                    return refuse(format!(
                        "--user-pattern {:?}: XMPP users are localpart@domain (the domain is the stream's `to`)",
                        self.user_pattern
                    ))
                }
            }
        }
        let needs_tokens = matches!(self.auth, AuthMode::XOauth2 | AuthMode::TokenAsPassword);
        let tokens = match (&self.tokens, &self.oauth_url) {
            (Some(_), Some(_)) => return refuse("give --tokens or --oauth-url, not both".into()),
            (Some(file), None) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| LoadError::io(format!("--tokens {}", file.display()), e))?;
                let list: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
                if list.is_empty() {
                    return refuse(format!("--tokens {} holds no token", file.display()));
                }
                TokenSource::List(list)
            }
            (None, Some(url)) => {
                super::net::check_oauth_url(url)?;
                TokenSource::OAuth {
                    url: url.clone(),
                    client_id: self.client_id.clone(),
                    client_secret: self.client_secret.clone(),
                }
            }
            (None, None) => TokenSource::None,
        };
        if let TokenSource::List(list) = &tokens {
            if self.username_with_token && self.users > 1 && list.len() as u64 != self.users {
                return refuse(format!(
                    "--username-with-token needs one token per user: {} tokens for --users {}",
                    list.len(),
                    self.users
                ));
            }
        }
        if needs_tokens && tokens == TokenSource::None {
            return refuse(format!(
                "--auth {} needs --tokens FILE or --oauth-url URL",
                self.auth
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ));
        }
        let min_payload = if bridge {
            BRIDGE_HEADER
        } else if xmpp {
            XMPP_BODY_HEADER
        } else {
            PAYLOAD_HEADER
        };
        if self.payload < min_payload || self.payload > MAX_PAYLOAD {
            return refuse(format!(
                "--payload must be between {min_payload} and {MAX_PAYLOAD} bytes"
            ));
        }
        let storm = scenario == Scenario::MqttStorm;
        let qos = QoS::from_u8(self.qos.unwrap_or(u8::from(bridge || storm))).unwrap_or_default();
        if storm && qos == QoS::AtMostOnce {
            return refuse("mqtt-storm queues QoS 1 or 2 messages: --qos 1 or 2".into());
        }
        if self.inflight == 0 {
            return refuse("--inflight must be at least 1".into());
        }
        let count = match scenario {
            Scenario::MqttConn => {
                let n = self.count.unwrap_or(100);
                if n == 0 || n > MAX_CONNECTIONS {
                    return refuse(format!(
                        "mqtt-conn --count must be between 1 and {MAX_CONNECTIONS}"
                    ));
                }
                Some(n)
            }
            Scenario::MqttStorm => {
                let n = self.count.unwrap_or(1000);
                if n == 0 || n > MAX_CONNECTIONS {
                    return refuse(format!(
                        "mqtt-storm --count must be between 1 and {MAX_CONNECTIONS}"
                    ));
                }
                if self.queued == 0 || self.queued > 10_000 {
                    return refuse("mqtt-storm --queued must be between 1 and 10000".into());
                }
                Some(n)
            }
            Scenario::XmppLogin => {
                let n = self.count.unwrap_or(100);
                let max = if self.hold {
                    MAX_CONNECTIONS
                } else {
                    MAX_LOGINS
                };
                if n == 0 || n > max {
                    return refuse(format!(
                        "xmpp-login --count must be between 1 and {max}{}",
                        if self.hold { " with --hold" } else { "" }
                    ));
                }
                Some(n)
            }
            _ => self.count,
        };
        if scenario == Scenario::XmppChat || bridge {
            if self.pairs == 0 || self.pairs * 2 > MAX_CONNECTIONS {
                return refuse(format!(
                    "--pairs must be between 1 and {}",
                    MAX_CONNECTIONS / 2
                ));
            }
            if count == Some(0) {
                return refuse("--count must be at least 1".into());
            }
            if scenario == Scenario::XmppChat && self.to_bare && self.users < 2 * self.pairs {
                return refuse(format!(
                    "--to-bare needs one session per account: --users at least {} (2 × --pairs)",
                    2 * self.pairs
                ));
            }
        }
        if (self.hold || self.presence) && scenario != Scenario::XmppLogin {
            return refuse("--hold and --presence are xmpp-login options".into());
        }
        if self.to_bare && scenario != Scenario::XmppChat {
            return refuse("--to-bare is an xmpp-chat option".into());
        }
        let node_pattern = self
            .node_pattern
            .clone()
            .unwrap_or_else(|| self.topic_pattern.clone());
        let domain = self.user_pattern.split_once('@').map_or("", |(_, d)| d);
        let pubsub_service = self
            .pubsub_service
            .clone()
            .unwrap_or_else(|| format!("pubsub.{domain}"));
        if bridge {
            for (name, pattern) in [
                ("--topic-pattern", &self.topic_pattern),
                ("--node-pattern", &node_pattern),
            ] {
                if self.pairs > 1 && !pattern.contains("%d") {
                    return refuse(format!("{name} needs %d when --pairs is more than 1"));
                }
            }
            let topic = self.topic_pattern.replace("%d", "0");
            if !crate::mqtt::topics::valid_topic_name(&topic) || topic.starts_with('$') {
                return refuse(format!(
                    "--topic-pattern {:?} does not make topic names",
                    self.topic_pattern
                ));
            }
            if node_pattern.is_empty() || pubsub_service.is_empty() {
                return refuse("--node-pattern and --pubsub-service may not be empty".into());
            }
        } else if self.node_pattern.is_some() || self.pubsub_service.is_some() {
            return refuse(
                "--node-pattern and --pubsub-service are for the bridge scenarios".into(),
            );
        }
        if scenario == Scenario::MqttPubSub {
            let (p, s) = (self.publishers, self.subscribers);
            if p == 0 || s == 0 {
                return refuse("--publishers and --subscribers must be at least 1".into());
            }
            if p + s > MAX_CONNECTIONS {
                return refuse(format!(
                    "--publishers + --subscribers must be at most {MAX_CONNECTIONS}"
                ));
            }
            if self.layout == Layout::OneToOne && p != s {
                return refuse(format!(
                    "--layout one-to-one needs as many publishers as subscribers ({p} vs {s})"
                ));
            }
            if count == Some(0) {
                return refuse("--count must be at least 1".into());
            }
        }
        let rate = match (scenario, self.rate) {
            (Scenario::MqttConn | Scenario::XmppLogin, None) => Some(1000.0),
            (_, r) => r,
        };
        Ok(Some(Plan {
            scenario,
            target,
            targets,
            xmpp_target,
            topic_pattern: self.topic_pattern.clone(),
            node_pattern,
            pubsub_service,
            target_host,
            tls: self.tls,
            starttls: self.starttls,
            version,
            auth: self.auth,
            user_pattern: self.user_pattern.clone(),
            users: self.users,
            password: self.password.clone(),
            username_with_token: self.username_with_token,
            tokens,
            duration,
            count,
            rate,
            pairs: self.pairs,
            hold: self.hold,
            presence: self.presence,
            to_bare: self.to_bare,
            publishers: self.publishers,
            subscribers: self.subscribers,
            layout: self.layout,
            qos,
            payload: self.payload,
            inflight: self.inflight,
            keep_alive: self.keep_alive,
            // A storm's devices keep their sessions an hour unless told.
            session_expiry: if storm && self.session_expiry == 0 {
                3600
            } else {
                self.session_expiry
            },
            queued: self.queued,
            connect_concurrency: self.connect_concurrency.clamp(1, 4096),
            pid: self.pid,
            source_ips: self.source_ips.clone(),
        }))
    }
}

impl Plan {
    /// The username of user `u` (`%d` replaced by the index).
    pub fn username(&self, u: u64) -> String {
        self.user_pattern.replace("%d", &u.to_string())
    }

    /// bridge: the MQTT topic of pair `i`.
    pub fn topic(&self, i: u64) -> String {
        self.topic_pattern.replace("%d", &i.to_string())
    }

    /// bridge: the PubSub node of pair `i`.
    pub fn node(&self, i: u64) -> String {
        self.node_pattern.replace("%d", &i.to_string())
    }

    /// XMPP: the domain of every user (after the `@` of --user-pattern),
    /// which streams are opened to.
    pub fn xmpp_domain(&self) -> &str {
        self.user_pattern.split_once('@').map_or("", |(_, d)| d)
    }
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
