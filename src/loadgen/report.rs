//! The summary of one run, serialized to JSON by the CLI. Every figure the
//! table and the chart show comes from here, so the JSON file is the record.

use serde::Serialize;

use super::options::{AuthMode, Layout};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// One histogram bucket: `count` samples at or below `le_us` and above the
/// previous bucket's bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub le_us: f64,
    pub count: u64,
}

/// Cumulative counters at one moment of the run (seconds since its start).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub connects: u64,
    pub connected: u64,
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
}

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct RunSetup {
    pub scenario: String,
    /// The MQTT address in the bridge scenarios.
    pub target: String,
    /// bridge, bridge-back: the XMPP address.
    pub xmpp_target: Option<String>,
    /// bridge, bridge-back: the topic and node of pair i (`%d`).
    pub topic_pattern: Option<String>,
    pub node_pattern: Option<String>,
    /// TLS from the first byte.
    pub tls: bool,
    /// XMPP STARTTLS.
    pub starttls: bool,
    /// None for the XMPP scenarios.
    pub mqtt_version: Option<u8>,
    pub auth: AuthMode,
    pub users: u64,
    pub source_ips: Vec<String>,
    pub duration_s: f64,
    pub count: Option<u64>,
    pub rate: Option<f64>,
    pub publishers: Option<u64>,
    pub subscribers: Option<u64>,
    pub layout: Option<Layout>,
    pub qos: Option<u8>,
    /// xmpp-chat: pairs of sessions; bridge, bridge-back: pairs of an MQTT
    /// client and an XMPP session.
    pub pairs: Option<u64>,
    /// xmpp-login: logins held for the duration.
    pub hold: Option<bool>,
    /// xmpp-login: initial presence sent once bound.
    pub presence: Option<bool>,
    /// xmpp-chat: messages to the partner's bare JID (else its full JID).
    pub to_bare: Option<bool>,
    /// mqtt-pubsub: payload bytes; xmpp-chat: body characters.
    pub payload_bytes: Option<usize>,
    pub inflight: Option<u16>,
    pub keep_alive_s: u16,
    /// MQTT: the subscribers' (held connections') Session Expiry Interval;
    /// 0 for clean sessions.
    pub session_expiry_s: Option<u32>,
}

/// Connection figures (every scenario connects; for XMPP a connect is a
/// whole login).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectFigures {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// Closed by the broker while they should have stayed open.
    pub dropped: u64,
    /// Successful connects (logins) per second over the connect phase.
    pub per_s: f64,
    pub connect_phase_s: f64,
    /// MQTT: TCP (+TLS) connect to CONNACK. XMPP: TCP connect to the bound
    /// resource (and the session iq's result when the server requires it).
    pub latency: LatencySummary,
}

/// Broker memory, from /proc/PID/status.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFigures {
    pub pid: u32,
    pub rss_before_bytes: u64,
    /// With every connection still open, at the end of the hold.
    pub rss_held_bytes: u64,
    pub connections_held: u64,
    /// (held - before) / connections held.
    pub bytes_per_connection: f64,
}

/// CPU and memory of a process over the measured window (the broker with
/// `--pid`, and the generator itself), from /proc.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    /// "broker" or "generator".
    pub role: &'static str,
    pub pid: u32,
    pub window_s: f64,
    /// User + system CPU seconds used in the window.
    pub cpu_s: f64,
    /// cpu_s / window_s: 1.0 is one core busy all the time.
    pub cpu_cores_used: f64,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

/// One subscriber's view (xmpp-chat: one receiving session's, `index` the
/// session, its partner the only expected sender).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriberFigures {
    pub index: u64,
    /// Messages its publishers sent that it should have received.
    pub expected: u64,
    pub received: u64,
    /// Distinct expected messages that never arrived.
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Messages from a publisher it should not hear, or malformed.
    pub unexpected: u64,
}

/// Message figures of mqtt-pubsub and xmpp-chat (where `acked` and
/// `ack_latency` stay empty: chat messages have no acknowledgement).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageFigures {
    pub sent: u64,
    /// QoS 1/2 publishes completed by PUBACK / PUBCOMP.
    pub acked: u64,
    /// Sum over subscribers of what they should receive.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub unexpected: u64,
    /// From the start signal to the last publish.
    pub send_phase_s: f64,
    /// From the start signal to the last message received.
    pub receive_phase_s: f64,
    pub sent_per_s: f64,
    pub received_per_s: f64,
    /// Payload bytes received per second.
    pub received_bytes_per_s: f64,
    /// Publish (send time in the payload) to arrival at a subscriber.
    pub latency: LatencySummary,
    pub latency_buckets: Vec<Bucket>,
    /// QoS 1/2: publish to PUBACK / PUBCOMP at the publisher.
    pub ack_latency: LatencySummary,
    pub per_subscriber: Vec<SubscriberFigures>,
}

