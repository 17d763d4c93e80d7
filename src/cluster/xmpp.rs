//! XMPP across the nodes of a cluster: a stanza for a resource bound on
//! another node goes to that node, presence reaches contacts on every node,
//! and binding a full JID held elsewhere takes it over.
//!
//! Every node keeps a [`Directory`] of the other nodes' bound resources
//! (full JID, node, priority while available, last available presence) and
//! is the router's [`Remote`]. Over NATS:
//!
//! - `petrel.xmpp.res` (everyone): a node's resource was bound (or
//!   replaced), changed its presence, or was unbound — JSON [`Note`]s; and
//!   `hello` from a node that starts: the others forget what they knew of it
//!   (it restarted) and each sends it the state of all its resources.
//! - `petrel.node.<node>.xmpp`: a stanza for a session on `<node>`: the
//!   target full JID, a NUL, the serialized stanza. The receiving node
//!   queues it as a local delivery (`ImServer::deliver_from_node`).
//! - `petrel.node.<node>.xmpp.takeover` (request/reply): end the session
//!   of this full JID with a conflict; answered once it left the routing
//!   table. The binding node waits at most [`TAKEOVER_WAIT`] for it.
//!
//! Order: everything a node sends about XMPP (notes and stanzas) goes out
//! through one queue and one task, so the others see it in the order it
//! happened; a node reads notes before stanzas that arrived after them
//! (one task, `biased` towards notes), so a stanza that answers a
//! presence never finds the presence unknown. The receiving task never
//! waits on a session's queue: one slow receiver must not stall the
//! node's whole inbound traffic (nor overflow the NATS client's buffer,
//! which would drop); it is cut off by the slow-consumer sweep like any
//! other. Core NATS is at most once: what a node misses while its
//! connection is down it does not learn (logged by the connection).
//!
//! Archiving is the sending node's: it writes both archives once, as for a
//! local delivery (`ImServer::message`); the receiving node only delivers.
//! Not yet across nodes: message carbons, roster and block-list pushes,
//! PEP notifications, MUC occupants (they reach this node's sessions only).

mod directory;

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use directory::Directory;

use super::Cluster;
use crate::xmpp::router::{Change, Remote, RemoteResource};
use crate::xmpp::stream::NS_CLIENT;
use crate::xmpp::ImServer;

const RESOURCES: &str = "petrel.xmpp.res";

/// How long binding a full JID waits for the node holding it to let go.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

fn stanzas_of(node: &str) -> String {
    format!("petrel.node.{node}.xmpp")
}

fn takeovers_of(node: &str) -> String {
    format!("petrel.node.{node}.xmpp.takeover")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Hello,
    Bound,
    Presence,
    Unbound,
}

/// One word on `petrel.xmpp.res`.
#[derive(Serialize, Deserialize)]
struct Note {
    node: String,
    kind: Kind,
    #[serde(default)]
    full: String,
    #[serde(default)]
    priority: Option<i8>,
    /// The last available presence, serialized.
    #[serde(default)]
    last: Option<String>,
}

/// What this node last told of one of its resources.
struct Local {
    id: u64,
    priority: Option<i8>,
    last: Option<String>,
}

/// This node's XMPP part of the cluster. See the module docs.
pub struct XmppCluster {
    client: async_nats::Client,
    node: String,
    dir: Directory,
    /// This node's resources (full JID → session and presence), for a node
    /// that starts. Changed and announced under the entry's lock, so the
    /// announcements of one full JID keep their order.
    local: DashMap<String, Local>,
    out: mpsc::UnboundedSender<(String, Bytes)>,
    im: Weak<ImServer>,
    rt: tokio::runtime::Handle,
}

