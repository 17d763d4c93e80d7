//! Three Petrel nodes as one service on this machine: one PostgreSQL store
//! and one NATS server, both throw-away and on loopback. A token issued
//! through node A logs in on B (MQTT) and C (XMPP); revoking it on C ends
//! the sessions holding it on A and B within the test's deadline, and no
//! node takes it again.

mod common;

use std::time::{Duration, Instant};

use common::mqtt_raw::{connect_packet, RawClient};
use common::nats::Nats;
use common::postgres::pg;
use common::xmpp::Raw;
use common::Petrel;
use petrel::mqtt::codec::{Packet, Version};

fn node(store: &str, nats: &str, name: &str) -> Petrel {
    Petrel::start_logging(&format!(
        "log_level = \"petrel::cluster=debug,info\"\nstore = {store:?}\n[cluster]\nnats = {nats:?}\nnode = {name:?}\n"
    ))
}

fn mqtt_login(p: &Petrel, id: &str, token: &str) -> (RawClient, u8) {
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        id,
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    match c.recv() {
        Some(Packet::ConnAck(a)) => (c, a.reason_code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The nodes' logs, for a failure's story.
fn dump_logs(nodes: &[&Petrel]) {
    for n in nodes {
        let log = std::fs::read_to_string(n.dir.path().join("log.txt")).unwrap_or_default();
        eprintln!("---- {}\n{log}", n.dir.path().display());
    }
}

/// Reads until the server says goodbye (DISCONNECT) or closes.
fn ended(c: &mut RawClient) -> Option<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match c.recv() {
            Some(Packet::Disconnect(d)) => return Some(d.reason_code),
            Some(_) => continue,
            None => return Some(0),
        }
    }
    None
}

#[test]
fn a_token_from_one_node_works_on_the_others_and_a_revocation_anywhere_ends_it_everywhere() {
    let Some(pg) = pg() else { return };
    let Some(nats) = Nats::start() else { return };
    let store = pg.database();
    let a = node(&store, &nats.url(), "a").with_user_and_client();
    let b = node(&store, &nats.url(), "b");
    let c = node(&store, &nats.url(), "c");
    // Issued through A (its admin socket), after B and C started.
    let token = a.token("alice@localhost", 3600, "sasl_auth");

    let (mut on_a, code) = mqtt_login(&a, "phone-a", &token);
    assert_eq!(code, 0);
    let (mut on_b, code) = mqtt_login(&b, "phone-b", &token);
    assert_eq!(code, 0, "B found A's token in the shared store");
    let mut on_c = Raw::connect(c.addrs["c2s"][0]);
    let r = on_c.try_auth("X-OAUTH2", format!("\0alice\0{token}").as_bytes());
    assert!(r.contains("<success"), "C: {r}");
    on_c.restart_and_bind("desk");

    // Revoked through C: every node ends its sessions with it.
    let out = c.ctl_ok(&["oauth_revoke_token", &token]);
    assert!(!out.is_empty());
    assert_eq!(
        ended(&mut on_a),
        Some(0x87),
        "A's session ended (not authorized)"
    );
    assert_eq!(ended(&mut on_b), Some(0x87), "B's session ended");
    let bye = on_c.read_to_close();
    assert!(bye.contains("</stream:stream>"), "C's stream closed: {bye}");
    // And no node takes it again.
    for p in [&a, &b, &c] {
        let (_, code) = mqtt_login(p, "again", &token);
        assert_eq!(code, 0x87, "a revoked token is refused");
    }
}

// ---- MQTT across nodes -------------------------------------------------

use petrel::mqtt::codec::{
    Ack, Properties, Publish, QoS, RetainHandling, Subscribe, SubscriptionOptions,
};

/// An MQTT 5 session logged in with `token`; `expiry` > 0 keeps it
/// (Clean Start 0). Returns the client and Session Present.
fn mqtt_session(p: &Petrel, id: &str, token: &str, expiry: u32) -> (RawClient, bool) {
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    let Packet::Connect(mut conn) = connect_packet(id, Some("X-OAUTH2"), Some(token.as_bytes()))
    else {
        unreachable!()
    };
    if expiry > 0 {
        conn.clean_start = false;
        conn.properties.session_expiry_interval = Some(expiry);
    }
    c.send(&Packet::Connect(conn));
    match c.recv() {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.reason_code, 0, "{id} on {}", p.mqtt());
            (c, a.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn subscribe(c: &mut RawClient, filter: &str) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(
            filter.to_string(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: true,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
    }));
    loop {
        match c.recv() {
            Some(Packet::SubAck(s)) => {
                assert_eq!(s.reason_codes, [1], "granted QoS 1");
                return;
            }
            Some(_) => continue,
            None => panic!("closed before SUBACK"),
        }
    }
}

/// Publishes at QoS 1 and waits for the PUBACK's reason code.
fn publish(c: &mut RawClient, topic: &str, payload: &str, retain: bool, pid: u16) -> u8 {
    try_publish(c, topic, payload, retain, pid).expect("closed before PUBACK")
}

/// Publishes at QoS 1 and waits for the PUBACK's reason code; None when
/// the server closed the connection first.
fn try_publish(
    c: &mut RawClient,
    topic: &str,
    payload: &str,
    retain: bool,
    pid: u16,
) -> Option<u8> {
    c.send(&Packet::Publish(Publish {
        topic: topic.into(),
        payload: bytes::Bytes::from(payload.to_string()),
        qos: QoS::AtLeastOnce,
        retain,
        packet_id: pid,
        ..Publish::default()
    }));
    loop {
        match c.recv() {
            Some(Packet::PubAck(a)) if a.packet_id == pid => return Some(a.reason_code),
            Some(_) => continue,
            None => return None,
        }
    }
}

/// What arrives until `n` publishes came (acknowledging them when `ack`),
/// or 20 s passed: payloads in order of arrival.
fn receive(c: &mut RawClient, n: usize, ack: bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match c.recv() {
            Some(Packet::Publish(p)) => {
                if ack && p.qos == QoS::AtLeastOnce {
                    c.send(&Packet::PubAck(Ack {
                        packet_id: p.packet_id,
                        reason_code: 0,
                        properties: Properties::default(),
                    }));
                }
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Some(_) => continue,
            None => break,
        }
    }
    got
}

/// Payloads until (not including) `marker`, acknowledging each.
fn receive_until(c: &mut RawClient, marker: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let next = receive(c, 1, true);
        assert_eq!(next.len(), 1, "{marker} never came; got {got:?}");
        if next[0] == marker {
            return got;
        }
        got.extend(next);
    }
}

