//! XMPP stream negotiation and SASL over raw sockets: every mechanism's
//! success and failure, authzid rules, STARTTLS policy, binding and
//! replacement, and tokens that die cutting live sessions.

mod common;

use std::time::{Duration, Instant};

use common::xmpp::{auth, b64, issue_token, Raw};
use common::{password_grant, Petrel};

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

fn c2s(p: &Petrel) -> std::net::SocketAddr {
    p.addrs["c2s"][0]
}

#[test]
fn features_offer_every_mechanism_and_starttls() {
    let p = server();
    let mut c = Raw::connect(c2s(&p));
    let f = c.open("LocalHost");
    assert!(f.contains("from='localhost'"), "{f}");
    assert!(f.contains("version='1.0'"), "{f}");
    assert!(
        f.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        "offered, not required on loopback: {f}"
    );
    for m in [
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
        "X-OAUTH2",
        "OAUTHBEARER",
    ] {
        assert!(
            f.contains(&format!("<mechanism>{m}</mechanism>")),
            "{m}: {f}"
        );
    }
}

#[test]
fn plain_success_bind_and_connected_users() {
    let p = server();
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth("PLAIN", b"\0alice\0wonderland");
    assert_eq!(r, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let jid = c.restart_and_bind("laptop");
    assert_eq!(jid, "alice@localhost/laptop");
    assert_eq!(
        p.ctl_ok(&["connected_users"]).trim(),
        "alice@localhost/laptop"
    );
    // Legacy session establishment is accepted.
    c.send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    c.expect("<iq type='result' id='sess'/>");
    c.send("</stream:stream>");
    let rest = c.read_to_close();
    assert!(rest.ends_with("</stream:stream>"), "{rest}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.ctl_ok(&["connected_users"]).trim().is_empty() {
        assert!(Instant::now() < deadline, "session not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn plain_failures() {
    let p = server();
    let cases: [(&str, &[u8], &str); 5] = [
        ("PLAIN", b"\0alice\0wrong", "not-authorized"),
        ("PLAIN", b"\0nobody\0wonderland", "not-authorized"),
        (
            "PLAIN",
            b"bob@localhost\0alice\0wonderland",
            "invalid-authzid",
        ),
        ("PLAIN", b"no-nuls-at-all", "malformed-request"),
        ("DIGEST-MD5", b"x", "invalid-mechanism"),
    ];
    for (mech, payload, cond) in cases {
        let mut c = Raw::connect(c2s(&p));
        let r = c.try_auth(mech, payload);
        assert!(
            r.contains(&format!(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{cond}/>"
            )),
            "{mech} {payload:?}: {r}"
        );
        // The stream survives a failed attempt: try again correctly.
        c.send(&auth("PLAIN", b"\0alice\0wonderland"));
        assert!(c.expect_sasl_result().contains("<success"));
    }
    let mut c = Raw::connect(c2s(&p));
    c.open("localhost");
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>not base64!</auth>");
    assert!(c.expect_sasl_result().contains("<incorrect-encoding/>"));
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>");
    let ch = c.expect_sasl_result();
    assert!(ch.contains("<challenge"), "no initial response: {ch}");
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert!(c.expect_sasl_result().contains("<aborted/>"));
}

#[test]
fn x_oauth2_with_a_token_from_the_token_endpoint() {
    let p = server();
    let (status, body) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    // user as a localpart, authzid empty
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth("X-OAUTH2", format!("\0alice\0{token}").as_bytes());
    assert!(r.contains("<success"), "{r}");
    assert_eq!(c.restart_and_bind("t1"), "alice@localhost/t1");
    // user as a bare JID, authzid equal to the owner
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth(
        "X-OAUTH2",
        format!("alice@localhost\0alice@localhost\0{token}").as_bytes(),
    );
    assert!(r.contains("<success"), "{r}");
}

#[test]
fn x_oauth2_refusals() {
    let p = server();
    let token = issue_token(&p, "alice@localhost", "3600");
    let bob_token = issue_token(&p, "bob@localhost", "3600");
    let no_scope = p
        .ctl_ok(&[
            "oauth_issue_token",
            "alice@localhost",
            "3600",
            "xmpp:roster:read",
        ])
        .trim()
        .to_string();
    let cases = [
        // authzid names someone else than the token's owner
        format!("bob@localhost\0alice\0{token}"),
        // user is not the token's owner
        format!("\0alice\0{bob_token}"),
        // unknown token
        "\0alice\0not-a-real-token".to_string(),
        // a token without sasl_auth
        format!("\0alice\0{no_scope}"),
        // an account of a domain the stream was not opened to
        format!("\0alice@elsewhere.org\0{token}"),
    ];
    for payload in cases {
        let mut c = Raw::connect(c2s(&p));
        let r = c.try_auth("X-OAUTH2", payload.as_bytes());
        assert!(
            r.contains("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"),
            "{payload:?}: {r}"
        );
    }
    // A revoked token no longer logs in.
    p.ctl_ok(&["oauth_revoke_token", &token]);
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth("X-OAUTH2", format!("\0alice\0{token}").as_bytes());
    assert!(r.contains("<not-authorized/>"), "{r}");
}

#[test]
fn oauthbearer_success_and_error_challenge() {
    let p = server();
    let token = issue_token(&p, "alice@localhost", "3600");
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth(
        "OAUTHBEARER",
        format!("n,a=alice@localhost,\x01host=localhost\x01auth=Bearer {token}\x01\x01").as_bytes(),
    );
    assert!(r.contains("<success"), "{r}");
    assert_eq!(c.restart_and_bind("ob"), "alice@localhost/ob");

    // Without an authzid the identity is the token's owner.
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth(
        "OAUTHBEARER",
        format!("n,,\x01auth=Bearer {token}\x01\x01").as_bytes(),
    );
    assert!(r.contains("<success"), "{r}");

    // authzid of another user: RFC 7628 error challenge, then not-authorized.
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth(
        "OAUTHBEARER",
        format!("n,a=bob@localhost,\x01auth=Bearer {token}\x01\x01").as_bytes(),
    );
    assert!(r.contains("<challenge"), "{r}");
    let json = r.split('>').nth(1).unwrap().split('<').next().unwrap();
    let json = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, json).unwrap(),
    )
    .unwrap();
    assert!(json.contains("\"status\":\"invalid_token\""), "{json}");
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(b"\x01")
    ));
    assert!(c.expect_sasl_result().contains("<not-authorized/>"));

    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth("OAUTHBEARER", b"n,,\x01auth=Basic abc\x01\x01");
    assert!(r.contains("<malformed-request/>"), "{r}");
}

