//! What goes out to the client: the queue pumped into PUBLISHes (within
//! the client's Receive Maximum and Maximum Packet Size, with topic
//! aliases), in-flight messages sent again after a resume, and what a
//! narrower token may no longer read dropped.

use super::*;

impl Connection {
    /// Drops an acknowledged (or undeliverable) message's stored copy.
    pub(super) fn done_with(&self, slot: &Slot, f: Option<InFlight>) {
        if let Some(seq) = f.and_then(|f| f.item.seq) {
            self.broker.unstore_queued(slot, seq);
        }
    }

    /// A new grant may allow less: subscriptions it would refuse now go
    /// (after a resume or a re-authentication with a narrower token), and
    /// so do the messages queued on topics it may not read (they are
    /// dropped, with a log line, not delivered).
    pub(super) fn drop_unauthorized_subscriptions(&mut self) {
        let Phase::Live(l) = &self.phase else { return };
        let (slot, domain) = (l.slot.clone(), l.domain.clone());
        let Some(scopes) = l.grant.as_ref().map(|g| g.scopes().clone()) else {
            return;
        };
        let filters: Vec<String> = slot.lock().subscriptions.keys().cloned().collect();
        let mut dropped = false;
        for f in filters {
            let inner = topics::split_shared(&f).map_or(f.as_str(), |(_, inner)| inner);
            if !auth::may(Some(&scopes), Action::Subscribe(inner)) {
                self.broker.unsubscribe(&domain, &slot, &f);
                dropped = true;
            }
        }
        if dropped {
            self.persist_session(&slot, true);
        }
        // Queued, not yet sent: dropped. What is in flight was sent under
        // the old token and its packet ids are the client's too: the
        // protocol's handshake finishes it.
        let who = crate::mqtt::acl::Who::of(slot.address());
        let acl = self.broker.acl.load();
        let readable = |m: &Routed| {
            auth::may(Some(&scopes), Action::Subscribe(&m.publish.topic))
                && acl.allows(who, crate::mqtt::acl::Request::Read, &m.publish.topic)
        };
        let gone = slot.lock().take_unwanted(|q| readable(&q.msg));
        if gone.is_empty() {
            return;
        }
        tracing::info!(
            queued = gone.len(),
            "MQTT messages dropped: the session's new token may not read their topics"
        );
        for q in gone {
            crate::metrics::metrics().dropped(crate::metrics::DropReason::NotAuthorized);
            if let Some(seq) = q.seq {
                self.broker.unstore_queued(&slot, seq);
            }
        }
        self.needs_flush = true;
    }

    /// After a resume: re-send unacknowledged PUBLISHes (DUP) and PUBRELs.
    pub(super) fn resend_inflight(&mut self) {
        let Phase::Live(l) = &self.phase else { return };
        let (slot, version) = (l.slot.clone(), l.version);
        let now = self.broker.now_ms();
        let st = slot.lock();
        for (pid, f) in st.inflight.iter() {
            match f.stage {
                Stage::Published => {
                    let ids = (!f.item.sub_ids.is_empty()).then_some(f.item.sub_ids.as_slice());
                    let d = Delivery {
                        qos: f.item.qos,
                        packet_id: *pid,
                        retain: f.item.retain,
                        dup: true,
                        subscription_identifiers: ids,
                        message_expiry: f.item.msg.remaining_expiry(now),
                        // A resend on a new connection names its topic.
                        topic_alias: None,
                    };
                    if codec::encode_publish(&f.item.msg.publish, &d, version, &mut self.out)
                        .is_ok()
                    {
                        crate::metrics::metrics().mqtt_sent[d.qos as usize].inc();
                    }
                }
                Stage::Released => {
                    let _ = codec::encode(
                        &Packet::PubRel(Ack {
                            packet_id: *pid,
                            reason_code: 0,
                            properties: Properties::default(),
                        }),
                        version,
                        &mut self.out,
                    );
                }
            }
        }
    }

    /// Moves queued messages into `out` within the client's Receive Maximum.
    /// Returns true when more are waiting (call again after writing).
    pub fn pump(&mut self) -> bool {
        let Phase::Live(l) = &mut self.phase else {
            return false;
        };
        if l.slot.generation() != l.generation {
            // Taken over: the queue belongs to the new connection now.
            return false;
        }
        let (slot, version, window, max_packet) = (
            l.slot.clone(),
            l.version,
            l.client_receive_max as usize,
            l.client_max_packet,
        );
        let now = self.broker.now_ms();
        let mut st = slot.lock();
        let mut moved = 0;
        while moved < PUMP_BATCH && self.out.len() < PUMP_BYTES {
            let Some(front) = st.front() else { break };
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= window {
                break;
            }
            let item = st.dequeue(now).expect("front exists");
            moved += 1;
            // Read once: the value sent is the one that was checked.
            let expiry_left = item.msg.remaining_expiry(now);
            if expiry_left == Some(0) {
                crate::metrics::metrics().dropped(crate::metrics::DropReason::Expired);
                if let Some(seq) = item.seq {
                    self.broker.unstore_queued(&slot, seq);
                }
                continue;
            }
            let pid = if item.qos == QoS::AtMostOnce {
                0
            } else {
                st.alloc_pid().unwrap_or(0)
            };
            let ids = (!item.sub_ids.is_empty()).then_some(item.sub_ids.as_slice());
            let mut d = Delivery {
                qos: item.qos,
                packet_id: pid,
                retain: item.retain,
                dup: false,
                subscription_identifiers: ids,
                // 3.3.2.3.3: minus the time it waited here.
                message_expiry: expiry_left,
                topic_alias: l.out_aliases.choose(&item.msg.publish.topic),
            };
            if let Some(max) = max_packet {
                let fits = |d: &Delivery<'_>| {
                    codec::publish_encoded_len(&item.msg.publish, d, version)
                        .is_ok_and(|n| n <= max as usize)
                };
                // A new alias adds its 3 bytes to the topic: without it
                // the message may still fit.
                if !fits(&d) && matches!(d.topic_alias, Some((_, true))) {
                    d.topic_alias = None;
                }
                // Spec 3.1.2.11.4: never send a packet over the client's maximum; drop it.
                if !fits(&d) {
                    crate::metrics::metrics()
                        .dropped(crate::metrics::DropReason::OverClientMaxPacket);
                    if let Some(seq) = item.seq {
                        self.broker.unstore_queued(&slot, seq);
                    }
                    continue;
                }
            }
            if codec::encode_publish(&item.msg.publish, &d, version, &mut self.out).is_err() {
                continue;
            }
            crate::metrics::metrics().mqtt_sent[d.qos as usize].inc();
            if let Some(a) = d.topic_alias {
                l.out_aliases.sent(&item.msg.publish.topic, a);
            }
            self.broker
                .stats
                .delivered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let (QoS::ExactlyOnce, Some(seq)) = (item.qos, item.seq) {
                // Stored before it goes out: a restart resends it with this
                // id (DUP), never as a new message.
                self.broker.mark_sent(&slot, seq, pid, &item);
                self.needs_flush = true;
            }
            if item.qos != QoS::AtMostOnce {
                st.inflight.insert(
                    pid,
                    InFlight {
                        item,
                        stage: Stage::Published,
                    },
                );
            }
        }
        let more = st
            .front()
            .is_some_and(|f| f.qos == QoS::AtMostOnce || st.inflight.len() < window);
        // Drained: an idle session keeps no queue memory.
        st.release_idle_queue();
        // Publishers waiting for room in this queue may go on.
        let senders = st.room_made(self.broker.limits());
        drop(st);
        crate::session::wake_senders(senders);
        more
    }
}
