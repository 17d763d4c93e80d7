//! The owner use cases of `pubsub.<host>` (XEP-0060 §8): configure,
//! default, delete, purge, and the subscriptions and affiliations a node's
//! owner manages.

use super::*;

impl ImServer {
    pub(super) async fn pubsub_owner(
        &self,
        s: &ImSession,
        iq: &Element,
        p: &Element,
        host: &str,
        set: bool,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some(verb) = p.elements().next() else {
            fx.error(iq, StanzaError::BadRequest);
            return Ok(());
        };
        if verb.name == "default" && !set {
            let mut n = ServiceNode::new(self.pubsub.default_config(), "");
            n.affiliations.clear();
            let d = Element::new("default", NS_OWNER).with_child(self.pubsub.form(&n));
            fx.reply(result_with(iq, NS_OWNER, d));
            return Ok(());
        }
        let Some((name, cell)) = self.ps_node(iq, verb, host, fx) else {
            return Ok(());
        };
        let mut n = cell.lock().await;
        if !n.is_owner(&s.jid.to_string()) {
            fx.error(iq, StanzaError::Forbidden);
            return Ok(());
        }
        let node_el =
            |tag: &str| Element::new(tag.to_string(), NS_OWNER).with_attr("node", name.clone());
        match (verb.name.as_str(), set) {
            ("configure", false) => {
                let c = node_el("configure").with_child(self.pubsub.form(&n));
                fx.reply(result_with(iq, NS_OWNER, c));
            }
            ("configure", true) => {
                let Some(x) = verb.child("x", NS_DATA) else {
                    fx.error(iq, StanzaError::BadRequest);
                    return Ok(());
                };
                if x.attr("type") != Some("cancel") {
                    let mut next = n.clone();
                    if self.pubsub.configure(&mut next, x).is_err() {
                        fx.error(iq, StanzaError::NotAcceptable);
                        return Ok(());
                    }
                    let gone = next.trim();
                    *n = next;
                    self.pubsub.delete_items(host, &name, &gone);
                    self.pubsub.save_meta(host, &name, &n);
                    fx.flush = true;
                }
                fx.reply(iq_result(iq, None));
            }
            ("delete" | "purge", true) => {
                let subscribers: Vec<String> = n.subscriptions.keys().cloned().collect();
                if verb.name == "purge" {
                    let gone = n.clear();
                    self.pubsub.delete_items(host, &name, &gone);
                    self.pubsub.save_meta(host, &name, &n);
                } else {
                    self.pubsub.remove(host, &name);
                }
                self.bridged_node_emptied(host, &name);
                drop(n);
                fx.flush = true;
                fx.reply(iq_result(iq, None));
                let event = Element::new(verb.name.clone(), NS_EVENT).with_attr("node", name);
                self.ps_send_event(host, &subscribers, event, None, &mut fx.congested);
            }
            ("subscriptions", false) => {
                let mut list = node_el("subscriptions");
                for (jid, subid) in &n.subscriptions {
                    list.push_child(
                        Element::new("subscription", NS_OWNER)
                            .with_attr("jid", jid.clone())
                            .with_attr("subid", subid.clone())
                            .with_attr("subscription", "subscribed"),
                    );
                }
                fx.reply(result_with(iq, NS_OWNER, list));
            }
            ("affiliations", false) => {
                let mut list = node_el("affiliations");
                for (jid, a) in &n.affiliations {
                    list.push_child(
                        Element::new("affiliation", NS_OWNER)
                            .with_attr("jid", jid.clone())
                            .with_attr("affiliation", a.as_str()),
                    );
                }
                fx.reply(result_with(iq, NS_OWNER, list));
            }
            ("subscriptions" | "affiliations", true) => {
                let subs = verb.name == "subscriptions";
                let mut next = n.clone();
                for e in verb.elements() {
                    let jid = e.attr("jid").and_then(|j| Jid::parse(j).ok());
                    let Some(jid) = jid else {
                        fx.error(iq, StanzaError::JidMalformed);
                        return Ok(());
                    };
                    let ok = if subs {
                        match e.attr("subscription") {
                            Some("none") => {
                                next.subscriptions.remove(&jid.to_string());
                                true
                            }
                            Some("subscribed") => {
                                let id = format!("{}{}", self.push_id(), self.push_id());
                                next.subscriptions.entry(jid.to_string()).or_insert(id);
                                next.subscriptions.len() <= self.pubsub.config.max_subscriptions
                            }
                            _ => false,
                        }
                    } else {
                        match e.attr("affiliation").and_then(Affiliation::parse) {
                            Some(a) => next.set_affiliation(&jid.bare().to_string(), a),
                            None => false,
                        }
                    };
                    if !ok {
                        fx.error(iq, StanzaError::NotAcceptable);
                        return Ok(());
                    }
                }
                *n = next;
                self.pubsub.save_meta(host, &name, &n);
                fx.flush = true;
                fx.reply(iq_result(iq, None));
            }
            _ => fx.error(iq, StanzaError::BadRequest),
        }
        Ok(())
    }
}
