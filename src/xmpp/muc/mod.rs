//! XEP-0045 Multi-User Chat on `conference.<host>` (see [`super::services`]).
//!
//! Rooms live in memory ([`Muc`]: one map behind a mutex, every change of a
//! room made under it without awaiting, so a room's stanzas are ordered).
//! A room is created by the first presence to `room@conference.host/nick`
//! (locked until its owner configures it or asks for an instant room) and
//! disappears when its last occupant leaves, unless it is persistent:
//! persistent rooms (configuration, affiliations, subject) are in the
//! store's `MucRooms` tree keyed by the room's bare JID, written before the
//! owner's iq is answered (`Effects::flush`), and read once, on the first
//! stanza to the service after start.
//!
//! By concept: [`room`] (state, permission rules, history limits; I/O-free),
//! [`form`] (the configuration and information forms), [`occupant`]
//! (presence: join, nick change, leave; groupchat, private messages,
//! subject, invitations; iqs to occupants, XEP-0410 self-ping), [`admin`]
//! (the room's iqs: `muc#admin`, `muc#owner`, disco, XEP-0313 queries).
//! Groupchat messages carry a `<stanza-id by=room>` that is also their id
//! in the room's archive (the account archive of [`super::mam`] keyed by the
//! room's JID) when the room archives.
//!
//! A user's session that ends or broadcasts unavailable presence leaves
//! every room it is in ([`ImServer::muc_session_gone`]).
//!
//! Limits (`[muc]`): `max_rooms`, `max_rooms_per_user`, `max_users`,
//! `history_size`, `max_room_name_length`, `max_nick_length`,
//! `max_affiliations`.

pub mod admin;
pub mod form;
pub mod occupant;
pub mod room;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use serde::Deserialize;

use self::room::{Room, StoredRoom};
use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::services::refuse;
use super::stanza::{iq_result, Jid, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS};
use super::stream::NS_CLIENT;
use crate::store::{records, Store, Tree};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// The `[muc]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// Whether `conference.<host>` is served.
    pub enabled: bool,
    /// Rooms on the server at most (all hosts).
    pub max_rooms: usize,
    /// Rooms one user may have created (and that still exist).
    pub max_rooms_per_user: usize,
    /// Occupants of a room at most (its `maxusers` default and ceiling).
    pub max_users: usize,
    /// Groupchat messages kept per room for the history sent on join.
    pub history_size: usize,
    /// Longest room name (the localpart of its JID and its `roomname`),
    /// in characters.
    pub max_room_name_length: usize,
    /// Longest nickname, in characters.
    pub max_nick_length: usize,
    /// Affiliations (owner, admin, member, outcast) one room keeps at most.
    pub max_affiliations: usize,
    /// Whether a new room archives its messages (XEP-0313) by default.
    pub archive_by_default: bool,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            max_rooms: 10_000,
            max_rooms_per_user: 100,
            max_users: 200,
            history_size: 20,
            max_room_name_length: 64,
            max_nick_length: 64,
            max_affiliations: 1_000,
            archive_by_default: true,
        }
    }
}

impl MucConfig {
    /// Checks the ranges; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("max_rooms", self.max_rooms),
            ("max_rooms_per_user", self.max_rooms_per_user),
            ("max_users", self.max_users),
            ("max_room_name_length", self.max_room_name_length),
            ("max_nick_length", self.max_nick_length),
            ("max_affiliations", self.max_affiliations),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.history_size > 10_000 {
            return Err(("history_size", "must be at most 10000".into()));
        }
        Ok(())
    }
}

/// Every room and who is in which.
#[derive(Default)]
pub(crate) struct Rooms {
    pub map: HashMap<String, Room>,
    /// Real full JID → the rooms it is an occupant of.
    pub joined: HashMap<String, BTreeSet<String>>,
}

impl Rooms {
    pub fn entered(&mut self, full: &Jid, room: &str) {
        self.joined
            .entry(full.to_string())
            .or_default()
            .insert(room.to_owned());
    }

