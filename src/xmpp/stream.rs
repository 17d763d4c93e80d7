//! Sans-I/O incremental parser for an inbound XMPP XML stream (RFC 6120 §4).
//!
//! The connection task reads bytes from the socket, hands them to
//! [`XmlStream::feed`], and then drains [`XmlStream::next_event`] until it
//! returns `Ok(None)`. Events are the stream header, each complete top-level
//! stanza as an [`Element`], and the stream's end tag. Errors carry the
//! RFC 6120 §4.9.3 condition to send back before closing the stream.
//!
//! How it works, and why:
//!
//! * A light byte scanner walks the input exactly once, across feeds,
//!   tracking only what is needed to find where each top-level element ends:
//!   tags, quoted attribute values, CDATA sections and nesting depth. It
//!   rejects comments, DTDs and processing instructions the moment their
//!   first bytes arrive, and enforces the size and depth limits before a
//!   stanza is complete, so a hostile peer cannot make us buffer more than
//!   one stanza's worth of data.
//! * The stream header is parsed once; what later stanzas need of it — its
//!   namespace declarations (the `jabber:client` default, the `stream`
//!   prefix, …) — is kept as a small table ([`parse::Scope`]), and a
//!   stanza's names that its own declarations leave unresolved are looked
//!   up there. Once a top-level element is complete, its bytes are parsed
//!   once with quick-xml's `NsReader`; nothing is re-parsed as more bytes
//!   trickle in, so slow input costs linear time.
//! * Every amplification is capped ([`Limits`]): the header's and each
//!   stanza's size, nesting depth, attributes per element, children per
//!   element, elements per stanza and the length of a namespace (each
//!   element keeps its own copy), so one stanza costs at most a bounded
//!   multiple of its bytes.
//! * Entity references are resolved by this module, not by quick-xml, so
//!   exactly the five predefined entities and numeric character references
//!   are accepted and anything else is `restricted-xml` (no expansion, ever).
//! * Input is XML 1.0 in UTF-8: line ends are normalized (`\r\n` → `\n`) and
//!   attribute values have literal whitespace normalized, as XML requires;
//!   text is otherwise kept exactly as sent, including surrounding spaces.
//!
//! After STARTTLS and after SASL success the peer opens a new stream; call
//! [`XmlStream::reset`], which also throws away anything still buffered (see
//! there for why).

use bytes::{Buf, BytesMut};

use super::element::Element;

/// Namespace of the `<stream:stream>` element.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Default content namespace of a client-to-server stream.
pub const NS_CLIENT: &str = "jabber:client";

/// Resource limits applied while parsing (each a config key: see
/// `configs/petrel.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element, in bytes (`max_stanza_size`).
    pub max_stanza_size: usize,
    /// Largest stream header, in bytes (`xml_max_header_size`).
    pub max_header_size: usize,
    /// Deepest nesting inside a stanza; the stanza element itself is depth 1
    /// (`xml_max_depth`).
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element
    /// (`xml_max_attributes`).
    pub max_attrs: usize,
    /// Most child elements of one element (`xml_max_children`).
    pub max_children: usize,
    /// Most elements in one stanza, the stanza itself included
    /// (`xml_max_elements`).
    pub max_elements: usize,
    /// Longest namespace name, in bytes (`xml_max_namespace_length`).
    pub max_namespace_len: usize,
}

/// Whether `bytes` are exactly one well-formed stanza (in `jabber:client`),
/// whatever its size: a check on stored stanzas before they are written.
pub fn is_one_stanza(bytes: &[u8]) -> bool {
    const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams'>";
    let mut p = XmlStream::new(Limits::reading_back(bytes.len()));
    p.feed(HEADER);
    p.feed(bytes);
    if !matches!(p.next_event(), Ok(Some(StreamEvent::StreamStart { .. }))) {
        return false;
    }
    matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_))))
        && matches!(p.next_event(), Ok(None))
        && p.buffered() == 0
}