impl Cluster {
    /// Joins this node's IM service to the other nodes: subscribed before
    /// it returns (and before any session binds here), then says hello.
    pub async fn start_xmpp(
        &self,
        im: &Arc<ImServer>,
        shutdown: CancellationToken,
    ) -> Result<Arc<XmppCluster>, String> {
        let err = |e: &dyn std::fmt::Display| format!("NATS subscribe: {e}");
        let notes = self
            .client
            .subscribe(RESOURCES)
            .await
            .map_err(|e| err(&e))?;
        let stanzas = self
            .client
            .subscribe(stanzas_of(&self.node))
            .await
            .map_err(|e| err(&e))?;
        let takeovers = self
            .client
            .subscribe(takeovers_of(&self.node))
            .await
            .map_err(|e| err(&e))?;
        self.client
            .flush()
            .await
            .map_err(|e| format!("NATS flush: {e}"))?;
        let (out, rx) = mpsc::unbounded_channel();
        let x = Arc::new(XmppCluster {
            client: self.client.clone(),
            node: self.node.clone(),
            dir: Directory::default(),
            local: DashMap::new(),
            out,
            im: Arc::downgrade(im),
            rt: tokio::runtime::Handle::current(),
        });
        // Not stopped at shutdown: sessions closing then still say so.
        tokio::spawn(send_in_order(self.client.clone(), rx));
        tokio::spawn(x.clone().listen(notes, stanzas, shutdown.clone()));
        tokio::spawn(x.clone().answer_takeovers(takeovers, shutdown));
        im.router.set_remote(x.clone());
        let _ = self.xmpp.set(x.clone());
        x.note(Kind::Hello, "", None, None);
        Ok(x)
    }
}

/// Publishes what the node queued, in order.
async fn send_in_order(
    client: async_nats::Client,
    mut rx: mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    while let Some((subject, body)) = rx.recv().await {
        if let Err(e) = client.publish(subject, body).await {
            tracing::error!(error = %e, "cluster: could not tell the other nodes (XMPP)");
        }
    }
}

impl XmppCluster {
    /// The other nodes' resources as known here.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// A node left the cluster (or restarted): its resources leave the
    /// directory, and this node's sessions that saw one available hear it
    /// is unavailable.
    pub fn node_gone(&self, node: &str) {
        let gone: Vec<String> = self
            .dir
            .drop_node(node)
            .into_iter()
            .filter(|r| r.is_available())
            .map(|r| r.full)
            .collect();
        if gone.is_empty() {
            return;
        }
        tracing::info!(
            node,
            resources = gone.len(),
            "cluster: a node's XMPP resources are gone"
        );
        let Some(im) = self.im.upgrade() else { return };
        self.rt.spawn(async move {
            for full in gone {
                im.gone_elsewhere(&full).await;
            }
        });
    }

    fn note(&self, kind: Kind, full: &str, priority: Option<i8>, last: Option<String>) {
        let note = Note {
            node: self.node.clone(),
            kind,
            full: full.to_string(),
            priority,
            last,
        };
        let body = serde_json::to_vec(&note).expect("plain data");
        let _ = self.out.send((RESOURCES.to_string(), body.into()));
    }

    /// Tells a node that starts where this node's resources are.
    fn tell_all(&self) {
        for e in self.local.iter() {
            self.note(Kind::Bound, e.key(), e.priority, e.last.clone());
        }
    }

