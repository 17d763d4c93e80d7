//! Latency histograms, live counters and per-stream sequence tracking.
//!
//! Latencies are recorded in nanoseconds into hdrhistogram (3 significant
//! digits, 1 ns to 2 minutes). A histogram of that range is ~230 KB, so
//! a thousand subscribers do not each own one: they buffer samples locally
//! and flush them in batches into one of a few mutex-guarded shards
//! ([`SharedLatency`]), merged once at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use super::report::{Bucket, LatencySummary};

/// Highest latency recorded (larger values are clamped to it).
const MAX_NS: u64 = 120_000_000_000;

/// One latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds"),
        }
    }

    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, MAX_NS));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at quantile `q` (0..=1) in ns; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// Count, mean, min, p50/p90/p99/p99.9 and max in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.hist.len(),
            mean_us: self.hist.mean() / 1000.0,
            min_us: us(self.hist.min()),
            p50_us: us(self.quantile_ns(0.50)),
            p90_us: us(self.quantile_ns(0.90)),
            p99_us: us(self.quantile_ns(0.99)),
            p999_us: us(self.quantile_ns(0.999)),
            max_us: us(self.hist.max()),
        }
    }

    /// Counts in logarithmic buckets (each 1.25× the previous, from 1 µs),
    /// for the JSON report and the chart. Empty buckets are kept so the
    /// shape is honest; leading and trailing empty ones are left out.
    pub fn buckets(&self) -> Vec<Bucket> {
        if self.hist.is_empty() {
            return Vec::new();
        }
        self.hist
            .iter_log(1000, 1.25)
            .map(|v| Bucket {
                le_us: v.value_iterated_to() as f64 / 1000.0,
                count: v.count_since_last_iteration(),
            })
            .skip_while(|b| b.count == 0)
            .collect()
    }
}

/// A few mutex-guarded histograms that many tasks flush batches into.
#[derive(Debug)]
pub struct SharedLatency {
    shards: Vec<Mutex<Latency>>,
}

impl SharedLatency {
    pub fn new(shards: usize) -> SharedLatency {
        SharedLatency {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Latency::new()))
                .collect(),
        }
    }

    /// Records `samples` (ns) into shard `hint % shards` and clears them.
    pub fn flush(&self, hint: usize, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let shard = &self.shards[hint % self.shards.len()];
        let mut h = shard.lock().unwrap_or_else(|p| p.into_inner());
        for &ns in samples.iter() {
            h.record(ns);
        }
        samples.clear();
    }

    /// Everything recorded so far, merged.
    pub fn merged(&self) -> Latency {
        let mut all = Latency::new();
        for s in &self.shards {
            all.merge(&s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        all
    }
}

/// Phases of a run, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Preparing = 0,
    Connecting = 1,
    Running = 2,
    Draining = 3,
    Done = 4,
}

/// Live counters the engine bumps and the CLI polls. Monotonic except
/// `connected`, a gauge.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    pub connects_ok: AtomicU64,
    pub connects_failed: AtomicU64,
    /// Connections open right now.
    pub connected: AtomicU64,
    /// Connections the broker closed while they were meant to stay open.
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    /// QoS 1/2 publishes completed (PUBACK / PUBCOMP).
    pub acked: AtomicU64,
    pub received: AtomicU64,
    /// What the phase is heading for (connections or messages), 0 unknown.
    pub goal: AtomicU64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Preparing,
            1 => Phase::Connecting,
            2 => Phase::Running,
            3 => Phase::Draining,
            _ => Phase::Done,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Sequence numbers seen from one publisher: a growable bitset, so
/// duplicates and gaps are exact, not estimated.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    bits: Vec<u64>,
    distinct: u64,
    highest: Option<u64>,
    reordered: u64,
}

/// Largest sequence number tracked (8 MB of bits per stream); a publisher
/// cannot send more than this in 600 s on this machine.
const MAX_SEQ: u64 = 1 << 26;

