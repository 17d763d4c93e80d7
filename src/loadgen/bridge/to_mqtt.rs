//! `bridge-back`: XMPP sessions publishing PubSub items → MQTT subscribers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::ctx::{collect, drain_received, process_watches, spawn_sampler, Ctx, RunEnd};
use super::super::mqtt::publisher::{Header, PubResult};
use super::super::mqtt::pubsub::{connect_all, subscriber};
use super::super::options::{Plan, BRIDGE_HEADER};
use super::super::report::Report;
use super::super::stats::{Phase, Progress, SharedLatency};
use super::super::xmpp::Xmpp;
use super::super::xmpp_client::{stanza_error_condition, XmppClient, XmppError};
use super::super::{LoadError, ProcessWatch, SystemWatch};
use super::{figures, run_nonce, running_goal, sessions, FLUSH_SAMPLES};
use crate::xmpp::element::write_escaped_attr;
use crate::xmpp::stream::NS_CLIENT;

/// Items written per batch (one write call) when nothing else limits.
const BATCH: u64 = 64;
/// Bytes read from a session's socket at a time.
const READ: usize = 64 * 1024;
/// Longest a publisher waits for its last results.
const RESULT_DRAIN: Duration = Duration::from_secs(10);

/// `bridge-back`; see the module docs of [`super`].
pub async fn run_bridge_back(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let ctx = Ctx::new(plan, progress.clone()).await?;
    let x = Xmpp::with_ctx(ctx.clone()).await?;
    let run = run_nonce();
    let header = Header::Text { run };
    let n = plan.pairs;
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());
    progress
        .goal
        .store(2 * n, std::sync::atomic::Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);

    // Every subscriber subscribed before any session publishes.
    let t_connect = Instant::now();
    let subs = connect_all(&ctx, 's', n, |i| Some(plan.topic(i))).await;
    let pubs = sessions(&x, n, false).await;
    let connect_phase = t_connect.elapsed();
    let (ready, pairs, connect_latency) = super::pair_up(subs, pubs).await;
    if ready.is_empty() {
        sampler_stop.cancel();
        let _ = sampler.await;
        return Err(LoadError::Setup(format!(
            "no pair could connect and subscribe (of {n}); errors: {:?}",
            ctx.errors()
        )));
    }

    progress.set_phase(Phase::Running);
    running_goal(&progress, plan, ready.len());
    let latency = Arc::new(SharedLatency::new(8));
    let acks = Arc::new(SharedLatency::new(8));
    let stop = CancellationToken::new();
    let mut receivers = JoinSet::new();
    let mut senders = JoinSet::new();
    let watches = process_watches(plan);
    let system = SystemWatch::start();
    let send_start = ctx.start.elapsed();
    let stop_at = Instant::now() + plan.duration;
    for (i, client, session) in ready {
        let (c, lat, st) = (ctx.clone(), latency.clone(), stop.clone());
        receivers
            .spawn(async move { subscriber(&c, i, client, header, |p| p == i, &lat, st).await });
        let (c, acks) = (ctx.clone(), acks.clone());
        senders.spawn(async move {
            let t = ItemTemplate::new(&c.plan, i, run);
            publish_items(&c, i, session, &t, stop_at, &acks).await
        });
    }
    // Each session stops by `stop_at` plus its bounded result drain.
    let mut sent = Vec::new();
    while let Some(r) = senders.join_next().await {
        if let Ok(r) = r {
            sent.push(r);
        }
    }
    let expected: u64 = sent.iter().map(|r| r.sent).sum();
    drain_received(&progress, || expected).await;
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();
    stop.cancel();
    let mut received = collect(&mut receivers).await;
    sampler_stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    progress.set_phase(Phase::Done);

    let mut m = figures(
        &progress,
        &sent,
        &mut received,
        &pairs,
        send_start,
        plan,
        &latency.merged(),
    );
    m.ack_latency = acks.merged().summary();
    let end = RunEnd {
        processes,
        system_busy,
        timeline,
    };
    Ok(ctx.report(2 * n, connect_phase, &connect_latency, Some(m), None, end))
}

