//! The iqs to a room's bare JID: disco#info (§6.4, with `muc#roominfo`),
//! disco#items, `muc#admin` (§8–9: roles and affiliations, their lists),
//! `muc#owner` (§10: the configuration form, instant rooms, destruction),
//! XEP-0313 queries of the room's archive and XEP-0199 pings.

use super::form::{apply_submit, config_form, info_form};
use super::occupant::{broadcast_presence, departure};
use super::room::{may_list_affiliation, may_set_affiliation, may_set_role, Affiliation, Role};
use super::{add_status, Outbox, Rooms, NS_ADMIN, NS_MUC, NS_OWNER, NS_USER};
use crate::xmpp::element::Element;
use crate::xmpp::im::{Effects, ImServer, ImSession};
use crate::xmpp::mam::{NS_DATA, NS_MAM};
use crate::xmpp::stanza::{iq_result, Jid, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING};
use crate::xmpp::stream::NS_CLIENT;

/// One change a `muc#admin` set asks for, resolved and checked.
enum Change {
    Role { nick: String, role: Role },
    Affiliation { bare: String, aff: Affiliation },
}

impl ImServer {
    /// An iq to a room's bare JID.
    pub(crate) async fn muc_room_iq(
        &self,
        s: &mut ImSession,
        el: Element,
        to: &Jid,
        fx: &mut Effects,
    ) {
        let ty = el.attr("type").unwrap_or("");
        if !matches!(ty, "get" | "set") {
            return;
        }
        let room_jid = to.bare().to_string();
        let Some(q) = el.elements().next().cloned() else {
            return fx.error(&el, StanzaError::BadRequest);
        };
        if q.is("query", NS_MAM) {
            let allowed = may_read_archive(&self.muc.rooms(), s, &room_jid);
            return match allowed {
                Ok(()) => {
                    let me = s.jid.to_string();
                    self.mam_iq_for(&room_jid, &me, &el, &q, fx).await
                }
                Err(e) => fx.error(&el, e),
            };
        }
        let mut out = Outbox::default();
        let r = {
            let mut rooms = self.muc.rooms();
            match (ty, q.name.as_str(), q.ns.as_str()) {
                ("get", "query", NS_DISCO_INFO) => self.room_info(&rooms, s, &el, &room_jid, fx),
                ("get", "query", NS_DISCO_ITEMS) => match rooms.map.get(&room_jid) {
                    // Occupants are not listed: their nicks are the room's to show.
                    Some(_) => {
                        fx.reply(iq_result(&el, Some(Element::new("query", NS_DISCO_ITEMS))));
                        Ok(())
                    }
                    None => Err(StanzaError::ItemNotFound),
                },
                ("get", "ping", NS_PING) => match rooms.map.get(&room_jid) {
                    Some(_) => {
                        fx.reply(iq_result(&el, None));
                        Ok(())
                    }
                    None => Err(StanzaError::ItemNotFound),
                },
                (_, "query", NS_ADMIN) => {
                    self.admin_iq(&mut rooms, s, &el, &q, &room_jid, &mut out, fx)
                }
                (_, "query", NS_OWNER) => {
                    self.owner_iq(&mut rooms, s, &el, &q, &room_jid, &mut out, fx)
                }
                _ => Err(StanzaError::FeatureNotImplemented),
            }
        };
        match r {
            Ok(()) => self.muc_send(&s.jid, out, fx),
            Err(e) => fx.error(&el, e),
        }
    }