impl SeqSet {
    /// Notes `seq`; returns false when it was seen before (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        let seq = seq.min(MAX_SEQ - 1);
        if self.highest.is_some_and(|h| seq < h) {
            self.reordered += 1;
        }
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let mask = 1u64 << bit;
        if self.bits[word] & mask != 0 {
            return false;
        }
        self.bits[word] |= mask;
        self.distinct += 1;
        true
    }

    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Messages that arrived after a later-numbered one.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
}

/// What one subscriber saw, per publisher.
#[derive(Debug, Default)]
pub struct StreamTracker {
    streams: HashMap<u32, SeqSet>,
    pub received: u64,
    pub duplicates: u64,
    /// Messages whose payload did not carry our header or came from a
    /// publisher this subscriber should not hear.
    pub unexpected: u64,
}

impl StreamTracker {
    /// Notes one message; `expected` says whether `publisher` is one this
    /// subscriber listens to. Returns false for a duplicate.
    pub fn note(&mut self, publisher: u32, seq: u64, expected: bool) -> bool {
        self.received += 1;
        if !expected {
            self.unexpected += 1;
            return true;
        }
        let fresh = self.streams.entry(publisher).or_default().insert(seq);
        if !fresh {
            self.duplicates += 1;
        }
        fresh
    }

    /// Distinct messages from `publisher`.
    pub fn distinct_from(&self, publisher: u32) -> u64 {
        self.streams.get(&publisher).map_or(0, SeqSet::distinct)
    }

    pub fn reordered(&self) -> u64 {
        self.streams.values().map(SeqSet::reordered).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        // 1..=1000 µs, one each.
        for us in 1..=1000u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        // 3 significant digits: within 0.1 %.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(s.p50_us, 500.0), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 900.0), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 990.0), "p99 {}", s.p99_us);
        assert!(close(s.max_us, 1000.0), "max {}", s.max_us);
        assert!(close(s.min_us, 1.0), "min {}", s.min_us);
        assert!((s.mean_us - 500.5).abs() < 1.0, "mean {}", s.mean_us);
        let total: u64 = l.buckets().iter().map(|b| b.count).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn empty_and_extreme_values() {
        let mut l = Latency::new();
        assert_eq!(l.summary(), LatencySummary::default());
        assert!(l.buckets().is_empty());
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.len(), 2);
        assert!(l.summary().max_us >= 119_000_000.0);
    }

    #[test]
    fn shards_merge_everything() {
        let shared = SharedLatency::new(4);
        for hint in 0..10 {
            let mut batch: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
            shared.flush(hint, &mut batch);
            assert!(batch.is_empty());
        }
        let m = shared.merged();
        assert_eq!(m.len(), 1000);
        assert!((m.summary().p50_us - 50.0).abs() < 0.1);
    }

    #[test]
    fn seq_set_counts_duplicates_and_reorders() {
        let mut s = SeqSet::default();
        assert!(s.insert(0));
        assert!(s.insert(1));
        assert!(s.insert(5));
        assert!(s.insert(3)); // late but new
        assert!(!s.insert(1)); // duplicate
        assert!(s.insert(10_000));
        assert_eq!(s.distinct(), 5);
        assert_eq!(s.reordered(), 2);
    }

    #[test]
    fn tracker_per_publisher() {
        let mut t = StreamTracker::default();
        for seq in 0..100 {
            assert!(t.note(1, seq, true));
            assert!(t.note(2, seq, true));
        }
        assert!(!t.note(2, 50, true));
        assert!(t.note(9, 0, false));
        assert_eq!(t.received, 202);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.unexpected, 1);
        assert_eq!(t.distinct_from(1), 100);
        assert_eq!(t.distinct_from(2), 100);
        assert_eq!(t.distinct_from(3), 0);
    }

    #[test]
    fn progress_phases() {
        let p = Progress::new();
        assert_eq!(p.phase(), Phase::Preparing);
        p.set_phase(Phase::Draining);
        assert_eq!(p.phase(), Phase::Draining);
        Progress::add(&p.sent, 3);
        assert_eq!(Progress::get(&p.sent), 3);
    }
}
