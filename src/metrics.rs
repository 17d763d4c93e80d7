//! Prometheus metrics (OpenMetrics text at `/metrics` on a listener of
//! `module = "metrics"`), with prometheus-client.
//!
//! One process-wide set, [`metrics()`]. The hot paths (messages, stanzas)
//! hold their counters' handles, taken once from the labelled families, so
//! counting is one atomic add — no lock and no label lookup per message.
//! Logins and tokens are counted where they happen; what is a state
//! (connections — each listener's accept loop counts its own, so a
//! connection carries nothing for it — sessions, retained messages, process
//! memory and open files) is read when scraped ([`Metrics::encode`]).
//! Store latencies are observed on the store thread alone (its histograms'
//! locks are never contended).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    pub protocol: &'static str,
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub protocol: &'static str,
    pub method: &'static str,
    pub result: &'static str,
}

/// A login method as the metric shows it: lower case, from a fixed set
/// (no allocation per login; anything else is "other").
fn method_label(m: &str) -> &'static str {
    const KNOWN: [&str; 11] = [
        "scram-sha-256",
        "scram-sha-1",
        "plain",
        "x-oauth2",
        "oauthbearer",
        "ht-sha-256-none",
        "ht-sha-256-expr",
        "token",
        "password",
        "anonymous",
        "unknown",
    ];
    KNOWN
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(m))
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TreeLabel {
    pub tree: &'static str,
}

/// A kind of store operation, for the latency histogram.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    /// A batch of queued writes applied.
    Write = 0,
    /// Made durable (sled: flush): what a QoS 1/2 acknowledgement waits for.
    Commit = 1,
    /// One key read.
    Read = 2,
    /// A range read or count.
    Scan = 3,
}

const STORE_OPS: [&str; 4] = ["write", "commit", "read", "scan"];

/// Why a message was not delivered (the `reason` label of
/// `petrel_messages_dropped_total`); every one is shown from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Over the MQTT client's Maximum Packet Size (3.1.2.11.4).
    OverClientMaxPacket = 0,
    /// QoS 0 for a session that is not connected (not kept, 3.1.2.4).
    Qos0Offline,
    /// A detached session's queue is full (`mqtt_max_queue`, or its bytes).
    QueueFull,
    /// QoS 0 to a live session whose queue is far past its high-water mark
    /// (it is then disconnected as a slow consumer).
    SlowConsumer,
    /// The session ended while the message was on its way to it.
    SessionEnded,
    /// Its Message Expiry Interval passed while queued.
    Expired,
    /// The session's new token may no longer read it.
    NotAuthorized,
    /// XMPP: the offline recipient's storage is full (`max_offline_messages`;
    /// the sender gets `<resource-constraint/>`).
    OfflineFull,
    /// Cluster: a message from another node found this node's NATS receive
    /// queue full (`[cluster] receive_queue`); counted from the NATS
    /// client's slow-consumer events, so at least this many.
    ClusterReceiveQueueFull,
}

