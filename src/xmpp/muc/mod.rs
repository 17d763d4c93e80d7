//! XEP-0045 Multi-User Chat on `conference.<host>` (see [`super::services`]).
//!
//! Not served yet: the service is off unless `[muc] enabled = true`, and then
//! it answers only service discovery.

use serde::Deserialize;

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::services::refuse;
use super::stanza::{iq_result, NS_DISCO_INFO, NS_DISCO_ITEMS};

/// The `[muc]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// Whether `conference.<host>` is served.
    pub enabled: bool,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig { enabled: false }
    }
}

impl MucConfig {
    /// Checks the ranges; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

impl ImServer {
    /// A stanza to `conference.<host>` or a room under it.
    pub(crate) async fn muc_stanza(&self, _s: &mut ImSession, el: Element, fx: &mut Effects) {
        let to_service = el
            .attr("to")
            .is_some_and(|t| !t.contains('@') && !t.contains('/'));
        let query = el.elements().next();
        match (el.name.as_str(), el.attr("type"), query) {
            ("iq", Some("get"), Some(q)) if to_service && q.name == "query" => {
                let answer = if q.ns == NS_DISCO_INFO {
                    Element::new("query", NS_DISCO_INFO)
                        .with_child(
                            Element::new("identity", NS_DISCO_INFO)
                                .with_attr("category", "conference")
                                .with_attr("type", "text")
                                .with_attr("name", "Chatrooms"),
                        )
                        .with_child(
                            Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO),
                        )
                } else if q.ns == NS_DISCO_ITEMS {
                    Element::new("query", NS_DISCO_ITEMS)
                } else {
                    return refuse(&el, fx);
                };
                fx.reply(iq_result(&el, Some(answer)));
            }
            _ => refuse(&el, fx),
        }
    }
}
