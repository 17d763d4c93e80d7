//! Occupants: presence to `room/nick` (join with its refusals, presence
//! updates, nick change, leave), the presence every occupant sees of every
//! other, groupchat messages (reflected to all, the sender included, with
//! `<stanza-id/>`, kept for the history, archived), the subject, private
//! messages, mediated invitations (§7.8) and iqs to an occupant's JID
//! (XEP-0410 self-ping answered here, others forwarded).

use bytes::Bytes;

use super::room::{Affiliation, HistoryRequest, Occupant, Role, Room, RoomConfig};
use super::{add_status, Outbox, Rooms, NS_MUC, NS_USER};
use crate::xmpp::element::Element;
use crate::xmpp::im::{Effects, ImServer, ImSession};
use crate::xmpp::mam::{id_text, NS_SID};
use crate::xmpp::stanza::{error_reply, iq_result, Jid, StanzaError, NS_DELAY, NS_PING};
use crate::xmpp::stream::NS_CLIENT;

/// The presence `o` shows to a viewer: its payload, then the user
/// extension with its affiliation and role (and its real JID when the
/// viewer may see it).
pub(crate) fn presence_of(room: &Room, o: &Occupant, show_jid: bool) -> Element {
    let mut p =
        Element::new("presence", NS_CLIENT).with_attr("from", format!("{}/{}", room.jid, o.nick));
    for c in &o.payload {
        p.push_child(c.clone());
    }
    let mut item = Element::new("item", NS_USER)
        .with_attr(
            "affiliation",
            room.affiliation(&o.jid.bare().to_string()).name(),
        )
        .with_attr("role", o.role.name());
    if show_jid {
        item.set_attr("jid", o.jid.to_string());
    }
    p.push_child(Element::new("x", NS_USER).with_child(item));
    p
}

/// The presence of `o` leaving: unavailable, role none, with `codes` (and
/// 110 for itself), an optional `<actor/>`, `<reason/>` or `<destroy/>`.
pub(crate) fn departure(
    room: &Room,
    o: &Occupant,
    codes: &[u16],
    extra: &[Element],
    payload: &[Element],
    out: &mut Outbox,
) {
    for r in &room.occupants {
        let mut p = Element::new("presence", NS_CLIENT)
            .with_attr("from", format!("{}/{}", room.jid, o.nick))
            .with_attr("type", "unavailable");
        for c in payload {
            p.push_child(c.clone());
        }
        let aff = room.affiliation(&o.jid.bare().to_string());
        let mut item = Element::new("item", NS_USER)
            .with_attr("affiliation", aff.name())
            .with_attr("role", "none");
        if room.shows_jids_to(r.role) || r.jid == o.jid {
            item.set_attr("jid", o.jid.to_string());
        }
        let mut x = Element::new("x", NS_USER);
        for e in extra {
            if e.name == "destroy" {
                x.push_child(e.clone());
            } else {
                item.push_child(e.clone());
            }
        }
        x.children
            .insert(0, crate::xmpp::element::Node::Element(item));
        p.push_child(x);
        let mut all = codes.to_vec();
        if r.jid == o.jid {
            all.push(110);
        }
        add_status(&mut p, &all);
        out.push(&r.jid, p);
    }
}

/// The presence payload kept of a stanza: everything but the MUC
/// extensions (show, status, priority, caps…).
fn payload_of(el: &Element) -> Vec<Element> {
    el.elements()
        .filter(|e| e.ns != NS_MUC && e.ns != NS_USER)
        .cloned()
        .collect()
}

/// The subject message of a room.
fn subject_message(room: &Room) -> Element {
    let from = if room.subject_by.is_empty() {
        room.jid.clone()
    } else {
        format!("{}/{}", room.jid, room.subject_by)
    };
    Element::new("message", NS_CLIENT)
        .with_attr("type", "groupchat")
        .with_attr("from", from)
        .with_child(Element::new("subject", NS_CLIENT).with_text(room.subject.clone()))
}