const DROP_REASONS: [&str; 9] = [
    "over_client_maximum_packet_size",
    "qos0_session_offline",
    "session_queue_full",
    "slow_consumer",
    "session_ended",
    "expired",
    "not_authorized",
    "offline_storage_full",
    "cluster_receive_queue_full",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabel {
    pub grant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QosLabel {
    pub qos: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// What a scrape reads from the running server.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Sessions in the registry by protocol (attached or waiting).
    pub sessions: Vec<(&'static str, u64)>,
    pub retained: u64,
    /// Messages queued for sessions, by protocol.
    pub queued: Vec<(&'static str, u64)>,
    /// Open connections by listener: protocol, transport, count.
    pub connections: Vec<(&'static str, &'static str, u64)>,
    /// Records held in the counted store trees (offline, archive).
    pub store_records: Vec<(&'static str, u64)>,
}

/// The metric families. See the module docs.
pub struct Metrics {
    registry: Registry,
    connections: Family<ConnLabels, Gauge>,
    logins: Family<LoginLabels, Counter>,
    pub logins_throttled: Counter,
    tokens_issued: Family<GrantLabel, Counter>,
    tokens_revoked: Family<GrantLabel, Counter>,
    pub tokens_expired: Counter,
    /// MQTT PUBLISH received and sent, by QoS 0, 1, 2.
    pub mqtt_received: [Counter; 3],
    pub mqtt_sent: [Counter; 3],
    dropped: [Counter; 9],
    store_latency: [Histogram; 4],
    store_records: Family<TreeLabel, Gauge>,
    /// XMPP stanzas routed: message, presence, iq.
    pub xmpp_routed: [Counter; 3],
    sessions: Family<ProtocolLabel, Gauge>,
    queued: Family<ProtocolLabel, Gauge>,
    retained: Gauge,
    resident: Gauge,
    open_fds: Gauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("petrel");
        let connections = Family::<ConnLabels, Gauge>::default();
        r.register(
            "connections",
            "Open client connections by protocol and transport",
            connections.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        r.register(
            "logins",
            "Logins by protocol, method and result",
            logins.clone(),
        );
        let logins_throttled = Counter::default();
        r.register(
            "logins_throttled",
            "Logins refused by the guessing brake before any check",
            logins_throttled.clone(),
        );
        let tokens_issued = Family::<GrantLabel, Counter>::default();
        r.register(
            "tokens_issued",
            "Tokens issued by grant",
            tokens_issued.clone(),
        );
        let tokens_revoked = Family::<GrantLabel, Counter>::default();
        r.register(
            "tokens_revoked",
            "Tokens revoked by grant",
            tokens_revoked.clone(),
        );
        let tokens_expired = Counter::default();
        r.register(
            "tokens_expired",
            "Tokens that reached their expiry",
            tokens_expired.clone(),
        );
        let received = Family::<QosLabel, Counter>::default();
        r.register(
            "mqtt_messages_received",
            "MQTT PUBLISH packets received, by QoS",
            received.clone(),
        );
        let sent = Family::<QosLabel, Counter>::default();
        r.register(
            "mqtt_messages_sent",
            "MQTT PUBLISH packets sent, by QoS",
            sent.clone(),
        );
        let qos = |f: &Family<QosLabel, Counter>| {
            ["0", "1", "2"].map(|q| f.get_or_create(&QosLabel { qos: q }).clone())
        };
        let dropped = Family::<ReasonLabel, Counter>::default();
        // The reasons there are, shown from the start (at 0).
        let dropped_by =
            DROP_REASONS.map(|reason| dropped.get_or_create(&ReasonLabel { reason }).clone());
        r.register(
            "messages_dropped",
            "Messages not delivered, by reason",
            dropped.clone(),
        );
        let latency = Family::<OpLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            // 10 µs to ~2.6 s.
            Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
        });
        r.register_with_unit(
            "store_operation_duration",
            "Store operations on the store thread, by kind",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let store_latency = STORE_OPS.map(|op| latency.get_or_create(&OpLabel { op }).clone());
        let store_records = Family::<TreeLabel, Gauge>::default();
        r.register(
            "store_records",
            "Records held by store tree (offline messages, archived messages)",
            store_records.clone(),
        );
        let routed = Family::<KindLabel, Counter>::default();
        r.register(
            "xmpp_stanzas_routed",
            "XMPP stanzas handled for clients, by kind",
            routed.clone(),
        );
        let xmpp_routed = ["message", "presence", "iq"]
            .map(|k| routed.get_or_create(&KindLabel { kind: k }).clone());
        let sessions = Family::<ProtocolLabel, Gauge>::default();
        r.register(
            "sessions",
            "Sessions by protocol (attached or waiting)",
            sessions.clone(),
        );
        let queued = Family::<ProtocolLabel, Gauge>::default();
        r.register(
            "queued_messages",
            "Messages queued for sessions, by protocol",
            queued.clone(),
        );
        let retained = Gauge::default();
        r.register(
            "mqtt_retained_messages",
            "Retained MQTT messages",
            retained.clone(),
        );
        let resident = Gauge::default();
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            prometheus_client::registry::Unit::Bytes,
            resident.clone(),
        );
        let open_fds = Gauge::default();
        r.register(
            "process_open_fds",
            "Open file descriptors",
            open_fds.clone(),
        );
        Metrics {
            registry: r,
            connections,
            logins,
            logins_throttled,
            tokens_issued,
            tokens_revoked,
            tokens_expired,
            mqtt_received: qos(&received),
            mqtt_sent: qos(&sent),
            dropped: dropped_by,
            store_latency,
            store_records,
            xmpp_routed,
            sessions,
            queued,
            retained,
            resident,
            open_fds,
        }
    }

    /// A login decided.
    pub fn login(&self, protocol: &'static str, method: &str, ok: bool) {
        self.logins
            .get_or_create(&LoginLabels {
                protocol,
                method: method_label(method),
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    pub fn token_issued(&self, grant: &'static str) {
        self.tokens_issued
            .get_or_create(&GrantLabel { grant })
            .inc();
    }

    pub fn token_revoked(&self, grant: &'static str) {
        self.tokens_revoked
            .get_or_create(&GrantLabel { grant })
            .inc();
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }

    /// A store operation took `d` (called on the store thread).
    pub fn store_op(&self, op: StoreOp, d: std::time::Duration) {
        self.store_latency[op as usize].observe(d.as_secs_f64());
    }

    /// The OpenMetrics text of every family, the scrape-time ones read
    /// from `state` and the process.
    pub fn encode(&self, state: &State) -> String {
        for (p, n) in &state.sessions {
            self.sessions
                .get_or_create(&ProtocolLabel { protocol: p })
                .set(*n as i64);
        }
        for (p, n) in &state.queued {
            self.queued
                .get_or_create(&ProtocolLabel { protocol: p })
                .set(*n as i64);
        }
        self.retained.set(state.retained as i64);
        for (tree, n) in &state.store_records {
            self.store_records
                .get_or_create(&TreeLabel { tree })
                .set(*n as i64);
        }
        let mut conns: std::collections::HashMap<(&str, &str), u64> = Default::default();
        for (p, t, n) in &state.connections {
            *conns.entry((p, t)).or_default() += n;
        }
        for ((protocol, transport), n) in conns {
            self.connections
                .get_or_create(&ConnLabels {
                    protocol,
                    transport,
                })
                .set(n as i64);
        }
        if let Some(rss) = resident_bytes() {
            self.resident.set(rss as i64);
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(d.count() as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// VmRSS of this process, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
