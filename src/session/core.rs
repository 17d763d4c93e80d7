//! [`Session`]: one session as the registry holds it — the same mechanism
//! for every protocol — and its mutable [`State`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::flow::FlowLimits;
use super::{Address, Handle, Kick, SessionInfo};
use crate::auth::Grant;

/// How far the registry's coarse clock (read at each sweep, every half
/// second) may lag behind the real time of a packet.
const COARSE_LAG_MS: u64 = 500;

/// What a protocol keeps in its sessions beside the common part.
pub trait Proto: Default + Send + 'static {
    /// What the session's queue holds.
    type Item: Send + 'static;
    /// The bytes an item costs in the queue (for the high-water mark).
    fn item_bytes(item: &Self::Item) -> u32;
    /// How the admin listing names a session at `addr`.
    fn listed_name(addr: &Address) -> String;
}

/// The mutable part of a session, behind its lock. Derefs to the
/// protocol's part `P` (so `st.inflight` reads MQTT's in-flight window).
pub struct State<P: Proto> {
    queue: VecDeque<P::Item>,
    /// What the queue holds, in [`Proto::item_bytes`].
    queued_bytes: u32,
    /// When the queue last moved towards its reader (an item taken), or
    /// when it last filled up to the high-water mark (seconds on the
    /// session clock: 4 bytes in every session): the sweep cuts off a
    /// session whose queue has stayed full with nothing taken for the
    /// slow-consumer time.
    drained_at: u32,
    /// The registry no longer holds it: nothing may be queued or stored for
    /// it any more (set under the lock by [`super::Registry::remove`]).
    pub ended: bool,
    /// A connection is attached (it may be gone and the session lingers).
    pub online: bool,
    /// Something for the live connection to look at: something was queued,
    /// the session was taken over or kicked. Cleared when it looks.
    pub ready: bool,
    /// Why the live connection must leave, if it must.
    pub kick: Option<Kick>,
    /// The token the live connection logged in with.
    pub grant: Option<Grant>,
    /// When the live connection opened the session (Unix seconds).
    pub since: u32,
    /// Seconds the session outlives its connection: 0 ends it with the
    /// connection, `u32::MAX` never (MQTT Session Expiry Interval).
    pub expiry: u32,
    /// Seconds of silence allowed, times 1.5 (0: none). MQTT keep-alive.
    pub keep_alive: u16,
    /// The live connection's task. Only a connection of the current
    /// generation registers (checked under this lock), so one taken over
    /// cannot overwrite its successor's waker.
    waker: Option<Waker>,
    /// Senders waiting for room in the queue (allocated only while some do).
    #[allow(clippy::box_collection)]
    senders: Option<Box<Vec<Waker>>>,
    pub proto: P,
}

impl<P: Proto> Default for State<P> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            drained_at: 0,
            ended: false,
            online: false,
            ready: false,
            kick: None,
            grant: None,
            since: 0,
            expiry: 0,
            keep_alive: 0,
            waker: None,
            senders: None,
            proto: P::default(),
        }
    }
}

impl<P: Proto> std::ops::Deref for State<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.proto
    }
}

impl<P: Proto> std::ops::DerefMut for State<P> {
    fn deref_mut(&mut self) -> &mut P {
        &mut self.proto
    }
}

impl<P: Proto> State<P> {
    /// Appends an item at `now_ms` (the caller wakes the session:
    /// [`Session::wake_locked`]). True when the queue is now at or over the
    /// high-water mark: the sender should wait for room.
    pub fn enqueue(&mut self, item: P::Item, limits: &FlowLimits, now_ms: u64) -> bool {
        let was_full = self.queued_bytes >= limits.high_water;
        self.queued_bytes = self.queued_bytes.saturating_add(P::item_bytes(&item));
        self.queue.push_back(item);
        let full = self.queued_bytes >= limits.high_water;
        if full && !was_full {
            // The stall, if any, counts from here.
            self.drained_at = secs(now_ms);
        }
        full && self.online
    }

    /// Puts an item back at the front (it could not be sent after all).
    pub fn requeue_front(&mut self, item: P::Item) {
        self.queued_bytes = self.queued_bytes.saturating_add(P::item_bytes(&item));
        self.queue.push_front(item);
    }

    /// Takes the next item at `now_ms`.
    pub fn dequeue(&mut self, now_ms: u64) -> Option<P::Item> {
        let item = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(P::item_bytes(&item));
        self.drained_at = secs(now_ms);
        Some(item)
    }

    /// Gives the queue's memory back when it is empty (an idle session
    /// holds none). Called when a connection has drained what it could, not
    /// per item, so a busy queue is not reallocated over and over.
    pub fn release_idle_queue(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }

