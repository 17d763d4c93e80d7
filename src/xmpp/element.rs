//! A small owned XML element tree for XMPP stanzas.
//!
//! [`super::stream::XmlStream`] produces one [`Element`] per top-level child
//! of the stream; the rest of the server inspects it with the lookup helpers,
//! builds replies with the builder methods, and writes them back with
//! [`Element::write_to`]. The model is deliberately simpler than a full XML
//! infoset:
//!
//! * every element carries its resolved namespace URI, never a prefix, so
//!   serialization only ever emits `xmlns='…'` where the namespace changes;
//! * attributes are keyed by local name. `xml:lang` (and any other `xml:`
//!   attribute) keeps its prefix because it is predeclared by XML itself.
//!   Attributes in any other namespace are dropped by the parser, since they
//!   could not be written back without their prefix declaration;
//! * text is stored decoded (entities resolved exactly once) and adjacent
//!   text runs are merged, so `text()` returns what the sender meant.

use bytes::BufMut;

/// An XML element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Local name (no prefix).
    pub name: String,
    /// Resolved namespace URI; empty when the element is in no namespace.
    pub ns: String,
    /// Attributes in document order, keyed by local name (`xml:lang` keeps
    /// its prefix). Namespace declarations are not attributes here.
    pub attrs: Vec<(String, String)>,
    /// Child elements and text, in document order.
    pub children: Vec<Node>,
}

/// A child of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data, decoded.
    Text(String),
}

impl Element {
    /// An empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Whether this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets attribute `name`, replacing an existing value in place so the
    /// attribute order stays stable.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Removes attribute `name`, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let idx = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(idx).1)
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Element::push_child`].
    pub fn with_child(mut self, child: Element) -> Self {
        self.push_child(child);
        self
    }

    /// Builder form of [`Element::push_text`].
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends text. It is merged into a trailing text node, so a built tree
    /// has the same shape as the same XML parsed back (the parser merges
    /// adjacent text, CDATA and character references too). Empty text is
    /// ignored for the same reason.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(last)) => last.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    /// Appends a single character; used by the parser for entity references.
    pub(crate) fn push_char(&mut self, c: char) {
        match self.children.last_mut() {
            Some(Node::Text(last)) => last.push(c),
            _ => self.children.push(Node::Text(c.to_string())),
        }
    }

    /// Child elements, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// First child element `name` in namespace `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// Mutable form of [`Element::child`].
    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// Removes every child element `name` in namespace `ns`.
    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// All child elements `name` in namespace `ns`.
    pub fn children_named<'a>(
        &'a self,
        name: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(name, ns))
    }

    /// Concatenation of the direct text children (not descendants), exactly
    /// as received: no trimming.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serializes the element. `parent_ns` is the default namespace in scope
    /// where it is written: `xmlns='…'` is emitted only when `self.ns`
    /// differs, so stanzas written inside a `jabber:client` stream pass
    /// `"jabber:client"` and come out without a declaration.
    ///
    /// Names are written as given (they come from the parser or from code);
    /// attribute values and text are escaped so the output is always
    /// well-formed. Characters XML 1.0 cannot carry at all (most C0
    /// controls, U+FFFE, U+FFFF) are replaced by U+FFFD.
    pub fn write_to<B: BufMut>(&self, out: &mut B, parent_ns: &str) {
        out.put_u8(b'<');
        out.put_slice(self.name.as_bytes());
        if self.ns != parent_ns {
            out.put_slice(b" xmlns='");
            write_escaped_attr(out, &self.ns);
            out.put_u8(b'\'');
        }
        for (k, v) in &self.attrs {
            // The namespace is governed by `ns`; a stray xmlns attribute
            // would contradict it and could redeclare the default namespace.
            if k == "xmlns" || k.starts_with("xmlns:") {
                continue;
            }
            out.put_u8(b' ');
            out.put_slice(k.as_bytes());
            out.put_slice(b"='");
            write_escaped_attr(out, v);
            out.put_u8(b'\'');
        }
        if self.children.is_empty() {
            out.put_slice(b"/>");
            return;
        }
        out.put_u8(b'>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => write_escaped_text(out, t),
            }
        }
        out.put_slice(b"</");
        out.put_slice(self.name.as_bytes());
        out.put_u8(b'>');
    }

    /// About how many bytes [`Element::write_to`] writes (exact unless
    /// something needs escaping), so a buffer is allocated once.
    pub fn size_hint(&self) -> usize {
        let name = self.name.len();
        let mut n = 2 * name + 5 + self.ns.len() + 9;
        for (k, v) in &self.attrs {
            n += k.len() + v.len() + 4;
        }
        for c in &self.children {
            n += match c {
                Node::Element(e) => e.size_hint(),
                Node::Text(t) => t.len(),
            };
        }
        n
    }

    /// Convenience wrapper around [`Element::write_to`].
    pub fn to_bytes(&self, parent_ns: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        self.write_to(&mut out, parent_ns);
        out
    }
}

