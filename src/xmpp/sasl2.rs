//! XEP-0388 Extensible SASL Profile (SASL2), with what rides inline in its
//! `<authenticate/>`: XEP-0386 Bind 2 (resource binding with carbons,
//! stream management and client state), XEP-0198 resumption, and XEP-0484
//! FAST tokens. Parsing and building only; [`super::c2s::C2s`] drives the
//! exchange and the connection task carries out what needs the session.
//!
//! The SASL mechanisms themselves are [`super::sasl::Sasl`]'s, the same as
//! SASL1's: only the framing differs (no stream restart after `<success/>`,
//! which carries the authorization identifier and the inline results).

use super::element::{write_escaped_attr, write_escaped_text, Element};
use super::sasl::Mechanism;
use super::sm::NS_SM;
use super::stanza::{valid_resource, NS_CSI, NS_SASL};
use crate::auth::fast::HtMechanism;
use crate::auth::sasl::encode_base64_payload;

pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
pub const NS_FAST: &str = "urn:xmpp:fast:0";
const NS_CARBONS: &str = super::carbons::NS_CARBONS;

/// Longest `<tag/>` kept in a resource (longer ones are cut).
const MAX_TAG: usize = 32;

/// A Bind 2 request (XEP-0386 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindRequest {
    /// The client's tag, the prefix of its resource.
    pub tag: Option<String>,
    /// XEP-0280 `<enable/>`.
    pub carbons: bool,
    /// XEP-0198 `<enable/>`, and whether it asked for resumption.
    pub sm: Option<bool>,
    /// XEP-0352: `Some(true)` for `<inactive/>`, `Some(false)` for `<active/>`.
    pub inactive: Option<bool>,
}

/// What an `<authenticate/>` asks for besides authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inline {
    /// The `<user-agent id>`: the client installation (a UUID).
    pub agent: Option<String>,
    pub bind: Option<BindRequest>,
    /// XEP-0198 `<resume previd h/>`.
    pub resume: Option<(String, u32)>,
    /// XEP-0484 `<request-token mechanism/>`.
    pub request_token: Option<HtMechanism>,
    /// XEP-0484 `<fast/>`: the client authenticates with a token; with
    /// `invalidate`, that token ends on success.
    pub fast: Option<bool>,
}

/// A parsed `<authenticate/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub mechanism: String,
    /// The initial response's text: `None` when the element is absent,
    /// `Some("")` for an empty one (an empty response, not an absent one).
    pub initial: Option<String>,
    pub inline: Inline,
}

/// Reads an `<authenticate/>` (XEP-0388 §2.2); `Err` names what is wrong.
pub fn parse_authenticate(el: &Element) -> Result<Authenticate, &'static str> {
    let mechanism = el
        .attr("mechanism")
        .filter(|m| !m.is_empty())
        .ok_or("authenticate needs a mechanism")?
        .to_owned();
    let initial = el
        .child("initial-response", NS_SASL2)
        .map(|i| i.text().trim().to_owned());
    let mut inline = Inline {
        agent: el
            .child("user-agent", NS_SASL2)
            .and_then(|u| u.attr("id"))
            .filter(|id| is_uuid(id))
            .map(str::to_owned),
        ..Inline::default()
    };
    if let Some(b) = el.child("bind", NS_BIND2) {
        let mut req = BindRequest {
            tag: b
                .child("tag", NS_BIND2)
                .map(|t| t.text().trim().to_owned())
                .filter(|t| !t.is_empty()),
            ..BindRequest::default()
        };
        for c in b.elements() {
            match (c.ns.as_str(), c.name.as_str()) {
                (NS_CARBONS, "enable") => req.carbons = true,
                (NS_SM, "enable") => {
                    req.sm = Some(matches!(c.attr("resume"), Some("true" | "1")));
                }
                (NS_CSI, "inactive") => req.inactive = Some(true),
                (NS_CSI, "active") => req.inactive = Some(false),
                _ => {}
            }
        }
        inline.bind = Some(req);
    }
    if let Some(r) = el.child("resume", NS_SM) {
        let h = r.attr("h").and_then(|h| h.parse::<u32>().ok());
        match (r.attr("previd"), h) {
            (Some(p), Some(h)) if !p.is_empty() => inline.resume = Some((p.to_owned(), h)),
            _ => return Err("resume needs previd and h"),
        }
    }
    if let Some(t) = el.child("request-token", NS_FAST) {
        let m = t.attr("mechanism").and_then(HtMechanism::from_name);
        inline.request_token = Some(m.ok_or("request-token names no offered mechanism")?);
    }
    if let Some(f) = el.child("fast", NS_FAST) {
        inline.fast = Some(matches!(f.attr("invalidate"), Some("true" | "1")));
    }
    Ok(Authenticate {
        mechanism,
        initial,
        inline,
    })
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The `<authentication/>` stream feature: the SASL mechanisms, and inline
/// Bind 2 (with carbons, client state and stream management), resumption,
/// and FAST with `fast` mechanisms.
pub fn feature(fast: &[HtMechanism]) -> Element {
    let mut a = Element::new("authentication", NS_SASL2);
    for m in Mechanism::ALL {
        a.push_child(Element::new("mechanism", NS_SASL2).with_text(m.name()));
    }
    let mut bind_inline = Element::new("inline", NS_BIND2);
    for var in [NS_CARBONS, NS_CSI, NS_SM] {
        bind_inline.push_child(Element::new("feature", NS_BIND2).with_attr("var", var));
    }
    let mut inline = Element::new("inline", NS_SASL2)
        .with_child(Element::new("bind", NS_BIND2).with_child(bind_inline))
        .with_child(Element::new("sm", NS_SM));
    if !fast.is_empty() {
        let mut f = Element::new("fast", NS_FAST);
        for m in fast {
            f.push_child(Element::new("mechanism", NS_FAST).with_text(m.name()));
        }
        inline.push_child(f);
    }
    a.push_child(inline);
    a
}

