//! The client against scripted servers over an in-memory pipe, the server's
//! bytes dribbled out in small pieces so every stanza (and the stream
//! header) arrives split across reads.

use super::*;
use tokio::io::DuplexStream;

/// One step: wait until the client has sent `wait_for` (after the previous
/// step's match), then send `reply`. Like a real server, a step waits for
/// the end of what it answers: the pipe is small, and answering a header
/// half-read would leave both sides blocked writing.
type Step = (&'static str, String);

/// The end of the client's stream header.
const HEADER_END: &str = "jabber.org/streams'>";

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns=\"jabber:client\" \
    xmlns:stream=\"http://etherx.jabber.org/streams\" id=\"4f2a\" from=\"example.org\" \
    version=\"1.0\" xml:lang=\"en\">";

/// Plays `script`, writing replies `chunk` bytes at a time; returns what
/// the client sent.
async fn fake_server(mut io: DuplexStream, script: Vec<Step>, chunk: usize) -> String {
    let mut got = Vec::new();
    let mut from = 0;
    for (wait_for, reply) in script {
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(i) = text[from..].find(wait_for) {
                from += i + wait_for.len();
                break;
            }
            let mut buf = [0u8; 512];
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed; sent {text:?}");
            got.extend_from_slice(&buf[..n]);
        }
        for piece in reply.as_bytes().chunks(chunk) {
            // A client that gave up (a failure, a stream error) may be
            // gone before the reply is out.
            if io.write_all(piece).await.is_err() {
                return String::from_utf8(got).unwrap();
            }
            tokio::task::yield_now().await;
        }
    }
    // Whatever else the client sends until it closes or goes quiet.
    let mut buf = [0u8; 512];
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(50), io.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

fn plain_spec() -> LoginSpec<'static> {
    LoginSpec {
        domain: "example.org",
        credentials: Credentials::Plain {
            user: "u1",
            password: "pw",
        },
        resource: "load-1",
        starttls: false,
    }
}

/// An ejabberd-like login: double-quoted attributes, the stream prefix on
/// features, a required session, a ping pushed before the bind result.
fn ejabberd_like_script() -> Vec<Step> {
    vec![
        (
            HEADER_END,
            format!(
                "{HEADER}<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\
                 <mechanism>X-OAUTH2</mechanism><mechanism>PLAIN</mechanism></mechanisms>\
                 </stream:features>"
            ),
        ),
        (
            "</auth>",
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".into(),
        ),
        (
            HEADER_END,
            format!(
                "{HEADER}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
                 <session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>"
            ),
        ),
        (
            "</iq>",
            "<iq type='get' id='p1' from='example.org'><ping xmlns='urn:xmpp:ping'/></iq>\
             <iq type=\"result\" id=\"bind_1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
             <jid>u1@example.org/load-1</jid></bind></iq>"
                .into(),
        ),
        ("</iq>", "<iq type='result' id='sess_1'/>".into()),
    ]
}

#[tokio::test]
async fn logs_in_over_reads_split_anywhere() {
    for chunk in [1, 3, 17, 4096] {
        let (near, far) = tokio::io::duplex(64);
        let server = tokio::spawn(fake_server(far, ejabberd_like_script(), chunk));
        let mut c = XmppClient::new(near);
        c.negotiate(&plain_spec()).await.unwrap();
        assert_eq!(c.jid, "u1@example.org/load-1");
        c.close().await;
        let sent = server.await.unwrap();
        assert!(
            sent.starts_with("<?xml version='1.0'?><stream:stream to='example.org' version='1.0'"),
            "{sent}"
        );
        assert!(sent.contains("xmlns='jabber:client'"), "{sent}");
        assert!(
            sent.contains(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                encode_base64_payload(b"\0u1\0pw")
            )),
            "{sent}"
        );
        assert!(sent.contains("<resource>load-1</resource>"), "{sent}");
        assert!(
            sent.contains("<iq id='p1' to='example.org' type='result'/>"),
            "the ping was answered: {sent}"
        );
        assert!(
            sent.contains("<iq type='set' id='sess_1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"),
            "a required session is established: {sent}"
        );
        assert!(sent.ends_with("</stream:stream>"), "{sent}");
    }
}

#[tokio::test]
async fn optional_session_is_skipped() {
    let mut script = ejabberd_like_script();
    script[2].1 = format!(
        "{HEADER}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
         <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>\
         </stream:features>"
    );
    script.pop();
    let (near, far) = tokio::io::duplex(1024);
    let server = tokio::spawn(fake_server(far, script, 5));
    let mut c = XmppClient::new(near);
    c.negotiate(&plain_spec()).await.unwrap();
    c.close().await;
    let sent = server.await.unwrap();
    assert!(!sent.contains("sess_1"), "{sent}");
}

#[tokio::test]
async fn failures_by_condition() {
    // SASL failure, with a <text/> first.
    let script = vec![
        ejabberd_like_script().remove(0),
        (
            "</auth>",
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><text xml:lang='en'>Invalid \
             username or password</text><not-authorized/></failure>"
                .into(),
        ),
    ];
    let (near, far) = tokio::io::duplex(1024);
    let server = tokio::spawn(fake_server(far, script, 2));
    let e = XmppClient::new(near)
        .negotiate(&plain_spec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "SASL failure not-authorized");
    server.await.unwrap();

    // A stream error instead of features.
    let script = vec![(
        HEADER_END,
        format!(
            "{HEADER}<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error></stream:stream>"
        ),
    )];
    let (near, far) = tokio::io::duplex(1024);
    let server = tokio::spawn(fake_server(far, script, 7));
    let e = XmppClient::new(near)
        .negotiate(&plain_spec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "stream error host-unknown");
    server.await.unwrap();

    // The mechanism asked for is not offered.
    let script = vec![ejabberd_like_script().remove(0)];
    let (near, far) = tokio::io::duplex(1024);
    let server = tokio::spawn(fake_server(far, script, 4096));
    let cache = SaltedCache::default();
    let spec = LoginSpec {
        credentials: Credentials::ScramSha256 {
            user: "u1",
            password: "pw",
            cache: &cache,
        },
        ..plain_spec()
    };
    let e = XmppClient::new(near).negotiate(&spec).await.unwrap_err();
    assert_eq!(e.kind(), "mechanism SCRAM-SHA-256 not offered");
    server.await.unwrap();
}

#[tokio::test]
async fn large_stanzas_across_many_reads() {
    // A 300 KB body arriving 1 KB at a time parses once, whole.
    let body = "x".repeat(300_000);
    let (near, mut far) = tokio::io::duplex(1024);
    let text = format!(
        "{HEADER}<stream:features/><message from='a@example.org/r' type='chat'><body>{body}</body></message>"
    );
    let writer = tokio::spawn(async move {
        for piece in text.as_bytes().chunks(1024) {
            far.write_all(piece).await.unwrap();
        }
        far
    });
    let mut c = XmppClient::new(near);
    let mut reads = 0;
    let features = loop {
        match c.parser.next_event().unwrap() {
            Some(StreamEvent::StreamStart { .. }) => {}
            Some(StreamEvent::Stanza(el)) => break el,
            Some(StreamEvent::StreamEnd) => panic!("ended"),
            None => {
                c.read_some(READ_CHUNK).await.unwrap();
                reads += 1;
            }
        }
    };
    assert!(features.is("features", NS_STREAMS));
    let msg = c.next_element().await.unwrap();
    assert!(msg.is("message", NS_CLIENT));
    assert_eq!(msg.child("body", NS_CLIENT).unwrap().text().len(), 300_000);
    assert!(reads >= 1);
    drop(writer.await.unwrap());
}
