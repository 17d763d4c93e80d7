//! `mqtt-pubsub`: publishers and subscribers in a layout, end-to-end.
//!
//! Order of a run: every subscriber connects and subscribes (SUBACK seen),
//! then every publisher connects, then all publishers start together and
//! send for the duration (or `count` messages each, at `rate` per second
//! or as fast as TCP takes them). Each payload starts with the send time
//! (ns since the run's start), the publisher's index and a sequence number,
//! so a subscriber measures latency and counts losses, duplicates and
//! reorderings exactly, per publisher. QoS 1/2 publishers keep at most
//! `inflight` messages unacknowledged (and no more than the broker's
//! Receive Maximum). After the publishers stop, subscribers get a bounded
//! drain: until everything expected arrived, or 2 s without progress, or
//! 10 s in all.
//!
//! Publishes are written from a template encoded once with the codec; only
//! the packet id and the payload header are patched per message, so the
//! generator spends its CPU on the broker, not on itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::client::{Client, ClientError};
use super::super::options::{Layout, Plan, PAYLOAD_HEADER};
use super::super::report::{MessageFigures, Report, SubscriberFigures};
use super::super::stats::{Latency, Phase, Progress, SharedLatency, StreamTracker};
use super::super::LoadError;
use super::{process_watches, spawn_sampler, Ctx};
use crate::loadgen::ProcessWatch;
use crate::mqtt::codec::{self, Ack, Packet, Properties, Publish, QoS};

/// Publishes written per batch (one write call) when nothing else limits.
const BATCH: u64 = 128;
/// Latency samples a subscriber buffers before flushing to a shard.
const FLUSH_SAMPLES: usize = 1024;
/// Drain bounds after the publishers stop.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Longest a publisher waits for its last acknowledgements.
const ACK_DRAIN: Duration = Duration::from_secs(10);

/// Who publishes where; who listens to whom.
struct Topology {
    prefix: String,
    layout: Layout,
}

impl Topology {
    fn topic(&self, publisher: u64) -> String {
        match self.layout {
            Layout::OneToOne | Layout::FanIn => format!("{}/{publisher}", self.prefix),
            Layout::FanOut => format!("{}/all", self.prefix),
        }
    }

    fn filter(&self, subscriber: u64) -> String {
        match self.layout {
            Layout::OneToOne => format!("{}/{subscriber}", self.prefix),
            Layout::FanIn => format!("{}/+", self.prefix),
            Layout::FanOut => format!("{}/all", self.prefix),
        }
    }

    /// Whether subscriber `s` should hear publisher `p`.
    fn hears(&self, s: u64, p: u64) -> bool {
        match self.layout {
            Layout::OneToOne => s == p,
            Layout::FanIn | Layout::FanOut => true,
        }
    }
}

struct PubResult {
    index: u64,
    sent: u64,
    /// When its last message was written (since the run's start).
    last_send: Duration,
}

struct SubResult {
    index: u64,
    tracker: StreamTracker,
    /// When its last message arrived (since the run's start).
    last_receive: Option<Duration>,
}

