//! `xmpp-chat`: `pairs` pairs of sessions talking one-to-one.
//!
//! Sessions 2i and 2i+1 are partners (session `c` logs in as user
//! `c mod --users`: with `--users >= 2 × --pairs` every session is its own
//! account, with fewer several sessions share one, each its own resource).
//! Every session logs in and sends initial presence; once all have, each
//! sends `<message type='chat'>` to its partner's bound full JID (or bare
//! JID with `to_bare`) — `count` messages or until the duration ends, at
//! `rate` per second or as fast as the window allows — while it receives
//! its partner's. A message is in flight from the moment it is queued until
//! its partner has received it; a sender keeps at most `inflight` in flight,
//! so an unlimited sender cannot queue without bound (and a lost message
//! holds a slot of the window for the rest of the run, which shows).
//!
//! The body starts with the send time (ns since the run's start), the
//! sender's index and its sequence number in hex, `-`-separated, padded
//! with `.` to `payload` characters; the receiver measures latency and
//! counts losses, duplicates and reorderings exactly per sender, as
//! `mqtt-pubsub` does. After the senders stop, a bounded drain: until
//! everything sent arrived, or 2 s without progress, or 10 s in all.
//!
//! Each session is one task that reads and writes at once (the stream split
//! in two halves), so a session busy writing never stops reading.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::ctx::{collect, drain_received, RunEnd};
use super::super::options::{Plan, XMPP_BODY_HEADER};
use super::super::report::{MessageFigures, Report, SubscriberFigures};
use super::super::stats::{Latency, Phase, Progress, SharedLatency, StreamTracker};
use super::super::xmpp_client::{stanza_error_condition, XmppClient};
use super::super::{LoadError, ProcessWatch, SystemWatch};
use super::{process_watches, spawn_sampler, Xmpp};
use crate::xmpp::element::write_escaped_attr;
use crate::xmpp::stream::NS_CLIENT;

/// Bytes read from the socket at a time (many small messages per read).
const CHAT_READ: usize = 16 * 1024;
/// Messages queued per turn of a session's loop at most.
const BATCH: u64 = 64;
/// Bytes a session queues before waiting for the socket to take them.
const MAX_QUEUED: usize = 256 * 1024;
/// Latency samples buffered before flushing to a shard.
const FLUSH_SAMPLES: usize = 1024;
/// Longest a write may stall before the session gives up.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Sender-side counters the receiving partner updates.
struct Windows {
    /// Distinct messages of sender `c` its partner has received.
    delivered: Vec<AtomicU64>,
    /// Wakes sender `c` when its partner received one of its messages.
    wake: Vec<Notify>,
    /// Sessions that stopped sending (or never will).
    senders_done: AtomicU64,
}

struct SessionResult {
    index: u64,
    sent: u64,
    /// When its last message was queued (since the run's start).
    last_send: Duration,
    tracker: StreamTracker,
    /// When its last message arrived (since the run's start).
    last_receive: Option<Duration>,
}

/// A `<message/>` to one partner; per message only the numbers change.
struct Template {
    head: Vec<u8>,
    /// Padding and the closing tags.
    tail: Vec<u8>,
}

impl Template {
    fn new(to: &str, payload: usize) -> Template {
        let mut head = BytesMut::new();
        head.extend_from_slice(b"<message type='chat' to='");
        write_escaped_attr(&mut head, to);
        head.extend_from_slice(b"'><body>");
        let mut tail = vec![b'.'; payload.saturating_sub(XMPP_BODY_HEADER)];
        tail.extend_from_slice(b"</body></message>");
        Template {
            head: head.to_vec(),
            tail,
        }
    }

    fn write(&self, out: &mut BytesMut, ts_ns: u64, sender: u32, seq: u64) {
        out.extend_from_slice(&self.head);
        // Writing into a BytesMut cannot fail.
        let _ = write!(out, "{ts_ns:016x}-{sender:08x}-{seq:016x}");
        out.extend_from_slice(&self.tail);
    }
}

/// Reads a body's header: (send time ns, sender, sequence).
fn parse_body(body: &str) -> Option<(u64, u32, u64)> {
    let h = body.get(..XMPP_BODY_HEADER)?;
    if &h[16..17] != "-" || &h[25..26] != "-" {
        return None;
    }
    Some((
        u64::from_str_radix(&h[0..16], 16).ok()?,
        u32::from_str_radix(&h[17..25], 16).ok()?,
        u64::from_str_radix(&h[26..42], 16).ok()?,
    ))
}

/// The bare form of a full JID.
fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(b, _)| b)
}

