//! The brake on guessing: every secret check (passwords, client secrets,
//! tokens, SCRAM proofs) of every protocol goes through here, keyed by the
//! peer's address (IPv6 by its /64) and by the account (or OAuth client)
//! it names.
//!
//! A check begins with [`Throttle::begin`], which gives a [`Ticket`], and
//! ends when the ticket is settled (success or failure) or dropped (the
//! check was abandoned: a closed connection, a store failure). Each key
//! counts its failures within `login_failure_window` plus its checks in
//! progress: a key may have at most `login_failures_allowed` failures and
//! checks in flight together, so many connections guessing at once get no
//! more tries than one connection guessing in turn. Past that, a failure
//! blocks the key for a back-off that starts at one second and doubles with
//! each further failure, up to `login_backoff_max`; a blocked key is
//! refused before any hashing. A success clears the account's count (not
//! the address's: a valid login from one address must not launder guesses
//! at other accounts).
//!
//! Memory is bounded: names are kept as 64-bit keyed hashes, and past
//! `MAX_KEYS` entries per map the stale ones go, then the unblocked ones,
//! then arbitrary ones (never one with a check in flight).

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

/// Keys tracked at most per map (each about 50 bytes).
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
    /// Checks begun and not settled.
    pending: u32,
    /// When the counting window began (Unix seconds).
    since: u64,
    /// Refused until then (Unix seconds).
    blocked_until: u64,
}

impl Bucket {
    fn new(now: u64) -> Bucket {
        Bucket {
            failures: 0,
            pending: 0,
            since: now,
            blocked_until: 0,
        }
    }

    /// Forgets failures older than the window (unless still blocked).
    fn roll(&mut self, now: u64, c: &ThrottleConfig) {
        if now >= self.since.saturating_add(c.window) && self.blocked_until <= now {
            self.failures = 0;
            self.since = now;
        }
    }

    /// `Err(retry after)` if a check may not begin now.
    fn admits(&self, now: u64, c: &ThrottleConfig) -> Result<(), Duration> {
        if self.blocked_until > now {
            return Err(Duration::from_secs(self.blocked_until - now));
        }
        if self.pending > 0 && self.failures.saturating_add(self.pending) > c.failures_allowed {
            // As many checks in flight as tries remain (one at a time once
            // the allowance is used up and the back-off has lapsed).
            return Err(Duration::from_secs(1));
        }
        Ok(())
    }

    fn idle(&self, now: u64) -> bool {
        self.failures == 0 && self.pending == 0 && self.blocked_until <= now
    }
}

/// The two keys of a check.
#[derive(Debug, Clone, Copy)]
struct Keys {
    peer: Option<IpAddr>,
    name: Option<u64>,
}

/// See the module docs.
pub struct Throttle {
    config: ThrottleConfig,
    by_peer: DashMap<IpAddr, Bucket>,
    by_name: DashMap<u64, Bucket>,
    names: std::collections::hash_map::RandomState,
}