impl MessageFigures {
    /// The send and receive phases (from `send_start` to the last send and
    /// the last receipt, both measured like it), the rates over them, and
    /// the end-to-end latency.
    pub(crate) fn set_timing(
        &mut self,
        send_start: std::time::Duration,
        last_send: std::time::Duration,
        last_receive: std::time::Duration,
        payload: usize,
        latency: &super::stats::Latency,
    ) {
        let since = |t: std::time::Duration| t.saturating_sub(send_start);
        self.send_phase_s = since(last_send).as_secs_f64();
        self.receive_phase_s = since(last_receive).as_secs_f64();
        self.sent_per_s = self.sent as f64 / self.send_phase_s.max(1e-9);
        self.received_per_s = self.received as f64 / self.receive_phase_s.max(1e-9);
        self.received_bytes_per_s = self.received_per_s * payload as f64;
        self.latency = latency.summary();
        self.latency_buckets = latency.buckets();
    }
}

/// What a reconnect storm (`mqtt-storm`) measured. Times are from the
/// moment every device starts reconnecting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormFigures {
    /// Devices connected and subscribed before the drop.
    pub devices: u64,
    pub queued_per_device: u32,
    pub session_expiry_s: u32,
    /// Publishing the queued messages while the devices were away, until
    /// the last PUBACK.
    pub queue_phase_s: f64,
    /// Queued publishes the broker acknowledged.
    pub queued_acked: u64,
    /// Devices back (CONNACK success) within the wait.
    pub reconnected: u64,
    pub failed: u64,
    /// CONNACKs with Session Present: the stored session was found.
    pub sessions_resumed: u64,
    /// Until the last CONNACK, when every device came back.
    pub all_back_s: Option<f64>,
    /// Until the last device had all its queued messages.
    pub all_delivered_s: Option<f64>,
    /// Devices that had all their queued messages within the wait.
    pub devices_complete: u64,
    /// Queued messages: acknowledged by the broker, received (distinct),
    /// never received, received more than once.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// CONNACK latency of the reconnects.
    pub reconnect_latency: LatencySummary,
    /// Broker RSS before the storm, and the most sampled (every 50 ms)
    /// while it lasted (with --pid).
    pub rss_before_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generator: &'static str,
    pub started_unix_s: u64,
    pub wall_s: f64,
    pub setup: RunSetup,
    pub connects: ConnectFigures,
    /// Connect latency histogram (mqtt-conn).
    pub connect_buckets: Vec<Bucket>,
    pub messages: Option<MessageFigures>,
    pub memory: Option<MemoryFigures>,
    /// mqtt-storm: the reconnect storm.
    pub storm: Option<StormFigures>,
    /// CPU and RSS of the broker (with --pid) and of the generator, over the
    /// connect+hold phases (mqtt-conn) or the send+drain phases (mqtt-pubsub).
    pub processes: Vec<ProcessFigures>,
    /// Busy cores of the whole machine over the same window (everything:
    /// broker, generator and whatever else ran).
    pub system_busy_cores: Option<f64>,
    /// Cores this machine has.
    pub machine_cores: usize,
    /// Counters sampled every 250 ms; rates are their differences.
    pub timeline: Vec<Sample>,
    /// Distinct errors with how often each happened (first 20 kinds).
    pub errors: Vec<(String, u64)>,
}

impl Report {
    /// Per-interval rates from the timeline: (t_s at interval end, sent/s,
    /// received/s, connects/s).
    pub fn rates(&self) -> Vec<(f64, f64, f64, f64)> {
        self.timeline
            .windows(2)
            .filter_map(|w| {
                let dt = w[1].t_s - w[0].t_s;
                (dt > 0.0).then(|| {
                    (
                        w[1].t_s,
                        (w[1].sent - w[0].sent) as f64 / dt,
                        (w[1].received - w[0].received) as f64 / dt,
                        (w[1].connects - w[0].connects) as f64 / dt,
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_timeline() {
        let s = |t_s, sent, received, connects| Sample {
            t_s,
            sent,
            received,
            connects,
            ..Sample::default()
        };
        let r = Report {
            generator: "test",
            started_unix_s: 0,
            wall_s: 1.0,
            setup: RunSetup {
                scenario: "mqtt-pubsub".into(),
                target: "127.0.0.1:1".into(),
                xmpp_target: None,
                topic_pattern: None,
                node_pattern: None,
                tls: false,
                starttls: false,
                mqtt_version: Some(5),
                auth: AuthMode::None,
                users: 1,
                source_ips: vec![],
                duration_s: 1.0,
                count: None,
                rate: None,
                publishers: Some(1),
                subscribers: Some(1),
                layout: Some(Layout::OneToOne),
                qos: Some(0),
                pairs: None,
                hold: None,
                presence: None,
                to_bare: None,
                payload_bytes: Some(64),
                inflight: None,
                keep_alive_s: 60,
                session_expiry_s: None,
            },
            storm: None,
            connects: ConnectFigures::default(),
            connect_buckets: vec![],
            messages: None,
            memory: None,
            processes: vec![],
            system_busy_cores: None,
            machine_cores: 2,
            timeline: vec![s(0.0, 0, 0, 0), s(0.5, 100, 50, 2), s(1.0, 300, 250, 2)],
            errors: vec![],
        };
        assert_eq!(
            r.rates(),
            vec![(0.5, 200.0, 100.0, 4.0), (1.0, 400.0, 400.0, 0.0)]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["setup"]["auth"], "none");
        assert_eq!(json["setup"]["layout"], "one-to-one");
        assert_eq!(json["timeline"][2]["received"], 250);
    }
}
