//! The client-to-server stream state machine (RFC 6120), without I/O.
//!
//! [`C2s`] is fed what the parser ([`super::stream::XmlStream`]) found — the
//! stream header, each top-level element, the end tag or a parse error — and
//! answers with [`Output`]s for the connection task to carry out in order:
//! bytes to write, "start TLS now", "reset the parser" (after SASL success),
//! a credential check for the auth core, "bind this full JID in the router",
//! a validated stanza for the IM layer ([`super::im`]), or "close".
//!
//! The phases of a stream, each restart beginning with a new header:
//! 1. header checks (namespaces by the parser, `version` 1.x, `to` a hosted
//!    domain) and features: STARTTLS and/or SASL mechanisms;
//! 2. STARTTLS (`<proceed/>`, TLS handshake, restart) — required before SASL
//!    when the listener says so;
//! 3. SASL ([`super::sasl`]), then restart;
//! 4. resource binding (and the legacy `session` iq);
//! 5. stanzas: checked (`to`/`from` JIDs, iq shape), stamped with the
//!    session's full JID as `from` (RFC 6120 §8.1.2.1) and handed on.
//!
//! Anything that breaks the stream gets its RFC 6120 §4.9.3 stream error and
//! [`Output::Close`]; a stanza-level problem gets a stanza error reply and the
//! stream stays up.

use bytes::Bytes;

use super::element::Element;
use super::sasl::{AuthReply, AuthRequest, Mechanism, Sasl, SaslOutcome};
use super::sasl2::{self, Inline, NS_SASL2};
use super::sm::{self, NS_SM};
use super::stanza::{
    error_reply, iq_result, stream_error_with, valid_resource, Jid, StanzaError, StreamCondition,
    NS_BIND, NS_CSI, NS_SASL, NS_SESSION, NS_TLS,
};
use super::stream::{StreamError, StreamEvent, NS_CLIENT};
use crate::auth::fast::HtMechanism;
use crate::auth::sasl::encode_base64_payload;
use crate::auth::{BareJid, Grant, TokenEnd};

/// Failed SASL attempts allowed on one stream (RFC 6120 §6.4.5 suggests 2–5).
const MAX_AUTH_FAILURES: u8 = 5;

/// How the listener this stream arrived on treats TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsPolicy {
    /// The connection is already TLS (direct TLS listener).
    pub secure: bool,
    /// STARTTLS is offered.
    pub starttls: bool,
    /// SASL is refused before STARTTLS.
    pub required: bool,
}

/// Something for the connection task to do, in order.
#[derive(Debug)]
pub enum Output {
    /// Write these bytes.
    Send(Bytes),
    /// Everything before has been written: run the TLS handshake, then keep
    /// reading. The parser must hold no unread bytes (plaintext injection).
    StartTls,
    /// Reset the parser for the stream restart after SASL success.
    ResetParser,
    /// Check a credential and call [`C2s::auth_reply`].
    Auth(AuthRequest),
    /// Route this full JID to the connection (replacing a session bound to it).
    Bind(Jid),
    /// A validated stanza, `from` stamped, for the IM layer.
    Stanza(Element),
    /// XEP-0352: the client is active (`true`) or inactive.
    ClientState(bool),
    /// A stanza for the client itself (an error or a result the stream
    /// answers without the IM layer): counted by stream management.
    Reply(Bytes),
    /// XEP-0198: the client enabled stream management (the inbound count
    /// starts); `resume` if it asked for resumption.
    SmEnable { resume: bool },
    /// XEP-0198: the client handled `h` stanzas in all.
    SmAck(u32),
    /// XEP-0198: resume the session `previd` (after authentication, instead
    /// of binding); the client handled `h` of its stanzas.
    SmResume { previd: String, h: u32 },
    /// XEP-0388: SASL2 authentication succeeded. Carry out what the client
    /// asked for inline (resumption, Bind 2, FAST tokens), then send
    /// `<success/>` and [`C2s::features_bytes`]. No stream restart.
    Sasl2(Box<Sasl2Done>),
    /// Close the connection once everything before is written.
    Close,
}

