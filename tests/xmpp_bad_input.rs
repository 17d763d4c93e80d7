//! Bad input, one test per class: each gets the RFC 6120 stream error (or
//! stanza error) it calls for, and only the offending stream ends — a bound
//! session on the same server keeps working.

mod common;

use std::time::{Duration, Instant};

use common::xmpp::{header, Raw};
use common::Petrel;

const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

struct Setup {
    p: Petrel,
    observer: Raw,
}

fn setup(extra: &str) -> Setup {
    let p = Petrel::start(extra).with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let observer = Raw::login(p.addrs["c2s"][0], "bob", "builder", "observer");
    Setup { p, observer }
}

impl Setup {
    fn raw(&self) -> Raw {
        Raw::connect(self.p.addrs["c2s"][0])
    }

    fn alice(&self) -> Raw {
        Raw::login(self.p.addrs["c2s"][0], "alice", "wonderland", "a")
    }

    /// Sends `input` on a fresh connection (after `prefix`, which may open a
    /// stream and log in) and expects the stream error `cond`, the closing
    /// tag and the connection's end; then checks the observer still works.
    fn expect_stream_error(&mut self, mut c: Raw, input: &[u8], cond: &str) -> String {
        c.send_bytes(input);
        let all = c.read_to_close();
        assert!(
            all.contains(&format!("<stream:error><{cond} xmlns='{STREAMS}'/>")),
            "expected {cond}: {all}"
        );
        assert!(all.ends_with("</stream:error></stream:stream>"), "{all}");
        self.observer.ping(&format!("alive-after-{cond}"));
        all
    }
}

#[test]
fn not_well_formed_xml() {
    let mut s = setup("");
    let mut c = s.raw();
    c.open("localhost");
    s.expect_stream_error(c, b"<message><body>x</message></oops>", "not-well-formed");
    // Broken UTF-8 is not well-formed either.
    let mut c = s.raw();
    c.open("localhost");
    s.expect_stream_error(
        c,
        b"<message><body>\xff\xfe</body></message>",
        "not-well-formed",
    );
}

#[test]
fn stanza_before_authentication() {
    let mut s = setup("");
    let mut c = s.raw();
    c.open("localhost");
    s.expect_stream_error(
        c,
        b"<message to='bob@localhost/observer'><body>sneaky</body></message>",
        "not-authorized",
    );
    assert!(!s
        .observer
        .drain_for(Duration::from_millis(300))
        .contains("sneaky"));
}

#[test]
fn stanza_before_binding() {
    let mut s = setup("");
    let mut c = s.raw();
    assert!(c
        .try_auth("PLAIN", b"\0alice\0wonderland")
        .contains("<success"));
    c.open("localhost");
    s.expect_stream_error(
        c,
        b"<message to='bob@localhost/observer'><body>early</body></message>",
        "not-authorized",
    );
}

#[test]
fn unknown_namespace_on_the_stream() {
    let mut s = setup("");
    let c = s.raw();
    let all = s.expect_stream_error(
        c,
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        "invalid-namespace",
    );
    assert!(
        all.starts_with("<?xml version='1.0'?><stream:stream"),
        "header first: {all}"
    );
    assert!(!all.contains("<stream:features>"), "{all}");
    let c = s.raw();
    s.expect_stream_error(
        c,
        b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:not-streams' to='localhost' version='1.0'>",
        "invalid-namespace",
    );
}

#[test]
fn unknown_top_level_element() {
    let mut s = setup("");
    let c = s.alice();
    s.expect_stream_error(
        c,
        b"<frobnicate xmlns='urn:example:x'/>",
        "unsupported-stanza-type",
    );
}

#[test]
fn oversize_stanza() {
    let mut s = setup("max_stanza_size = 4096");
    let c = s.alice();
    let big = format!(
        "<message to='bob@localhost/observer'><body>{}</body></message>",
        "x".repeat(5000)
    );
    s.expect_stream_error(c, big.as_bytes(), "policy-violation");
    assert!(!s
        .observer
        .drain_for(Duration::from_millis(300))
        .contains("xxxxxxxx"));
    // A stanza just under the limit is fine.
    let mut c = s.alice();
    let ok = format!(
        "<message to='bob@localhost/observer'><body>{}</body></message>",
        "y".repeat(3000)
    );
    c.send(&ok);
    // (the archive id follows the body)
    s.observer.expect("yyyy</body>");
    s.observer.expect("</message>");
}

#[test]
fn doctype() {
    let mut s = setup("");
    let c = s.raw();
    s.expect_stream_error(
        c,
        b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        "restricted-xml",
    );
}

#[test]
fn entity_expansion_attempt() {
    let mut s = setup("");
    let c = s.alice();
    s.expect_stream_error(
        c,
        b"<message to='bob@localhost/observer'><body>&lol9;&lol9;</body></message>",
        "restricted-xml",
    );
}

#[test]
fn comments_and_processing_instructions() {
    let mut s = setup("");
    let c = s.alice();
    s.expect_stream_error(c, b"<!-- hello -->", "restricted-xml");
    let c = s.alice();
    s.expect_stream_error(c, b"<?php echo 1; ?>", "restricted-xml");
}

#[test]
fn wrong_to_is_host_unknown() {
    let mut s = setup("");
    let c = s.raw();
    let all = s.expect_stream_error(c, header("elsewhere.example").as_bytes(), "host-unknown");
    assert!(
        all.starts_with("<?xml version='1.0'?><stream:stream"),
        "{all}"
    );
    let c = s.raw();
    s.expect_stream_error(
        c,
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        "host-unknown",
    );
}

#[test]
fn unsupported_version() {
    let mut s = setup("");
    let c = s.raw();
    s.expect_stream_error(
        c,
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='2.0'>",
        "unsupported-version",
    );
}

#[test]
fn malformed_jid_in_to_or_from_gets_a_stanza_error() {
    let s = setup("");
    let mut c = s.alice();
    for (attr, id) in [
        ("to='bo b@localhost'", "2"),
        ("to='bob@local..host'", "3"),
        ("from='@localhost'", "4"),
    ] {
        c.send(&format!(
            "<message {attr} id='{id}'><body>x</body></message>"
        ));
        let e = c.expect("</message>");
        assert!(e.contains(&format!("id='{id}'")), "{e}");
        assert!(
            e.contains("<jid-malformed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{attr}: {e}"
        );
    }
    c.send("<iq type='get' id='5' to='a@b@c'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(c.expect("</iq>").contains("<jid-malformed"));
    // The stream is still up.
    c.ping("after-malformed");
}

#[test]
fn forged_from_is_overwritten() {
    let mut s = setup("");
    let mut c = s.alice();
    c.send("<message to='bob@localhost/observer' from='ceo@localhost/office'><body>pay him</body></message>");
    let got = s.observer.expect("</message>");
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
    assert!(!got.contains("ceo@localhost"), "{got}");
}

#[test]
fn no_stream_header_within_the_timeout() {
    let mut s = setup("negotiation_timeout = 2");
    let c = s.raw();
    let start = Instant::now();
    let all = s.expect_stream_error(c, b"", "connection-timeout");
    assert!(
        all.starts_with("<?xml version='1.0'?><stream:stream"),
        "{all}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // A stream that opened but never authenticated is cut the same way.
    let mut c = s.raw();
    c.open("localhost");
    s.expect_stream_error(c, b"", "connection-timeout");
}

#[test]
fn text_at_the_top_level_is_bad_format() {
    let mut s = setup("");
    let c = s.alice();
    s.expect_stream_error(c, b"hello there", "bad-format");
}
