//! What every scenario's tasks share: the [`Ctx`] of a run — the checked
//! plan, the endpoint, the tokens (fetched once before anything connects),
//! the live [`Progress`], an error tally and the run's start `Instant`, from
//! which payload timestamps are measured — plus the watches of the broker's
//! and the generator's processes, and a sampler task that snapshots the
//! counters every 250 ms into the report's timeline, so the throughput chart
//! needs nothing else. Protocol-specific connecting lives with each protocol
//! (`Ctx::connect` for MQTT in [`super::mqtt`], the XMPP login in
//! [`super::xmpp`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::net::{fetch_tokens, Endpoint};
use super::options::{Plan, Scenario};
use super::report::{
    ConnectFigures, MemoryFigures, MessageFigures, ProcessFigures, Report, RunSetup, Sample,
};
use super::stats::{Latency, Phase, Progress};
use super::{LoadError, ProcessWatch};
use crate::mqtt::codec::{QoS, Version};

/// Kinds of errors kept in the report.
const MAX_ERROR_KINDS: usize = 20;

/// What every task of a run shares.
pub(crate) struct Ctx {
    pub plan: Plan,
    pub endpoint: Endpoint,
    pub tokens: Vec<String>,
    pub progress: Arc<Progress>,
    errors: Mutex<HashMap<String, u64>>,
    /// Payload timestamps are nanoseconds since this instant.
    pub start: Instant,
    pub started_unix_s: u64,
}

impl Ctx {
    pub async fn new(plan: &Plan, progress: Arc<Progress>) -> Result<Arc<Ctx>, LoadError> {
        progress.set_phase(Phase::Preparing);
        let tokens = fetch_tokens(plan).await?;
        Ok(Arc::new(Ctx {
            plan: plan.clone(),
            endpoint: Endpoint::new(plan)?,
            tokens,
            progress,
            errors: Mutex::new(HashMap::new()),
            start: Instant::now(),
            started_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }))
    }

    /// Counts one error of this kind.
    pub fn error(&self, kind: String) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() < MAX_ERROR_KINDS || e.contains_key(&kind) {
            *e.entry(kind).or_default() += 1;
        }
    }

    pub fn errors(&self) -> Vec<(String, u64)> {
        let e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, u64)> = e.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Nanoseconds since the run's start.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// How often an otherwise silent client pings.
    pub fn ping_every(&self) -> Duration {
        match self.plan.keep_alive {
            0 => Duration::from_secs(3600),
            k => Duration::from_secs(u64::from(k)) / 2,
        }
    }

    pub fn setup(&self) -> RunSetup {
        let p = &self.plan;
        let pubsub = p.scenario == Scenario::MqttPubSub;
        let login = p.scenario == Scenario::XmppLogin;
        let chat = p.scenario == Scenario::XmppChat;
        let bridge = p.scenario.is_bridge();
        RunSetup {
            scenario: p.scenario.name().to_string(),
            target: p
                .targets
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
            xmpp_target: p.xmpp_target.map(|t| t.to_string()),
            topic_pattern: bridge.then(|| p.topic_pattern.clone()),
            node_pattern: bridge.then(|| p.node_pattern.clone()),
            tls: p.tls,
            starttls: p.starttls,
            mqtt_version: (!p.scenario.is_xmpp()).then_some(match p.version {
                Version::V5 => 5,
                Version::V311 => 3,
            }),
            auth: p.auth,
            users: p.users,
            source_ips: p.source_ips.iter().map(ToString::to_string).collect(),
            duration_s: p.duration.as_secs_f64(),
            count: p.count,
            rate: p.rate,
            publishers: pubsub.then_some(p.publishers),
            subscribers: pubsub.then_some(p.subscribers),
            layout: pubsub.then_some(p.layout),
            qos: (pubsub || bridge).then_some(p.qos as u8),
            pairs: (chat || bridge).then_some(p.pairs),
            hold: login.then_some(p.hold),
            presence: login.then_some(p.presence),
            to_bare: chat.then_some(p.to_bare),
            payload_bytes: (pubsub || chat || bridge).then_some(p.payload),
            inflight: ((pubsub && p.qos != QoS::AtMostOnce) || chat || bridge)
                .then_some(p.inflight),
            keep_alive_s: p.keep_alive,
            session_expiry_s: (!p.scenario.is_xmpp()).then_some(p.session_expiry),
        }
    }
}

/// Watches the broker (with --pid) and this process.
pub(crate) fn process_watches(plan: &Plan) -> Vec<ProcessWatch> {
    let mut w = Vec::new();
    if let Some(pid) = plan.pid {
        w.push(ProcessWatch::start("broker", pid));
    }
    w.push(ProcessWatch::start("generator", std::process::id()));
    w
}

