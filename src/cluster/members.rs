//! Who is in the cluster, without a coordinator: every node says so on
//! `petrel.hb` every `heartbeat_ms` (its name and an epoch drawn at start,
//! so a restarted node is told from its previous life), and a node not
//! heard from for `dead_after_ms` is dead. A dead node's persistent MQTT
//! sessions are adopted by one survivor — the live node whose name sorts
//! first, a choice every node makes alike from what it sees — which says
//! so on `petrel.cluster.adopted`.
//!
//! I/O-free: the caller feeds heartbeats and the time, and acts on what
//! [`Members::heard`] and [`Members::sweep`] return.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What this node knows of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Alive,
    /// Not heard from in time; its sessions not yet adopted.
    Dead,
    /// Dead, and its sessions adopted by the named node.
    Adopted(String),
}

#[derive(Debug)]
struct Member {
    epoch: u64,
    last: Instant,
    state: State,
}

/// What a heartbeat told.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Nothing new.
    Known,
    /// A node not seen before, or back after being dead, or restarted.
    Joined,
    /// The node said it is leaving.
    Left,
}

pub struct Members {
    me: String,
    dead_after: Duration,
    table: Mutex<HashMap<String, Member>>,
}

impl Members {
    pub fn new(me: &str, dead_after: Duration) -> Members {
        Members {
            me: me.to_string(),
            dead_after,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// A heartbeat from `node` (never this one's own).
    pub fn heard(&self, node: &str, epoch: u64, leaving: bool, now: Instant) -> Heard {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if leaving {
            return match t.get_mut(node) {
                Some(m) if m.state == State::Alive => {
                    m.state = State::Dead;
                    Heard::Left
                }
                _ => Heard::Known,
            };
        }
        match t.get_mut(node) {
            Some(m) if m.state == State::Alive && m.epoch == epoch => {
                m.last = now;
                Heard::Known
            }
            Some(m) => {
                m.epoch = epoch;
                m.last = now;
                m.state = State::Alive;
                Heard::Joined
            }
            None => {
                t.insert(
                    node.to_string(),
                    Member {
                        epoch,
                        last: now,
                        state: State::Alive,
                    },
                );
                Heard::Joined
            }
        }
    }

    /// The live nodes not heard from for `dead_after`: now dead.
    pub fn sweep(&self, now: Instant) -> Vec<String> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut dead = Vec::new();
        for (name, m) in t.iter_mut() {
            if m.state == State::Alive && now.duration_since(m.last) >= self.dead_after {
                m.state = State::Dead;
                dead.push(name.clone());
            }
        }
        dead.sort();
        dead
    }

    /// The other live nodes.
    pub fn alive(&self) -> Vec<String> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = t
            .iter()
            .filter(|(_, m)| m.state == State::Alive)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Dead nodes whose sessions nobody adopted yet.
    pub fn unadopted(&self) -> Vec<String> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.iter()
            .filter(|(_, m)| m.state == State::Dead)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn state(&self, node: &str) -> Option<State> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.get(node).map(|m| m.state.clone())
    }

    /// Every node known, with its state, by name.
    pub fn all(&self) -> Vec<(String, State)> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, State)> = t
            .iter()
            .map(|(n, m)| (n.clone(), m.state.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Who adopts a dead node's sessions: the live node (this one
    /// included) whose name sorts first.
    pub fn adopter(&self) -> String {
        let mut alive = self.alive();
        alive.push(self.me.clone());
        alive.sort();
        alive.swap_remove(0)
    }

    /// The epoch `node` said last (0: unknown).
    pub fn epoch(&self, node: &str) -> u64 {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.get(node).map_or(0, |m| m.epoch)
    }

    /// `by` adopted the sessions of `dead` in its life `epoch`. Returns the
    /// state `dead` had here before (`None`: unknown), or `None` without a
    /// change when the announcement is about an earlier life (it restarted
    /// since).
    pub fn adopted(&self, dead: &str, epoch: u64, by: &str) -> Option<Option<State>> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.get_mut(dead) {
            Some(m) if m.epoch == epoch || m.state != State::Alive => {
                // The adopter may have seen it die before this node did.
                let before = std::mem::replace(&mut m.state, State::Adopted(by.to_string()));
                Some(Some(before))
            }
            Some(_) => None,
            None => {
                // Heard of only through its adoption (it died before this
                // node joined): remember it as adopted.
                t.insert(
                    dead.to_string(),
                    Member {
                        epoch,
                        last: Instant::now(),
                        state: State::Adopted(by.to_string()),
                    },
                );
                Some(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_make_members_and_silence_ends_them() {
        let m = Members::new("b", Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(m.heard("a", 1, false, t0), Heard::Joined);
        assert_eq!(m.heard("c", 7, false, t0), Heard::Joined);
        assert_eq!(m.heard("a", 1, false, t0), Heard::Known);
        assert_eq!(m.alive(), ["a", "c"]);
        assert_eq!(m.adopter(), "a");
        // c keeps talking, a falls silent.
        let t1 = t0 + Duration::from_millis(1500);
        m.heard("c", 7, false, t1);
        assert!(m.sweep(t1).is_empty());
        let t2 = t0 + Duration::from_millis(2100);
        assert_eq!(m.sweep(t2), ["a"]);
        assert_eq!(m.sweep(t2), Vec::<String>::new(), "once");
        assert_eq!(m.alive(), ["c"]);
        assert_eq!(m.unadopted(), ["a"]);
        // With a gone, b sorts first: b adopts.
        assert_eq!(m.adopter(), "b");
        assert_eq!(m.adopted("a", 1, "b"), Some(Some(State::Dead)));
        assert_eq!(m.state("a"), Some(State::Adopted("b".into())));
        assert!(m.unadopted().is_empty());
        // a restarts (new epoch): alive again.
        assert_eq!(m.heard("a", 2, false, t2), Heard::Joined);
        assert_eq!(m.adopted("a", 1, "c"), None, "about a's previous life");
        // An adoption heard before this node saw the death itself.
        assert_eq!(m.adopted("a", 2, "c"), Some(Some(State::Alive)));
        assert_eq!(m.heard("a", 3, false, t2), Heard::Joined);
        // c restarts without being seen dead: a new epoch is a join.
        assert_eq!(m.heard("c", 8, false, t2), Heard::Joined);
        // c leaves: dead at once.
        assert_eq!(m.heard("c", 8, true, t2), Heard::Left);
        assert_eq!(m.unadopted(), ["c"]);
    }
}
