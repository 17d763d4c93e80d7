//! Hostile input, one test per class (issue 11): each sends the attack to a
//! running server and shows the protocol's own answer (or a clean close),
//! bounded memory — the server's resident set measured before the attack
//! and at its peak (`VmHWM`), the growth held under a stated bound — and
//! the server still serving another client afterwards.
//!
//! Each test prints its memory figures (`cargo test --test hostile --
//! --nocapture`); the closing note of issue 11 quotes them.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mqtt_raw::{connect_packet, RawClient};
use common::xmpp::{b64, header, Raw};
use common::{connect_from, Petrel};
use petrel::mqtt::codec::{
    self, reason, Ack, Connect, LastWill, Packet, Properties, Publish, QoS, Subscribe,
    SubscriptionOptions, Version,
};

const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const MIB: u64 = 1024;

/// Memory before an attack; `check` prints and bounds the growth to the peak.
struct Rss {
    class: &'static str,
    before_kib: u64,
}

impl Rss {
    fn before(p: &Petrel, class: &'static str) -> Rss {
        Rss {
            class,
            before_kib: p.rss_kib(),
        }
    }

    /// Requires the peak resident set to have grown by less than `bound_mib`.
    fn check(&self, p: &Petrel, bound_mib: u64) {
        let (peak, now) = (p.peak_rss_kib(), p.rss_kib());
        eprintln!(
            "hostile {}: RSS before {} KiB, peak {} KiB (+{} KiB), after {} KiB; bound +{} MiB",
            self.class,
            self.before_kib,
            peak,
            peak.saturating_sub(self.before_kib),
            now,
            bound_mib
        );
        assert!(
            peak.saturating_sub(self.before_kib) < bound_mib * MIB,
            "{}: peak RSS {peak} KiB, {} KiB before the attack",
            self.class,
            self.before_kib
        );
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn c2s(p: &Petrel) -> SocketAddr {
    p.addrs["c2s"][0]
}

/// A logged-in v5 raw client (token in CONNECT).
fn mqtt_logged_in(p: &Petrel, id: &str, token: &str) -> RawClient {
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        id,
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert_eq!(connack(c.recv()).reason_code, 0);
    c
}

fn connack(p: Option<Packet>) -> codec::ConnAck {
    match p {
        Some(Packet::ConnAck(c)) => c,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn publish(topic: &str, qos: QoS, packet_id: u16, retain: bool, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        retain,
        topic: topic.into(),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        ..Publish::default()
    })
}

fn subscribe(packet_id: u16, filters: &[String]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                )
            })
            .collect(),
    })
}

/// Reads until a packet `want` accepts, answering PUBLISHes with PUBACK
/// on the way; panics if the connection closes first.
fn recv_until<T>(c: &mut RawClient, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    loop {
        let p = c.recv().expect("connection closed");
        if let Some(t) = want(&p) {
            return t;
        }
        if let Packet::Publish(pb) = &p {
            if pb.qos != QoS::AtMostOnce {
                c.send(&Packet::PubAck(Ack {
                    packet_id: pb.packet_id,
                    ..Ack::default()
                }));
            }
        }
    }
}

/// The observer's round trip: subscribe (once) and receive its own publish.
fn mqtt_alive(c: &mut RawClient, tag: &str) {
    let topic = format!("alive/{tag}");
    c.send(&subscribe(7, std::slice::from_ref(&topic)));
    recv_until(c, |p| matches!(p, Packet::SubAck(_)).then_some(()));
    c.send(&publish(&topic, QoS::AtLeastOnce, 8, false, tag.as_bytes()));
    recv_until(c, |p| match p {
        Packet::Publish(pb) if pb.topic == topic => Some(()),
        _ => None,
    });
}

