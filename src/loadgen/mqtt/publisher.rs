//! The publisher side of `mqtt-pubsub`: a PUBLISH template patched per
//! message, the QoS 1/2 in-flight window, and the send loop.
//!
//! Publishes are written from a template encoded once with the codec; only
//! the packet id and the payload header (send time, publisher index,
//! sequence number) are patched per message, so the generator spends its CPU
//! on the broker, not on itself. The header is binary ([`Header::Binary`],
//! `mqtt-pubsub`) or text ([`Header::Text`], the bridge scenarios: the
//! payload crosses into XML, where text travels as itself).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;

use super::super::client::{packet_name, Client, ClientError};
use super::super::options::{BRIDGE_HEADER, PAYLOAD_HEADER};
use super::super::stats::{Progress, SharedLatency};
use super::Ctx;
use crate::mqtt::codec::{self, Ack, Packet, Properties, Publish, QoS};

/// Publishes written per batch (one write call) when nothing else limits.
const BATCH: u64 = 128;
/// Ack latency samples buffered before flushing to a shard.
const FLUSH_SAMPLES: usize = 1024;
/// Longest a publisher waits for its last acknowledgements.
const ACK_DRAIN: Duration = Duration::from_secs(10);

pub(crate) struct PubResult {
    pub index: u64,
    pub sent: u64,
    /// When its last message was written (since the run's start).
    pub last_send: Duration,
}

/// How a payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// Send time, publisher, sequence as little-endian numbers (20 bytes);
    /// the rest of the payload zeros.
    Binary,
    /// The same and the run's nonce in hex (see
    /// [`crate::loadgen::bridge::write_text_header`]), the rest `.`.
    Text { run: u32 },
}

/// What a payload's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// (send time ns, publisher, sequence) of this run.
    Ours(u64, u32, u64),
    /// A well-formed header of another run (a retained message or a last
    /// item left by an earlier one): not counted.
    Stale,
    Malformed,
}

impl Header {
    fn len(self) -> usize {
        match self {
            Header::Binary => PAYLOAD_HEADER,
            Header::Text { .. } => BRIDGE_HEADER,
        }
    }

    fn padding(self) -> u8 {
        match self {
            Header::Binary => 0,
            Header::Text { .. } => b'.',
        }
    }

    /// Writes the header at the start of `h` (at least [`Header::len`]).
    pub(crate) fn write(self, h: &mut [u8], ts_ns: u64, publisher: u32, seq: u64) {
        match self {
            Header::Binary => {
                h[0..8].copy_from_slice(&ts_ns.to_le_bytes());
                h[8..12].copy_from_slice(&publisher.to_le_bytes());
                h[12..20].copy_from_slice(&seq.to_le_bytes());
            }
            Header::Text { run } => {
                crate::loadgen::bridge::write_text_header(h, ts_ns, publisher, seq, run)
            }
        }
    }

    /// Reads a payload's header.
    pub(crate) fn read(self, p: &[u8]) -> Decoded {
        match self {
            Header::Binary => match payload_header(p) {
                Some((ts, publisher, seq)) => Decoded::Ours(ts, publisher, seq),
                None => Decoded::Malformed,
            },
            Header::Text { run } => match crate::loadgen::bridge::parse_text_header(p) {
                Some((ts, publisher, seq, r)) if r == run => Decoded::Ours(ts, publisher, seq),
                Some(_) => Decoded::Stale,
                None => Decoded::Malformed,
            },
        }
    }
}

/// A PUBLISH encoded once; per message only the packet id and the payload
/// header are patched.
struct Template {
    bytes: Vec<u8>,
    /// Offset of the packet id (QoS 1/2).
    pid_at: usize,
    payload_at: usize,
    header: Header,
}

impl Template {
    fn new(
        topic: String,
        qos: QoS,
        payload: usize,
        version: codec::Version,
        header: Header,
    ) -> Template {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic,
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
            properties: Properties::default(),
            payload: Bytes::from(vec![header.padding(); payload]),
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
            header,
        }
    }

    fn write(&self, out: &mut BytesMut, pid: u16, ts_ns: u64, publisher: u32, seq: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let m = &mut out[start..];
        if pid != 0 {
            m[self.pid_at..self.pid_at + 2].copy_from_slice(&pid.to_be_bytes());
        }
        let h = &mut m[self.payload_at..self.payload_at + self.header.len()];
        self.header.write(h, ts_ns, publisher, seq);
    }
}

/// Reads the payload header: (send time ns, publisher, sequence).
pub(super) fn payload_header(p: &[u8]) -> Option<(u64, u32, u64)> {
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
pub(crate) async fn publisher(
    ctx: &Ctx,
    index: u64,
    mut client: Client,
    topic: String,
    header: Header,
    stop_at: Instant,
    acks: &SharedLatency,
) -> PubResult {
    let plan = &ctx.plan;
    let qos = plan.qos;
    let template = Template::new(topic, qos, plan.payload, client.version, header);
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
        // Nothing may go now. PUBRELs still queued must reach the broker
        // before waiting for the PUBCOMPs they lead to.
        if !client.wbuf.is_empty() {
            let r = tokio::time::timeout_at(write_deadline.into(), client.flush()).await;
            if !matches!(r, Ok(Ok(()))) {
                ctx.error("publisher: write failed or stalled".into());
                seq_failed = true;
                break;
            }
        }
        // Wait for acks or for the next due message.
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
        if !client.wbuf.is_empty()
            && !matches!(
                tokio::time::timeout_at(drain_until.into(), client.flush()).await,
                Ok(Ok(()))
            )
        {
            break;
        }
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
                ctx.error(format!("publisher got {}", packet_name(&other)));
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
            let t = Template::new("lg/1-2/300".into(), qos, 200, version, Header::Binary);
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
    fn text_template_carries_a_text_header() {
        let header = Header::Text { run: 0xabc };
        let t = Template::new(
            "bench/3/data".into(),
            QoS::AtLeastOnce,
            60,
            codec::Version::V5,
            header,
        );
        let mut out = BytesMut::new();
        t.write(&mut out, 9, 0x1234, 3, 77);
        let Some(Packet::Publish(p)) =
            codec::decode(&mut out, Some(codec::Version::V5), 1 << 20).unwrap()
        else {
            panic!("not a publish")
        };
        assert_eq!(p.packet_id, 9);
        let text = std::str::from_utf8(&p.payload).unwrap();
        assert_eq!(
            text,
            "0000000000001234-00000003-000000000000004d-00000abc........."
        );
        assert_eq!(header.read(&p.payload), Decoded::Ours(0x1234, 3, 77));
        assert_eq!(Header::Text { run: 1 }.read(&p.payload), Decoded::Stale);
        assert_eq!(header.read(b"hello"), Decoded::Malformed);
        assert_eq!(Header::Binary.read(b"short"), Decoded::Malformed);
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
}
