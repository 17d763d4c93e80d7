//! `mqtt.<host>`: MQTT clients as XMPP addresses, the direct-addressing
//! mode of the bridge ([`crate::bridge`]). `<client-id>@mqtt.<host>` is the
//! MQTT session with that client id: a chat message to it is published to
//! the session's `$xmpp/inbox/<sender's bare JID>` (if it subscribed
//! there), and an MQTT publish to `$xmpp/<bare JID>` arrives from it as a
//! chat message — archived, kept offline, and subject to the recipient's
//! block list like any other.

use super::element::{is_xml_char, Element};
use super::im::{Effects, ImServer, ImSession};
use super::mam::NS_SID;
use super::router::Congestion;
use super::services::refuse;
use super::stanza::{iq_result, Jid, StanzaError, NS_DISCO_INFO};
use super::stream::NS_CLIENT;
use crate::auth::BareJid;
use crate::mqtt::codec::reason;

impl ImServer {
    /// A stanza to `mqtt.<host>` or to a device under it.
    pub(crate) async fn mqtt_stanza(&self, s: &mut ImSession, el: Element, fx: &mut Effects) {
        let Some(to) = el.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return refuse(&el, fx);
        };
        let host = to
            .domain()
            .strip_prefix("mqtt.")
            .unwrap_or_default()
            .to_string();
        match (el.name.as_str(), to.local(), el.attr("type")) {
            ("iq", None, Some("get")) if el.child("query", NS_DISCO_INFO).is_some() => {
                let q = Element::new("query", NS_DISCO_INFO).with_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "gateway")
                        .with_attr("type", "mqtt")
                        .with_attr("name", "MQTT devices"),
                );
                let q = q.with_child(
                    Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO),
                );
                fx.reply(iq_result(&el, Some(q)));
            }
            ("message", Some(client), None | Some("chat" | "normal")) => {
                let Some(body) = el.child("body", NS_CLIENT).map(|b| b.text()) else {
                    // Chat states and receipts have nowhere to go.
                    return;
                };
                let Some(bridge) = self.bridge.get() else {
                    return fx.error(&el, StanzaError::ServiceUnavailable);
                };
                let from = s.user.to_string();
                match bridge.to_device(&host, client, &from, &body, &mut fx.congested) {
                    Ok(stored) => fx.flush |= stored,
                    Err(()) => fx.error(&el, StanzaError::ServiceUnavailable),
                }
            }
            _ => refuse(&el, fx),
        }
    }

    /// An MQTT client's publish to `$xmpp/<to>`: a chat message from
    /// `device` (`<client-id>@mqtt.<host>`) of `account`. `Ok(true)` when
    /// the store was written (offline storage, archive); `Err` is the MQTT
    /// reason code.
    pub async fn message_from_device(
        &self,
        device: &str,
        account: &str,
        to: &str,
        payload: &[u8],
        cong: &mut Congestion,
    ) -> Result<bool, u8> {
        if !account.contains('@') {
            // Anonymous clients have no identity to speak with.
            return Err(reason::NOT_AUTHORIZED);
        }
        let Ok(bare) = BareJid::parse(to) else {
            return Err(reason::TOPIC_NAME_INVALID);
        };
        if !self.is_hosted(bare.domain()) || !self.account_exists(&bare).await {
            return Err(reason::TOPIC_NAME_INVALID);
        }
        let body = match std::str::from_utf8(payload) {
            Ok(b) if !b.is_empty() && b.chars().all(is_xml_char) => b,
            _ => return Err(reason::PAYLOAD_FORMAT_INVALID),
        };
        let Ok(from) = Jid::parse(device) else {
            return Err(reason::TOPIC_NAME_INVALID);
        };
        let key = bare.to_string();
        if self.blocklist(&key).await.blocks(&from) {
            return Err(reason::NOT_AUTHORIZED);
        }
        let mut el = Element::new("message", NS_CLIENT)
            .with_attr("from", device)
            .with_attr("to", key.clone())
            .with_attr("type", "chat")
            .with_attr("id", self.push_id())
            .with_child(Element::new("body", NS_CLIENT).with_text(body));
        let archive_id = if self.archives_with(&bare, &from).await {
            let id = self.mam.next_id();
            el.push_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", key.clone())
                    .with_attr("id", super::mam::id_text(id)),
            );
            Some(id)
        } else {
            None
        };
        let bytes = bytes::Bytes::from(el.to_bytes(NS_CLIENT));
        let got = self.router.deliver_to_best_ids(&key, &bytes, cong);
        let mut stored = false;
        if got.is_empty() {
            let mut fx = Effects::default();
            if !self.store_offline(&bare, &el, &mut fx).await {
                return Err(reason::QUOTA_EXCEEDED);
            }
            stored = true;
        }
        if let Some(id) = archive_id {
            self.mam.put(&key, id, device, false, &el);
            stored = true;
        }
        Ok(stored)
    }
}