pub async fn run_pubsub(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let ctx = Ctx::new(plan, progress.clone()).await?;
    let topo = Arc::new(Topology {
        prefix: format!("lg/{}-{}", std::process::id(), ctx.started_unix_s),
        layout: plan.layout,
    });
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());
    progress
        .goal
        .store(plan.publishers + plan.subscribers, Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);

    // Subscribers first, each subscribed before any publisher exists.
    let subs = connect_all(&ctx, 's', plan.subscribers, Some(&topo)).await;
    let pubs = connect_all(&ctx, 'p', plan.publishers, None).await;
    let ok_subs: Vec<u64> = subs.iter().map(|(j, _, _)| *j).collect();
    if subs.is_empty() || pubs.is_empty() {
        sampler_stop.cancel();
        let _ = sampler.await;
        let errors = ctx.errors();
        return Err(LoadError::Setup(format!(
            "{} of {} subscribers and {} of {} publishers could connect; errors: {errors:?}",
            subs.len(),
            plan.subscribers,
            pubs.len(),
            plan.publishers
        )));
    }
    let mut connect_latency = Latency::new();
    let sub_latency = Arc::new(SharedLatency::new(8));
    let ack_latency = Arc::new(SharedLatency::new(8));

    progress.set_phase(Phase::Running);
    progress.goal.store(
        plan.count.map_or(0, |c| c * pubs.len() as u64),
        Ordering::Relaxed,
    );
    let sub_stop = CancellationToken::new();
    let mut sub_tasks = JoinSet::new();
    for (j, client, ns) in subs {
        connect_latency.record(ns);
        let (ctx, topo, lat, stop) = (
            ctx.clone(),
            topo.clone(),
            sub_latency.clone(),
            sub_stop.clone(),
        );
        sub_tasks.spawn(async move { subscriber(&ctx, &topo, j, client, &lat, stop).await });
    }
    let watches = process_watches(plan);
    let system = crate::loadgen::SystemWatch::start();
    let send_start = ctx.start.elapsed();
    let stop_at = Instant::now() + plan.duration;
    let ok_pubs: Vec<u64> = pubs.iter().map(|(i, _, _)| *i).collect();
    let mut pub_tasks = JoinSet::new();
    for (i, client, ns) in pubs {
        connect_latency.record(ns);
        let (ctx, topic, acks) = (ctx.clone(), topo.topic(i), ack_latency.clone());
        pub_tasks.spawn(async move { publisher(&ctx, i, client, topic, stop_at, &acks).await });
    }
    let mut pub_results = Vec::new();
    while let Some(r) = pub_tasks.join_next().await {
        if let Ok(r) = r {
            pub_results.push(r);
        }
    }
    let sent_by = |p: u64| {
        pub_results
            .iter()
            .find(|r| r.index == p)
            .map_or(0, |r| r.sent)
    };

    // Drain: wait for what the subscribers should still get.
    progress.set_phase(Phase::Draining);
    let expected_total: u64 = ok_subs
        .iter()
        .map(|&s| {
            ok_pubs
                .iter()
                .filter(|&&p| topo.hears(s, p))
                .map(|&p| sent_by(p))
                .sum::<u64>()
        })
        .sum();
    let drain_start = Instant::now();
    let mut last = (Progress::get(&progress.received), Instant::now());
    while drain_start.elapsed() < DRAIN_MAX {
        let now_rx = Progress::get(&progress.received);
        if now_rx >= expected_total {
            break;
        }
        if now_rx != last.0 {
            last = (now_rx, Instant::now());
        } else if last.1.elapsed() >= DRAIN_IDLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();
    sub_stop.cancel();
    let mut sub_results = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(r) = sub_tasks.join_next().await {
            if let Ok(r) = r {
                sub_results.push(r);
            }
        }
    })
    .await;
    sub_tasks.abort_all();
    sampler_stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    progress.set_phase(Phase::Done);

    // Figures.
    sub_results.sort_by_key(|r| r.index);
    let mut m = MessageFigures {
        sent: pub_results.iter().map(|r| r.sent).sum(),
        acked: Progress::get(&progress.acked),
        ..MessageFigures::default()
    };
    let mut last_receive = send_start;
    for r in &sub_results {
        let t = &r.tracker;
        let expected: u64 = ok_pubs
            .iter()
            .filter(|&&p| topo.hears(r.index, p))
            .map(|&p| sent_by(p))
            .sum();
        let distinct: u64 = ok_pubs
            .iter()
            .filter(|&&p| topo.hears(r.index, p))
            .map(|&p| t.distinct_from(p as u32))
            .sum();
        let f = SubscriberFigures {
            index: r.index,
            expected,
            received: t.received,
            lost: expected.saturating_sub(distinct),
            duplicates: t.duplicates,
            reordered: t.reordered(),
            unexpected: t.unexpected,
        };
        m.expected += f.expected;
        m.received += f.received;
        m.lost += f.lost;
        m.duplicates += f.duplicates;
        m.reordered += f.reordered;
        m.unexpected += f.unexpected;
        m.per_subscriber.push(f);
        if let Some(l) = r.last_receive {
            last_receive = last_receive.max(l);
        }
    }
    // Subscribers that never connected lose everything meant for them.
    for s in (0..plan.subscribers).filter(|s| !sub_results.iter().any(|r| r.index == *s)) {
        let expected: u64 = ok_pubs
            .iter()
            .filter(|&&p| topo.hears(s, p))
            .map(|&p| sent_by(p))
            .sum();
        m.expected += expected;
        m.lost += expected;
    }
    let last_send = pub_results
        .iter()
        .map(|r| r.last_send)
        .max()
        .unwrap_or(send_start);
    m.send_phase_s = last_send.saturating_sub(send_start).as_secs_f64();
    m.receive_phase_s = last_receive.saturating_sub(send_start).as_secs_f64();
    m.sent_per_s = m.sent as f64 / m.send_phase_s.max(1e-9);
    m.received_per_s = m.received as f64 / m.receive_phase_s.max(1e-9);
    m.received_bytes_per_s = m.received_per_s * plan.payload as f64;
    let lat = sub_latency.merged();
    m.latency = lat.summary();
    m.latency_buckets = lat.buckets();
    m.ack_latency = ack_latency.merged().summary();

    let p = &progress;
    Ok(Report {
        generator: concat!("petrel-load ", env!("CARGO_PKG_VERSION")),
        started_unix_s: ctx.started_unix_s,
        wall_s: ctx.start.elapsed().as_secs_f64(),
        setup: ctx.setup(),
        connects: super::super::report::ConnectFigures {
            attempted: plan.publishers + plan.subscribers,
            ok: Progress::get(&p.connects_ok),
            failed: Progress::get(&p.connects_failed),
            dropped: Progress::get(&p.dropped),
            per_s: Progress::get(&p.connects_ok) as f64 / send_start.as_secs_f64().max(1e-9),
            connect_phase_s: send_start.as_secs_f64(),
            latency: connect_latency.summary(),
        },
        connect_buckets: connect_latency.buckets(),
        messages: Some(m),
        memory: None,
        processes,
        system_busy_cores: system_busy,
        machine_cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        timeline,
        errors: ctx.errors(),
    })
}

