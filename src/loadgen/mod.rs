//! Load generator engine: drives a broker on loopback with many MQTT clients
//! and measures what it does (issue 5).
//!
//! How the parts fit: [`options`] is the command line (clap) and turns it into
//! a checked [`Plan`] — only loopback targets and source addresses, every bound
//! capped. [`net`] opens client sockets (round-robin over source addresses,
//! optional TLS that trusts any certificate, acceptable because the target is
//! always this machine) and fetches OAuth tokens with the password grant.
//! [`client`] is a minimal MQTT client on the crate's own sans-I/O codec
//! ([`crate::mqtt::codec`]): CONNECT with X-OAUTH2, username/password or
//! nothing, and the packet plumbing the scenarios need. [`mqtt`] holds the
//! scenarios, `mqtt-conn` and `mqtt-pubsub`. [`stats`] has the latency
//! histograms (hdrhistogram) and the live counters the caller polls for
//! progress; [`report`] is the serde summary of a run, every figure in it.
//!
//! Only tokio, the codec, hdrhistogram and serde live here; the CLI with its
//! progress bar, table and chart is `benches/load.rs`.
//!
//! The XMPP scenarios (`xmpp-login`, `xmpp-chat`) will go in `xmpp.rs` beside
//! `mqtt.rs` once the XMPP listener is merged; [`Scenario`] already names them
//! and [`run`] refuses them with [`LoadError::NotYet`] instead of faking them.
//!
//! Every loop is bounded in count and time: a run stops by itself after its
//! duration (at most [`MAX_DURATION`]) plus bounded setup and drain phases.

pub mod client;
pub mod mqtt;
pub mod net;
pub mod options;
pub mod report;
pub mod stats;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use options::{AuthMode, Layout, Options, Plan, Scenario};
pub use report::Report;
pub use stats::Progress;

/// Longest run the generator accepts (`--duration` is capped to this).
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// What can stop a run before it produces a report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options ask for something the generator refuses (non-loopback
    /// target, impossible layout, missing credentials…).
    #[error("{0}")]
    Refused(String),
    /// A scenario that waits for a part of the server not merged yet.
    #[error("scenario {0} is not available yet: it waits for the XMPP listener")]
    NotYet(&'static str),
    /// Fetching OAuth tokens failed.
    #[error("token fetch: {0}")]
    Token(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The run could not even start (e.g. no subscriber could subscribe).
    #[error("{0}")]
    Setup(String),
}

impl LoadError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> LoadError {
        LoadError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Whether `ip` is on this machine's loopback (127.0.0.0/8 or ::1), the only
/// addresses the generator sends to or binds.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Resolves `host:port` and refuses anything that is not loopback.
pub fn resolve_loopback(target: &str) -> Result<SocketAddr, LoadError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| LoadError::Refused(format!("target {target}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(LoadError::Refused(format!(
            "target {target} resolves to nothing"
        )));
    }
    if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        return Err(LoadError::Refused(format!(
            "target {target} resolves to {bad}, which is not loopback (only 127.0.0.0/8 and ::1 are allowed)"
        )));
    }
    Ok(addrs[0])
}

/// Resident set size of process `pid` in bytes (`VmRSS` in /proc/PID/status).
pub fn read_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// Runs the planned scenario to its end. `progress` is updated live so the
/// caller can draw it; the returned report holds every figure.
pub async fn run(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    match plan.scenario {
        Scenario::MqttConn => mqtt::run_conn(plan, progress).await,
        Scenario::MqttPubSub => mqtt::run_pubsub(plan, progress).await,
        Scenario::XmppLogin => Err(LoadError::NotYet("xmpp-login")),
        Scenario::XmppChat => Err(LoadError::NotYet("xmpp-chat")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.3.2.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.168.1.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
        assert!(!is_loopback("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn targets_must_resolve_to_loopback() {
        assert_eq!(
            resolve_loopback("127.0.0.1:1883").unwrap(),
            "127.0.0.1:1883".parse().unwrap()
        );
        assert!(resolve_loopback("[::1]:1883").is_ok());
        assert!(resolve_loopback("localhost:1883").is_ok());
        for bad in [
            "10.1.2.3:1883",
            "192.168.0.10:1883",
            "0.0.0.0:1883",
            "1.1.1.1:80",
        ] {
            let e = resolve_loopback(bad).unwrap_err().to_string();
            assert!(e.contains("not loopback"), "{bad}: {e}");
        }
        assert!(resolve_loopback("no-port").is_err());
    }

    #[test]
    fn vm_rss_parsing() {
        let status = "Name:\tpetrel\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(read_rss(std::process::id()).unwrap() > 0);
    }
}