    pub fn front(&self) -> Option<&P::Item> {
        self.queue.front()
    }

    /// The items waiting, front first.
    pub fn queued(&self) -> impl Iterator<Item = &P::Item> {
        self.queue.iter()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queued_bytes(&self) -> u32 {
        self.queued_bytes
    }

    /// At or over the high-water mark with a live reader: whoever fills it
    /// should wait.
    pub fn is_congested(&self, limits: &FlowLimits) -> bool {
        self.online && self.kick.is_none() && self.queued_bytes >= limits.high_water
    }

    /// Takes the queued items `keep` refuses out of the queue, in order.
    pub fn take_unwanted(&mut self, mut keep: impl FnMut(&P::Item) -> bool) -> Vec<P::Item> {
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for item in self.queue.drain(..) {
            if keep(&item) {
                kept.push_back(item);
            } else {
                self.queued_bytes = self.queued_bytes.saturating_sub(P::item_bytes(&item));
                gone.push(item);
            }
        }
        self.queue = kept;
        gone
    }

    /// Takes everything queued (a session that ends hands it on).
    pub fn take_queue(&mut self) -> VecDeque<P::Item> {
        self.queued_bytes = 0;
        std::mem::take(&mut self.queue)
    }

    /// The senders to wake once the queue is under the low-water mark.
    pub fn room_made(&mut self, limits: &FlowLimits) -> Option<Box<Vec<Waker>>> {
        if self.queued_bytes < limits.low_water() {
            self.senders.take()
        } else {
            None
        }
    }
}

/// Milliseconds on the session clock as whole seconds (the clock starts
/// near 2^40 ms, so this fits a `u32` for a century).
fn secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

/// A newer connection owns the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver;

/// Wakes the senders [`State::room_made`] released.
pub fn wake_senders(senders: Option<Box<Vec<Waker>>>) {
    for w in senders.into_iter().flat_map(|v| *v) {
        w.wake();
    }
}

/// A session. See the module docs of [`crate::session`].
pub struct Session<P: Proto> {
    id: u64,
    addr: Address,
    /// Bumped when a new connection takes the session over; the old one
    /// sees the change and leaves.
    generation: AtomicU64,
    /// When the connection last sent something (ms on the session clock);
    /// while detached, when it left (expiry counts from there).
    pub last_rx: AtomicU64,
    state: Mutex<State<P>>,
}

impl<P: Proto> Session<P> {
    pub fn new(id: u64, addr: Address) -> Session<P> {
        Session {
            id,
            addr,
            generation: AtomicU64::new(0),
            last_rx: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn address(&self) -> &Address {
        &self.addr
    }

    pub fn lock(&self) -> MutexGuard<'_, State<P>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation a connection must hold to own this session.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A new connection takes the session: under the session's lock, the
    /// generation moves on (the old connection, woken, sees it is stale and
    /// leaves) and the per-connection state starts afresh. Returns the new
    /// generation and the token the previous connection held.
    pub fn hand_over(&self, since: u32) -> (u64, Option<Grant>) {
        let mut st = self.lock();
        let gen = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        st.ready = false;
        st.online = true;
        st.kick = None;
        st.keep_alive = 0;
        st.since = since;
        let old = st.grant.take();
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        (gen, old)
    }

    /// The old connection of a session that was replaced: woken to see
    /// that it is stale.
    pub fn retire(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake();
    }

    /// Asks the live connection to leave (first kick wins).
    pub fn kick(&self, why: Kick) -> bool {
        let mut st = self.lock();
        if st.online && st.kick.is_none() {
            st.kick = Some(why);
            Self::wake_locked(st);
            true
        } else {
            false
        }
    }

    /// Wakes the live connection's task: something was queued, the session
    /// was taken over, or it was kicked.
    pub fn wake(&self) {
        Self::wake_locked(self.lock());
    }

    /// [`Session::wake`] with the lock already held (released before waking).
    pub fn wake_locked(mut st: MutexGuard<'_, State<P>>) {
        st.ready = true;
        let waker = st.waker.take();
        let senders = if st.kick.is_some() || !st.online {
            // Nobody will drain it now: let waiting senders go on.
            st.senders.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        wake_senders(senders);
    }

    /// Queues an item for the session at `now_ms` and wakes it; true when
    /// the queue is now at or over the high-water mark (the sender should
    /// wait for room: [`super::wait_for_room`]).
    pub fn push(&self, item: P::Item, limits: &FlowLimits, now_ms: u64) -> bool {
        let mut st = self.lock();
        let congested = st.enqueue(item, limits, now_ms);
        Self::wake_locked(st);
        congested
    }

    /// Takes the next queued item (the session's own task) at `now_ms`,
    /// waking senders waiting for room once the queue is low enough.
    pub fn pop(&self, limits: &FlowLimits, now_ms: u64) -> Option<P::Item> {
        let mut st = self.lock();
        let item = st.dequeue(now_ms);
        let senders = st.room_made(limits);
        drop(st);
        wake_senders(senders);
        item
    }

    /// Registers the task of the connection holding `generation` for
    /// [`Session::wake`], unless there is something to look at already (or
    /// the session has moved on to a newer connection): then it returns
    /// true and registers nothing.
    pub fn register(&self, generation: u64, waker: &Waker) -> bool {
        let mut st = self.lock();
        if self.generation() != generation {
            // Taken over: `ready` and `kick` belong to the new connection.
            return true;
        }
        if st.kick.is_some() || st.ready {
            st.ready = false;
            return true;
        }
        match &st.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => st.waker = Some(waker.clone()),
        }
        false
    }

    /// Registers the task of the connection holding `generation` like
    /// [`Session::register`], but leaves the news flag for the task's main
    /// wait (a secondary wait, e.g. for a kick while writing).
    pub fn watch(&self, generation: u64, waker: &Waker) {
        let mut st = self.lock();
        if self.generation() == generation {
            match &st.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => st.waker = Some(waker.clone()),
            }
        }
    }

    /// Resolves when the session has news for the connection holding
    /// `generation` (see [`Session::register`]).
    pub fn news(&self, generation: u64) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| match self.register(generation, cx.waker()) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        })
    }

    /// Forgets the waker of the connection holding `generation` (it is gone).
    pub fn unregister(&self, generation: u64) {
        let mut st = self.lock();
        if self.generation() == generation {
            st.waker = None;
        }
    }

    /// The kick for the connection holding `generation`; `Err` if the
    /// session was taken over (the kick, if any, is its successor's).
    pub fn take_kick(&self, generation: u64) -> Result<Option<Kick>, TakenOver> {
        let mut st = self.lock();
        if self.generation() != generation {
            return Err(TakenOver);
        }
        Ok(st.kick.take())
    }
}

