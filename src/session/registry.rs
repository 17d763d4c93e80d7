//! [`Registry`]: every session of every protocol, lock-free on the hot path
//! (dashmap), with the indexes the neutral operations need: by account (XMPP
//! bare-JID routing, account-wide kicks) and by token (ending a token ends
//! its sessions).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use compact_str::CompactString;
use dashmap::DashMap;

use super::clock::{Clock, Entropy, OsEntropy};
use super::flow::FlowLimits;
use super::{Address, Handle, Kick, Proto, Protocol, Session, SessionInfo};
use crate::auth::{Grant, TokenEnd};

/// How [`Registry::open`] treats a session already at the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Go on with it (MQTT without Clean Start; XMPP resumption next).
    Resume,
    /// Start a new one; the old one is kicked with [`Kick::Replaced`] and
    /// leaves the registry (MQTT Clean Start, XMPP binding a full JID).
    Replace,
}

/// What [`Registry::open`] did.
pub struct Opened<P: Proto> {
    pub session: Arc<Session<P>>,
    /// An existing session was resumed.
    pub resumed: bool,
    /// The session a Replace pushed out.
    pub replaced: Option<Arc<Session<P>>>,
    /// The generation the new connection owns.
    pub generation: u64,
}

type Sessions = Vec<Arc<dyn Handle>>;

/// The one session registry. See the module docs of [`crate::session`].
pub struct Registry {
    /// Per protocol: address text -> session.
    tables: [DashMap<Arc<str>, Arc<dyn Handle>>; 2],
    /// Account (bare JID or domain) -> its sessions, every protocol.
    accounts: DashMap<CompactString, Sessions>,
    /// Token key -> the sessions that logged in with it, by session id (a
    /// fleet on one token has thousands: adding and removing one is O(1)).
    tokens: DashMap<u64, HashMap<u64, Arc<dyn Handle>>>,
    next_id: AtomicU64,
    limits: FlowLimits,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    /// The clock read at the last sweep (ms): what the hot paths use, so a
    /// message costs an atomic load rather than a clock read. Good to half
    /// a second, which is finer than anything it times (keep-alive, expiry
    /// and slow consumers count in seconds).
    coarse_ms: AtomicU64,
}

fn remove_from(list: &mut Sessions, id: u64) {
    if let Some(i) = list.iter().position(|h| h.id() == id) {
        list.swap_remove(i);
    }
}

impl Registry {
    pub fn new(limits: FlowLimits, clock: Arc<dyn Clock>) -> Registry {
        Registry::with_entropy(limits, clock, Arc::new(OsEntropy))
    }

