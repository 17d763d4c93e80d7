//! The iqs the server answers itself: for the server's domain, service
//! discovery (XEP-0030), ping (XEP-0199) and software version (XEP-0092); for
//! an account's bare JID, its roster (from the owner only) and discovery.
//! Anything else is `service-unavailable` (RFC 6120 §8.3.3.19).

use super::blocking::NS_BLOCKING;
use super::carbons::NS_CARBONS;
use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::mam::{NS_MAM, NS_SID};
use super::pep::{FEATURES as PEP_FEATURES, NS_OWNER as NS_PUBSUB_OWNER, NS_PUBSUB};
use super::stanza::{
    iq_result, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_ROSTER, NS_VERSION,
};
use super::storage::{NS_PRIVATE, NS_VCARD};
use crate::auth::BareJid;

/// Features of the server's domain.
const SERVER_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    "msgoffline",
    NS_CARBONS,
    NS_BLOCKING,
    NS_PRIVATE,
    NS_VCARD,
];

/// Features an account advertises on its behalf.
const ACCOUNT_FEATURES: &[&str] = &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MAM, NS_SID, NS_VCARD];

fn info(category: &str, kind: &str, name: Option<&str>, features: &[&str]) -> Element {
    let mut identity = Element::new("identity", NS_DISCO_INFO)
        .with_attr("category", category)
        .with_attr("type", kind);
    if let Some(n) = name {
        identity.set_attr("name", n);
    }
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(identity);
    for f in features {
        q.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
    }
    q
}

/// The single payload child of a request iq (C2s checked there is one).
fn payload(iq: &Element) -> Option<&Element> {
    iq.elements().next()
}

impl ImServer {
    /// An iq to a hosted domain itself.
    pub(crate) async fn server_iq(&self, s: &mut ImSession, iq: &Element, fx: &mut Effects) {
        let ty = iq.attr("type").unwrap_or("");
        if !matches!(ty, "get" | "set") {
            // Answers to what the server asked a client (entity
            // capabilities for PEP).
            return self.pep_caps_answer(s, iq, fx).await;
        }
        let Some(p) = payload(iq) else {
            return fx.error(iq, StanzaError::BadRequest);
        };
        let answer = match (ty, p.ns.as_str(), p.name.as_str()) {
            ("get", NS_DISCO_INFO, "query") if p.attr("node").is_none() => {
                Some(info("server", "im", Some("Petrel"), SERVER_FEATURES))
            }
            ("get", NS_DISCO_ITEMS, "query") => {
                let host = iq.attr("to").unwrap_or(&self.hosts()[0]);
                let mut q = Element::new("query", NS_DISCO_ITEMS);
                // The services are the domain's own items, not a node's.
                let services = p.attr("node").is_none().then(|| self.services.items(host));
                for (jid, name) in services.into_iter().flatten() {
                    q.push_child(
                        Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", jid)
                            .with_attr("name", name),
                    );
                }
                Some(q)
            }
            ("get", NS_PING, "ping") => None,
            ("set", NS_CARBONS, "enable" | "disable") => {
                Self::set_carbons(s, p);
                None
            }
            ("get", NS_VERSION, "query") => Some(
                Element::new("query", NS_VERSION)
                    .with_child(Element::new("name", NS_VERSION).with_text("Petrel"))
                    .with_child(
                        Element::new("version", NS_VERSION).with_text(env!("CARGO_PKG_VERSION")),
                    ),
            ),
            _ => return fx.error(iq, StanzaError::ServiceUnavailable),
        };
        fx.reply(iq_result(iq, answer));
    }

    /// A request iq to an account's bare JID (or with no `to`: the sender's own).
    pub(crate) async fn account_iq(
        &self,
        s: &mut ImSession,
        iq: &Element,
        target: &BareJid,
        fx: &mut Effects,
    ) {
        let Some(p) = payload(iq) else {
            return fx.error(iq, StanzaError::BadRequest);
        };
        let own = *target == s.user;
        let get = iq.attr("type") == Some("get");
        match (p.ns.as_str(), p.name.as_str()) {
            (NS_ROSTER, "query") if own => self.roster_iq(s, iq, fx).await,
            (NS_PING, "ping") if own && get => fx.reply(iq_result(iq, None)),
            (NS_BLOCKING, _) if own => self.blocking_iq(s, iq, p, fx).await,
            (NS_MAM, "query" | "prefs") if own => self.mam_iq(s, iq, p, fx).await,
            (NS_PRIVATE, "query") => self.private_iq(s, iq, p, target, fx).await,
            (NS_VCARD, "vCard") => self.vcard_iq(s, iq, p, target, fx).await,
            (NS_PUBSUB | NS_PUBSUB_OWNER, "pubsub") => self.pep_iq(s, iq, p, target, fx).await,
            (NS_CARBONS, "enable" | "disable") if own && !get => {
                Self::set_carbons(s, p);
                fx.reply(iq_result(iq, None));
            }
            (NS_DISCO_INFO | NS_DISCO_ITEMS, "query")
                if get && self.may_discover(s, target).await =>
            {
                let answer = if p.attr("node").is_some() {
                    // Nodes are items, not entities with info of their own.
                    return fx.error(iq, StanzaError::ItemNotFound);
                } else if p.ns == NS_DISCO_INFO {
                    let mut q = info("account", "registered", None, ACCOUNT_FEATURES);
                    q.push_child(
                        Element::new("identity", NS_DISCO_INFO)
                            .with_attr("category", "pubsub")
                            .with_attr("type", "pep"),
                    );
                    for f in PEP_FEATURES {
                        q.push_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *f));
                    }
                    q
                } else {
                    self.pep_disco_items(target, &s.user).await
                };
                fx.reply(iq_result(iq, Some(answer)));
            }
            _ => fx.error(iq, StanzaError::ServiceUnavailable),
        }
    }

    /// XEP-0280 §4–5: this session's carbons on or off (asking twice is
    /// no error).
    fn set_carbons(s: &ImSession, p: &Element) {
        s.route.lock().carbons = p.name == "enable";
    }

    /// The owner, and contacts the owner lets see its presence, may discover
    /// an account; to anyone else it does not exist (XEP-0030 §8).
    async fn may_discover(&self, s: &ImSession, target: &BareJid) -> bool {
        if *target == s.user {
            return true;
        }
        matches!(self.roster.get(target, &s.user.to_string()).await,
            Ok(Some(i)) if i.subscription.has_from())
    }
}
