//! Unit tests of the stream state machine, driven through the real parser
//! and auth core (no sockets).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::*;
use crate::auth::fast::HtMechanism;
use crate::auth::test_support::core;
use crate::auth::{AuthCore, Scopes};
use crate::config::Config;
use crate::xmpp::sasl::perform;
use crate::xmpp::stream::{Limits, XmlStream};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

struct Harness {
    auth: AuthCore,
    _dir: tempfile::TempDir,
    parser: XmlStream,
    c2s: C2s,
    /// Everything written, as text.
    sent: String,
    stanzas: Vec<Element>,
    /// XEP-0352 states, `true` = active.
    states: Vec<bool>,
    /// XEP-0198 requests, as text.
    sm: Vec<String>,
    bound: Option<Jid>,
    closed: bool,
    starttls: bool,
    /// SASL2 successes handed to the connection.
    sasl2: Vec<Sasl2Done>,
}

impl Harness {
    fn new(tls: TlsPolicy) -> Harness {
        let (auth, dir) = core(&Config::default());
        auth.register(&BareJid::parse("alice@localhost").unwrap(), "pw")
            .unwrap();
        let hosts: Arc<[String]> = vec!["localhost".to_string()].into();
        Harness {
            auth,
            _dir: dir,
            parser: XmlStream::new(Limits::default()),
            c2s: C2s::new(
                hosts,
                tls,
                Arc::new(crate::session::CountingEntropy::default()),
            ),
            sent: String::new(),
            stanzas: Vec::new(),
            states: Vec::new(),
            sm: Vec::new(),
            bound: None,
            closed: false,
            starttls: false,
            sasl2: Vec::new(),
        }
    }

    fn plain() -> Harness {
        Harness::new(TlsPolicy {
            secure: false,
            starttls: true,
            required: false,
        })
    }

    /// Feeds input and runs outputs; returns what was written in response.
    fn input(&mut self, s: &str) -> String {
        let before = self.sent.len();
        self.parser.feed(s.as_bytes());
        loop {
            let mut out = Vec::new();
            match self.parser.next_event() {
                Ok(Some(ev)) => self.c2s.event(ev, &mut out),
                Ok(None) => break,
                Err(e) => self.c2s.parse_error(&e, &mut out),
            }
            let stop = self.run(out);
            if stop || self.closed {
                break;
            }
        }
        self.sent[before..].to_string()
    }

    fn run(&mut self, out: Vec<Output>) -> bool {
        let mut restart = false;
        let mut queue: std::collections::VecDeque<Output> = out.into();
        while let Some(o) = queue.pop_front() {
            match o {
                Output::Send(b) => self.sent.push_str(std::str::from_utf8(&b).unwrap()),
                Output::StartTls => {
                    self.starttls = true;
                    self.parser.reset();
                    restart = true;
                }
                Output::ResetParser => {
                    self.parser.reset();
                    restart = true;
                }
                Output::Auth(req) => {
                    let mut more = Vec::new();
                    self.c2s.auth_reply(perform(&self.auth, req), &mut more);
                    for m in more.into_iter().rev() {
                        queue.push_front(m);
                    }
                }
                Output::Bind(j) => self.bound = Some(j),
                Output::Stanza(e) => self.stanzas.push(e),
                Output::ClientState(a) => self.states.push(a),
                Output::Reply(b) => self.sent.push_str(std::str::from_utf8(&b).unwrap()),
                Output::SmEnable { resume } => self.sm.push(format!("enable {resume}")),
                Output::SmAck(h) => self.sm.push(format!("ack {h}")),
                Output::SmResume { previd, h } => self.sm.push(format!("resume {previd} {h}")),
                Output::Sasl2(d) => self.sasl2.push(*d),
                Output::Close => self.closed = true,
            }
        }
        restart
    }

