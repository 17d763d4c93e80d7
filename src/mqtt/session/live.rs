//! The live session: what each packet does once CONNECT succeeded — publish
//! (aliases, authorization, routing, retained, acknowledgements), the QoS
//! handshakes, subscribe/unsubscribe, DISCONNECT and re-authentication.

use std::sync::Arc;

use super::*;
use crate::bridge::Want;
use crate::mqtt::acl::{Request, Who};

impl Connection {
    pub(super) fn on_live(&mut self, p: Packet) -> Next {
        match p {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(a) => self.complete(a.packet_id, |f| {
                f.stage == Stage::Published && f.item.qos == QoS::AtLeastOnce
            }),
            Packet::PubRec(a) => {
                let slot = self.live().slot.clone();
                let found = {
                    let mut st = slot.lock();
                    match st.inflight.get_mut(&a.packet_id) {
                        Some(f) if f.item.qos == QoS::ExactlyOnce => {
                            if a.reason_code >= 0x80 {
                                let f = st.inflight.remove(&a.packet_id);
                                if let Some(seq) = f.and_then(|f| f.item.seq) {
                                    self.broker.unstore_queued(&slot, seq);
                                }
                                None
                            } else {
                                f.stage = Stage::Released;
                                if let Some(seq) = f.item.seq {
                                    self.broker.mark_released(&slot, seq, a.packet_id);
                                    self.needs_flush = true;
                                }
                                Some(true)
                            }
                        }
                        _ => Some(false),
                    }
                };
                match found {
                    Some(true) => self.ack(Packet::PubRel, a.packet_id, reason::SUCCESS),
                    Some(false) => self.ack(
                        Packet::PubRel,
                        a.packet_id,
                        reason::PACKET_IDENTIFIER_NOT_FOUND,
                    ),
                    None => {
                        self.pump();
                    }
                }
                Next::Continue
            }
            Packet::PubComp(a) => self.complete(a.packet_id, |f| f.stage == Stage::Released),
            Packet::PubRel(a) => {
                let slot = self.live().slot.clone();
                let (known, persistent) = {
                    let mut st = slot.lock();
                    (st.incoming_qos2.remove(&a.packet_id), st.expiry > 0)
                };
                if known && persistent {
                    self.broker.unstore_incoming_qos2(&slot, a.packet_id);
                    self.needs_flush = true;
                }
                self.ack(
                    Packet::PubComp,
                    a.packet_id,
                    if known {
                        reason::SUCCESS
                    } else {
                        reason::PACKET_IDENTIFIER_NOT_FOUND
                    },
                );
                Next::Continue
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Next::Continue
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Auth(a) => self.on_reauth(a),
            // A second CONNECT, or server-only packets from a client.
            _ => self.disconnect(reason::PROTOCOL_ERROR),
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Next {
        crate::metrics::metrics().mqtt_received[publish.qos as usize].inc();
        let topic_limits = (
            self.settings.limits.max_topic_length,
            self.settings.limits.max_topic_levels,
        );
        let alias_max = self.settings.topic_alias_maximum;
        let receive_max = self.settings.receive_maximum as usize;
        let l = self.live();
        if let Some(alias) = publish.properties.topic_alias {
            if alias == 0 || alias > alias_max {
                return self.disconnect(reason::TOPIC_ALIAS_INVALID);
            }
            if publish.topic.is_empty() {
                match l.aliases.iter().find(|(a, _)| *a == alias) {
                    Some((_, t)) => publish.topic = t.clone(),
                    None => return self.disconnect(reason::PROTOCOL_ERROR),
                }
            } else {
                match l.aliases.iter_mut().find(|(a, _)| *a == alias) {
                    Some((_, t)) => *t = publish.topic.clone(),
                    None => l.aliases.push((alias, publish.topic.clone())),
                }
            }
        }
        if !topics::valid_topic_name(&publish.topic)
            || !topics::within(&publish.topic, topic_limits)
        {
            return self.disconnect(reason::TOPIC_NAME_INVALID);
        }
        let (slot, domain, version) = (l.slot.clone(), l.domain.clone(), l.version);
        let (qos, pid) = (publish.qos, publish.packet_id);
        if qos == QoS::ExactlyOnce {
            let mut st = slot.lock();
            if st.incoming_qos2.contains(&pid) {
                // A re-sent PUBLISH we already routed: acknowledge, don't route twice.
                drop(st);
                self.ack(Packet::PubRec, pid, reason::SUCCESS);
                return Next::Continue;
            }
            if st.incoming_qos2.len() >= receive_max {
                drop(st);
                return self.disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED);
            }
            st.incoming_qos2.insert(pid);
            let persistent = st.expiry > 0;
            drop(st);
            if persistent {
                self.broker.store_incoming_qos2(&slot, pid);
                self.needs_flush = true;
            }
        }
        let want = self
            .broker
            .bridge
            .get()
            .and_then(|b| b.wants(&domain.name, &publish.topic));
        let direct = want == Some(Want::Direct);
        // MQTT 4.7.2: `$` topics are the server's ($SYS and the like), not
        // the clients' to publish on — but for direct addressing through
        // the bridge (`$xmpp/<bare JID>`).
        let refused = if (publish.topic.starts_with('$') && !direct)
            || !auth::may(self.scopes(), Action::Publish(&publish.topic))
        {
            Some(reason::NOT_AUTHORIZED)
        } else {
            self.broker
                .acl
                .load()
                .check(Who::of(slot.address()), Request::Publish, &publish.topic)
                .err()
        };
        let mut code = reason::SUCCESS;
        let mut crossing = None;
        if let Some(refusal) = refused {
            tracing::info!(topic = %publish.topic, "MQTT publish not authorized");
            code = refusal;
        } else if direct {
            // A chat message: for the addressee only, never routed or
            // retained on the MQTT side.
            crossing = Some(Arc::new(self.broker.routed(publish, slot.id())));
        } else {
            let msg = Arc::new(self.broker.routed(publish, slot.id()));
            if msg.publish.retain {
                if self.broker.retain(&domain, &msg) {
                    self.needs_flush = true;
                } else if version == Version::V5 {
                    // Not accepted (a reason code of 0x80 or more): neither
                    // kept nor routed, and the publisher is told.
                    tracing::info!(topic = %msg.publish.topic, "retained quota reached: publish refused");
                    code = reason::QUOTA_EXCEEDED;
                } else {
                    // 3.1.1 has no way to say so: routed like a plain
                    // message, the retained copy not kept (logged).
                    tracing::warn!(topic = %msg.publish.topic, "retained quota reached: routed without retaining (MQTT 3.1.1)");
                }
            }
            if code == reason::SUCCESS {
                let routing = self.broker.publish(&domain, &msg);
                self.needs_flush |= routing.stored;
                // Flow control, whatever the QoS: a subscriber that reads
                // is never a reason to drop; the publisher waits instead.
                if let Some(c) = routing.congested {
                    self.congested = Some(c);
                }
                if routing.receivers == 0 && version == Version::V5 {
                    code = reason::NO_MATCHING_SUBSCRIBERS;
                }
                if want.is_some() || self.broker.peers.get().is_some() {
                    crossing = Some(msg);
                }
            }
        }
        if let Some(msg) = crossing {
            // Acknowledged once the bridge has carried it across and the
            // other nodes have it.
            let forward = !direct && self.broker.peers.get().is_some();
            self.live().bridging = Some(Box::new(Crossing {
                msg,
                want,
                forward,
                qos,
                packet_id: pid,
                code,
            }));
            return Next::Continue;
        }
        self.answer_publish(&slot, qos, pid, code);
        Next::Continue
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Next {
        let (slot, domain) = {
            let l = self.live();
            (l.slot.clone(), l.domain.clone())
        };
        let max_filters = self.settings.limits.max_filters_per_subscribe;
        let max_subs = self.settings.limits.max_subscriptions;
        let sub_id = s.properties.subscription_identifiers.first().copied();
        // Filters beyond the per-packet cap are answered 0x97 and not looked
        // at. A filter named twice is one subscription (3.8.4: the later
        // replaces the earlier), decided once, at its last occurrence.
        let taken = s.filters.len().min(max_filters);
        let mut last: std::collections::HashMap<&str, usize> = Default::default();
        for (i, (filter, opts)) in s.filters[..taken].iter().enumerate() {
            if topics::split_shared(filter).is_some() && opts.no_local {
                // 3.8.3.1: No Local on a shared subscription.
                return self.disconnect(reason::PROTOCOL_ERROR);
            }
            last.insert(filter.as_str(), i);
        }
        let mut codes = vec![reason::QUOTA_EXCEEDED; s.filters.len()];
        let mut retained = Vec::new();
        // Retained messages go into the queue without waiting: at most up to
        // the session's hard cap, the rest stays retained.
        let mut room = self.broker.unwaited_room(&slot);
        for (i, (filter, opts)) in s.filters[..taken].iter().enumerate() {
            if last.get(filter.as_str()) != Some(&i) {
                continue;
            }
            // A shared subscription is authorized, and matches, by the
            // filter after its group.
            let shared = topics::split_shared(filter);
            let is_new = !slot.lock().subscriptions.contains_key(filter.as_str());
            codes[i] = if !topics::valid_topic_filter(filter)
                || !topics::within(
                    filter,
                    (
                        self.settings.limits.max_topic_length,
                        self.settings.limits.max_topic_levels,
                    ),
                )
                || (topics::is_shared(filter) && shared.is_none())
            {
                reason::TOPIC_FILTER_INVALID
            } else if !auth::may(
                self.scopes(),
                Action::Subscribe(shared.map_or(filter.as_str(), |(_, f)| f)),
            ) {
                reason::NOT_AUTHORIZED
            } else if let Err(refusal) = self.broker.acl.load().check(
                Who::of(slot.address()),
                Request::Subscribe,
                shared.map_or(filter.as_str(), |(_, f)| f),
            ) {
                tracing::info!(filter = %filter, "MQTT subscribe refused by an access rule");
                refusal
            } else if is_new && slot.lock().subscriptions.len() >= max_subs {
                tracing::info!(filter = %filter, "MQTT subscription quota reached");
                reason::QUOTA_EXCEEDED
            } else {
                let existed = self.broker.subscribe(&domain, &slot, filter, *opts, sub_id);
                // 4.8.2: no retained messages for a shared subscription.
                let send_retained = shared.is_none()
                    && match opts.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                if send_retained {
                    let (found, cut) =
                        self.broker
                            .retained_for(&domain, Who::of(slot.address()), filter, room);
                    if cut {
                        tracing::info!(filter = %filter, "retained messages left out: the session's queue is full");
                    }
                    for m in found {
                        room = room.saturating_sub(
                            (m.publish.payload.len() + m.publish.topic.len() + 64) as u64,
                        );
                        let qos = opts.qos.min(m.publish.qos);
                        retained.push(Queued {
                            msg: m,
                            qos,
                            retain: true,
                            sub_ids: sub_id.into_iter().collect(),
                            seq: None,
                        });
                    }
                }
                opts.qos as u8
            };
        }
        for (i, (filter, _)) in s.filters[..taken].iter().enumerate() {
            if let Some(&at) = last.get(filter.as_str()) {
                codes[i] = codes[at];
            }
        }
        self.persist_session(&slot, true);
        self.send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Properties::default(),
            reason_codes: codes,
        }));
        for r in retained {
            self.needs_flush |= self.broker.enqueue(&slot, r).stored;
        }
        Next::Continue
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Next {
        let (slot, domain) = {
            let l = self.live();
            (l.slot.clone(), l.domain.clone())
        };
        let codes = u
            .filters
            .iter()
            .map(|f| {
                if self.broker.unsubscribe(&domain, &slot, f) {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.persist_session(&slot, true);
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Properties::default(),
            reason_codes: codes,
        }));
        Next::Continue
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Next {
        let l = self.live();
        if let Some(e) = d.properties.session_expiry_interval {
            // Spec 3.14.2.2.2: 0 at CONNECT cannot become non-zero now.
            if l.expiry == 0 && e != 0 {
                return self.disconnect(reason::PROTOCOL_ERROR);
            }
            let e = e.min(self.settings.limits.max_session_expiry);
            let l = self.live();
            l.expiry = e;
            l.slot.lock().expiry = e;
        }
        self.will_suppressed = d.reason_code == reason::SUCCESS;
        Next::Close
    }

    fn on_reauth(&mut self, a: Auth) -> Next {
        let l = self.live();
        if !l.uses_enhanced_auth {
            return self.disconnect(reason::PROTOCOL_ERROR);
        }
        let token = match connect::token_of(&a, reason::RE_AUTHENTICATE) {
            Ok(t) => t,
            Err(code) => return self.disconnect(code),
        };
        // Enhanced authentication means the session logged in with a token,
        // so its owner is the account a new token must belong to.
        let owner = l.grant.as_ref().map(|g| g.owner().clone());
        let checked = std::str::from_utf8(&token).ok().map(|t| {
            self.auth
                .token_login(t, owner.as_ref(), auth::Protocol::Mqtt)
        });
        match checked {
            Some(Ok(auth::Login { grant: Some(g), .. })) => {
                tracing::info!(token = %g.token_id(), "MQTT re-authenticated");
                let slot = self.live().slot.clone();
                self.broker.registry().set_grant(&slot, Some(g.clone()));
                self.live().grant = Some(g);
                self.drop_unauthorized_subscriptions();
                self.send(Packet::Auth(Auth {
                    reason_code: reason::SUCCESS,
                    properties: Properties {
                        authentication_method: Some(X_OAUTH2.to_string()),
                        ..Properties::default()
                    },
                }));
                Next::Continue
            }
            Some(Err(e)) => {
                tracing::info!(reason = %e, "MQTT re-authentication refused");
                self.disconnect(reason::NOT_AUTHORIZED)
            }
            _ => self.disconnect(reason::NOT_AUTHORIZED),
        }
    }

    /// The last acknowledgement of an outbound message (PUBACK for QoS 1,
    /// PUBCOMP for QoS 2): forget it, drop its stored copy, send more.
    fn complete(&mut self, packet_id: u16, expected: impl Fn(&InFlight) -> bool) -> Next {
        let slot = self.live().slot.clone();
        let done = {
            let mut st = slot.lock();
            if st.inflight.get(&packet_id).is_some_and(&expected) {
                st.inflight.remove(&packet_id)
            } else {
                None
            }
        };
        self.done_with(&slot, done);
        self.pump();
        Next::Continue
    }
}
