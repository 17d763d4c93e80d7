//! Token-native XMPP login on the wire: SASL2 (XEP-0388) with Bind 2
//! (XEP-0386) and inline resumption, FAST tokens (XEP-0484) — issue, one
//! round-trip login, rotation, invalidation, revocation ending the session
//! and refusing the token after — and XEP-0493's pointer to the OAuth
//! metadata; then xmpp.js doing SASL2 and reconnecting with its FAST token.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};

use common::xmpp::{header, Raw};
use common::{have_program, Petrel};

const AGENT: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn server(config: &str) -> Petrel {
    let p = Petrel::start(config).with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

fn c2s(p: &Petrel) -> std::net::SocketAddr {
    p.addrs["c2s"][0]
}

/// An `<authenticate/>` with the installation's user agent and `inline`.
fn authenticate(mechanism: &str, payload: &[u8], inline: &str) -> String {
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'>\
         <initial-response>{}</initial-response>\
         <user-agent id='{AGENT}'><software>petrel-test</software></user-agent>{inline}</authenticate>",
        STANDARD.encode(payload)
    )
}

/// Bind 2 with tag `phone`, stream management with resumption, carbons.
const BIND: &str = "<bind xmlns='urn:xmpp:bind:0'><tag>phone</tag>\
     <enable xmlns='urn:xmpp:sm:3' resume='true'/><enable xmlns='urn:xmpp:carbons:2'/></bind>";
const REQUEST_TOKEN: &str = "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";
const FAST: &str = "<fast xmlns='urn:xmpp:fast:0'/>";

/// Opens a stream and sends `auth`; the reply up to the end of the SASL2
/// result (and, on success, the features after it).
fn sasl2(addr: std::net::SocketAddr, auth: &str) -> (Raw, String) {
    let mut c = Raw::connect(addr);
    let f = c.open("localhost");
    assert!(
        f.contains("<authentication xmlns='urn:xmpp:sasl:2'>"),
        "{f}"
    );
    c.send(auth);
    let r = c.expect("</");
    let r = if r.contains("<success") {
        r + &c.expect("</success>") + &c.expect("</stream:features>")
    } else {
        r + &c.expect("</failure>")
    };
    (c, r)
}

fn attr<'a>(text: &'a str, element: &str, name: &str) -> &'a str {
    let el = text
        .split(&format!("<{element} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no <{element}> in {text}"));
    el.split(&format!("{name}='"))
        .nth(1)
        .and_then(|v| v.split('\'').next())
        .unwrap_or_else(|| panic!("no {name} on <{element}> in {text}"))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    text.split(open)
        .nth(1)
        .and_then(|t| t.split(close).next())
        .unwrap_or_else(|| panic!("no {open} in {text}"))
}

fn hmac(token: &str, msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// The HT-SHA-256-NONE initial response for alice's `token`.
fn fast_proof(token: &str) -> Vec<u8> {
    let mut p = b"alice\0".to_vec();
    p.extend(hmac(token, b"Initiator"));
    p
}

/// A FAST login (HT-SHA-256-NONE) of alice with `token` and `inline`
/// (`<fast/>` added).
fn fast(p: &Petrel, token: &str, inline: &str) -> (Raw, String) {
    sasl2(
        c2s(p),
        &authenticate(
            "HT-SHA-256-NONE",
            &fast_proof(token),
            &format!("{inline}{FAST}"),
        ),
    )
}

/// The id of alice's one FAST token, as `oauth_list_tokens` shows it.
fn fast_token_id(p: &Petrel) -> String {
    let list = p.ctl_ok(&["oauth_list_tokens"]);
    list.lines()
        .find(|l| l.ends_with(" fast"))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("{list}"))
        .to_string()
}

/// A password login (SASL2 PLAIN) that binds and asks for a FAST token:
/// the connection, the full JID, and the token.
fn login_with_token_request(p: &Petrel) -> (Raw, String, String) {
    let (c, r) = sasl2(
        c2s(p),
        &authenticate(
            "PLAIN",
            b"\0alice\0wonderland",
            &format!("{BIND}{REQUEST_TOKEN}"),
        ),
    );
    assert!(r.contains("<success xmlns='urn:xmpp:sasl:2'>"), "{r}");
    let jid = between(&r, "<authorization-identifier>", "</").to_string();
    let token = attr(&r, "token", "token").to_string();
    (c, jid, token)
}