/// Connects `n` clients of `role` (subscribing each when `topo` is given),
/// at most `connect_concurrency` at once. Failures are counted and left out.
async fn connect_all(
    ctx: &Arc<Ctx>,
    role: char,
    n: u64,
    topo: Option<&Arc<Topology>>,
) -> Vec<(u64, Client, u64)> {
    let mut out = Vec::with_capacity(n as usize);
    let mut next = 0u64;
    let mut tasks = JoinSet::new();
    while next < n || !tasks.is_empty() {
        while next < n && (tasks.len() as u64) < ctx.plan.connect_concurrency {
            let (ctx, i) = (ctx.clone(), next);
            let filter = topo.map(|t| t.filter(i));
            tasks.spawn(async move {
                let (mut client, ns) = ctx.connect(role, i).await.ok()?;
                if let Some(f) = filter {
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        client.subscribe(&f, ctx.plan.qos),
                    )
                    .await
                    .unwrap_or(Err(ClientError::Timeout));
                    if let Err(e) = r {
                        ctx.error(format!("subscribe: {}", e.kind()));
                        return None;
                    }
                }
                Some((i, client, ns))
            });
            next += 1;
        }
        if let Some(Ok(Some(c))) = tasks.join_next().await {
            out.push(c);
        }
    }
    out.sort_by_key(|c| c.0);
    out
}

/// A PUBLISH encoded once; per message only the packet id and the payload
/// header are patched.
struct Template {
    bytes: Vec<u8>,
    /// Offset of the packet id (QoS 1/2).
    pid_at: usize,
    payload_at: usize,
}

impl Template {
    fn new(topic: String, qos: QoS, payload: usize, version: codec::Version) -> Template {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
            properties: Properties::default(),
            payload: Bytes::from(vec![0u8; payload]),
        };
        let mut b = BytesMut::new();
        codec::encode(&Packet::Publish(p.clone()), version, &mut b)
            .expect("a valid PUBLISH encodes");
        // Fixed header: type byte + remaining length varint.
        let varint = b[1..].iter().take_while(|&&x| x & 0x80 != 0).count() + 1;
        let pid_at = 1 + varint + 2 + p.topic.len();
        Template {
            payload_at: b.len() - payload,
            bytes: b.to_vec(),
            pid_at,
        }
    }

    fn write(&self, out: &mut BytesMut, pid: u16, ts_ns: u64, publisher: u32, seq: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let m = &mut out[start..];
        if pid != 0 {
            m[self.pid_at..self.pid_at + 2].copy_from_slice(&pid.to_be_bytes());
        }
        let h = &mut m[self.payload_at..self.payload_at + PAYLOAD_HEADER];
        h[0..8].copy_from_slice(&ts_ns.to_le_bytes());
        h[8..12].copy_from_slice(&publisher.to_le_bytes());
        h[12..20].copy_from_slice(&seq.to_le_bytes());
    }
}

