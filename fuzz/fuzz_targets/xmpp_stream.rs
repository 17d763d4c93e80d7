//! Arbitrary bytes through the XMPP stream parser and the c2s state machine,
//! the way a connection feeds them.
//!
//! Input layout: the first byte picks how the rest is cut into reads (1 to
//! 256 bytes each, so split points land everywhere); the remaining bytes are
//! what the socket delivers. The parser runs with small limits so that the
//! size and depth checks are reached.
//!
//! Checked besides "no panic": every stanza the parser accepts serializes
//! to XML that parses back to the same element, and nothing the state machine
//! writes is ever produced after it closed the stream.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use petrel::auth::LoginError;
use petrel::xmpp::c2s::{C2s, Output, TlsPolicy};
use petrel::xmpp::sasl::{AuthReply, AuthRequest};
use petrel::xmpp::stream::{Limits, StreamEvent, XmlStream, NS_CLIENT};

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

fn limits() -> Limits {
    Limits {
        max_stanza_size: 4096,
        max_depth: 8,
        max_attrs: 16,
        max_header_size: 1024,
        max_children: 64,
        max_elements: 256,
        max_namespace_len: 128,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut) + 1;
    let hosts: Arc<[String]> = vec!["localhost".to_string()].into();
    let mut c2s = C2s::new(
        hosts,
        TlsPolicy {
            secure: cut & 1 == 1,
            starttls: true,
            required: cut & 2 == 2,
        },
        Arc::new(petrel::session::CountingEntropy::default()),
    );
    let mut parser = XmlStream::new(limits());
    let mut closed = false;
    for piece in input.chunks(chunk) {
        parser.feed(piece);
        loop {
            let mut out = Vec::new();
            match parser.next_event() {
                Ok(Some(ev)) => {
                    if let StreamEvent::Stanza(el) = &ev {
                        let bytes = el.to_bytes(NS_CLIENT);
                        let mut again = XmlStream::new(Limits {
                            max_stanza_size: usize::MAX,
                            ..limits()
                        });
                        again.feed(HEADER);
                        again.feed(&bytes);
                        assert!(matches!(
                            again.next_event(),
                            Ok(Some(StreamEvent::StreamStart { .. }))
                        ));
                        match again.next_event() {
                            Ok(Some(StreamEvent::Stanza(back))) => assert_eq!(&back, el),
                            other => panic!("round trip failed: {other:?}"),
                        }
                    }
                    c2s.event(ev, &mut out);
                }
                Ok(None) => break,
                Err(e) => c2s.parse_error(&e, &mut out),
            }
            let mut restart = false;
            while let Some(o) = (!out.is_empty()).then(|| out.remove(0)) {
                assert!(!closed, "output after close: {o:?}");
                match o {
                    Output::Auth(req) => {
                        // No auth core here: every credential check fails.
                        let reply = match req {
                            AuthRequest::Login(_) => AuthReply::Login(Err(LoginError::BadPassword)),
                            AuthRequest::ScramKeys { .. } => AuthReply::ScramKeys(
                                Err(petrel::auth::AuthError::BadPassword),
                                None,
                            ),
                            AuthRequest::Fast { .. } => AuthReply::Fast(Ok(None)),
                        };
                        let mut more = Vec::new();
                        c2s.auth_reply(reply, &mut more);
                        out.splice(0..0, more);
                    }
                    Output::StartTls | Output::ResetParser => restart = true,
                    Output::Close => closed = true,
                    Output::Send(_)
                    | Output::Reply(_)
                    | Output::Bind(_)
                    | Output::Stanza(_)
                    | Output::ClientState(_)
                    | Output::SmEnable { .. }
                    | Output::SmAck(_)
                    | Output::SmResume { .. } => {}
                    // Every credential check fails: no SASL2 success.
                    Output::Sasl2(d) => panic!("SASL2 success without credentials: {d:?}"),
                }
            }
            if closed {
                return;
            }
            if restart {
                parser.reset();
                break;
            }
        }
        parser.release_idle_buffer();
    }
});