    async fn listen(
        self: Arc<Self>,
        mut notes: async_nats::Subscriber,
        mut stanzas: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            let (is_note, msg) = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                m = notes.next() => (true, m),
                m = stanzas.next() => (false, m),
            };
            let Some(msg) = msg else {
                tracing::error!("cluster: an XMPP subscription ended");
                return;
            };
            if is_note {
                self.on_note(&msg.payload);
            } else {
                self.on_stanza(msg.payload);
            }
        }
    }

    fn on_note(&self, payload: &[u8]) {
        let Ok(note) = serde_json::from_slice::<Note>(payload) else {
            tracing::warn!("cluster: unreadable XMPP note");
            return;
        };
        if note.node == self.node {
            return;
        }
        let last = || {
            note.last
                .as_deref()
                .and_then(|l| crate::xmpp::stream::read_back(l.as_bytes()))
                .map(Arc::new)
        };
        match note.kind {
            Kind::Hello => {
                self.node_gone(&note.node);
                self.tell_all();
            }
            Kind::Bound => self
                .dir
                .bound(&note.node, &note.full, note.priority, last()),
            Kind::Presence => self
                .dir
                .presence(&note.node, &note.full, note.priority, last()),
            Kind::Unbound => self.dir.unbound(&note.node, &note.full),
        }
    }

    fn on_stanza(&self, payload: Bytes) {
        let Some(nul) = payload.iter().position(|b| *b == 0) else {
            tracing::warn!("cluster: unreadable XMPP stanza");
            return;
        };
        let Ok(to) = std::str::from_utf8(&payload[..nul]) else {
            return;
        };
        let stanza = payload.slice(nul + 1..);
        let Some(im) = self.im.upgrade() else { return };
        if let Err(stanza) = im.deliver_from_node(to, stanza) {
            // Gone meanwhile: store reads may follow, off this task.
            let to = to.to_string();
            self.rt
                .spawn(async move { im.undeliverable_from_node(&to, stanza).await });
        }
    }

    async fn answer_takeovers(
        self: Arc<Self>,
        mut sub: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = sub.next() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let Ok(full) = std::str::from_utf8(&msg.payload) else {
                continue;
            };
            if let Some(im) = self.im.upgrade() {
                if im.taken_over_elsewhere(full) {
                    tracing::info!(jid = full, "cluster: resource taken over by another node");
                }
            }
            if let Some(reply) = msg.reply {
                if let Err(e) = self.client.publish(reply, Bytes::from_static(b"ok")).await {
                    tracing::warn!(error = %e, "cluster: could not confirm a takeover");
                }
            }
        }
    }
}

impl Remote for XmppCluster {
    fn resources(&self, bare: &str) -> Vec<RemoteResource> {
        self.dir.resources(bare)
    }

    fn resource(&self, full: &str) -> Option<RemoteResource> {
        self.dir.resource(full)
    }

    fn send(&self, to: &RemoteResource, stanza: Bytes) {
        let mut body = Vec::with_capacity(to.full.len() + 1 + stanza.len());
        body.extend_from_slice(to.full.as_bytes());
        body.push(0);
        body.extend_from_slice(&stanza);
        let _ = self.out.send((stanzas_of(&to.node), body.into()));
    }

    fn local_changed(&self, full: &str, id: u64, change: Change) {
        match change {
            Change::Bound => {
                let mut e = self.local.entry(full.to_string()).or_insert(Local {
                    id,
                    priority: None,
                    last: None,
                });
                // A later session of the same JID was told first.
                if e.id > id {
                    return;
                }
                *e = Local {
                    id,
                    priority: None,
                    last: None,
                };
                self.note(Kind::Bound, full, None, None);
            }
            Change::Presence { priority, last } => {
                let Some(mut e) = self.local.get_mut(full) else {
                    return;
                };
                if e.id != id {
                    return;
                }
                let last = last.and_then(|l| String::from_utf8(l.to_bytes(NS_CLIENT)).ok());
                e.priority = priority;
                e.last = last.clone();
                self.note(Kind::Presence, full, priority, last);
            }
            Change::Unbound => {
                if let dashmap::Entry::Occupied(e) = self.local.entry(full.to_string()) {
                    if e.get().id == id {
                        self.note(Kind::Unbound, full, None, None);
                        e.remove();
                    }
                }
            }
        }
    }

    fn take_over<'a>(
        &'a self,
        to: &'a RemoteResource,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let ask = self
                .client
                .request(takeovers_of(&to.node), Bytes::from(to.full.clone()));
            match tokio::time::timeout(TAKEOVER_WAIT, ask).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, node = %to.node, "cluster: takeover not confirmed")
                }
                Err(_) => {
                    tracing::warn!(node = %to.node, "cluster: takeover not confirmed in time")
                }
            }
            // Bound here now, whatever that node says later.
            self.dir.unbound(&to.node, &to.full);
        })
    }
}