/// A SASL2 success, for the connection task to finish (see [`Output::Sasl2`]).
#[derive(Debug)]
pub struct Sasl2Done {
    /// The mechanism's additional data.
    pub data: Option<Vec<u8>>,
    /// What the `<authenticate/>` asked for besides authentication.
    pub inline: Inline,
    /// A FAST login: its mechanism, the installation its token is bound
    /// to, and whether the token is due for rotation.
    pub fast: Option<(HtMechanism, String, bool)>,
}

/// A SASL2 exchange under way: what its `<authenticate/>` asked for.
struct Sasl2Pending {
    inline: Inline,
    fast: Option<HtMechanism>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a stream header (the first, or after a restart).
    AwaitHeader,
    /// Header answered; elements are expected.
    Open,
    /// A stream error or the end tag was sent.
    Closed,
}

/// Who the stream authenticated as.
struct Authenticated {
    user: BareJid,
    /// Present for token logins: the session ends when the token does.
    grant: Option<Grant>,
    /// The login token's scopes (`None`: a password login, no limits);
    /// kept apart from the grant, which a FAST invalidation drops.
    scopes: Option<crate::auth::Scopes>,
}

/// One client-to-server stream. See the module docs.
pub struct C2s {
    hosts: std::sync::Arc<[String]>,
    tls: TlsPolicy,
    phase: Phase,
    /// Our own header for the current stream is out (so a stream error can
    /// follow it directly).
    header_sent: bool,
    /// The header's namespaces were wrong: the parser's error comes next.
    doomed: bool,
    /// The domain the client asked for in its first header.
    domain: Option<String>,
    /// Boxed: only needed during negotiation.
    sasl: Option<Box<Sasl>>,
    auth: Option<Box<Authenticated>>,
    auth_failures: u8,
    jid: Option<Jid>,
    /// The bound JID as text, stamped as `from` on every stanza.
    jid_text: String,
    /// Stream ids and generated resources (the caller's random source).
    entropy: std::sync::Arc<dyn crate::session::Entropy>,
    /// XEP-0198: stanzas received since stream management was enabled
    /// (mod 2^32); `None` while it is not.
    sm_in: Option<u32>,
    /// The SASL2 exchange under way, if the client chose SASL2.
    sasl2: Option<Box<Sasl2Pending>>,
    /// The OAuth metadata URL (RFC 8414) OAUTHBEARER's error names.
    oauth_metadata: Option<std::sync::Arc<str>>,
    /// The mechanism of the exchange under way (the logins metric's label).
    login_method: &'static str,
}

impl C2s {
    /// A stream for `hosts`, drawing random bytes from `entropy`.
    pub fn new(
        hosts: std::sync::Arc<[String]>,
        tls: TlsPolicy,
        entropy: std::sync::Arc<dyn crate::session::Entropy>,
    ) -> C2s {
        C2s {
            entropy,
            hosts,
            tls,
            phase: Phase::AwaitHeader,
            header_sent: false,
            doomed: false,
            domain: None,
            sasl: None,
            auth: None,
            auth_failures: 0,
            jid: None,
            jid_text: String::new(),
            sm_in: None,
            sasl2: None,
            oauth_metadata: None,
            login_method: "unknown",
        }
    }

    /// XEP-0493: the RFC 8414 metadata document a failed OAUTHBEARER
    /// login points to (`openid-configuration`).
    pub fn with_oauth_metadata(mut self, url: Option<std::sync::Arc<str>>) -> C2s {
        self.oauth_metadata = url;
        self
    }

    /// XEP-0198: stanzas handled since stream management was enabled.
    pub fn sm_handled(&self) -> Option<u32> {
        self.sm_in
    }

    /// Whether the stream is still waiting for a header (the negotiation timer).
    pub fn awaiting_header(&self) -> bool {
        self.phase == Phase::AwaitHeader
    }

