//! Tests of the incremental stream parser (kept apart from stream.rs for size).

use super::super::element::Node;
use super::*;
use proptest::prelude::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
    version='1.0' xml:lang='en'>";

fn events_of(p: &mut XmlStream) -> Result<Vec<StreamEvent>, StreamError> {
    let mut out = Vec::new();
    while let Some(ev) = p.next_event()? {
        out.push(ev);
    }
    Ok(out)
}

fn parse_all(input: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
    let mut p = XmlStream::new(Limits::default());
    p.feed(input);
    events_of(&mut p)
}

fn with_header(body: &str) -> Result<Vec<StreamEvent>, StreamError> {
    parse_all(format!("{HEADER}{body}").as_bytes())
}

fn stanzas(body: &str) -> Vec<Element> {
    with_header(body)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn err_of(body: &str) -> StreamError {
    with_header(body).unwrap_err()
}

#[test]
fn header_attrs() {
    let evs = with_header("").unwrap();
    assert_eq!(evs.len(), 1);
    match &evs[0] {
        StreamEvent::StreamStart {
            attrs,
            ns_default,
            ns_stream_ok,
        } => {
            assert!(*ns_stream_ok);
            assert_eq!(ns_default, NS_CLIENT);
            assert_eq!(
                attrs,
                &vec![
                    ("to".to_string(), "example.com".to_string()),
                    ("version".to_string(), "1.0".to_string()),
                    ("xml:lang".to_string(), "en".to_string()),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(evs[0].header_attr("to"), Some("example.com"));
}

#[test]
fn header_split_at_every_byte() {
    let mut p = XmlStream::new(Limits::default());
    let bytes = HEADER.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        p.feed(std::slice::from_ref(b));
        let ev = p.next_event().unwrap();
        if i + 1 < bytes.len() {
            assert_eq!(ev, None, "event early at byte {i}");
        } else {
            assert!(matches!(ev, Some(StreamEvent::StreamStart { .. })));
        }
    }
}

#[test]
fn stanza_split_at_every_byte() {
    let stanza = "<message to='a@b' type='chat'><body>hi &amp; &#x263A; <![CDATA[<x>]]></body>\
                  <x xmlns='urn:x' a=\"'&gt;'\"/></message>";
    let whole = stanzas(stanza);
    assert_eq!(whole.len(), 1);
    for i in 0..=stanza.len() {
        let mut p = XmlStream::new(Limits::default());
        p.feed(HEADER.as_bytes());
        let mut evs = events_of(&mut p).unwrap();
        p.feed(&stanza.as_bytes()[..i]);
        let first = events_of(&mut p).unwrap();
        if i < stanza.len() {
            assert!(first.is_empty(), "early event at split {i}");
        }
        evs.extend(first);
        p.feed(&stanza.as_bytes()[i..]);
        evs.extend(events_of(&mut p).unwrap());
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1], StreamEvent::Stanza(whole[0].clone()));
    }
}

#[test]
fn stanza_content() {
    let s = &stanzas(
        "<message to='a@b'><body>hi &amp; &#x263A; <![CDATA[<x>]]></body>\
         <x xmlns='urn:x' a=\"'&gt;'\"/></message>",
    )[0];
    assert!(s.is("message", NS_CLIENT));
    assert_eq!(s.attr("to"), Some("a@b"));
    assert_eq!(
        s.child("body", NS_CLIENT).unwrap().text(),
        "hi & \u{263A} <x>"
    );
    assert_eq!(s.child("x", "urn:x").unwrap().attr("a"), Some("'>'"));
}

#[test]
fn several_stanzas_in_one_feed_and_keepalives() {
    let evs = with_header(" \n<presence/> \t\r\n <iq id='1' type='get'><ping xmlns='urn:xmpp:ping'/></iq>\n<message/> ")
        .unwrap();
    assert_eq!(evs.len(), 4);
    let names: Vec<_> = evs[1..]
        .iter()
        .map(|e| match e {
            StreamEvent::Stanza(s) => s.name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["presence", "iq", "message"]);
}

#[test]
fn whitespace_keepalive_is_not_buffered() {
    let mut p = XmlStream::new(Limits::default());
    p.feed(HEADER.as_bytes());
    events_of(&mut p).unwrap();
    for _ in 0..1000 {
        p.feed(b" ");
        assert_eq!(p.next_event().unwrap(), None);
    }
    assert_eq!(p.buffered(), 0);
}

#[test]
fn text_kept_exactly() {
    let s = &stanzas("<message><body>  a &amp;lt; b\n  </body></message>")[0];
    let body = s.child("body", NS_CLIENT).unwrap();
    assert_eq!(body.text(), "  a &lt; b\n  ");
    assert_eq!(body.children.len(), 1);
    assert!(matches!(&body.children[0], Node::Text(_)));
    let s = &stanzas("<m a='&amp;lt;'>x\r\ny\rz&#13;</m>")[0];
    assert_eq!(s.attr("a"), Some("&lt;"));
    assert_eq!(s.text(), "x\ny\nz\r");
}

#[test]
fn attribute_normalization() {
    let s = &stanzas("<m a='x\ty\r\nz&#10;'/>")[0];
    assert_eq!(s.attr("a"), Some("x y z\n"));
}

#[test]
fn cdata() {
    let s = &stanzas("<m>a<![CDATA[ <b>&amp;]] ]]>c</m>")[0];
    assert_eq!(s.text(), "a <b>&amp;]] c");
    assert_eq!(
        err_of("<![CDATA[x]]>").condition(),
        "bad-format",
        "CDATA at stream level"
    );
}

#[test]
fn restricted_xml() {
    let doctype = parse_all(b"<?xml version='1.0'?><!DOCTYPE stream:stream>").unwrap_err();
    assert_eq!(doctype.condition(), "restricted-xml");
    assert_eq!(
        err_of("<m><!ENTITY x 'y'></m>").condition(),
        "restricted-xml"
    );
    assert_eq!(err_of("<!ENTITY x 'y'>").condition(), "restricted-xml");
    assert_eq!(err_of("<m>&foo;</m>").condition(), "restricted-xml");
    assert_eq!(err_of("<m a='&foo;'/>").condition(), "restricted-xml");
    assert_eq!(err_of("<m><!-- c --></m>").condition(), "restricted-xml");
    assert_eq!(err_of("<m><?pi x?></m>").condition(), "restricted-xml");
    assert_eq!(err_of("<?pi x?>").condition(), "restricted-xml");
    let pi = parse_all(b"<?xml-stylesheet href='x'?><stream:stream/>").unwrap_err();
    assert_eq!(pi.condition(), "restricted-xml");
    let second_decl = parse_all(b"<?xml version='1.0'?><?xml version='1.0'?>").unwrap_err();
    assert_eq!(second_decl.condition(), "restricted-xml");
}

#[test]
fn bad_references_not_well_formed() {
    assert_eq!(err_of("<m>&#0;</m>").condition(), "not-well-formed");
    assert_eq!(err_of("<m>&#xD800;</m>").condition(), "not-well-formed");
    assert_eq!(err_of("<m>&#+65;</m>").condition(), "not-well-formed");
    assert_eq!(err_of("<m>& x</m>").condition(), "not-well-formed");
    assert_eq!(err_of("<m>\u{1}</m>").condition(), "not-well-formed");
    assert_eq!(stanzas("<m>&#65;&#x42;</m>")[0].text(), "AB");
}

#[test]
fn oversize_rejected_before_end_arrives() {
    let limits = Limits {
        // Room for the test header (about 170 bytes), not much more.
        max_stanza_size: 200,
        ..Limits::default()
    };
    let mut p = XmlStream::new(limits);
    p.feed(HEADER.as_bytes());
    events_of(&mut p).unwrap();
    p.feed(b"<message><body>");
    assert_eq!(p.next_event().unwrap(), None);
    p.feed(&[b'a'; 300]);
    let e = p.next_event().unwrap_err();
    assert_eq!(e.condition(), "policy-violation");
    // The error sticks and nothing more is buffered.
    p.feed(b"</body></message>");
    assert_eq!(p.next_event().unwrap_err(), e);
    assert_eq!(p.buffered(), 0);

    // Exactly at the limit is fine.
    let mut p = XmlStream::new(limits);
    p.feed(HEADER.as_bytes());
    events_of(&mut p).unwrap();
    let exact = format!("<m>{}</m>", "a".repeat(193));
    assert_eq!(exact.len(), 200);
    p.feed(exact.as_bytes());
    assert_eq!(events_of(&mut p).unwrap().len(), 1);
    // An oversize stream header too.
    let mut p = XmlStream::new(limits);
    p.feed(format!("<stream:stream a='{}'>", "x".repeat(300)).as_bytes());
    assert_eq!(p.next_event().unwrap_err().condition(), "policy-violation");
}

#[test]
fn too_deep() {
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}<a><b><c><d></d></c></b></a>").as_bytes());
    assert_eq!(events_of(&mut p).unwrap().len(), 2);
    p.feed(b"<a><b><c><d><e>");
    assert_eq!(p.next_event().unwrap_err().condition(), "policy-violation");
    // Default limit: 33 levels fail before any end tag arrives.
    let open: String = "<x>".repeat(33);
    assert_eq!(err_of(&open).condition(), "policy-violation");
}

#[test]
fn too_many_attrs() {
    let attrs: String = (0..65).map(|i| format!(" a{i}='v'")).collect();
    assert_eq!(
        err_of(&format!("<m{attrs}/>")).condition(),
        "policy-violation"
    );
    let attrs: String = (0..64).map(|i| format!(" a{i}='v'")).collect();
    assert_eq!(stanzas(&format!("<m{attrs}/>"))[0].attrs.len(), 64);
}

#[test]
fn mismatched_end_tag() {
    assert_eq!(err_of("<a><b></a></b>").condition(), "not-well-formed");
    assert_eq!(err_of("<a></b>").condition(), "not-well-formed");
    assert_eq!(err_of("</stream:foo>").condition(), "not-well-formed");
}

#[test]
fn duplicate_attribute() {
    assert_eq!(err_of("<a x='1' x='2'/>").condition(), "not-well-formed");
}

#[test]
fn undeclared_prefix() {
    assert_eq!(err_of("<foo:a/>").condition(), "not-well-formed");
    assert_eq!(err_of("<a foo:x='1'/>").condition(), "not-well-formed");
    // Declared prefixes resolve; attributes in foreign namespaces drop.
    let s = &stanzas("<a xmlns:f='urn:f'><f:b f:x='1' y='2'/></a>")[0];
    let b = s.child("b", "urn:f").unwrap();
    assert_eq!(b.attrs, vec![("y".to_string(), "2".to_string())]);
    // The stream prefix from the header is in scope.
    let s = &stanzas(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
    )[0];
    assert!(s.is("features", NS_STREAMS));
}

#[test]
fn invalid_utf8() {
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(b"<m>\xff\xfe</m>");
    assert_eq!(
        parse_all(&input).unwrap_err().condition(),
        "not-well-formed"
    );
    let mut input = b"<stream:stream xmlns='jabber:client' a='\xc3'".to_vec();
    input.extend_from_slice(b" xmlns:stream='http://etherx.jabber.org/streams'>");
    assert_eq!(
        parse_all(&input).unwrap_err().condition(),
        "not-well-formed"
    );
}

#[test]
fn wrong_namespaces() {
    let mut p = XmlStream::new(Limits::default());
    p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>");
    match p.next_event().unwrap() {
        Some(StreamEvent::StreamStart { ns_stream_ok, .. }) => assert!(!ns_stream_ok),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.next_event().unwrap_err().condition(), "invalid-namespace");

    let mut p = XmlStream::new(Limits::default());
    p.feed(
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    match p.next_event().unwrap() {
        Some(StreamEvent::StreamStart {
            ns_stream_ok,
            ns_default,
            ..
        }) => {
            assert!(ns_stream_ok);
            assert_eq!(ns_default, "jabber:server");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.next_event().unwrap_err().condition(), "invalid-namespace");

    let mut p = XmlStream::new(Limits::default());
    p.feed(b"<stream:stream xmlns='jabber:client'>");
    assert!(p.next_event().unwrap().is_some());
    assert_eq!(p.next_event().unwrap_err().condition(), "not-well-formed");
}

#[test]
fn unsupported_encoding() {
    let e = parse_all(b"<?xml version='1.0' encoding='ISO-8859-1'?>").unwrap_err();
    assert_eq!(e.condition(), "unsupported-encoding");
}

#[test]
fn garbage_before_header() {
    assert_eq!(
        parse_all(b"hello").unwrap_err().condition(),
        "not-well-formed"
    );
    assert_eq!(err_of("junk").condition(), "bad-format");
}

#[test]
fn reset_then_new_header() {
    let mut p = XmlStream::new(Limits::default());
    p.feed(format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes());
    assert_eq!(events_of(&mut p).unwrap().len(), 2);
    p.feed(b"<leftover");
    p.reset();
    assert_eq!(p.buffered(), 0);
    p.feed(HEADER.as_bytes());
    p.feed(b"<iq/>");
    let evs = events_of(&mut p).unwrap();
    assert!(matches!(evs[0], StreamEvent::StreamStart { .. }));
    assert!(matches!(&evs[1], StreamEvent::Stanza(s) if s.name == "iq"));
}

#[test]
fn stream_end() {
    let evs = with_header("<presence/></stream:stream>trailing").unwrap();
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2], StreamEvent::StreamEnd);
    let evs = parse_all(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>",
    )
    .unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1], StreamEvent::StreamEnd);
    // Other prefixes for the stream namespace work as long as they match.
    let evs = parse_all(
        b"<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'><s:features/></s:stream >",
    )
    .unwrap();
    assert_eq!(evs.len(), 3);
}