/// XML amplification before login (namespace copies, children, elements,
/// the stream header): 64 connections at once, each with a stanza the old
/// parser would have grown to gigabytes; each gets `<policy-violation/>`.
#[test]
fn xml_amplification_before_login() {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let mut observer = Raw::login(c2s(&p), "bob", "builder", "observer");
    let rss = Rss::before(&p, "XML amplification");

    let ns = "n".repeat(128 * 1024);
    let attacks: Vec<Vec<u8>> = vec![
        // 128 KiB namespace on an element with ~30k children (each would
        // have kept its own copy of it).
        format!(
            "{}<message xmlns='{ns}'>{}</message>",
            header("localhost"),
            "<c/>".repeat(30_000)
        )
        .into_bytes(),
        // The same children with a short namespace: the children cap.
        format!(
            "{}<message>{}</message>",
            header("localhost"),
            "<c/>".repeat(60_000)
        )
        .into_bytes(),
        // Many elements spread over few children: the elements cap.
        format!(
            "{}<message>{}</message>",
            header("localhost"),
            format!("<a>{}</a>", "<b/>".repeat(1000)).repeat(10)
        )
        .into_bytes(),
        // A long prefix declared in the header (replayed before every
        // stanza by the old parser).
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:p='{}' \
             xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            "p".repeat(3000)
        )
        .into_bytes(),
        // A header larger than its limit.
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' x='{}'>",
            "x".repeat(200_000)
        )
        .into_bytes(),
    ];
    let addr = c2s(&p);
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let attack = attacks[i % attacks.len()].clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                c.send_bytes(&attack);
                let all = c.read_to_close();
                assert!(
                    all.contains(&format!("<policy-violation xmlns='{STREAMS}'/>")),
                    "attack {}: {all}",
                    i % 5
                );
                assert!(all.ends_with("</stream:stream>"), "{all}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    rss.check(&p, 64);
    observer.ping("after-xml");
    // Still logs people in.
    Raw::login(c2s(&p), "alice", "wonderland", "a").ping("login-after-xml");
}

/// SASL aborts before login count as failures: a stream cannot loop
/// through cheap tries forever (nor through header re-parses: the header is
/// parsed once).
#[test]
fn aborted_logins_end_the_stream() {
    let p = Petrel::start("").with_user_and_client();
    let mut c = Raw::connect(c2s(&p));
    c.open("localhost");
    let mut replies = String::new();
    for _ in 0..20 {
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'/>");
        c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    }
    replies.push_str(&c.read_to_close());
    assert!(
        replies.matches("<aborted/>").count() <= 5,
        "at most five tries answered: {replies}"
    );
    assert!(
        replies.contains(&format!("<policy-violation xmlns='{STREAMS}'/>")),
        "{replies}"
    );
    Raw::login(c2s(&p), "alice", "wonderland", "a").ping("after-aborts");
}

/// SUBSCRIBE amplification: 3000 retained messages of 1 KB; 32 attackers
/// that never read send SUBSCRIBEs of 10,000 `#` filters each, then
/// thousands of distinct filters. Past the per-packet cap filters get 0x97,
/// duplicates are one subscription, retained delivery stops at the
/// session's queue cap, and subscriptions stop at the session cap.
#[test]
fn subscribe_amplification() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut publisher = mqtt_logged_in(&p, "publisher", &token);
    let body = vec![b'r'; 1000];
    for i in 0..3000u16 {
        publisher.send(&publish(
            &format!("r/{i}"),
            QoS::AtLeastOnce,
            i + 1,
            true,
            &body,
        ));
    }
    let mut acked = 0;
    while acked < 3000 {
        recv_until(&mut publisher, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        });
        acked += 1;
    }
    let rss = Rss::before(&p, "SUBSCRIBE amplification");

    let addr = p.mqtt();
    let attackers: Vec<_> = (0..32)
        .map(|i| {
            let token = token.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(addr, Version::V5);
                c.send(&connect_packet(
                    &format!("attacker-{i}"),
                    Some("X-OAUTH2"),
                    Some(token.as_bytes()),
                ));
                assert_eq!(connack(c.recv()).reason_code, 0);
                let hashes = vec!["#".to_string(); 10_000];
                c.send(&subscribe(1, &hashes));
                // The SUBACK comes before the retained messages.
                let codes = match c.recv() {
                    Some(Packet::SubAck(a)) => a.reason_codes,
                    other => panic!("expected SUBACK, got {other:?}"),
                };
                assert_eq!(codes.len(), 10_000);
                assert!(codes[..32].iter().all(|&c| c == 1), "{:?}", &codes[..32]);
                assert!(codes[32..].iter().all(|&c| c == reason::QUOTA_EXCEEDED));
                // Never reading again, more filters than a session may hold.
                for k in 0..40u16 {
                    let filters: Vec<String> = (0..32).map(|j| format!("f/{i}/{k}/{j}")).collect();
                    c.send(&subscribe(k + 2, &filters));
                }
                c
            })
        })
        .collect();
    let attackers: Vec<RawClient> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    // Everyone else is still served while the attackers sit on their queues.
    let mut observer = mqtt_logged_in(&p, "observer", &token);
    mqtt_alive(&mut observer, "after-subscribe");
    rss.check(&p, 96);
    drop(attackers);
    mqtt_alive(&mut observer, "after-attackers-left");
}

