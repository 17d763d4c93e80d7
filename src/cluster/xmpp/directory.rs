//! The other nodes' bound XMPP resources, as this node last heard of them:
//! I/O-free, fed by `super`'s listener, read by the router on every
//! routing decision (one map lookup by bare JID).
//!
//! A full JID is held by one node at a time. A node's `bound` (or the
//! state it sends a node that starts) replaces whatever was known of that
//! full JID, since binding it elsewhere takes it over; its presence changes
//! and its `unbound` apply only while the entry is still that node's, so a
//! late word from the node that lost the resource cannot undo the takeover.

use std::sync::Arc;

use dashmap::DashMap;

use crate::xmpp::element::Element;
use crate::xmpp::router::RemoteResource;

/// The bare JID of a full JID (normalized string forms).
fn bare_of(full: &str) -> &str {
    full.split_once('/').map_or(full, |(b, _)| b)
}

#[derive(Default)]
pub struct Directory {
    accounts: DashMap<String, Vec<RemoteResource>>,
}

impl Directory {
    /// `node` holds `full`, with this presence.
    pub fn bound(&self, node: &str, full: &str, priority: Option<i8>, last: Option<Arc<Element>>) {
        let mut list = self.accounts.entry(bare_of(full).to_string()).or_default();
        list.retain(|r| r.full != full);
        list.push(RemoteResource {
            full: full.to_string(),
            node: node.into(),
            priority,
            last,
        });
    }

    /// `full`'s presence changed on `node`.
    pub fn presence(
        &self,
        node: &str,
        full: &str,
        priority: Option<i8>,
        last: Option<Arc<Element>>,
    ) {
        if let Some(mut list) = self.accounts.get_mut(bare_of(full)) {
            if let Some(r) = list.iter_mut().find(|r| r.full == full && &*r.node == node) {
                r.priority = priority;
                r.last = last;
            }
        }
    }

    /// `node` no longer holds `full`.
    pub fn unbound(&self, node: &str, full: &str) {
        if let dashmap::Entry::Occupied(mut e) = self.accounts.entry(bare_of(full).to_string()) {
            e.get_mut()
                .retain(|r| !(r.full == full && &*r.node == node));
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// Forgets every resource of `node`; returns them.
    pub fn drop_node(&self, node: &str) -> Vec<RemoteResource> {
        let mut gone = Vec::new();
        self.accounts.retain(|_, list| {
            list.retain(|r| {
                let keep = &*r.node != node;
                if !keep {
                    gone.push(r.clone());
                }
                keep
            });
            !list.is_empty()
        });
        gone
    }

    /// An account's resources on other nodes.
    pub fn resources(&self, bare: &str) -> Vec<RemoteResource> {
        self.accounts
            .get(bare)
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// The resource at a full JID.
    pub fn resource(&self, full: &str) -> Option<RemoteResource> {
        let list = self.accounts.get(bare_of(full))?;
        list.iter().find(|r| r.full == full).cloned()
    }

    /// Resources known, on every other node.
    pub fn len(&self) -> usize {
        self.accounts.iter().map(|l| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(from: &str) -> Option<Arc<Element>> {
        Some(Arc::new(
            Element::new("presence", crate::xmpp::stream::NS_CLIENT).with_attr("from", from),
        ))
    }

    #[test]
    fn bind_presence_unbind() {
        let d = Directory::default();
        d.bound("b", "alice@x/phone", None, None);
        d.bound("c", "alice@x/desk", Some(1), presence("alice@x/desk"));
        assert_eq!(d.resources("alice@x").len(), 2);
        assert!(!d.resource("alice@x/phone").unwrap().is_available());
        d.presence("b", "alice@x/phone", Some(5), presence("alice@x/phone"));
        let r = d.resource("alice@x/phone").unwrap();
        assert_eq!((r.priority, &*r.node), (Some(5), "b"));
        assert!(r.last.is_some());
        d.unbound("b", "alice@x/phone");
        assert!(d.resource("alice@x/phone").is_none());
        d.unbound("c", "alice@x/desk");
        assert!(d.is_empty() && d.resources("alice@x").is_empty());
    }

    #[test]
    fn a_takeover_is_not_undone_by_the_node_that_lost_the_resource() {
        let d = Directory::default();
        d.bound("b", "alice@x/phone", Some(0), presence("alice@x/phone"));
        // Bound on C: C has it now.
        d.bound("c", "alice@x/phone", None, None);
        assert_eq!(d.len(), 1);
        // B's session goes away late: its words change nothing.
        d.presence("b", "alice@x/phone", None, None);
        d.unbound("b", "alice@x/phone");
        let r = d.resource("alice@x/phone").unwrap();
        assert_eq!(&*r.node, "c");
        assert!(!r.is_available());
    }

    #[test]
    fn node_gone_forgets_every_resource_of_that_node() {
        let d = Directory::default();
        d.bound("b", "alice@x/phone", Some(0), presence("alice@x/phone"));
        d.bound("b", "bob@x/pc", None, None);
        d.bound("c", "alice@x/desk", Some(0), presence("alice@x/desk"));
        let mut gone: Vec<String> = d.drop_node("b").into_iter().map(|r| r.full).collect();
        gone.sort();
        assert_eq!(gone, ["alice@x/phone", "bob@x/pc"]);
        assert!(d.resources("bob@x").is_empty());
        let left = d.resources("alice@x");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].full, "alice@x/desk");
        assert!(d.drop_node("b").is_empty(), "nothing twice");
    }
}
