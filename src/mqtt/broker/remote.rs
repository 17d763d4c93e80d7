//! The broker's side of a cluster: what it hands to the other nodes
//! ([`Peers`], implemented by `crate::cluster`) and what it takes from
//! them — a message published on another node (retained in memory only:
//! the publishing node wrote the shared store), and a session another node
//! is opening (handed off: this node lets go of it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{Broker, MqttState, Routed, Routing, Slot};
use crate::mqtt::codec::Publish;
use crate::session::Protocol;

/// What the other nodes did with a forwarded message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forwarded {
    /// Sessions on the other nodes that took it.
    pub receivers: usize,
    /// Some node did not confirm in time: the publisher must not be told
    /// it was delivered.
    pub failed: bool,
}

pub type PeerFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The other nodes of a cluster, as the broker needs them.
pub trait Peers: Send + Sync {
    /// Hands a message published on this node to the others, in the order
    /// of the calls. With `wait`, resolves once every node that may hold a
    /// subscriber accepted it (queued for its sessions, stored for the
    /// persistent ones); without, once it is on its way.
    fn forward(&self, domain: &str, msg: &Arc<Routed>, wait: bool) -> PeerFuture<Forwarded>;
    /// [`Peers::forward`] from code that cannot wait (the bridge): on its
    /// way in order, or logged and counted when the link is saturated.
    fn forward_now(&self, domain: &str, msg: &Arc<Routed>);
    /// A session is about to open here at `addr` (the registry's text):
    /// the node holding it hands it off first ([`Broker::hand_off`]).
    fn claim(&self, addr: &str, clean: bool) -> PeerFuture<()>;
    /// The session opened here: whoever kept it while it moved lets go
    /// ([`Broker::let_go`]); resolves once they did (then the messages they
    /// stored meanwhile are in the store: [`Broker::load_missing`]).
    fn claimed(&self, addr: &str) -> PeerFuture<()>;
    /// For a message on `topic` published here: the node that gives each
    /// shared group with a matching filter its turn, among the nodes with
    /// members (this one when `here` has the group).
    fn assign_shared(&self, domain: &str, topic: &str, here: &[Arc<str>]) -> super::Shares;
}

impl Broker {
    /// A message published on another node, routed to the sessions here
    /// (those `only` accepts, when given: a dead node's adopted sessions)
    /// and, when retained, kept in memory.
    pub fn accept_remote(
        &self,
        domain: &str,
        publish: Publish,
        shares: super::Shares,
        only: Option<&dyn Fn(&Slot) -> bool>,
    ) -> Routing {
        let Some(d) = self.domain(domain).cloned() else {
            return Routing::default();
        };
        // Origin 0: no session here published it (No Local spares nobody).
        let msg = Arc::new(self.routed(publish, 0));
        let _ = msg.shares.set(shares);
        if msg.publish.retain && only.is_none() {
            self.retain_with(&d, &msg, false);
        }
        self.route_to(&d, &msg, only)
    }

    /// Another node opens the session at `addr`: its connection here is
    /// taken over (DISCONNECT 0x8E). A persistent session opened without
    /// Clean Start moves: it stays here, detached and still storing what
    /// is routed to it, until the new node has loaded it from the store
    /// and says [`Broker::let_go`] (or `give_up_after` passed: that node is
    /// gone); any other ends here. True if this node held it (the caller
    /// waits for a store barrier before answering).
    pub fn hand_off(self: &Arc<Self>, addr: &str, clean: bool, give_up_after: Duration) -> bool {
        let Some(slot) = self.registry().get::<MqttState>(Protocol::Mqtt, addr) else {
            return false;
        };
        let moves = !clean && slot.lock().expiry > 0;
        if moves {
            // The record as it is now, for the new node to load.
            self.save_session(&slot, false);
            slot.retire();
            self.moving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(addr.to_string(), slot.id());
            let (me, addr, id) = (self.clone(), addr.to_string(), slot.id());
            tokio::spawn(async move {
                tokio::time::sleep(give_up_after).await;
                me.let_go_of(&addr, id);
            });
        } else {
            self.end_here(&slot);
        }
        true
    }

    /// The node that took the session at `addr` has it: this node forgets
    /// the one it kept for it, without touching what the store keeps (a
    /// late word about an older move leaves a newer session alone).
    pub fn let_go(&self, addr: &str) {
        let id = self
            .moving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .copied();
        if let Some(id) = id {
            self.let_go_of(addr, id);
        }
    }

    fn let_go_of(&self, addr: &str, id: u64) {
        {
            let mut m = self.moving.lock().unwrap_or_else(|e| e.into_inner());
            if m.get(addr) != Some(&id) {
                return;
            }
            m.remove(addr);
        }
        if let Some(slot) = self.registry().get::<MqttState>(Protocol::Mqtt, addr) {
            if slot.id() == id {
                self.end_here(&slot);
            }
        }
    }

    /// Ends a session on this node only: out of the registry and the
    /// subscriptions, its records left to the node that holds it now.
    fn end_here(&self, slot: &Arc<Slot>) {
        if self.registry().remove(slot, |_| false) {
            if let Some(d) = self.domain(slot.address().domain()) {
                self.drop_subscriptions(d, slot);
            }
        }
        // Its connection, if any, sees it was taken over.
        slot.retire();
    }

    /// Every MQTT session, forgotten here without touching the store (this
    /// node was taken for dead and its sessions adopted elsewhere).
    pub fn forget_all_here(&self) {
        for s in self.registry().sessions_of::<MqttState>(Protocol::Mqtt) {
            self.end_here(&s);
        }
        self.moving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every domain's shared subscriptions with members here, as
    /// `domain NUL group NUL filter` (told to the other nodes).
    pub fn shared_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, d) in &self.domains {
            out.extend(
                d.subs
                    .shared_keys()
                    .into_iter()
                    .map(|k| format!("{name}\0{k}")),
            );
        }
        out
    }
}
