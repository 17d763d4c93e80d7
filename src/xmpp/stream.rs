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
//! * Once a top-level element is complete, its bytes are parsed once with
//!   quick-xml's `NsReader`, reading the stored stream header chained in
//!   front of the stanza so the header's namespace declarations (the
//!   `jabber:client` default, the `stream` prefix, …) are in scope. Nothing
//!   is re-parsed as more bytes trickle in, so slow input costs linear time.
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
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName, ResolveResult};
use quick_xml::reader::NsReader;

use super::element::{is_xml_char, Element};

/// Namespace of the `<stream:stream>` element.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Default content namespace of a client-to-server stream.
pub const NS_CLIENT: &str = "jabber:client";

/// Resource limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest top-level element (and largest stream header), in bytes.
    pub max_stanza_size: usize,
    /// Deepest nesting inside a stanza; the stanza element itself is depth 1.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_size: 262_144,
            max_depth: 32,
            max_attrs: 64,
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
    /// Raw stream start tag, replayed in front of each stanza for namespaces.
    header: Vec<u8>,
    /// Qualified name of the stream element, to match its end tag.
    header_qname: Vec<u8>,
    /// Error to report on the call after `StreamStart`.
    deferred: Option<StreamError>,
    /// A self-closing stream header owes a `StreamEnd`.
    pending_end: bool,
    /// Once an error is returned the stream is dead; repeat it.
    failed: Option<StreamError>,
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
            header: Vec::new(),
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
                    self.header = bytes.to_vec();
                    self.header_qname = h.qname;
                    self.deferred = h.deferred;
                    self.pending_end = self_closing;
                    self.phase = Phase::Open;
                    self.decl_allowed = false;
                    Some(h.event)
                }
                Unit::Stanza => Some(StreamEvent::Stanza(parse_stanza(
                    &self.header,
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
        let max = self.limits.max_stanza_size;
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

/// Checks a prolog `<?…?>`: only an XML declaration, and only UTF-8.
fn validate_decl(bytes: &[u8]) -> Result<(), StreamError> {
    let after = &bytes[2..];
    let target_len = after
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'?')
        .unwrap_or(after.len());
    if &after[..target_len] != b"xml" {
        return Err(restricted("processing instructions are not allowed"));
    }
    check_text(bytes)?;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    match reader.read_event().map_err(xml_err)? {
        Event::Decl(d) => {
            d.version().map_err(xml_err)?;
            if let Some(enc) = d.encoding() {
                let enc = enc.map_err(|e| nwf(e.to_string()))?;
                if !enc.eq_ignore_ascii_case(b"utf-8") {
                    return Err(StreamError::UnsupportedEncoding(
                        "only UTF-8 is supported".into(),
                    ));
                }
            }
            Ok(())
        }
        _ => Err(nwf("malformed XML declaration")),
    }
}

struct Header {
    event: StreamEvent,
    deferred: Option<StreamError>,
    qname: Vec<u8>,
}

/// Parses the complete stream start tag.
fn parse_header(bytes: &[u8], limits: &Limits) -> Result<Header, StreamError> {
    check_text(bytes)?;
    let mut reader = NsReader::from_reader(bytes);
    let start = match reader.read_event().map_err(xml_err)? {
        Event::Start(s) | Event::Empty(s) => s,
        _ => return Err(nwf("malformed stream header")),
    };
    let mut deferred = None;
    let mut attrs = Vec::new();
    let mut ns_default = String::new();
    let mut count = 0;
    for a in start.attributes() {
        let a = a.map_err(|e| nwf(e.to_string()))?;
        count += 1;
        if count > limits.max_attrs {
            return Err(policy("too many attributes on the stream header"));
        }
        let value = unescape_attr(utf8(&a.value)?)?;
        match a.key.as_namespace_binding() {
            Some(PrefixDeclaration::Default) => ns_default = value,
            Some(PrefixDeclaration::Named(_)) => {}
            // Reported after StreamStart, like the namespace errors.
            None => match keep_attr(&reader, a.key) {
                Ok(Some(name)) => attrs.push((name, value)),
                Ok(None) => {}
                Err(e) => {
                    deferred.get_or_insert(e);
                }
            },
        }
    }
    let (res, local) = reader.resolve_element(start.name());
    let ns = match res {
        ResolveResult::Bound(ns) => Some(unescape_attr(utf8(ns.as_ref())?)?),
        ResolveResult::Unbound => Some(String::new()),
        ResolveResult::Unknown(_) => None,
    };
    let ns_stream_ok = ns.as_deref() == Some(NS_STREAMS) && local.as_ref() == b"stream";
    let ns_error = match &ns {
        None => Some(nwf("undeclared namespace prefix on the stream header")),
        Some(ns) if ns != NS_STREAMS => Some(StreamError::InvalidNamespace(format!(
            "stream element must be in {NS_STREAMS}"
        ))),
        Some(_) if local.as_ref() != b"stream" => Some(StreamError::BadFormat(
            "root element must be <stream:stream>".into(),
        )),
        Some(_) if ns_default != NS_CLIENT => Some(StreamError::InvalidNamespace(format!(
            "default namespace must be {NS_CLIENT}"
        ))),
        Some(_) => None,
    };
    let deferred = ns_error.or(deferred);
    Ok(Header {
        event: StreamEvent::StreamStart {
            attrs,
            ns_default,
            ns_stream_ok,
        },
        deferred,
        qname: start.name().as_ref().to_vec(),
    })
}

/// Decides how an ordinary (non-`xmlns`) attribute is stored: unprefixed
/// ones by local name, `xml:*` with its prefix, other namespaced ones
/// dropped (they could not be written back without their declaration).
/// An undeclared prefix is an error.
fn keep_attr<R>(reader: &NsReader<R>, key: QName<'_>) -> Result<Option<String>, StreamError> {
    let local_name = key.local_name();
    let local = utf8(local_name.as_ref())?;
    match key.prefix() {
        None => Ok(Some(local.to_owned())),
        Some(p) if p.as_ref() == b"xml" => Ok(Some(format!("xml:{local}"))),
        Some(_) => match reader.resolve_attribute(key).0 {
            ResolveResult::Unknown(_) => Err(nwf("undeclared namespace prefix")),
            _ => Ok(None),
        },
    }
}

/// Parses one complete top-level element, with the stream header in front
/// so its namespace declarations apply.
fn parse_stanza(header: &[u8], bytes: &[u8], limits: &Limits) -> Result<Element, StreamError> {
    check_text(bytes)?;
    let mut reader = NsReader::from_reader(std::io::Read::chain(header, bytes));
    let cfg = reader.config_mut();
    cfg.expand_empty_elements = true;
    cfg.check_end_names = true;
    let mut buf = Vec::new();
    match reader.read_event_into(&mut buf).map_err(xml_err)? {
        Event::Start(_) => {}
        _ => return Err(nwf("stream header could not be replayed")),
    }
    let mut stack: Vec<Element> = Vec::new();
    loop {
        buf.clear();
        let event = reader.read_event_into(&mut buf).map_err(xml_err)?;
        match event {
            Event::Start(s) => {
                if stack.len() >= limits.max_depth {
                    return Err(policy("stanza nested too deeply"));
                }
                stack.push(start_element(&reader, &s, limits)?);
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| nwf("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.push_child(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                let parent = stack.last_mut().ok_or_else(|| nwf("stray text"))?;
                parent.push_text(normalize_newlines(utf8(&t)?));
            }
            Event::CData(t) => {
                let parent = stack.last_mut().ok_or_else(|| nwf("stray CDATA"))?;
                parent.push_text(normalize_newlines(utf8(&t)?));
            }
            Event::GeneralRef(r) => {
                let parent = stack.last_mut().ok_or_else(|| nwf("stray reference"))?;
                parent.push_char(resolve_entity(utf8(&r)?)?);
            }
            Event::Comment(_) => return Err(restricted("comments are not allowed")),
            Event::PI(_) | Event::Decl(_) => {
                return Err(restricted("processing instructions are not allowed"))
            }
            Event::DocType(_) => return Err(restricted("DTDs are not allowed")),
            Event::Empty(_) => return Err(nwf("unexpected empty element event")),
            Event::Eof => return Err(nwf("stanza ended early")),
        }
    }
}

fn start_element<R>(
    reader: &NsReader<R>,
    s: &BytesStart<'_>,
    limits: &Limits,
) -> Result<Element, StreamError> {
    let (res, local) = reader.resolve_element(s.name());
    let ns = match res {
        ResolveResult::Bound(ns) => unescape_attr(utf8(ns.as_ref())?)?,
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(_) => return Err(nwf("undeclared namespace prefix")),
    };
    let mut el = Element::new(utf8(local.as_ref())?, ns);
    let mut count = 0;
    for a in s.attributes() {
        let a = a.map_err(|e| nwf(e.to_string()))?;
        count += 1;
        if count > limits.max_attrs {
            return Err(policy(format!(
                "more than {} attributes on an element",
                limits.max_attrs
            )));
        }
        let value = unescape_attr(utf8(&a.value)?)?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        if let Some(name) = keep_attr(reader, a.key)? {
            el.attrs.push((name, value));
        }
    }
    Ok(el)
}

fn utf8(b: &[u8]) -> Result<&str, StreamError> {
    std::str::from_utf8(b).map_err(|_| nwf("invalid UTF-8"))
}

/// Whole-unit check: valid UTF-8 made only of XML 1.0 characters. Done once
/// per unit so every later conversion can rely on it.
fn check_text(bytes: &[u8]) -> Result<(), StreamError> {
    let s = utf8(bytes)?;
    if s.chars().all(is_xml_char) {
        Ok(())
    } else {
        Err(nwf("character not allowed in XML"))
    }
}

/// XML 1.0 §2.11 line-end normalization.
fn normalize_newlines(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

/// Resolves the name inside `&…;`: the five predefined entities and
/// character references only. Anything else would need a DTD, which XMPP
/// forbids, so it is `restricted-xml` rather than expanded.
fn resolve_entity(name: &str) -> Result<char, StreamError> {
    match name {
        "amp" => return Ok('&'),
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "quot" => return Ok('"'),
        "apos" => return Ok('\''),
        _ => {}
    }
    if let Some(num) = name.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix('x') {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        // Checked first because from_str_radix would accept a leading '+'.
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return Err(nwf(format!("malformed character reference &{name};")));
        }
        return u32::from_str_radix(digits, radix)
            .ok()
            .and_then(char::from_u32)
            .filter(|c| is_xml_char(*c))
            .ok_or_else(|| nwf(format!("character reference &{name}; is not allowed")));
    }
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c.is_alphabetic()
            || c == '_'
            || c == ':'
            || (i > 0 && (c.is_alphanumeric() || c == '-' || c == '.'))
    });
    if name.is_empty() || !valid_name {
        Err(nwf("malformed entity reference"))
    } else {
        Err(restricted(format!(
            "entity reference &{name}; is not allowed"
        )))
    }
}

/// Decodes an attribute value: references resolved once, literal tab, CR
/// and LF normalized to spaces (XML 1.0 §3.3.3), a `\r\n` pair counting as
/// one line end.
fn unescape_attr(raw: &str) -> Result<String, StreamError> {
    if raw.contains('<') {
        return Err(nwf("'<' in attribute value"));
    }
    if !raw.contains(['&', '\t', '\r', '\n']) {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\r', '\n']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        if c == b'&' {
            let end = rest[i..]
                .find(';')
                .ok_or_else(|| nwf("unterminated entity reference in attribute"))?;
            out.push(resolve_entity(&rest[i + 1..i + end])?);
            rest = &rest[i + end + 1..];
        } else {
            out.push(' ');
            rest = if rest[i..].starts_with("\r\n") {
                &rest[i + 2..]
            } else {
                &rest[i + 1..]
            };
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
