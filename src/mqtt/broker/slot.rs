//! A session as the broker keeps it: the [`Slot`] that outlives its
//! connections, its mutable [`SlotState`] (queue, in-flight window,
//! subscriptions, token, keep-alive) and how the live connection is woken
//! (messages queued, takeover, kicks) without a stored future.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{InFlight, Queued};
use crate::mqtt::codec::SubscriptionOptions;

/// The mutable part of a session.
#[derive(Default)]
pub struct SlotState {
    pub queue: VecDeque<Queued>,
    pub inflight: BTreeMap<u16, InFlight>,
    pub next_pid: u16,
    /// filter -> (options, subscription identifier)
    /// (A BTreeMap: 24 bytes and no allocation while empty, in every session.)
    pub subscriptions: BTreeMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Incoming QoS 2 packet ids received but not yet released (exactly once).
    pub incoming_qos2: PacketIds,
    /// Session Expiry Interval in seconds (0: ends with the connection).
    pub expiry: u32,
    pub online: bool,
    /// The session has a record in the store (written while it was
    /// persistent), to be deleted if it stops being so.
    pub stored: bool,
    /// QoS 0 (or any) messages dropped because the queue was full.
    pub dropped: u32,
    /// A reason code the live connection must disconnect with (keep-alive,
    /// token end, shutdown), set by the broker's sweep.
    pub kick: Option<u8>,
    /// The live connection's token, if it logged in with one: the sweep ends
    /// the session when the token is revoked or expires.
    pub grant: Option<crate::auth::Grant>,
    /// The live connection's keep-alive in seconds (0: none).
    pub keep_alive: u16,
    /// When the live connection opened the session (seconds since the epoch).
    pub since: u32,
    /// Something for the live connection to look at: a message was queued,
    /// the session was taken over or kicked. Cleared when it looks.
    pub ready: bool,
    /// The live connection's task, woken by [`Slot::wake`]. Only a
    /// connection of the current generation registers (checked under this
    /// lock), so one taken over cannot overwrite its successor's waker.
    pub waker: Option<std::task::Waker>,
}

/// A set of packet ids that is usually empty and costs one pointer until it
/// is not (most sessions never receive QoS 2).
/// (Boxed on purpose: the box is one pointer where an empty set is 48 bytes.)
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
pub struct PacketIds(Option<Box<HashSet<u16>>>);

impl PacketIds {
    pub fn contains(&self, id: &u16) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(id))
    }

    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_with(Default::default).insert(id)
    }

    pub fn remove(&mut self, id: &u16) -> bool {
        let Some(s) = &mut self.0 else {
            return false;
        };
        let removed = s.remove(id);
        if s.is_empty() {
            self.0 = None;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SlotState {
    /// The next free packet id (1..=65535) not in flight.
    pub fn alloc_pid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_pid = self.next_pid.wrapping_add(1);
            if self.next_pid == 0 {
                self.next_pid = 1;
            }
            if !self.inflight.contains_key(&self.next_pid) {
                return Some(self.next_pid);
            }
        }
        None
    }
}

/// A session: outlives its connections while its expiry allows.
pub struct Slot {
    pub id: u64,
    /// The session key `localpart:client-id`, shared with the sessions map.
    pub client_id: Arc<str>,
    pub domain: Arc<str>,
    pub state: Mutex<SlotState>,
    /// Bumped when a new connection takes the session over; the old one sees
    /// the change and leaves with DISCONNECT 0x8E.
    pub generation: AtomicU64,
    /// When the connection last sent something (ms on the broker's clock),
    /// for the keep-alive sweep.
    pub last_rx: AtomicU64,
}

impl Slot {
    pub(crate) fn new(id: u64, client_id: Arc<str>, domain: Arc<str>) -> Slot {
        Slot {
            id,
            client_id,
            domain,
            state: Mutex::new(SlotState::default()),
            generation: AtomicU64::new(0),
            last_rx: AtomicU64::new(0),
        }
    }

    /// The generation a connection must hold to own this session.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks the live connection to leave with DISCONNECT `code` (first kick wins).
    pub fn kick(&self, code: u8) {
        let mut st = self.lock();
        if st.online && st.kick.is_none() {
            st.kick = Some(code);
            Slot::wake_locked(st);
        }
    }

    /// Wakes the live connection's task: a message was queued, the session
    /// was taken over, or it was kicked. The one thing an idle connection
    /// waits on besides its socket.
    pub fn wake(&self) {
        Slot::wake_locked(self.lock());
    }

    /// [`Slot::wake`] with the lock already held (released before waking).
    pub fn wake_locked(mut st: std::sync::MutexGuard<'_, SlotState>) {
        st.ready = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Registers the task of the connection holding `generation` for
    /// [`Slot::wake`], unless there is something to look at already (or the
    /// session has moved on to a newer connection): then it returns true and
    /// registers nothing.
    pub fn register(&self, generation: u64, waker: &std::task::Waker) -> bool {
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

    /// Forgets the waker of the connection holding `generation` (it is gone).
    pub fn unregister(&self, generation: u64) {
        let mut st = self.lock();
        if self.generation() == generation {
            st.waker = None;
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry's view of a session: its key is `localpart:client-id` (the
/// localpart empty for anonymous clients).
impl crate::registry::Session for Slot {
    fn info(&self) -> crate::registry::SessionInfo {
        let local = self.client_id.split(':').next().unwrap_or("");
        crate::registry::SessionInfo {
            protocol: crate::registry::Protocol::Mqtt,
            name: format!("{}@{}", self.client_id, self.domain),
            account: (!local.is_empty()).then(|| format!("{local}@{}", self.domain)),
            since: u64::from(self.lock().since),
        }
    }
}
