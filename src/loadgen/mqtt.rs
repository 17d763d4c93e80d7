//! MQTT scenarios: `mqtt-conn` here, `mqtt-pubsub` in [`pubsub`] (its send
//! loop in [`publisher`]).
//!
//! Both share a [`Ctx`] (see [`super::ctx`]); connecting an MQTT client
//! with it is [`Ctx::connect`], here.

pub(crate) mod publisher;
pub(crate) mod pubsub;
pub(crate) mod storm;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientError, Identity};
pub(crate) use super::ctx::{process_watches, spawn_sampler, Ctx};
use super::ctx::{wind_down, ConnectRun};
use super::options::Plan;
use super::report::Report;
use super::stats::{Latency, Phase, Progress};
use super::{read_rss, LoadError, ProcessWatch};
use crate::mqtt::codec::Packet;

pub use pubsub::run_pubsub;
pub use storm::run_storm;

/// Longest a TCP (+TLS) connect plus MQTT login may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read room for a held, idle connection (PINGRESP, DISCONNECT).
const IDLE_READ: usize = 256;

impl Ctx {
    /// Connects and logs in connection `index` of `role`, counting the
    /// outcome. Returns the client and the connect latency. With several
    /// targets, connection i goes to target i mod n, and a publisher one
    /// further, so that publisher i and subscriber i sit on different nodes.
    pub async fn connect(&self, role: char, index: u64) -> Result<(Client, u64), ClientError> {
        let identity = Identity::for_connection(&self.plan, &self.tokens, role, index);
        let slot = index + u64::from(role == 'p');
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect(
                &self.endpoint,
                slot,
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
}

/// `mqtt-conn`: `count` connections opened at `rate` per second (at most
/// `connect_concurrency` handshakes at once), held idle for `duration`,
/// then closed with DISCONNECT. With `pid`, the broker's RSS is read before
/// the first connect and at the end of the hold.
pub async fn run_conn(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let ctx = Ctx::new(plan, progress.clone()).await?;
    let n = plan.count.unwrap_or(100);
    let rss_before = super::broker_rss(plan.pid)?;
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
    let timeline = wind_down(&progress, &mut tasks, &hold_stop, &sampler_stop, sampler).await;
    let run = ConnectRun {
        attempted: n,
        phase: connect_phase,
        latency,
        rss_before,
        rss_held,
        held,
        processes,
        system_busy,
    };
    Ok(ctx.connect_report(run, timeline))
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