impl ImServer {
    /// Presence to `room/nick`.
    pub(crate) fn muc_presence(&self, s: &ImSession, el: Element, to: &Jid, fx: &mut Effects) {
        let room_jid = to.bare().to_string();
        let Some(nick) = to.resource().map(str::to_owned) else {
            // §7.2.1: a join must name a nickname.
            return fx.error(&el, StanzaError::JidMalformed);
        };
        let ty = el.attr("type").unwrap_or("");
        let mut out = Outbox::default();
        {
            let mut rooms = self.muc.rooms();
            match ty {
                "" => {
                    if let Err(e) = self.enter(&mut rooms, s, &el, &room_jid, &nick, &mut out, fx) {
                        drop(rooms);
                        return self.muc_presence_error(&el, e, fx);
                    }
                }
                "unavailable" | "error" => {
                    let is_in = rooms
                        .map
                        .get(&room_jid)
                        .is_some_and(|r| r.by_jid(&s.jid).is_some());
                    if is_in {
                        rooms.left(&s.jid, &room_jid);
                        self.leave(&mut rooms, &room_jid, &s.jid, &el, &mut out, fx);
                    }
                }
                // Subscriptions and probes mean nothing to a room.
                _ => {}
            }
        }
        self.muc_send(&s.jid, out, fx);
    }

    /// An error to a join, with the MUC extension (§7.2).
    fn muc_presence_error(&self, el: &Element, e: StanzaError, fx: &mut Effects) {
        if let Some(mut r) = error_reply(el, e, None) {
            r.children.insert(
                0,
                crate::xmpp::element::Node::Element(Element::new("x", NS_MUC)),
            );
            fx.reply(r);
        }
    }