/// `<challenge/>` with SASL data.
pub fn challenge(data: &[u8]) -> Element {
    Element::new("challenge", NS_SASL2).with_text(encode_base64_payload(data))
}

/// `<failure/>` with an RFC 6120 SASL condition and an optional text.
pub fn failure(condition: &str, text: Option<&str>) -> Element {
    let mut f = Element::new("failure", NS_SASL2).with_child(Element::new(condition, NS_SASL));
    if let Some(t) = text {
        f.push_child(Element::new("text", NS_SASL2).with_text(t));
    }
    f
}

/// The inline results that go into `<success/>`, already serialized.
#[derive(Debug, Default)]
pub struct SuccessParts {
    /// The mechanism's additional data.
    pub data: Option<Vec<u8>>,
    /// The authorization identifier: a full JID once bound or resumed.
    pub identifier: String,
    /// `<resumed/>` or `<failed/>` of a resumption.
    pub resume: Option<Vec<u8>>,
    /// The contents of `<bound/>` (absent: no bind).
    pub bound: Option<Vec<u8>>,
    /// A `<token/>` (XEP-0484).
    pub token: Option<Vec<u8>>,
}

/// `<success/>` (XEP-0388 §2.4.1) with what was done inline.
pub fn success(p: &SuccessParts) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(b"<success xmlns='urn:xmpp:sasl:2'>");
    if let Some(d) = &p.data {
        b.extend_from_slice(b"<additional-data>");
        b.extend_from_slice(encode_base64_payload(d).as_bytes());
        b.extend_from_slice(b"</additional-data>");
    }
    b.extend_from_slice(b"<authorization-identifier>");
    write_escaped_text(&mut b, &p.identifier);
    b.extend_from_slice(b"</authorization-identifier>");
    if let Some(r) = &p.resume {
        b.extend_from_slice(r);
    }
    if let Some(inner) = &p.bound {
        b.extend_from_slice(b"<bound xmlns='urn:xmpp:bind:0'>");
        b.extend_from_slice(inner);
        b.extend_from_slice(b"</bound>");
    }
    if let Some(t) = &p.token {
        b.extend_from_slice(t);
    }
    b.extend_from_slice(b"</success>");
    b
}

/// A FAST `<token/>`.
pub fn token(token: &str, expires_at: u64) -> Vec<u8> {
    let mut b = b"<token xmlns='urn:xmpp:fast:0' token='".to_vec();
    write_escaped_attr(&mut b, token);
    b.extend_from_slice(b"' expiry='");
    b.extend_from_slice(crate::ctl::rfc3339(expires_at).as_bytes());
    b.extend_from_slice(b"'/>");
    b
}

