//! What an account keeps as XML for its own clients: XEP-0049 private
//! storage (`jabber:iq:private`: legacy bookmarks, client settings) and
//! XEP-0054 vcard-temp. One store tree, `owner NUL kind NUL key` -> the
//! element as written; at most `max_private_items` private elements per
//! account (each bounded by `max_stanza_size` like the stanza it came in).

use serde::{Deserialize, Serialize};

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::stanza::{iq_result, StanzaError};
use super::stream::read_back;
use super::stream::NS_CLIENT;
use crate::auth::BareJid;
use crate::store::{records, Store, StoreError, Tree};

pub const NS_PRIVATE: &str = "jabber:iq:private";
pub const NS_VCARD: &str = "vcard-temp";

/// Private elements an account may keep, by default.
pub const MAX_PRIVATE: usize = 100;

#[derive(Serialize, Deserialize)]
struct StoredXml {
    xml: Vec<u8>,
}

fn key(owner: &BareJid, kind: &str, name: &str) -> Vec<u8> {
    format!("{owner}\0{kind}\0{name}").into_bytes()
}

/// The account data store.
pub struct AccountXml {
    store: Store,
    pub max_private: usize,
}

impl AccountXml {
    pub fn new(store: Store) -> AccountXml {
        AccountXml {
            store,
            max_private: MAX_PRIVATE,
        }
    }

    async fn get(&self, k: &[u8]) -> Result<Option<Element>, StoreError> {
        Ok(match self.store.get(Tree::AccountXml, k).await? {
            Some(v) => read_back(&records::decode::<StoredXml>("account_xml", &v)?.xml),
            None => None,
        })
    }

    fn put(&self, k: Vec<u8>, el: &Element) {
        let rec = StoredXml {
            xml: el.to_bytes(NS_CLIENT),
        };
        self.store.put(Tree::AccountXml, k, records::encode(&rec));
    }
}

/// A private element's key: its name and namespace.
fn private_name(el: &Element) -> String {
    format!("{{{}}}{}", el.ns, el.name)
}

impl ImServer {
    /// XEP-0049: the owner's own storage only; one child per get, any
    /// number per set, each in a namespace of its own.
    pub(crate) async fn private_iq(
        &self,
        s: &ImSession,
        iq: &Element,
        query: &Element,
        target: &BareJid,
        fx: &mut Effects,
    ) {
        if *target != s.user {
            return fx.error(iq, StanzaError::Forbidden);
        }
        let children: Vec<&Element> = query.elements().collect();
        let reserved = |e: &Element| {
            matches!(e.ns.as_str(), NS_CLIENT | "jabber:server" | NS_PRIVATE) || e.ns.is_empty()
        };
        if children.is_empty() || children.iter().any(|e| reserved(e)) {
            return fx.error(iq, StanzaError::NotAcceptable);
        }
        let get = iq.attr("type") == Some("get");
        if get {
            if children.len() != 1 {
                return fx.error(iq, StanzaError::BadRequest);
            }
            let want = children[0];
            let k = key(&s.user, "private", &private_name(want));
            match self.account_xml.get(&k).await {
                Ok(found) => {
                    let el =
                        found.unwrap_or_else(|| Element::new(want.name.clone(), want.ns.clone()));
                    fx.reply(iq_result(
                        iq,
                        Some(Element::new("query", NS_PRIVATE).with_child(el)),
                    ));
                }
                Err(e) => fx.internal(iq, e),
            }
            return;
        }
        // Set: new names count against the account's limit.
        let prefix = key(&s.user, "private", "");
        let held = match self
            .account_xml
            .store
            .count_prefix(
                Tree::AccountXml,
                &prefix,
                self.account_xml.max_private + children.len(),
            )
            .await
        {
            Ok(n) => n,
            Err(e) => return fx.internal(iq, e),
        };
        let mut new = 0;
        for c in &children {
            let k = key(&s.user, "private", &private_name(c));
            match self.account_xml.store.get(Tree::AccountXml, &k).await {
                Ok(None) => new += 1,
                Ok(Some(_)) => {}
                Err(e) => return fx.internal(iq, e),
            }
        }
        if held + new > self.account_xml.max_private {
            return fx.error(iq, StanzaError::ResourceConstraint);
        }
        for c in children {
            self.account_xml
                .put(key(&s.user, "private", &private_name(c)), c);
        }
        fx.flush = true;
        fx.reply(iq_result(iq, None));
    }

    /// XEP-0054: anyone may read an account's vCard (an empty one when it
    /// has none); only the owner sets it.
    pub(crate) async fn vcard_iq(
        &self,
        s: &ImSession,
        iq: &Element,
        vcard: &Element,
        target: &BareJid,
        fx: &mut Effects,
    ) {
        let k = key(target, "vcard", "");
        if iq.attr("type") == Some("set") {
            if *target != s.user {
                return fx.error(iq, StanzaError::Forbidden);
            }
            self.account_xml.put(k, vcard);
            fx.flush = true;
            return fx.reply(iq_result(iq, None));
        }
        if *target != s.user && !self.account_exists(target).await {
            return fx.error(iq, StanzaError::ServiceUnavailable);
        }
        match self.account_xml.get(&k).await {
            Ok(found) => {
                let el = found.unwrap_or_else(|| Element::new("vCard", NS_VCARD));
                fx.reply(iq_result(iq, Some(el)));
            }
            Err(e) => fx.internal(iq, e),
        }
    }
}
