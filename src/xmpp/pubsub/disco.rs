//! Service discovery on `pubsub.<host>`: the service (identity and
//! features), its nodes, a node's meta-data and its items.

use super::iq::FEATURES;
use super::state::Affiliation;
use crate::store::StoreError;
use crate::xmpp::element::Element;
use crate::xmpp::im::{Effects, ImServer, ImSession};
use crate::xmpp::mam::NS_DATA;
use crate::xmpp::pep::NS_PUBSUB;
use crate::xmpp::stanza::{iq_result, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS};

const NS_META: &str = "http://jabber.org/protocol/pubsub#meta-data";

impl ImServer {
    pub(super) async fn pubsub_info(
        &self,
        s: &ImSession,
        iq: &Element,
        q: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let mut out = Element::new("query", NS_DISCO_INFO);
        match q.attr("node") {
            None => {
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "service")
                        .with_attr("name", "Publish-Subscribe"),
                );
                for f in FEATURES {
                    out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
                }
            }
            Some(name) => {
                let Some(cell) = self.pubsub.node(host, name) else {
                    fx.error(iq, StanzaError::ItemNotFound);
                    return Ok(());
                };
                let n = cell.lock().await;
                if !self.readable(s, &n, &s.jid.to_string(), iq, fx).await {
                    return Ok(());
                }
                out.set_attr("node", name);
                out.push_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "leaf"),
                );
                out.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_PUBSUB));
                let mut x = Element::new("x", NS_DATA).with_attr("type", "result");
                let field = |var: &str, value: &str| {
                    Element::new("field", NS_DATA)
                        .with_attr("var", var)
                        .with_child(Element::new("value", NS_DATA).with_text(value))
                };
                x.push_child(field("FORM_TYPE", NS_META).with_attr("type", "hidden"));
                x.push_child(field("pubsub#title", &n.config.title));
                x.push_child(field("pubsub#access_model", n.config.access.as_str()));
                x.push_child(field("pubsub#publish_model", n.publish_model.as_str()));
                let mut owners = Element::new("field", NS_DATA).with_attr("var", "pubsub#owner");
                for (j, a) in &n.affiliations {
                    if *a == Affiliation::Owner {
                        owners.push_child(Element::new("value", NS_DATA).with_text(j.clone()));
                    }
                }
                x.push_child(owners);
                x.push_child(field(
                    "pubsub#num_subscribers",
                    &n.subscriptions.len().to_string(),
                ));
                out.push_child(x);
            }
        }
        fx.reply(iq_result(iq, Some(out)));
        Ok(())
    }

    pub(super) async fn pubsub_items_disco(
        &self,
        s: &ImSession,
        iq: &Element,
        q: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let service = format!("pubsub.{host}");
        let mut out = Element::new("query", NS_DISCO_ITEMS);
        match q.attr("node") {
            None => {
                for name in self
                    .pubsub
                    .names(host)
                    .into_iter()
                    .take(self.pubsub.config.max_page * 10)
                {
                    out.push_child(
                        Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", service.clone())
                            .with_attr("node", name),
                    );
                }
            }
            Some(name) => {
                let Some(cell) = self.pubsub.node(host, name) else {
                    fx.error(iq, StanzaError::ItemNotFound);
                    return Ok(());
                };
                let n = cell.lock().await;
                if !self.readable(s, &n, &s.jid.to_string(), iq, fx).await {
                    return Ok(());
                }
                out.set_attr("node", name);
                for id in n.order.values() {
                    out.push_child(
                        Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", service.clone())
                            .with_attr("name", id.clone()),
                    );
                }
            }
        }
        fx.reply(iq_result(iq, Some(out)));
        Ok(())
    }
}