/// Snapshots the counters every 250 ms until cancelled (bounded by the
/// run's own bounds: the caller always cancels it).
pub(crate) fn spawn_sampler(
    ctx: &Arc<Ctx>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let sample = || {
            let p = &ctx.progress;
            Sample {
                t_s: ctx.start.elapsed().as_secs_f64(),
                connects: Progress::get(&p.connects_ok),
                connected: Progress::get(&p.connected),
                sent: Progress::get(&p.sent),
                acked: Progress::get(&p.acked),
                received: Progress::get(&p.received),
            }
        };
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            samples.push(sample());
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
        // One last sample so the timeline ends at the end.
        samples.push(sample());
        samples
    })
}

/// What a connection run (`mqtt-conn`, `xmpp-login`) measured, for
/// [`Ctx::connect_report`].
pub(crate) struct ConnectRun {
    pub attempted: u64,
    /// From the first connect to the last attempt's end.
    pub phase: Duration,
    pub latency: Arc<Mutex<Latency>>,
    pub rss_before: Option<u64>,
    pub rss_held: Option<u64>,
    pub held: u64,
    pub processes: Vec<ProcessFigures>,
    pub system_busy: Option<f64>,
}

/// Ends a run's tasks — tells the holders to stop, waits at most 30 s for
/// them, aborts the rest — and its sampler; returns the timeline.
pub(crate) async fn wind_down(
    progress: &Progress,
    tasks: &mut JoinSet<()>,
    hold_stop: &CancellationToken,
    sampler_stop: &CancellationToken,
    sampler: tokio::task::JoinHandle<Vec<Sample>>,
) -> Vec<Sample> {
    progress.set_phase(Phase::Draining);
    hold_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    sampler_stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    progress.set_phase(Phase::Done);
    timeline
}

/// How a run ended: the processes' figures, the machine's busy cores and
/// the sampled timeline.
pub(crate) struct RunEnd {
    pub processes: Vec<ProcessFigures>,
    pub system_busy: Option<f64>,
    pub timeline: Vec<Sample>,
}

impl Ctx {
    /// A run's report: `attempted` connections (or logins) over the connect
    /// phase with their latency, the message and memory figures if the
    /// scenario has them, and how the run ended.
    pub fn report(
        &self,
        attempted: u64,
        connect_phase: Duration,
        connect_latency: &Latency,
        messages: Option<MessageFigures>,
        memory: Option<MemoryFigures>,
        end: RunEnd,
    ) -> Report {
        let ok = Progress::get(&self.progress.connects_ok);
        Report {
            generator: concat!("petrel-load ", env!("CARGO_PKG_VERSION")),
            started_unix_s: self.started_unix_s,
            wall_s: self.start.elapsed().as_secs_f64(),
            setup: self.setup(),
            connects: ConnectFigures {
                attempted,
                ok,
                failed: Progress::get(&self.progress.connects_failed),
                dropped: Progress::get(&self.progress.dropped),
                per_s: ok as f64 / connect_phase.as_secs_f64().max(1e-9),
                connect_phase_s: connect_phase.as_secs_f64(),
                latency: connect_latency.summary(),
            },
            connect_buckets: connect_latency.buckets(),
            messages,
            memory,
            storm: None,
            processes: end.processes,
            system_busy_cores: end.system_busy,
            machine_cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            timeline: end.timeline,
            errors: self.errors(),
        }
    }

    /// The report of a connection run: connects (or logins) per second over
    /// its connect phase, their latency, and the target's RSS per held one.
    pub fn connect_report(&self, run: ConnectRun, timeline: Vec<Sample>) -> Report {
        let latency = run
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let memory = match (self.plan.pid, run.rss_before, run.rss_held) {
            (Some(pid), Some(before), Some(after)) => Some(MemoryFigures {
                pid,
                rss_before_bytes: before,
                rss_held_bytes: after,
                connections_held: run.held,
                bytes_per_connection: if run.held > 0 {
                    (after as f64 - before as f64) / run.held as f64
                } else {
                    0.0
                },
            }),
            _ => None,
        };
        let end = RunEnd {
            processes: run.processes,
            system_busy: run.system_busy,
            timeline,
        };
        self.report(run.attempted, run.phase, &latency, None, memory, end)
    }
}

/// Drain bounds after the senders stop: give up once nothing has arrived for
/// `DRAIN_IDLE`, or after `DRAIN_MAX` in all.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(10);

/// After the senders stop: waits until `expected()` messages were received,
/// or nothing more arrives (bounded by the drain limits).
pub(crate) async fn drain_received(progress: &Progress, expected: impl Fn() -> u64) {
    progress.set_phase(Phase::Draining);
    let drain_start = Instant::now();
    let mut last = (Progress::get(&progress.received), Instant::now());
    while drain_start.elapsed() < DRAIN_MAX {
        let rx = Progress::get(&progress.received);
        if rx >= expected() {
            break;
        }
        if rx != last.0 {
            last = (rx, Instant::now());
        } else if last.1.elapsed() >= DRAIN_IDLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The results of the tasks that end within 15 s; the others are aborted.
pub(crate) async fn collect<T: 'static>(tasks: &mut JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
    })
    .await;
    tasks.abort_all();
    results
}
