//! The protocol-neutral session layer: every MQTT and XMPP session lives in
//! one [`Registry`], as a [`Session`] with the same mechanism underneath.
//!
//! A session is addressed by its account and the protocol's own name for it
//! ([`Address`]: a resource, a client id). It owns its outbound queue
//! (bounded in bytes, see [`flow`]), the waker of the connection task that
//! drains it, a kick with a reason ([`Kick`]) and a generation that a new
//! connection bumps when it takes the session over. It may outlive its
//! socket (`expiry`: MQTT session expiry today, XMPP stream resumption
//! next). What the protocol adds — MQTT's in-flight window and
//! subscriptions, XMPP's presence — is the session's `P`, which the
//! registry never looks at: the protocols reach their own sessions through
//! typed lookups, everything else (admin listing, token and account ends,
//! keep-alive and expiry) goes through the neutral [`Handle`].
//!
//! Ending a token ends every session that holds it, in either protocol,
//! through one path: the auth core announces a revocation at once and an
//! expiry at its deadline ([`crate::auth::AuthEvents`]); the registry kicks
//! the sessions its token index names.

pub mod clock;
mod core;
pub mod flow;
mod registry;

pub use self::core::{wake_senders, Proto, Session, State, TakenOver};
pub use clock::{random, Clock, CountingEntropy, Entropy, ManualClock, OsEntropy, SystemClock};
pub use flow::{wait_for_room, FlowLimits, Pushed};
pub use registry::{Open, Opened, Registry};

use std::sync::Arc;

/// Which protocol a session speaks (the auth core's: a token is scoped
/// by protocol too).
pub use crate::auth::Protocol;

/// Why a session is ended from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A new session took the address (XMPP: the same full JID bound again;
    /// MQTT: Clean Start with the same client id).
    Replaced,
    /// The token it logged in with was revoked or expired.
    TokenEnded(crate::auth::TokenEnd),
    /// Its account was deleted or its password changed.
    AccountChanged,
    /// It sent nothing for longer than its keep-alive allows.
    KeepAlive,
    /// It drained nothing from its queue for the slow-consumer time.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
}

/// A session's address: its account (a bare JID; a domain for an anonymous
/// MQTT client) and the protocol's name for it (resource, client id). One
/// shared string `account/name`, so a map key and the session share it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    text: Arc<str>,
    /// Where the account ends in `text`.
    split: u16,
    protocol: Protocol,
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.protocol.name(), self.text)
    }
}

impl Address {
    /// `account` must not be longer than 65535 bytes (JIDs are at most 3071).
    pub fn new(protocol: Protocol, account: &str, name: &str) -> Address {
        let split = u16::try_from(account.len()).expect("accounts are short");
        Address {
            text: format!("{account}/{name}").into(),
            split,
            protocol,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `account/name` (for XMPP, the full JID).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn shared_text(&self) -> &Arc<str> {
        &self.text
    }

    /// The account: a bare JID, or a domain.
    pub fn account(&self) -> &str {
        &self.text[..usize::from(self.split)]
    }

    /// The resource or client id.
    pub fn name(&self) -> &str {
        &self.text[usize::from(self.split) + 1..]
    }

    /// The account's domain.
    pub fn domain(&self) -> &str {
        let a = self.account();
        a.split_once('@').map_or(a, |(_, d)| d)
    }

    /// The account's localpart (empty for a domain).
    pub fn local(&self) -> &str {
        self.account().split_once('@').map_or("", |(l, _)| l)
    }
}

/// A session as the admin commands show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub protocol: Protocol,
    /// Full JID, or `client-id@domain` for MQTT.
    pub name: String,
    /// The account, if the session logged in as one.
    pub account: Option<String>,
    /// When the current connection opened it (Unix seconds).
    pub since: u64,
    /// A connection is attached.
    pub online: bool,
    /// Items waiting in its queue.
    pub queued: usize,
}

/// The registry's protocol-neutral view of a session.
pub trait Handle: Send + Sync + 'static {
    fn id(&self) -> u64;
    fn address(&self) -> &Address;
    /// Asks the live connection to leave (first kick wins); false if there
    /// is no live connection or it was kicked already.
    fn kick(&self, why: Kick) -> bool;
    fn info(&self) -> SessionInfo;
    /// A connection is attached.
    fn is_online(&self) -> bool;
    /// The key of the token it logged in with, if any.
    fn token_key(&self) -> Option<u64>;
    /// The periodic check (see [`Registry::sweep`]): kicks a live session
    /// silent for longer than its keep-alive allows, or whose queue stayed
    /// full with nothing taken for the slow-consumer time, and says whether
    /// a detached one has outlived its expiry. Decided and applied under the
    /// session's lock, so a connection taking it over meanwhile is never
    /// kicked for the old one.
    fn check_timers(&self, now_ms: u64, limits: &flow::FlowLimits) -> bool;
    /// Ready when the queue is under its low-water mark, or nobody will
    /// drain it (offline, kicked); registers `cx` to be woken otherwise.
    fn poll_room(&self, cx: &mut std::task::Context<'_>, low_water: u32) -> std::task::Poll<()>;
    fn as_any(&self) -> &dyn std::any::Any;
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

#[cfg(test)]
mod tests;