impl Limits {
    /// For reading back `len` bytes the server itself wrote (accepted under
    /// whatever limits were configured then): none but a depth far beyond
    /// any sensible `xml_max_depth`.
    pub fn reading_back(len: usize) -> Limits {
        Limits {
            max_stanza_size: len.saturating_add(1024),
            max_header_size: 1024,
            max_depth: 4096,
            max_attrs: usize::MAX,
            max_children: usize::MAX,
            max_elements: usize::MAX,
            max_namespace_len: usize::MAX,
        }
    }

    /// The parser limits from their config keys.
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits {
            max_stanza_size: c.max_stanza_size,
            max_header_size: c.xml_max_header_size,
            max_depth: c.xml_max_depth,
            max_attrs: c.xml_max_attributes,
            max_children: c.xml_max_children,
            max_elements: c.xml_max_elements,
            max_namespace_len: c.xml_max_namespace_length,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_size: 262_144,
            max_header_size: 4096,
            max_depth: 32,
            max_attrs: 64,
            max_children: 1024,
            max_elements: 4096,
            max_namespace_len: 512,
        }
    }
}

/// What the parser found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The opening `<stream:stream …>` tag.
    ///
    /// `attrs` holds the ordinary attributes (`to`, `from`, `version`,
    /// `xml:lang`, `id`, …) but no namespace declarations; `ns_default` is
    /// the value of `xmlns` (empty if absent) and `ns_stream_ok` says whether
    /// the element is `stream` in [`NS_STREAMS`]. The event is produced even
    /// when the namespaces are wrong, because RFC 6120 §4.9.1.2 wants the
    /// server to send its own header before a stream error; the next call to
    /// `next_event` then returns the `invalid-namespace` (or other) error.
    StreamStart {
        /// Header attributes other than namespace declarations.
        attrs: Vec<(String, String)>,
        /// The `xmlns` value (empty if absent).
        ns_default: String,
        /// Whether the element is `stream` in [`NS_STREAMS`].
        ns_stream_ok: bool,
    },
    /// A complete top-level child of the stream.
    Stanza(Element),
    /// The closing `</stream:stream>` tag. Later input is ignored.
    StreamEnd,
}

