//! Addresses and errors of XMPP stanzas: [`Jid`], the namespaces this server
//! speaks, stanza errors (RFC 6120 §8.3) and stream errors (§4.9).
//!
//! JIDs are normalized the way accounts are (see [`crate::auth::jid`]):
//! localpart and domain lowercased and checked for forbidden characters; the
//! resource is kept as sent (no PRECIS) but must be 1–1023 bytes without
//! control characters. Routing keys are the normalized string forms.

use std::fmt;

use crate::auth::jid::{valid_domain, valid_localpart};
use crate::auth::BareJid;

use super::element::Element;
use super::stream::{NS_CLIENT, NS_STREAMS};

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_VERSION: &str = "jabber:iq:version";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// XEP-0352 Client State Indication.
pub const NS_CSI: &str = "urn:xmpp:csi:0";

/// Longest part of a JID, in bytes (RFC 7622 §3).
const MAX_PART: usize = 1023;

/// A JID: `[local@]domain[/resource]`, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    local: Option<String>,
    domain: String,
    resource: Option<String>,
}

/// Why a string is not a JID (the stanza error is always `jid-malformed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed JID")]
pub struct JidMalformed;

impl Jid {
    /// Parses and normalizes a JID.
    pub fn parse(s: &str) -> Result<Jid, JidMalformed> {
        let (rest, resource) = match s.split_once('/') {
            Some((r, res)) => (r, Some(res)),
            None => (s, None),
        };
        let (local, domain) = match rest.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, rest),
        };
        let local = match local {
            Some(l) => {
                let l = l.to_lowercase();
                if !valid_localpart(&l) {
                    return Err(JidMalformed);
                }
                Some(l)
            }
            None => None,
        };
        let domain = domain.trim_end_matches('.').to_lowercase();
        if !valid_domain(&domain) {
            return Err(JidMalformed);
        }
        let resource = match resource {
            Some(r) => Some(valid_resource(r).ok_or(JidMalformed)?.to_owned()),
            None => None,
        };
        Ok(Jid {
            local,
            domain,
            resource,
        })
    }

    /// The full JID of an account's resource.
    pub fn full(bare: &BareJid, resource: &str) -> Jid {
        Jid {
            local: Some(bare.local().to_owned()),
            domain: bare.domain().to_owned(),
            resource: Some(resource.to_owned()),
        }
    }

    pub fn from_bare(bare: &BareJid) -> Jid {
        Jid {
            local: Some(bare.local().to_owned()),
            domain: bare.domain().to_owned(),
            resource: None,
        }
    }

    /// A domain-only JID (the server itself).
    pub fn domain_only(domain: &str) -> Jid {
        Jid {
            local: None,
            domain: domain.to_owned(),
            resource: None,
        }
    }

    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The account this JID names, if it has a localpart.
    pub fn to_bare(&self) -> Option<BareJid> {
        let local = self.local.as_deref()?;
        BareJid::new(local, &self.domain).ok()
    }

    /// This JID without its resource.
    pub fn bare(&self) -> Jid {
        Jid {
            local: self.local.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.local {
            write!(f, "{l}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

/// A resource as sent, if acceptable: 1–1023 bytes, no control characters.
pub fn valid_resource(r: &str) -> Option<&str> {
    let ok = !r.is_empty() && r.len() <= MAX_PART && !r.chars().any(char::is_control);
    ok.then_some(r)
}

/// The stanza error conditions this server sends (RFC 6120 §8.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StanzaError {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    RegistrationRequired,
    RemoteServerNotFound,
    ResourceConstraint,
    ServiceUnavailable,
    UnexpectedRequest,
}

impl StanzaError {
    pub fn condition(self) -> &'static str {
        match self {
            StanzaError::BadRequest => "bad-request",
            StanzaError::Conflict => "conflict",
            StanzaError::FeatureNotImplemented => "feature-not-implemented",
            StanzaError::Forbidden => "forbidden",
            StanzaError::InternalServerError => "internal-server-error",
            StanzaError::ItemNotFound => "item-not-found",
            StanzaError::JidMalformed => "jid-malformed",
            StanzaError::NotAcceptable => "not-acceptable",
            StanzaError::NotAllowed => "not-allowed",
            StanzaError::NotAuthorized => "not-authorized",
            StanzaError::RegistrationRequired => "registration-required",
            StanzaError::RemoteServerNotFound => "remote-server-not-found",
            StanzaError::ResourceConstraint => "resource-constraint",
            StanzaError::ServiceUnavailable => "service-unavailable",
            StanzaError::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error `type` RFC 6120 §8.3.3 gives each condition.
    pub fn kind(self) -> &'static str {
        match self {
            StanzaError::BadRequest | StanzaError::JidMalformed | StanzaError::NotAcceptable => {
                "modify"
            }
            StanzaError::Forbidden
            | StanzaError::NotAuthorized
            | StanzaError::RegistrationRequired => "auth",
            StanzaError::ResourceConstraint => "wait",
            _ => "cancel",
        }
    }
}

/// The error reply to `stanza` (RFC 6120 §8.3.1): addresses swapped, `id`
/// kept, the payload left out. `None` when `stanza` is itself an error (or an
/// iq result), which must never be answered with an error.
pub fn error_reply(stanza: &Element, err: StanzaError, text: Option<&str>) -> Option<Element> {
    let ty = stanza.attr("type").unwrap_or("");
    if ty == "error" || (stanza.name == "iq" && ty == "result") {
        return None;
    }
    let mut reply = Element::new(stanza.name.clone(), NS_CLIENT).with_attr("type", "error");
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("to") {
        reply.set_attr("from", from);
    }
    if let Some(to) = stanza.attr("from") {
        reply.set_attr("to", to);
    }
    let mut error = Element::new("error", NS_CLIENT)
        .with_attr("type", err.kind())
        .with_child(Element::new(err.condition(), NS_STANZAS));
    if let Some(t) = text {
        error.push_child(
            Element::new("text", NS_STANZAS)
                .with_attr("xml:lang", "en")
                .with_text(t),
        );
    }
    reply.push_child(error);
    Some(reply)
}

/// An iq result for `iq`, with an optional payload.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", NS_CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(from) = iq.attr("to") {
        r.set_attr("from", from);
    }
    if let Some(to) = iq.attr("from") {
        r.set_attr("to", to);
    }
    if let Some(p) = payload {
        r.push_child(p);
    }
    r
}

/// The stream error conditions this server sends (RFC 6120 §4.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCondition {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    InternalServerError,
    InvalidNamespace,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UnsupportedEncoding,
    UnsupportedStanzaType,
    UnsupportedVersion,
    UndefinedCondition,
}

