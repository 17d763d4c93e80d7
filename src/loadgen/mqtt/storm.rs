//! `mqtt-storm`: a reconnect storm.
//!
//! Order of a run: `count` devices connect with a persistent session
//! (`session_expiry`, Clean Start 1 the first time) and subscribe to their
//! own topic at `qos` (at most `connect_concurrency` at once, at `rate`
//! per second when given); then every device's socket is dropped at once,
//! without DISCONNECT (a network outage, as the broker sees it); one
//! publisher then sends `queued` messages to each device's topic, at most
//! `inflight` unacknowledged, and waits for every acknowledgement (so the
//! broker holds them for the absent sessions); then every device
//! reconnects together (Clean Start 0, the same client id and token, at
//! most `connect_concurrency` handshakes at once) and reads until it has
//! each of its messages, acknowledging them. The storm is waited for at
//! most `duration`. Reported: time until every device was back and until
//! every device had its messages, sessions found (Session Present),
//! failures, losses and duplicates, CONNACK latency, and the broker's RSS
//! before and at its highest during the storm (with --pid).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::client::{Client, ClientError, Identity};
use super::super::ctx::RunEnd;
use super::super::report::{Report, StormFigures};
use super::super::stats::{Latency, Phase, Progress};
use super::super::{read_rss, LoadError};
use super::pubsub::connect_all;
use super::{process_watches, spawn_sampler, Ctx};
use crate::loadgen::ProcessWatch;
use crate::mqtt::codec::{Ack, Packet, Properties, Publish, QoS};

/// Longest a reconnect (TCP + login) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What one device saw in the storm.
#[derive(Default)]
struct DeviceOutcome {
    back_after: Option<Duration>,
    session_present: bool,
    complete_after: Option<Duration>,
    received: u64,
    duplicates: u64,
}

pub async fn run_storm(
    plan: &super::super::options::Plan,
    progress: Arc<Progress>,
) -> Result<Report, LoadError> {
    let ctx = Ctx::new(plan, progress.clone()).await?;
    let n = plan.count.unwrap_or(1000);
    let k = plan.queued;
    let prefix = format!("lg/storm-{}-{}", std::process::id(), ctx.started_unix_s);
    let topic = {
        let prefix = prefix.clone();
        move |i: u64| format!("{prefix}/{i}")
    };
    super::super::broker_rss(plan.pid)?;
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());

    // 1. The devices come online and subscribe.
    progress.goal.store(n, Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);
    let devices = connect_all(&ctx, 's', n, |i| Some(topic(i))).await;
    let online: Vec<u64> = devices.iter().map(|(i, _, _)| *i).collect();

    // 2. All drop at once: sockets closed, no DISCONNECT.
    drop(devices);

    // 3. Messages queued for them while they are away.
    progress.set_phase(Phase::Running);
    progress
        .goal
        .store(online.len() as u64 * u64::from(k), Ordering::Relaxed);
    let t_queue = Instant::now();
    let queued_acked = match ctx.connect('p', 0).await {
        Ok((publisher, _)) => queue_messages(&ctx, publisher, &online, k, &topic).await,
        Err(_) => 0,
    };
    let queue_phase = t_queue.elapsed();

    // 4. Everyone reconnects together.
    let watches = process_watches(plan);
    let system = crate::loadgen::SystemWatch::start();
    let rss_before = plan.pid.and_then(read_rss);
    let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let peak_stop = CancellationToken::new();
    let peak_task = plan.pid.map(|pid| {
        let (peak, stop) = (peak.clone(), peak_stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(r) = read_rss(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    progress.set_phase(Phase::Connecting);
    progress.goal.store(online.len() as u64, Ordering::Relaxed);
    let handshakes = Arc::new(Semaphore::new(plan.connect_concurrency as usize));
    let latency = Arc::new(Mutex::new(Latency::new()));
    let hold = CancellationToken::new();
    let reconnect_failed = Arc::new(AtomicU64::new(0));
    // Devices with all their messages, or that gave up.
    let settled = Arc::new(AtomicU64::new(0));
    let t_storm = Instant::now();
    let mut tasks = JoinSet::new();
    for &i in &online {
        let shared = Shared {
            handshakes: handshakes.clone(),
            latency: latency.clone(),
            hold: hold.clone(),
            failed: reconnect_failed.clone(),
        };
        let (ctx, settled) = (ctx.clone(), settled.clone());
        tasks.spawn(async move {
            let mut settle = Some(Settle(&settled));
            device(&ctx, i, k, t_storm, &shared, &mut settle).await
        });
    }
    // Until every device has its messages (or gave up), at most `duration`.
    let deadline = t_storm + plan.duration;
    let goal = online.len() as u64;
    while settled.load(Ordering::Relaxed) < goal && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut outcomes = Vec::with_capacity(online.len());
    let storm_phase = t_storm.elapsed();
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();
    peak_stop.cancel();
    if let Some(t) = peak_task {
        let _ = t.await;
    }
    // The devices still reading are told to stop; what they saw counts.
    progress.set_phase(Phase::Draining);
    hold.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(r) = tasks.join_next().await {
            outcomes.push(r.unwrap_or_default());
        }
    })
    .await;
    tasks.abort_all();
    sampler_stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    progress.set_phase(Phase::Done);

    let latency = latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let back: Vec<Duration> = outcomes.iter().filter_map(|o| o.back_after).collect();
    let done: Vec<Duration> = outcomes.iter().filter_map(|o| o.complete_after).collect();
    let received: u64 = outcomes.iter().map(|o| o.received).sum();
    let expected = online.len() as u64 * u64::from(k);
    let all = online.len();
    let storm = StormFigures {
        devices: online.len() as u64,
        queued_per_device: k,
        session_expiry_s: plan.session_expiry,
        queue_phase_s: queue_phase.as_secs_f64(),
        queued_acked,
        reconnected: back.len() as u64,
        failed: reconnect_failed.load(Ordering::Relaxed),
        sessions_resumed: outcomes.iter().filter(|o| o.session_present).count() as u64,
        all_back_s: (back.len() == all && all > 0)
            .then(|| back.iter().max().map_or(0.0, Duration::as_secs_f64)),
        all_delivered_s: (done.len() == all && all > 0)
            .then(|| done.iter().max().map_or(0.0, Duration::as_secs_f64)),
        devices_complete: done.len() as u64,
        expected,
        received,
        lost: expected.saturating_sub(received),
        duplicates: outcomes.iter().map(|o| o.duplicates).sum(),
        reconnect_latency: latency.summary(),
        rss_before_bytes: rss_before,
        rss_peak_bytes: plan
            .pid
            .map(|_| peak.load(Ordering::Relaxed))
            .filter(|&p| p > 0),
    };
    let end = RunEnd {
        processes,
        system_busy,
        timeline,
    };
    let mut report = ctx.report(online.len() as u64, storm_phase, &latency, None, None, end);
    // The connect figures are the storm's reconnects.
    report.connects.attempted = online.len() as u64;
    report.connects.ok = storm.reconnected;
    report.connects.failed = storm.failed;
    report.connects.per_s = match storm.all_back_s {
        Some(s) if s > 0.0 => storm.reconnected as f64 / s,
        _ => storm.reconnected as f64 / storm_phase.as_secs_f64().max(1e-9),
    };
    report.storm = Some(storm);
    Ok(report)
}

/// The payload of queued message `seq`: its number, then padding.
fn payload(seq: u32, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(4));
    b.put_u32(seq);
    b.resize(size.max(4), b'.');
    b.freeze()
}