impl<P: Proto> Handle for Session<P> {
    fn id(&self) -> u64 {
        self.id
    }

    fn address(&self) -> &Address {
        &self.addr
    }

    fn kick(&self, why: Kick) -> bool {
        Session::kick(self, why)
    }

    fn info(&self) -> SessionInfo {
        let st = self.lock();
        let account = self.addr.account();
        SessionInfo {
            protocol: self.addr.protocol(),
            name: P::listed_name(&self.addr),
            account: account.contains('@').then(|| account.to_string()),
            since: u64::from(st.since),
            online: st.online,
            queued: st.queue_len(),
        }
    }

    fn is_online(&self) -> bool {
        self.lock().online
    }

    fn token_key(&self) -> Option<u64> {
        self.lock().grant.as_ref().map(|g| g.key())
    }

    fn check_timers(&self, now_ms: u64, limits: &FlowLimits) -> bool {
        let mut st = self.lock();
        let since_rx = now_ms.saturating_sub(self.last_rx.load(Ordering::Relaxed));
        if !st.online {
            // Detached, `last_rx` is when the last connection left.
            return st.expiry != u32::MAX && since_rx >= u64::from(st.expiry) * 1000;
        }
        if st.kick.is_some() {
            return false;
        }
        // `last_rx` is read from the registry's coarse clock, which lags
        // the real one by up to a sweep interval: never cut before one and
        // a half keep-alives have really passed (MQTT 3.1.2.10), allow it.
        let why = if st.keep_alive > 0 && since_rx > u64::from(st.keep_alive) * 1500 + COARSE_LAG_MS
        {
            Some(Kick::KeepAlive)
        } else if st.queued_bytes >= limits.high_water
            && u64::from(secs(now_ms).saturating_sub(st.drained_at))
                >= limits.slow_consumer.as_secs()
        {
            tracing::info!(session = ?self.addr, "slow consumer: its queue stayed full");
            Some(Kick::SlowConsumer)
        } else {
            None
        };
        if why.is_some() {
            st.kick = why;
            Self::wake_locked(st);
        }
        false
    }

    fn poll_room(&self, cx: &mut Context<'_>, low_water: u32) -> Poll<()> {
        let low = low_water;
        let mut st = self.lock();
        if !st.online || st.kick.is_some() || st.queued_bytes < low {
            return Poll::Ready(());
        }
        let senders = st.senders.get_or_insert_with(Default::default);
        if !senders.iter().any(|w| w.will_wake(cx.waker())) {
            senders.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
