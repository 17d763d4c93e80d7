//! A domain's subscriptions, shaped for the publish path.
//!
//! Most IoT subscriptions name one exact topic (`devices/42/cmd`), so those live
//! in a sharded concurrent map keyed by the topic: a publish finds them with one
//! hash lookup and no lock shared by the whole domain. Filters with `+` or `#`
//! live in the topic trie behind a read-write lock that a publish takes (for
//! reading) only while at least one wildcard subscription exists.
//!
//! Shared subscriptions (`$share/{group}/{filter}`, spec 4.8.2) live in a
//! third index, a trie keyed by (group, session), taken only while one
//! exists: each message goes to one member of each matching group, the next
//! connected one in turn (a disconnected persistent member gets it only when
//! no member is connected).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use super::broker::{Slot, SubEntry};
use super::codec::QoS;
use super::topics::{self, TopicTrie};

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
    shared: RwLock<TopicTrie<(Arc<str>, u64), SubEntry>>,
    shared_count: AtomicUsize,
    /// Members per shared subscription (`group NUL filter`), for the other
    /// nodes of a cluster.
    shared_keys: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Turns of the shared groups' round robin.
    turn: AtomicUsize,
}

fn is_wild(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

impl Subscriptions {
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    /// Adds or replaces the subscription of `entry.slot` to `filter` (a
    /// `$share/…` filter joins its group).
    pub fn insert(&self, filter: &str, entry: SubEntry) {
        if let Some((group, inner)) = topics::split_shared(filter) {
            let key = (Arc::<str>::from(group), entry.slot.id());
            let mut s = self.shared.write().unwrap_or_else(|e| e.into_inner());
            if s.insert(inner, key, entry).is_none() {
                self.shared_count.fetch_add(1, Ordering::Relaxed);
                *self
                    .shared_keys
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(format!("{group}\0{inner}"))
                    .or_default() += 1;
            }
        } else if is_wild(filter) {
            let mut w = self.wild.write().unwrap_or_else(|e| e.into_inner());
            if w.insert(filter, entry.slot.id(), entry).is_none() {
                self.wild_count.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let mut list = self.exact.entry(filter.to_string()).or_default();
            match list.iter_mut().find(|e| e.slot.id() == entry.slot.id()) {
                Some(e) => *e = entry,
                None => list.push(entry),
            }
        }
    }

    /// Removes the subscription of session `slot_id` to `filter`, if any.
    pub fn remove(&self, filter: &str, slot_id: u64) {
        if let Some((group, inner)) = topics::split_shared(filter) {
            let key = (Arc::<str>::from(group), slot_id);
            let mut s = self.shared.write().unwrap_or_else(|e| e.into_inner());
            if s.remove(inner, &key).is_some() {
                self.shared_count.fetch_sub(1, Ordering::Relaxed);
                let mut keys = self.shared_keys.lock().unwrap_or_else(|e| e.into_inner());
                let k = format!("{group}\0{inner}");
                if let Some(n) = keys.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        keys.remove(&k);
                    }
                }
            }
        } else if is_wild(filter) {
            let mut w = self.wild.write().unwrap_or_else(|e| e.into_inner());
            if w.remove(filter, &slot_id).is_some() {
                self.wild_count.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            self.exact.remove_if_mut(filter, |_, list| {
                list.retain(|e| e.slot.id() != slot_id);
                list.is_empty()
            });
        }
    }

    /// Every session a message on `topic` goes to: one target per session
    /// even when several of its filters match (spec 4.7.1.2: the highest QoS
    /// granted, every subscription identifier). `origin` is skipped by
    /// No Local subscriptions.
    pub fn targets(&self, topic: &str, origin: u64, qos: QoS, retain: bool) -> Vec<Target> {
        self.targets_for(topic, origin, qos, retain, &|_| true)
    }

    /// [`Subscriptions::targets`] among the sessions `readable` accepts
    /// (the access rules): a shared group's turn goes to a member that may
    /// read the topic.
    pub fn targets_for(
        &self,
        topic: &str,
        origin: u64,
        qos: QoS,
        retain: bool,
        readable: &dyn Fn(&Slot) -> bool,
    ) -> Vec<Target> {
        self.targets_in(topic, origin, qos, retain, readable, &|_| true)
    }

    /// The shared subscriptions (`group NUL filter`) with members here.
    pub fn shared_keys(&self) -> Vec<String> {
        if self.shared_count.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let keys = self.shared_keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.keys().cloned().collect()
    }

    /// The shared groups with a member here whose filter matches `topic`.
    pub fn shared_groups(&self, topic: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        if self.shared_count.load(Ordering::Relaxed) == 0 {
            return out;
        }
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .matches(topic, |(g, _), _| {
                if !out.contains(g) {
                    out.push(g.clone());
                }
            });
        out
    }

    /// [`Subscriptions::targets_for`], a shared group's turn taken here
    /// only for the groups `group_here` accepts (a cluster: another node
    /// may have the turn).
    pub fn targets_in(
        &self,
        topic: &str,
        origin: u64,
        qos: QoS,
        retain: bool,
        readable: &dyn Fn(&Slot) -> bool,
        group_here: &dyn Fn(&str) -> bool,
    ) -> Vec<Target> {
        let add = |out: &mut Vec<Target>, e: &SubEntry| {
            if (e.opts.no_local && e.slot.id() == origin) || !readable(&e.slot) {
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
        let shared = self.shared_count.load(Ordering::Relaxed) > 0;
        if self.wild_count.load(Ordering::Relaxed) == 0 && !shared {
            // Exact filters are unique per session and topic: no duplicates.
            return out;
        }
        let before = out.len();
        if self.wild_count.load(Ordering::Relaxed) > 0 {
            self.wild
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .matches(topic, |_, e| add(&mut out, e));
        }
        if shared {
            for e in self.shared_pick(topic, readable, group_here) {
                add(&mut out, &e);
            }
        }
        if out.len() > before && out.len() > 1 {
            out.sort_unstable_by_key(|t| t.slot.id());
            let mut merged: Vec<Target> = Vec::with_capacity(out.len());
            for t in out {
                match merged.last_mut() {
                    Some(m) if m.slot.id() == t.slot.id() => {
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

impl Subscriptions {
    /// One member of each shared group with a filter matching `topic`: the
    /// next connected one in turn, or any when none is connected.
    fn shared_pick(
        &self,
        topic: &str,
        readable: &dyn Fn(&Slot) -> bool,
        group_here: &dyn Fn(&str) -> bool,
    ) -> Vec<SubEntry> {
        let mut members: Vec<(Arc<str>, SubEntry)> = Vec::new();
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .matches(topic, |(g, _), e| {
                if readable(&e.slot) && group_here(g) {
                    members.push((g.clone(), e.clone()));
                }
            });
        if members.is_empty() {
            return Vec::new();
        }
        // Same order every time, so that the turn walks the members.
        members.sort_by(|(g1, e1), (g2, e2)| (g1, e1.slot.id()).cmp(&(g2, e2.slot.id())));
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut picked = Vec::new();
        for group in members.chunk_by(|(g1, _), (g2, _)| g1 == g2) {
            let online: Vec<&SubEntry> = group
                .iter()
                .map(|(_, e)| e)
                .filter(|e| e.slot.lock().online)
                .collect();
            let e = if online.is_empty() {
                &group[turn % group.len()].1
            } else {
                online[turn % online.len()]
            };
            picked.push(e.clone());
        }
        picked
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
            crate::session::Address::new(
                crate::session::Protocol::Mqtt,
                "localhost",
                &format!("c{id}"),
            ),
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
        let ta = t.iter().find(|t| t.slot.id() == 1).unwrap();
        assert_eq!(ta.qos, QoS::ExactlyOnce);
        let mut ids = ta.sub_ids.clone();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            t.iter().find(|t| t.slot.id() == 2).unwrap().qos,
            QoS::AtLeastOnce
        );
        // Message QoS caps the grant.
        assert!(s
            .targets("x/y", 0, QoS::AtMostOnce, false)
            .iter()
            .all(|t| t.qos == QoS::AtMostOnce));
    }

    #[test]
    fn a_shared_group_takes_turns_and_others_get_everything() {
        let s = Subscriptions::new();
        let (a, b, c, d) = (slot(1), slot(2), slot(3), slot(4));
        for x in [&a, &b, &c, &d] {
            x.lock().online = true;
        }
        s.insert(
            "$share/workers/jobs/+",
            entry(&a, QoS::AtLeastOnce, None, false),
        );
        s.insert(
            "$share/workers/jobs/#",
            entry(&b, QoS::AtLeastOnce, None, false),
        );
        s.insert(
            "$share/audit/jobs/1",
            entry(&c, QoS::AtLeastOnce, None, false),
        );
        s.insert("jobs/1", entry(&d, QoS::AtLeastOnce, None, false));
        let mut got = std::collections::HashMap::<u64, usize>::new();
        for _ in 0..10 {
            let t = s.targets("jobs/1", 0, QoS::AtLeastOnce, false);
            // One of the workers, the auditor, the plain subscriber.
            assert_eq!(
                t.len(),
                3,
                "{:?}",
                t.iter().map(|t| t.slot.id()).collect::<Vec<_>>()
            );
            for t in t {
                *got.entry(t.slot.id()).or_default() += 1;
            }
        }
        assert_eq!(got[&1] + got[&2], 10);
        assert_eq!((got[&1], got[&2]), (5, 5), "turns alternate");
        assert_eq!((got[&3], got[&4]), (10, 10));
        // A disconnected member is skipped while another is connected.
        a.lock().online = false;
        for _ in 0..4 {
            let t = s.targets("jobs/1", 0, QoS::AtLeastOnce, false);
            assert!(t.iter().any(|t| t.slot.id() == 2) && !t.iter().any(|t| t.slot.id() == 1));
        }
        let mut keys = s.shared_keys();
        keys.sort();
        assert_eq!(
            keys,
            ["audit\0jobs/1", "workers\0jobs/#", "workers\0jobs/+"]
        );
        let mut groups = s.shared_groups("jobs/1");
        groups.sort();
        assert_eq!(groups, [Arc::from("audit"), Arc::from("workers")]);
        // Another node has the turn of the workers: only the auditor here.
        let t = s.targets_in("jobs/1", 0, QoS::AtLeastOnce, false, &|_| true, &|g| {
            g != "workers"
        });
        let mut ids: Vec<u64> = t.iter().map(|t| t.slot.id()).collect();
        ids.sort();
        assert_eq!(ids, [3, 4]);
        // Leaving the group.
        s.remove("$share/workers/jobs/#", 2);
        s.remove("$share/workers/jobs/+", 1);
        let t = s.targets("jobs/1", 0, QoS::AtLeastOnce, false);
        assert!(!t.iter().any(|t| t.slot.id() <= 2));
        assert_eq!(s.shared_count.load(Ordering::Relaxed), 1);
        assert_eq!(s.shared_keys(), ["audit\0jobs/1"]);
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