/// Publishes `k` messages to each device's topic at the plan's QoS, at
/// most `inflight` unacknowledged; returns how many were acknowledged.
async fn queue_messages(
    ctx: &Ctx,
    mut c: Client,
    devices: &[u64],
    k: u32,
    topic: &impl Fn(u64) -> String,
) -> u64 {
    let window = usize::from(ctx.plan.inflight.min(c.broker_receive_maximum()).max(1));
    let qos = ctx.plan.qos;
    let mut in_flight = std::collections::HashSet::new();
    let mut next_id: u16 = 0;
    let mut acked = 0u64;
    // Message m goes to device m mod n, with number m / n: every device's
    // first message, then every device's second…
    let total = devices.len() * k as usize;
    let mut next_msg = 0usize;
    let mut more = total > 0;
    // Every publish answered within a generous bound, or the phase ends.
    let deadline = Instant::now() + ctx.plan.duration + Duration::from_secs(30);
    while (more || !in_flight.is_empty()) && Instant::now() < deadline {
        while more && in_flight.len() < window {
            if next_msg == total {
                more = false;
                break;
            }
            let (d, seq) = (
                devices[next_msg % devices.len()],
                (next_msg / devices.len()) as u32,
            );
            next_msg += 1;
            loop {
                next_id = next_id.wrapping_add(1).max(1);
                if !in_flight.contains(&next_id) {
                    break;
                }
            }
            let p = Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic(d),
                packet_id: next_id,
                properties: Properties::default(),
                payload: payload(seq, ctx.plan.payload),
            };
            if c.queue(&Packet::Publish(p)).is_err() {
                return acked;
            }
            in_flight.insert(next_id);
            Progress::add(&ctx.progress.sent, 1);
        }
        if c.flush().await.is_err() {
            return acked;
        }
        if in_flight.is_empty() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let p = match tokio::time::timeout(left, c.recv()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                ctx.error(format!("queue: {}", e.kind()));
                return acked;
            }
            Err(_) => break,
        };
        match p {
            Packet::PubAck(a) if in_flight.remove(&a.packet_id) => {
                if a.reason_code < 0x80 {
                    acked += 1;
                    Progress::add(&ctx.progress.acked, 1);
                } else {
                    ctx.error(format!("queue: PUBACK 0x{:02x}", a.reason_code));
                }
            }
            Packet::PubRec(a) if in_flight.contains(&a.packet_id) => {
                let _ = c.queue(&Packet::PubRel(Ack {
                    packet_id: a.packet_id,
                    reason_code: 0,
                    properties: Properties::default(),
                }));
            }
            Packet::PubComp(a) if in_flight.remove(&a.packet_id) => {
                acked += 1;
                Progress::add(&ctx.progress.acked, 1);
            }
            _ => {}
        }
    }
    c.disconnect().await;
    acked
}