#[test]
fn scram_failures_look_alike() {
    let p = server();
    // A wrong proof for a real user and any proof for an unknown one both end
    // in not-authorized after a normal-looking challenge.
    for user in ["alice", "nobody"] {
        let mut c = Raw::connect(c2s(&p));
        let r = c.try_auth(
            "SCRAM-SHA-256",
            format!("n,,n={user},r=clientnonce").as_bytes(),
        );
        assert!(r.contains("<challenge"), "{r}");
        let first = r.split('>').nth(1).unwrap().split('<').next().unwrap();
        let first = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, first).unwrap(),
        )
        .unwrap();
        assert!(
            first.starts_with("r=clientnonce") && first.contains(",i=4096"),
            "{first}"
        );
        let nonce = first.split(',').next().unwrap();
        let fin = format!("c=biws,{nonce},p={}", b64(&[7u8; 32]));
        c.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64(fin.as_bytes())
        ));
        assert!(
            c.expect_sasl_result().contains("<not-authorized/>"),
            "{user}"
        );
    }
    let mut c = Raw::connect(c2s(&p));
    let r = c.try_auth("SCRAM-SHA-1", b"garbage");
    assert!(r.contains("<malformed-request/>"), "{r}");
}

#[test]
fn starttls_required_off_loopback_policy() {
    let p = Petrel::start(
        "[[listen]]\nmodule = \"c2s\"\nport = 0\nstarttls = true\nstarttls_required = true\n",
    )
    .with_user_and_client();
    let addr = p.addrs["c2s"][0];
    let mut c = Raw::connect(addr);
    let f = c.open("localhost");
    assert!(
        f.contains("<required/>") && !f.contains("<mechanisms"),
        "{f}"
    );
    c.send(&auth("PLAIN", b"\0alice\0wonderland"));
    assert!(c.expect_sasl_result().contains("<encryption-required/>"));
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    c.expect("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");

    // Bytes sent after <starttls/> in the same packet are plaintext injection:
    // the connection is dropped instead of being upgraded.
    let mut c = Raw::connect(addr);
    c.open("localhost");
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='get' id='x'/>");
    let rest = c.read_to_close();
    assert!(rest.contains("<proceed"), "{rest}");
}