/// Session cap: a session holds at most `mqtt_max_subscriptions` filters.
#[test]
fn subscriptions_per_session_are_capped() {
    let p = Petrel::start("mqtt_max_subscriptions = 50").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut c = mqtt_logged_in(&p, "many", &token);
    let mut granted = 0;
    for k in 0..4u16 {
        let filters: Vec<String> = (0..20).map(|j| format!("s/{k}/{j}")).collect();
        c.send(&subscribe(k + 1, &filters));
        let codes = recv_until(&mut c, |p| match p {
            Packet::SubAck(a) => Some(a.reason_codes.clone()),
            _ => None,
        });
        granted += codes.iter().filter(|&&c| c == 1).count();
        assert!(codes.iter().all(|&c| c == 1 || c == reason::QUOTA_EXCEEDED));
    }
    assert_eq!(granted, 50);
    mqtt_alive(&mut mqtt_logged_in(&p, "other", &token), "subs");
}

/// Guessing is throttled on every path, each with its own answer; guesses
/// from one address do not lock out another address's account.
#[test]
fn password_guessing_is_throttled_everywhere() {
    let p = Petrel::start("").with_user_and_client();
    for (u, pw) in [
        ("bob", "builder"),
        ("carol", "c-pass"),
        ("dave", "d-pass"),
        ("erin", "e-pass"),
    ] {
        p.ctl_ok(&["register", u, "localhost", pw]);
    }
    let rss = Rss::before(&p, "password guessing");

    // OAuth password grant from 127.0.0.1 against alice: 400
    // invalid_grant, then 429 with Retry-After and an RFC 6749 body.
    let http = common::client();
    let mut throttled = None;
    for _ in 0..30 {
        let r = http
            .post(format!("{}/oauth/token", p.http()))
            .form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "guess"),
                ("client_id", "app"),
                ("client_secret", "app-secret"),
            ])
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().get("retry-after").cloned();
        let body: serde_json::Value = r.json().unwrap();
        if status == 429 {
            throttled = Some((retry, body));
            break;
        }
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    let (retry, body) = throttled.expect("no 429 after 30 wrong passwords");
    let secs: u64 = retry
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1, "{secs}");
    assert_eq!(body["error"], "invalid_request", "{body}");

    // Another address, another account: served.
    let other = reqwest::blocking::Client::builder()
        .local_address(ip("127.0.0.2"))
        .build()
        .unwrap();
    let r = other
        .post(format!("{}/oauth/token", p.http()))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "builder"),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // XMPP PLAIN from 127.0.0.3 against carol: <not-authorized/>, then
    // <temporary-auth-failure/>.
    let mut seen = None;
    for _ in 0..30 {
        let mut c = Raw::over(connect_from(ip("127.0.0.3"), c2s(&p)));
        let r = c.try_auth("PLAIN", b"\0carol\0guess");
        if r.contains("<temporary-auth-failure/>") {
            seen = Some(r);
            break;
        }
        assert!(r.contains("<not-authorized/>"), "{r}");
    }
    seen.expect("no temporary-auth-failure after 30 wrong passwords");
    let mut bob = Raw::over(connect_from(ip("127.0.0.4"), c2s(&p)));
    assert!(bob
        .try_auth("PLAIN", b"\0bob\0builder")
        .contains("<success"));

    // MQTT 5 from 127.0.0.5 against dave: 0x86, then 0x97.
    let v5_try = |user: &str, pw: &str, from: &str| {
        let mut c = RawClient::over(connect_from(ip(from), p.mqtt()), Version::V5);
        let mut conn = match connect_packet("guess", None, None) {
            Packet::Connect(c) => c,
            _ => unreachable!(),
        };
        conn.username = Some(user.into());
        conn.password = Some(Bytes::from(pw.to_string()));
        c.send(&Packet::Connect(conn));
        connack(c.recv()).reason_code
    };
    let mut codes = Vec::new();
    for _ in 0..30 {
        let code = v5_try("dave", "guess", "127.0.0.5");
        codes.push(code);
        if code != reason::BAD_USER_NAME_OR_PASSWORD {
            break;
        }
    }
    assert_eq!(codes.last(), Some(&reason::QUOTA_EXCEEDED), "{codes:?}");
    assert_eq!(v5_try("bob", "builder", "127.0.0.6"), 0);

    // MQTT 3.1.1 from 127.0.0.7 against erin: return code 4, then 3.
    let v3_try = |from: &str| {
        let mut c = RawClient::over(connect_from(ip(from), p.mqtt()), Version::V311);
        c.send(&Packet::Connect(Connect {
            version: Version::V311,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: "guess3".into(),
            will: None,
            username: Some("erin".into()),
            password: Some(Bytes::from_static(b"guess")),
        }));
        connack(c.recv()).reason_code
    };
    let mut codes = Vec::new();
    for _ in 0..30 {
        // The codec maps 3.1.1 return codes to v5 ones: 4 -> 0x86, 3 -> 0x88.
        let code = v3_try("127.0.0.7");
        codes.push(code);
        if code != reason::BAD_USER_NAME_OR_PASSWORD {
            break;
        }
    }
    assert_eq!(codes.last(), Some(&reason::SERVER_UNAVAILABLE), "{codes:?}");
    rss.check(&p, 32);
}