#[test]
fn no_quadratic_behaviour_on_trickle() {
    // 200 KB arriving one byte at a time must stay fast: each byte is
    // scanned once and the stanza parsed once.
    let body = "x".repeat(200_000);
    let stanza = format!("<message><body>{body}</body></message>");
    let mut p = XmlStream::new(Limits::default());
    p.feed(HEADER.as_bytes());
    events_of(&mut p).unwrap();
    let mut got = None;
    for b in stanza.as_bytes() {
        p.feed(std::slice::from_ref(b));
        if let Some(ev) = p.next_event().unwrap() {
            got = Some(ev);
        }
    }
    match got {
        Some(StreamEvent::Stanza(s)) => {
            assert_eq!(s.child("body", NS_CLIENT).unwrap().text().len(), 200_000)
        }
        other => panic!("{other:?}"),
    }
}

fn arb_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just(' '),
            Just('<'),
            Just('&'),
            Just('>'),
            Just('\''),
            Just('"'),
            Just('\n'),
            Just('\r'),
            Just('\t'),
            Just('é'),
            Just('\u{1F600}'),
            Just(']'),
        ],
        1..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn arb_leaf() -> impl Strategy<Value = Element> {
    (
        prop_oneof![Just("a"), Just("body"), Just("x-y")],
        prop_oneof![Just(NS_CLIENT), Just("urn:x"), Just("")],
        prop::collection::btree_map(
            prop_oneof![Just("id"), Just("to"), Just("xml:lang"), Just("k")],
            arb_text(),
            0..3,
        ),
    )
        .prop_map(|(name, ns, attrs)| {
            let mut e = Element::new(name, ns);
            for (k, v) in attrs {
                e.set_attr(k, v);
            }
            e
        })
}

