//! A minimal XMPP client (RFC 6120) for the XMPP scenarios, hand-written
//! over the raw socket like the MQTT one in [`super::client`]: just what a
//! load test needs, standard enough for any server (Petrel, ejabberd…).
//!
//! A login ([`login`]) is: TCP connect (optionally TLS from the first byte),
//! stream header to the users' domain (`to=`, `version='1.0'`,
//! `xmlns='jabber:client'`), `<stream:features>`, optionally STARTTLS and a
//! new stream over TLS, SASL (PLAIN, X-OAUTH2 or SCRAM-SHA-256 with the
//! server's signature checked), a stream restart, resource binding, and the
//! legacy session iq only when the features ask for it without
//! `<optional/>` (RFC 6121 §A). Then the caller writes stanzas into
//! [`XmppClient::wbuf`], flushes, and reads [`Element`]s.
//!
//! Reading goes through Petrel's own incremental stream parser
//! ([`XmlStream`]): it scans every byte once across reads (no re-parse of a
//! growing buffer), resolves namespace prefixes against the stream header
//! (`stream:features`, `stream:error`), takes either quote around
//! attributes, and limits a stanza's size. It needs the header's default
//! namespace to be `jabber:client`, which a client stream's always is.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::net::{BoxIo, Endpoint};
use super::scram::{SaltedCache, ScramClient, ScramError};
use crate::auth::sasl::{decode_base64_payload, encode_base64_payload};
use crate::auth::scram::ScramHash;
use crate::xmpp::element::{write_escaped_attr, Element};
use crate::xmpp::stanza::{
    NS_BIND, NS_PING, NS_SASL, NS_SESSION, NS_STANZAS, NS_STREAM_ERRORS, NS_TLS,
};
use crate::xmpp::stream::{Limits, StreamEvent, XmlStream, NS_CLIENT, NS_STREAMS};

/// Bytes read from the socket at a time.
pub const READ_CHUNK: usize = 64 * 1024;
/// Largest stanza accepted from a server (a chat body may be 1 MB).
const MAX_STANZA: usize = (1 << 20) + (64 << 10);
/// Stanzas a login step skips while waiting for its answer (a server may
/// push presence or other stanzas at any time after binding).
const MAX_SKIPPED: usize = 64;
/// SASL round trips before giving up (SCRAM needs two).
const MAX_SASL_ROUNDS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum XmppError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("timed out")]
    Timeout,
    /// `<stream:error>` from the server, by condition.
    #[error("stream error {0}")]
    Stream(String),
    /// What the server sent is not an XMPP stream (our parser's condition).
    #[error("unparsable input: {0}")]
    Parse(String),
    /// SASL `<failure/>`, by condition.
    #[error("SASL failure {0}")]
    Sasl(String),
    #[error("SCRAM: {0}")]
    Scram(#[from] ScramError),
    #[error("mechanism {0} not offered")]
    NotOffered(&'static str),
    /// An iq of the login (bind, session) answered with an error.
    #[error("{0} error {1}")]
    Iq(&'static str, String),
    #[error("protocol: {0}")]
    Protocol(String),
}

impl XmppError {
    /// A short stable label for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            XmppError::Io(e) => format!("io: {}", e.kind()),
            XmppError::Tls(e) => format!("TLS: {}", e.kind()),
            other => other.to_string(),
        }
    }
}

/// The SASL mechanism of a login and its credentials.
pub enum Credentials<'a> {
    /// PLAIN: `NUL localpart NUL password` (the password may be a token).
    Plain { user: &'a str, password: &'a str },
    /// X-OAUTH2: `NUL localpart NUL token`, the shape ejabberd and Petrel
    /// both take.
    XOauth2 { user: &'a str, token: &'a str },
    /// SCRAM-SHA-256; salted passwords are cached across logins.
    ScramSha256 {
        user: &'a str,
        password: &'a str,
        cache: &'a SaltedCache,
    },
    /// SASL2 (XEP-0388) `HT-SHA-256-NONE` with a FAST token (XEP-0484) of
    /// installation `agent`, bound inline (Bind 2): one round trip, no
    /// restart, no bind iq.
    Fast {
        user: &'a str,
        token: &'a str,
        agent: &'a str,
    },
}

