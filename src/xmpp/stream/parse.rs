//! The second half of the stream parser: once the scanner has found a whole
//! header or stanza, its bytes are parsed here with quick-xml (namespaces,
//! attributes, text), with entities resolved by our own code (the five
//! predefined ones and character references only) and XML's newline rules.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName, ResolveResult};
use quick_xml::reader::NsReader;

use super::super::element::{is_xml_char, Element};
use super::*;

/// Checks a prolog `<?…?>`: only an XML declaration, and only UTF-8.
pub(super) fn validate_decl(bytes: &[u8]) -> Result<(), StreamError> {
    let after = &bytes[2..];
    let target_len = after
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'?')
        .unwrap_or(after.len());
    if &after[..target_len] != b"xml" {
        return Err(restricted("processing instructions are not allowed"));
    }
    let text = check_text(bytes)?;
    let mut reader = quick_xml::Reader::from_str(text);
    match reader.read_event().map_err(xml_err)? {
        Event::Decl(d) => {
            d.version().map_err(xml_err)?;
            if let Some(enc) = d.encoding() {
                let enc = enc.map_err(|e| nwf(e.to_string()))?;
                if !enc.eq_ignore_ascii_case("utf-8") {
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

pub(super) struct Header {
    pub(super) event: StreamEvent,
    pub(super) deferred: Option<StreamError>,
    pub(super) qname: Vec<u8>,
    pub(super) scope: Scope,
}

/// The stream header's namespace declarations: what a stanza's names that
/// its own declarations leave unresolved mean. Parsed once per stream (not
/// replayed before every stanza), each name at most `max_namespace_len`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The header's default namespace (`xmlns`), empty if none.
    default: String,
    /// `prefix -> namespace` for the header's `xmlns:prefix` declarations.
    prefixes: Vec<(String, String)>,
}

impl Scope {
    fn prefix(&self, p: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .find(|(k, _)| k == p)
            .map(|(_, v)| v.as_str())
    }
}

fn namespace_name(value: String, limits: &Limits) -> Result<String, StreamError> {
    if value.len() > limits.max_namespace_len {
        return Err(policy(format!(
            "a namespace name is longer than {} bytes",
            limits.max_namespace_len
        )));
    }
    Ok(value)
}

/// Parses the complete stream start tag.
pub(super) fn parse_header(bytes: &[u8], limits: &Limits) -> Result<Header, StreamError> {
    let text = check_text(bytes)?;
    let mut reader = NsReader::from_str(text);
    let start = match reader.read_event().map_err(xml_err)? {
        Event::Start(s) | Event::Empty(s) => s,
        _ => return Err(nwf("malformed stream header")),
    };
    let mut deferred = None;
    let mut attrs = Vec::new();
    let mut ns_default = String::new();
    let mut prefixes = Vec::new();
    let mut count = 0;
    for a in start.attributes() {
        let a = a.map_err(|e| nwf(e.to_string()))?;
        count += 1;
        if count > limits.max_attrs {
            return Err(policy("too many attributes on the stream header"));
        }
        let value = unescape_attr(&a.value)?;
        match a.key.as_namespace_binding() {
            Some(PrefixDeclaration::Default) => ns_default = namespace_name(value, limits)?,
            Some(PrefixDeclaration::Named(p)) => {
                prefixes.push((p.to_owned(), namespace_name(value, limits)?));
            }
            // Reported after StreamStart, like the namespace errors.
            None => match keep_attr(&reader, a.key, None) {
                Ok(Some(name)) => attrs.push((name, value)),
                Ok(None) => {}
                Err(e) => {
                    deferred.get_or_insert(e);
                }
            },
        }
    }
    let (res, local) = reader.resolver().resolve_element(start.name());
    let ns = match res {
        ResolveResult::Bound(ns) => Some(unescape_attr(ns.as_ref())?),
        ResolveResult::Unbound => Some(String::new()),
        ResolveResult::Unknown(_) => None,
    };
    let ns_stream_ok = ns.as_deref() == Some(NS_STREAMS) && local.as_ref() == "stream";
    let ns_error = match &ns {
        None => Some(nwf("undeclared namespace prefix on the stream header")),
        Some(ns) if ns != NS_STREAMS => Some(StreamError::InvalidNamespace(format!(
            "stream element must be in {NS_STREAMS}"
        ))),
        Some(_) if local.as_ref() != "stream" => Some(StreamError::BadFormat(
            "root element must be <stream:stream>".into(),
        )),
        Some(_) if ns_default != NS_CLIENT => Some(StreamError::InvalidNamespace(format!(
            "default namespace must be {NS_CLIENT}"
        ))),
        Some(_) => None,
    };
    let deferred = ns_error.or(deferred);
    let scope = Scope {
        default: ns_default.clone(),
        prefixes,
    };
    Ok(Header {
        event: StreamEvent::StreamStart {
            attrs,
            ns_default,
            ns_stream_ok,
        },
        deferred,
        qname: start.name().as_ref().as_bytes().to_vec(),
        scope,
    })
}

/// Decides how an ordinary (non-`xmlns`) attribute is stored: unprefixed
/// ones by local name, `xml:*` with its prefix, other namespaced ones
/// dropped (they could not be written back without their declaration).
/// A prefix declared nowhere (neither in the element's scope nor on the
/// stream header, `scope`) is an error.
fn keep_attr<R>(
    reader: &NsReader<R>,
    key: QName<'_>,
    scope: Option<&Scope>,
) -> Result<Option<String>, StreamError> {
    let local_name = key.local_name();
    let local: &str = local_name.as_ref();
    match key.prefix() {
        None => Ok(Some(local.to_owned())),
        Some(p) if p.as_ref() == "xml" => Ok(Some(format!("xml:{local}"))),
        Some(p) => match reader.resolver().resolve_attribute(key).0 {
            ResolveResult::Unknown(_) if scope.and_then(|s| s.prefix(p.as_ref())).is_none() => {
                Err(nwf("undeclared namespace prefix"))
            }
            _ => Ok(None),
        },
    }
}

/// Parses one complete top-level element. Names its own declarations leave
/// unresolved are looked up in the stream header's `scope`.
pub(super) fn parse_stanza(
    scope: &Scope,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Element, StreamError> {
    let text = check_text(bytes)?;
    // Borrowed events from one slice, no copy per event.
    let mut reader = NsReader::from_str(text);
    let cfg = reader.config_mut();
    cfg.expand_empty_elements = true;
    cfg.check_end_names = true;
    // The open elements, how many child elements each has so far, and
    // whether an `xmlns=''` in the stanza took the default namespace away
    // (then an unprefixed name is in no namespace, not in the header's).
    let mut stack: Vec<(Element, usize, bool)> = Vec::new();
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(xml_err)?;
        match event {
            Event::Start(s) => {
                if stack.len() >= limits.max_depth {
                    return Err(policy("stanza nested too deeply"));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(policy(format!(
                        "more than {} elements in a stanza",
                        limits.max_elements
                    )));
                }
                if let Some((_, children, _)) = stack.last_mut() {
                    *children += 1;
                    if *children > limits.max_children {
                        return Err(policy(format!(
                            "more than {} children of an element",
                            limits.max_children
                        )));
                    }
                }
                let reset = stack.last().is_some_and(|(_, _, r)| *r);
                let (el, reset) = start_element(&reader, &s, scope, reset, limits)?;
                stack.push((el, 0, reset));
            }
            Event::End(_) => {
                let (el, _, _) = stack.pop().ok_or_else(|| nwf("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some((parent, _, _)) => parent.push_child(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                let (parent, _, _) = stack.last_mut().ok_or_else(|| nwf("stray text"))?;
                parent.push_text(normalize_newlines(&t));
            }
            Event::CData(t) => {
                let (parent, _, _) = stack.last_mut().ok_or_else(|| nwf("stray CDATA"))?;
                parent.push_text(normalize_newlines(&t));
            }
            Event::GeneralRef(r) => {
                let (parent, _, _) = stack.last_mut().ok_or_else(|| nwf("stray reference"))?;
                parent.push_char(resolve_entity(&r)?);
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

/// One start tag as an element, its namespace resolved in the element's
/// scope, then the header's. `reset`: an enclosing `xmlns=''` took the
/// default namespace away. Returns the element and whether the default
/// namespace is gone for its children.
fn start_element<R>(
    reader: &NsReader<R>,
    s: &BytesStart<'_>,
    scope: &Scope,
    mut reset: bool,
    limits: &Limits,
) -> Result<(Element, bool), StreamError> {
    let mut count = 0;
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| nwf(e.to_string()))?;
        count += 1;
        if count > limits.max_attrs {
            return Err(policy(format!(
                "more than {} attributes on an element",
                limits.max_attrs
            )));
        }
        let value = unescape_attr(&a.value)?;
        match a.key.as_namespace_binding() {
            Some(PrefixDeclaration::Default) => {
                reset = value.is_empty();
                namespace_name(value, limits)?;
            }
            Some(PrefixDeclaration::Named(_)) => {
                namespace_name(value, limits)?;
            }
            None => {
                if let Some(name) = keep_attr(reader, a.key, Some(scope))? {
                    attrs.push((name, value));
                }
            }
        }
    }
    let (res, local) = reader.resolver().resolve_element(s.name());
    let ns = match res {
        ResolveResult::Bound(ns) => unescape_attr(ns.as_ref())?,
        ResolveResult::Unbound if reset => String::new(),
        ResolveResult::Unbound => scope.default.clone(),
        ResolveResult::Unknown(p) => match scope.prefix(&p) {
            Some(ns) => ns.to_owned(),
            None => return Err(nwf("undeclared namespace prefix")),
        },
    };
    let mut el = Element::new(local.as_ref(), ns);
    el.attrs = attrs;
    Ok((el, reset))
}

fn utf8(b: &[u8]) -> Result<&str, StreamError> {
    std::str::from_utf8(b).map_err(|_| nwf("invalid UTF-8"))
}

/// Whole-unit check: valid UTF-8 made only of XML 1.0 characters, given
/// back as text. Done once per unit so every later step can rely on it.
fn check_text(bytes: &[u8]) -> Result<&str, StreamError> {
    let s = utf8(bytes)?;
    // Printable ASCII with tabs and line ends: no character to decode.
    if bytes
        .iter()
        .all(|&b| (0x20..0x7F).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Ok(s);
    }
    if s.chars().all(is_xml_char) {
        Ok(s)
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
    // One pass over the bytes (the usual value has none of these).
    let mut special = false;
    for &b in raw.as_bytes() {
        match b {
            b'<' => return Err(nwf("'<' in attribute value")),
            b'&' | b'\t' | b'\r' | b'\n' => special = true,
            _ => {}
        }
    }
    if !special {
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
