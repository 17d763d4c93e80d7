//! MQTT hot paths: decoding a PUBLISH, encoding it once per subscriber
//! (fan-out), and matching a topic against the subscription trie.
//!
//! Every benchmark is one operation per iteration (`Throughput::Elements(1)`),
//! so criterion's "thrpt" line is operations per second. Kept short (about
//! 3.5 s per benchmark) so the whole file runs in well under a minute:
//!
//!     cargo bench --bench mqtt
//!     cargo bench --bench mqtt -- topic_trie   # one group

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use petrel::mqtt::codec::{
    decode, encode, encode_publish, Delivery, Packet, Properties, Publish, QoS, Version,
};
use petrel::mqtt::topics::TopicTrie;

/// Three levels, as a typical device topic.
const TOPIC: &str = "site/dev42/temp";

const PAYLOADS: [(&str, usize); 2] = [("64B", 64), ("1KiB", 1024)];

fn publish(payload_len: usize, qos: QoS) -> Publish {
    Publish {
        qos,
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
        topic: TOPIC.into(),
        payload: Bytes::from(vec![0xA5; payload_len]),
        ..Default::default()
    }
}

fn frame(p: &Publish, v: Version) -> Bytes {
    let mut out = BytesMut::new();
    encode(&Packet::Publish(p.clone()), v, &mut out).expect("encodes");
    out.freeze()
}

/// Decode one QoS 0 PUBLISH from a read buffer holding exactly that frame.
/// Filling the buffer (the socket read) is setup, not measured.
fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_publish_qos0");
    g.throughput(Throughput::Elements(1));
    let v = Version::V5;
    for (label, len) in PAYLOADS {
        let wire = frame(&publish(len, QoS::AtMostOnce), v);
        let mut check = BytesMut::from(&wire[..]);
        assert!(matches!(
            decode(&mut check, Some(v), usize::MAX),
            Ok(Some(Packet::Publish(_)))
        ));
        g.bench_function(format!("V5/{label}"), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| decode(buf, Some(v), usize::MAX).expect("decodes"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Encode one received PUBLISH for one subscriber with `encode_publish`:
/// the per-recipient part of fan-out (own QoS, packet id, subscription
/// identifier), appended to the subscriber's reused output buffer.
fn bench_encode_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_publish_fanout");
    g.throughput(Throughput::Elements(1));
    let sub_ids = [7u32];
    for (label, len) in PAYLOADS {
        let p = Publish {
            properties: Properties {
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(300),
                ..Default::default()
            },
            ..publish(len, QoS::AtLeastOnce)
        };
        // v5 subscriber at QoS 1 with a Subscription Identifier.
        let v5 = Delivery {
            qos: QoS::AtLeastOnce,
            packet_id: 4242,
            retain: false,
            dup: false,
            subscription_identifiers: Some(&sub_ids),
            message_expiry: None,
            topic_alias: None,
        };
        // 3.1.1 subscriber downgraded to QoS 0 (properties dropped).
        let v311 = Delivery {
            qos: QoS::AtMostOnce,
            packet_id: 0,
            retain: false,
            dup: false,
            subscription_identifiers: None,
            message_expiry: None,
            topic_alias: None,
        };
        for (name, d, v) in [
            ("V5_qos1_subid", v5, Version::V5),
            ("V311_qos0", v311, Version::V311),
        ] {
            let mut out = BytesMut::with_capacity(2 * len + 64);
            g.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    out.clear();
                    encode_publish(black_box(&p), black_box(&d), v, &mut out).expect("encodes");
                    black_box(out.len())
                })
            });
        }
    }
    g.finish();
}

/// 10,000 exact filters `devices/{n}/telemetry` plus 100 wildcard filters
/// of four shapes (`devices/+/alarm{j}`, `devices/{j}/#`, `+/{j}/telemetry`,
/// `alerts/{j}/#`); key = subscriber id, value = subscription data.
fn trie() -> TopicTrie<u64, u64> {
    let mut t = TopicTrie::new();
    for n in 0..10_000u64 {
        t.insert(&format!("devices/{n}/telemetry"), n, n);
    }
    for j in 0..100u64 {
        let filter = match j % 4 {
            0 => format!("devices/+/alarm{j}"),
            1 => format!("devices/{j}/#"),
            2 => format!("+/{j}/telemetry"),
            _ => format!("alerts/{j}/#"),
        };
        t.insert(&filter, 100_000 + j, j);
    }
    assert_eq!(t.len(), 10_100);
    t
}

fn bench_topic_trie(c: &mut Criterion) {
    let t = trie();
    let mut g = c.benchmark_group("topic_trie_match_10k_exact_100_wild");
    g.throughput(Throughput::Elements(1));
    // (name, topic, expected number of matching subscriptions)
    let cases = [
        // One exact filter.
        ("exact_hit", "devices/4242/telemetry", 1),
        // Exact filter plus `+/42/telemetry`.
        ("exact_and_plus", "devices/42/telemetry", 2),
        // Exact filter plus `devices/41/#`.
        ("exact_and_hash", "devices/41/telemetry", 2),
        // Nothing subscribed.
        ("miss", "devices/99999/telemetry", 0),
    ];
    for (name, topic, expected) in cases {
        assert_eq!(t.matching(topic).len(), expected, "{topic}");
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                t.matches(black_box(topic), |k, v| {
                    black_box((k, v));
                    n += 1;
                });
                n
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        // Plot generation (plotters, when gnuplot is absent) would take
        // longer than the measurements; the numbers are in the output.
        .without_plots();
    targets = bench_decode, bench_encode_fanout, bench_topic_trie
}
criterion_main!(benches);