impl Credentials<'_> {
    fn mechanism(&self) -> &'static str {
        match self {
            Credentials::Plain { .. } => "PLAIN",
            Credentials::XOauth2 { .. } => "X-OAUTH2",
            Credentials::ScramSha256 { .. } => "SCRAM-SHA-256",
            Credentials::Fast { .. } => "HT-SHA-256-NONE",
        }
    }
}

/// What a login needs besides the endpoint.
pub struct LoginSpec<'a> {
    /// The stream's `to`: the users' domain.
    pub domain: &'a str,
    pub credentials: Credentials<'a>,
    /// Resource to bind.
    pub resource: &'a str,
    /// STARTTLS before authenticating.
    pub starttls: bool,
}

/// One XMPP stream with its parser and buffers.
pub struct XmppClient<S = BoxIo> {
    pub io: S,
    pub parser: XmlStream,
    /// Read scratch space, empty between reads.
    rbuf: BytesMut,
    /// Stanzas written but not yet sent.
    pub wbuf: BytesMut,
    /// The bound full JID (empty before binding).
    pub jid: String,
}

/// The parser limits of a client stream.
pub fn client_limits() -> Limits {
    Limits {
        max_stanza_size: MAX_STANZA,
        ..Limits::default()
    }
}

/// Logs in: connect, (STARTTLS,) SASL, restart, bind (and session when
/// required). The caller bounds it with a timeout.
pub async fn login(endpoint: &Endpoint, spec: &LoginSpec<'_>) -> Result<XmppClient, XmppError> {
    let io: BoxIo = if spec.starttls {
        let mut tcp = endpoint.connect_tcp().await?;
        let mut c = XmppClient::new(&mut tcp);
        let features = c.open(spec.domain).await?;
        if features.child("starttls", NS_TLS).is_none() {
            return Err(XmppError::Protocol("STARTTLS not offered".into()));
        }
        c.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let answer = c.next_element().await?;
        if !answer.is("proceed", NS_TLS) {
            return Err(XmppError::Protocol(format!(
                "STARTTLS answered with <{}/>",
                answer.name
            )));
        }
        if c.parser.buffered() > 0 {
            return Err(XmppError::Protocol("data after <proceed/>".into()));
        }
        drop(c);
        endpoint.upgrade(tcp).await.map_err(XmppError::Tls)?
    } else {
        endpoint.connect().await?
    };
    let mut c = XmppClient::new(io);
    c.negotiate(spec).await?;
    Ok(c)
}

/// Reading (also on the read half of a split client).
impl<S: AsyncRead + Unpin> XmppClient<S> {
    pub fn new(io: S) -> XmppClient<S> {
        XmppClient {
            io,
            parser: XmlStream::new(client_limits()),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            jid: String::new(),
        }
    }

