//! The bridge scenarios (issue 16): MQTT and XMPP clients of one run on the
//! two sides of Petrel's MQTT ⇄ XMPP bridge (`[[bridge.rule]]`, see
//! `crate::bridge`).
//!
//! `--pairs N`: pair i is an MQTT client and an XMPP session, both logged in
//! as user `i mod --users`, on topic i of `--topic-pattern` and node i of
//! `--node-pattern` (the node the server's rule maps the topic to) on the
//! PubSub service `--pubsub-service`.
//!
//! - `bridge` ([`to_xmpp`]): the XMPP sessions log in and subscribe to their
//!   node (iq result seen; a rule creates the node on first use), then the
//!   MQTT publishers connect and publish on their topics — the
//!   `mqtt-pubsub` publisher loop: `--qos` (1 by default, acknowledged
//!   once the item is stored), `--inflight` unacknowledged at most,
//!   `--rate` per second or as fast as the window allows, `--count` or
//!   `--duration`. Each item reaches its session as a XEP-0060 event
//!   notification.
//! - `bridge-back` ([`to_mqtt`]): the MQTT subscribers connect and
//!   subscribe to their topics (SUBACK seen), then the XMPP sessions publish
//!   items to their nodes (`<iq type='set'>` with `<publish/>`), at most
//!   `--inflight` unanswered; the server turns each into an MQTT publish.
//!   The accounts must be allowed to publish to the nodes (the rule's
//!   `publishers`).
//!
//! Payloads are text that crosses unchanged (`<data
//! xmlns='urn:petrel:mqtt:0'>` in the item): send time (ns since the run's
//! start), sender index, sequence number and the run's nonce in hex
//! ([`write_text_header`]), padded with `.` to `--payload` bytes. The
//! receiver measures latency and counts losses, duplicates and reorderings
//! per sender as `mqtt-pubsub` does; a payload of another run (a retained
//! message, or the last item a node sends on subscription) is not counted.
//! A pair runs only when both of its clients logged in (and subscribed).
//! After the senders stop (their last acknowledgements awaited, bounded),
//! the drain of `mqtt-pubsub`: until everything sent arrived, or 2 s
//! without progress, or 10 s in all. Lost = sent but never received. The
//! connect figures count both sides: N MQTT connects and N XMPP logins
//! (for `bridge`, each with its subscription).

mod to_mqtt;
mod to_xmpp;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::mqtt::publisher::PubResult;
use super::mqtt::pubsub::SubResult;
use super::options::{Plan, BRIDGE_HEADER};
use super::report::{MessageFigures, SubscriberFigures};
use super::stats::{Latency, Progress};
use super::xmpp::Xmpp;
use super::xmpp_client::{stanza_error_condition, XmppClient, XmppError};
use crate::xmpp::element::Element;
use crate::xmpp::stream::NS_CLIENT;

pub use to_mqtt::run_bridge_back;
pub use to_xmpp::run_bridge;

/// Longest a subscription iq may take to be answered.
const IQ_TIMEOUT: Duration = Duration::from_secs(10);
/// Stanzas skipped while waiting for an iq's answer.
const MAX_SKIPPED: usize = 64;
/// Latency samples buffered before flushing to a shard.
const FLUSH_SAMPLES: usize = 1024;

/// Writes the text header into `h` (at least [`BRIDGE_HEADER`] bytes):
/// `ts-sender-seq-run`, 16, 8, 16 and 8 lowercase hex digits.
pub(crate) fn write_text_header(h: &mut [u8], ts_ns: u64, sender: u32, seq: u64, run: u32) {
    fn hex(out: &mut [u8], v: u64) {
        let n = out.len();
        for (k, b) in out.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((v >> (4 * (n - 1 - k))) & 0xf) as usize];
        }
    }
    hex(&mut h[0..16], ts_ns);
    h[16] = b'-';
    hex(&mut h[17..25], u64::from(sender));
    h[25] = b'-';
    hex(&mut h[26..42], seq);
    h[42] = b'-';
    hex(&mut h[43..51], u64::from(run));
}