impl StreamEvent {
    /// For `StreamStart`, the value of header attribute `name`.
    pub fn header_attr(&self, name: &str) -> Option<&str> {
        match self {
            StreamEvent::StreamStart { attrs, .. } => attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// A fatal stream error, named after its RFC 6120 §4.9.3 condition. The
/// string is a human-readable explanation suitable for the `<text/>` child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Broken XML: syntax, mismatched tags, bad UTF-8, undeclared prefix.
    #[error("not-well-formed: {0}")]
    NotWellFormed(String),
    /// XML that XMPP forbids: DTDs, comments, PIs, custom entities.
    #[error("restricted-xml: {0}")]
    RestrictedXml(String),
    /// A [`Limits`] value was exceeded.
    #[error("policy-violation: {0}")]
    PolicyViolation(String),
    /// Wrong stream or default namespace.
    #[error("invalid-namespace: {0}")]
    InvalidNamespace(String),
    /// The XML declaration names an encoding other than UTF-8.
    #[error("unsupported-encoding: {0}")]
    UnsupportedEncoding(String),
    /// Well-formed XML that is not a valid stream (e.g. top-level text).
    #[error("bad-format: {0}")]
    BadFormat(String),
}

impl StreamError {
    /// The RFC 6120 stream error condition element name.
    pub fn condition(&self) -> &'static str {
        match self {
            StreamError::NotWellFormed(_) => "not-well-formed",
            StreamError::RestrictedXml(_) => "restricted-xml",
            StreamError::PolicyViolation(_) => "policy-violation",
            StreamError::InvalidNamespace(_) => "invalid-namespace",
            StreamError::UnsupportedEncoding(_) => "unsupported-encoding",
            StreamError::BadFormat(_) => "bad-format",
        }
    }

    /// The human-readable explanation.
    pub fn text(&self) -> &str {
        match self {
            StreamError::NotWellFormed(t)
            | StreamError::RestrictedXml(t)
            | StreamError::PolicyViolation(t)
            | StreamError::InvalidNamespace(t)
            | StreamError::UnsupportedEncoding(t)
            | StreamError::BadFormat(t) => t,
        }
    }
}

fn nwf(msg: impl Into<String>) -> StreamError {
    StreamError::NotWellFormed(msg.into())
}

fn restricted(msg: impl Into<String>) -> StreamError {
    StreamError::RestrictedXml(msg.into())
}

fn policy(msg: impl Into<String>) -> StreamError {
    StreamError::PolicyViolation(msg.into())
}

fn xml_err(e: quick_xml::Error) -> StreamError {
    nwf(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the stream header: whitespace and an XML declaration only.
    Prolog,
    /// Header seen; reading stanzas.
    Open,
    /// `</stream:stream>` seen.
    Ended,
}

/// Scanner state between bytes. Only what is needed to find element
/// boundaries is tracked; everything else is checked by the real parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Character data (or inter-stanza whitespace at depth 0).
    Text,
    /// Just after `<`.
    Lt,
    /// After `<!`, with how many bytes of `[CDATA[` matched so far.
    Bang(usize),
    /// Inside a start tag; `quote` is the open quote byte or 0, `slash`
    /// whether the last byte outside quotes was `/` (empty-element tag).
    StartTag { quote: u8, slash: bool },
    /// Inside an end tag.
    EndTag,
    /// Inside CDATA, with the number of consecutive `]` just seen (max 2).
    Cdata(u8),
    /// Inside `<?…` in the prolog; whether the last byte was `?`.
    Decl(bool),
}

/// A complete unit found by the scanner, spanning `start..pos` of `buf`.
enum Unit {
    Decl,
    Header { self_closing: bool },
    Stanza,
    End,
}

/// Incremental parser for one inbound XMPP stream. See the module docs.
#[derive(Debug)]
pub struct XmlStream {
    limits: Limits,
    /// Unconsumed input. Bytes before `start` are already-skipped
    /// whitespace, dropped lazily.
    buf: BytesMut,
    /// Next byte to scan.
    pos: usize,
    /// First byte of the unit being scanned.
    start: usize,
    scan: Scan,
    phase: Phase,
    /// Element depth relative to the stream element (stanza root = 1).
    depth: usize,
    /// Whether an `<?xml …?>` declaration may still appear.
    decl_allowed: bool,
    /// The stream header's namespace declarations, in scope in every stanza.
    scope: parse::Scope,
    /// Qualified name of the stream element, to match its end tag.
    header_qname: Vec<u8>,
    /// Error to report on the call after `StreamStart`.
    deferred: Option<StreamError>,
    /// A self-closing stream header owes a `StreamEnd`.
    pending_end: bool,
    /// Once an error is returned the stream is dead; repeat it.
    failed: Option<StreamError>,
}

/// Parses one serialized stanza (as a session queue holds it) back into an
/// element. `None` if it is not one well-formed `jabber:client` stanza.
pub fn read_back(bytes: &[u8]) -> Option<crate::xmpp::element::Element> {
    // What the server wrote was accepted under the configured limits,
    // whatever they are: read back without them.
    let mut p = XmlStream::new(Limits::reading_back(bytes.len()));
    p.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
    );
    matches!(p.next_event(), Ok(Some(StreamEvent::StreamStart { .. }))).then_some(())?;
    p.feed(bytes);
    match p.next_event() {
        Ok(Some(StreamEvent::Stanza(el))) => Some(el),
        _ => None,
    }
}