    /// §6.4: what the room is.
    fn room_info(
        &self,
        rooms: &Rooms,
        s: &ImSession,
        el: &Element,
        room_jid: &str,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        let room = rooms.map.get(room_jid).ok_or(StanzaError::ItemNotFound)?;
        if room.locked && room.affiliation(&s.user.to_string()) != Affiliation::Owner {
            return Err(StanzaError::ItemNotFound);
        }
        let c = &room.config;
        let name = if c.name.is_empty() {
            room_jid.split('@').next().unwrap_or("").to_owned()
        } else {
            c.name.clone()
        };
        let mut q = Element::new("query", NS_DISCO_INFO).with_child(
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", name),
        );
        let pick = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
        let mut features = vec![
            NS_MUC,
            NS_DISCO_INFO,
            "http://jabber.org/protocol/muc#stable_id",
            "http://jabber.org/protocol/muc#self-ping-optimization",
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                c.password_protected,
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            pick(
                c.whois == super::room::Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
        ];
        if c.mam {
            features.push(NS_MAM);
        }
        for f in features {
            q.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
        }
        q.push_child(info_form(c, room.occupants.len(), &room.subject));
        fx.reply(iq_result(el, Some(q)));
        Ok(())
    }

    /// §8–9: lists and changes of roles and affiliations.
    #[allow(clippy::too_many_arguments)]
    fn admin_iq(
        &self,
        rooms: &mut Rooms,
        s: &ImSession,
        el: &Element,
        q: &Element,
        room_jid: &str,
        out: &mut Outbox,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        let room = rooms
            .map
            .get_mut(room_jid)
            .ok_or(StanzaError::ItemNotFound)?;
        let me_bare = s.user.to_string();
        let my_aff = room.affiliation(&me_bare);
        let my_role = room.by_jid(&s.jid).map_or(Role::None, |o| o.role);
        let items: Vec<&Element> = q.children_named("item", NS_ADMIN).collect();
        if items.is_empty() {
            return Err(StanzaError::BadRequest);
        }
        if el.attr("type") == Some("get") {
            let mut answer = Element::new("query", NS_ADMIN);
            for item in items {
                if let Some(a) = item.attr("affiliation") {
                    let a = Affiliation::parse(a).ok_or(StanzaError::BadRequest)?;
                    if a == Affiliation::None {
                        return Err(StanzaError::BadRequest);
                    }
                    if !may_list_affiliation(my_aff, a) {
                        return Err(StanzaError::Forbidden);
                    }
                    for (jid, _) in room.affiliations.iter().filter(|(_, x)| **x == a) {
                        answer.push_child(
                            Element::new("item", NS_ADMIN)
                                .with_attr("affiliation", a.name())
                                .with_attr("jid", jid.clone()),
                        );
                    }
                } else if let Some(r) = item.attr("role") {
                    let r = Role::parse(r).ok_or(StanzaError::BadRequest)?;
                    if my_role != Role::Moderator {
                        return Err(StanzaError::Forbidden);
                    }
                    for o in room.occupants.iter().filter(|o| o.role == r) {
                        answer.push_child(
                            Element::new("item", NS_ADMIN)
                                .with_attr("nick", o.nick.clone())
                                .with_attr("role", r.name())
                                .with_attr("jid", o.jid.to_string())
                                .with_attr(
                                    "affiliation",
                                    room.affiliation(&o.jid.bare().to_string()).name(),
                                ),
                        );
                    }
                } else {
                    return Err(StanzaError::BadRequest);
                }
            }
            fx.reply(iq_result(el, Some(answer)));
            return Ok(());
        }
        // A set: every item checked against the room as it is, then all
        // applied (§9: the changes go together or not at all).
        let mut changes = Vec::new();
        let mut reasons = Vec::new();
        for item in &items {
            let reason = item.child("reason", NS_ADMIN).map(|r| r.text());
            if let Some(a) = item.attr("affiliation") {
                let aff = Affiliation::parse(a).ok_or(StanzaError::BadRequest)?;
                let bare = match (item.attr("jid"), item.attr("nick")) {
                    (Some(j), _) => Jid::parse(j)
                        .ok()
                        .filter(|j| j.local().is_some())
                        .ok_or(StanzaError::JidMalformed)?
                        .bare()
                        .to_string(),
                    (None, Some(n)) => room
                        .by_nick(n)
                        .ok_or(StanzaError::ItemNotFound)?
                        .jid
                        .bare()
                        .to_string(),
                    (None, None) => return Err(StanzaError::BadRequest),
                };
                let old = room.affiliation(&bare);
                may_set_affiliation(my_aff, old, aff)?;
                changes.push(Change::Affiliation { bare, aff });
            } else if let (Some(r), Some(nick)) = (item.attr("role"), item.attr("nick")) {
                let role = Role::parse(r).ok_or(StanzaError::BadRequest)?;
                let target = room.by_nick(nick).ok_or(StanzaError::ItemNotFound)?;
                let t_aff = room.affiliation(&target.jid.bare().to_string());
                may_set_role(my_aff, my_role, t_aff, target.role, role)?;
                changes.push(Change::Role {
                    nick: nick.to_owned(),
                    role,
                });
            } else {
                return Err(StanzaError::BadRequest);
            }
            reasons.push(reason);
        }
        // What the affiliations would be: an owner remains (§10.6), and
        // the list stays within its limit.
        let mut after = room.affiliations.clone();
        for c in &changes {
            if let Change::Affiliation { bare, aff } = c {
                if *aff == Affiliation::None {
                    after.remove(bare);
                } else {
                    after.insert(bare.clone(), *aff);
                }
            }
        }
        if !after.values().any(|a| *a == Affiliation::Owner) {
            return Err(StanzaError::Conflict);
        }
        if after.len() > self.muc.config.max_affiliations && after.len() > room.affiliations.len() {
            return Err(StanzaError::ResourceConstraint);
        }
        let my_nick = room.by_jid(&s.jid).map(|o| o.nick.clone());
        let mut affiliations_changed = false;
        for (c, reason) in changes.into_iter().zip(reasons) {
            let mut extra = Vec::new();
            if let Some(n) = &my_nick {
                extra.push(Element::new("actor", NS_USER).with_attr("nick", n.clone()));
            }
            if let Some(r) = reason {
                extra.push(Element::new("reason", NS_USER).with_text(r));
            }
            match c {
                Change::Role { nick, role } => {
                    let Some(o) = room.by_nick(&nick).cloned() else {
                        continue;
                    };
                    if role == Role::None {
                        // §8.2: a kick.
                        departure(room, &o, &[307], &extra, &[], out);
                        room.occupants.retain(|x| x.nick != nick);
                        rooms_left(&mut rooms.joined, &o.jid, room_jid);
                    } else {
                        let o = {
                            let x = room
                                .occupants
                                .iter_mut()
                                .find(|x| x.nick == nick)
                                .expect("present");
                            x.role = role;
                            x.clone()
                        };
                        broadcast_presence(room, &o, &[], out);
                    }
                }
                Change::Affiliation { bare, aff } => {
                    let old = room.affiliation(&bare);
                    room.set_affiliation(&bare, aff);
                    affiliations_changed = true;
                    let theirs: Vec<_> = room
                        .occupants
                        .iter()
                        .filter(|o| o.jid.bare().to_string() == bare)
                        .cloned()
                        .collect();
                    for o in theirs {
                        let removal = if aff == Affiliation::Outcast {
                            Some(301)
                        } else if room.config.members_only && aff < Affiliation::Member {
                            Some(321)
                        } else {
                            None
                        };
                        if let Some(code) = removal {
                            departure(room, &o, &[code], &extra, &[], out);
                            room.occupants.retain(|x| x.jid != o.jid);
                            rooms_left(&mut rooms.joined, &o.jid, room_jid);
                            continue;
                        }
                        let role = if aff >= Affiliation::Admin {
                            Role::Moderator
                        } else if old >= Affiliation::Admin {
                            room.default_role(aff)
                        } else {
                            o.role.max(room.default_role(aff))
                        };
                        let o = {
                            let x = room.by_jid_mut(&o.jid).expect("present");
                            x.role = role;
                            x.clone()
                        };
                        broadcast_presence(room, &o, &[], out);
                    }
                }
            }
        }
        if affiliations_changed && room.config.persistent {
            self.muc.save(room, fx);
        }
        fx.reply(iq_result(el, None));
        self.drop_if_empty(rooms, room_jid, fx);
        Ok(())
    }

    /// §10: the configuration form, instant rooms, destruction.
    #[allow(clippy::too_many_arguments)]
    fn owner_iq(
        &self,
        rooms: &mut Rooms,
        s: &ImSession,
        el: &Element,
        q: &Element,
        room_jid: &str,
        out: &mut Outbox,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        let cfg = &self.muc.config;
        let room = rooms
            .map
            .get_mut(room_jid)
            .ok_or(StanzaError::ItemNotFound)?;
        if room.affiliation(&s.user.to_string()) != Affiliation::Owner {
            return Err(StanzaError::Forbidden);
        }
        if el.attr("type") == Some("get") {
            let answer = Element::new("query", NS_OWNER)
                .with_child(config_form(&room.config, cfg.max_users));
            fx.reply(iq_result(el, Some(answer)));
            return Ok(());
        }
        if let Some(d) = q.child("destroy", NS_OWNER) {
            // §10.9: everyone leaves, told why and where to go.
            let mut destroy = Element::new("destroy", NS_USER);
            if let Some(j) = d.attr("jid") {
                destroy.set_attr("jid", j);
            }
            if let Some(r) = d.child("reason", NS_OWNER) {
                destroy.push_child(Element::new("reason", NS_USER).with_text(r.text()));
            }
            let everyone = room.occupants.clone();
            for o in &everyone {
                departure(room, o, &[], std::slice::from_ref(&destroy), &[], out);
                room.occupants.retain(|x| x.jid != o.jid);
            }
            for o in &everyone {
                rooms_left(&mut rooms.joined, &o.jid, room_jid);
            }
            rooms.map.remove(room_jid);
            self.muc.forget(room_jid, fx);
            fx.reply(iq_result(el, None));
            return Ok(());
        }
        let x = q.child("x", NS_DATA).ok_or(StanzaError::BadRequest)?;
        match x.attr("type") {
            Some("cancel") => {
                // §10.1.3: cancelling the initial configuration destroys
                // the locked room.
                if room.locked {
                    let everyone = room.occupants.clone();
                    for o in &everyone {
                        departure(room, o, &[], &[], &[], out);
                        rooms_left(&mut rooms.joined, &o.jid, room_jid);
                    }
                    rooms.map.remove(room_jid);
                }
                fx.reply(iq_result(el, None));
                Ok(())
            }
            Some("submit") => {
                let new = apply_submit(x, &room.config, cfg.max_users, cfg.max_room_name_length)?;
                let was_locked = room.locked;
                let was_persistent = room.config.persistent;
                room.config = new;
                room.locked = false;
                if room.config.persistent || was_persistent {
                    self.muc.save(room, fx);
                }
                fx.reply(iq_result(el, None));
                if room.config.members_only {
                    // §9.4: who is not a member leaves a members-only room.
                    let out_of_place: Vec<_> = room
                        .occupants
                        .iter()
                        .filter(|o| {
                            room.affiliation(&o.jid.bare().to_string()) < Affiliation::Member
                        })
                        .cloned()
                        .collect();
                    for o in out_of_place {
                        departure(room, &o, &[322], &[], &[], out);
                        room.occupants.retain(|x| x.jid != o.jid);
                        rooms_left(&mut rooms.joined, &o.jid, room_jid);
                    }
                }
                let room = rooms.map.get(room_jid).expect("present");
                if !was_locked {
                    // §10.2.1: a configuration change everyone hears of.
                    for o in &room.occupants {
                        let mut m = Element::new("message", NS_CLIENT)
                            .with_attr("type", "groupchat")
                            .with_attr("from", room_jid);
                        add_status(&mut m, &[104]);
                        out.push(&o.jid, m);
                    }
                }
                self.drop_if_empty(rooms, room_jid, fx);
                Ok(())
            }
            _ => Err(StanzaError::BadRequest),
        }
    }
}

fn rooms_left(
    joined: &mut std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    full: &Jid,
    room: &str,
) {
    let k = full.to_string();
    if let Some(set) = joined.get_mut(&k) {
        set.remove(room);
        if set.is_empty() {
            joined.remove(&k);
        }
    }
}

/// XEP-0313 §5.1.2 for a room: its occupants, and its members (and above)
/// even when not in it; nobody else in a members-only room, and in an
/// open room anyone who could join.
fn may_read_archive(rooms: &Rooms, s: &ImSession, room_jid: &str) -> Result<(), StanzaError> {
    let room = rooms.map.get(room_jid).ok_or(StanzaError::ItemNotFound)?;
    let aff = room.affiliation(&s.user.to_string());
    if room.by_jid(&s.jid).is_some() || aff >= Affiliation::Member {
        return Ok(());
    }
    if aff == Affiliation::Outcast || room.config.members_only || room.locked {
        return Err(StanzaError::Forbidden);
    }
    if room.config.password_protected {
        return Err(StanzaError::Forbidden);
    }
    Ok(())
}