/// Reads a text header: (send time ns, sender, sequence, run).
pub(crate) fn parse_text_header(p: &[u8]) -> Option<(u64, u32, u64, u32)> {
    let h = std::str::from_utf8(p.get(..BRIDGE_HEADER)?).ok()?;
    let b = h.as_bytes();
    if b[16] != b'-' || b[25] != b'-' || b[42] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        let s = &h[r];
        s.bytes()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((
        num(0..16)?,
        u32::try_from(num(17..25)?).ok()?,
        num(26..42)?,
        u32::try_from(num(43..51)?).ok()?,
    ))
}

/// A nonce for this run's payloads, so that what an earlier run left (a
/// retained message, a node's last item) is told apart.
fn run_nonce() -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
    });
    nanos ^ std::process::id().rotate_left(7)
}

/// Logs sessions `0..n` in, at most `connect_concurrency` at once; with
/// `subscribe`, each then subscribes its full JID to its node (pair i's)
/// and waits for the result. Failures are counted and left as `None`.
/// A pair per index with both its MQTT client and its XMPP session
/// connected (what has no partner is closed again), the pairs' indexes,
/// and every connect's latency.
async fn pair_up(
    clients: Vec<(u64, super::client::Client, u64)>,
    mut sessions: Vec<Option<(XmppClient, u64)>>,
) -> (
    Vec<(u64, super::client::Client, XmppClient)>,
    Vec<u64>,
    Latency,
) {
    let mut latency = Latency::new();
    let mut pairs = Vec::new();
    let mut ready = Vec::new();
    for (i, client, ns) in clients {
        latency.record(ns);
        match sessions[i as usize].take() {
            Some((session, sns)) => {
                latency.record(sns);
                pairs.push(i);
                ready.push((i, client, session));
            }
            None => client.disconnect().await,
        }
    }
    for (session, sns) in sessions.into_iter().flatten() {
        latency.record(sns);
        session.close().await;
    }
    (ready, pairs, latency)
}

async fn sessions(x: &Arc<Xmpp>, n: u64, subscribe: bool) -> Vec<Option<(XmppClient, u64)>> {
    let mut out: Vec<Option<(XmppClient, u64)>> = (0..n).map(|_| None).collect();
    let mut next = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while next < n || !tasks.is_empty() {
        while next < n && (tasks.len() as u64) < x.ctx.plan.connect_concurrency {
            let (x, i) = (x.clone(), next);
            tasks.spawn(async move {
                let (mut client, ns) = x.login(i).await.ok()?;
                if subscribe {
                    let r = tokio::time::timeout(IQ_TIMEOUT, subscribe_node(&x, &mut client, i))
                        .await
                        .unwrap_or(Err(XmppError::Timeout));
                    if let Err(e) = r {
                        x.ctx.error(format!("subscribe: {}", e.kind()));
                        return None;
                    }
                }
                Some((i, client, ns))
            });
            next += 1;
        }
        if let Some(Ok(Some((i, client, ns)))) = tasks.join_next().await {
            out[i as usize] = Some((client, ns));
        }
    }
    out
}