/// What the devices of a storm share.
struct Shared {
    handshakes: Arc<Semaphore>,
    latency: Arc<Mutex<Latency>>,
    hold: CancellationToken,
    failed: Arc<AtomicU64>,
}

/// Counts a device as settled once: when it has its messages, or when it
/// ends without them (dropped on every return path).
struct Settle<'a>(&'a AtomicU64);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// One device in the storm: reconnects (resuming its session), reads until
/// it has its `k` messages (then it is settled), then holds until told to
/// stop.
async fn device(
    ctx: &Ctx,
    i: u64,
    k: u32,
    t_storm: Instant,
    shared: &Shared,
    settle: &mut Option<Settle<'_>>,
) -> DeviceOutcome {
    let Shared {
        handshakes,
        latency,
        hold,
        failed,
    } = shared;
    let mut out = DeviceOutcome::default();
    let identity = Identity {
        resume: true,
        ..Identity::for_connection(&ctx.plan, &ctx.tokens, 's', i)
    };
    let connected = {
        let Ok(_permit) = handshakes.acquire().await else {
            return out;
        };
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Client::connect(
                &ctx.endpoint,
                i,
                ctx.plan.version,
                &identity,
                ctx.plan.keep_alive,
            ),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout));
        if r.is_ok() {
            latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(t0.elapsed().as_nanos() as u64);
        }
        r
    };
    let mut c = match connected {
        Ok(c) => c,
        Err(e) => {
            failed.fetch_add(1, Ordering::Relaxed);
            Progress::add(&ctx.progress.connects_failed, 1);
            ctx.error(format!("reconnect: {}", e.kind()));
            return out;
        }
    };
    Progress::add(&ctx.progress.connects_ok, 1);
    out.back_after = Some(t_storm.elapsed());
    out.session_present = c.connack.session_present;
    let mut seen = vec![false; k as usize];
    let mut distinct = 0u32;
    loop {
        if distinct == k && out.complete_after.is_none() {
            out.complete_after = Some(t_storm.elapsed());
            settle.take();
        }
        // Everything buffered first, acknowledged in one write.
        loop {
            match c.next_packet() {
                Ok(Some(Packet::Publish(p))) => {
                    if p.qos == QoS::AtLeastOnce {
                        let _ = c.queue(&Packet::PubAck(Ack {
                            packet_id: p.packet_id,
                            reason_code: 0,
                            properties: Properties::default(),
                        }));
                    } else if p.qos == QoS::ExactlyOnce {
                        let _ = c.queue(&Packet::PubRec(Ack {
                            packet_id: p.packet_id,
                            reason_code: 0,
                            properties: Properties::default(),
                        }));
                    }
                    let seq = p
                        .payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
                    match seq {
                        Some(s) if (s as usize) < seen.len() => {
                            if seen[s as usize] {
                                out.duplicates += 1;
                            } else {
                                seen[s as usize] = true;
                                distinct += 1;
                                out.received += 1;
                                Progress::add(&ctx.progress.received, 1);
                            }
                        }
                        _ => ctx.error("storm: a message that was not queued".into()),
                    }
                }
                Ok(Some(Packet::PubRel(a))) => {
                    let _ = c.queue(&Packet::PubComp(Ack {
                        packet_id: a.packet_id,
                        reason_code: 0,
                        properties: Properties::default(),
                    }));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    ctx.error(format!("storm: {}", e.kind()));
                    return out;
                }
            }
        }
        if c.flush().await.is_err() {
            return out;
        }
        if distinct == k && out.complete_after.is_none() {
            continue;
        }
        tokio::select! {
            _ = hold.cancelled() => break,
            r = c.read_more() => if r.is_err() {
                Progress::add(&ctx.progress.dropped, 1);
                return out;
            },
        }
    }
    c.disconnect().await;
    out
}