    /// Reads up to `chunk` bytes into the parser; `Closed` at EOF.
    /// Cancel-safe (a read that did not complete consumed nothing).
    pub async fn read_some(&mut self, chunk: usize) -> Result<usize, XmppError> {
        self.rbuf.clear();
        self.rbuf.reserve(chunk);
        let n = self.io.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(XmppError::Closed);
        }
        self.parser.feed(&self.rbuf);
        self.rbuf.clear();
        Ok(n)
    }

    /// Drops the read and write buffers' memory (a held, idle session).
    pub fn release_buffers(&mut self) {
        self.rbuf = BytesMut::new();
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        self.parser.release_idle_buffer();
    }

    /// The next event already buffered, stream errors turned into
    /// [`XmppError::Stream`] and the stream's end into [`XmppError::Closed`].
    pub fn next_buffered(&mut self) -> Result<Option<Element>, XmppError> {
        match self.parser.next_event() {
            Ok(None) => Ok(None),
            Ok(Some(StreamEvent::Stanza(el))) => {
                if el.is("error", NS_STREAMS) {
                    Err(XmppError::Stream(stream_error_condition(&el)))
                } else {
                    Ok(Some(el))
                }
            }
            Ok(Some(StreamEvent::StreamEnd)) => Err(XmppError::Closed),
            Ok(Some(StreamEvent::StreamStart { .. })) => {
                Err(XmppError::Protocol("a second stream header".into()))
            }
            Err(e) => Err(XmppError::Parse(e.condition().into())),
        }
    }

    /// Waits for the next top-level element.
    pub async fn next_element(&mut self) -> Result<Element, XmppError> {
        loop {
            if let Some(el) = self.next_buffered()? {
                return Ok(el);
            }
            self.read_some(READ_CHUNK).await?;
        }
    }

    /// Answers what a server may ask of any client: an iq get/set gets a
    /// ping result or `service-unavailable` (RFC 6120 §8.4). Returns
    /// whether anything was queued.
    pub fn answer(&mut self, el: &Element) -> bool {
        if !el.is("iq", NS_CLIENT) || !matches!(el.attr("type"), Some("get" | "set")) {
            return false;
        }
        let mut reply = Element::new("iq", NS_CLIENT).with_attr("id", el.attr("id").unwrap_or(""));
        if let Some(from) = el.attr("from") {
            reply.set_attr("to", from);
        }
        if el.child("ping", NS_PING).is_some() {
            reply.set_attr("type", "result");
        } else {
            reply.set_attr("type", "error");
            reply.push_child(
                Element::new("error", NS_CLIENT)
                    .with_attr("type", "cancel")
                    .with_child(Element::new("service-unavailable", NS_STANZAS)),
            );
        }
        reply.write_to(&mut self.wbuf, NS_CLIENT);
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmppClient<S> {
    /// Splits off the write half so reading and writing can wait at once
    /// (a chat session); the read half keeps the parser and buffers.
    pub fn split(self) -> (XmppClient<ReadHalf<S>>, WriteHalf<S>) {
        let (r, w) = tokio::io::split(self.io);
        let c = XmppClient {
            io: r,
            parser: self.parser,
            rbuf: self.rbuf,
            wbuf: self.wbuf,
            jid: self.jid,
        };
        (c, w)
    }

    /// Puts a split client back together.
    pub fn unsplit(read: XmppClient<ReadHalf<S>>, write: WriteHalf<S>) -> XmppClient<S> {
        XmppClient {
            io: read.io.unsplit(write),
            parser: read.parser,
            rbuf: read.rbuf,
            wbuf: read.wbuf,
            jid: read.jid,
        }
    }

    /// Everything after the connection (and STARTTLS): stream, SASL,
    /// restart, bind, session when required.
    pub async fn negotiate(&mut self, spec: &LoginSpec<'_>) -> Result<(), XmppError> {
        let features = self.open(spec.domain).await?;
        if let Some(st) = features.child("starttls", NS_TLS) {
            if st.child("required", NS_TLS).is_some() {
                return Err(XmppError::Protocol(
                    "the server requires STARTTLS (use --starttls)".into(),
                ));
            }
        }
        if let Credentials::Fast { user, token, agent } = spec.credentials {
            let proof = fast_proof(user, token);
            let inline = format!(
                "<bind xmlns='urn:xmpp:bind:0'><tag>{}</tag></bind><fast xmlns='urn:xmpp:fast:0'/>",
                escape(spec.resource)
            );
            let success = self
                .sasl2(&features, "HT-SHA-256-NONE", &proof, agent, &inline)
                .await?;
            let server = success
                .child("additional-data", NS_SASL2)
                .map(|d| decode_base64_payload(&d.text()))
                .and_then(Result::ok);
            if server.as_deref() != Some(&hmac_sha256(token.as_bytes(), b"Responder")[..]) {
                return Err(XmppError::Protocol(
                    "the server's FAST proof is wrong".into(),
                ));
            }
            if !self.jid.contains('/') {
                return Err(XmppError::Protocol("Bind 2 gave no full JID".into()));
            }
            return Ok(());
        }
        self.authenticate(&features, &spec.credentials).await?;
        // RFC 6120 §6.4.6: a new stream over the same connection, without
        // anything left from the old one.
        self.parser.reset();
        let features = self.open(spec.domain).await?;
        if features.child("bind", NS_BIND).is_none() {
            return Err(XmppError::Protocol("resource binding not offered".into()));
        }
        self.bind(spec.resource).await?;
        let session_required = features
            .child("session", NS_SESSION)
            .is_some_and(|s| s.child("optional", NS_SESSION).is_none());
        if session_required {
            self.iq_set("sess_1", Element::new("session", NS_SESSION), "session")
                .await?;
        }
        Ok(())
    }

    /// Writes everything queued; cancel-safe (see
    /// [`super::net::write_buffered`]).
    pub async fn flush(&mut self) -> Result<(), XmppError> {
        Ok(super::net::write_buffered(&mut self.io, &mut self.wbuf).await?)
    }

    /// Queues `bytes` and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), XmppError> {
        self.wbuf.extend_from_slice(bytes);
        self.flush().await
    }

    /// Sends a stream header to `domain` and waits for the server's header
    /// and features.
    pub async fn open(&mut self, domain: &str) -> Result<Element, XmppError> {
        self.wbuf
            .extend_from_slice(b"<?xml version='1.0'?><stream:stream to='");
        write_escaped_attr(&mut self.wbuf, domain);
        self.wbuf.extend_from_slice(
            b"' version='1.0' xml:lang='en' xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams'>",
        );
        self.flush().await?;
        loop {
            match self.parser.next_event() {
                Ok(Some(StreamEvent::StreamStart { .. })) => break,
                Ok(Some(StreamEvent::StreamEnd)) => return Err(XmppError::Closed),
                Ok(Some(StreamEvent::Stanza(_))) => {
                    return Err(XmppError::Protocol(
                        "stanza before the stream header".into(),
                    ))
                }
                Ok(None) => {
                    self.read_some(READ_CHUNK).await?;
                }
                Err(e) => return Err(XmppError::Parse(e.condition().into())),
            }
        }
        let features = self.next_element().await?;
        if !features.is("features", NS_STREAMS) {
            return Err(XmppError::Protocol(format!(
                "expected <stream:features>, got <{}/>",
                features.name
            )));
        }
        Ok(features)
    }

    /// Runs one SASL exchange to `<success/>`.
    async fn authenticate(
        &mut self,
        features: &Element,
        creds: &Credentials<'_>,
    ) -> Result<(), XmppError> {
        let mech = creds.mechanism();
        let offered = features.child("mechanisms", NS_SASL).is_some_and(|m| {
            m.children_named("mechanism", NS_SASL)
                .any(|x| x.text().trim() == mech)
        });
        if !offered {
            return Err(XmppError::NotOffered(mech));
        }
        let mut scram = None;
        let initial = match creds {
            Credentials::Plain { user, password } => format!("\0{user}\0{password}").into_bytes(),
            Credentials::XOauth2 { user, token } => format!("\0{user}\0{token}").into_bytes(),
            Credentials::ScramSha256 { user, password, .. } => {
                let mut c = ScramClient::new(ScramHash::Sha256, user, password);
                let first = c.client_first();
                scram = Some(c);
                first
            }
            Credentials::Fast { .. } => return Err(XmppError::NotOffered("HT-SHA-256-NONE")),
        };
        self.sasl_element("auth", Some(mech), &initial);
        self.flush().await?;
        for _ in 0..MAX_SASL_ROUNDS {
            let el = self.next_element().await?;
            if el.ns != NS_SASL {
                return Err(XmppError::Protocol(format!("<{}/> during SASL", el.name)));
            }
            let data = || {
                decode_base64_payload(&el.text())
                    .map_err(|_| XmppError::Protocol(format!("<{}/> data is not base64", el.name)))
            };
            match (el.name.as_str(), scram.as_mut(), creds) {
                ("failure", _, _) => return Err(XmppError::Sasl(first_condition(&el, ""))),
                ("success", None, _) => return Ok(()),
                ("success", Some(s), _) => {
                    // The server's signature may come with <success/> or
                    // (some servers) in a last challenge, already checked.
                    if s.awaits_server_final() {
                        s.verify_server_final(&data()?)?;
                    }
                    return Ok(());
                }
                ("challenge", Some(s), Credentials::ScramSha256 { cache, .. }) => {
                    let reply = if s.awaits_server_final() {
                        s.verify_server_final(&data()?)?;
                        Vec::new()
                    } else {
                        s.client_final(&data()?, cache)?
                    };
                    self.sasl_element("response", None, &reply);
                    self.flush().await?;
                }
                (other, _, _) => {
                    return Err(XmppError::Protocol(format!("<{other}/> during SASL")))
                }
            }
        }
        Err(XmppError::Protocol("SASL did not end".into()))
    }

    /// One SASL2 exchange that must succeed in one round trip (PLAIN,
    /// FAST): `<authenticate/>` with `inline`, then `<success/>` (returned)
    /// and the features after it. The authorization identifier goes to
    /// `self.jid`.
    async fn sasl2(
        &mut self,
        features: &Element,
        mechanism: &str,
        initial: &[u8],
        agent: &str,
        inline: &str,
    ) -> Result<Element, XmppError> {
        if features.child("authentication", NS_SASL2).is_none() {
            return Err(XmppError::Protocol("SASL2 not offered".into()));
        }
        let text = format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'>\
             <initial-response>{}</initial-response>\
             <user-agent id='{agent}'><software>petrel-load</software></user-agent>{inline}</authenticate>",
            encode_base64_payload(initial)
        );
        self.send(text.as_bytes()).await?;
        let el = self.next_element().await?;
        if el.is("failure", NS_SASL2) {
            return Err(XmppError::Sasl(first_condition(&el, NS_SASL)));
        }
        if !el.is("success", NS_SASL2) {
            return Err(XmppError::Protocol(format!(
                "<{}/> after <authenticate/>",
                el.name
            )));
        }
        self.jid = el
            .child("authorization-identifier", NS_SASL2)
            .map(|j| j.text().trim().to_owned())
            .unwrap_or_default();
        let after = self.next_element().await?;
        if !after.is("features", NS_STREAMS) {
            return Err(XmppError::Protocol(
                "no features after SASL2 success".into(),
            ));
        }
        Ok(el)
    }

    /// A FAST token for `user` on installation `agent`: a SASL2 PLAIN login
    /// with `<request-token/>`, then the stream ends.
    pub async fn fetch_fast_token(
        &mut self,
        domain: &str,
        user: &str,
        password: &str,
        agent: &str,
    ) -> Result<String, XmppError> {
        let features = self.open(domain).await?;
        let request = "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
        let plain = format!("\0{user}\0{password}");
        let success = self
            .sasl2(&features, "PLAIN", plain.as_bytes(), agent, request)
            .await?;
        success
            .child("token", NS_FAST)
            .and_then(|t| t.attr("token"))
            .map(str::to_owned)
            .ok_or_else(|| XmppError::Protocol("no FAST token in <success/>".into()))
    }

    fn sasl_element(&mut self, name: &str, mechanism: Option<&str>, data: &[u8]) {
        let mut el = Element::new(name, NS_SASL);
        if let Some(m) = mechanism {
            el.set_attr("mechanism", m);
        }
        el.push_text(encode_base64_payload(data));
        el.write_to(&mut self.wbuf, NS_CLIENT);
    }

    /// Binds `resource`; the bound JID goes to `self.jid`.
    async fn bind(&mut self, resource: &str) -> Result<(), XmppError> {
        let bind = Element::new("bind", NS_BIND)
            .with_child(Element::new("resource", NS_BIND).with_text(resource));
        let result = self.iq_set("bind_1", bind, "bind").await?;
        let jid = result
            .child("bind", NS_BIND)
            .and_then(|b| b.child("jid", NS_BIND))
            .map(|j| j.text().trim().to_owned())
            .unwrap_or_default();
        if jid.is_empty() || !jid.contains('/') {
            return Err(XmppError::Protocol("bind result without a full JID".into()));
        }
        self.jid = jid;
        Ok(())
    }

    /// Sends `<iq type='set' id=id>payload</iq>` and waits for its result
    /// (other stanzas in between are answered or skipped, a bounded number).
    async fn iq_set(
        &mut self,
        id: &str,
        payload: Element,
        what: &'static str,
    ) -> Result<Element, XmppError> {
        Element::new("iq", NS_CLIENT)
            .with_attr("type", "set")
            .with_attr("id", id)
            .with_child(payload)
            .write_to(&mut self.wbuf, NS_CLIENT);
        self.flush().await?;
        for _ in 0..MAX_SKIPPED {
            let el = self.next_element().await?;
            if el.is("iq", NS_CLIENT) && el.attr("id") == Some(id) {
                return match el.attr("type") {
                    Some("result") => Ok(el),
                    Some("error") => Err(XmppError::Iq(what, stanza_error_condition(&el))),
                    _ => Err(XmppError::Protocol(format!("{what}: odd iq answer"))),
                };
            }
            self.answer(&el);
            self.flush().await?;
        }
        Err(XmppError::Protocol(format!("no answer to the {what} iq")))
    }

    /// Ends the stream: `</stream:stream>`, then waits (bounded) for the
    /// server's end or close, so the server closes first and the TIME_WAIT
    /// sockets pile up on its side, not on the generator's ports.
    pub async fn close(mut self) {
        self.wbuf.extend_from_slice(b"</stream:stream>");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.drain_to_end()).await;
        let _ = self.io.shutdown().await;
    }

    /// Sends what is queued, then reads and drops everything up to the
    /// server's end of stream (returned as an error, like any other end).
    async fn drain_to_end(&mut self) -> Result<(), XmppError> {
        self.flush().await?;
        loop {
            while self.next_buffered()?.is_some() {}
            self.read_some(4096).await?;
        }
    }
}

