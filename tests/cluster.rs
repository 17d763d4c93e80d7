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