/// Reads the payload header: (send time ns, publisher, sequence).
fn payload_header(p: &[u8]) -> Option<(u64, u32, u64)> {
    let h = p.get(..PAYLOAD_HEADER)?;
    Some((
        u64::from_le_bytes(h[0..8].try_into().ok()?),
        u32::from_le_bytes(h[8..12].try_into().ok()?),
        u64::from_le_bytes(h[12..20].try_into().ok()?),
    ))
}

/// QoS 1/2 packet ids in flight with their send times.
struct InFlight {
    sent_at: Vec<u64>,
    next: u16,
    len: usize,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            sent_at: vec![0; 1 << 16],
            next: 1,
            len: 0,
        }
    }

    /// A free packet id, marked as sent at `ts` (the caller keeps `len`
    /// below 65,535).
    fn take(&mut self, ts: u64) -> u16 {
        while self.sent_at[self.next as usize] != 0 {
            self.next = self.next.checked_add(1).unwrap_or(1);
        }
        let pid = self.next;
        self.sent_at[pid as usize] = ts.max(1);
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.len += 1;
        pid
    }

    /// Frees `pid`; its send time, or None when it was not in flight.
    fn complete(&mut self, pid: u16) -> Option<u64> {
        let t = std::mem::take(&mut self.sent_at[pid as usize]);
        (t != 0).then(|| {
            self.len -= 1;
            t
        })
    }
}

