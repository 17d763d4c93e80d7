//! RFC 7395 framing, I/O-free: a WebSocket message from the client becomes
//! the bytes a TCP client would have sent (`<open/>` a stream header,
//! `<close/>` the stream's end, anything else itself), and the bytes the
//! connection task writes are cut into one message per top-level element
//! (the header becomes `<open/>`, the end `<close/>`, and each element
//! declares its namespace, as a message is a document of its own).

use std::collections::VecDeque;

pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// A client's message as stream bytes (see the module docs). An `<open/>`
/// or `<close/>` outside the framing namespace is passed on as it is (the
/// stream then fails as a TCP stream would).
pub fn inbound(msg: &[u8]) -> Vec<u8> {
    let mut at = 0;
    let el = loop {
        while at < msg.len() && msg[at].is_ascii_whitespace() {
            at += 1;
        }
        if msg.get(at) != Some(&b'<') {
            return msg.to_vec();
        }
        match tag_end(msg, at) {
            Some((end, Tag::Other)) => at = end,
            Some((end, Tag::Empty)) if msg[end..].iter().all(u8::is_ascii_whitespace) => {
                break &msg[at..end];
            }
            _ => return msg.to_vec(),
        }
    };
    let name = tag_name(el);
    if name != b"open" && name != b"close" {
        return msg.to_vec();
    }
    let attrs = attributes(el);
    if !attrs
        .iter()
        .any(|(k, v)| *k == b"xmlns" && *v == NS_FRAMING.as_bytes())
    {
        return msg.to_vec();
    }
    if name == b"close" {
        return b"</stream:stream>".to_vec();
    }
    let mut h = format!("<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'");
    for (k, v) in attrs {
        if matches!(k, b"to" | b"from" | b"version" | b"xml:lang" | b"id") {
            h.push_str(&format!(
                " {}='{}'",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v).replace('\'', "&apos;")
            ));
        }
    }
    h.push('>');
    h.into_bytes()
}

/// Cuts the server's output into messages. See the module docs.
#[derive(Default)]
pub struct Outbound {
    buf: Vec<u8>,
    /// Where the next tag is looked for.
    scan: usize,
    /// Where the element being gathered begins (depth > 0).
    start: usize,
    depth: usize,
}

enum Tag {
    Open,
    Close,
    Empty,
    /// A declaration, comment or other markup that is not an element.
    Other,
}

/// The end (exclusive) of the markup that begins at `at` (a `<`), if all
/// of it is there; quotes are honoured in tags.
fn tag_end(b: &[u8], at: usize) -> Option<(usize, Tag)> {
    let rest = &b[at..];
    if rest.starts_with(b"<?") {
        let i = rest.windows(2).position(|w| w == b"?>")?;
        return Some((at + i + 2, Tag::Other));
    }
    if rest.starts_with(b"<!--") {
        let i = rest.windows(3).position(|w| w == b"-->")?;
        return Some((at + i + 3, Tag::Other));
    }
    if rest.len() < 2 {
        return None;
    }
    let mut quote = None;
    for (i, &c) in rest.iter().enumerate().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'>') => {
                let kind = if rest[1] == b'/' {
                    Tag::Close
                } else if rest[i - 1] == b'/' {
                    Tag::Empty
                } else {
                    Tag::Open
                };
                return Some((at + i + 1, kind));
            }
            _ => {}
        }
    }
    None
}

/// The name of the element whose tag begins at the start of `tag`.
fn tag_name(tag: &[u8]) -> &[u8] {
    let body = tag
        .strip_prefix(b"</")
        .or_else(|| tag.strip_prefix(b"<"))
        .unwrap_or(tag);
    let n = body
        .iter()
        .position(|c| c.is_ascii_whitespace() || *c == b'>' || *c == b'/')
        .unwrap_or(body.len());
    &body[..n]
}

/// `name='value'` pairs of a start tag, values as written (escaped).
fn attributes(tag: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut i = 1 + tag_name(tag).len();
    while i < tag.len() {
        while i < tag.len() && tag[i].is_ascii_whitespace() {
            i += 1;
        }
        let Some(eq) = tag[i..].iter().position(|c| *c == b'=') else {
            break;
        };
        let name = tag[i..i + eq].trim_ascii();
        let q = i + eq + 1;
        let Some(&quote) = tag.get(q) else { break };
        let Some(len) = tag[q + 1..].iter().position(|c| *c == quote) else {
            break;
        };
        out.push((name, &tag[q + 1..q + 1 + len]));
        i = q + 2 + len;
    }
    out
}