/// Whether `c` matches the XML 1.0 `Char` production.
pub fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// Writes `s` escaped for character data.
///
/// `\r` is written as a character reference because a literal one would be
/// turned into `\n` by the receiver's line-end normalization.
pub fn write_escaped_text<B: BufMut>(out: &mut B, s: &str) {
    write_escaped(out, s, false);
}

/// Writes `s` escaped for an attribute value delimited by either quote.
///
/// Tab, CR and LF become character references because a literal one would
/// be turned into a space by attribute-value normalization.
pub fn write_escaped_attr<B: BufMut>(out: &mut B, s: &str) {
    write_escaped(out, s, true);
}

fn write_escaped<B: BufMut>(out: &mut B, s: &str, attr: bool) {
    let bytes = s.as_bytes();
    // Most text is plain printable ASCII that needs nothing: one copy.
    let plain = |b: &u8| match *b {
        b'&' | b'<' | b'>' => false,
        b'"' | b'\'' => !attr,
        0x20..=0x7E => true,
        _ => false,
    };
    if bytes.iter().all(plain) {
        out.put_slice(bytes);
        return;
    }
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '\r' => "&#13;",
            '"' if attr => "&quot;",
            '\'' if attr => "&apos;",
            '\t' if attr => "&#9;",
            '\n' if attr => "&#10;",
            c if !is_xml_char(c) => "\u{FFFD}",
            _ => continue,
        };
        out.put_slice(&bytes[last..i]);
        out.put_slice(rep.as_bytes());
        last = i + c.len_utf8();
    }
    out.put_slice(&bytes[last..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_lookup() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "a@b")
            .with_attr("type", "chat")
            .with_attr("to", "c@d")
            .with_child(Element::new("body", "jabber:client").with_text("hi"))
            .with_child(Element::new("x", "urn:x"))
            .with_child(Element::new("body", "jabber:client").with_text("again"));
        assert_eq!(e.attr("to"), Some("c@d"));
        assert_eq!(e.attrs.len(), 2);
        assert_eq!(e.child("body", "jabber:client").unwrap().text(), "hi");
        assert!(e.child("body", "urn:x").is_none());
        assert_eq!(e.children_named("body", "jabber:client").count(), 2);
        assert!(e.child("x", "urn:x").is_some());
    }

    #[test]
    fn text_merges_and_is_not_trimmed() {
        let e = Element::new("a", "")
            .with_text("  x ")
            .with_text("")
            .with_text("y  ");
        assert_eq!(e.children.len(), 1);
        assert_eq!(e.text(), "  x y  ");
    }

    #[test]
    fn serialization_namespaces() {
        let e = Element::new("iq", "jabber:client")
            .with_attr("id", "1")
            .with_child(Element::new("query", "jabber:iq:roster"));
        assert_eq!(
            e.to_bytes("jabber:client"),
            b"<iq id='1'><query xmlns='jabber:iq:roster'/></iq>"
        );
        assert_eq!(
            e.to_bytes(""),
            b"<iq xmlns='jabber:client' id='1'><query xmlns='jabber:iq:roster'/></iq>"
        );
        let none = Element::new("a", "jabber:client").with_child(Element::new("b", ""));
        assert_eq!(none.to_bytes("jabber:client"), b"<a><b xmlns=''/></a>");
    }

    #[test]
    fn serialization_escapes() {
        let e = Element::new("a", "")
            .with_attr("v", "<&>\"'\t\n\r")
            .with_attr("xml:lang", "en")
            .with_attr("xmlns", "bogus")
            .with_text("<&>\"'\r\n\u{1}");
        let out = String::from_utf8(e.to_bytes("")).unwrap();
        assert_eq!(
            out,
            "<a v='&lt;&amp;&gt;&quot;&apos;&#9;&#10;&#13;' xml:lang='en'>\
             &lt;&amp;&gt;\"'&#13;\n\u{FFFD}</a>"
        );
    }

    #[test]
    fn write_to_bytesmut() {
        let mut b = bytes::BytesMut::new();
        Element::new("r", "urn:x").write_to(&mut b, "urn:x");
        assert_eq!(&b[..], b"<r/>");
    }
}
