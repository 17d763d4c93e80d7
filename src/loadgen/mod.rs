//! Load generator engine: drives a server on loopback with many MQTT or XMPP
//! clients and measures what it does (issue 5).
//!
//! How the parts fit: [`options`] is the command line (clap) and turns it into
//! a checked [`Plan`] — only loopback targets and source addresses, every bound
//! capped. [`net`] opens client sockets (round-robin over source addresses,
//! optional TLS — direct or STARTTLS — that trusts any certificate,
//! acceptable because the target is always this machine) and fetches OAuth
//! tokens with the password grant. [`ctx`] is what every task of a run
//! shares (plan, tokens, counters, error tally, the sampler of the timeline).
//!
//! MQTT: [`client`] is a minimal MQTT client on the crate's own sans-I/O
//! codec ([`crate::mqtt::codec`]): CONNECT with X-OAUTH2, username/password
//! or nothing, and the packet plumbing the scenarios need. [`mqtt`] holds
//! the scenarios, `mqtt-conn` and `mqtt-pubsub`.
//!
//! XMPP: [`xmpp_client`] is a minimal RFC 6120 client over the raw socket
//! that reads with Petrel's own incremental stream parser
//! ([`crate::xmpp::stream`]): stream, STARTTLS, SASL PLAIN / X-OAUTH2 /
//! SCRAM-SHA-256 (client side in [`scram`], the server's signature checked),
//! restart, bind, session when required. [`xmpp`] holds the scenarios,
//! `xmpp-login` and `xmpp-chat`. It drives any XMPP server, not only Petrel.
//!
//! Both: [`bridge`] holds `bridge` and `bridge-back`, MQTT clients and XMPP
//! sessions of one run on the two sides of Petrel's MQTT ⇄ XMPP bridge,
//! built from the two protocols' parts above.
//!
//! [`stats`] has the latency histograms (hdrhistogram) and the live
//! counters the caller polls for progress; [`report`] is the serde summary
//! of a run, every figure in it.
//!
//! Only tokio, the codecs and parsers, hdrhistogram and serde live here; the
//! CLI with its progress bar, table and chart is `benches/load.rs`.
//!
//! Every loop is bounded in count and time: a run stops by itself after its
//! duration (at most [`MAX_DURATION`]) plus bounded setup and drain phases.

pub mod bridge;
pub mod client;
pub(crate) mod ctx;
pub mod mqtt;
pub mod net;
pub mod options;
pub mod report;
pub mod scram;
pub mod stats;
pub mod xmpp;
pub mod xmpp_client;

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

/// Resolves `host:port` and refuses anything that is not loopback; an IPv4
/// address is preferred when the name has both.
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
    // `localhost` may resolve to ::1 first while brokers listen on
    // 127.0.0.1 by default: prefer IPv4.
    Ok(*addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]))
}

/// Resident set size of process `pid` in bytes (`VmRSS` in /proc/PID/status).
/// The watched broker's RSS now: `None` without `--pid`, an error when
/// `--pid` names a process whose /proc/PID/status cannot be read.
pub fn broker_rss(pid: Option<u32>) -> Result<Option<u64>, LoadError> {
    match pid {
        None => Ok(None),
        Some(pid) => read_rss(pid).map(Some).ok_or_else(|| {
            LoadError::Refused(format!("--pid {pid}: cannot read /proc/{pid}/status"))
        }),
    }
}

pub fn read_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// CPU time (user + system) process `pid` has used, in seconds, from
/// /proc/PID/stat (clock ticks of 1/100 s, Linux's fixed USER_HZ).
pub fn read_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')'. There, index 0 is field 3 (state),
    // so utime (field 14) is index 11 and stime (field 15) index 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds all cores of the machine spent busy (not idle or waiting for
/// I/O) since boot, from the first line of /proc/stat.
pub fn read_system_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_system_busy(stat.lines().next()?)
}

fn parse_system_busy(cpu_line: &str) -> Option<f64> {
    let mut f = cpu_line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.map_while(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0);
    Some(busy as f64 / 100.0)
}

/// The whole machine's busy cores over a window: with the broker's and the
/// generator's own share it shows what else competed for the CPU.
pub(crate) struct SystemWatch {
    busy: Option<f64>,
    at: std::time::Instant,
}

impl SystemWatch {
    pub fn start() -> SystemWatch {
        SystemWatch {
            busy: read_system_busy_seconds(),
            at: std::time::Instant::now(),
        }
    }

    /// Busy cores on average since `start`.
    pub fn finish(&self) -> Option<f64> {
        let busy = read_system_busy_seconds()? - self.busy?;
        Some(busy / self.at.elapsed().as_secs_f64().max(1e-9))
    }
}

/// CPU and memory of one process over a measured window.
pub(crate) struct ProcessWatch {
    role: &'static str,
    pid: u32,
    cpu: Option<f64>,
    rss: Option<u64>,
    at: std::time::Instant,
}

impl ProcessWatch {
    pub fn start(role: &'static str, pid: u32) -> ProcessWatch {
        ProcessWatch {
            role,
            pid,
            cpu: read_cpu_seconds(pid),
            rss: read_rss(pid),
            at: std::time::Instant::now(),
        }
    }

    pub fn finish(&self) -> Option<report::ProcessFigures> {
        let cpu_s = read_cpu_seconds(self.pid)? - self.cpu?;
        let window_s = self.at.elapsed().as_secs_f64();
        Some(report::ProcessFigures {
            role: self.role,
            pid: self.pid,
            window_s,
            cpu_s,
            cpu_cores_used: cpu_s / window_s.max(1e-9),
            rss_start_bytes: self.rss?,
            rss_end_bytes: read_rss(self.pid)?,
        })
    }
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
        Scenario::XmppLogin => xmpp::run_login(plan, progress).await,
        Scenario::XmppChat => xmpp::run_chat(plan, progress).await,
        Scenario::Bridge => bridge::run_bridge(plan, progress).await,
        Scenario::BridgeBack => bridge::run_bridge_back(plan, progress).await,
        Scenario::MqttStorm => mqtt::run_storm(plan, progress).await,
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

    #[test]
    fn system_busy_parsing() {
        let line = "cpu  100 20 30 5000 40 5 5 0 0 0";
        assert_eq!(parse_system_busy(line), Some(1.6));
        assert_eq!(parse_system_busy("cpu0 1 2 3 4 5 6 7"), None);
        assert!(read_system_busy_seconds().is_some());
    }

    #[test]
    fn cpu_seconds_parsing() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        assert!(read_cpu_seconds(std::process::id()).is_some());
    }
}
