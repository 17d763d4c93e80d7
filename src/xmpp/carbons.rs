//! XEP-0280 Message Carbons (`urn:xmpp:carbons:2`): every resource of an
//! account that enabled carbons sees both sides of its one-to-one chats.
//!
//! A session turns carbons on or off with an iq (`<enable/>`, `<disable/>`)
//! to its own account or to the server; the flag lives in the session's
//! routing state, so routing reads it without a store access. For an
//! eligible message (§6: `chat`, or `normal` with a body; never one marked
//! `<private/>` or with the XEP-0334 `<no-copy/>` hint, and never a carbon
//! itself):
//! - the sender's other carbon-enabled resources get a `<sent/>` copy;
//! - the recipient's carbon-enabled resources that did not get the message
//!   itself get a `<received/>` copy.
//!
//! Copies are wrapped in XEP-0297 `<forwarded/>` and come from the account's
//! bare JID, so a client can tell them from spoofed ones (§11).

use std::sync::Arc;

use super::element::Element;
use super::router::{Congestion, Route, Router};
use super::stream::NS_CLIENT;

pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 Message Processing Hints.
pub const NS_HINTS: &str = "urn:xmpp:hints";

/// Which copy a resource gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carbon {
    /// Of a message another resource of the account sent.
    Sent,
    /// Of a message the account received on another resource.
    Received,
}

impl Carbon {
    fn name(self) -> &'static str {
        match self {
            Carbon::Sent => "sent",
            Carbon::Received => "received",
        }
    }
}

/// Whether a message of type `ty` is copied (XEP-0280 §6, XEP-0334 §4.3).
pub fn eligible(el: &Element, ty: &str) -> bool {
    let kind = match ty {
        "chat" => true,
        "normal" => el.child("body", NS_CLIENT).is_some(),
        _ => false,
    };
    kind && el.child("private", NS_CARBONS).is_none()
        && el.child("no-copy", NS_HINTS).is_none()
        && el.child("sent", NS_CARBONS).is_none()
        && el.child("received", NS_CARBONS).is_none()
}

/// The copy of `original` for `to` (a resource of `account`).
fn wrap(kind: Carbon, account: &str, to: &str, ty: &str, original: &Element) -> Element {
    let forwarded = Element::new("forwarded", NS_FORWARD).with_child(original.clone());
    Element::new("message", NS_CLIENT)
        .with_attr("from", account)
        .with_attr("to", to)
        .with_attr("type", ty)
        .with_child(Element::new(kind.name(), NS_CARBONS).with_child(forwarded))
}

impl Router {
    /// Sends `kind` copies of `original` to the carbon-enabled resources of
    /// `account` except the routes in `except` (the sender, and those that
    /// got the message itself). Returns how many were sent.
    pub fn carbon_copies(
        &self,
        kind: Carbon,
        account: &str,
        except: &[u64],
        ty: &str,
        original: &Element,
        cong: &mut Congestion,
    ) -> usize {
        let targets: Vec<Arc<Route>> = self
            .routes(account)
            .into_iter()
            .filter(|r| r.carbons_enabled() && !except.contains(&r.id()))
            .collect();
        let mut n = 0;
        for r in targets {
            let copy = wrap(kind, account, r.full_jid(), ty, original);
            let bytes = bytes::Bytes::from(copy.to_bytes(NS_CLIENT));
            n += usize::from(self.deliver(&r, bytes, cong));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: &str) -> Element {
        Element::new("message", NS_CLIENT)
            .with_attr("type", ty)
            .with_attr("from", "a@x/1")
            .with_attr("to", "b@x")
    }

    #[test]
    fn which_messages_are_copied() {
        let body = || Element::new("body", NS_CLIENT).with_text("hi");
        assert!(eligible(&msg("chat"), "chat"), "chat, even a chat state");
        assert!(eligible(&msg("normal").with_child(body()), "normal"));
        assert!(!eligible(&msg("normal"), "normal"), "normal without body");
        for ty in ["headline", "groupchat", "error"] {
            assert!(!eligible(&msg(ty).with_child(body()), ty), "{ty}");
        }
        let private = msg("chat").with_child(Element::new("private", NS_CARBONS));
        assert!(!eligible(&private, "chat"));
        let no_copy = msg("chat").with_child(Element::new("no-copy", NS_HINTS));
        assert!(!eligible(&no_copy, "chat"));
        let a_carbon = msg("chat").with_child(Element::new("received", NS_CARBONS));
        assert!(!eligible(&a_carbon, "chat"), "never a copy of a copy");
    }

    #[test]
    fn a_copy_is_forwarded_from_the_bare_jid() {
        let original = msg("chat").with_child(Element::new("body", NS_CLIENT).with_text("hi"));
        let c = wrap(Carbon::Sent, "a@x", "a@x/2", "chat", &original);
        let text = String::from_utf8(c.to_bytes(NS_CLIENT)).unwrap();
        assert!(
            text.starts_with("<message from='a@x' to='a@x/2' type='chat'>"),
            "{text}"
        );
        assert!(
            text.contains("<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat' from='a@x/1' to='b@x'><body>hi</body></message></forwarded></sent>"),
            "{text}"
        );
    }
}
