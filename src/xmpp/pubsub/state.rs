//! One node of the XEP-0060 service, I/O-free: configuration, affiliations,
//! subscriptions, the order of its items (their payloads are in the store),
//! and who may do what (XEP-0060 §4.1 and §4.5).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::xmpp::pep::node::{Access, NodeConfig};

/// A JID's standing with a node (XEP-0060 §4.1); none is "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Affiliation {
    Owner,
    Publisher,
    Member,
    Outcast,
}

impl Affiliation {
    pub fn parse(s: &str) -> Option<Option<Affiliation>> {
        Some(match s {
            "owner" => Some(Affiliation::Owner),
            "publisher" => Some(Affiliation::Publisher),
            "member" => Some(Affiliation::Member),
            "outcast" => Some(Affiliation::Outcast),
            "none" => None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Publisher => "publisher",
            Affiliation::Member => "member",
            Affiliation::Outcast => "outcast",
        }
    }
}

/// Who may publish (`pubsub#publish_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishModel {
    Publishers,
    Subscribers,
    Open,
}

impl PublishModel {
    pub fn parse(s: &str) -> Option<PublishModel> {
        match s {
            "publishers" => Some(PublishModel::Publishers),
            "subscribers" => Some(PublishModel::Subscribers),
            "open" => Some(PublishModel::Open),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }
}

/// What a refusal is, as XEP-0060 words it: the stanza error and the
/// `pubsub#errors` condition.
pub type Refusal = (crate::xmpp::stanza::StanzaError, Option<&'static str>);

/// The stored part of a node (items are stored apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub config: NodeConfig,
    pub publish_model: PublishModel,
    pub affiliations: Vec<(String, Affiliation)>,
    /// (subscribed JID, subscription id)
    pub subscriptions: Vec<(String, String)>,
    pub next_seq: u64,
}

/// A node in memory.
#[derive(Debug, Clone)]
pub struct ServiceNode {
    pub config: NodeConfig,
    pub publish_model: PublishModel,
    /// bare JID → affiliation
    pub affiliations: BTreeMap<String, Affiliation>,
    /// subscribed JID (bare or full) → subscription id
    pub subscriptions: BTreeMap<String, String>,
    /// seq → item id, oldest first
    pub order: BTreeMap<u64, String>,
    /// item id → seq
    pub ids: HashMap<String, u64>,
    pub next_seq: u64,
}

fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

impl ServiceNode {
    pub fn new(config: NodeConfig, owner: &str) -> ServiceNode {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(owner.to_string(), Affiliation::Owner);
        ServiceNode {
            config,
            publish_model: PublishModel::Publishers,
            affiliations,
            subscriptions: BTreeMap::new(),
            order: BTreeMap::new(),
            ids: HashMap::new(),
            next_seq: 0,
        }
    }

    pub fn from_record(r: NodeRecord, items: impl IntoIterator<Item = (u64, String)>) -> Self {
        let mut n = ServiceNode {
            config: r.config,
            publish_model: r.publish_model,
            affiliations: r.affiliations.into_iter().collect(),
            subscriptions: r.subscriptions.into_iter().collect(),
            order: BTreeMap::new(),
            ids: HashMap::new(),
            next_seq: r.next_seq,
        };
        for (seq, id) in items {
            n.ids.insert(id.clone(), seq);
            n.order.insert(seq, id);
            n.next_seq = n.next_seq.max(seq + 1);
        }
        n
    }

    pub fn record(&self) -> NodeRecord {
        NodeRecord {
            config: self.config.clone(),
            publish_model: self.publish_model,
            affiliations: self
                .affiliations
                .iter()
                .map(|(j, a)| (j.clone(), *a))
                .collect(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(j, s)| (j.clone(), s.clone()))
                .collect(),
            next_seq: self.next_seq,
        }
    }

    pub fn affiliation(&self, jid: &str) -> Option<Affiliation> {
        self.affiliations.get(bare_of(jid)).copied()
    }

    pub fn is_owner(&self, jid: &str) -> bool {
        self.affiliation(jid) == Some(Affiliation::Owner)
    }

    /// Whether `jid` (or its bare JID) holds a subscription.
    pub fn is_subscribed(&self, jid: &str) -> bool {
        self.subscriptions.contains_key(jid) || self.subscriptions.contains_key(bare_of(jid))
    }

    /// May `jid` read items or subscribe? `in_roster`: the owner's roster
    /// lets `jid` see the owner's presence (for the presence model).
    pub fn may_read(&self, jid: &str, in_roster: bool) -> Result<(), Refusal> {
        use crate::xmpp::stanza::StanzaError as E;
        match self.affiliation(jid) {
            Some(Affiliation::Outcast) => return Err((E::Forbidden, None)),
            Some(_) => return Ok(()),
            None => {}
        }
        match self.config.access {
            Access::Open => Ok(()),
            Access::Presence if in_roster => Ok(()),
            Access::Presence => Err((E::NotAuthorized, Some("presence-subscription-required"))),
            Access::Whitelist => Err((E::NotAllowed, Some("closed-node"))),
        }
    }

