//! A session as the broker keeps it: a [`Slot`] is the session layer's
//! [`Session`] with MQTT's own part, [`MqttState`] (in-flight window,
//! subscriptions, incoming QoS 2 ids). The queue, waker, kicks, generation,
//! token and expiry are the session layer's, the same as XMPP's.

use std::collections::{BTreeMap, HashSet};

use super::{InFlight, Queued};
use crate::mqtt::codec::SubscriptionOptions;
use crate::session::{Address, Proto, Session, State};

/// An MQTT session.
pub type Slot = Session<MqttState>;
/// Its mutable part (derefs to [`MqttState`]).
pub type SlotState = State<MqttState>;

/// What an MQTT session keeps beside the session layer's part.
#[derive(Default)]
pub struct MqttState {
    pub inflight: BTreeMap<u16, InFlight>,
    pub next_pid: u16,
    /// filter -> (options, subscription identifier)
    /// (A BTreeMap: 24 bytes and no allocation while empty, in every session.)
    pub subscriptions: BTreeMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Incoming QoS 2 packet ids received but not yet released (exactly once).
    pub incoming_qos2: PacketIds,
    /// The session has a record in the store (written while it was
    /// persistent), to be deleted if it stops being so.
    pub stored: bool,
}

impl Proto for MqttState {
    type Item = Queued;

    /// A queued message costs the message (payload, topic, properties:
    /// shared between subscribers, but each queue holds it alive) plus its
    /// own record.
    fn item_bytes(item: &Queued) -> u32 {
        item.msg
            .bytes
            .saturating_add(std::mem::size_of::<Queued>() as u32)
    }

    /// `localpart:client-id@domain` (the localpart empty for anonymous
    /// clients), as `connected_users` has always shown MQTT sessions.
    /// `user:clientid@domain` (the account's localpart and the client id;
    /// `clientid@domain` for an anonymous session).
    fn listed_name(addr: &Address) -> String {
        match addr.local() {
            "" => format!("{}@{}", addr.name(), addr.domain()),
            user => format!("{user}:{}@{}", addr.name(), addr.domain()),
        }
    }
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

impl MqttState {
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

/// The session's key in the store and in its MQTT domain:
/// `localpart:client-id` (a localpart cannot contain ':').
pub fn session_key(slot: &Slot) -> String {
    let a = slot.address();
    format!("{}:{}", a.local(), a.name())
}