impl StreamCondition {
    pub fn name(self) -> &'static str {
        match self {
            StreamCondition::BadFormat => "bad-format",
            StreamCondition::Conflict => "conflict",
            StreamCondition::ConnectionTimeout => "connection-timeout",
            StreamCondition::HostUnknown => "host-unknown",
            StreamCondition::InternalServerError => "internal-server-error",
            StreamCondition::InvalidNamespace => "invalid-namespace",
            StreamCondition::NotAuthorized => "not-authorized",
            StreamCondition::NotWellFormed => "not-well-formed",
            StreamCondition::PolicyViolation => "policy-violation",
            StreamCondition::ResourceConstraint => "resource-constraint",
            StreamCondition::RestrictedXml => "restricted-xml",
            StreamCondition::SystemShutdown => "system-shutdown",
            StreamCondition::UnsupportedEncoding => "unsupported-encoding",
            StreamCondition::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamCondition::UnsupportedVersion => "unsupported-version",
            StreamCondition::UndefinedCondition => "undefined-condition",
        }
    }

    /// The condition of a parser error.
    pub fn of_parse_error(e: &super::stream::StreamError) -> StreamCondition {
        use super::stream::StreamError as E;
        match e {
            E::NotWellFormed(_) => StreamCondition::NotWellFormed,
            E::RestrictedXml(_) => StreamCondition::RestrictedXml,
            E::PolicyViolation(_) => StreamCondition::PolicyViolation,
            E::InvalidNamespace(_) => StreamCondition::InvalidNamespace,
            E::UnsupportedEncoding(_) => StreamCondition::UnsupportedEncoding,
            E::BadFormat(_) => StreamCondition::BadFormat,
        }
    }
}

/// `<stream:error>` with its condition and an explanation, followed by the
/// closing tag: a stream error always ends the stream.
pub fn stream_error_bytes(cond: StreamCondition, text: &str) -> Vec<u8> {
    stream_error_with(cond, text, None)
}

/// [`stream_error_bytes`] with an application-specific condition element.
pub fn stream_error_with(cond: StreamCondition, text: &str, app: Option<Element>) -> Vec<u8> {
    let mut err = Element::new("error", NS_STREAMS)
        .with_child(Element::new(cond.name(), NS_STREAM_ERRORS))
        .with_child(
            Element::new("text", NS_STREAM_ERRORS)
                .with_attr("xml:lang", "en")
                .with_text(text),
        );
    if let Some(app) = app {
        err.push_child(app);
    }
    // Written as stream:error so that it is in the streams namespace under
    // the prefix our header declared.
    let mut out = Vec::with_capacity(160);
    let mut inner = Vec::new();
    for c in err.elements() {
        c.write_to(&mut inner, NS_CLIENT);
    }
    out.extend_from_slice(b"<stream:error>");
    out.extend_from_slice(&inner);
    out.extend_from_slice(b"</stream:error></stream:stream>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_parse_and_normalize() {
        let j = Jid::parse("Alice@LocalHost/Phone 1").unwrap();
        assert_eq!(j.to_string(), "alice@localhost/Phone 1");
        assert_eq!(j.bare().to_string(), "alice@localhost");
        assert_eq!(j.to_bare().unwrap().to_string(), "alice@localhost");
        let d = Jid::parse("localhost").unwrap();
        assert!(d.local().is_none() && d.is_bare());
        assert_eq!(
            Jid::parse("a@b/c/d").unwrap().resource(),
            Some("c/d"),
            "only the first slash separates the resource"
        );
        for bad in [
            "",
            "@x",
            "a@",
            "a@b/",
            "a b@c",
            "a@b c",
            "a@@b",
            "a@b..c",
            "a@b/\u{7}",
        ] {
            assert_eq!(Jid::parse(bad), Err(JidMalformed), "{bad:?}");
        }
    }

    #[test]
    fn error_replies() {
        let m = Element::new("message", NS_CLIENT)
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x")
            .with_attr("id", "7");
        let e = error_reply(&m, StanzaError::ServiceUnavailable, None).unwrap();
        assert_eq!(
            String::from_utf8(e.to_bytes(NS_CLIENT)).unwrap(),
            "<message type='error' id='7' from='b@x' to='a@x/r'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
        let err = m.clone().with_attr("type", "error");
        assert!(error_reply(&err, StanzaError::BadRequest, None).is_none());
        let res = Element::new("iq", NS_CLIENT).with_attr("type", "result");
        assert!(error_reply(&res, StanzaError::BadRequest, None).is_none());
    }

    #[test]
    fn stream_errors() {
        let b = stream_error_bytes(StreamCondition::HostUnknown, "no such host");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>no such host</text>\
             </stream:error></stream:stream>"
        );
    }
}
