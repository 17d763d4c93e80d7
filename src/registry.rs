//! The lock-free registry of connected sessions: who is where.
//!
//! Protocol-neutral on purpose: an entry is an identity (the account's bare JID,
//! and the protocol's own name for the session: a full JID or an MQTT client id)
//! and nothing MQTT- or XMPP-specific, so that routing can one day cross
//! protocols and nodes. The protocols keep their routing tables beside it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Xmpp,
    Mqtt,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Xmpp => "xmpp",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// A session's identity as the admin commands show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub protocol: Protocol,
    /// Full JID or MQTT client id (with its domain).
    pub name: String,
    /// The account, if the session logged in as one.
    pub account: Option<String>,
    pub since: u64,
}

/// A connected session as the registry holds it: a handle the protocol
/// already keeps (an MQTT session, an XMPP binding), asked for its identity
/// only when someone looks. So an entry costs one `Arc`, not copies of names.
pub trait Session: Send + Sync {
    fn info(&self) -> SessionInfo;
}

impl Session for SessionInfo {
    fn info(&self) -> SessionInfo {
        self.clone()
    }
}

/// Every connected session, keyed by a process-unique number.
#[derive(Default)]
pub struct Registry {
    sessions: DashMap<u64, Arc<dyn Session>>,
    next: AtomicU64,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a session; the returned key removes it.
    pub fn add(&self, session: Arc<dyn Session>) -> u64 {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        self.sessions.insert(k, session);
        k
    }

    pub fn remove(&self, key: u64) {
        self.sessions.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// All sessions, sorted by protocol then name.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.sessions.iter().map(|e| e.value().info()).collect();
        v.sort_by(|a, b| (a.protocol.name(), &a.name).cmp(&(b.protocol.name(), &b.name)));
        v
    }
}