/// The resource Bind 2 gives (XEP-0386 §4.2): the client's tag (cut to a
/// sane length, or `petrel` when absent or unusable), a dot, and an id —
/// stable for one installation (a hash of account, user-agent id and tag,
/// which does not reveal the user-agent id), random without one. A stable
/// resource makes a reconnecting installation take its old session over,
/// as §4.2 asks.
pub fn resource(
    user: &str,
    tag: Option<&str>,
    agent: Option<&str>,
    random: impl FnOnce() -> [u8; 6],
) -> String {
    use sha2::{Digest, Sha256};
    let tag: String = tag
        .map(|t| {
            t.chars()
                .filter(|c| !c.is_control())
                .take(MAX_TAG)
                .collect()
        })
        .filter(|t: &String| !t.is_empty() && valid_resource(t).is_some())
        .unwrap_or_else(|| "petrel".to_owned());
    let id = match agent {
        Some(a) => {
            let h = Sha256::new()
                .chain_update(user.as_bytes())
                .chain_update([0])
                .chain_update(a.as_bytes())
                .chain_update([0])
                .chain_update(tag.as_bytes())
                .finalize();
            hex::encode(&h[..6])
        }
        None => hex::encode(random()),
    };
    format!("{tag}.{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stream::read_back;

    fn el(xml: &str) -> Element {
        read_back(xml.as_bytes()).expect("well-formed")
    }

    #[test]
    fn parses_what_xmpp_clients_send() {
        let a = parse_authenticate(&el(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1'>\
             <initial-response>biwsbj11c2VyLHI9YWJj</initial-response>\
             <user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>X</software></user-agent>\
             <bind xmlns='urn:xmpp:bind:0'><tag>AwesomeXMPP</tag>\
             <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/>\
             <inactive xmlns='urn:xmpp:csi:0'/></bind>\
             <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>\
             </authenticate>",
        ))
        .unwrap();
        assert_eq!(a.mechanism, "SCRAM-SHA-1");
        assert_eq!(a.initial.as_deref(), Some("biwsbj11c2VyLHI9YWJj"));
        assert_eq!(
            a.inline.agent.as_deref(),
            Some("d4565fa7-4d72-4749-b3d3-740edbf87770")
        );
        assert_eq!(
            a.inline.bind,
            Some(BindRequest {
                tag: Some("AwesomeXMPP".into()),
                carbons: true,
                sm: Some(true),
                inactive: Some(true),
            })
        );
        assert_eq!(a.inline.request_token, Some(HtMechanism::None));
        assert_eq!(a.inline.fast, None);
        let bad = [
            "<authenticate xmlns='urn:xmpp:sasl:2'/>",
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><resume xmlns='urn:xmpp:sm:3' previd='x'/></authenticate>",
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-UNIQ'/></authenticate>",
        ];
        for b in bad {
            assert!(parse_authenticate(&el(b)).is_err(), "{b}");
        }
    }

    #[test]
    fn resources_are_stable_per_installation() {
        let r = |agent| resource("a@x", Some("App"), agent, || [1; 6]);
        assert_eq!(r(Some("u1")), r(Some("u1")));
        assert_ne!(r(Some("u1")), r(Some("u2")));
        assert_eq!(r(None), "App.010101010101");
        assert!(!r(Some("u1")).contains("u1"));
        let long = "x".repeat(100);
        assert_eq!(
            resource("a@x", Some(&long), None, || [0; 6]).len(),
            MAX_TAG + 13
        );
        assert!(resource("a@x", Some(""), None, || [0; 6]).starts_with("petrel."));
    }

    #[test]
    fn success_carries_the_inline_results() {
        let s = success(&SuccessParts {
            data: Some(b"v=1".to_vec()),
            identifier: "a@x/r".into(),
            resume: None,
            bound: Some(b"<enabled xmlns='urn:xmpp:sm:3'/>".to_vec()),
            token: Some(token("t&k", 0)),
        });
        let s = String::from_utf8(s).unwrap();
        assert_eq!(
            s,
            "<success xmlns='urn:xmpp:sasl:2'><additional-data>dj0x</additional-data>\
             <authorization-identifier>a@x/r</authorization-identifier>\
             <bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3'/></bound>\
             <token xmlns='urn:xmpp:fast:0' token='t&amp;k' expiry='1970-01-01T00:00:00Z'/></success>"
        );
    }
}