/// `xmpp-chat`; see the module docs.
pub async fn run_chat(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let x = Xmpp::new(plan, progress.clone()).await?;
    let ctx = x.ctx.clone();
    let n = 2 * plan.pairs;
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());
    progress.goal.store(n, Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);

    let t_login = Instant::now();
    let mut sessions = login_all(&x, n).await;
    let login_phase = t_login.elapsed();
    let jids: Vec<Option<String>> = sessions
        .iter()
        .map(|s| s.as_ref().map(|(c, _)| c.jid.clone()))
        .collect();
    let complete_pairs = (0..plan.pairs)
        .filter(|i| jids[(2 * i) as usize].is_some() && jids[(2 * i + 1) as usize].is_some())
        .count();
    if complete_pairs == 0 {
        sampler_stop.cancel();
        let _ = sampler.await;
        return Err(LoadError::Setup(format!(
            "no pair could log in ({} of {n} sessions did); errors: {:?}",
            jids.iter().flatten().count(),
            ctx.errors()
        )));
    }
    let mut connect_latency = Latency::new();
    let latency = Arc::new(SharedLatency::new(8));
    let windows = Arc::new(Windows {
        delivered: (0..n).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..n).map(|_| Notify::new()).collect(),
        senders_done: AtomicU64::new(0),
    });

    progress.set_phase(Phase::Running);
    progress.goal.store(
        plan.count.map_or(0, |c| c * 2 * complete_pairs as u64),
        Ordering::Relaxed,
    );
    let watches = process_watches(plan);
    let system = SystemWatch::start();
    let send_start = ctx.start.elapsed();
    let stop_at = Instant::now() + plan.duration;
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut running = 0u64;
    for c in 0..n {
        let Some((client, ns)) = sessions[c as usize].take() else {
            continue;
        };
        connect_latency.record(ns);
        let to = jids[(c ^ 1) as usize]
            .as_deref()
            .map(|j| if plan.to_bare { bare(j) } else { j }.to_owned());
        let (x, w, lat, stop) = (x.clone(), windows.clone(), latency.clone(), stop.clone());
        running += 1;
        tasks.spawn(async move { session(&x, &w, c, client, to, stop_at, stop, &lat).await });
    }
    // Senders stop by `stop_at` (a stalled write gives up WRITE_STALL later).
    let senders_deadline = stop_at + WRITE_STALL + Duration::from_secs(1);
    while windows.senders_done.load(Ordering::Relaxed) < running
        && Instant::now() < senders_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    drain_received(&progress, || Progress::get(&progress.sent)).await;
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();
    stop.cancel();
    let mut results = collect(&mut tasks).await;
    sampler_stop.cancel();
    let timeline = sampler.await.unwrap_or_default();
    progress.set_phase(Phase::Done);

    results.sort_by_key(|r: &SessionResult| r.index);
    let sent_by = |c: u64| results.iter().find(|r| r.index == c).map_or(0, |r| r.sent);
    let mut m = MessageFigures {
        sent: results.iter().map(|r| r.sent).sum(),
        ..MessageFigures::default()
    };
    let mut last_receive = send_start;
    for r in &results {
        let partner = r.index ^ 1;
        let t = &r.tracker;
        let expected = sent_by(partner);
        let f = SubscriberFigures {
            index: r.index,
            expected,
            received: t.received,
            lost: expected.saturating_sub(t.distinct_from(partner as u32)),
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
    // A session whose task did not report back lost what was meant for it.
    for c in (0..n).filter(|c| jids[*c as usize].is_some()) {
        if !results.iter().any(|r| r.index == c) {
            let expected = sent_by(c ^ 1);
            m.expected += expected;
            m.lost += expected;
        }
    }
    let last_send = results
        .iter()
        .map(|r| r.last_send)
        .max()
        .unwrap_or(send_start);
    m.set_timing(
        send_start,
        last_send,
        last_receive,
        plan.payload,
        &latency.merged(),
    );

    let end = RunEnd {
        processes,
        system_busy,
        timeline,
    };
    Ok(ctx.report(n, login_phase, &connect_latency, Some(m), None, end))
}

/// Logs sessions `0..n` in, at most `connect_concurrency` at once, each
/// announcing itself with initial presence. Failures are counted and
/// left as `None`.
async fn login_all(x: &Arc<Xmpp>, n: u64) -> Vec<Option<(XmppClient, u64)>> {
    let mut out: Vec<Option<(XmppClient, u64)>> = (0..n).map(|_| None).collect();
    let mut next = 0u64;
    let mut tasks = JoinSet::new();
    while next < n || !tasks.is_empty() {
        while next < n && (tasks.len() as u64) < x.ctx.plan.connect_concurrency {
            let (x, c) = (x.clone(), next);
            tasks.spawn(async move {
                let (mut client, ns) = x.login(c).await.ok()?;
                let presence = tokio::time::timeout(WRITE_STALL, client.send(b"<presence/>"));
                if !matches!(presence.await, Ok(Ok(()))) {
                    x.ctx.error("initial presence: write failed".into());
                    return None;
                }
                // The server's echo of it: from then on this resource is
                // available, so a message to the bare JID reaches it
                // instead of offline storage (no race with the senders).
                let echo = tokio::time::timeout(WRITE_STALL, async {
                    loop {
                        let el = client.next_element().await?;
                        if el.name == "presence" {
                            return Ok::<_, crate::loadgen::xmpp_client::XmppError>(());
                        }
                        client.answer(&el);
                    }
                });
                if !matches!(echo.await, Ok(Ok(()))) {
                    x.ctx
                        .error("initial presence: no echo from the server".into());
                    return None;
                }
                Some((c, client, ns))
            });
            next += 1;
        }
        if let Some(Ok(Some((c, client, ns)))) = tasks.join_next().await {
            out[c as usize] = Some((client, ns));
        }
    }
    out
}

/// One session: sends to `to` (its partner) while the window and rate
/// allow, until `stop_at` or `count`; receives its partner's messages until
/// `stop`; then ends its stream.
#[allow(clippy::too_many_arguments)]
async fn session(
    x: &Xmpp,
    w: &Windows,
    c: u64,
    client: XmppClient,
    to: Option<String>,
    stop_at: Instant,
    stop: CancellationToken,
    latency: &SharedLatency,
) -> SessionResult {
    let ctx = &x.ctx;
    let plan = &ctx.plan;
    let partner = c ^ 1;
    let (mut rd, mut wr) = client.split();
    let mut wbuf = BytesMut::new();
    let mut rbuf = BytesMut::new();
    let template = to.map(|to| Template::new(&to, plan.payload));
    let mut sending = template.is_some();
    if !sending {
        w.senders_done.fetch_add(1, Ordering::Relaxed);
    }
    let window = u64::from(plan.inflight);
    let mut tracker = StreamTracker::default();
    let mut samples = Vec::with_capacity(FLUSH_SAMPLES);
    let (mut sent, mut last_send, mut last_receive) = (0u64, ctx.start.elapsed(), None);
    let begin = Instant::now();
    let every = ctx.ping_every();
    let mut last_write = Instant::now();
    let mut write_since: Option<Instant> = None;
    let mut broken = false;
    loop {
        let now = Instant::now();
        if sending && (now >= stop_at || plan.count.is_some_and(|n| sent >= n)) {
            sending = false;
            w.senders_done.fetch_add(1, Ordering::Relaxed);
        }
        let in_flight = sent.saturating_sub(w.delivered[c as usize].load(Ordering::Relaxed));
        if let (true, Some(t)) = (sending, &template) {
            let mut allowed = BATCH.min(window.saturating_sub(in_flight));
            if let Some(rate) = plan.rate {
                let due = ((now - begin).as_secs_f64() * rate) as u64 + 1;
                allowed = allowed.min(due.saturating_sub(sent));
            }
            if let Some(n) = plan.count {
                allowed = allowed.min(n - sent);
            }
            if wbuf.len() >= MAX_QUEUED {
                allowed = 0;
            }
            for _ in 0..allowed {
                t.write(&mut wbuf, ctx.now_ns(), c as u32, sent);
                sent += 1;
            }
            if allowed > 0 {
                Progress::add(&ctx.progress.sent, allowed);
                last_send = ctx.start.elapsed();
            }
        }
        if wbuf.is_empty() && last_write.elapsed() >= every {
            wbuf.extend_from_slice(b" ");
        }
        if !wbuf.is_empty() && write_since.get_or_insert(now).elapsed() >= WRITE_STALL {
            ctx.error("chat: write stalled".into());
            broken = true;
            break;
        }
        let window_full = sending
            && sent.saturating_sub(w.delivered[c as usize].load(Ordering::Relaxed)) >= window;
        // Without a rate and with the window open, the next turn comes when
        // the write or a read progresses; otherwise one of these is due.
        let mut wake = match write_since {
            Some(t) => t + WRITE_STALL,
            None => last_write + every,
        };
        if sending {
            wake = wake.min(stop_at);
            // (Not while the window or the queue is full: the due time
            // may be past, and waking for it would spin.)
            if let (Some(rate), false) = (plan.rate, window_full || wbuf.len() >= MAX_QUEUED) {
                wake = wake.min(begin + Duration::from_secs_f64(sent as f64 / rate));
            }
        }
        rbuf.reserve(CHAT_READ);
        tokio::select! {
            biased;
            r = wr.write(&wbuf), if !wbuf.is_empty() => {
                match r {
                    Ok(n) if n > 0 => {
                        wbuf.advance(n);
                        last_write = Instant::now();
                        if wbuf.is_empty() {
                            write_since = None;
                            // TLS holds records until flushed.
                            if !matches!(tokio::time::timeout(WRITE_STALL, wr.flush()).await, Ok(Ok(()))) {
                                ctx.error("chat: flush failed".into());
                                broken = true;
                                break;
                            }
                        }
                    }
                    Ok(_) => { broken = true; break }
                    Err(e) => {
                        ctx.error(format!("chat: write: {}", e.kind()));
                        broken = true;
                        break;
                    }
                }
            }
            r = rd.io.read_buf(&mut rbuf) => {
                match r {
                    Ok(n) if n > 0 => {
                        rd.parser.feed(&rbuf);
                        rbuf.clear();
                    }
                    Ok(_) => {
                        ctx.error("chat: connection closed by the server".into());
                        broken = true;
                        break;
                    }
                    Err(e) => {
                        ctx.error(format!("chat: read: {}", e.kind()));
                        broken = true;
                        break;
                    }
                }
                let now_ns = ctx.now_ns();
                let mut got = 0;
                loop {
                    let el = match rd.next_buffered() {
                        Ok(Some(el)) => el,
                        Ok(None) => break,
                        Err(e) => {
                            ctx.error(format!("chat: {}", e.kind()));
                            broken = true;
                            break;
                        }
                    };
                    if !el.is("message", NS_CLIENT) {
                        // Presence is ignored; iqs are answered.
                        if rd.answer(&el) {
                            wbuf.extend_from_slice(&rd.wbuf);
                            rd.wbuf.clear();
                        }
                        continue;
                    }
                    if el.attr("type") == Some("error") {
                        ctx.error(format!("chat: message error {}", stanza_error_condition(&el)));
                        continue;
                    }
                    got += 1;
                    match el.child("body", NS_CLIENT).and_then(|b| parse_body(&b.text())) {
                        Some((ts, sender, seq)) => {
                            samples.push(now_ns.saturating_sub(ts));
                            let expected = u64::from(sender) == partner;
                            if tracker.note(sender, seq, expected) && expected {
                                w.delivered[partner as usize].fetch_add(1, Ordering::Relaxed);
                                w.wake[partner as usize].notify_one();
                            }
                        }
                        None => {
                            tracker.received += 1;
                            tracker.unexpected += 1;
                        }
                    }
                }
                if got > 0 {
                    Progress::add(&ctx.progress.received, got);
                    last_receive = Some(ctx.start.elapsed());
                }
                if samples.len() >= FLUSH_SAMPLES {
                    latency.flush(c as usize, &mut samples);
                }
                if broken {
                    break;
                }
            }
            _ = w.wake[c as usize].notified(), if window_full => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.cancelled() => break,
        }
    }
    latency.flush(c as usize, &mut samples);
    if sending {
        w.senders_done.fetch_add(1, Ordering::Relaxed);
    }
    if broken {
        Progress::add(&ctx.progress.dropped, 1);
    }
    let client = XmppClient::unsplit(rd, wr);
    if !broken {
        client.close().await;
    }
    SessionResult {
        index: c,
        sent,
        last_send,
        tracker,
        last_receive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_time_sender_and_sequence() {
        let t = Template::new("u1@example.org/load-1", 64);
        let mut out = BytesMut::new();
        t.write(&mut out, 0x1234_5678_9abc, 7, u64::MAX - 1);
        let s = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            s,
            format!(
                "<message type='chat' to='u1@example.org/load-1'><body>\
                 0000123456789abc-00000007-fffffffffffffffe{}</body></message>",
                ".".repeat(64 - XMPP_BODY_HEADER)
            )
        );
        let body = &s[s.find("<body>").unwrap() + 6..s.find("</body>").unwrap()];
        assert_eq!(body.len(), 64);
        assert_eq!(parse_body(body), Some((0x1234_5678_9abc, 7, u64::MAX - 1)));
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_body(&body.replace('-', "+")), None);
        assert_eq!(bare("a@b/c/d"), "a@b");
        assert_eq!(bare("a@b"), "a@b");
        let odd = Template::new("o'brien@example.org/x<y", 42);
        assert!(odd
            .head
            .ends_with(b"to='o&apos;brien@example.org/x&lt;y'><body>"));
    }
}