fn arb_element() -> impl Strategy<Value = Element> {
    arb_leaf().prop_recursive(4, 24, 4, |inner| {
        (
            arb_leaf(),
            prop::collection::vec(
                prop_oneof![
                    inner.prop_map(Node::Element),
                    arb_text().prop_map(Node::Text)
                ],
                0..4,
            ),
        )
            .prop_map(|(mut e, kids)| {
                for k in kids {
                    match k {
                        Node::Element(c) => e.push_child(c),
                        Node::Text(t) => e.push_text(t),
                    }
                }
                e
            })
    })
}

/// A valid stream: header, stanzas with whitespace between, end tag.
fn arb_stream() -> impl Strategy<Value = (Vec<u8>, Vec<Element>)> {
    prop::collection::vec(arb_element(), 0..5).prop_map(|els| {
        let mut out = HEADER.as_bytes().to_vec();
        out.extend_from_slice(b"<m>&#65;<![CDATA[&<]]>&amp;lt;</m> ");
        for e in &els {
            e.write_to(&mut out, NS_CLIENT);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"</stream:stream>");
        (out, els)
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        prefix in any::<bool>(),
        data in prop::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
    ) {
        let mut p = XmlStream::new(Limits { max_stanza_size: 256, max_depth: 4, max_attrs: 4, ..Limits::default() });
        if prefix {
            p.feed(HEADER.as_bytes());
        }
        for c in data.chunks(chunk) {
            p.feed(c);
            while let Ok(Some(_)) = p.next_event() {}
        }
    }

    #[test]
    fn random_markup_never_panics(
        parts in prop::collection::vec(prop_oneof![
            Just("<"), Just(">"), Just("/"), Just("'"), Just("\""), Just("a"), Just(" "),
            Just("="), Just("&"), Just(";"), Just("<![CDATA["), Just("]]>"), Just("<!--"),
            Just("<?"), Just("?>"), Just("xmlns:p='u'"), Just("p:"), Just("&#x41;"),
        ], 0..64),
    ) {
        let input: String = parts.concat();
        let _ = with_header(&input);
    }

    #[test]
    fn any_split_gives_same_events(
        (input, els) in arb_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = parse_all(&input).unwrap();
        prop_assert_eq!(whole.len(), els.len() + 3);
        for (ev, el) in whole[2..].iter().zip(&els) {
            // Round trip: serialization then parsing is the identity.
            prop_assert_eq!(ev, &StreamEvent::Stanza(el.clone()));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut p = XmlStream::new(Limits::default());
        let mut evs = Vec::new();
        let mut last = 0;
        for pt in points.into_iter().chain([input.len()]) {
            p.feed(&input[last..pt]);
            last = pt;
            evs.extend(events_of(&mut p).unwrap());
        }
        prop_assert_eq!(evs, whole);
    }
}

#[test]
fn idle_buffer_is_released_but_partial_stanzas_kept() {
    let mut p = XmlStream::new(Limits::default());
    p.feed(HEADER.as_bytes());
    p.feed(b"<message/> ");
    while let Ok(Some(_)) = p.next_event() {}
    p.release_idle_buffer();
    assert_eq!(p.buf.capacity(), 0);
    p.feed(b"<message><body>half");
    assert_eq!(p.next_event(), Ok(None));
    p.release_idle_buffer();
    assert!(p.buf.capacity() > 0, "a partial stanza is kept");
    p.feed(b"</body></message>");
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
}

/// The header is parsed once: its declarations resolve stanza names (a
/// prefix declared only on the header, the default namespace), and an
/// `xmlns=''` inside a stanza still takes the default away.
#[test]
fn header_declarations_apply_without_replay() {
    let mut p = XmlStream::new(Limits::default());
    p.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
          xmlns:x='urn:example:x' to='example.com' version='1.0'>",
    );
    p.feed(
        b"<message><x:data x:attr='dropped' plain='kept'/><none xmlns=''><inner/></none></message>",
    );
    let evs = events_of(&mut p).unwrap();
    let StreamEvent::Stanza(m) = &evs[1] else {
        panic!("{evs:?}")
    };
    assert_eq!(m.ns, "jabber:client");
    let data = m
        .child("data", "urn:example:x")
        .expect("prefix from the header");
    assert_eq!(data.attrs, vec![("plain".to_string(), "kept".to_string())]);
    let none = m
        .child("none", "")
        .expect("xmlns='' takes the default away");
    assert!(none.child("inner", "").is_some());
    // A prefix declared nowhere is still an error.
    p.feed(b"<message><y:data/></message>");
    assert_eq!(p.next_event().unwrap_err().condition(), "not-well-formed");
}

/// Every amplification is capped: namespace length (header and stanza),
/// children per element, elements per stanza, header size.
#[test]
fn amplification_limits() {
    let limits = Limits {
        max_namespace_len: 64,
        max_children: 8,
        max_elements: 20,
        max_header_size: 400,
        ..Limits::default()
    };
    let long = "u".repeat(65);
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}<m><c xmlns='{long}'/></m>").as_bytes());
    assert_eq!(
        events_of(&mut p).unwrap_err().condition(),
        "policy-violation"
    );
    let mut p = XmlStream::new(limits);
    p.feed(
        format!(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:l='{long}'>"
        )
        .as_bytes(),
    );
    assert_eq!(p.next_event().unwrap_err().condition(), "policy-violation");
    // Eight children pass, nine do not.
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}<m>{}</m>", "<c/>".repeat(8)).as_bytes());
    assert_eq!(events_of(&mut p).unwrap().len(), 2);
    p.feed(format!("<m>{}</m>", "<c/>".repeat(9)).as_bytes());
    assert_eq!(p.next_event().unwrap_err().condition(), "policy-violation");
    // Twenty elements in all pass, twenty-one do not.
    let nested = |n: usize| format!("<m>{}</m>", "<a><b/></a>".repeat(n));
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}{}", nested(6)).as_bytes()); // 1 + 12 + … = 13
    assert_eq!(events_of(&mut p).unwrap().len(), 2);
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}<m>{}<a><b/><b/></a></m>", "<a><b/></a>".repeat(6)).as_bytes()); // 16
    assert_eq!(events_of(&mut p).unwrap().len(), 2);
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}<m>{}<a/></m>", "<a><b/><b/></a>".repeat(6)).as_bytes()); // 20
    assert_eq!(events_of(&mut p).unwrap().len(), 2);
    let mut p = XmlStream::new(limits);
    p.feed(format!("{HEADER}<m>{}<a><b/></a></m>", "<a><b/><b/></a>".repeat(6)).as_bytes()); // 21
    assert_eq!(
        events_of(&mut p).unwrap_err().condition(),
        "policy-violation"
    );
    // A header larger than its limit, though the stanza limit is larger.
    let mut p = XmlStream::new(limits);
    p.feed(format!("<stream:stream a='{}'>", "x".repeat(400)).as_bytes());
    assert_eq!(p.next_event().unwrap_err().condition(), "policy-violation");
}
