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
//! The publisher loop is in [`super::publisher`]; subscribers are here (the
//! bridge scenarios use both, with a text payload header).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::client::{packet_name, Client, ClientError};
use super::super::ctx::{collect, drain_received, RunEnd};
use super::super::options::{Layout, Plan};
use super::super::report::{MessageFigures, Report, SubscriberFigures};
use super::super::stats::{Latency, Phase, Progress, SharedLatency, StreamTracker};
use super::super::LoadError;
use super::publisher::{publisher, Decoded, Header};
use super::{process_watches, spawn_sampler, Ctx};
use crate::loadgen::ProcessWatch;
use crate::mqtt::codec::{Ack, Packet, QoS};

/// Latency samples a subscriber buffers before flushing to a shard.
const FLUSH_SAMPLES: usize = 1024;

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

pub(crate) struct SubResult {
    pub index: u64,
    pub tracker: StreamTracker,
    /// When its last message arrived (since the run's start).
    pub last_receive: Option<Duration>,
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
    let subs = connect_all(&ctx, 's', plan.subscribers, |s| Some(topo.filter(s))).await;
    let pubs = connect_all(&ctx, 'p', plan.publishers, |_| None).await;
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
        sub_tasks.spawn(async move {
            let hears = |p| topo.hears(j, p);
            subscriber(&ctx, j, client, Header::Binary, hears, &lat, stop).await
        });
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
        pub_tasks.spawn(async move {
            publisher(&ctx, i, client, topic, Header::Binary, stop_at, &acks).await
        });
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
    drain_received(&progress, || expected_total).await;
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();
    sub_stop.cancel();
    let mut sub_results = collect(&mut sub_tasks).await;
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
    m.set_timing(
        send_start,
        last_send,
        last_receive,
        plan.payload,
        &sub_latency.merged(),
    );
    m.ack_latency = ack_latency.merged().summary();

    let end = RunEnd {
        processes,
        system_busy,
        timeline,
    };
    let attempted = plan.publishers + plan.subscribers;
    // Everyone connects before the first message: the connect phase ends
    // where sending starts.
    Ok(ctx.report(attempted, send_start, &connect_latency, Some(m), None, end))
}

/// Connects `n` clients of `role` (subscribing client i to `filter(i)`
/// when there is one), at most `connect_concurrency` at once. Failures are
/// counted and left out.
pub(crate) async fn connect_all(
    ctx: &Arc<Ctx>,
    role: char,
    n: u64,
    filter: impl Fn(u64) -> Option<String>,
) -> Vec<(u64, Client, u64)> {
    let mut out = Vec::with_capacity(n as usize);
    let mut next = 0u64;
    let mut tasks = JoinSet::new();
    while next < n || !tasks.is_empty() {
        while next < n && (tasks.len() as u64) < ctx.plan.connect_concurrency {
            let (ctx, i) = (ctx.clone(), next);
            let filter = filter(i);
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

/// Receives until `stop`, acknowledging QoS 1/2 and tracking every stream
/// (`hears(p)`: whether publisher p's messages are meant for it). Messages
/// of another run (`Decoded::Stale`) are acknowledged and not counted.
pub(crate) async fn subscriber(
    ctx: &Ctx,
    index: u64,
    mut client: Client,
    header: Header,
    hears: impl Fn(u64) -> bool,
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
                    match header.read(&p.payload) {
                        Decoded::Ours(ts, publisher, seq) => {
                            n += 1;
                            samples.push(now.saturating_sub(ts));
                            tracker.note(publisher, seq, hears(u64::from(publisher)));
                        }
                        Decoded::Stale => {}
                        Decoded::Malformed => {
                            n += 1;
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
                    ctx.error(format!("subscriber got {}", packet_name(&other)));
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