/// A publish iq of one session; per item only the id and the payload's
/// header change. The iq's id is the sequence number in hex.
struct ItemTemplate {
    head: Vec<u8>,
    /// From the id's closing quote to the payload.
    middle: Vec<u8>,
    /// Padding and the closing tags.
    tail: Vec<u8>,
    sender: u32,
    run: u32,
}

impl ItemTemplate {
    fn new(plan: &Plan, i: u64, run: u32) -> ItemTemplate {
        let mut head = BytesMut::new();
        head.extend_from_slice(b"<iq type='set' to='");
        write_escaped_attr(&mut head, &plan.pubsub_service);
        head.extend_from_slice(b"' id='");
        let mut middle = BytesMut::new();
        middle.extend_from_slice(
            b"'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='",
        );
        write_escaped_attr(&mut middle, &plan.node(i));
        middle.extend_from_slice(b"'><item><data xmlns='urn:petrel:mqtt:0'>");
        let mut tail = vec![b'.'; plan.payload.saturating_sub(BRIDGE_HEADER)];
        tail.extend_from_slice(b"</data></item></publish></pubsub></iq>");
        ItemTemplate {
            head: head.to_vec(),
            middle: middle.to_vec(),
            tail,
            sender: i as u32,
            run,
        }
    }

    fn write(&self, out: &mut BytesMut, ts_ns: u64, seq: u64) {
        out.extend_from_slice(&self.head);
        // Writing into a BytesMut cannot fail.
        let _ = write!(out, "{seq:x}");
        out.extend_from_slice(&self.middle);
        let mut h = [0u8; BRIDGE_HEADER];
        super::write_text_header(&mut h, ts_ns, self.sender, seq, self.run);
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.tail);
    }
}

/// Publish iqs awaiting their answer: sequence number → send time.
struct Pending {
    sent_at: HashMap<u64, u64>,
    samples: Vec<u64>,
}

impl Pending {
    /// Takes the answers the session has buffered; false when the stream
    /// is unusable.
    fn answers(&mut self, ctx: &Ctx, client: &mut XmppClient, acks: &SharedLatency) -> bool {
        let mut done = 0;
        loop {
            let el = match client.next_buffered() {
                Ok(Some(el)) => el,
                Ok(None) => break,
                Err(e) => {
                    ctx.error(format!("bridge publisher: {}", e.kind()));
                    return false;
                }
            };
            let answer =
                el.is("iq", NS_CLIENT) && matches!(el.attr("type"), Some("result" | "error"));
            let seq = el
                .attr("id")
                .and_then(|id| u64::from_str_radix(id, 16).ok());
            match (answer, seq.and_then(|s| self.sent_at.remove(&s))) {
                (true, Some(t)) => {
                    if el.attr("type") == Some("result") {
                        done += 1;
                        self.samples.push(ctx.now_ns().saturating_sub(t));
                    } else {
                        ctx.error(format!("publish: {}", stanza_error_condition(&el)));
                    }
                }
                _ => {
                    client.answer(&el);
                }
            }
        }
        Progress::add(&ctx.progress.acked, done);
        if self.samples.len() >= FLUSH_SAMPLES {
            acks.flush(0, &mut self.samples);
        }
        true
    }
}