    fn login(&mut self) {
        self.input(HEADER);
        let r = self.input(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            STANDARD.encode(b"\0alice\0pw")
        ));
        assert!(r.contains("<success"), "{r}");
        let r = self.input(HEADER);
        assert!(
            r.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{r}"
        );
    }

    fn bind(&mut self) {
        self.login();
        self.bind_only();
    }

    fn bind_only(&mut self) {
        let r = self.input(
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>desk</resource></bind></iq>",
        );
        assert!(r.contains("<jid>alice@localhost/desk</jid>"), "{r}");
    }
}

#[test]
fn header_features_and_password_login() {
    let mut h = Harness::plain();
    let r = h.input(HEADER);
    assert!(r.starts_with("<?xml version='1.0'?><stream:stream"), "{r}");
    assert!(r.contains("from='localhost'"));
    assert!(
        r.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        "{r}"
    );
    for m in [
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
        "X-OAUTH2",
        "OAUTHBEARER",
    ] {
        assert!(
            r.contains(&format!("<mechanism>{m}</mechanism>")),
            "{m}: {r}"
        );
    }
    let mut h = Harness::plain();
    h.bind();
    assert_eq!(
        h.bound.as_ref().unwrap().to_string(),
        "alice@localhost/desk"
    );
    let r = h
        .input("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    assert_eq!(r, "<iq type='result' id='s'/>");
}

#[test]
fn starttls_required_hides_mechanisms() {
    let mut h = Harness::new(TlsPolicy {
        secure: false,
        starttls: true,
        required: true,
    });
    let r = h.input(HEADER);
    assert!(
        r.contains("<required/>") && !r.contains("mechanisms"),
        "{r}"
    );
    let r =
        h.input("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>");
    assert!(r.contains("<encryption-required/>"), "{r}");
    let r = h.input("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(r, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(h.starttls);
    let r = h.input(HEADER);
    assert!(r.contains("<mechanisms") && !r.contains("starttls"), "{r}");
}

#[test]
fn server_generates_a_resource() {
    let mut h = Harness::plain();
    h.login();
    let r = h.input("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    assert!(r.contains("<jid>alice@localhost/petrel-"), "{r}");
    let r = h.input("<iq type='set' id='c'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    assert!(r.contains("<not-allowed"), "a second bind: {r}");
}

#[test]
fn stanzas_are_stamped_and_checked() {
    let mut h = Harness::plain();
    h.bind();
    h.input("<message to='bob@localhost' from='mallory@localhost/x'><body>hi</body></message>");
    assert_eq!(h.stanzas.len(), 1);
    assert_eq!(h.stanzas[0].attr("from"), Some("alice@localhost/desk"));
    let r = h.input("<message to='bad jid@localhost' id='m'/>");
    assert!(r.contains("<jid-malformed"), "{r}");
    let r = h.input("<message from='a@b@c' id='m'/>");
    assert!(r.contains("<jid-malformed"), "{r}");
    let r = h.input("<iq type='get' id='q'/>");
    assert!(r.contains("<bad-request"), "an iq get needs one child: {r}");
    let r = h.input("<presence type='bogus'/>");
    assert!(r.contains("<bad-request"), "{r}");
    assert_eq!(h.stanzas.len(), 1);
    assert!(!h.closed);
}

#[test]
fn client_state_after_login() {
    let mut h = Harness::plain();
    h.input(HEADER);
    let r = h.input("<inactive xmlns='urn:xmpp:csi:0'/>");
    assert!(
        r.contains("<unsupported-stanza-type"),
        "not offered before login: {r}"
    );
    let mut h = Harness::plain();
    h.login();
    assert!(
        h.sent.contains("<csi xmlns='urn:xmpp:csi:0'/>"),
        "offered with bind"
    );
    h.bind_only();
    h.input("<inactive xmlns='urn:xmpp:csi:0'/><active xmlns='urn:xmpp:csi:0'/>");
    assert_eq!(h.states, [false, true]);
    assert!(!h.closed);
    let r = h.input("<sleepy xmlns='urn:xmpp:csi:0'/>");
    assert!(r.contains("<unsupported-stanza-type"), "{r}");
}

#[test]
fn stream_management_elements() {
    const SM: &str = "xmlns='urn:xmpp:sm:3'";
    let mut h = Harness::plain();
    h.login();
    assert!(
        h.sent.contains("<sm xmlns='urn:xmpp:sm:3'/>"),
        "offered with bind"
    );
    // Resumption instead of binding; enable only after binding.
    h.input(&format!("<resume {SM} previd='abc' h='7'/>"));
    assert_eq!(h.sm, ["resume abc 7"]);
    let r = h.input(&format!("<resume {SM} h='7'/>"));
    assert!(r.contains("<bad-request"), "{r}");
    let r = h.input(&format!("<enable {SM} resume='true'/>"));
    assert!(r.contains("<unexpected-request"), "before bind: {r}");
    h.bind_only();
    h.input(&format!("<enable {SM} resume='true'/>"));
    assert_eq!(h.sm[1], "enable true");
    let r = h.input(&format!("<enable {SM}/>"));
    assert!(r.contains("<unexpected-request"), "twice: {r}");
    let r = h.input(&format!("<resume {SM} previd='abc' h='0'/>"));
    assert!(r.contains("<unexpected-request"), "after bind: {r}");
    // Every stanza counts, the refused ones too.
    h.input("<message to='bob@localhost'><body>1</body></message><presence/>");
    h.input("<presence type='bogus'/>");
    let r = h.input(&format!("<r {SM}/>"));
    assert!(r.contains("<a xmlns='urn:xmpp:sm:3' h='3'/>"), "{r}");
    h.input(&format!("<a {SM} h='2'/>"));
    assert_eq!(h.sm[2], "ack 2");
    let r = h.input(&format!("<a {SM} h='-1'/>"));
    assert!(r.contains("<bad-format"), "{r}");
    assert!(h.closed);
}

#[test]
fn stream_errors() {
    let cases = [
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.org' version='1.0'>",
            "host-unknown",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
            "unsupported-version",
        ),
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        ("<?xml version='1.0'?><!DOCTYPE x>", "restricted-xml"),
    ];
    let broken = format!("{HEADER}<message><b></message></c>");
    for (input, cond) in cases
        .into_iter()
        .chain([(broken.as_str(), "not-well-formed")])
    {
        let mut h = Harness::plain();
        let r = h.input(input);
        assert!(
            r.starts_with("<?xml version='1.0'?><stream:stream"),
            "{cond}: {r}"
        );
        assert!(
            r.contains(&format!(
                "<{cond} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            )),
            "{cond}: {r}"
        );
        assert!(r.ends_with("</stream:error></stream:stream>"), "{r}");
        assert!(h.closed && h.c2s.is_closed());
    }
    let mut h = Harness::plain();
    h.input(HEADER);
    let r = h.input("<message to='bob@localhost'><body>x</body></message>");
    assert!(r.contains("<not-authorized"), "stanza before auth: {r}");
    assert!(h.stanzas.is_empty());
    let mut h = Harness::plain();
    h.input(HEADER);
    let r = h.input("<foo xmlns='urn:example'/>");
    assert!(r.contains("<unsupported-stanza-type"), "{r}");
    let mut h = Harness::plain();
    h.login();
    let r = h.input("<message to='bob@localhost'/>");
    assert!(r.contains("<not-authorized"), "stanza before bind: {r}");
}

#[test]
fn token_login_and_end() {
    let mut h = Harness::plain();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let t = h
        .auth
        .issue_token(&alice, Scopes::sasl_auth(), None, None)
        .unwrap();
    h.input(HEADER);
    let r = h.input(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-OAUTH2'>{}</auth>",
        STANDARD.encode(format!("\0alice\0{}", t.token))
    ));
    assert!(r.contains("<success"), "{r}");
    assert!(h.c2s.grant().is_some());
    let mut out = Vec::new();
    h.c2s.token_ended(TokenEnd::Revoked, &mut out);
    h.run(out);
    assert!(h.sent.contains("<not-authorized"), "{}", h.sent);
    assert!(h.sent.contains(">token revoked</text>"), "{}", h.sent);
    assert!(h.closed);
}

#[test]
fn too_many_failures_end_the_stream() {
    let mut h = Harness::plain();
    h.input(HEADER);
    let bad = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        STANDARD.encode(b"\0alice\0wrong")
    );
    for _ in 0..MAX_AUTH_FAILURES - 1 {
        let r = h.input(&bad);
        assert!(r.contains("<not-authorized/>") && !h.closed, "{r}");
    }
    let r = h.input(&bad);
    assert!(r.contains("<policy-violation"), "{r}");
    assert!(h.closed);
}

#[test]
fn timeout_before_header_sends_header_then_error() {
    let mut h = Harness::plain();
    let mut out = Vec::new();
    h.c2s.timed_out(&mut out);
    h.run(out);
    assert!(h.sent.starts_with("<?xml"), "{}", h.sent);
    assert!(h.sent.contains("<connection-timeout"), "{}", h.sent);
}

/// Aborts and refusals before TLS count like failed attempts: a stream
/// cannot loop through cheap tries forever.
#[test]
fn aborts_and_refusals_before_tls_count_as_failures() {
    let mut h = Harness::plain();
    h.input(HEADER);
    for _ in 0..MAX_AUTH_FAILURES - 1 {
        h.input("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>");
        let r = h.input("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert!(r.contains("<aborted/>") && !h.closed, "{r}");
    }
    let r = h.input("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert!(r.contains("<policy-violation"), "{r}");
    assert!(h.closed);

    let mut h = Harness::new(TlsPolicy {
        secure: false,
        starttls: true,
        required: true,
    });
    h.input(HEADER);
    let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>";
    for _ in 0..MAX_AUTH_FAILURES - 1 {
        assert!(h.input(auth).contains("<encryption-required/>") && !h.closed);
    }
    assert!(h.input(auth).contains("<policy-violation"));
    assert!(h.closed);
}

fn sasl2_auth(mech: &str, payload: &[u8], inline: &str) -> String {
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mech}'>\
         <initial-response>{}</initial-response>\
         <user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'/>{inline}</authenticate>",
        STANDARD.encode(payload)
    )
}

/// XEP-0388: offered beside SASL1 with its inline features; a success is
/// handed to the connection without a stream restart, a failure is SASL2's.
#[test]
fn sasl2_login_with_bind2_and_no_restart() {
    let mut h = Harness::plain();
    let r = h.input(HEADER);
    assert!(
        r.contains("<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-256</mechanism>"),
        "{r}"
    );
    for inline in [
        "<bind xmlns='urn:xmpp:bind:0'><inline><feature var='urn:xmpp:carbons:2'/>\
         <feature var='urn:xmpp:csi:0'/><feature var='urn:xmpp:sm:3'/></inline></bind>",
        "<sm xmlns='urn:xmpp:sm:3'/>",
        "<fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism></fast>",
    ] {
        assert!(r.contains(inline), "{inline}: {r}");
    }
    // Channel binding is offered on TLS only.
    assert!(!r.contains("HT-SHA-256-EXPR"), "{r}");
    let r = h.input(&sasl2_auth("PLAIN", b"\0alice\0nope", ""));
    assert!(
        r.contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
        "{r}"
    );
    let r = h.input(&sasl2_auth(
        "PLAIN",
        b"\0alice\0pw",
        "<bind xmlns='urn:xmpp:bind:0'><tag>App</tag><enable xmlns='urn:xmpp:sm:3'/></bind>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>",
    ));
    // Nothing written yet: the connection writes <success/> with the results.
    assert_eq!(r, "");
    let d = h.sasl2.pop().expect("a SASL2 success");
    let b = d.inline.bind.expect("bind asked for");
    assert_eq!((b.tag.as_deref(), b.sm), (Some("App"), Some(false)));
    assert_eq!(d.inline.request_token, Some(HtMechanism::None));
    assert!(d.fast.is_none());
    let jid = h
        .c2s
        .bind_inline(b.tag.as_deref(), d.inline.agent.as_deref())
        .unwrap();
    assert!(jid.to_string().starts_with("alice@localhost/App."), "{jid}");
    assert!(h.c2s.bind_inline(None, None).is_none(), "bound once");
    h.c2s.sm_enabled_inline();
    let f = String::from_utf8(h.c2s.features_bytes()).unwrap();
    assert_eq!(
        f,
        "<stream:features><csi xmlns='urn:xmpp:csi:0'/></stream:features>"
    );
    // The same stream goes on: stanzas are stamped with the new JID.
    h.input("<message to='bob@localhost'><body>hi</body></message>");
    assert_eq!(h.stanzas[0].attr("from"), Some(jid.to_string().as_str()));
    assert_eq!(h.c2s.sm_handled(), Some(1));
}

/// XEP-0484: a FAST mechanism only with <fast/>, one round trip, the
/// server's proof as additional data; a bad proof fails like a bad token.
#[test]
fn sasl2_fast_login() {
    use hmac::{Hmac, Mac};
    let mut h = Harness::plain();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let t = h
        .auth
        .issue_fast(
            &alice,
            "d4565fa7-4d72-4749-b3d3-740edbf87770",
            HtMechanism::None,
            None,
            false,
        )
        .unwrap();
    let mac = |msg: &[u8]| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(t.token.as_bytes()).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    };
    let mut good = b"alice\0".to_vec();
    good.extend(mac(b"Initiator"));
    h.input(HEADER);
    let r = h.input(&sasl2_auth("HT-SHA-256-NONE", &good, ""));
    assert!(r.contains("<invalid-mechanism"), "without <fast/>: {r}");
    let mut bad = b"alice\0".to_vec();
    bad.extend(mac(b"Initiatos"));
    let r = h.input(&sasl2_auth(
        "HT-SHA-256-NONE",
        &bad,
        "<fast xmlns='urn:xmpp:fast:0'/>",
    ));
    assert!(r.contains("<not-authorized"), "{r}");
    let r = h.input(&sasl2_auth(
        "HT-SHA-256-NONE",
        &good,
        "<fast xmlns='urn:xmpp:fast:0' invalidate='true'/>",
    ));
    assert_eq!(r, "");
    let d = h.sasl2.pop().expect("a SASL2 success");
    assert_eq!(d.data, Some(mac(b"Responder")));
    let (m, agent, rotate) = d.fast.expect("a FAST login");
    assert_eq!(
        (m, agent.as_str(), rotate),
        (
            HtMechanism::None,
            "d4565fa7-4d72-4749-b3d3-740edbf87770",
            false
        )
    );
    assert_eq!(d.inline.fast, Some(true));
    assert!(h.c2s.grant().is_some());
    // Invalidated: no token to end the session with, its scopes kept.
    h.c2s.drop_grant();
    assert!(h.c2s.grant().is_none());
    assert_eq!(h.c2s.scopes(), Some(&Scopes::sasl_auth()));
}

/// XEP-0493: OAUTHBEARER's error names the OAuth metadata document.
#[test]
fn oauthbearer_error_points_to_the_metadata() {
    let mut h = Harness::plain();
    h.c2s = C2s::new(
        vec!["localhost".to_string()].into(),
        TlsPolicy {
            secure: false,
            starttls: false,
            required: false,
        },
        Arc::new(crate::session::CountingEntropy::default()),
    )
    .with_oauth_metadata(Some(
        "https://localhost:5443/.well-known/oauth-authorization-server".into(),
    ));
    h.input(HEADER);
    let r = h.input(&sasl2_auth(
        "OAUTHBEARER",
        b"n,a=alice@localhost,\x01auth=Bearer \x01\x01",
        "",
    ));
    let json = r
        .split("<challenge xmlns='urn:xmpp:sasl:2'>")
        .nth(1)
        .and_then(|c| c.split('<').next())
        .map(|b| String::from_utf8(STANDARD.decode(b).unwrap()).unwrap())
        .unwrap_or_else(|| panic!("no challenge: {r}"));
    assert_eq!(
        json,
        r#"{"status":"invalid_token","scope":"sasl_auth","openid-configuration":"https://localhost:5443/.well-known/oauth-authorization-server"}"#
    );
}