    /// Whether authentication and binding are done.
    pub fn is_bound(&self) -> bool {
        self.jid.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The bound full JID.
    pub fn jid(&self) -> Option<&Jid> {
        self.jid.as_ref()
    }

    /// The authenticated account.
    pub fn user(&self) -> Option<&BareJid> {
        self.auth.as_ref().map(|a| &a.user)
    }

    /// The token grant of a token login (`None` for passwords).
    pub fn grant(&self) -> Option<&Grant> {
        self.auth.as_ref().and_then(|a| a.grant.as_ref())
    }

    /// The login token's scopes (`None` for a password login).
    pub fn scopes(&self) -> Option<&crate::auth::Scopes> {
        self.auth.as_ref().and_then(|a| a.scopes.as_ref())
    }

    fn send(out: &mut Vec<Output>, bytes: impl Into<Bytes>) {
        out.push(Output::Send(bytes.into()));
    }

    fn send_element(out: &mut Vec<Output>, el: &Element) {
        Self::send(out, el.to_bytes(NS_CLIENT));
    }

    /// A stanza for the client (stream management counts it).
    fn reply(out: &mut Vec<Output>, el: &Element) {
        out.push(Output::Reply(el.to_bytes(NS_CLIENT).into()));
    }

    fn header(&mut self, out: &mut Vec<Output>, from: &str) {
        let id = hex::encode(crate::session::random::<8>(self.entropy.as_ref()));
        let mut h = Vec::with_capacity(200);
        h.extend_from_slice(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams' id='",
        );
        h.extend_from_slice(id.as_bytes());
        h.extend_from_slice(b"' from='");
        super::element::write_escaped_attr(&mut h, from);
        h.extend_from_slice(b"' version='1.0' xml:lang='en'>");
        Self::send(out, h);
        self.header_sent = true;
    }

    /// Ends the stream with a stream error (sending our header first if the
    /// client's was never answered, as RFC 6120 §4.9.1.2 asks).
    pub fn fail_stream(&mut self, cond: StreamCondition, text: &str, out: &mut Vec<Output>) {
        self.fail_stream_with(cond, text, None, out);
    }

    /// [`C2s::fail_stream`] with an application-specific condition element.
    pub fn fail_stream_with(
        &mut self,
        cond: StreamCondition,
        text: &str,
        app: Option<Element>,
        out: &mut Vec<Output>,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        if !self.header_sent {
            let from = self.domain.clone().unwrap_or_else(|| self.hosts[0].clone());
            self.header(out, &from);
        }
        Self::send(out, stream_error_with(cond, text, app));
        out.push(Output::Close);
        self.phase = Phase::Closed;
    }

    /// The parser found the stream broken.
    pub fn parse_error(&mut self, e: &StreamError, out: &mut Vec<Output>) {
        self.fail_stream(StreamCondition::of_parse_error(e), e.text(), out);
    }

    /// The login token was revoked or expired.
    pub fn token_ended(&mut self, end: TokenEnd, out: &mut Vec<Output>) {
        let text = match end {
            TokenEnd::Revoked => "token revoked",
            TokenEnd::Expired => "token expired",
        };
        self.fail_stream(StreamCondition::NotAuthorized, text, out);
    }

    /// The negotiation did not finish in time.
    pub fn timed_out(&mut self, out: &mut Vec<Output>) {
        self.fail_stream(
            StreamCondition::ConnectionTimeout,
            "stream negotiation took too long",
            out,
        );
    }

    /// Handles one parser event.
    pub fn event(&mut self, ev: StreamEvent, out: &mut Vec<Output>) {
        if self.phase == Phase::Closed {
            return;
        }
        match ev {
            StreamEvent::StreamStart { .. } => self.stream_start(&ev, out),
            StreamEvent::Stanza(el) => self.element(el, out),
            StreamEvent::StreamEnd => {
                Self::send(out, &b"</stream:stream>"[..]);
                out.push(Output::Close);
                self.phase = Phase::Closed;
            }
        }
    }

    fn stream_start(&mut self, ev: &StreamEvent, out: &mut Vec<Output>) {
        let StreamEvent::StreamStart {
            ns_default,
            ns_stream_ok,
            ..
        } = ev
        else {
            return;
        };
        let to = ev.header_attr("to").map(|t| t.to_lowercase());
        let from = match (&self.domain, &to) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) if self.hosts.contains(t) => t.clone(),
            _ => self.hosts[0].clone(),
        };
        self.header(out, &from);
        self.phase = Phase::Open;
        if !ns_stream_ok || ns_default != NS_CLIENT {
            // The parser reports the namespace error on its next event.
            self.doomed = true;
            return;
        }
        let version_ok = ev
            .header_attr("version")
            .and_then(|v| v.split_once('.'))
            .is_some_and(|(major, minor)| major == "1" && minor.parse::<u32>().is_ok());
        if !version_ok {
            return self.fail_stream(
                StreamCondition::UnsupportedVersion,
                "only XMPP version 1.0 is served",
                out,
            );
        }
        match (&self.domain, to) {
            (None, Some(t)) if self.hosts.contains(&t) => self.domain = Some(t),
            (Some(d), Some(t)) if *d == t => {}
            _ => {
                return self.fail_stream(
                    StreamCondition::HostUnknown,
                    "this server does not serve that domain",
                    out,
                )
            }
        }
        self.features(out);
    }

    fn features(&mut self, out: &mut Vec<Output>) {
        let b = self.features_bytes();
        Self::send(out, b);
    }

    /// The XEP-0484 mechanisms offered: `tls-exporter` binding on TLS.
    fn fast_offered(&self) -> &'static [HtMechanism] {
        if self.tls.secure {
            &[HtMechanism::Exporter, HtMechanism::None]
        } else {
            &[HtMechanism::None]
        }
    }

    /// The stream features for where the stream stands: before
    /// authentication, after it (binding), or — after SASL2 with Bind 2 or
    /// a resumption — what is left to negotiate.
    pub fn features_bytes(&self) -> Vec<u8> {
        let mut f = Element::new("features", super::stream::NS_STREAMS);
        if self.auth.is_none() {
            if !self.tls.secure && self.tls.starttls {
                let mut st = Element::new("starttls", NS_TLS);
                if self.tls.required {
                    st.push_child(Element::new("required", NS_TLS));
                }
                f.push_child(st);
            }
            if self.sasl_allowed() {
                let mut m = Element::new("mechanisms", NS_SASL);
                for mech in Mechanism::ALL {
                    m.push_child(Element::new("mechanism", NS_SASL).with_text(mech.name()));
                }
                f.push_child(m);
                f.push_child(sasl2::feature(self.fast_offered()));
            }
        } else if self.jid.is_some() {
            f.push_child(Element::new("csi", NS_CSI));
            if self.sm_in.is_none() {
                f.push_child(Element::new("sm", NS_SM));
            }
        } else {
            f.push_child(Element::new("bind", NS_BIND));
            f.push_child(
                Element::new("session", NS_SESSION)
                    .with_child(Element::new("optional", NS_SESSION)),
            );
            f.push_child(Element::new("csi", NS_CSI));
            f.push_child(Element::new("sm", NS_SM));
        }
        // Written under the stream prefix our header declared.
        let mut b = b"<stream:features>".to_vec();
        for c in f.elements() {
            c.write_to(&mut b, NS_CLIENT);
        }
        b.extend_from_slice(b"</stream:features>");
        b
    }

    fn sasl_allowed(&self) -> bool {
        self.tls.secure || !self.tls.required
    }

    fn element(&mut self, el: Element, out: &mut Vec<Output>) {
        if self.doomed {
            return;
        }
        if el.ns == NS_TLS && el.name == "starttls" {
            return self.starttls(out);
        }
        if el.ns == NS_SASL && self.auth.is_none() {
            return self.sasl_element(&el, out);
        }
        if el.ns == NS_SASL2 && self.auth.is_none() {
            return self.sasl2_element(&el, out);
        }
        if el.ns == NS_SM && self.auth.is_some() {
            return self.sm_element(&el, out);
        }
        if el.ns == NS_CSI
            && self.auth.is_some()
            && matches!(el.name.as_str(), "active" | "inactive")
        {
            out.push(Output::ClientState(el.name == "active"));
            return;
        }
        let is_stanza =
            el.ns == NS_CLIENT && matches!(el.name.as_str(), "message" | "presence" | "iq");
        if !is_stanza {
            return self.fail_stream(
                StreamCondition::UnsupportedStanzaType,
                "unknown top-level element",
                out,
            );
        }
        if self.auth.is_none() {
            return self.fail_stream(
                StreamCondition::NotAuthorized,
                "authenticate before sending stanzas",
                out,
            );
        }
        if self.jid.is_some() {
            if let Some(h) = &mut self.sm_in {
                *h = h.wrapping_add(1);
            }
        }
        if el.name == "iq" && el.attr("type") == Some("set") {
            if let Some(bind) = el.child("bind", NS_BIND) {
                let resource = bind
                    .child("resource", NS_BIND)
                    .map(|r| r.text().trim().to_owned());
                return self.bind(&el, resource, out);
            }
            if el.child("session", NS_SESSION).is_some() {
                let mut r = iq_result(&el, None);
                r.remove_attr("from");
                return Self::reply(out, &r);
            }
        }
        if self.jid.is_none() {
            return self.fail_stream(
                StreamCondition::NotAuthorized,
                "bind a resource before sending stanzas",
                out,
            );
        }
        self.stanza(el, out);
    }

    /// XEP-0198 elements (after authentication).
    fn sm_element(&mut self, el: &Element, out: &mut Vec<Output>) {
        let unexpected =
            |out: &mut Vec<Output>| Self::send(out, sm::failed("unexpected-request", None));
        match el.name.as_str() {
            "enable" => {
                // After binding, once.
                if self.jid.is_none() || self.sm_in.is_some() {
                    return unexpected(out);
                }
                self.sm_in = Some(0);
                let resume = matches!(el.attr("resume"), Some("true" | "1"));
                out.push(Output::SmEnable { resume });
            }
            "r" => match self.sm_in {
                Some(h) => Self::send(out, sm::answer(h)),
                None => unexpected(out),
            },
            "a" => {
                if self.sm_in.is_none() {
                    return unexpected(out);
                }
                match el.attr("h").and_then(|h| h.parse::<u32>().ok()) {
                    Some(h) => out.push(Output::SmAck(h)),
                    None => self.fail_stream(
                        StreamCondition::BadFormat,
                        "<a/> needs h, a number below 2^32",
                        out,
                    ),
                }
            }
            "resume" => {
                // Instead of binding: a bound stream has its own session.
                if self.jid.is_some() || self.sm_in.is_some() {
                    return unexpected(out);
                }
                let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
                match (el.attr("previd"), h) {
                    (Some(p), Some(h)) if !p.is_empty() => out.push(Output::SmResume {
                        previd: p.to_owned(),
                        h,
                    }),
                    _ => Self::send(out, sm::failed("bad-request", None)),
                }
            }
            _ => self.fail_stream(
                StreamCondition::UnsupportedStanzaType,
                "unknown stream management element",
                out,
            ),
        }
    }

    fn starttls(&mut self, out: &mut Vec<Output>) {
        let in_sasl = self.sasl.as_ref().is_some_and(|s| s.in_progress());
        if self.tls.secure || !self.tls.starttls || self.auth.is_some() || in_sasl {
            Self::send(out, Element::new("failure", NS_TLS).to_bytes(NS_CLIENT));
            Self::send(out, &b"</stream:stream>"[..]);
            out.push(Output::Close);
            self.phase = Phase::Closed;
            return;
        }
        Self::send(out, Element::new("proceed", NS_TLS).to_bytes(NS_CLIENT));
        out.push(Output::StartTls);
        self.tls.secure = true;
        self.phase = Phase::AwaitHeader;
        self.header_sent = false;
    }

    fn sasl_element(&mut self, el: &Element, out: &mut Vec<Output>) {
        if !self.sasl_allowed() {
            Self::send_element(
                out,
                &Element::new("failure", NS_SASL)
                    .with_child(Element::new("encryption-required", NS_SASL)),
            );
            return self.count_auth_failure(out);
        }
        let domain = self.domain.clone().unwrap_or_default();
        let metadata = self.oauth_metadata.clone();
        let sasl = self
            .sasl
            .get_or_insert_with(|| Box::new(Sasl::new(&domain).with_metadata(metadata)));
        let outcome = match el.name.as_str() {
            "auth" => {
                self.login_method = el
                    .attr("mechanism")
                    .and_then(Mechanism::from_name)
                    .map_or("unknown", Mechanism::name);
                let text = el.text();
                let text = (!text.trim().is_empty()).then_some(text);
                sasl.start(el.attr("mechanism").unwrap_or(""), text.as_deref())
            }
            "response" => sasl.response(&el.text()),
            "abort" => sasl.abort(),
            _ => {
                return self.fail_stream(
                    StreamCondition::UnsupportedStanzaType,
                    "unknown SASL element",
                    out,
                )
            }
        };
        self.sasl_outcome(outcome, out);
    }

    /// The auth core's answer to an [`Output::Auth`].
    pub fn auth_reply(&mut self, reply: AuthReply, out: &mut Vec<Output>) {
        if self.phase == Phase::Closed {
            return;
        }
        let Some(sasl) = self.sasl.as_mut() else {
            return;
        };
        let outcome = sasl.auth_reply(reply);
        self.sasl_outcome(outcome, out);
    }

    fn sasl_outcome(&mut self, outcome: SaslOutcome, out: &mut Vec<Output>) {
        match outcome {
            SaslOutcome::Challenge(data) if self.sasl2.is_some() => {
                Self::send_element(out, &sasl2::challenge(&data));
            }
            SaslOutcome::Challenge(data) => {
                let mut c = Element::new("challenge", NS_SASL);
                if !data.is_empty() {
                    c.push_text(encode_base64_payload(&data));
                }
                Self::send_element(out, &c);
            }
            SaslOutcome::NeedAuth(req) => out.push(Output::Auth(req)),
            SaslOutcome::Success {
                user,
                grant,
                data,
                fast,
            } if self.sasl2.is_some() => {
                crate::metrics::metrics().login("xmpp", self.login_method, true);
                let p = self.sasl2.take().expect("checked");
                self.auth = Some(Box::new(Authenticated {
                    scopes: grant.as_ref().map(|g| g.scopes().clone()),
                    user,
                    grant,
                }));
                self.sasl = None;
                let fast = match (p.fast, fast) {
                    (Some(m), Some((agent, rotate))) => Some((m, agent, rotate)),
                    _ => None,
                };
                out.push(Output::Sasl2(Box::new(Sasl2Done {
                    data,
                    inline: p.inline,
                    fast,
                })));
            }
            SaslOutcome::Success {
                user, grant, data, ..
            } => {
                crate::metrics::metrics().login("xmpp", self.login_method, true);
                let mut s = Element::new("success", NS_SASL);
                if let Some(d) = data {
                    s.push_text(encode_base64_payload(&d));
                }
                Self::send_element(out, &s);
                out.push(Output::ResetParser);
                self.auth = Some(Box::new(Authenticated {
                    scopes: grant.as_ref().map(|g| g.scopes().clone()),
                    user,
                    grant,
                }));
                self.sasl = None;
                self.phase = Phase::AwaitHeader;
                self.header_sent = false;
            }
            SaslOutcome::Failure { error, text } if self.sasl2.is_some() => {
                crate::metrics::metrics().login("xmpp", self.login_method, false);
                self.sasl2 = None;
                Self::send_element(out, &sasl2::failure(error.condition(), text));
                self.count_auth_failure(out);
            }
            SaslOutcome::Failure { error, text } => {
                crate::metrics::metrics().login("xmpp", self.login_method, false);
                let mut f = Element::new("failure", NS_SASL)
                    .with_child(Element::new(error.condition(), NS_SASL));
                if let Some(t) = text {
                    f.push_child(
                        Element::new("text", NS_SASL)
                            .with_attr("xml:lang", "en")
                            .with_text(t),
                    );
                }
                Self::send_element(out, &f);
                self.count_auth_failure(out);
            }
            SaslOutcome::ProofFailed { .. } => {
                // Counted by the throttle's ticket in the SASL state.
                self.sasl_outcome(
                    SaslOutcome::Failure {
                        error: crate::auth::sasl::SaslError::NotAuthorized,
                        text: None,
                    },
                    out,
                );
            }
        }
    }

    /// Every failure counts, aborts and refusals before TLS included: a
    /// stream cannot loop through cheap attempts forever.
    fn count_auth_failure(&mut self, out: &mut Vec<Output>) {
        self.auth_failures = self.auth_failures.saturating_add(1);
        if self.auth_failures >= MAX_AUTH_FAILURES {
            self.fail_stream(
                StreamCondition::PolicyViolation,
                "too many failed authentication attempts",
                out,
            );
        }
    }

    fn bind(&mut self, iq: &Element, resource: Option<String>, out: &mut Vec<Output>) {
        if self.jid.is_some() {
            // RFC 6120 §7.7.2.2: one resource per stream here.
            return self.stanza_error(iq, StanzaError::NotAllowed, out);
        }
        let resource = match resource.as_deref() {
            None | Some("") => format!(
                "petrel-{}",
                hex::encode(crate::session::random::<6>(self.entropy.as_ref()))
            ),
            Some(r) => match valid_resource(r) {
                Some(r) => r.to_owned(),
                None => return self.stanza_error(iq, StanzaError::BadRequest, out),
            },
        };
        let user = &self.auth.as_ref().expect("authenticated").user;
        let jid = Jid::full(user, &resource);
        out.push(Output::Bind(jid.clone()));
        let mut r = iq_result(iq, None);
        r.remove_attr("from");
        r.push_child(
            Element::new("bind", NS_BIND)
                .with_child(Element::new("jid", NS_BIND).with_text(jid.to_string())),
        );
        Self::reply(out, &r);
        self.jid_text = jid.to_string();
        self.jid = Some(jid);
    }

    fn stanza_error(&self, stanza: &Element, err: StanzaError, out: &mut Vec<Output>) {
        let mut s = stanza.clone();
        // The error goes back to the client itself: no addresses needed.
        s.remove_attr("from");
        s.remove_attr("to");
        if let Some(e) = error_reply(&s, err, None) {
            Self::reply(out, &e);
        }
    }

    /// Checks a stanza of a bound session and stamps its `from`.
    fn stanza(&mut self, mut el: Element, out: &mut Vec<Output>) {
        debug_assert!(self.jid.is_some(), "stanzas come after binding");
        let jid = self.jid_text.clone();
        let bad_jid = |a: Option<&str>| a.is_some_and(|j| Jid::parse(j).is_err());
        if bad_jid(el.attr("to")) || bad_jid(el.attr("from")) {
            el.remove_attr("from");
            el.remove_attr("to");
            if let Some(e) = error_reply(&el, StanzaError::JidMalformed, None) {
                Self::reply(out, &e);
            }
            return;
        }
        el.set_attr("from", jid);
        let ty = el.attr("type").unwrap_or("");
        let valid = match el.name.as_str() {
            "iq" => {
                let children = el.elements().count();
                el.attr("id").is_some()
                    && match ty {
                        "get" | "set" => children == 1,
                        "result" => children <= 1,
                        "error" => true,
                        _ => false,
                    }
            }
            "presence" => matches!(
                ty,
                "" | "unavailable"
                    | "subscribe"
                    | "subscribed"
                    | "unsubscribe"
                    | "unsubscribed"
                    | "probe"
                    | "error"
            ),
            // RFC 6121 §5.2.2: an unknown message type means "normal".
            _ => true,
        };
        if !valid {
            if let Some(e) = error_reply(&el, StanzaError::BadRequest, None) {
                Self::reply(out, &e);
            }
            return;
        }
        out.push(Output::Stanza(el));
    }
}

/// SASL2 elements and the inline steps of its success.
mod sasl2_steps;

#[cfg(test)]
#[path = "c2s_tests.rs"]
mod tests;