impl Outbound {
    /// Takes written bytes; complete messages are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut VecDeque<String>) {
        self.buf.extend_from_slice(bytes);
        loop {
            let Some(lt) = self.buf[self.scan..].iter().position(|c| *c == b'<') else {
                if self.depth == 0 {
                    // Whitespace between elements is not sent.
                    self.scan = self.buf.len();
                }
                break;
            };
            let at = self.scan + lt;
            let Some((end, kind)) = tag_end(&self.buf, at) else {
                self.scan = at;
                break;
            };
            self.scan = end;
            let tag = &self.buf[at..end];
            match kind {
                Tag::Other => {}
                Tag::Open if self.depth == 0 && tag_name(tag) == b"stream:stream" => {
                    let mut m = format!("<open xmlns='{NS_FRAMING}'");
                    for (k, v) in attributes(tag) {
                        if !k.starts_with(b"xmlns") {
                            m.push_str(&format!(
                                " {}='{}'",
                                String::from_utf8_lossy(k),
                                String::from_utf8_lossy(v).replace('\'', "&apos;")
                            ));
                        }
                    }
                    m.push_str("/>");
                    out.push_back(m);
                }
                Tag::Close if self.depth == 0 => {
                    // The stream's end.
                    out.push_back(format!("<close xmlns='{NS_FRAMING}'/>"));
                }
                Tag::Open => {
                    if self.depth == 0 {
                        self.start = at;
                    }
                    self.depth += 1;
                }
                Tag::Empty if self.depth == 0 => {
                    out.push_back(self.message(at, end));
                }
                Tag::Empty => {}
                Tag::Close => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        out.push_back(self.message(self.start, end));
                    }
                }
            }
        }
        // Keep only what is not yet a whole message.
        let keep = if self.depth > 0 {
            self.start
        } else {
            self.scan
        };
        self.buf.drain(..keep);
        self.scan -= keep;
        self.start = self.start.saturating_sub(keep);
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// The element in `buf[from..to]` as a message: its namespace declared
    /// on the root.
    fn message(&self, from: usize, to: usize) -> String {
        let el = &self.buf[from..to];
        let name = tag_name(el);
        let root_end = tag_end(el, 0).map_or(el.len(), |(e, _)| e);
        let root = &el[..root_end];
        let declared = |attr: &[u8]| attributes(root).iter().any(|(k, _)| *k == attr);
        let insert = if name.starts_with(b"stream:") && !declared(b"xmlns:stream") {
            format!(" xmlns:stream='{NS_STREAMS}'")
        } else if !name.contains(&b':') && !declared(b"xmlns") {
            " xmlns='jabber:client'".to_string()
        } else {
            String::new()
        };
        let at = 1 + name.len();
        let mut s = String::with_capacity(el.len() + insert.len());
        s.push_str(&String::from_utf8_lossy(&el[..at]));
        s.push_str(&insert);
        s.push_str(&String::from_utf8_lossy(&el[at..]));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&str]) -> Vec<String> {
        let mut o = Outbound::default();
        let mut out = VecDeque::new();
        for c in chunks {
            o.feed(c.as_bytes(), &mut out);
        }
        out.into()
    }

    #[test]
    fn open_and_close_become_a_stream_header_and_end() {
        let h = inbound(
            b"<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" to=\"localhost\" version=\"1.0\"/>",
        );
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
        );
        assert_eq!(
            inbound(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            b"</stream:stream>"
        );
        // Anything else, or an <open/> in another namespace, as it is.
        for m in [
            &b"<message xmlns='jabber:client' to='a@b'><body>x</body></message>"[..],
            b"<open xmlns='jabber:client'/>",
            b"<open",
        ] {
            assert_eq!(inbound(m), m);
        }
    }

    #[test]
    fn output_is_cut_into_one_message_per_element_however_it_is_written() {
        let stream = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' \
            version='1.0' xml:lang='en'><stream:features><mechanisms \
            xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>\
            </mechanisms></stream:features><message to='a@b' q='x>y'><body>1 &gt; 0</body>\
            </message> <r xmlns='urn:xmpp:sm:3'/><iq id='1' type='result'/></stream:stream>";
        let want = vec![
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='s1' from='localhost' version='1.0' xml:lang='en'/>".to_string(),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>".into(),
            "<message xmlns='jabber:client' to='a@b' q='x>y'><body>1 &gt; 0</body></message>".into(),
            "<r xmlns='urn:xmpp:sm:3'/>".into(),
            "<iq xmlns='jabber:client' id='1' type='result'/>".into(),
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".into(),
        ];
        assert_eq!(cut(&[stream]), want);
        // Byte by byte: the same messages.
        let bytes: Vec<String> = stream.chars().map(|c| c.to_string()).collect();
        let chunks: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(cut(&chunks), want);
    }

    /// Whatever a client sends (cut anywhere, any byte replaced), the
    /// translation neither panics nor grows it by more than a header.
    #[test]
    fn any_client_message_is_handled() {
        let samples: [&[u8]; 3] = [
            b"<?xml version='1.0'?> <open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to=\"a'b\" version='1.0' xml:lang='en'/>",
            b"<close xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\"/>",
            b"<!-- x --><open a= xmlns='' '/><",
        ];
        for m in samples {
            for cut in 0..=m.len() {
                for (i, b) in [b'<', b'>', b'\'', b'"', b'/', b'=', b' ', 0xff]
                    .into_iter()
                    .enumerate()
                {
                    let mut v = m[..cut].to_vec();
                    if let Some(x) = v.get_mut((cut + i) % cut.max(1)) {
                        *x = b;
                    }
                    assert!(inbound(&v).len() <= v.len() + 200);
                }
            }
        }
        assert_eq!(
            inbound(samples[0]),
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a&apos;b' version='1.0' xml:lang='en'>"
        );
    }
}