    /// May `jid` publish (XEP-0060 §7.1.3.1)?
    pub fn may_publish(&self, jid: &str) -> Result<(), Refusal> {
        use crate::xmpp::stanza::StanzaError as E;
        match (self.affiliation(jid), self.publish_model) {
            (Some(Affiliation::Outcast), _) => Err((E::Forbidden, None)),
            (Some(Affiliation::Owner | Affiliation::Publisher), _) => Ok(()),
            (_, PublishModel::Open) => Ok(()),
            (_, PublishModel::Subscribers) if self.is_subscribed(jid) => Ok(()),
            _ => Err((E::Forbidden, None)),
        }
    }

    /// Takes the next sequence number for an item `id`: the seq of the item
    /// it replaces (to delete), and the seqs trimmed by `max_items`.
    pub fn add_item(&mut self, id: &str) -> (u64, Vec<u64>) {
        let mut gone = Vec::new();
        if let Some(old) = self.ids.remove(id) {
            self.order.remove(&old);
            gone.push(old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.to_string());
        self.ids.insert(id.to_string(), seq);
        gone.extend(self.trim());
        (seq, gone)
    }

    /// Drops the oldest items over `max_items`; their seqs.
    pub fn trim(&mut self) -> Vec<u64> {
        let mut gone = Vec::new();
        while self.order.len() > self.config.max_items {
            if let Some((seq, id)) = self.order.pop_first() {
                self.ids.remove(&id);
                gone.push(seq);
            }
        }
        gone
    }

    /// Removes an item; its seq.
    pub fn remove_item(&mut self, id: &str) -> Option<u64> {
        let seq = self.ids.remove(id)?;
        self.order.remove(&seq);
        Some(seq)
    }

    /// Every item's seq (a purge).
    pub fn clear(&mut self) -> Vec<u64> {
        self.ids.clear();
        std::mem::take(&mut self.order).into_keys().collect()
    }

    /// Sets an affiliation; refuses to leave the node without an owner.
    pub fn set_affiliation(&mut self, jid: &str, a: Option<Affiliation>) -> bool {
        let jid = bare_of(jid);
        let owners = self
            .affiliations
            .values()
            .filter(|x| **x == Affiliation::Owner)
            .count();
        if self.affiliations.get(jid) == Some(&Affiliation::Owner)
            && a != Some(Affiliation::Owner)
            && owners == 1
        {
            return false;
        }
        match a {
            Some(a) => {
                self.affiliations.insert(jid.to_string(), a);
                if a == Affiliation::Outcast {
                    self.subscriptions.retain(|s, _| bare_of(s) != jid);
                }
            }
            None => {
                self.affiliations.remove(jid);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::StanzaError as E;

    fn node() -> ServiceNode {
        let mut c = NodeConfig::pep_default(10);
        c.max_items = 2;
        c.access = Access::Open;
        ServiceNode::new(c, "o@h")
    }

    #[test]
    fn items_replace_by_id_and_trim_oldest() {
        let mut n = node();
        assert_eq!(n.add_item("a"), (0, vec![]));
        assert_eq!(n.add_item("b"), (1, vec![]));
        assert_eq!(n.add_item("a"), (2, vec![0]), "a replaced");
        assert_eq!(n.add_item("c"), (3, vec![1]), "b trimmed");
        assert_eq!(n.order.values().cloned().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(n.remove_item("a"), Some(2));
        assert_eq!(n.remove_item("a"), None);
        let back = ServiceNode::from_record(n.record(), [(3, "c".to_string())]);
        assert_eq!(back.next_seq, 4);
        assert_eq!(back.ids.get("c"), Some(&3));
    }

    #[test]
    fn permissions_follow_affiliation_access_and_publish_model() {
        let mut n = node();
        assert!(n.may_read("x@h/r", false).is_ok(), "open");
        n.config.access = Access::Whitelist;
        assert_eq!(
            n.may_read("x@h", false),
            Err((E::NotAllowed, Some("closed-node")))
        );
        n.set_affiliation("x@h/r", Some(Affiliation::Member));
        assert!(
            n.may_read("x@h/other", false).is_ok(),
            "members by bare JID"
        );
        n.config.access = Access::Presence;
        assert!(n.may_read("y@h", true).is_ok());
        assert_eq!(
            n.may_read("y@h", false),
            Err((E::NotAuthorized, Some("presence-subscription-required")))
        );
        assert!(n.may_publish("x@h").is_err(), "members do not publish");
        n.publish_model = PublishModel::Subscribers;
        n.subscriptions.insert("x@h".into(), "s1".into());
        assert!(n.may_publish("x@h/r").is_ok());
        n.set_affiliation("x@h", Some(Affiliation::Outcast));
        assert!(!n.is_subscribed("x@h"), "an outcast loses its subscription");
        assert_eq!(n.may_publish("x@h"), Err((E::Forbidden, None)));
        assert!(n.may_publish("o@h/any").is_ok());
        assert!(!n.set_affiliation("o@h", None), "the last owner stays");
        assert!(n.set_affiliation("p@h", Some(Affiliation::Owner)));
        assert!(n.set_affiliation("o@h", None));
    }
}