impl XmlStream {
    /// A parser expecting a stream header.
    pub fn new(limits: Limits) -> Self {
        XmlStream {
            limits,
            buf: BytesMut::new(),
            pos: 0,
            start: 0,
            scan: Scan::Text,
            phase: Phase::Prolog,
            depth: 0,
            decl_allowed: true,
            scope: parse::Scope::default(),
            header_qname: Vec::new(),
            deferred: None,
            pending_end: false,
            failed: None,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends received bytes. Nothing is parsed until `next_event`.
    ///
    /// Callers should drain `next_event` after each read so that at most one
    /// socket read plus one stanza is ever buffered. Input after an error or
    /// after the stream's end is discarded.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || self.phase == Phase::Ended {
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Number of bytes received but not yet consumed by an event. After the
    /// `<starttls/>` element this must be zero: anything else was sent in
    /// plaintext ahead of the handshake and must not be trusted.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Gives back the input buffer's memory when nothing is buffered, so an
    /// idle stream holds no buffer. Call it after draining `next_event`.
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Starts over for a new stream on the same connection (after STARTTLS
    /// or SASL success).
    ///
    /// Buffered input is discarded on purpose: bytes that arrived before the
    /// TLS handshake or before authentication completed belong to the old
    /// stream, and replaying them into the new one would allow plaintext
    /// command injection.
    pub fn reset(&mut self) {
        *self = XmlStream::new(self.limits);
    }

    /// Returns the next event, `Ok(None)` when more input is needed, or the
    /// error that ends the stream (returned again on every later call).
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.next_inner();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
            self.pos = 0;
            self.start = 0;
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if self.pending_end {
            self.pending_end = false;
            self.phase = Phase::Ended;
            return Ok(Some(StreamEvent::StreamEnd));
        }
        loop {
            if self.phase == Phase::Ended {
                self.buf.clear();
                self.pos = 0;
                self.start = 0;
                return Ok(None);
            }
            let unit = match self.scan()? {
                Some(u) => u,
                None => {
                    // Drop skipped whitespace so keepalives never accumulate.
                    self.consume(self.start);
                    return Ok(None);
                }
            };
            let bytes = &self.buf[self.start..self.pos];
            let end = self.pos;
            let event = match unit {
                Unit::Decl => {
                    validate_decl(bytes)?;
                    self.decl_allowed = false;
                    None
                }
                Unit::Header { self_closing } => {
                    let h = parse_header(bytes, &self.limits)?;
                    self.scope = h.scope;
                    self.header_qname = h.qname;
                    self.deferred = h.deferred;
                    self.pending_end = self_closing;
                    self.phase = Phase::Open;
                    self.decl_allowed = false;
                    Some(h.event)
                }
                Unit::Stanza => Some(StreamEvent::Stanza(parse_stanza(
                    &self.scope,
                    bytes,
                    &self.limits,
                )?)),
                Unit::End => {
                    // bytes is `</name ws*>`.
                    let name = bytes[2..bytes.len() - 1].trim_ascii_end();
                    if name != self.header_qname.as_slice() {
                        return Err(nwf("end tag does not match the stream header"));
                    }
                    self.phase = Phase::Ended;
                    Some(StreamEvent::StreamEnd)
                }
            };
            self.start = end;
            self.consume(end);
            if let Some(ev) = event {
                return Ok(Some(ev));
            }
        }
    }

    /// Drops the first `n` buffered bytes (O(1) on `BytesMut`).
    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.pos -= n;
        self.start -= n;
    }

    /// Advances the scanner over buffered bytes until a unit completes.
    fn scan(&mut self) -> Result<Option<Unit>, StreamError> {
        // The header is small: a large one is an attack, not a client.
        let max = if self.phase == Phase::Prolog {
            self.limits.max_header_size.min(self.limits.max_stanza_size)
        } else {
            self.limits.max_stanza_size
        };
        while self.pos < self.buf.len() {
            let in_unit = self.scan != Scan::Text || self.depth > 0;
            if in_unit {
                let used = self.pos - self.start;
                if used >= max {
                    return Err(policy(format!("top-level element exceeds {max} bytes")));
                }
                if self.scan == Scan::Text {
                    // Character data inside a stanza: jump to the next '<'
                    // without stepping the state machine byte by byte.
                    let window_end = self.buf.len().min(self.start + max);
                    let window = &self.buf[self.pos..window_end];
                    match window.iter().position(|&b| b == b'<') {
                        Some(i) => self.pos += i,
                        None => {
                            self.pos = window_end;
                            continue;
                        }
                    }
                }
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if let Some(unit) = self.step(b)? {
                return Ok(Some(unit));
            }
        }
        Ok(None)
    }

    fn step(&mut self, b: u8) -> Result<Option<Unit>, StreamError> {
        match self.scan {
            Scan::Text => {
                if b == b'<' {
                    if self.depth == 0 {
                        self.start = self.pos - 1;
                    }
                    self.scan = Scan::Lt;
                } else if self.depth > 0 {
                    // Character data inside a stanza.
                } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                    // Whitespace keepalive (or prolog whitespace): skip.
                    self.start = self.pos;
                } else if self.phase == Phase::Prolog {
                    return Err(nwf("character data before the stream header"));
                } else {
                    return Err(StreamError::BadFormat(
                        "character data at the top level of the stream".into(),
                    ));
                }
            }
            Scan::Lt => match b {
                b'/' => {
                    if self.phase == Phase::Prolog {
                        return Err(nwf("end tag before the stream header"));
                    }
                    self.scan = Scan::EndTag;
                }
                b'?' => {
                    if self.phase == Phase::Prolog && self.decl_allowed {
                        self.scan = Scan::Decl(false);
                    } else {
                        return Err(restricted("processing instructions are not allowed"));
                    }
                }
                b'!' => self.scan = Scan::Bang(0),
                b if b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80 => {
                    self.scan = Scan::StartTag {
                        quote: 0,
                        slash: false,
                    };
                }
                _ => return Err(nwf("invalid character after '<'")),
            },
            Scan::Bang(n) => {
                const CDATA: &[u8] = b"[CDATA[";
                if n == 0 {
                    match b {
                        b'-' => return Err(restricted("comments are not allowed")),
                        b'[' => self.scan = Scan::Bang(1),
                        b if b.is_ascii_alphabetic() => {
                            return Err(restricted("DTDs and markup declarations are not allowed"))
                        }
                        _ => return Err(nwf("invalid markup after '<!'")),
                    }
                } else if b != CDATA[n] {
                    return Err(nwf("invalid markup after '<!['"));
                } else if n + 1 < CDATA.len() {
                    self.scan = Scan::Bang(n + 1);
                } else if self.depth == 0 {
                    return Err(if self.phase == Phase::Prolog {
                        nwf("CDATA before the stream header")
                    } else {
                        StreamError::BadFormat(
                            "character data at the top level of the stream".into(),
                        )
                    });
                } else {
                    self.scan = Scan::Cdata(0);
                }
            }
            Scan::StartTag { quote, slash } => {
                if quote != 0 {
                    if b == quote {
                        self.scan = Scan::StartTag { quote: 0, slash };
                    }
                    return Ok(None);
                }
                match b {
                    b'"' | b'\'' => {
                        self.scan = Scan::StartTag {
                            quote: b,
                            slash: false,
                        }
                    }
                    b'/' => {
                        self.scan = Scan::StartTag {
                            quote: 0,
                            slash: true,
                        }
                    }
                    b'<' => return Err(nwf("'<' inside a tag")),
                    b'>' => {
                        self.scan = Scan::Text;
                        return self.start_tag_done(slash);
                    }
                    _ => {
                        self.scan = Scan::StartTag {
                            quote: 0,
                            slash: false,
                        }
                    }
                }
            }
            Scan::EndTag => match b {
                b'>' => {
                    self.scan = Scan::Text;
                    if self.depth == 0 {
                        return Ok(Some(Unit::End));
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(Unit::Stanza));
                    }
                }
                b'<' => return Err(nwf("'<' inside an end tag")),
                _ => {}
            },
            Scan::Cdata(k) => {
                self.scan = match b {
                    b']' => Scan::Cdata((k + 1).min(2)),
                    b'>' if k == 2 => Scan::Text,
                    _ => Scan::Cdata(0),
                };
            }
            Scan::Decl(q) => match b {
                b'>' if q => {
                    self.scan = Scan::Text;
                    return Ok(Some(Unit::Decl));
                }
                _ => self.scan = Scan::Decl(b == b'?'),
            },
        }
        Ok(None)
    }

    fn start_tag_done(&mut self, empty: bool) -> Result<Option<Unit>, StreamError> {
        if self.phase == Phase::Prolog {
            return Ok(Some(Unit::Header {
                self_closing: empty,
            }));
        }
        if empty {
            return Ok((self.depth == 0).then_some(Unit::Stanza));
        }
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(policy(format!(
                "stanza nesting exceeds {} levels",
                self.limits.max_depth
            )));
        }
        Ok(None)
    }
}

mod parse;
use parse::{parse_header, parse_stanza, validate_decl};

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
