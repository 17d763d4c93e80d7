//! Time and randomness for the session layer and the protocol cores, passed
//! in rather than read: the server runs on [`SystemClock`] and
//! [`OsEntropy`], tests on a [`ManualClock`] they move by hand (session
//! expiry, keep-alive and message expiry tested without waiting on the wall
//! clock) and a [`CountingEntropy`] whose values they can predict.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where [`Clock::now_ms`] starts: about 35 years of milliseconds, so that
/// a time before the start (a session restored as disconnected an hour
/// ago) is a plain smaller value.
pub const BASE_MS: u64 = 1 << 40;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds on a monotonic clock that starts at [`BASE_MS`].
    fn now_ms(&self) -> u64;
    /// Seconds since the Unix epoch.
    fn unix(&self) -> u64;
    /// Microseconds since the Unix epoch (ordering stored records).
    fn unix_micros(&self) -> u64 {
        self.unix() * 1_000_000
    }
}

/// Where the protocol cores get random bytes (stream ids, generated
/// resources and client ids).
pub trait Entropy: Send + Sync + 'static {
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's random source.
#[derive(Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        use rand::TryRngCore;
        rand::rngs::OsRng
            .try_fill_bytes(buf)
            .expect("the OS random source works");
    }
}

/// Predictable bytes for tests: a counter, big-endian, repeated.
#[derive(Default)]
pub struct CountingEntropy(AtomicU64);

impl Entropy for CountingEntropy {
    fn fill(&self, buf: &mut [u8]) {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = n.to_be_bytes()[i % 8];
        }
    }
}

/// `N` bytes from `e`.
pub fn random<const N: usize>(e: &dyn Entropy) -> [u8; N] {
    let mut b = [0u8; N];
    e.fill(&mut b);
    b
}

/// The real clock.
pub struct SystemClock {
    epoch: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            epoch: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        BASE_MS + self.epoch.elapsed().as_millis() as u64
    }

    fn unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn unix_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    ms: AtomicU64,
    unix_ms: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            ms: AtomicU64::new(BASE_MS),
            unix_ms: AtomicU64::new(1_800_000_000_000),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let ms = by.as_millis() as u64;
        self.ms.fetch_add(ms, Ordering::SeqCst);
        self.unix_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    fn unix(&self) -> u64 {
        self.unix_ms.load(Ordering::SeqCst) / 1000
    }

    fn unix_micros(&self) -> u64 {
        self.unix_ms.load(Ordering::SeqCst) * 1000
    }
}
