//! `bridge`: MQTT publishers → PubSub event notifications to XMPP sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::ctx::{collect, drain_received, process_watches, spawn_sampler, Ctx, RunEnd};
use super::super::mqtt::publisher::{publisher, Decoded, Header};
use super::super::mqtt::pubsub::{connect_all, SubResult};
use super::super::options::Plan;
use super::super::report::Report;
use super::super::stats::{Phase, Progress, SharedLatency, StreamTracker};
use super::super::xmpp::Xmpp;
use super::super::xmpp_client::{stanza_error_condition, XmppClient};
use super::super::{LoadError, ProcessWatch, SystemWatch};
use super::{figures, run_nonce, running_goal, sessions, FLUSH_SAMPLES};
use crate::bridge::payload::{NS_DATA, NS_JSON};
use crate::xmpp::element::Element;
use crate::xmpp::pep::NS_EVENT;
use crate::xmpp::stream::NS_CLIENT;

/// Bytes read from a session's socket at a time.
const READ: usize = 64 * 1024;
/// Longest a session's write (an answer, a keepalive) may stall.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// `bridge`; see the module docs of [`super`].
pub async fn run_bridge(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let ctx = Ctx::new(plan, progress.clone()).await?;
    let x = Xmpp::with_ctx(ctx.clone()).await?;
    let header = Header::Text { run: run_nonce() };
    let n = plan.pairs;
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());
    progress
        .goal
        .store(2 * n, std::sync::atomic::Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);

    // Every session subscribed before any publisher exists.
    let t_connect = Instant::now();
    let subs = sessions(&x, n, true).await;
    let pubs = connect_all(&ctx, 'p', n, |_| None).await;
    let connect_phase = t_connect.elapsed();
    let (ready, pairs, connect_latency) = super::pair_up(pubs, subs).await;
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
        receivers.spawn(async move { receive(&c, i, session, header, &lat, st).await });
        let (c, acks) = (ctx.clone(), acks.clone());
        senders.spawn(async move {
            let topic = c.plan.topic(i);
            publisher(&c, i, client, topic, header, stop_at, &acks).await
        });
    }
    // Each publisher stops by `stop_at` plus its bounded ack drain.
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

/// The payloads of a notification's items (`<data/>` or `<json/>` text).
fn item_payloads(message: &Element) -> impl Iterator<Item = String> + '_ {
    message
        .child("event", NS_EVENT)
        .and_then(|e| e.child("items", NS_EVENT))
        .into_iter()
        .flat_map(|items| items.children_named("item", NS_EVENT))
        .filter_map(|item| {
            item.child("data", NS_DATA)
                .or_else(|| item.child("json", NS_JSON))
                .map(Element::text)
        })
}

/// Receives pair `i`'s notifications until `stop` (iqs answered, a
/// whitespace keepalive when idle), then ends the stream.
async fn receive(
    ctx: &Ctx,
    i: u64,
    mut client: XmppClient,
    header: Header,
    latency: &SharedLatency,
    stop: CancellationToken,
) -> SubResult {
    let mut tracker = StreamTracker::default();
    let mut samples = Vec::with_capacity(FLUSH_SAMPLES);
    let mut last_receive = None;
    let every = ctx.ping_every();
    let keepalive = tokio::time::sleep(every);
    tokio::pin!(keepalive);
    let mut broken = false;
    loop {
        // What is buffered first (the subscription step may have left some).
        let now = ctx.now_ns();
        let mut got = 0;
        loop {
            let el = match client.next_buffered() {
                Ok(Some(el)) => el,
                Ok(None) => break,
                Err(e) => {
                    ctx.error(format!("bridge session: {}", e.kind()));
                    broken = true;
                    break;
                }
            };
            if !el.is("message", NS_CLIENT) {
                client.answer(&el);
                continue;
            }
            if el.attr("type") == Some("error") {
                ctx.error(format!(
                    "bridge session: message error {}",
                    stanza_error_condition(&el)
                ));
                continue;
            }
            for text in item_payloads(&el) {
                match header.read(text.as_bytes()) {
                    Decoded::Ours(ts, sender, seq) => {
                        got += 1;
                        samples.push(now.saturating_sub(ts));
                        tracker.note(sender, seq, u64::from(sender) == i);
                    }
                    Decoded::Stale => {}
                    Decoded::Malformed => {
                        got += 1;
                        tracker.received += 1;
                        tracker.unexpected += 1;
                    }
                }
            }
        }
        if got > 0 {
            Progress::add(&ctx.progress.received, got);
            last_receive = Some(ctx.start.elapsed());
        }
        if samples.len() >= FLUSH_SAMPLES {
            latency.flush(i as usize, &mut samples);
        }
        if broken {
            break;
        }
        if !client.wbuf.is_empty()
            && !matches!(
                tokio::time::timeout(WRITE_STALL, client.flush()).await,
                Ok(Ok(()))
            )
        {
            ctx.error("bridge session: write failed or stalled".into());
            broken = true;
            break;
        }
        tokio::select! {
            biased;
            r = client.read_some(READ) => {
                if let Err(e) = r {
                    ctx.error(format!("bridge session: {}", e.kind()));
                    broken = true;
                    break;
                }
            }
            _ = stop.cancelled() => break,
            () = &mut keepalive => {
                keepalive.as_mut().reset((Instant::now() + every).into());
                client.wbuf.extend_from_slice(b" ");
            }
        }
    }
    latency.flush(i as usize, &mut samples);
    if broken {
        Progress::add(&ctx.progress.dropped, 1);
    } else {
        client.close().await;
    }
    SubResult {
        index: i,
        tracker,
        last_receive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        let xml = "<message from='pubsub.localhost' type='headline' xmlns='jabber:client'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='bench/1/data'>\
             <item id='a' publisher='u@localhost'><data xmlns='urn:petrel:mqtt:0'>one</data></item>\
             <item id='b'><json xmlns='urn:xmpp:json:0'>{\"t\":1}</json></item>\
             <item id='c'><other xmlns='x'/></item>\
             </items></event></message>";
        let mut p =
            crate::xmpp::stream::XmlStream::new(crate::loadgen::xmpp_client::client_limits());
        p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
        p.feed(xml.as_bytes());
        let _ = p.next_event().unwrap();
        let Some(crate::xmpp::stream::StreamEvent::Stanza(el)) = p.next_event().unwrap() else {
            panic!("no stanza")
        };
        let got: Vec<String> = item_payloads(&el).collect();
        assert_eq!(got, vec!["one".to_string(), "{\"t\":1}".to_string()]);
    }
}