    /// A registry whose protocols draw random bytes from `entropy`.
    pub fn with_entropy(
        limits: FlowLimits,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Registry {
        let now = clock.now_ms();
        Registry {
            coarse_ms: AtomicU64::new(now),
            tables: [DashMap::new(), DashMap::new()],
            accounts: DashMap::new(),
            tokens: DashMap::new(),
            next_id: AtomicU64::new(1),
            limits,
            clock,
            entropy,
        }
    }

    /// A registry on the system clock with default limits (tests, tools).
    pub fn standalone() -> Registry {
        Registry::new(
            FlowLimits::default(),
            Arc::new(super::clock::SystemClock::default()),
        )
    }

    pub fn limits(&self) -> &FlowLimits {
        &self.limits
    }

    /// The time every session and protocol core reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The session clock as of the last sweep (ms): for the hot paths.
    pub fn now_ms(&self) -> u64 {
        self.coarse_ms.load(Ordering::Relaxed)
    }

    /// Reads the clock into [`Registry::now_ms`] (the sweep does this).
    pub fn tick(&self) -> u64 {
        let now = self.clock.now_ms();
        self.coarse_ms.store(now, Ordering::Relaxed);
        now
    }

    /// The random source the protocol cores draw from.
    pub fn entropy(&self) -> &Arc<dyn Entropy> {
        &self.entropy
    }

    fn table(&self, p: Protocol) -> &DashMap<Arc<str>, Arc<dyn Handle>> {
        &self.tables[p as usize]
    }

    /// Finds or creates the session at `addr` (under the map's entry lock,
    /// so two connections cannot both create it), marks it online and gives
    /// the new connection its generation.
    pub fn open<P: Proto>(&self, addr: Address, how: Open) -> Opened<P> {
        let table = self.table(addr.protocol());
        let key = addr.shared_text().clone();
        // Everything happens under the map's entry lock (map, then account
        // index, then the session's own lock — the order every path keeps),
        // so two connections racing for one address leave exactly one
        // session, indexed once, and a resumed one cannot be ended by the
        // sweep or by its old connection in between.
        match table.entry(key) {
            dashmap::Entry::Occupied(e) if how == Open::Resume => {
                let Ok(s) = e.get().clone().into_any().downcast::<Session<P>>() else {
                    unreachable!("one protocol's table holds one session type")
                };
                self.admit(s, true, None)
            }
            dashmap::Entry::Occupied(mut e) => {
                let new = self.make::<P>(addr);
                let old = e.insert(new.clone());
                let old = old.into_any().downcast::<Session<P>>().ok();
                self.admit(new, false, old)
            }
            dashmap::Entry::Vacant(v) => {
                let new = self.make::<P>(addr);
                let _held = v.insert(new.clone());
                self.admit(new, false, None)
            }
        }
    }

    /// The rest of [`Registry::open`], with the map's entry still locked.
    fn admit<P: Proto>(
        &self,
        session: Arc<Session<P>>,
        resumed: bool,
        replaced: Option<Arc<Session<P>>>,
    ) -> Opened<P> {
        if !resumed {
            let h: Arc<dyn Handle> = session.clone();
            self.accounts
                .entry(session.address().account().into())
                .or_default()
                .push(h);
        }
        if let Some(old) = &replaced {
            self.unindex(old.as_ref());
            {
                let mut st = old.lock();
                st.ended = true;
            }
            old.kick(Kick::Replaced);
            old.retire();
        }
        let since = u32::try_from(self.clock.unix()).unwrap_or(u32::MAX);
        let (generation, old_grant) = session.hand_over(since);
        if let Some(g) = old_grant {
            // The previous connection's token is not this one's.
            self.untrack_token(g.key(), session.id());
        }
        session.last_rx.store(self.now_ms(), Ordering::Relaxed);
        Opened {
            session,
            resumed,
            replaced,
            generation,
        }
    }

    fn make<P: Proto>(&self, addr: Address) -> Arc<Session<P>> {
        let s = Session::new(self.next_id.fetch_add(1, Ordering::Relaxed), addr);
        // Online from the start: it is in the map before its connection is
        // live, and the sweep must not take it for an expired detached one.
        s.lock().online = true;
        s.last_rx.store(self.now_ms(), Ordering::Relaxed);
        Arc::new(s)
    }

    /// The session at an address, typed.
    pub fn get<P: Proto>(&self, protocol: Protocol, text: &str) -> Option<Arc<Session<P>>> {
        let h = self.table(protocol).get(text)?.value().clone();
        h.into_any().downcast::<Session<P>>().ok()
    }

    /// Runs `f` over an account's sessions (every protocol) without copying
    /// the list.
    pub fn with_account<R>(&self, account: &str, f: impl FnOnce(&[Arc<dyn Handle>]) -> R) -> R {
        match self.accounts.get(account) {
            Some(v) => f(&v),
            None => f(&[]),
        }
    }

    /// Whether the registry still holds this very session.
    pub fn holds(&self, s: &dyn Handle) -> bool {
        let addr = s.address();
        self.table(addr.protocol())
            .get(addr.text())
            .is_some_and(|h| h.id() == s.id())
    }

    /// Removes `s` — only if the registry still holds this very session
    /// (a replaced one must not remove its successor) and `keep` does not
    /// say otherwise (checked under the map's lock, which a resume holds
    /// while marking the session online). True if it was removed.
    pub fn remove<P: Proto>(
        &self,
        s: &Arc<Session<P>>,
        keep: impl FnOnce(&super::State<P>) -> bool,
    ) -> bool {
        let addr = s.address();
        let removed = self
            .table(addr.protocol())
            .remove_if(addr.text(), |_, h| {
                if h.id() != s.id() {
                    return false;
                }
                let mut st = s.lock();
                if keep(&st) {
                    return false;
                }
                // Under the lock: no push or store write lands after this.
                st.ended = true;
                true
            })
            .is_some();
        if removed {
            self.unindex(s.as_ref());
        }
        removed
    }

    fn unindex(&self, s: &dyn Handle) {
        if let dashmap::Entry::Occupied(mut e) = self.accounts.entry(s.address().account().into()) {
            remove_from(e.get_mut(), s.id());
            if e.get().is_empty() {
                e.remove();
            }
        }
        if let Some(key) = s.token_key() {
            self.untrack_token(key, s.id());
        }
    }

    fn untrack_token(&self, key: u64, id: u64) {
        if let dashmap::Entry::Occupied(mut e) = self.tokens.entry(key) {
            e.get_mut().remove(&id);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// The session's live connection logged in with `grant` (replacing the
    /// token it had, if any): the session now ends when the token does. A
    /// token that ended meanwhile ends it at once.
    pub fn set_grant<P: Proto>(&self, s: &Arc<Session<P>>, grant: Option<Grant>) {
        let new_key = grant.as_ref().map(|g| g.key());
        let old = std::mem::replace(&mut s.lock().grant, grant.clone());
        let old_key = old.map(|g| g.key());
        if old_key != new_key {
            if let Some(k) = old_key {
                self.untrack_token(k, s.id());
            }
            if let Some(k) = new_key {
                let h: Arc<dyn Handle> = s.clone();
                self.tokens.entry(k).or_default().insert(s.id(), h);
            }
        }
        // Looked at only once the session is in the index: a token ending
        // meanwhile either finds it there or is seen here.
        if let Some(end) = grant.and_then(|g| g.end()) {
            s.kick(Kick::TokenEnded(end));
        }
    }

    /// Kicks every session that logged in with the token `key`.
    pub fn token_ended(&self, key: u64, end: TokenEnd) {
        let Some((_, holders)) = self.tokens.remove(&key) else {
            return;
        };
        for h in holders.into_values() {
            // Only if that is still its token (a re-authenticated session
            // moved on to another one).
            if h.token_key() == Some(key) {
                h.kick(Kick::TokenEnded(end));
            }
        }
    }

    /// Kicks every live session of an account (deleted, or its password
    /// changed), in every protocol.
    pub fn account_changed(&self, account: &str) {
        let sessions: Sessions = self.with_account(account, |s| s.to_vec());
        for h in sessions {
            h.kick(Kick::AccountChanged);
        }
    }

    /// Kicks every live session of `protocol` (all protocols if `None`).
    pub fn kick_all(&self, protocol: Option<Protocol>, why: Kick) {
        for (i, t) in self.tables.iter().enumerate() {
            if protocol.is_some_and(|p| p as usize != i) {
                continue;
            }
            for h in t.iter() {
                h.value().kick(why);
            }
        }
    }

    /// One pass over every session: live ones silent for longer than their
    /// keep-alive allows are kicked ([`Kick::KeepAlive`]); detached ones
    /// past their expiry are returned for their protocol to end. The server
    /// runs it twice a second, so no idle connection needs a timer of its
    /// own.
    pub fn sweep(&self) -> Vec<Arc<dyn Handle>> {
        let now = self.tick();
        let mut expired = Vec::new();
        for t in &self.tables {
            for h in t.iter() {
                if h.value().check_timers(now, &self.limits) {
                    expired.push(h.value().clone());
                }
            }
        }
        expired
    }

    /// Every session (attached or lingering), sorted by protocol then name.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .tables
            .iter()
            .flat_map(|t| t.iter().map(|h| h.value().info()).collect::<Vec<_>>())
            .collect();
        v.sort_by(|a, b| (a.protocol.name(), &a.name).cmp(&(b.protocol.name(), &b.name)));
        v
    }

    /// Every session of `protocol`, typed.
    pub fn sessions_of<P: Proto>(&self, protocol: Protocol) -> Vec<Arc<Session<P>>> {
        self.table(protocol)
            .iter()
            .filter_map(|h| h.value().clone().into_any().downcast::<Session<P>>().ok())
            .collect()
    }

    /// Sessions of `protocol` in the registry (attached or lingering).
    pub fn len(&self, protocol: Protocol) -> usize {
        self.table(protocol).len()
    }

    /// Sessions of `protocol` with a live connection, by domain.
    pub fn online_by_domain(&self, protocol: Protocol) -> HashMap<String, usize> {
        let mut out: HashMap<String, usize> = HashMap::new();
        for h in self.table(protocol).iter() {
            if h.value().is_online() {
                *out.entry(h.value().address().domain().to_string())
                    .or_default() += 1;
            }
        }
        out
    }

    /// Sessions with a live connection, every protocol.
    pub fn online(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.iter().filter(|h| h.value().is_online()).count())
            .sum()
    }
}

impl crate::auth::AuthEvents for Registry {
    fn token_ended(&self, key: u64, end: TokenEnd) {
        Registry::token_ended(self, key, end);
    }

    fn account_changed(&self, account: &crate::auth::BareJid) {
        Registry::account_changed(self, &account.to_string());
    }
}