/// Waits (20 s at most) until `node`'s `list_cluster` shows every line of
/// `want`.
fn cluster_shows(node: &Petrel, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = node.ctl_ok(&["list_cluster"]);
        if want.iter().all(|w| out.lines().any(|l| l == *w)) {
            return;
        }
        if Instant::now() > deadline {
            dump_logs(&[node]);
            panic!("list_cluster: {out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mqtt_reaches_every_node_once_and_sessions_move_between_nodes() {
    let Some(pg) = pg() else { return };
    let Some(nats) = Nats::start() else { return };
    let store = pg.database();
    let a = node(&store, &nats.url(), "a").with_user_and_client();
    let b = node(&store, &nats.url(), "b");
    let c = node(&store, &nats.url(), "c");
    let token = a.token("alice@localhost", 3600, "sasl_auth");

    // Subscribers on B and C, a publisher on A.
    let (mut on_b, _) = mqtt_session(&b, "sub-b", &token, 0);
    subscribe(&mut on_b, "fleet/+/temp");
    let (mut on_c, _) = mqtt_session(&c, "sub-c", &token, 0);
    subscribe(&mut on_c, "fleet/#");
    // mosquitto_pub (MQTT 3.1.1, the token as password) publishes at QoS 1
    // through A: it exits 0 once A acknowledged, which A does once B and C
    // took the message.
    let pubs: Vec<String> = (0..5).map(|i| format!("{{\"t\":{i}}}")).collect();
    for m in &pubs {
        let st = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &a.mqtt().port().to_string()])
            .args(["-i", "thermo", "-u", "alice@localhost", "-P", &token])
            .args(["-q", "1", "-t", "fleet/kitchen/temp", "-m", m])
            .status();
        match st {
            Ok(st) => assert!(st.success(), "mosquitto_pub through A"),
            Err(_) => {
                assert!(
                    std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
                    "mosquitto_pub is required"
                );
                let (mut p, _) = mqtt_session(&a, "thermo", &token, 0);
                assert_eq!(publish(&mut p, "fleet/kitchen/temp", m, false, 1), 0);
            }
        }
    }
    assert_eq!(
        receive(&mut on_b, 5, true),
        pubs,
        "B's subscriber, in order"
    );
    assert_eq!(
        receive(&mut on_c, 5, true),
        pubs,
        "C's subscriber, in order"
    );

    // A retained message set through B is what a subscriber on C gets.
    let (mut pub_b, _) = mqtt_session(&b, "setter", &token, 0);
    // 0x10: nobody subscribes yet (kept all the same).
    assert_eq!(publish(&mut pub_b, "home/setpoint", "21", true, 7), 0x10);
    let (mut late_c, _) = mqtt_session(&c, "late", &token, 0);
    subscribe(&mut late_c, "home/setpoint");
    assert_eq!(receive(&mut late_c, 1, true), ["21"]);
    // The on_c subscriber (fleet/#) did not get the home topic; each of
    // the five came once: a sixth publish is the next thing it reads.
    let (mut p, _) = mqtt_session(&a, "thermo2", &token, 0);
    assert_eq!(publish(&mut p, "fleet/x/temp", "last", false, 2), 0);
    assert_eq!(
        receive(&mut on_c, 1, true),
        ["last"],
        "no duplicate before it"
    );
    assert_eq!(
        receive(&mut on_b, 1, true),
        ["last"],
        "no duplicate before it"
    );

    // A shared group with a member on B and one on C: each job goes to
    // one of them, in turn, whichever node it was published on.
    let mut workers = Vec::new();
    for (n, id) in [(&b, "worker-b"), (&c, "worker-c")] {
        let (mut w, _) = mqtt_session(n, id, &token, 0);
        subscribe(&mut w, "$share/w/jobs/#");
        subscribe(&mut w, "end");
        workers.push(w);
    }
    cluster_shows(&a, &["a self", "b alive shared=1", "c alive shared=1"]);
    for i in 0..10u16 {
        assert_eq!(
            publish(&mut p, "jobs/x", &format!("j{i}"), false, 10 + i),
            0
        );
    }
    assert_eq!(publish(&mut p, "end", "end", false, 30), 0);
    let on_b = receive_until(&mut workers[0], "end");
    let on_c = receive_until(&mut workers[1], "end");
    assert_eq!((on_b.len(), on_c.len()), (5, 5), "turns: {on_b:?} {on_c:?}");
    let mut all: Vec<String> = on_b.into_iter().chain(on_c).collect();
    all.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
    want.sort();
    assert_eq!(all, want, "each job once");

    // A persistent session on A moves to B: A's connection is taken over,
    // B resumes it (Session Present) with its subscription.
    let (mut phone, present) = mqtt_session(&a, "phone", &token, 600);
    assert!(!present);
    subscribe(&mut phone, "chat/alice");
    let (mut moved, present) = mqtt_session(&b, "phone", &token, 600);
    assert!(present, "B resumed the session A held");
    assert_eq!(ended(&mut phone), Some(0x8E), "A's connection taken over");
    assert_eq!(publish(&mut p, "chat/alice", "hi", false, 3), 0);
    assert_eq!(receive(&mut moved, 1, true), ["hi"]);
    assert_eq!(
        publish(&mut p, "chat/alice", "again", false, 4),
        0,
        "published through A, held on B"
    );
    assert_eq!(receive(&mut moved, 1, true), ["again"], "once, from B only");
}