    /// Available presence: a join, a presence update or a nick change.
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &self,
        rooms: &mut Rooms,
        s: &ImSession,
        el: &Element,
        room_jid: &str,
        nick: &str,
        out: &mut Outbox,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        let cfg = &self.muc.config;
        if nick.chars().count() > cfg.max_nick_length || nick.trim().is_empty() {
            return Err(StanzaError::NotAcceptable);
        }
        let bare = s.user.to_string();
        let mut created = false;
        if !rooms.map.contains_key(room_jid) {
            let local = room_jid.split('@').next().unwrap_or("");
            if local.chars().count() > cfg.max_room_name_length {
                return Err(StanzaError::NotAcceptable);
            }
            if rooms.map.len() >= cfg.max_rooms {
                return Err(StanzaError::ResourceConstraint);
            }
            let mine = rooms.map.values().filter(|r| r.creator == bare).count();
            if mine >= cfg.max_rooms_per_user {
                return Err(StanzaError::NotAllowed);
            }
            let mut room = Room::new(
                room_jid.to_owned(),
                bare.clone(),
                RoomConfig::new(cfg.max_users, cfg.archive_by_default),
            );
            // §10.1.1: a client that does not speak MUC gets an instant room.
            room.locked = el.child("x", NS_MUC).is_some();
            rooms.map.insert(room_jid.to_owned(), room);
            created = true;
        }
        let room = rooms.map.get_mut(room_jid).expect("present");
        let payload = payload_of(el);
        if let Some(me) = room.by_jid(&s.jid).cloned() {
            if me.nick == nick {
                // A presence update, seen by everyone.
                room.by_jid_mut(&s.jid).expect("present").payload = payload;
                let me = room.by_jid(&s.jid).expect("present").clone();
                broadcast_presence(room, &me, &[], out);
                return Ok(());
            }
            // §7.6: a nick change.
            if room.by_nick(nick).is_some() {
                return Err(StanzaError::Conflict);
            }
            for r in &room.occupants {
                let mut p = presence_of(room, &me, room.shows_jids_to(r.role) || r.jid == me.jid);
                p.set_attr("type", "unavailable");
                if let Some(item) = p
                    .child_mut("x", NS_USER)
                    .and_then(|x| x.child_mut("item", NS_USER))
                {
                    item.set_attr("nick", nick);
                }
                let mut codes = vec![303];
                if r.jid == me.jid {
                    codes.push(110);
                }
                add_status(&mut p, &codes);
                out.push(&r.jid, p);
            }
            let o = room.by_jid_mut(&s.jid).expect("present");
            o.nick = nick.to_owned();
            o.payload = payload;
            let me = o.clone();
            broadcast_presence(room, &me, &[], out);
            return Ok(());
        }
        let aff = room.affiliation(&bare);
        let refusal = if room.locked && aff != Affiliation::Owner {
            Some(StanzaError::ItemNotFound)
        } else if aff == Affiliation::Outcast {
            Some(StanzaError::Forbidden)
        } else if room.config.members_only && aff < Affiliation::Member {
            Some(StanzaError::RegistrationRequired)
        } else if room.by_nick(nick).is_some() {
            Some(StanzaError::Conflict)
        } else if room.config.password_protected
            && aff < Affiliation::Admin
            && el
                .child("x", NS_MUC)
                .and_then(|x| x.child("password", NS_MUC))
                .map(|p| p.text())
                .as_deref()
                != Some(room.config.password.as_str())
        {
            Some(StanzaError::NotAuthorized)
        } else if room.occupants.len() >= room.config.max_users && aff < Affiliation::Admin {
            Some(StanzaError::ServiceUnavailable)
        } else {
            None
        };
        if let Some(e) = refusal {
            return Err(e);
        }
        let me = Occupant {
            nick: nick.to_owned(),
            jid: s.jid.clone(),
            role: room.default_role(aff),
            payload,
        };
        // §7.2.3: the others first, then the joiner to everyone, its own
        // presence last among them.
        for o in &room.occupants {
            out.push(&s.jid, presence_of(room, o, room.shows_jids_to(me.role)));
        }
        room.occupants.push(me.clone());
        let mut codes = Vec::new();
        if room.config.whois == super::room::Whois::Anyone {
            codes.push(100);
        }
        if room.config.mam {
            codes.push(170);
        }
        if created {
            codes.push(201);
        }
        broadcast_presence(room, &me, &codes, out);
        // §7.2.15: history, then the subject.
        let history = el
            .child("x", NS_MUC)
            .and_then(|x| x.child("history", NS_MUC));
        let req = HistoryRequest::parse(history);
        let entries: Vec<(u64, usize)> = room.history.iter().map(|p| (p.at_ms, p.chars)).collect();
        let n = req.count(&entries, self.muc_now_ms());
        for past in room.history.iter().skip(room.history.len() - n) {
            let mut m = past.message.clone();
            m.push_child(
                Element::new("delay", NS_DELAY)
                    .with_attr("from", room.jid.clone())
                    .with_attr("stamp", crate::ctl::rfc3339(past.at_ms / 1000)),
            );
            out.push(&s.jid, m);
        }
        // Also in a locked room: clients wait for the subject as the end of
        // the join.
        out.push(&s.jid, subject_message(room));
        rooms.entered(&s.jid, room_jid);
        let _ = fx;
        Ok(())
    }

    /// `full` leaves `room_jid` (the index of joined rooms is the caller's):
    /// everyone sees it go; an empty room that does not persist is gone.
    pub(crate) fn leave(
        &self,
        rooms: &mut Rooms,
        room_jid: &str,
        full: &Jid,
        el: &Element,
        out: &mut Outbox,
        fx: &mut Effects,
    ) {
        let Some(room) = rooms.map.get_mut(room_jid) else {
            return;
        };
        let Some(me) = room.by_jid(full).cloned() else {
            return;
        };
        let payload: Vec<Element> = payload_of(el)
            .into_iter()
            .filter(|e| e.name == "status")
            .collect();
        departure(room, &me, &[], &[], &payload, out);
        room.occupants.retain(|o| o.jid != *full);
        self.drop_if_empty(rooms, room_jid, fx);
    }

    /// Removes a room nobody is in that does not persist.
    pub(crate) fn drop_if_empty(&self, rooms: &mut Rooms, room_jid: &str, _fx: &mut Effects) {
        let gone = rooms
            .map
            .get(room_jid)
            .is_some_and(|r| r.occupants.is_empty() && (!r.config.persistent || r.locked));
        if gone {
            rooms.map.remove(room_jid);
        }
    }

    /// A message to a room or to an occupant.
    pub(crate) async fn muc_message(
        &self,
        s: &mut ImSession,
        el: Element,
        to: &Jid,
        fx: &mut Effects,
    ) {
        let ty = el.attr("type").unwrap_or("normal").to_owned();
        if ty == "error" {
            // An occupant's client refusing something: nothing to answer.
            return;
        }
        let room_jid = to.bare().to_string();
        let mut out = Outbox::default();
        let mut offline: Vec<(crate::auth::BareJid, Element)> = Vec::new();
        let r = {
            let mut rooms = self.muc.rooms();
            match (to.resource(), ty.as_str()) {
                (None, "groupchat") => self.groupchat(&mut rooms, s, &el, &room_jid, &mut out, fx),
                (None, _) if el.child("x", NS_USER).is_some() => {
                    self.invitation(&mut rooms, s, &el, &room_jid, &mut out, &mut offline, fx)
                }
                (None, _) => Err(StanzaError::BadRequest),
                (Some(_), "groupchat") => Err(StanzaError::BadRequest),
                (Some(nick), _) => private_message(&rooms, s, &el, &room_jid, nick, &mut out),
            }
        };
        if let Err(e) = r {
            return fx.error(&el, e);
        }
        self.muc_send(&s.jid, out, fx);
        for (bare, m) in offline {
            let bytes = Bytes::from(m.to_bytes(NS_CLIENT));
            if self
                .router
                .deliver_to_best(&bare.to_string(), &bytes, &mut fx.congested)
                == 0
            {
                let mut ignore = Effects::default();
                self.store_offline(&bare, &m, &mut ignore).await;
            }
        }
    }

    fn groupchat(
        &self,
        rooms: &mut Rooms,
        s: &ImSession,
        el: &Element,
        room_jid: &str,
        out: &mut Outbox,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        let room = rooms
            .map
            .get_mut(room_jid)
            .ok_or(StanzaError::ItemNotFound)?;
        let me = room
            .by_jid(&s.jid)
            .cloned()
            .ok_or(StanzaError::NotAcceptable)?;
        let body = el.child("body", NS_CLIENT).is_some();
        let subject = el.child("subject", NS_CLIENT);
        if let (Some(subj), false) = (subject, body) {
            // §8.1: a subject change.
            let allowed = me.role == Role::Moderator
                || (room.config.change_subject && me.role >= Role::Participant);
            if !allowed {
                return Err(StanzaError::Forbidden);
            }
            room.subject = subj.text();
            room.subject_by = me.nick.clone();
            if room.config.persistent {
                self.muc.save(room, fx);
            }
            let m = subject_message(room);
            for o in &room.occupants {
                out.push(&o.jid, m.clone());
            }
            return Ok(());
        }
        if me.role < Role::Participant {
            // §7.4: visitors have no voice in a moderated room.
            return Err(StanzaError::Forbidden);
        }
        let mut m = el.clone();
        m.remove_attr("to");
        m.set_attr("from", format!("{room_jid}/{}", me.nick));
        m.remove_children("stanza-id", NS_SID);
        let id = self.mam.next_id();
        m.push_child(
            Element::new("stanza-id", NS_SID)
                .with_attr("by", room_jid)
                .with_attr("id", id_text(id)),
        );
        if body {
            if room.config.mam {
                self.mam
                    .put(room_jid, id, &format!("{room_jid}/{}", me.nick), false, &m);
            }
            room.remember(m.clone(), id >> 16, self.muc.config.history_size);
        }
        for o in &room.occupants {
            out.push(&o.jid, m.clone());
        }
        Ok(())
    }

    /// §7.8: a mediated invitation (or a decline) through the room.
    #[allow(clippy::too_many_arguments)]
    fn invitation(
        &self,
        rooms: &mut Rooms,
        s: &ImSession,
        el: &Element,
        room_jid: &str,
        out: &mut Outbox,
        offline: &mut Vec<(crate::auth::BareJid, Element)>,
        fx: &mut Effects,
    ) -> Result<(), StanzaError> {
        let x = el.child("x", NS_USER).expect("checked");
        let room = rooms
            .map
            .get_mut(room_jid)
            .ok_or(StanzaError::ItemNotFound)?;
        if let Some(decline) = x.child("decline", NS_USER) {
            let to = decline
                .attr("to")
                .and_then(|t| Jid::parse(t).ok())
                .ok_or(StanzaError::BadRequest)?;
            let mut d = Element::new("decline", NS_USER).with_attr("from", s.user.to_string());
            if let Some(r) = decline.child("reason", NS_USER) {
                d.push_child(r.clone());
            }
            let m = Element::new("message", NS_CLIENT)
                .with_attr("from", room_jid)
                .with_child(Element::new("x", NS_USER).with_child(d));
            push_to_user(&to, m, out, offline);
            return Ok(());
        }
        let me = room
            .by_jid(&s.jid)
            .cloned()
            .ok_or(StanzaError::NotAcceptable)?;
        let invites: Vec<&Element> = x.children_named("invite", NS_USER).collect();
        if invites.is_empty() {
            return Err(StanzaError::BadRequest);
        }
        let my_aff = room.affiliation(&s.user.to_string());
        for invite in invites {
            let to = invite
                .attr("to")
                .and_then(|t| Jid::parse(t).ok())
                .filter(|j| j.local().is_some())
                .ok_or(StanzaError::JidMalformed)?;
            let invitee = to.bare().to_string();
            if room.config.members_only {
                // §7.8.1: in a members-only room an admin's invitation makes
                // the invitee a member; others may not invite.
                if my_aff < Affiliation::Admin {
                    return Err(StanzaError::Forbidden);
                }
                if room.affiliation(&invitee) == Affiliation::None {
                    let count = room.affiliations.len();
                    if count >= self.muc.config.max_affiliations {
                        return Err(StanzaError::ResourceConstraint);
                    }
                    room.set_affiliation(&invitee, Affiliation::Member);
                    if room.config.persistent {
                        self.muc.save(room, fx);
                    }
                }
            }
            let mut inv = Element::new("invite", NS_USER).with_attr("from", s.jid.to_string());
            if let Some(r) = invite.child("reason", NS_USER) {
                inv.push_child(r.clone());
            }
            let mut ux = Element::new("x", NS_USER).with_child(inv);
            if room.config.password_protected {
                ux.push_child(
                    Element::new("password", NS_USER).with_text(room.config.password.clone()),
                );
            }
            let m = Element::new("message", NS_CLIENT)
                .with_attr("from", room_jid)
                .with_child(ux)
                .with_child(
                    Element::new("body", NS_CLIENT)
                        .with_text(format!("{} invites you to the room {room_jid}", me.nick)),
                );
            push_to_user(&to, m, out, offline);
        }
        Ok(())
    }

    /// An iq to `room/nick`: XEP-0410 self-ping is answered here; other
    /// requests and their answers are passed between occupants (§7.2.4).
    pub(crate) fn muc_occupant_iq(&self, s: &ImSession, el: Element, to: &Jid, fx: &mut Effects) {
        let room_jid = to.bare().to_string();
        let nick = to.resource().unwrap_or("");
        let request = matches!(el.attr("type"), Some("get" | "set"));
        let mut out = Outbox::default();
        let r = {
            let rooms = self.muc.rooms();
            let room = rooms.map.get(&room_jid);
            let me = room.and_then(|r| r.by_jid(&s.jid));
            match (room, me) {
                (None, _) => Err(StanzaError::ItemNotFound),
                (Some(_), None) => Err(StanzaError::NotAcceptable),
                (Some(room), Some(me)) => {
                    let ping = el.child("ping", NS_PING).is_some();
                    if me.nick == nick && ping && request {
                        fx.reply(iq_result(&el, None));
                        Ok(())
                    } else if let Some(target) = room.by_nick(nick) {
                        let mut fwd = el.clone();
                        fwd.set_attr("from", format!("{room_jid}/{}", me.nick));
                        out.push(&target.jid, fwd);
                        Ok(())
                    } else {
                        Err(StanzaError::ItemNotFound)
                    }
                }
            }
        };
        match r {
            Err(e) if request => fx.error(&el, e),
            Err(_) => {}
            Ok(()) => self.muc_send(&s.jid, out, fx),
        }
    }
}