/// Sends until `stop_at` (or `count`), then waits for the last acks.
async fn publisher(
    ctx: &Ctx,
    index: u64,
    mut client: Client,
    topic: String,
    stop_at: Instant,
    acks: &SharedLatency,
) -> PubResult {
    let plan = &ctx.plan;
    let qos = plan.qos;
    let template = Template::new(topic, qos, plan.payload, client.version);
    let window = if qos == QoS::AtMostOnce {
        u64::MAX
    } else {
        u64::from(
            plan.inflight
                .min(client.broker_receive_maximum())
                .min(65_534),
        )
    };
    let mut inflight = InFlight::new();
    let mut ack_samples = Vec::with_capacity(FLUSH_SAMPLES);
    let (mut sent, mut seq_failed) = (0u64, false);
    let mut last_send = ctx.start.elapsed();
    let begin = Instant::now();
    let mut last_write = Instant::now();
    let every = ctx.ping_every();
    let write_deadline = stop_at + ACK_DRAIN;

    'send: loop {
        let now = Instant::now();
        if now >= stop_at || plan.count.is_some_and(|c| sent >= c) {
            break;
        }
        let mut allowed = BATCH.min(window - inflight.len as u64);
        if let Some(rate) = plan.rate {
            let due = ((now - begin).as_secs_f64() * rate) as u64 + 1;
            allowed = allowed.min(due.saturating_sub(sent));
        }
        if let Some(c) = plan.count {
            allowed = allowed.min(c - sent);
        }
        if allowed > 0 {
            for _ in 0..allowed {
                let ts = ctx.now_ns();
                let pid = if qos == QoS::AtMostOnce {
                    0
                } else {
                    inflight.take(ts)
                };
                template.write(&mut client.wbuf, pid, ts, index as u32, sent);
                sent += 1;
            }
            let r = tokio::time::timeout_at(write_deadline.into(), client.flush()).await;
            if !matches!(r, Ok(Ok(()))) {
                ctx.error("publisher: write failed or stalled".into());
                seq_failed = true;
                break 'send;
            }
            last_write = Instant::now();
            last_send = ctx.start.elapsed();
            Progress::add(&ctx.progress.sent, allowed);
            // Take whatever acks are already here without waiting.
            if let Some(r) = client.read_more().now_or_never() {
                if !handle_acks(ctx, &mut client, r, &mut inflight, &mut ack_samples, acks) {
                    seq_failed = true;
                    break 'send;
                }
            }
            continue;
        }
        if last_write.elapsed() >= every {
            last_write = Instant::now();
            if client.queue(&Packet::PingReq).is_err() || client.flush().await.is_err() {
                seq_failed = true;
                break;
            }
        }
        // Nothing may go now: wait for acks or for the next due message.
        let wake = match plan.rate {
            Some(rate) => begin + Duration::from_secs_f64((sent as f64) / rate),
            None => stop_at,
        }
        .min(stop_at)
        .min(last_write + every);
        tokio::select! {
            r = client.read_more() => {
                if !handle_acks(ctx, &mut client, r, &mut inflight, &mut ack_samples, acks) {
                    seq_failed = true;
                    break 'send;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    // Last acknowledgements, bounded.
    let drain_until = Instant::now() + ACK_DRAIN;
    while !seq_failed && inflight.len > 0 && Instant::now() < drain_until {
        match tokio::time::timeout_at(drain_until.into(), client.read_more()).await {
            Ok(r) => {
                if !handle_acks(ctx, &mut client, r, &mut inflight, &mut ack_samples, acks) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if inflight.len > 0 {
        ctx.error(format!(
            "publisher: {} QoS {} messages never acknowledged",
            inflight.len, qos as u8
        ));
    }
    acks.flush(index as usize, &mut ack_samples);
    client.disconnect().await;
    PubResult {
        index,
        sent,
        last_send,
    }
}

/// Processes what a read brought a publisher: PUBACK, PUBREC (answered with
/// PUBREL), PUBCOMP, PINGRESP. False when the connection is unusable.
fn handle_acks(
    ctx: &Ctx,
    client: &mut Client,
    read: Result<usize, ClientError>,
    inflight: &mut InFlight,
    samples: &mut Vec<u64>,
    shared: &SharedLatency,
) -> bool {
    if let Err(e) = read {
        ctx.error(format!("publisher: {}", e.kind()));
        return false;
    }
    let mut done = 0;
    let mut rel = false;
    loop {
        let ack = match client.next_packet() {
            Ok(Some(Packet::PubAck(a))) | Ok(Some(Packet::PubComp(a))) => a,
            Ok(Some(Packet::PubRec(a))) => {
                if a.reason_code >= 0x80 {
                    inflight.complete(a.packet_id);
                    ctx.error(format!("PUBREC 0x{:02x}", a.reason_code));
                } else if client
                    .queue(&Packet::PubRel(Ack {
                        packet_id: a.packet_id,
                        ..Ack::default()
                    }))
                    .is_ok()
                {
                    rel = true;
                }
                continue;
            }
            Ok(Some(Packet::PingResp)) => continue,
            Ok(None) => break,
            Ok(Some(other)) => {
                ctx.error(format!(
                    "publisher got {}",
                    super::super::client::packet_name(&other)
                ));
                return false;
            }
            Err(e) => {
                ctx.error(format!("publisher: {}", e.kind()));
                return false;
            }
        };
        if ack.reason_code >= 0x80 {
            ctx.error(format!("publish refused: 0x{:02x}", ack.reason_code));
        }
        if let Some(t) = inflight.complete(ack.packet_id) {
            samples.push(ctx.now_ns().saturating_sub(t));
            done += 1;
        }
    }
    Progress::add(&ctx.progress.acked, done);
    if samples.len() >= FLUSH_SAMPLES {
        shared.flush(0, samples);
    }
    // PUBRELs go out with the next batch, or now when nothing is queued to
    // send soon (the caller flushes before waiting again).
    if rel {
        return client.flush().now_or_never().is_none_or(|r| r.is_ok());
    }
    true
}

/// Receives until `stop`, acknowledging QoS 1/2 and tracking every stream.
async fn subscriber(
    ctx: &Ctx,
    topo: &Topology,
    index: u64,
    mut client: Client,
    latency: &SharedLatency,
    stop: CancellationToken,
) -> SubResult {
    let mut tracker = StreamTracker::default();
    let mut samples = Vec::with_capacity(FLUSH_SAMPLES);
    let mut last_receive = None;
    let every = ctx.ping_every();
    let ping = tokio::time::sleep(every);
    tokio::pin!(ping);
    loop {
        tokio::select! {
            biased;
            r = client.read_more() => {
                if let Err(e) = r {
                    ctx.error(format!("subscriber: {}", e.kind()));
                    Progress::add(&ctx.progress.dropped, 1);
                    break;
                }
            }
            _ = stop.cancelled() => break,
            () = &mut ping => {
                ping.as_mut().reset((Instant::now() + every).into());
                let _ = client.queue(&Packet::PingReq);
            }
        }
        let now = ctx.now_ns();
        let mut n = 0;
        let mut broken = false;
        loop {
            match client.next_packet() {
                Ok(Some(Packet::Publish(p))) => {
                    n += 1;
                    match payload_header(&p.payload) {
                        Some((ts, publisher, seq)) => {
                            samples.push(now.saturating_sub(ts));
                            tracker.note(publisher, seq, topo.hears(index, u64::from(publisher)));
                        }
                        None => {
                            tracker.received += 1;
                            tracker.unexpected += 1;
                        }
                    }
                    let ack = Ack {
                        packet_id: p.packet_id,
                        ..Ack::default()
                    };
                    let _ = match p.qos {
                        QoS::AtMostOnce => Ok(()),
                        QoS::AtLeastOnce => client.queue(&Packet::PubAck(ack)),
                        QoS::ExactlyOnce => client.queue(&Packet::PubRec(ack)),
                    };
                }
                Ok(Some(Packet::PubRel(a))) => {
                    let _ = client.queue(&Packet::PubComp(Ack {
                        packet_id: a.packet_id,
                        ..Ack::default()
                    }));
                }
                Ok(Some(Packet::PingResp)) => {}
                Ok(None) => break,
                Ok(Some(other)) => {
                    ctx.error(format!(
                        "subscriber got {}",
                        super::super::client::packet_name(&other)
                    ));
                    broken = true;
                    break;
                }
                Err(e) => {
                    ctx.error(format!("subscriber: {}", e.kind()));
                    broken = true;
                    break;
                }
            }
        }
        if n > 0 {
            Progress::add(&ctx.progress.received, n);
            last_receive = Some(ctx.start.elapsed());
        }
        if samples.len() >= FLUSH_SAMPLES {
            latency.flush(index as usize, &mut samples);
        }
        if broken {
            Progress::add(&ctx.progress.dropped, 1);
            break;
        }
        let flushed = tokio::time::timeout(Duration::from_secs(10), client.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            ctx.error("subscriber: ack write failed or stalled".into());
            break;
        }
    }
    latency.flush(index as usize, &mut samples);
    client.disconnect().await;
    SubResult {
        index,
        tracker,
        last_receive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patches_decode_back() {
        for (qos, version) in [
            (QoS::AtMostOnce, codec::Version::V5),
            (QoS::AtLeastOnce, codec::Version::V5),
            (QoS::ExactlyOnce, codec::Version::V311),
        ] {
            let t = Template::new("lg/1-2/300".into(), qos, 200, version);
            let mut out = BytesMut::new();
            let pid = if qos == QoS::AtMostOnce { 0 } else { 4242 };
            t.write(&mut out, pid, 123_456_789, 7, 99);
            t.write(&mut out, pid.saturating_add(1), 5, 8, 100);
            let Some(Packet::Publish(p)) = codec::decode(&mut out, Some(version), 1 << 20).unwrap()
            else {
                panic!("not a publish")
            };
            assert_eq!(p.topic, "lg/1-2/300");
            assert_eq!(p.qos, qos);
            assert_eq!(p.packet_id, pid);
            assert_eq!(p.payload.len(), 200);
            assert_eq!(payload_header(&p.payload), Some((123_456_789, 7, 99)));
            let Some(Packet::Publish(p)) = codec::decode(&mut out, Some(version), 1 << 20).unwrap()
            else {
                panic!("not a publish")
            };
            assert_eq!(payload_header(&p.payload), Some((5, 8, 100)));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn inflight_ids_wrap_and_skip_busy() {
        let mut f = InFlight::new();
        let a = f.take(10);
        let b = f.take(20);
        assert_eq!((a, b), (1, 2));
        assert_eq!(f.complete(a), Some(10));
        assert_eq!(f.complete(a), None);
        f.next = u16::MAX;
        assert_eq!(f.take(1), u16::MAX);
        // Wraps past 0 and skips 2, still in flight.
        assert_eq!(f.take(1), 1);
        assert_eq!(f.take(1), 3);
        assert_eq!(f.len, 4);
    }

    #[test]
    fn topology_layouts() {
        let t = |layout| Topology {
            prefix: "lg/x".into(),
            layout,
        };
        let o = t(Layout::OneToOne);
        assert_eq!(
            (o.topic(3), o.filter(3)),
            ("lg/x/3".into(), "lg/x/3".into())
        );
        assert!(o.hears(3, 3) && !o.hears(3, 4));
        let i = t(Layout::FanIn);
        assert_eq!(
            (i.topic(3), i.filter(0)),
            ("lg/x/3".into(), "lg/x/+".into())
        );
        assert!(i.hears(0, 9));
        let f = t(Layout::FanOut);
        assert_eq!(
            (f.topic(0), f.filter(5)),
            ("lg/x/all".into(), "lg/x/all".into())
        );
        assert!(f.hears(5, 0));
    }
}
