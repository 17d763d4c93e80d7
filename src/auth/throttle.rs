//! The brake on guessing: every secret check (passwords, client secrets,
//! tokens, SCRAM proofs) of every protocol goes through here, keyed by the
//! peer's address and by the account (or OAuth client) it names.
//!
//! Each key counts its failures within `login_failure_window`. Past
//! `login_failures_allowed` it is blocked for a back-off that starts at one
//! second and doubles with each further failure, up to
//! `login_backoff_max`; a blocked key is refused before any hashing. A
//! success clears the account's count (not the address's: a valid login
//! from one address must not launder guesses at other accounts). The maps
//! are bounded: past `MAX_KEYS` entries the stale ones are dropped, and
//! if none is stale new keys are not tracked (the existing blocks stay).

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;

/// Keys tracked at most per map (each costs well under 100 bytes).
pub const MAX_KEYS: usize = 100_000;

/// The throttle's settings (config keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed before back-off starts (`login_failures_allowed`).
    pub failures_allowed: u32,
    /// Seconds after which old failures are forgotten (`login_failure_window`).
    pub window: u64,
    /// Longest back-off, seconds (`login_backoff_max`).
    pub backoff_max: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            failures_allowed: 5,
            window: 300,
            backoff_max: 300,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    failures: u32,
    /// When the counting window began (Unix seconds).
    since: u64,
    /// Refused until then (Unix seconds).
    blocked_until: u64,
}

/// See the module docs.
pub struct Throttle {
    config: ThrottleConfig,
    by_peer: DashMap<IpAddr, Bucket>,
    by_name: DashMap<String, Bucket>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            by_peer: DashMap::new(),
            by_name: DashMap::new(),
        }
    }

    /// `Err(retry after)` if either key is blocked at `now`.
    pub fn check(
        &self,
        peer: Option<IpAddr>,
        name: Option<&str>,
        now: u64,
    ) -> Result<(), Duration> {
        let blocked = |b: &Bucket| (b.blocked_until > now).then(|| b.blocked_until - now);
        let p = peer.and_then(|p| self.by_peer.get(&p).and_then(|b| blocked(&b)));
        let n = name.and_then(|n| self.by_name.get(n).and_then(|b| blocked(&b)));
        match p.max(n) {
            Some(s) => Err(Duration::from_secs(s)),
            None => Ok(()),
        }
    }

    /// A failed check: counted for both keys, logged (never the secret).
    pub fn failed(&self, peer: Option<IpAddr>, name: Option<&str>, now: u64) {
        tracing::info!(peer = ?peer, account = name.unwrap_or("-"), "login failed");
        if let Some(p) = peer {
            Self::count(&self.by_peer, p, now, &self.config);
        }
        if let Some(n) = name {
            Self::count(&self.by_name, n.to_string(), now, &self.config);
        }
    }

    /// A successful check: the account's count starts over.
    pub fn succeeded(&self, name: Option<&str>) {
        if let Some(n) = name {
            self.by_name.remove(n);
        }
    }

    fn count<K: std::hash::Hash + Eq>(
        map: &DashMap<K, Bucket>,
        key: K,
        now: u64,
        c: &ThrottleConfig,
    ) {
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            map.retain(|_, b| b.blocked_until > now || now < b.since + c.window);
            if map.len() >= MAX_KEYS {
                return;
            }
        }
        let mut b = map.entry(key).or_insert(Bucket {
            failures: 0,
            since: now,
            blocked_until: 0,
        });
        if now >= b.since + c.window && b.blocked_until <= now {
            b.failures = 0;
            b.since = now;
        }
        b.failures = b.failures.saturating_add(1);
        if b.failures > c.failures_allowed {
            let over = (b.failures - c.failures_allowed - 1).min(20);
            let backoff = (1u64 << over).min(c.backoff_max);
            b.blocked_until = now + backoff;
        }
    }
}

/// A counting semaphore for blocking threads: bounds how many password
/// hashes (PBKDF2) run at once, so guessing cannot take every blocking
/// thread (`password_hash_concurrency`).
pub struct HashGate {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl HashGate {
    pub fn new(permits: usize) -> HashGate {
        HashGate {
            free: std::sync::Mutex::new(permits.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Runs `f` once a permit is free (blocking).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            while *free == 0 {
                free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
            }
            *free -= 1;
        }
        struct Release<'a>(&'a HashGate);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                self.0.freed.notify_one();
            }
        }
        let _release = Release(self);
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn backs_off_after_the_allowed_failures_and_forgets_later() {
        let t = Throttle::new(ThrottleConfig {
            failures_allowed: 3,
            window: 60,
            backoff_max: 8,
        });
        let (p, n) = (ip("192.0.2.1"), Some("alice@x"));
        for _ in 0..3 {
            assert!(t.check(p, n, 100).is_ok());
            t.failed(p, n, 100);
        }
        assert!(t.check(p, n, 100).is_ok(), "three allowed");
        t.failed(p, n, 100);
        assert_eq!(t.check(p, n, 100), Err(Duration::from_secs(1)));
        assert!(t.check(p, n, 101).is_ok());
        t.failed(p, n, 101);
        assert_eq!(t.check(p, n, 101), Err(Duration::from_secs(2)));
        for _ in 0..10 {
            t.failed(p, n, 103);
        }
        assert_eq!(t.check(p, n, 103), Err(Duration::from_secs(8)), "capped");
        // Either key blocks: another address for the account, another
        // account from the address.
        assert!(t.check(ip("192.0.2.2"), n, 104).is_err());
        assert!(t.check(p, Some("bob@x"), 104).is_err());
        assert!(t.check(ip("192.0.2.2"), Some("bob@x"), 104).is_ok());
        // A success clears the account, not the address.
        t.succeeded(n);
        assert!(t.check(ip("192.0.2.2"), n, 104).is_ok());
        assert!(t.check(p, None, 104).is_err());
        // After the back-off and the window, it starts over.
        assert!(t.check(p, n, 200).is_ok());
        t.failed(p, n, 200);
        assert!(t.check(p, n, 200).is_ok());
    }

    #[test]
    fn the_hash_gate_bounds_concurrency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let gate = Arc::new(HashGate::new(2));
        let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (gate, now, max) = (gate.clone(), now.clone(), max.clone());
                std::thread::spawn(move || {
                    gate.run(|| {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 2);
    }
}