#[test]
fn same_resource_replaces_the_old_session_with_conflict() {
    let p = server();
    let mut first = Raw::login(c2s(&p), "alice", "wonderland", "phone");
    let mut second = Raw::login(c2s(&p), "alice", "wonderland", "phone");
    let bye = first.read_to_close();
    assert!(
        bye.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{bye}"
    );
    assert!(bye.ends_with("</stream:error></stream:stream>"), "{bye}");
    second.ping("still-here");
    assert_eq!(
        p.ctl_ok(&["connected_users"]).trim(),
        "alice@localhost/phone"
    );
}

fn expect_token_cut(c: &mut Raw, why: &str) {
    let start = Instant::now();
    let bye = c.read_to_close();
    assert!(
        bye.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{bye}"
    );
    assert!(bye.contains(why), "{bye}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn revoking_the_token_cuts_the_live_session() {
    let p = server();
    let token = issue_token(&p, "alice@localhost", "3600");
    let mut c = Raw::login_token(c2s(&p), "alice", &token, "dev");
    c.ping("before");
    let mut pw = Raw::login(c2s(&p), "alice", "wonderland", "pw");
    p.ctl_ok(&["oauth_revoke_token", &token]);
    expect_token_cut(&mut c, "token revoked");
    // A password session of the same account is not affected.
    pw.ping("after");
}

#[test]
fn an_expiring_token_cuts_the_live_session() {
    let p = server();
    let token = issue_token(&p, "alice@localhost", "2");
    let mut c = Raw::login_token(c2s(&p), "alice", &token, "dev");
    expect_token_cut(&mut c, "token expired");
}

#[test]
fn direct_tls_listener_needs_tls() {
    let p = server();
    // Plain XML to the TLS port is not a stream: no XMPP reply comes back.
    let mut c = Raw::connect(p.addrs["c2s"][1]);
    c.send(&common::xmpp::header("localhost"));
    let got = c.drain_for(Duration::from_millis(500));
    assert!(!got.contains("<stream:stream"), "{got}");
}

#[test]
fn shutdown_says_goodbye_with_system_shutdown() {
    let mut p = server();
    let mut c = Raw::login(c2s(&p), "alice", "wonderland", "bye");
    assert_eq!(p.stop(), Some(0));
    let bye = c.read_to_close();
    assert!(
        bye.contains("<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{bye}"
    );
}

#[test]
fn a_token_works_as_the_plain_password_and_ends_with_the_token() {
    let p = server();
    let token = issue_token(&p, "alice@localhost", "3600");
    let mut c = Raw::login(c2s(&p), "alice", &token, "plain-token");
    c.ping("in");
    // Not for another account.
    let mut other = Raw::connect(c2s(&p));
    let r = other.try_auth("PLAIN", format!("\0bob\0{token}").as_bytes());
    assert!(r.contains("<not-authorized/>"), "{r}");
    p.ctl_ok(&["oauth_revoke_token", &token]);
    expect_token_cut(&mut c, "token revoked");
}