const NS_SASL2: &str = crate::xmpp::sasl2::NS_SASL2;
const NS_FAST: &str = crate::xmpp::sasl2::NS_FAST;

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// HT-SHA-256-NONE's initial response: `user NUL HMAC(token, "Initiator")`.
fn fast_proof(user: &str, token: &str) -> Vec<u8> {
    let mut p = format!("{user}\0").into_bytes();
    p.extend_from_slice(&hmac_sha256(token.as_bytes(), b"Initiator"));
    p
}

fn escape(s: &str) -> String {
    let mut b = Vec::new();
    crate::xmpp::element::write_escaped_text(&mut b, s);
    String::from_utf8(b).unwrap_or_default()
}

/// A user agent id (a UUID) for installation `n` of a load run.
pub fn agent_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff)
}

/// The condition of a `<stream:error>`.
fn stream_error_condition(el: &Element) -> String {
    first_condition(el, NS_STREAM_ERRORS)
}

/// The condition of a stanza's `<error/>` child.
pub fn stanza_error_condition(el: &Element) -> String {
    el.child("error", NS_CLIENT)
        .map(|e| first_condition(e, NS_STANZAS))
        .unwrap_or_else(|| "without condition".into())
}

/// Name of the first child element that is not `<text/>` (in `ns` when it is
/// not empty).
fn first_condition(el: &Element, ns: &str) -> String {
    el.elements()
        .find(|c| c.name != "text" && (ns.is_empty() || c.ns == ns))
        .map_or_else(|| "without condition".into(), |c| c.name.clone())
}

#[cfg(test)]
#[path = "xmpp_client_tests.rs"]
mod tests;