/// Per-account quotas: sessions, session expiry, retained topics, topic
/// depth, the pre-login CONNECT size, offline messages.
#[test]
fn per_account_quotas() {
    let p = Petrel::start(
        "mqtt_max_sessions_per_account = 3\n\
         mqtt_max_session_expiry = 3600\n\
         mqtt_max_retained = 10\n\
         mqtt_max_topic_levels = 8\n\
         max_offline_messages = 5",
    )
    .with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let bob_token = p.token("bob@localhost", 3600, "sasl_auth");
    let rss = Rss::before(&p, "per-account quotas");

    // Sessions: the fourth is refused; the expiry asked for is capped and
    // the grant told.
    let mut live: Vec<RawClient> = (0..3)
        .map(|i| {
            let mut c = RawClient::connect(p.mqtt(), Version::V5);
            let mut conn =
                match connect_packet(&format!("s{i}"), Some("X-OAUTH2"), Some(token.as_bytes())) {
                    Packet::Connect(c) => c,
                    _ => unreachable!(),
                };
            conn.properties.session_expiry_interval = Some(u32::MAX);
            c.send(&Packet::Connect(conn));
            let ack = connack(c.recv());
            assert_eq!(ack.reason_code, 0);
            assert_eq!(ack.properties.session_expiry_interval, Some(3600));
            c
        })
        .collect();
    let mut fourth = RawClient::connect(p.mqtt(), Version::V5);
    fourth.send(&connect_packet(
        "s3",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert_eq!(connack(fourth.recv()).reason_code, reason::QUOTA_EXCEEDED);
    assert!(fourth.recv().is_none());

    // Retained topics: ten kept, then PUBACK 0x97 for each new one (not
    // accepted: neither kept nor routed); 2000 more attempts cost nothing.
    let c = &mut live[0];
    for i in 0..2010u16 {
        c.send(&publish(
            &format!("ret/{i}"),
            QoS::AtLeastOnce,
            i + 1,
            true,
            &[b'x'; 512],
        ));
    }
    let mut codes = Vec::new();
    while codes.len() < 2010 {
        codes.push(recv_until(c, |p| match p {
            Packet::PubAck(a) => Some(a.reason_code),
            _ => None,
        }));
    }
    assert!(
        codes[..10]
            .iter()
            .all(|&c| c == reason::NO_MATCHING_SUBSCRIBERS),
        "{:?}",
        &codes[..10]
    );
    assert!(codes[10..].iter().all(|&c| c == reason::QUOTA_EXCEEDED));

    // Topic depth: nine levels end the connection with 0x90.
    let c = &mut live[1];
    c.send(&publish(
        "a/b/c/d/e/f/g/h/i",
        QoS::AtMostOnce,
        0,
        false,
        b"deep",
    ));
    match c.recv() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::TOPIC_NAME_INVALID),
        other => panic!("expected DISCONNECT 0x90, got {other:?}"),
    }

    // A CONNECT over 64 KiB before login (200k user properties would have
    // fitted in 1 MiB): closed unread.
    let mut big = RawClient::connect(p.mqtt(), Version::V5);
    let mut conn = match connect_packet("big", None, None) {
        Packet::Connect(c) => c,
        _ => unreachable!(),
    };
    conn.properties.user_properties = (0..10_000).map(|i| (format!("k{i}"), "v".into())).collect();
    big.send(&Packet::Connect(conn));
    assert!(big.recv().is_none(), "closed without a CONNACK");

    // Offline messages: five kept for bob, then <resource-constraint/>.
    let mut alice = Raw::login_token(c2s(&p), "alice", &token, "a");
    for i in 0..6 {
        alice.send(&format!(
            "<message to='bob@localhost' type='chat' id='m{i}'><body>{}</body></message>",
            "o".repeat(1000)
        ));
    }
    let err = alice.expect("</message>");
    assert!(
        err.contains("id='m5'") && err.contains("type='error'"),
        "{err}"
    );
    assert!(err.contains("<resource-constraint"), "{err}");
    let mut bob = Raw::login_token(c2s(&p), "bob", &bob_token, "b");
    bob.available();
    let got = bob.expect("id='m4'");
    assert!(got.contains("id='m0'"), "{got}");
    rss.check(&p, 32);
    mqtt_alive(&mut live[2], "quotas");
}