/// Subscribes the session's full JID to pair `i`'s node. What arrives
/// before the result is skipped (only another run's items can); what comes
/// after it stays buffered for the receiving loop.
async fn subscribe_node(x: &Xmpp, client: &mut XmppClient, i: u64) -> Result<(), XmppError> {
    let plan = &x.ctx.plan;
    let ns_pubsub = crate::xmpp::pep::NS_PUBSUB;
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "set")
        .with_attr("id", "sub-1")
        .with_attr("to", plan.pubsub_service.clone())
        .with_child(
            Element::new("pubsub", ns_pubsub).with_child(
                Element::new("subscribe", ns_pubsub)
                    .with_attr("node", plan.node(i))
                    .with_attr("jid", client.jid.clone()),
            ),
        )
        .write_to(&mut client.wbuf, NS_CLIENT);
    client.flush().await?;
    for _ in 0..MAX_SKIPPED {
        let el = client.next_element().await?;
        if el.is("iq", NS_CLIENT) && el.attr("id") == Some("sub-1") {
            return match el.attr("type") {
                Some("result") => Ok(()),
                _ => Err(XmppError::Iq("subscribe", stanza_error_condition(&el))),
            };
        }
        if client.answer(&el) {
            client.flush().await?;
        }
    }
    Err(XmppError::Protocol("no answer to the subscribe iq".into()))
}

/// The message figures of a bridge run: pair i's receiver expects what pair
/// i's sender sent, and nothing else.
fn figures(
    progress: &Progress,
    senders: &[PubResult],
    receivers: &mut [SubResult],
    pairs: &[u64],
    send_start: Duration,
    plan: &Plan,
    latency: &Latency,
) -> MessageFigures {
    receivers.sort_by_key(|r| r.index);
    let sent_by = |p: u64| senders.iter().find(|r| r.index == p).map_or(0, |r| r.sent);
    let mut m = MessageFigures {
        sent: senders.iter().map(|r| r.sent).sum(),
        acked: Progress::get(&progress.acked),
        ..MessageFigures::default()
    };
    let mut last_receive = send_start;
    for &i in pairs {
        let expected = sent_by(i);
        let f = match receivers.iter().find(|r| r.index == i) {
            Some(r) => {
                if let Some(l) = r.last_receive {
                    last_receive = last_receive.max(l);
                }
                let t = &r.tracker;
                SubscriberFigures {
                    index: i,
                    expected,
                    received: t.received,
                    lost: expected.saturating_sub(t.distinct_from(i as u32)),
                    duplicates: t.duplicates,
                    reordered: t.reordered(),
                    unexpected: t.unexpected,
                }
            }
            // Its task did not report back: everything meant for it is lost.
            None => SubscriberFigures {
                index: i,
                expected,
                lost: expected,
                ..SubscriberFigures::default()
            },
        };
        m.expected += f.expected;
        m.received += f.received;
        m.lost += f.lost;
        m.duplicates += f.duplicates;
        m.reordered += f.reordered;
        m.unexpected += f.unexpected;
        m.per_subscriber.push(f);
    }
    let last_send = senders
        .iter()
        .map(|r| r.last_send)
        .max()
        .unwrap_or(send_start);
    m.set_timing(send_start, last_send, last_receive, plan.payload, latency);
    m
}

/// Sets the goal of the running phase: every sender's `count`, if bounded.
fn running_goal(progress: &Progress, plan: &Plan, senders: usize) {
    progress.goal.store(
        plan.count.map_or(0, |c| c * senders as u64),
        Ordering::Relaxed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_headers_round_trip() {
        let mut h = [b'.'; 60];
        write_text_header(&mut h, u64::MAX - 5, 0xdead_beef, 1 << 40, 7);
        let s = std::str::from_utf8(&h).unwrap();
        assert_eq!(
            s,
            "fffffffffffffffa-deadbeef-0000010000000000-00000007........."
        );
        assert_eq!(
            parse_text_header(&h),
            Some((u64::MAX - 5, 0xdead_beef, 1 << 40, 7))
        );
        assert_eq!(parse_text_header(&h[..50]), None);
        let mut bad = h;
        bad[16] = b'+';
        assert_eq!(parse_text_header(&bad), None);
        let mut bad = h;
        bad[3] = b'g';
        assert_eq!(parse_text_header(&bad), None);
        let mut bad = h;
        bad[26] = b'+';
        assert_eq!(parse_text_header(&bad), None, "from_str_radix takes a sign");
        assert_eq!(parse_text_header("é".repeat(40).as_bytes()), None);
    }
}
