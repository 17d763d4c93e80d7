//! A domain's subscriptions, shaped for the publish path.
//!
//! Most IoT subscriptions name one exact topic (`devices/42/cmd`), so those live
//! in a sharded concurrent map keyed by the topic: a publish finds them with one
//! hash lookup and no lock shared by the whole domain. Filters with `+` or `#`
//! live in the topic trie behind a read-write lock that a publish takes (for
//! reading) only while at least one wildcard subscription exists.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use super::broker::{Slot, SubEntry};
use super::codec::QoS;
use super::topics::TopicTrie;

/// One session a message goes to, with what its matching subscriptions grant.
pub struct Target {
    pub slot: Arc<Slot>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

#[derive(Default)]
pub struct Subscriptions {
    exact: DashMap<String, Vec<SubEntry>>,
    wild: RwLock<TopicTrie<u64, SubEntry>>,
    wild_count: AtomicUsize,
}

fn is_wild(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

impl Subscriptions {
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    /// Adds or replaces the subscription of `entry.slot` to `filter`.
    pub fn insert(&self, filter: &str, entry: SubEntry) {
        if is_wild(filter) {
            let mut w = self.wild.write().unwrap_or_else(|e| e.into_inner());
            if w.insert(filter, entry.slot.id, entry).is_none() {
                self.wild_count.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let mut list = self.exact.entry(filter.to_string()).or_default();
            match list.iter_mut().find(|e| e.slot.id == entry.slot.id) {
                Some(e) => *e = entry,
                None => list.push(entry),
            }
        }
    }

    /// Removes the subscription of session `slot_id` to `filter`, if any.
    pub fn remove(&self, filter: &str, slot_id: u64) {
        if is_wild(filter) {
            let mut w = self.wild.write().unwrap_or_else(|e| e.into_inner());
            if w.remove(filter, &slot_id).is_some() {
                self.wild_count.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            self.exact.remove_if_mut(filter, |_, list| {
                list.retain(|e| e.slot.id != slot_id);
                list.is_empty()
            });
        }
    }

    /// Every session a message on `topic` goes to: one target per session
    /// even when several of its filters match (spec 4.7.1.2: the highest QoS
    /// granted, every subscription identifier). `origin` is skipped by
    /// No Local subscriptions.
    pub fn targets(&self, topic: &str, origin: u64, qos: QoS, retain: bool) -> Vec<Target> {
        let add = |out: &mut Vec<Target>, e: &SubEntry| {
            if e.opts.no_local && e.slot.id == origin {
                return;
            }
            out.push(Target {
                slot: e.slot.clone(),
                qos: e.opts.qos.min(qos),
                retain: e.opts.retain_as_published && retain,
                sub_ids: e.id.into_iter().collect(),
            });
        };
        let mut out: Vec<Target> = Vec::new();
        if let Some(list) = self.exact.get(topic) {
            out.reserve(list.len());
            for e in list.iter() {
                add(&mut out, e);
            }
        }
        if self.wild_count.load(Ordering::Relaxed) == 0 {
            // Exact filters are unique per session and topic: no duplicates.
            return out;
        }
        let before = out.len();
        self.wild
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .matches(topic, |_, e| add(&mut out, e));
        if out.len() > before && out.len() > 1 {
            out.sort_unstable_by_key(|t| t.slot.id);
            let mut merged: Vec<Target> = Vec::with_capacity(out.len());
            for t in out {
                match merged.last_mut() {
                    Some(m) if m.slot.id == t.slot.id => {
                        m.qos = m.qos.max(t.qos);
                        m.retain |= t.retain;
                        m.sub_ids.extend(t.sub_ids);
                    }
                    _ => merged.push(t),
                }
            }
            return merged;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec::SubscriptionOptions;

    fn entry(slot: &Arc<Slot>, qos: QoS, id: Option<u32>, no_local: bool) -> SubEntry {
        SubEntry {
            slot: slot.clone(),
            opts: SubscriptionOptions {
                qos,
                no_local,
                ..Default::default()
            },
            id,
        }
    }

    fn slot(id: u64) -> Arc<Slot> {
        Arc::new(Slot::new(
            id,
            Arc::from(format!("c{id}")),
            Arc::from("localhost"),
        ))
    }

    #[test]
    fn one_target_per_session_with_the_highest_qos_and_all_ids() {
        let s = Subscriptions::new();
        let (a, b) = (slot(1), slot(2));
        s.insert("x/y", entry(&a, QoS::AtMostOnce, Some(1), false));
        s.insert("x/+", entry(&a, QoS::ExactlyOnce, Some(2), false));
        s.insert("#", entry(&b, QoS::AtLeastOnce, None, false));
        let t = s.targets("x/y", 0, QoS::ExactlyOnce, false);
        assert_eq!(t.len(), 2);
        let ta = t.iter().find(|t| t.slot.id == 1).unwrap();
        assert_eq!(ta.qos, QoS::ExactlyOnce);
        let mut ids = ta.sub_ids.clone();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            t.iter().find(|t| t.slot.id == 2).unwrap().qos,
            QoS::AtLeastOnce
        );
        // Message QoS caps the grant.
        assert!(s
            .targets("x/y", 0, QoS::AtMostOnce, false)
            .iter()
            .all(|t| t.qos == QoS::AtMostOnce));
    }

    #[test]
    fn removal_and_no_local() {
        let s = Subscriptions::new();
        let a = slot(1);
        s.insert("t", entry(&a, QoS::AtLeastOnce, None, true));
        assert!(
            s.targets("t", 1, QoS::AtLeastOnce, false).is_empty(),
            "no local"
        );
        assert_eq!(s.targets("t", 9, QoS::AtLeastOnce, false).len(), 1);
        s.insert("t/#", entry(&a, QoS::AtLeastOnce, None, false));
        s.remove("t", 1);
        s.remove("t/#", 1);
        assert!(s.targets("t", 9, QoS::AtLeastOnce, false).is_empty());
        assert!(s.exact.is_empty());
        assert_eq!(s.wild_count.load(Ordering::Relaxed), 0);
        // Replacing a subscription does not double it.
        s.insert("t", entry(&a, QoS::AtMostOnce, None, false));
        s.insert("t", entry(&a, QoS::AtLeastOnce, None, false));
        let t = s.targets("t", 9, QoS::AtLeastOnce, false);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].qos, QoS::AtLeastOnce);
    }
}