/// `o`'s presence to every occupant, with `codes` (and 110 for itself).
pub(crate) fn broadcast_presence(room: &Room, o: &Occupant, codes: &[u16], out: &mut Outbox) {
    for r in &room.occupants {
        let own = r.jid == o.jid;
        let mut p = presence_of(room, o, room.shows_jids_to(r.role) || own);
        let mut all = codes.to_vec();
        if own {
            all.push(110);
        } else {
            all.retain(|c| *c != 201 && *c != 100 && *c != 170);
        }
        add_status(&mut p, &all);
        out.push(&r.jid, p);
    }
}

/// A message from the room to a user: to a full JID straight, to a bare
/// JID through its best resource or offline storage.
fn push_to_user(
    to: &Jid,
    m: Element,
    out: &mut Outbox,
    offline: &mut Vec<(crate::auth::BareJid, Element)>,
) {
    if to.resource().is_some() {
        out.push(to, m);
    } else if let Some(bare) = to.to_bare() {
        offline.push((bare.clone(), m.with_attr("to", bare.to_string())));
    }
}

/// §7.5: a private message, from the sender's occupant JID to the
/// recipient's real JID.
fn private_message(
    rooms: &Rooms,
    s: &ImSession,
    el: &Element,
    room_jid: &str,
    nick: &str,
    out: &mut Outbox,
) -> Result<(), StanzaError> {
    let room = rooms.map.get(room_jid).ok_or(StanzaError::ItemNotFound)?;
    let me = room.by_jid(&s.jid).ok_or(StanzaError::NotAcceptable)?;
    let target = room.by_nick(nick).ok_or(StanzaError::ItemNotFound)?;
    if !room.config.allow_pm.allows(me.role) {
        return Err(StanzaError::Forbidden);
    }
    let mut m = el.clone();
    m.set_attr("from", format!("{room_jid}/{}", me.nick));
    m.remove_children("stanza-id", NS_SID);
    if m.child("x", NS_USER).is_none() {
        m.push_child(Element::new("x", NS_USER));
    }
    out.push(&target.jid, m);
    Ok(())
}