/// Publishes items until `stop_at` (or `count`), at most `--inflight`
/// unanswered, then waits (bounded) for the last answers and ends the
/// stream.
async fn publish_items(
    ctx: &Ctx,
    i: u64,
    mut client: XmppClient,
    t: &ItemTemplate,
    stop_at: Instant,
    acks: &SharedLatency,
) -> PubResult {
    let plan = &ctx.plan;
    let window = u64::from(plan.inflight);
    let mut pending = Pending {
        sent_at: HashMap::with_capacity(window as usize),
        samples: Vec::with_capacity(FLUSH_SAMPLES),
    };
    let mut sent = 0u64;
    let mut broken = false;
    let mut last_send = ctx.start.elapsed();
    let begin = Instant::now();
    let mut last_write = Instant::now();
    let every = ctx.ping_every();
    let write_deadline = stop_at + RESULT_DRAIN;
    let read = |r: Result<usize, XmppError>| {
        if let Err(e) = &r {
            ctx.error(format!("bridge publisher: {}", e.kind()));
        }
        r.is_ok()
    };
    loop {
        let now = Instant::now();
        if now >= stop_at || plan.count.is_some_and(|c| sent >= c) {
            break;
        }
        let mut allowed = BATCH.min(window.saturating_sub(pending.sent_at.len() as u64));
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
                t.write(&mut client.wbuf, ts, sent);
                pending.sent_at.insert(sent, ts.max(1));
                sent += 1;
            }
            let r = tokio::time::timeout_at(write_deadline.into(), client.flush()).await;
            if !matches!(r, Ok(Ok(()))) {
                ctx.error("bridge publisher: write failed or stalled".into());
                broken = true;
                break;
            }
            last_write = Instant::now();
            last_send = ctx.start.elapsed();
            Progress::add(&ctx.progress.sent, allowed);
            // Take whatever answers are already here without waiting.
            if let Some(r) = client.read_some(READ).now_or_never() {
                if !read(r) || !pending.answers(ctx, &mut client, acks) {
                    broken = true;
                    break;
                }
            }
            continue;
        }
        if last_write.elapsed() >= every {
            client.wbuf.extend_from_slice(b" ");
            last_write = Instant::now();
        }
        if !client.wbuf.is_empty() {
            let r = tokio::time::timeout_at(write_deadline.into(), client.flush()).await;
            if !matches!(r, Ok(Ok(()))) {
                ctx.error("bridge publisher: write failed or stalled".into());
                broken = true;
                break;
            }
        }
        // Wait for answers or for the next due item.
        let wake = match plan.rate {
            Some(rate) => begin + Duration::from_secs_f64(sent as f64 / rate),
            None => stop_at,
        }
        .min(stop_at)
        .min(last_write + every);
        tokio::select! {
            r = client.read_some(READ) => {
                if !read(r) || !pending.answers(ctx, &mut client, acks) {
                    broken = true;
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    // The last answers, bounded.
    let drain_until = Instant::now() + RESULT_DRAIN;
    while !broken && !pending.sent_at.is_empty() {
        match tokio::time::timeout_at(drain_until.into(), client.read_some(READ)).await {
            Ok(r) => {
                if !read(r) || !pending.answers(ctx, &mut client, acks) {
                    broken = true;
                }
                if !client.wbuf.is_empty() && client.flush().await.is_err() {
                    broken = true;
                }
            }
            Err(_) => break,
        }
    }
    if !pending.sent_at.is_empty() {
        ctx.error(format!(
            "bridge publisher: {} publish iqs never answered",
            pending.sent_at.len()
        ));
    }
    acks.flush(i as usize, &mut pending.samples);
    if broken {
        Progress::add(&ctx.progress.dropped, 1);
    } else {
        client.close().await;
    }
    PubResult {
        index: i,
        sent,
        last_send,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_iqs_carry_id_node_and_header() {
        let o = crate::loadgen::Options::parse_from_args([
            "load",
            "bridge-back",
            "--auth",
            "password",
            "--password",
            "x",
            "--pairs",
            "3",
            "--payload",
            "55",
            "--user-pattern",
            "u%d@example.org",
        ])
        .unwrap();
        let plan = o.plan().unwrap().unwrap();
        let t = ItemTemplate::new(&plan, 2, 0x42);
        let mut out = BytesMut::new();
        t.write(&mut out, 0x10, 0x1f);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "<iq type='set' to='pubsub.example.org' id='1f'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='bench/2/data'>\
             <item><data xmlns='urn:petrel:mqtt:0'>\
             0000000000000010-00000002-000000000000001f-00000042....\
             </data></item></publish></pubsub></iq>"
        );
    }
}
