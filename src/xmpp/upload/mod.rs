//! XEP-0363 HTTP File Upload on `upload.<host>` (see [`super::services`]).
//!
//! Not served yet: the service is off unless `[upload] enabled = true`, and
//! then it answers only service discovery.

use serde::Deserialize;

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::services::refuse;
use super::stanza::{iq_result, NS_DISCO_INFO};

/// The `[upload]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Whether `upload.<host>` is served.
    pub enabled: bool,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig { enabled: false }
    }
}

impl UploadConfig {
    /// Checks the ranges; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

impl ImServer {
    /// A stanza to `upload.<host>`.
    pub(crate) async fn upload_stanza(&self, _s: &mut ImSession, el: Element, fx: &mut Effects) {
        let query = el.elements().next();
        match (el.name.as_str(), el.attr("type"), query) {
            ("iq", Some("get"), Some(q)) if q.name == "query" && q.ns == NS_DISCO_INFO => {
                let answer = Element::new("query", NS_DISCO_INFO)
                    .with_child(
                        Element::new("identity", NS_DISCO_INFO)
                            .with_attr("category", "store")
                            .with_attr("type", "file")
                            .with_attr("name", "HTTP File Upload"),
                    )
                    .with_child(
                        Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO),
                    );
                fx.reply(iq_result(&el, Some(answer)));
            }
            _ => refuse(&el, fx),
        }
    }
}