#[test]
fn sasl2_binds_inline_and_a_fast_token_logs_in_in_one_round_trip() {
    let p = server("");
    let (mut alice, jid, token) = login_with_token_request(&p);
    assert!(jid.starts_with("alice@localhost/phone."), "{jid}");
    // Shown to the admin as a FAST token of alice, never the token itself.
    let list = p.ctl_ok(&["oauth_list_tokens"]);
    let line = list
        .lines()
        .find(|l| l.ends_with(" fast"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        line.contains(" alice@localhost ") && !list.contains(&token),
        "{list}"
    );

    // The session is bound and routed: a message reaches it.
    let mut bob = Raw::login(c2s(&p), "bob", "builder", "desk");
    bob.send("<message to='alice@localhost' type='chat'><body>one</body></message>");
    alice.expect("<body>one</body>");

    // The token is no bearer token...
    let mut x = Raw::connect(c2s(&p));
    let r = x.try_auth("X-OAUTH2", format!("\0alice\0{token}").as_bytes());
    assert!(r.contains("not-authorized"), "{r}");

    // ...but logs in with HT-SHA-256-NONE in one round trip, proving the
    // server knows it too (additional data), and Bind 2 gives the same
    // installation the same resource: the old session is taken over.
    let (mut again, r) = fast(&p, &token, BIND);
    assert!(r.contains("<success"), "{r}");
    let data = between(&r, "<additional-data>", "</");
    assert_eq!(STANDARD.decode(data).unwrap(), hmac(&token, b"Responder"));
    assert_eq!(between(&r, "<authorization-identifier>", "</"), jid);
    // The archive's state at binding, then stream management's answer.
    let bound = between(&r, "<bound xmlns='urn:xmpp:bind:0'>", "</bound>");
    assert!(
        bound.starts_with("<metadata xmlns='urn:xmpp:mam:2'><start id='")
            && bound.contains("<end id='")
            && bound.contains("<enabled xmlns='urn:xmpp:sm:3' id='"),
        "{r}"
    );
    assert!(!r.contains("<token"), "no rotation due yet: {r}");
    let gone = alice.read_to_close();
    assert!(gone.contains("<conflict"), "{gone}");
    again.ping("p1");

    // A wrong proof, a FAST mechanism without <fast/>, <fast/> with
    // another mechanism: refused, SASL2's way.
    let (_, r) = sasl2(
        c2s(&p),
        &authenticate("HT-SHA-256-NONE", &fast_proof("nope"), FAST),
    );
    assert!(
        r.contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized"),
        "{r}"
    );
    let (_, r) = sasl2(
        c2s(&p),
        &authenticate("HT-SHA-256-NONE", &fast_proof(&token), ""),
    );
    assert!(r.contains("<invalid-mechanism"), "{r}");
    let (_, r) = sasl2(
        c2s(&p),
        &authenticate("PLAIN", b"\0alice\0wonderland", FAST),
    );
    assert!(r.contains("<invalid-mechanism"), "{r}");
}

#[test]
fn a_revoked_fast_token_ends_its_session_and_logs_in_no_more() {
    let p = server("");
    let (first, _, token) = login_with_token_request(&p);
    first.kill();
    let (mut s, r) = fast(&p, &token, BIND);
    assert!(r.contains("<success"), "{r}");
    s.ping("p1");
    p.ctl_ok(&["oauth_revoke_token", &fast_token_id(&p)]);
    let end = s.read_to_close();
    assert!(
        end.contains("<not-authorized") && end.contains("token revoked"),
        "{end}"
    );
    // Replayed after the revocation: refused.
    let (_, r) = fast(&p, &token, "");
    assert!(
        r.contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized"),
        "{r}"
    );
}

/// XEP-0484 §4.6: `invalidate` ends the token; the session it opened goes on.
#[test]
fn an_invalidated_token_works_no_more_but_its_session_goes_on() {
    let p = server("");
    let (first, _, token) = login_with_token_request(&p);
    first.kill();
    let (mut s, r) = sasl2(
        c2s(&p),
        &authenticate(
            "HT-SHA-256-NONE",
            &fast_proof(&token),
            &format!("{BIND}<fast xmlns='urn:xmpp:fast:0' invalidate='true'/>"),
        ),
    );
    assert!(r.contains("<success") && !r.contains("<token"), "{r}");
    s.ping("p1");
    let (_, r) = fast(&p, &token, "");
    assert!(r.contains("<not-authorized"), "{r}");
    s.ping("p2");
    assert!(!p.ctl_ok(&["oauth_list_tokens"]).contains(" fast"));
}

/// XEP-0484 §4.5: a token past half its life gets a successor in the
/// login's <success/>; the old one works until the new one is used, then
/// no more — but the session it opened is not ended by that: the same
/// installation resumes it with the new token.
#[test]
fn tokens_rotate_and_a_session_of_the_old_one_resumes_with_the_new_one() {
    let p = server("fast_token_expire = 4");
    let (first, _, old) = login_with_token_request(&p);
    first.kill();
    let (session, r) = fast(&p, &old, BIND);
    let jid = between(&r, "<authorization-identifier>", "</").to_string();
    let previd = attr(&r, "enabled", "id").to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let (c, r) = fast(&p, &old, "");
        assert!(
            r.contains("<success"),
            "the old token works until the new one is used: {r}"
        );
        c.kill();
        if r.contains("<token ") {
            break attr(&r, "token", "token").to_string();
        }
        assert!(Instant::now() < deadline, "no rotation: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(new, old);
    session.kill();
    let (mut back, r) = sasl2(
        c2s(&p),
        &authenticate(
            "HT-SHA-256-NONE",
            &fast_proof(&new),
            &format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>{BIND}{FAST}"),
        ),
    );
    assert!(r.contains("<resumed xmlns='urn:xmpp:sm:3'"), "{r}");
    assert_eq!(between(&r, "<authorization-identifier>", "</"), jid);
    back.ping("r1");
    let (_, r) = fast(&p, &old, "");
    assert!(
        r.contains("<not-authorized"),
        "spent once the new one was used: {r}"
    );
    back.ping("r2");
}

/// XEP-0198 inside SASL2: a dead connection's session resumes in the
/// login itself, and what it had not acknowledged comes again; an unknown
/// one fails inside <success/> and Bind 2 goes on.
#[test]
fn sasl2_resumes_inline_and_replays_what_was_not_acknowledged() {
    let p = server("");
    let (alice, r) = sasl2(
        c2s(&p),
        &authenticate("PLAIN", b"\0alice\0wonderland", BIND),
    );
    let jid = between(&r, "<authorization-identifier>", "</").to_string();
    let previd = attr(&r, "enabled", "id").to_string();
    let mut bob = Raw::login(c2s(&p), "bob", "builder", "desk");
    alice.kill();
    for i in 0..3 {
        bob.send(&format!(
            "<message to='{jid}' type='chat'><body>m{i}</body></message>"
        ));
    }
    bob.ping("b1");

    let tablet = "<bind xmlns='urn:xmpp:bind:0'><tag>tablet</tag></bind>";
    let (mut other, r) = sasl2(
        c2s(&p),
        &authenticate(
            "PLAIN",
            b"\0alice\0wonderland",
            &format!("<resume xmlns='urn:xmpp:sm:3' previd='unknown' h='0'/>{tablet}"),
        ),
    );
    assert!(r.contains("<failed xmlns='urn:xmpp:sm:3'"), "{r}");
    assert!(r.contains("<bound xmlns='urn:xmpp:bind:0'>"), "{r}");
    assert!(between(&r, "<authorization-identifier>", "</").starts_with("alice@localhost/tablet."));
    other.ping("o1");

    let (mut back, r) = sasl2(
        c2s(&p),
        &authenticate(
            "PLAIN",
            b"\0alice\0wonderland",
            &format!("<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>{BIND}"),
        ),
    );
    assert!(
        r.contains(&format!("<resumed xmlns='urn:xmpp:sm:3' previd='{previd}'")),
        "{r}"
    );
    assert_eq!(between(&r, "<authorization-identifier>", "</"), jid);
    assert!(
        !r.contains("<bound"),
        "a resumed session is not bound again: {r}"
    );
    let replay = back.expect("<body>m2</body>");
    let order: Vec<&str> = replay.matches("<body>m").collect();
    assert_eq!(order.len(), 3, "{replay}");
    assert!(replay.find("m0").unwrap() < replay.find("m1").unwrap());
    back.ping("a1");
}

/// XEP-0493: a client with no token asks with an empty OAUTHBEARER and
/// learns where the OAuth metadata (RFC 8414) is; the document is there.
#[test]
fn oauthbearer_without_a_token_learns_where_to_get_one() {
    let p = server("");
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth("OAUTHBEARER", b"n,,\x01auth=Bearer \x01\x01");
    let json = STANDARD
        .decode(between(
            &r,
            "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>",
            "<",
        ))
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["status"], "invalid_token");
    let url = v["openid-configuration"].as_str().unwrap().to_string();
    assert_eq!(
        url,
        format!(
            "https://localhost:{}/.well-known/oauth-authorization-server",
            p.addrs["http"][1].port()
        )
    );
    let meta: serde_json::Value = common::client().get(&url).send().unwrap().json().unwrap();
    assert!(
        meta["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/token"),
        "{meta}"
    );
    // The error dance ends as RFC 7628 says.
    c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AQ==</response>");
    let f = c.expect("</failure>");
    assert!(f.contains("<not-authorized"), "{f}");
    let _ = header;
}

/// XEP-0386 §3.2: a Bind 2 client syncs from the archive, so offline
/// messages the archive holds are not delivered again; the archive has them.
#[test]
fn bind2_leaves_archived_offline_messages_to_the_archive() {
    let p = server("");
    let mut bob = Raw::login(c2s(&p), "bob", "builder", "desk");
    bob.send("<message to='alice@localhost' type='chat'><body>while away</body></message>");
    bob.ping("b1");
    let (mut alice, r) = sasl2(
        c2s(&p),
        &authenticate("PLAIN", b"\0alice\0wonderland", BIND),
    );
    assert!(
        r.contains("<metadata xmlns='urn:xmpp:mam:2'><start id='"),
        "{r}"
    );
    alice.send("<presence/>");
    let seen = alice.expect("<presence") + &alice.expect("/>");
    alice.send("<iq type='get' id='a2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    let seen = seen + &alice.expect("id='a2'");
    assert!(!seen.contains("while away"), "delivered again: {seen}");
    alice.send("<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='x'/></iq>");
    let page = alice.expect("<fin");
    assert!(page.contains("<body>while away</body>"), "{page}");
}

/// xmpp.js: SASL2 with a password asks for a FAST token; a second client
/// of the same installation with no password logs in with the token alone
/// (HT-SHA-256-NONE), and chats.
#[test]
fn xmpp_js_reconnects_with_its_fast_token() {
    if !have_program("node") {
        return;
    }
    let p = server("");
    let mut bob = Raw::login(c2s(&p), "bob", "builder", "desk");
    // Available: a chat message to the bare JID comes to this resource.
    bob.available();
    let service = format!("xmpps://127.0.0.1:{}", p.addrs["c2s"][1].port());
    let js = std::thread::spawn(move || {
        common::node::run_js("xmpp_fast.mjs", &[&service, "wonderland", "bob@localhost"])
    });
    let got =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bob.expect("</message>"))) {
            Ok(g) => g,
            Err(_) => {
                let (ok, out, err) = js.join().unwrap();
                panic!("bob got nothing from xmpp.js (exit ok: {ok}): {out} {err}");
            }
        };
    assert!(got.contains("<body>sent after FAST</body>"), "{got}");
    let from = attr(&got, "message", "from").to_string();
    assert!(from.starts_with("alice@localhost/js."), "{got}");
    bob.send(&format!(
        "<message to='{from}' type='chat'><body>hello back</body></message>"
    ));
    let (ok, out, err) = js.join().unwrap();
    assert!(ok, "{out} {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["mechanism"], "HT-SHA-256-NONE", "{r}");
    assert_eq!(
        r["first"], r["second"],
        "one installation, one resource: {r}"
    );
    assert_eq!(r["got"], "hello back", "{r}");
    assert!(p.ctl_ok(&["oauth_list_tokens"]).contains(" fast"));
}
