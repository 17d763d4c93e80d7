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
    Petrel::start(&format!(
        "store = {store:?}\n[cluster]\nnats = {nats:?}\nnode = {name:?}\n"
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
