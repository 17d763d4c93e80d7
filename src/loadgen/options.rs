//! The generator's command line and the checked [`Plan`] it turns into.
//!
//! Parsing (clap) and checking are separate: [`Options`] is what the user
//! typed, [`Options::plan`] refuses what the generator must not do (a target
//! or source address off loopback, an unbounded run, X-OAUTH2 over MQTT
//! 3.1.1…) and fills in what each scenario needs. Tests build a [`Plan`]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N connections opened at a rate and held; connect latency, memory.
    MqttConn,
    /// Publishers and subscribers; throughput, end-to-end latency, losses.
    #[value(name = "mqtt-pubsub")]
    MqttPubSub,
    /// XMPP X-OAUTH2 logins (waits for the XMPP listener).
    XmppLogin,
    /// XMPP one-to-one chat (waits for the XMPP listener).
    XmppChat,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::MqttConn => "mqtt-conn",
            Scenario::MqttPubSub => "mqtt-pubsub",
            Scenario::XmppLogin => "xmpp-login",
            Scenario::XmppChat => "xmpp-chat",
        }
    }
}

/// How clients log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// MQTT 5 Authentication Method X-OAUTH2, the token in CONNECT.
    #[value(name = "x-oauth2")]
    XOauth2,
    /// Username from --user-pattern, --password.
    Password,
    /// Username from --user-pattern, a token as the password.
    TokenAsPassword,
    /// No credentials (anonymous brokers such as a test Mosquitto).
    None,
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
publisher at --rate per second, for --duration). xmpp-login and xmpp-chat wait for the XMPP \
listener."
)]
pub struct Options {
    /// What to run; without it the usage is printed.
    #[arg(value_enum)]
    pub scenario: Option<Scenario>,
    /// Broker address (must resolve to 127.0.0.0/8 or ::1).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub target: String,
    /// TLS to the target; the certificate is not verified (loopback only).
    #[arg(long)]
    pub tls: bool,
    #[arg(long, value_enum, default_value = "5")]
    pub mqtt_version: MqttVersion,
    #[arg(long, value_enum, default_value = "x-oauth2")]
    pub auth: AuthMode,
    /// Usernames; `%d` becomes the user index (connection index mod --users).
    #[arg(long, default_value = "user%d@localhost")]
    pub user_pattern: String,
    /// Distinct users the connections cycle through.
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
    /// Seconds: how long connections are held (mqtt-conn) or publishers run
    /// (mqtt-pubsub). At most 600.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// mqtt-conn: connections to open (default 100). mqtt-pubsub: messages
    /// per publisher (default: until --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// mqtt-conn: connections opened per second (default 1000). mqtt-pubsub:
    /// messages per second per publisher (default unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 1)]
    pub publishers: u64,
    #[arg(long, default_value_t = 1)]
    pub subscribers: u64,
    #[arg(long, value_enum, default_value = "one-to-one")]
    pub layout: Layout,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Bytes per message (at least 20: send time, publisher, sequence).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// QoS 1/2 messages a publisher may have unacknowledged (also capped by
    /// the broker's Receive Maximum).
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// Keep Alive in CONNECT, seconds; clients ping at half of it.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Handshakes in progress at once while connecting.
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
    pub target: SocketAddr,
    /// The name as given, for TLS server name indication.
    pub target_host: String,
    pub tls: bool,
    pub version: Version,
    pub auth: AuthMode,
    pub user_pattern: String,
    pub users: u64,
    pub password: String,
    /// x-oauth2: the username goes in CONNECT beside the token.
    pub username_with_token: bool,
    pub tokens: TokenSource,
    pub duration: Duration,
    /// mqtt-conn: connections; mqtt-pubsub: messages per publisher (None:
    /// until the duration ends).
    pub count: Option<u64>,
    /// mqtt-conn: connects/s; mqtt-pubsub: messages/s per publisher.
    pub rate: Option<f64>,
    pub publishers: u64,
    pub subscribers: u64,
    pub layout: Layout,
    pub qos: QoS,
    pub payload: usize,
    pub inflight: u16,
    pub keep_alive: u16,
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
        let target = resolve_loopback(&self.target)?;
        let target_host = self
            .target
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
        if self.auth == AuthMode::XOauth2 && version == Version::V311 {
            return refuse(
                "--auth x-oauth2 needs MQTT 5; with --mqtt-version 3 use token-as-password".into(),
            );
        }
        if self.users == 0 {
            return refuse("--users must be at least 1".into());
        }
        if self.username_with_token && self.auth != AuthMode::XOauth2 {
            return refuse("--username-with-token goes with --auth x-oauth2".into());
        }
        if (matches!(self.auth, AuthMode::Password | AuthMode::TokenAsPassword)
            || self.username_with_token)
            && !self.user_pattern.contains("%d")
            && self.users > 1
        {
            return refuse("--user-pattern needs %d when --users is more than 1".into());
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
        if self.payload < PAYLOAD_HEADER || self.payload > MAX_PAYLOAD {
            return refuse(format!(
                "--payload must be between {PAYLOAD_HEADER} and {MAX_PAYLOAD} bytes"
            ));
        }
        let qos = QoS::from_u8(self.qos).unwrap_or_default();
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
            _ => self.count,
        };
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
            (Scenario::MqttConn, None) => Some(1000.0),
            (_, r) => r,
        };
        Ok(Some(Plan {
            scenario,
            target,
            target_host,
            tls: self.tls,
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
            publishers: self.publishers,
            subscribers: self.subscribers,
            layout: self.layout,
            qos,
            payload: self.payload,
            inflight: self.inflight,
            keep_alive: self.keep_alive,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Option<Plan>, LoadError> {
        let mut v = vec!["load"];
        v.extend_from_slice(args);
        Options::parse_from_args(v).expect("parses").plan()
    }

    fn refused(args: &[&str]) -> String {
        plan(args).unwrap_err().to_string()
    }

    #[test]
    fn no_scenario_means_usage() {
        // What `cargo bench` passes to every bench target.
        let o = Options::parse_from_args(["load", "--bench"]).unwrap();
        assert!(o.scenario.is_none());
        assert!(o.plan().unwrap().is_none());
    }

    #[test]
    fn pubsub_options() {
        let p = plan(&[
            "mqtt-pubsub",
            "--target",
            "127.0.0.1:1999",
            "--auth",
            "none",
            "--publishers",
            "4",
            "--subscribers",
            "4",
            "--qos",
            "1",
            "--payload",
            "128",
            "--rate",
            "500",
            "--duration",
            "2.5",
            "--bench",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.scenario, Scenario::MqttPubSub);
        assert_eq!(p.target, "127.0.0.1:1999".parse().unwrap());
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(p.payload, 128);
        assert_eq!(p.rate, Some(500.0));
        assert_eq!(p.duration, Duration::from_millis(2500));
        assert_eq!(p.count, None);
        assert_eq!(p.layout, Layout::OneToOne);
        assert_eq!(p.version, Version::V5);
    }

    #[test]
    fn conn_defaults_and_caps() {
        let p = plan(&["mqtt-conn", "--auth", "none", "--duration", "9999"])
            .unwrap()
            .unwrap();
        assert_eq!(p.count, Some(100));
        assert_eq!(p.rate, Some(1000.0));
        assert_eq!(p.duration, MAX_DURATION);
        assert!(refused(&["mqtt-conn", "--auth", "none", "--count", "20001"]).contains("--count"));
        assert!(refused(&["mqtt-conn", "--auth", "none", "--count", "0"]).contains("--count"));
        assert!(refused(&["mqtt-conn", "--auth", "none", "--duration", "0"]).contains("--duration"));
        assert!(refused(&["mqtt-conn", "--auth", "none", "--rate=-1"]).contains("--rate"));
    }

    #[test]
    fn refuses_what_it_must() {
        assert!(
            refused(&["mqtt-conn", "--auth", "none", "--target", "10.0.0.1:1883"])
                .contains("not loopback")
        );
        assert!(refused(&["mqtt-conn"]).contains("--tokens"));
        assert!(refused(&[
            "mqtt-conn",
            "--mqtt-version",
            "3",
            "--oauth-url",
            "http://127.0.0.1:5280/oauth/token"
        ])
        .contains("MQTT 5"));
        assert!(refused(&[
            "mqtt-pubsub",
            "--auth",
            "none",
            "--publishers",
            "2",
            "--subscribers",
            "3"
        ])
        .contains("one-to-one"));
        assert!(
            refused(&["mqtt-pubsub", "--auth", "none", "--payload", "8"]).contains("--payload")
        );
        assert!(refused(&[
            "mqtt-conn",
            "--oauth-url",
            "http://192.168.1.5:5280/oauth/token"
        ])
        .contains("loopback"));
        assert!(refused(&[
            "mqtt-conn",
            "--auth",
            "password",
            "--user-pattern",
            "bob@localhost",
            "--users",
            "3"
        ])
        .contains("%d"));
    }

    #[test]
    fn source_ips_loopback_only() {
        let o =
            Options::parse_from_args(["load", "mqtt-conn", "--source-ips", "127.0.0.2,127.0.0.3"])
                .unwrap();
        assert_eq!(
            o.source_ips,
            vec![
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "127.0.0.3".parse().unwrap()
            ]
        );
        for bad in [
            "10.0.0.2",
            "127.0.0.2,192.168.0.1",
            "0.0.0.0",
            "::1",
            "nope",
        ] {
            assert!(
                Options::parse_from_args(["load", "mqtt-conn", "--source-ips", bad]).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn tokens_file_round_robin_source() {
        let dir = std::env::temp_dir().join(format!("petrel-lg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens");
        std::fs::write(&f, "tok-a\n\n# comment\ntok-b\n").unwrap();
        let p = plan(&["mqtt-conn", "--tokens", f.to_str().unwrap()])
            .unwrap()
            .unwrap();
        assert_eq!(
            p.tokens,
            TokenSource::List(vec!["tok-a".into(), "tok-b".into()])
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(refused(&["mqtt-conn", "--tokens", f.to_str().unwrap()]).contains("no token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn username_with_token() {
        let dir = std::env::temp_dir().join(format!("petrel-lg-uwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens");
        std::fs::write(&f, "tok-0\ntok-1\n").unwrap();
        let f = f.to_str().unwrap();
        let p = plan(&[
            "mqtt-conn",
            "--tokens",
            f,
            "--users",
            "2",
            "--username-with-token",
        ])
        .unwrap()
        .unwrap();
        assert!(p.username_with_token);
        assert!(refused(&[
            "mqtt-conn",
            "--tokens",
            f,
            "--users",
            "3",
            "--username-with-token"
        ])
        .contains("one token per user"));
        assert!(
            refused(&["mqtt-conn", "--auth", "password", "--username-with-token"])
                .contains("x-oauth2")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn usernames_from_pattern() {
        let p = plan(&[
            "mqtt-conn",
            "--auth",
            "none",
            "--user-pattern",
            "dev%d@localhost",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.username(7), "dev7@localhost");
    }

    #[test]
    fn qos_out_of_range_is_a_parse_error() {
        assert!(Options::parse_from_args(["load", "mqtt-pubsub", "--qos", "3"]).is_err());
        assert!(Options::parse_from_args(["load", "mqtt-pubsub", "--layout", "star"]).is_err());
        assert!(Options::parse_from_args(["load", "mqtt-pubsub", "--mqtt-version", "4"]).is_err());
    }
}