/// `unregister` and `change_password` end the account's live sessions in
/// both protocols, password-authenticated (SCRAM, MQTT password) and
/// token ones alike, and its tokens stop working.
#[test]
fn account_lifecycle_ends_sessions_and_tokens() {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let bob_token = p.token("bob@localhost", 3600, "sasl_auth");

    for (user, pw, tok, command) in [
        (
            "alice",
            "wonderland",
            &token,
            vec!["unregister", "alice", "localhost"],
        ),
        (
            "bob",
            "builder",
            &bob_token,
            vec!["change_password", "bob", "localhost", "new-pw"],
        ),
    ] {
        let mut scram = scram_login(c2s(&p), user, pw);
        let mut mqtt = RawClient::connect(p.mqtt(), Version::V5);
        let mut conn = match connect_packet(&format!("{user}-pw"), None, None) {
            Packet::Connect(c) => c,
            _ => unreachable!(),
        };
        conn.username = Some(user.into());
        conn.password = Some(Bytes::from(pw.to_string()));
        mqtt.send(&Packet::Connect(conn));
        assert_eq!(connack(mqtt.recv()).reason_code, 0);
        let mut by_token = mqtt_logged_in(&p, &format!("{user}-tok"), tok);

        p.ctl_ok(&command);
        let all = scram.read_to_close();
        assert!(
            all.contains(&format!("<not-authorized xmlns='{STREAMS}'/>")),
            "{user}: {all}"
        );
        for c in [&mut mqtt, &mut by_token] {
            match c.recv() {
                Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::NOT_AUTHORIZED),
                other => panic!("{user}: expected DISCONNECT 0x87, got {other:?}"),
            }
            assert!(c.recv().is_none());
        }
        let mut again = RawClient::connect(p.mqtt(), Version::V5);
        again.send(&connect_packet(
            "again",
            Some("X-OAUTH2"),
            Some(tok.as_bytes()),
        ));
        assert_eq!(
            connack(again.recv()).reason_code,
            reason::NOT_AUTHORIZED,
            "{user}'s token"
        );
    }
    // The new password works.
    Raw::login(c2s(&p), "bob", "new-pw", "b").ping("new-password");

    // No tokens for accounts that do not exist.
    let out = p.ctl(&["oauth_issue_token", "nobody@localhost", "3600", "sasl_auth"]);
    assert!(!out.status.success());

    // /oauth/revoke only by the client the token was issued to.
    p.ctl_ok(&[
        "oauth_add_client_password",
        "other",
        "Other",
        "other-secret",
    ]);
    let (s, v) = common::password_grant(&p.http(), "bob", "new-pw", &[]);
    assert_eq!(s, 200, "{v}");
    let app_token = v["access_token"].as_str().unwrap().to_string();
    for (client, secret, t) in [
        ("other", "other-secret", app_token.as_str()),
        ("app", "app-secret", bob_token.as_str()),
    ] {
        let (s, _, body) = common::post_form(
            &format!("{}/oauth/revoke", p.http()),
            &[
                ("token", t),
                ("client_id", client),
                ("client_secret", secret),
            ],
        );
        if t == bob_token {
            // Already revoked by the password change: unknown, so 200.
            assert_eq!(s, 200, "{body}");
        } else {
            assert_eq!(s, 400, "{body}");
            assert_eq!(body["error"], "unauthorized_client", "{body}");
        }
    }
    let ctl_token = p.token("bob@localhost", 3600, "sasl_auth");
    let (s, _, body) = common::post_form(
        &format!("{}/oauth/revoke", p.http()),
        &[
            ("token", &ctl_token),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    mqtt_logged_in(&p, "still-good", &ctl_token);
    mqtt_logged_in(&p, "app-token", &app_token);
    let (s, _, _) = common::post_form(
        &format!("{}/oauth/revoke", p.http()),
        &[
            ("token", &app_token),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(s, 200);
    let mut gone = RawClient::connect(p.mqtt(), Version::V5);
    gone.send(&connect_packet(
        "gone",
        Some("X-OAUTH2"),
        Some(app_token.as_bytes()),
    ));
    assert_eq!(connack(gone.recv()).reason_code, reason::NOT_AUTHORIZED);
}

/// A SCRAM-SHA-256 login (the loadgen's client) with a bound resource.
fn scram_login(addr: SocketAddr, user: &str, password: &str) -> Raw {
    use petrel::auth::scram::ScramHash;
    use petrel::loadgen::scram::{SaltedCache, ScramClient};
    let mut c = Raw::connect(addr);
    let mut sc = ScramClient::new(ScramHash::Sha256, user, password);
    let r = c.try_auth("SCRAM-SHA-256", &sc.client_first());
    let server_first = payload_of(&r, "challenge");
    let cache = SaltedCache::default();
    let fin = sc.client_final(&server_first, &cache).unwrap();
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(&fin)
    ));
    let r = c.expect_sasl_result();
    assert!(r.contains("<success"), "{r}");
    c.restart_and_bind("scram");
    c
}

fn payload_of(reply: &str, element: &str) -> Vec<u8> {
    use base64::Engine as _;
    let text = reply
        .split(&format!(
            "<{element} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        ))
        .nth(1)
        .and_then(|r| r.split(&format!("</{element}>")).next())
        .unwrap_or_else(|| panic!("no {element}: {reply}"));
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// The data directory is 0700, everything in it 0600 (0700 for
/// directories), the admin socket included — from the first start.
#[test]
fn data_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let p = Petrel::start("").with_user_and_client();
    let dir = p.data_dir();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut seen = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let m = mode(&path);
            seen += 1;
            if path.is_dir() {
                assert_eq!(m, 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
            }
        }
    }
    assert!(seen >= 3, "store files and the socket");
    assert_eq!(mode(&dir.join("petrel.sock")) & 0o077, 0);
}

/// HTTP: a body that never finishes gets 408; the RFC 8414 issuer is the
/// configured one whatever the Host header says; one address holds at
/// most `max_connections_per_ip` connections while others are served.
#[test]
fn http_slow_bodies_hosts_and_connection_caps() {
    let p = Petrel::start_with_listeners(
        "http_request_timeout = 2\noauth_issuer = \"https://auth.example.org\"",
        r#"
[[listen]]
module = "http"
port = 0
max_connections_per_ip = 8

[[listen]]
module = "c2s"
port = 0

[[listen]]
module = "mqtt"
port = 0
"#,
    )
    .with_user_and_client();
    let addr = p.addrs["http"][0];
    let rss = Rss::before(&p, "HTTP slow clients");

    // Slow body: headers promise 100 bytes, 10 arrive.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = slow.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // The issuer is configured, never taken from Host (asked from another
    // address, so no pooled connection takes a place below).
    let r = reqwest::blocking::Client::builder()
        .local_address(ip("127.0.0.3"))
        .build()
        .unwrap()
        .get(format!(
            "http://{addr}/.well-known/oauth-authorization-server"
        ))
        .header("host", "evil.example")
        .send()
        .unwrap();
    let meta: serde_json::Value = r.json().unwrap();
    assert_eq!(meta["issuer"], "https://auth.example.org");
    assert_eq!(
        meta["token_endpoint"],
        "https://auth.example.org/oauth/token"
    );

    // Eight idle connections from 127.0.0.1 are held; the ninth is closed
    // at once; 127.0.0.2 is served meanwhile; one closing frees a place.
    let mut idle: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // The accept loop has counted them once a request on a ninth is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ninth = std::net::TcpStream::connect(addr).unwrap();
        ninth
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = ninth.write_all(b"GET /oauth/token HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 64];
        match ninth.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "a ninth connection was served"),
        }
    }
    let other = reqwest::blocking::Client::builder()
        .local_address(ip("127.0.0.2"))
        .build()
        .unwrap();
    let r = other
        .get(format!(
            "http://{addr}/.well-known/oauth-authorization-server"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::client()
            .get(format!(
                "http://{addr}/.well-known/oauth-authorization-server"
            ))
            .send();
        if matches!(&r, Ok(r) if r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
    }
    rss.check(&p, 32);
}

/// Clients cannot publish on `$` topics: PUBACK 0x87, nothing delivered.
#[test]
fn dollar_topics_are_not_for_clients() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut c = mqtt_logged_in(&p, "sys", &token);
    c.send(&subscribe(1, &["$SYS/#".to_string()]));
    recv_until(&mut c, |p| matches!(p, Packet::SubAck(_)).then_some(()));
    c.send(&publish(
        "$SYS/broker/fake",
        QoS::AtLeastOnce,
        2,
        false,
        b"x",
    ));
    // The server's own `$SYS` statistics may arrive; the fake never.
    let code = recv_until(&mut c, |p| match p {
        Packet::PubAck(a) => Some(a.reason_code),
        Packet::Publish(pb) if pb.topic == "$SYS/broker/fake" => panic!("delivered {pb:?}"),
        _ => None,
    });
    assert_eq!(code, reason::NOT_AUTHORIZED);
    mqtt_alive(&mut c, "dollar");
    // Nor through a will: refused at CONNECT (0x90).
    let mut w = RawClient::connect(p.mqtt(), Version::V5);
    let mut conn = match connect_packet("will-sys", Some("X-OAUTH2"), Some(token.as_bytes())) {
        Packet::Connect(c) => c,
        _ => unreachable!(),
    };
    conn.will = Some(Box::new(LastWill {
        topic: "$SYS/broker/version".into(),
        payload: Bytes::from_static(b"fake"),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Properties::default(),
    }));
    w.send(&Packet::Connect(conn));
    assert_eq!(connack(w.recv()).reason_code, reason::TOPIC_NAME_INVALID);
    assert!(w.recv().is_none());
}

/// An HTTP connection that never sends a request (nothing at all, or half
/// an HTTP/2 preface) is closed after `http_header_timeout`.
#[test]
fn silent_http_connections_are_closed() {
    let p = Petrel::start("http_header_timeout = 1");
    let addr = p.addrs["http"][0];
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(first).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{first:?}: still open after {:?}",
            started.elapsed()
        );
    }
    let r = common::client()
        .get(format!(
            "http://{addr}/.well-known/oauth-authorization-server"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// A token revoked under a live session ends it without its will; the
/// same session dropped by the network does send it (the control).
#[test]
fn a_revoked_session_leaves_no_will() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut observer = mqtt_logged_in(&p, "observer", &token);
    observer.send(&subscribe(1, &["will/#".to_string()]));
    recv_until(&mut observer, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    });

    let with_will = |id: &str, tok: &str| {
        let mut c = RawClient::connect(p.mqtt(), Version::V5);
        let mut conn = match connect_packet(id, Some("X-OAUTH2"), Some(tok.as_bytes())) {
            Packet::Connect(c) => c,
            _ => unreachable!(),
        };
        conn.will = Some(Box::new(LastWill {
            topic: format!("will/{id}"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }));
        c.send(&Packet::Connect(conn));
        assert_eq!(connack(c.recv()).reason_code, 0);
        c
    };
    // Control: the network drops the connection; the will arrives.
    let dropped = with_will("dropped", &token);
    dropped.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(dropped);
    let topic = recv_until(&mut observer, |p| match p {
        Packet::Publish(pb) => Some(pb.topic.clone()),
        _ => None,
    });
    assert_eq!(topic, "will/dropped");

    // Revoked: DISCONNECT 0x87, then a marker published after the close
    // arrives with no will before it.
    let ids = |p: &Petrel| -> Vec<String> {
        p.ctl_ok(&["oauth_list_tokens"])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let known = ids(&p);
    let doomed_token = p.token("alice@localhost", 3600, "sasl_auth");
    let id = ids(&p)
        .into_iter()
        .find(|i| !known.contains(i))
        .expect("the new token is listed");
    let mut doomed = with_will("revoked", &doomed_token);
    p.ctl_ok(&["oauth_revoke_token", &id]);
    match doomed.recv() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert!(doomed.recv().is_none());
    let mut marker = mqtt_logged_in(&p, "marker", &token);
    marker.send(&publish("will/marker", QoS::AtLeastOnce, 3, false, b"m"));
    let topic = recv_until(&mut observer, |p| match p {
        Packet::Publish(pb) => Some(pb.topic.clone()),
        _ => None,
    });
    assert_eq!(topic, "will/marker", "the revoked session's will was sent");
}

/// An unreadable stored record (a token, a retained message, an MQTT
/// session) is skipped at start and logged; the rest still works.
#[test]
fn a_corrupt_record_does_not_stop_the_start() {
    use petrel::store::{Store, StoreKind, Tree};
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    assert_eq!(p.stop(), Some(0));
    {
        let store = Store::open(&StoreKind::Sled, &p.data_dir()).unwrap();
        store.put(Tree::Tokens, vec![7u8; 32], b"\x01garbage".to_vec());
        store.put(
            Tree::Retained,
            b"localhost\0bad".to_vec(),
            b"\x01garbage".to_vec(),
        );
        store.put(
            Tree::Sessions,
            b"localhost\0bad".to_vec(),
            b"\x01garbage".to_vec(),
        );
        store.put(Tree::Meta, b"server_key".to_vec(), b"\x01garbage".to_vec());
        store.barrier_blocking().unwrap();
    }
    p.spawn();
    let mut c = mqtt_logged_in(&p, "after-corrupt", &token);
    mqtt_alive(&mut c, "corrupt");
    Raw::login(c2s(&p), "alice", "wonderland", "a").ping("corrupt");
}