/// One address's key: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64
/// (one host holds a whole /64).
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Throttle {
        Throttle {
            config,
            by_peer: DashMap::new(),
            by_name: DashMap::new(),
            names: Default::default(),
        }
    }

    fn keys(&self, peer: Option<IpAddr>, name: Option<&str>) -> Keys {
        Keys {
            peer: peer.map(peer_key),
            name: name.map(|n| self.names.hash_one(n)),
        }
    }

    /// `Err(retry after)` if a check by `peer` for `name` would be refused
    /// at `now` (blocked, or as many checks in flight as allowed).
    pub fn check(
        &self,
        peer: Option<IpAddr>,
        name: Option<&str>,
        now: u64,
    ) -> Result<(), Duration> {
        let k = self.keys(peer, name);
        let c = &self.config;
        let of = |b: &Bucket| {
            let mut b = *b;
            b.roll(now, c);
            b.admits(now, c).err()
        };
        let p = k
            .peer
            .and_then(|p| self.by_peer.get(&p).and_then(|b| of(&b)));
        let n = k
            .name
            .and_then(|n| self.by_name.get(&n).and_then(|b| of(&b)));
        match p.max(n) {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Begins a check: refused (`Err(retry after)`) while either key is
    /// blocked or has its allowance in flight; otherwise the check counts
    /// as in flight until its ticket is settled or dropped.
    pub fn begin(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        name: Option<&str>,
        now: u64,
    ) -> Result<Ticket, Duration> {
        let k = self.keys(peer, name);
        if let Some(p) = k.peer {
            Self::reserve(&self.by_peer, p, now, &self.config)?;
        }
        if let Some(n) = k.name {
            if let Err(wait) = Self::reserve(&self.by_name, n, now, &self.config) {
                if let Some(p) = k.peer {
                    Self::release(&self.by_peer, p, now);
                }
                return Err(wait);
            }
        }
        Ok(Ticket {
            throttle: self.clone(),
            keys: k,
            at: now,
            peer,
            account: name.map(Box::from),
            open: true,
        })
    }

    /// A failed check outside a ticket (tests; checks that cannot be held
    /// open): counted for both keys.
    pub fn failed(&self, peer: Option<IpAddr>, name: Option<&str>, now: u64) {
        tracing::info!(peer = ?peer, account = name.unwrap_or("-"), "login failed");
        self.count_failure(self.keys(peer, name), now);
    }

    /// A successful check outside a ticket: the account's count starts over.
    pub fn succeeded(&self, name: Option<&str>) {
        if let Some(n) = self.keys(None, name).name {
            Self::clear(&self.by_name, n);
        }
    }

    fn count_failure(&self, k: Keys, now: u64) {
        if let Some(p) = k.peer {
            Self::fail(&self.by_peer, p, now, &self.config);
        }
        if let Some(n) = k.name {
            Self::fail(&self.by_name, n, now, &self.config);
        }
    }

    /// Makes room for a new key when the map is full: the stale entries
    /// go, then the unblocked ones, then arbitrary ones — never one with
    /// a check in flight. Runs only at the bound, and leaves the map at
    /// most nine tenths full, so its cost is spread over many new keys.
    fn make_room<K: std::hash::Hash + Eq + Clone>(
        map: &DashMap<K, Bucket>,
        now: u64,
        c: &ThrottleConfig,
    ) {
        if map.len() < MAX_KEYS {
            return;
        }
        map.retain(|_, b| {
            b.pending > 0 || b.blocked_until > now || now < b.since.saturating_add(c.window)
        });
        if map.len() >= MAX_KEYS * 9 / 10 {
            map.retain(|_, b| b.pending > 0 || b.blocked_until > now);
        }
        let excess = map.len().saturating_sub(MAX_KEYS * 9 / 10);
        if excess > 0 {
            let victims: Vec<K> = map
                .iter()
                .filter(|e| e.pending == 0)
                .take(excess)
                .map(|e| e.key().clone())
                .collect();
            for k in victims {
                map.remove(&k);
            }
        }
    }

    fn reserve<K: std::hash::Hash + Eq + Clone>(
        map: &DashMap<K, Bucket>,
        key: K,
        now: u64,
        c: &ThrottleConfig,
    ) -> Result<(), Duration> {
        if !map.contains_key(&key) {
            Self::make_room(map, now, c);
        }
        let mut b = map.entry(key).or_insert_with(|| Bucket::new(now));
        b.roll(now, c);
        b.admits(now, c)?;
        b.pending += 1;
        Ok(())
    }

    fn release<K: std::hash::Hash + Eq + Clone>(map: &DashMap<K, Bucket>, key: K, now: u64) {
        if let Some(mut b) = map.get_mut(&key) {
            b.pending = b.pending.saturating_sub(1);
        }
        map.remove_if(&key, |_, b| b.idle(now));
    }

    fn fail<K: std::hash::Hash + Eq + Clone>(
        map: &DashMap<K, Bucket>,
        key: K,
        now: u64,
        c: &ThrottleConfig,
    ) {
        if !map.contains_key(&key) {
            Self::make_room(map, now, c);
        }
        let mut b = map.entry(key).or_insert_with(|| Bucket::new(now));
        b.roll(now, c);
        b.failures = b.failures.saturating_add(1);
        if b.failures > c.failures_allowed {
            let over = (b.failures - c.failures_allowed - 1).min(20);
            let backoff = (1u64 << over).min(c.backoff_max.max(1));
            b.blocked_until = now.saturating_add(backoff);
        }
    }

    fn clear<K: std::hash::Hash + Eq + Clone>(map: &DashMap<K, Bucket>, key: K) {
        if let Some(mut b) = map.get_mut(&key) {
            b.failures = 0;
            b.blocked_until = 0;
        }
        map.remove_if(&key, |_, b| b.pending == 0);
    }
}

/// A secret check in flight (see the module docs): settle it with
/// [`Ticket::succeeded`] or [`Ticket::failed`]; dropped unsettled, the
/// check counts neither way.
pub struct Ticket {
    throttle: Arc<Throttle>,
    keys: Keys,
    /// When the check began (Unix seconds): the time it is counted at.
    at: u64,
    /// For the log line of a failure.
    peer: Option<IpAddr>,
    account: Option<Box<str>>,
    open: bool,
}

impl Ticket {
    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            let now = self.at;
            if let Some(p) = self.keys.peer {
                Throttle::release(&self.throttle.by_peer, p, now);
            }
            if let Some(n) = self.keys.name {
                Throttle::release(&self.throttle.by_name, n, now);
            }
        }
    }

    /// The secret was right: the account's count starts over.
    pub fn succeeded(mut self) {
        self.close();
        if let Some(n) = self.keys.name {
            Throttle::clear(&self.throttle.by_name, n);
        }
    }

    /// The secret was wrong: counted for both keys, and logged with the
    /// peer and the account (never the secret).
    pub fn failed(mut self) {
        tracing::info!(peer = ?self.peer, account = self.account.as_deref().unwrap_or("-"), "login failed");
        self.close();
        self.throttle.count_failure(self.keys, self.at);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("peer", &self.peer)
            .field("account", &self.account)
            .finish_non_exhaustive()
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
    use std::sync::Arc;

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

    /// Checks in flight count: many connections guessing at once get no
    /// more tries than one guessing in turn; an abandoned check (a ticket
    /// dropped) counts neither way, a success frees its place.
    #[test]
    fn checks_in_flight_use_up_the_allowance() {
        let t = Arc::new(Throttle::new(ThrottleConfig {
            failures_allowed: 3,
            window: 60,
            backoff_max: 8,
        }));
        let (p, n) = (ip("192.0.2.1"), Some("alice@x"));
        let held: Vec<Ticket> = (0..4).map(|_| t.begin(p, n, 100).unwrap()).collect();
        assert_eq!(
            t.begin(p, n, 100).err(),
            Some(Duration::from_secs(1)),
            "four in flight: the allowance (three failures, one more try)"
        );
        // Another address, another account: not affected.
        assert!(t.begin(ip("192.0.2.2"), Some("bob@x"), 100).is_ok());
        drop(held);
        assert!(t.check(p, n, 100).is_ok(), "abandoned checks count nothing");
        let mut held: Vec<Ticket> = (0..4).map(|_| t.begin(p, n, 100).unwrap()).collect();
        held.pop().unwrap().succeeded();
        assert!(
            t.begin(p, n, 100).is_ok(),
            "a settled check frees its place"
        );
        for tk in held {
            tk.failed();
        }
        // Three failures so far: one more try, then the back-off.
        t.begin(p, n, 100).unwrap().failed();
        assert_eq!(t.check(p, n, 100), Err(Duration::from_secs(1)));
    }

    /// IPv6 addresses count by their /64; IPv4-mapped ones as IPv4.
    #[test]
    fn ipv6_counts_by_its_64() {
        let t = Throttle::new(ThrottleConfig {
            failures_allowed: 0,
            window: 60,
            backoff_max: 8,
        });
        t.failed(ip("2001:db8:1:2::1"), None, 100);
        assert!(t.check(ip("2001:db8:1:2:ffff::9"), None, 100).is_err());
        assert!(t.check(ip("2001:db8:1:3::1"), None, 100).is_ok());
        t.failed(ip("::ffff:192.0.2.7"), None, 100);
        assert!(t.check(ip("192.0.2.7"), None, 100).is_err());
    }

    /// At the bound, room is made (stale, then unblocked, then arbitrary
    /// entries go) instead of new keys going untracked; keys are hashes,
    /// so a long name costs no more than a short one.
    #[test]
    fn the_maps_stay_bounded_and_keep_tracking() {
        let t = Throttle::new(ThrottleConfig {
            failures_allowed: 0,
            window: 60,
            backoff_max: 300,
        });
        let long = "x".repeat(10_000);
        for i in 0..(MAX_KEYS + 5_000) {
            t.failed(None, Some(&format!("{i}{long}")), 100);
        }
        assert!(t.by_name.len() <= MAX_KEYS, "{}", t.by_name.len());
        t.failed(None, Some("newcomer"), 100);
        assert!(
            t.check(None, Some("newcomer"), 100).is_err(),
            "still tracked"
        );
    }

    /// Window and back-off arithmetic at the extremes does not overflow.
    #[test]
    fn extreme_settings_do_not_overflow() {
        let t = Throttle::new(ThrottleConfig {
            failures_allowed: 0,
            window: u64::MAX,
            backoff_max: u64::MAX,
        });
        for _ in 0..100 {
            t.failed(ip("192.0.2.1"), Some("a"), u64::MAX - 1);
        }
        assert!(t.check(ip("192.0.2.1"), Some("a"), u64::MAX - 1).is_err());
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
        // Two at most (fewer if the machine is too busy to overlap them).
        assert!((1..=2).contains(&max.load(Ordering::SeqCst)));
    }
}