    pub fn left(&mut self, full: &Jid, room: &str) {
        let k = full.to_string();
        if let Some(set) = self.joined.get_mut(&k) {
            set.remove(room);
            if set.is_empty() {
                self.joined.remove(&k);
            }
        }
    }
}

/// The group chat service of every host. See the module docs.
pub struct Muc {
    pub config: MucConfig,
    store: Store,
    rooms: Mutex<Rooms>,
    loaded: tokio::sync::OnceCell<()>,
}

/// Stanzas a room sends, each to an occupant's (or a user's) real JID.
#[derive(Default)]
pub(crate) struct Outbox(pub Vec<(Jid, Element)>);

impl Outbox {
    pub fn push(&mut self, to: &Jid, el: Element) {
        self.0.push((to.clone(), el));
    }
}

impl Muc {
    pub fn new(store: Store, config: MucConfig) -> Muc {
        Muc {
            config,
            store,
            rooms: Mutex::new(Rooms::default()),
            loaded: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the persistent rooms, once. A damaged record is skipped with a
    /// log line; a store failure leaves the rooms unread (tried again on the
    /// next stanza).
    async fn ensure_loaded(&self) {
        let _ = self
            .loaded
            .get_or_try_init(|| async {
                let all = self.store.scan_prefix(Tree::MucRooms, b"").await?;
                let mut rooms = self.rooms();
                for (k, v) in all {
                    let jid = String::from_utf8_lossy(&k).into_owned();
                    match records::decode::<StoredRoom>("muc_rooms", &v) {
                        Ok(s) => {
                            rooms
                                .map
                                .entry(jid.clone())
                                .or_insert_with(|| Room::from_stored(jid, s));
                        }
                        Err(e) => tracing::warn!(room = %jid, error = %e, "skipping a stored room"),
                    }
                }
                Ok::<(), crate::store::StoreError>(())
            })
            .await
            .map_err(|e| tracing::error!(error = %e, "could not read the stored rooms"));
    }

    /// Writes a persistent room (or deletes a room that no longer is); the
    /// caller sets `fx.flush` so the answer waits for the barrier.
    pub(crate) fn save(&self, room: &Room, fx: &mut Effects) {
        if room.config.persistent {
            self.store.put(
                Tree::MucRooms,
                room.jid.as_bytes().to_vec(),
                records::encode(&room.stored()),
            );
        } else {
            self.store
                .delete(Tree::MucRooms, room.jid.as_bytes().to_vec());
        }
        fx.flush = true;
    }

    pub(crate) fn forget(&self, jid: &str, fx: &mut Effects) {
        self.store.delete(Tree::MucRooms, jid.as_bytes().to_vec());
        fx.flush = true;
    }
}

impl ImServer {
    /// A stanza to `conference.<host>` or a room under it.
    pub(crate) async fn muc_stanza(&self, s: &mut ImSession, el: Element, fx: &mut Effects) {
        self.muc.ensure_loaded().await;
        let Some(to) = el.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return fx.error(&el, StanzaError::JidMalformed);
        };
        if to.local().is_none() {
            if to.resource().is_some() {
                return refuse(&el, fx);
            }
            return self.muc_service_iq(s, &el, &to, fx);
        }
        match el.name.as_str() {
            "presence" => self.muc_presence(s, el, &to, fx),
            "message" => self.muc_message(s, el, &to, fx).await,
            "iq" if to.resource().is_some() => self.muc_occupant_iq(s, el, &to, fx),
            "iq" => self.muc_room_iq(s, el, &to, fx).await,
            _ => {}
        }
    }

    /// The service's own iqs: disco.
    fn muc_service_iq(&self, _s: &ImSession, el: &Element, to: &Jid, fx: &mut Effects) {
        let query = el.elements().next();
        let Some(q) = query.filter(|q| q.name == "query" && el.name == "iq") else {
            return refuse(el, fx);
        };
        if el.attr("type") != Some("get") || q.attr("node").is_some() {
            return refuse(el, fx);
        }
        let answer = if q.ns == NS_DISCO_INFO {
            let mut a = Element::new("query", NS_DISCO_INFO).with_child(
                Element::new("identity", NS_DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", "Chatrooms"),
            );
            for f in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC] {
                a.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
            }
            a
        } else if q.ns == NS_DISCO_ITEMS {
            let suffix = format!("@{}", to.domain());
            let rooms = self.muc.rooms();
            let mut listed: Vec<(&String, &Room)> = rooms
                .map
                .iter()
                .filter(|(k, r)| k.ends_with(&suffix) && r.config.public && !r.locked)
                .collect();
            listed.sort_by(|a, b| a.0.cmp(b.0));
            let mut a = Element::new("query", NS_DISCO_ITEMS);
            for (jid, r) in listed {
                let name = if r.config.name.is_empty() {
                    jid.split('@').next().unwrap_or(jid).to_owned()
                } else {
                    r.config.name.clone()
                };
                a.push_child(
                    Element::new("item", NS_DISCO_ITEMS)
                        .with_attr("jid", jid.clone())
                        .with_attr("name", name),
                );
            }
            a
        } else {
            return refuse(el, fx);
        };
        fx.reply(iq_result(el, Some(answer)));
    }

    /// Sends what a room decided: to the sender's own session through its
    /// replies (in order with them), to anyone else through the router.
    pub(crate) fn muc_send(&self, s_jid: &Jid, out: Outbox, fx: &mut Effects) {
        for (to, mut el) in out.0 {
            el.set_attr("to", to.to_string());
            if to == *s_jid {
                fx.reply(el);
            } else if let Some(route) = self.router.route(&to.to_string()) {
                self.router.deliver(
                    &route,
                    Bytes::from(el.to_bytes(NS_CLIENT)),
                    &mut fx.congested,
                );
            }
        }
    }

    /// The session `jid` ended or went unavailable: it leaves every room.
    pub(crate) fn muc_session_gone(&self, jid: &Jid, fx: &mut Effects) {
        if !self.services.is_on(super::services::Service::Muc) {
            return;
        }
        let mut out = Outbox::default();
        {
            let mut rooms = self.muc.rooms();
            let Some(joined) = rooms.joined.remove(&jid.to_string()) else {
                return;
            };
            for room in joined {
                let bye = Element::new("presence", NS_CLIENT).with_attr("type", "unavailable");
                self.leave(&mut rooms, &room, jid, &bye, &mut out, fx);
            }
        }
        self.muc_send(jid, out, fx);
    }

    /// The Unix time in milliseconds.
    pub(crate) fn muc_now_ms(&self) -> u64 {
        self.router.registry().clock().unix_micros() / 1000
    }
}

/// `<x xmlns='muc#user'>` with status codes added to an element that has one.
pub(crate) fn add_status(el: &mut Element, codes: &[u16]) {
    if codes.is_empty() {
        return;
    }
    if el.child("x", NS_USER).is_none() {
        el.push_child(Element::new("x", NS_USER));
    }
    if let Some(x) = el.child_mut("x", NS_USER) {
        for c in codes {
            x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_name_the_key() {
        assert_eq!(MucConfig::default().check(), Ok(()));
        let c = MucConfig {
            max_users: 0,
            ..MucConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "max_users");
        let c = MucConfig {
            history_size: 20_000,
            ..MucConfig::default()
        };
        assert_eq!(c.check().unwrap_err().0, "history_size");
    }

    #[test]
    fn status_codes_go_into_the_user_extension() {
        let mut p = Element::new("presence", NS_CLIENT);
        add_status(&mut p, &[110, 201]);
        let x = p.child("x", NS_USER).unwrap();
        assert_eq!(x.children_named("status", NS_USER).count(), 2);
        add_status(&mut p, &[]);
        assert_eq!(p.children_named("x", NS_USER).count(), 1);
    }
}
