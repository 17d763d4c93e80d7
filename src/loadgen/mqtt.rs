//! MQTT scenarios: `mqtt-conn` here, `mqtt-pubsub` in [`pubsub`] (its send
//! loop in [`publisher`]).
//!
//! Both share a [`Ctx`]: the checked plan, the endpoint, the tokens (fetched
//! once before anything connects), the live [`Progress`], an error tally and
//! the run's start `Instant`, from which payload timestamps are measured.
//! A sampler task snapshots the counters every 250 ms into the report's
//! timeline, so the throughput chart needs nothing else.

mod publisher;
mod pubsub;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientError, Identity};
use super::net::{fetch_tokens, Endpoint};
use super::options::{Plan, Scenario};
use super::report::{ConnectFigures, MemoryFigures, Report, RunSetup, Sample};
use super::stats::{Latency, Phase, Progress};
use super::{read_rss, LoadError, ProcessWatch};
use crate::mqtt::codec::{Packet, QoS, Version};

pub use pubsub::run_pubsub;

/// Longest a TCP (+TLS) connect plus MQTT login may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Kinds of errors kept in the report.
const MAX_ERROR_KINDS: usize = 20;
/// Read room for a held, idle connection (PINGRESP, DISCONNECT).
const IDLE_READ: usize = 256;

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

    /// Connects and logs in connection `index` of `role`, counting the
    /// outcome. Returns the client and the connect latency.
    pub async fn connect(&self, role: char, index: u64) -> Result<(Client, u64), ClientError> {
        let identity = Identity::for_connection(&self.plan, &self.tokens, role, index);
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect(
                &self.endpoint,
                self.plan.version,
                &identity,
                self.plan.keep_alive,
            ),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout));
        match r {
            Ok(c) => {
                Progress::add(&self.progress.connects_ok, 1);
                Ok((c, t0.elapsed().as_nanos() as u64))
            }
            Err(e) => {
                Progress::add(&self.progress.connects_failed, 1);
                self.error(format!("connect: {}", e.kind()));
                Err(e)
            }
        }
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
        RunSetup {
            scenario: p.scenario.name().to_string(),
            target: p.target.to_string(),
            tls: p.tls,
            mqtt_version: match p.version {
                Version::V5 => 5,
                Version::V311 => 3,
            },
            auth: p.auth,
            users: p.users,
            source_ips: p.source_ips.iter().map(ToString::to_string).collect(),
            duration_s: p.duration.as_secs_f64(),
            count: p.count,
            rate: p.rate,
            publishers: pubsub.then_some(p.publishers),
            subscribers: pubsub.then_some(p.subscribers),
            layout: pubsub.then_some(p.layout),
            qos: pubsub.then_some(p.qos as u8),
            payload_bytes: pubsub.then_some(p.payload),
            inflight: (pubsub && p.qos != QoS::AtMostOnce).then_some(p.inflight),
            keep_alive_s: p.keep_alive,
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
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let p = &ctx.progress;
            samples.push(Sample {
                t_s: ctx.start.elapsed().as_secs_f64(),
                connects: Progress::get(&p.connects_ok),
                connected: Progress::get(&p.connected),
                sent: Progress::get(&p.sent),
                acked: Progress::get(&p.acked),
                received: Progress::get(&p.received),
            });
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
        // One last sample so the timeline ends at the end.
        let p = &ctx.progress;
        samples.push(Sample {
            t_s: ctx.start.elapsed().as_secs_f64(),
            connects: Progress::get(&p.connects_ok),
            connected: Progress::get(&p.connected),
            sent: Progress::get(&p.sent),
            acked: Progress::get(&p.acked),
            received: Progress::get(&p.received),
        });
        samples
    })
}

