//! The PostgreSQL store (`store = "postgres://…"`) against a real
//! PostgreSQL server started once for this test binary: the store's
//! contract (ordered scans, prefix deletes, reads after writes, what a
//! barrier committed seen by a second store), the schema migrated once by
//! two stores opening together, and a server on it keeping through kill -9
//! what it acknowledged: an issued token, a retained message, a QoS 1
//! message queued for a persistent session, an offline chat message;
//! `petrel ctl` against the same database.

mod common;

use common::mqtt_raw::{connect_packet, RawClient};
use common::postgres::pg;
use common::Petrel;
use petrel::mqtt::codec::{self, Packet, Publish, QoS, SubscriptionOptions, Version};
use petrel::store::{KeyRange, Store, StoreKind, Tree};

fn open(url: &str) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let kind = StoreKind::parse(url).unwrap();
    Store::open(&kind, dir.path()).unwrap()
}

#[test]
fn the_store_contract_holds_on_postgres() {
    let Some(pg) = pg() else { return };
    let url = pg.database();
    // Two stores opening at once (two nodes): the schema is made once.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| open(&url));
        let b = s.spawn(|| open(&url));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.put(Tree::TokenExpiry, vec![0, 2], b"".to_vec());
    a.put(Tree::TokenExpiry, vec![0, 1], b"".to_vec());
    a.put(Tree::TokenExpiry, vec![0, 9], b"".to_vec());
    a.put(Tree::TokenExpiry, vec![0xFF, 0xFF], b"".to_vec());
    a.put(Tree::Users, "a@x", "1");
    a.put(Tree::Users, "b@x", "2");
    a.put(Tree::Users, "a@x", "3");
    // Reads see the writes queued before them (in the open transaction).
    assert_eq!(
        a.get_blocking(Tree::Users, b"a@x").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    // Committed by the barrier (each batch is a transaction): the other
    // store, another connection, sees it.
    a.barrier_blocking().unwrap();
    assert_eq!(
        b.get_blocking(Tree::Users, b"a@x").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(
            a.scan_below_blocking(Tree::TokenExpiry, &[0, 5], 10)
                .unwrap()
        ),
        [vec![0, 1], vec![0, 2]]
    );
    let range = |from: &[u8], to: &[u8], limit, reverse| {
        keys(
            a.scan_range_blocking(
                Tree::TokenExpiry,
                KeyRange {
                    from: from.to_vec(),
                    to: to.to_vec(),
                    limit,
                    reverse,
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(range(&[0, 1], &[0, 9], 10, false), [vec![0, 1], vec![0, 2]]);
    assert_eq!(range(&[0], &[1], 2, true), [vec![0, 9], vec![0, 2]]);
    // An all-0xFF prefix has no upper bound.
    assert_eq!(
        keys(a.scan_prefix_blocking(Tree::TokenExpiry, &[0xFF]).unwrap()),
        [vec![0xFF, 0xFF]]
    );
    assert_eq!(a.len_blocking(Tree::TokenExpiry).unwrap(), 4);
    a.put(Tree::Roster, "o\0a", "x");
    a.put(Tree::Roster, "o\0b", "y");
    a.put(Tree::Roster, "p\0a", "z");
    assert_eq!(
        a.scan_prefix_blocking(Tree::Roster, b"o\0").unwrap(),
        vec![
            (b"o\0a".to_vec(), b"x".to_vec()),
            (b"o\0b".to_vec(), b"y".to_vec())
        ]
    );
    a.delete_prefix(Tree::Roster, "o\0");
    a.delete(Tree::Users, "b@x");
    a.barrier_blocking().unwrap();
    assert_eq!(
        keys(b.scan_prefix_blocking(Tree::Roster, b"").unwrap()),
        [b"p\0a".to_vec()]
    );
    assert_eq!(b.get_blocking(Tree::Users, b"b@x").unwrap(), None);
    // Trees are apart.
    assert_eq!(b.len_blocking(Tree::Clients).unwrap(), 0);

    // A write PostgreSQL refuses fails the barrier, and every later one:
    // nothing written after a lost write is ever reported durable.
    pg.sql(&url, "DROP TABLE petrel_meta");
    b.put(Tree::Meta, "k", "v");
    b.put(Tree::Users, "c@x", "4");
    assert!(b.barrier_blocking().is_err());
    b.put(Tree::Users, "d@x", "5");
    assert!(b.barrier_blocking().is_err());
    // The other store (another node) goes on.
    a.put(Tree::Users, "e@x", "6");
    a.barrier_blocking().unwrap();
}

#[test]
fn reads_run_beside_writes_and_see_what_came_before_them() {
    let Some(pg) = pg() else { return };
    let url = pg.database();
    for readers in [4, 0] {
        let dir = tempfile::tempdir().unwrap();
        let kind = StoreKind::Postgres(petrel::store::PgUrl(url.clone(), readers));
        let s = Store::open(&kind, dir.path()).unwrap();
        // Eight threads at once, each reading back what it just wrote (not
        // yet made durable by a barrier of its own): on the reader
        // connections, beside the writes of the others.
        std::thread::scope(|sc| {
            for t in 0..8 {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..40 {
                        let k = format!("r{readers}-{t}-{i}");
                        s.put(Tree::Users, k.clone(), i.to_string());
                        assert_eq!(
                            s.get_blocking(Tree::Users, k.as_bytes()).unwrap(),
                            Some(i.to_string().into_bytes()),
                            "{k}"
                        );
                        let prefix = format!("r{readers}-{t}-");
                        assert_eq!(
                            s.scan_prefix_blocking(Tree::Users, prefix.as_bytes())
                                .unwrap()
                                .len(),
                            i + 1
                        );
                    }
                });
            }
        });
        let prefix = format!("r{readers}-");
        assert_eq!(
            s.scan_prefix_blocking(Tree::Users, prefix.as_bytes())
                .unwrap()
                .len(),
            320
        );
    }
}

fn login(p: &Petrel, id: &str, token: &str, keep: bool) -> RawClient {
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    let mut pk = connect_packet(id, Some("X-OAUTH2"), Some(token.as_bytes()));
    if let Packet::Connect(cn) = &mut pk {
        if keep {
            cn.clean_start = false;
            cn.properties.session_expiry_interval = Some(600);
        }
    }
    c.send(&pk);
    match c.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, 0, "{a:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

fn publish(c: &mut RawClient, topic: &str, payload: &'static [u8], retain: bool, id: u16) {
    c.send(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        retain,
        topic: topic.into(),
        packet_id: id,
        payload: bytes::Bytes::from_static(payload),
        ..Publish::default()
    }));
    match c.recv() {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[test]
fn a_server_on_postgres_keeps_what_it_acknowledged_through_kill_9() {
    let Some(pg) = pg() else { return };
    let url = pg.database();
    let mut p = Petrel::start(&format!("store = {url:?}\n")).with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    // A token issued over HTTP (the password grant) and one by ctl.
    let (status, grant) = common::password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(status, 200, "{grant}");
    let token = grant["access_token"].as_str().unwrap().to_string();
    let bob = p.token("bob@localhost", 3600, "sasl_auth");
    // bob's persistent session subscribes, then goes away.
    let mut c = login(&p, "bob-phone", &bob, true);
    c.send(&Packet::Subscribe(codec::Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: vec![(
            "news/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    }));
    assert!(matches!(c.recv(), Some(Packet::SubAck(_))));
    drop(c);
    // alice: a retained message, and a message for bob's absent session.
    let mut a = login(&p, "alice-1", &token, false);
    publish(&mut a, "state/door", b"open", true, 1);
    // Until bob's session is seen detached, the message may reach it live.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.ctl_ok(&["connected_users"]).contains("bob-phone") {
        assert!(std::time::Instant::now() < deadline, "bob never left");
        std::thread::yield_now();
    }
    publish(&mut a, "news/today", b"extra", false, 2);
    drop(a);
    p.crash_and_restart();

    // Everything acknowledged came back from PostgreSQL.
    let mut a = login(&p, "alice-2", &token, false);
    a.send(&Packet::Subscribe(codec::Subscribe {
        packet_id: 1,
        properties: Default::default(),
        filters: vec![("state/#".into(), Default::default())],
    }));
    let mut got_retained = false;
    for _ in 0..2 {
        match a.recv() {
            Some(Packet::Publish(m)) => {
                assert_eq!(
                    (m.topic.as_str(), &m.payload[..]),
                    ("state/door", &b"open"[..])
                );
                got_retained = true;
            }
            Some(Packet::SubAck(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_retained);
    let mut b = login(&p, "bob-phone", &bob, true);
    match b.recv() {
        Some(Packet::Publish(m)) => {
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                ("news/today", &b"extra"[..])
            )
        }
        other => panic!("expected the queued message, got {other:?}"),
    }
    // ctl works against the same database.
    let users = p.ctl_ok(&["registered_users", "localhost"]);
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
}