#[test]
fn a_dead_nodes_persistent_sessions_resume_elsewhere_without_loss() {
    let Some(pg) = pg() else { return };
    let Some(nats) = Nats::start() else { return };
    let store = pg.database();
    let a = node(&store, &nats.url(), "a").with_user_and_client();
    let mut b = node(&store, &nats.url(), "b");
    let c = node(&store, &nats.url(), "c");
    let token = a.token("alice@localhost", 3600, "sasl_auth");

    // A device with a persistent session on B reads but never acknowledges;
    // another on B has a will, which a watcher on C waits for.
    let (mut dev, _) = mqtt_session(&b, "meter", &token, 3600);
    subscribe(&mut dev, "meter/cmd");
    let (mut watcher, _) = mqtt_session(&c, "watcher", &token, 0);
    subscribe(&mut watcher, "meter/status");
    let mut sensor = RawClient::connect(b.mqtt(), Version::V5);
    let Packet::Connect(mut conn) =
        connect_packet("sensor", Some("X-OAUTH2"), Some(token.as_bytes()))
    else {
        unreachable!()
    };
    conn.will = Some(Box::new(petrel::mqtt::codec::LastWill {
        topic: "meter/status".into(),
        payload: bytes::Bytes::from_static(b"sensor offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    }));
    sensor.send(&Packet::Connect(conn));
    assert!(matches!(sensor.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
    let (mut p, _) = mqtt_session(&c, "ops", &token, 0);
    for i in 0..5u16 {
        assert_eq!(
            publish(&mut p, "meter/cmd", &format!("m{i}"), false, i + 1),
            0
        );
    }
    assert_eq!(receive(&mut dev, 5, false).len(), 5);
    // B dies. What is published now is acknowledged once B's sessions
    // have a new node (A, the first name among the living).
    b.kill();
    for i in 5..10u16 {
        let code = try_publish(&mut p, "meter/cmd", &format!("m{i}"), false, i + 1);
        if code != Some(0) {
            dump_logs(&[&a, &c]);
        }
        assert_eq!(code, Some(0), "m{i} acknowledged after B died");
    }
    // The sensor's will, which only B had in memory, was published.
    assert_eq!(receive(&mut watcher, 1, true), ["sensor offline"]);
    // The device comes back on A: everything acknowledged arrives.
    let (mut back, present) = mqtt_session(&a, "meter", &token, 3600);
    assert!(present, "A adopted the session B held");
    let got = receive(&mut back, 10, true);
    for i in 0..10 {
        assert!(got.contains(&format!("m{i}")), "m{i} lost: {got:?}");
    }
}

/// `from` pings `to_full` until the ping reaches `to` — its node then
/// knows where `to` is bound and what `to` announced before — and `to`'s
/// answer comes back. Returns what each client read meanwhile (stanzas
/// sent earlier between them came before: a node's traffic keeps its
/// order).
fn reach(from: &mut Raw, from_full: &str, to: &mut Raw, to_full: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let step = Duration::from_millis(50);
    let (mut from_read, mut to_read) = (String::new(), String::new());
    for n in 0.. {
        let id = format!("reach{n}");
        from.send(&format!(
            "<iq type='get' id='{id}' to='{to_full}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let needle = format!("id='{id}'");
        loop {
            assert!(
                Instant::now() < deadline,
                "{to_full} never became reachable from {from_full}"
            );
            if let Some(t) = to.poll_for(&needle, step) {
                to_read += &t;
                to_read += &to.expect("</iq>");
                to.send(&format!("<iq type='result' id='{id}' to='{from_full}'/>"));
                from_read += &from.expect(&needle);
                from_read += &from.expect("/>");
                return (from_read, to_read);
            }
            if let Some(t) = from.poll_for(&needle, step) {
                // Not known there yet: an error. Again.
                from_read += &t;
                from_read += &from.expect("</iq>");
                break;
            }
        }
    }
    unreachable!()
}

#[test]
fn xmpp_users_on_different_nodes_see_each_other_chat_and_conflict() {
    let Some(pg) = pg() else { return };
    let Some(nats) = Nats::start() else { return };
    let store = pg.database();
    let a = node(&store, &nats.url(), "a");
    let b = node(&store, &nats.url(), "b");
    let mut c = node(&store, &nats.url(), "c");
    for u in ["alice", "bob", "carol"] {
        a.ctl_ok(&["register", u, "localhost", "secret"]);
    }
    let (alice_jid, bob_jid) = ("alice@localhost/pc", "bob@localhost/phone");
    let mut alice = Raw::login(a.addrs["c2s"][0], "alice", "secret", "pc");
    let mut bob = Raw::login(b.addrs["c2s"][0], "bob", "secret", "phone");
    alice.available();
    bob.available();
    reach(&mut alice, alice_jid, &mut bob, bob_jid);

    // Subscriptions both ways, across nodes; each approval brings the
    // contact's presence from the other node.
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    bob.expect("type='subscribe'");
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    alice.expect("type='subscribed'");
    alice.expect(&format!("from='{bob_jid}'"));
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    alice.expect("type='subscribe'");
    alice.send("<presence to='bob@localhost' type='subscribed'/>");
    bob.expect("type='subscribed'");
    bob.expect(&format!("from='{alice_jid}'"));
    // A presence change reaches the contact on the other node.
    bob.send("<presence><show>away</show><status>on B</status></presence>");
    let p = alice.expect("<status>on B</status>");
    assert!(p.contains(&format!("from='{bob_jid}'")), "{p}");

    // Chat both ways, to the full and to the bare JID.
    alice.send(&format!(
        "<message type='chat' id='m1' to='{bob_jid}'><body>one to B</body></message>"
    ));
    bob.expect("one to B");
    bob.send(&format!(
        "<message type='chat' id='m2' to='{alice_jid}'><body>one to A</body></message>"
    ));
    alice.expect("one to A");
    alice.send(
        "<message type='chat' id='m3' to='bob@localhost'><body>to the bare JID</body></message>",
    );
    let m = bob.expect("to the bare JID");
    assert!(m.contains("from='alice@localhost/pc'"), "{m}");
    // Each once: pings behind them in the same order find no copy.
    let (on_a, on_b) = reach(&mut alice, alice_jid, &mut bob, bob_jid);
    assert!(
        !on_b.contains("one to B") && !on_b.contains("to the bare JID"),
        "{on_b}"
    );
    assert!(!on_a.contains("one to A"), "{on_a}");
    let (on_b, on_a) = reach(&mut bob, bob_jid, &mut alice, alice_jid);
    assert!(!on_a.contains("one to A"), "{on_a}");
    assert!(!on_b.contains("one to B"), "{on_b}");

    // Carol is online nowhere: kept, and delivered when she logs in on C.
    alice.send("<message type='chat' id='m4' to='carol@localhost'><body>for carol, stored</body></message>");
    // A roster change is answered after a store barrier on A, which the
    // offline message (written before it) has passed too.
    alice.send(
        "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>\
         <item jid='dave@localhost'/></query></iq>",
    );
    let r = alice.expect("id='r1'");
    assert!(
        !r.contains("for carol"),
        "no error for the stored message: {r}"
    );
    let mut carol = Raw::login(c.addrs["c2s"][0], "carol", "secret", "tablet");
    carol.send("<presence/>");
    let m = carol.expect("for carol, stored");
    assert!(m.contains("from='alice@localhost/pc'"), "{m}");

    // Bob binds the same resource on C: the session on B ends with a
    // conflict, and his full JID leads to C from then on.
    reach(&mut carol, "carol@localhost/tablet", &mut bob, bob_jid);
    let mut bob2 = Raw::login(c.addrs["c2s"][0], "bob", "secret", "phone");
    let bye = bob.read_to_close();
    assert!(
        bye.contains("<conflict"),
        "B's stream ended with a conflict: {bye}"
    );
    bob2.available();
    reach(&mut alice, alice_jid, &mut bob2, bob_jid);
    alice.send(&format!(
        "<message type='chat' id='m5' to='{bob_jid}'><body>to the phone on C</body></message>"
    ));
    bob2.expect("to the phone on C");

    // C dies and comes back: the others forget its sessions (its hello says
    // it restarted); Bob's contact hears he is gone, and he is offline.
    c.crash_and_restart();
    let mut seen = alice.expect("type='unavailable'");
    seen += &alice.expect("/>");
    let last = seen.rsplit("<presence").next().unwrap();
    assert!(last.contains(&format!("from='{bob_jid}'")), "{seen}");
    alice.send(
        "<message type='chat' id='m6' to='bob@localhost'><body>while C was down</body></message>",
    );
    alice.send(
        "<iq type='set' id='r2'><query xmlns='jabber:iq:roster'>\
         <item jid='erin@localhost'/></query></iq>",
    );
    alice.expect("id='r2'");
    let mut bob3 = Raw::login(b.addrs["c2s"][0], "bob", "secret", "phone");
    bob3.send("<presence/>");
    bob3.expect("while C was down");
    drop((bob2, carol));
}