/// `mqtt-conn`: `count` connections opened at `rate` per second (at most
/// `connect_concurrency` handshakes at once), held idle for `duration`,
/// then closed with DISCONNECT. With `pid`, the broker's RSS is read before
/// the first connect and at the end of the hold.
pub async fn run_conn(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let ctx = Ctx::new(plan, progress.clone()).await?;
    let n = plan.count.unwrap_or(100);
    let rss_before = plan.pid.and_then(read_rss);
    if plan.pid.is_some() && rss_before.is_none() {
        return Err(LoadError::Refused(format!(
            "--pid {}: cannot read /proc/{0}/status",
            plan.pid.unwrap_or_default()
        )));
    }
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());
    progress.goal.store(n, std::sync::atomic::Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);

    let watches = process_watches(plan);
    let system = crate::loadgen::SystemWatch::start();
    let hold_stop = CancellationToken::new();
    let handshakes = Arc::new(Semaphore::new(plan.connect_concurrency as usize));
    let latency = Arc::new(Mutex::new(Latency::new()));
    let interval = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let t_connect = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        if let Some(iv) = interval {
            tokio::time::sleep_until((t_connect + iv.mul_f64(i as f64)).into()).await;
        }
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            break;
        };
        let (ctx, latency, stop) = (ctx.clone(), latency.clone(), hold_stop.clone());
        tasks.spawn(async move {
            let r = ctx.connect('c', i).await;
            drop(permit);
            if let Ok((client, ns)) = r {
                latency.lock().unwrap_or_else(|p| p.into_inner()).record(ns);
                hold(&ctx, client, stop).await;
            }
        });
    }
    // Every attempt ends within CONNECT_TIMEOUT of its start.
    let all_done =
        || Progress::get(&progress.connects_ok) + Progress::get(&progress.connects_failed) >= n;
    let deadline = Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(1);
    while !all_done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_phase = t_connect.elapsed();

    progress.set_phase(Phase::Running);
    tokio::time::sleep(plan.duration).await;
    let held = Progress::get(&progress.connected);
    let rss_held = plan.pid.and_then(read_rss);
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();

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

    let latency = latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ok = Progress::get(&progress.connects_ok);
    let memory = match (plan.pid, rss_before, rss_held) {
        (Some(pid), Some(before), Some(after)) => Some(MemoryFigures {
            pid,
            rss_before_bytes: before,
            rss_held_bytes: after,
            connections_held: held,
            bytes_per_connection: if held > 0 {
                (after as f64 - before as f64) / held as f64
            } else {
                0.0
            },
        }),
        _ => None,
    };
    Ok(Report {
        generator: concat!("petrel-load ", env!("CARGO_PKG_VERSION")),
        started_unix_s: ctx.started_unix_s,
        wall_s: ctx.start.elapsed().as_secs_f64(),
        setup: ctx.setup(),
        connects: ConnectFigures {
            attempted: n,
            ok,
            failed: Progress::get(&progress.connects_failed),
            dropped: Progress::get(&progress.dropped),
            per_s: ok as f64 / connect_phase.as_secs_f64().max(1e-9),
            connect_phase_s: connect_phase.as_secs_f64(),
            latency: latency.summary(),
        },
        connect_buckets: latency.buckets(),
        messages: None,
        memory,
        processes,
        system_busy_cores: system_busy,
        machine_cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        timeline,
        errors: ctx.errors(),
    })
}

/// Keeps `client` open and idle (pinging at half the keep-alive) until
/// `stop`, then disconnects. A close by the broker counts as dropped.
async fn hold(ctx: &Ctx, mut client: Client, stop: CancellationToken) {
    let progress = &ctx.progress;
    Progress::add(&progress.connected, 1);
    let every = ctx.ping_every();
    let ping = tokio::time::sleep(every);
    tokio::pin!(ping);
    let mut stopped = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => { stopped = true; break }
            r = client.read_some(IDLE_READ) => {
                let closed = r.is_err() || loop {
                    match client.next_packet() {
                        Ok(Some(Packet::PingResp)) => continue,
                        Ok(None) => break false,
                        Ok(Some(_)) | Err(_) => break true,
                    }
                };
                if closed {
                    break;
                }
            }
            () = &mut ping => {
                ping.as_mut().reset((Instant::now() + every).into());
                if client.queue(&Packet::PingReq).is_err() || client.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    progress
        .connected
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if stopped {
        client.disconnect().await;
    } else {
        Progress::add(&progress.dropped, 1);
        ctx.error("held connection closed by the broker".into());
    }
}
