//! MQTT session rules at the byte level: anonymous access, slow consumers,
//! 3.1.1 token ends, delayed wills and session expiry.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mqtt_raw::{connect_packet, RawClient};
use common::Petrel;
use petrel::mqtt::codec::{
    self, reason, LastWill, Packet, Properties, Publish, QoS, Subscribe, SubscriptionOptions,
    Version,
};

fn subscribe(c: &mut RawClient, filter: &str, qos: QoS) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(
            filter.to_string(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    }));
    match c.recv() {
        Some(Packet::SubAck(s)) => assert!(s.reason_codes[0] < 0x80, "{s:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn publish(topic: &str, payload: &str) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        payload: Bytes::from(payload.to_string()),
        ..Default::default()
    })
}

fn login(p: &Petrel, id: &str, token: &str, tweak: impl FnOnce(&mut codec::Connect)) -> RawClient {
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    let mut pk = connect_packet(id, Some("X-OAUTH2"), Some(token.as_bytes()));
    if let Packet::Connect(cn) = &mut pk {
        tweak(cn);
    }
    c.send(&pk);
    match c.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

/// CONNECT options of a persistent session: no Clean Start, `secs` of
/// Session Expiry Interval.
fn keep(secs: u32) -> impl Fn(&mut codec::Connect) + Copy {
    move |c: &mut codec::Connect| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(secs);
    }
}

/// A QoS 0 will on `topic` with `delay` seconds of Will Delay Interval.
fn will(topic: &str, delay: u32) -> Option<Box<LastWill>> {
    Some(Box::new(LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        },
    }))
}

/// An acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP body) with `code`.
fn ack(packet_id: u16, code: u8) -> codec::Ack {
    codec::Ack {
        packet_id,
        reason_code: code,
        properties: Properties::default(),
    }
}

/// Sends DISCONNECT 0x00 and waits until the server has closed: its
/// connection takes no more messages after that.
fn leave(c: &mut RawClient) {
    c.send(&Packet::Disconnect(codec::Disconnect {
        reason_code: 0,
        properties: Properties::default(),
    }));
    assert!(c.recv_then_closed().is_empty());
}

#[test]
fn anonymous_clients_only_when_allowed() {
    let p = Petrel::start("").with_user_and_client();
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet("anon", None, None));
    match c.recv_then_closed().as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.reason_code, reason::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
    drop(p);
    let p = Petrel::start("mqtt_allow_anonymous = true").with_user_and_client();
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet("anon", None, None));
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
    // It shares the first host's topics with logged-in users.
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut alice = login(&p, "alice-dev", &token, |_| {});
    subscribe(&mut alice, "open/#", QoS::AtMostOnce);
    c.send(&publish("open/1", "hi"));
    match alice.recv() {
        Some(Packet::Publish(m)) => assert_eq!(&m.payload[..], b"hi"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_slow_subscriber_loses_qos0_past_its_queue_and_stalls_nobody() {
    // Flow control holds the publisher back while the slow subscriber's
    // queue is full; the slow one, draining nothing, is cut off after
    // slow_consumer_timeout (short here), and what was queued for it at
    // QoS 0 goes with it.
    let p = Petrel::start("mqtt_max_queue = 20\nslow_consumer_timeout = 1").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    // The slow one subscribes and then never reads.
    let mut slow = login(&p, "slow", &token, |_| {});
    subscribe(&mut slow, "firehose", QoS::AtMostOnce);
    let mut fast = login(&p, "fast", &token, |_| {});
    subscribe(&mut fast, "firehose", QoS::AtMostOnce);
    let mut publ = login(&p, "pub", &token, |_| {});
    let payload = "x".repeat(60_000);
    let n = 400;
    // In rounds the fast subscriber keeps up with (its queue bound is 20 too).
    let start = Instant::now();
    for _ in 0..n / 10 {
        for _ in 0..10 {
            publ.send(&publish("firehose", &payload));
        }
        for _ in 0..10 {
            match fast.recv() {
                Some(Packet::Publish(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60));
    }
    publ.send(&Packet::PingReq);
    assert_eq!(
        publ.recv(),
        Some(Packet::PingResp),
        "the publisher was not stalled"
    );
    let mut slow_got = 0;
    slow.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    loop {
        use std::io::Read;
        let mut b = vec![0u8; 1 << 20];
        match slow.stream.read(&mut b) {
            Ok(0) => break,
            Ok(k) => slow_got += k,
            Err(_) => break,
        }
    }
    let total = n * payload.len();
    assert!(
        slow_got < total,
        "the slow subscriber got everything ({slow_got} of {total} bytes): nothing was bounded"
    );
    assert!(slow_got > 0);
}

#[test]
fn a_311_session_is_closed_when_its_token_is_revoked() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut c = RawClient::connect(p.mqtt(), Version::V311);
    let mut pk = connect_packet("old-device", None, None);
    if let Packet::Connect(cn) = &mut pk {
        cn.version = Version::V311;
        cn.username = Some("alice".into());
        cn.password = Some(Bytes::from(token.clone()));
    }
    c.send(&pk);
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
    p.ctl_ok(&["oauth_revoke_token", &token]);
    let start = Instant::now();
    assert!(
        c.recv_then_closed().is_empty(),
        "3.1.1 has no server DISCONNECT: just closed"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_delayed_will_waits_and_is_cancelled_by_a_resume() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut watcher = login(&p, "watcher", &token, |_| {});
    subscribe(&mut watcher, "wills/#", QoS::AtMostOnce);
    let with_will = |topic: &str| {
        let topic = topic.to_string();
        move |c: &mut codec::Connect| {
            c.clean_start = false;
            c.properties.session_expiry_interval = Some(60);
            let props = Properties {
                will_delay_interval: Some(2),
                ..Properties::default()
            };
            c.will = Some(Box::new(LastWill {
                topic,
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: props,
            }));
        }
    };
    // Dropped, never back: the will comes after about 2 s, not at once.
    let dropped = login(&p, "d1", &token, with_will("wills/d1"));
    let start = Instant::now();
    drop(dropped);
    match watcher.recv() {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "wills/d1"),
        other => panic!("{other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "will sent after {waited:?}, before its delay"
    );
    // Dropped and resumed within the delay: no will.
    let dropped = login(&p, "d2", &token, with_will("wills/d2"));
    drop(dropped);
    std::thread::sleep(Duration::from_millis(300));
    let _back = login(&p, "d2", &token, with_will("wills/d2"));
    watcher.send(&Packet::PingReq);
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        match watcher.recv() {
            Some(Packet::PingResp) => {
                std::thread::sleep(Duration::from_millis(500));
                watcher.send(&Packet::PingReq);
            }
            Some(Packet::Publish(m)) => panic!("will of a resumed session was sent: {m:?}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_session_expires_after_its_interval() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let short = keep(1);
    let mut c = login(&p, "brief", &token, short);
    subscribe(&mut c, "x", QoS::AtLeastOnce);
    c.send(&Packet::Disconnect(codec::Disconnect {
        reason_code: 0,
        properties: Properties::default(),
    }));
    drop(c);
    // Within the interval the session is there…
    let mut again = RawClient::connect(p.mqtt(), Version::V5);
    let mut pk = connect_packet("brief", Some("X-OAUTH2"), Some(token.as_bytes()));
    if let Packet::Connect(cn) = &mut pk {
        short(cn);
    }
    again.send(&pk);
    assert!(matches!(again.recv(), Some(Packet::ConnAck(a)) if a.session_present));
    again.send(&Packet::Disconnect(codec::Disconnect {
        reason_code: 0,
        properties: Properties::default(),
    }));
    drop(again);
    // … and after it, gone.
    std::thread::sleep(Duration::from_millis(2500));
    let mut late = RawClient::connect(p.mqtt(), Version::V5);
    late.send(&pk);
    assert!(matches!(late.recv(), Some(Packet::ConnAck(a)) if !a.session_present));
}

#[test]
fn a_silent_client_is_cut_after_one_and_a_half_keep_alives() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut c = login(&p, "sleepy", &token, |c| c.keep_alive = 1);
    let start = Instant::now();
    match c.recv_then_closed().as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, reason::KEEP_ALIVE_TIMEOUT),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "cut after {waited:?}, before 1.5 x keep-alive"
    );
    // A client that pings in time stays.
    let mut awake = login(&p, "awake", &token, |c| c.keep_alive = 1);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(700));
        awake.send(&Packet::PingReq);
        assert_eq!(awake.recv(), Some(Packet::PingResp));
    }
}

#[test]
fn shutdown_says_goodbye_with_0x8b() {
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut c = login(&p, "until-the-end", &token, |_| {});
    let stopper = std::thread::spawn(move || {
        let code = p.stop();
        (p, code)
    });
    match c.recv_then_closed().as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, reason::SERVER_SHUTTING_DOWN),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    let (_p, code) = stopper.join().unwrap();
    assert_eq!(code, Some(0));
}

#[test]
fn a_qos1_flood_into_a_slow_reader_loses_nothing() {
    let p = Petrel::start("mqtt_max_queue = 20").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut sub = login(&p, "slow-but-steady", &token, |_| {});
    subscribe(&mut sub, "orders", QoS::AtLeastOnce);
    let mut publ = login(&p, "flood", &token, |_| {});
    let n: u16 = 600;
    let sender = std::thread::spawn(move || {
        for i in 1..=n {
            publ.send(&Packet::Publish(Publish {
                topic: "orders".into(),
                qos: QoS::AtLeastOnce,
                packet_id: i,
                payload: Bytes::from(format!("{i}")),
                ..Default::default()
            }));
        }
        // Every message is acknowledged, eventually.
        let mut acked = 0;
        while acked < n {
            match publ.recv() {
                Some(Packet::PubAck(_)) => acked += 1,
                other => panic!("{other:?}"),
            }
        }
        acked
    });
    let mut got = std::collections::BTreeSet::new();
    while got.len() < n as usize {
        match sub.recv() {
            Some(Packet::Publish(m)) => {
                got.insert(
                    String::from_utf8(m.payload.to_vec())
                        .unwrap()
                        .parse::<u16>()
                        .unwrap(),
                );
                sub.send(&Packet::PubAck(ack(m.packet_id, 0)));
                if got.len() % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        got.len(),
        n as usize,
        "every acknowledged QoS 1 message arrived"
    );
    assert_eq!(sender.join().unwrap(), n);
}

#[test]
fn a_queued_message_goes_out_with_the_expiry_it_has_left_or_not_at_all() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let keep = keep(60);
    let mut sub = login(&p, "sleeper", &token, keep);
    subscribe(&mut sub, "exp/#", QoS::AtLeastOnce);
    // Closed by the server: its connection no longer takes messages, so
    // what follows waits in the session.
    leave(&mut sub);
    let mut publisher = login(&p, "pub", &token, |_| {});
    for (topic, expiry, id) in [("exp/long", 30, 1), ("exp/short", 1, 2)] {
        publisher.send(&Packet::Publish(Publish {
            topic: topic.into(),
            qos: QoS::AtLeastOnce,
            packet_id: id,
            properties: Properties {
                message_expiry_interval: Some(expiry),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"m"),
            ..Default::default()
        }));
        assert!(matches!(publisher.recv(), Some(Packet::PubAck(_))));
    }
    // Both wait in the session for more than two seconds: the short one
    // expires there, the long one leaves with what it has left.
    std::thread::sleep(Duration::from_millis(2200));
    let mut back = login(&p, "sleeper", &token, keep);
    match back.recv() {
        Some(Packet::Publish(m)) => {
            assert_eq!(m.topic, "exp/long");
            let left = m.properties.message_expiry_interval.expect("expiry kept");
            // At least 2.2 s waited; the session clock (read as of its last
            // sweep) may lag a busy machine by a second.
            assert!((24..=29).contains(&left), "expiry left {left}, sent 30");
        }
        other => panic!("expected the long-lived message, got {other:?}"),
    }
    back.send(&Packet::PingReq);
    assert!(
        matches!(back.recv(), Some(Packet::PingResp)),
        "the expired message was delivered"
    );
}

#[test]
fn a_restored_session_still_expires_on_time() {
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    // Long enough for a stop and a start on a loaded 2-core CI machine (3 s
    // was not), short enough to wait out.
    let short = keep(8);
    let mut c = login(&p, "restored", &token, short);
    subscribe(&mut c, "r", QoS::AtLeastOnce);
    leave(&mut c);
    assert_eq!(p.stop(), Some(0));
    p.spawn();
    let resume = |p: &Petrel| {
        let mut c = RawClient::connect(p.mqtt(), Version::V5);
        let mut pk = connect_packet("restored", Some("X-OAUTH2"), Some(token.as_bytes()));
        if let Packet::Connect(cn) = &mut pk {
            short(cn);
        }
        c.send(&pk);
        match c.recv() {
            Some(Packet::ConnAck(a)) => {
                c.send(&Packet::Disconnect(codec::Disconnect {
                    reason_code: 0,
                    properties: Properties::default(),
                }));
                assert!(c.recv_then_closed().is_empty());
                a.session_present
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    };
    // Back from the store within its interval (the resume restarts it)…
    assert!(resume(&p), "the session did not survive the restart");
    assert_eq!(p.stop(), Some(0));
    p.spawn();
    // … and ended by the sweep once the interval has passed after a restart.
    std::thread::sleep(Duration::from_millis(9000));
    assert!(!resume(&p), "the restored session outlived its interval");
}

#[test]
fn a_clean_start_takeover_ends_the_session_and_sends_its_delayed_will() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut watcher = login(&p, "watcher", &token, |_| {});
    subscribe(&mut watcher, "wills/#", QoS::AtMostOnce);
    let _old = login(&p, "phone", &token, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
        c.will = will("wills/phone", 300);
    });
    // Clean Start on the same client id: the old session ends now, and with
    // it the wait for its will (recv gives up after 10 s, not 300).
    let _new = login(&p, "phone", &token, |c| c.clean_start = true);
    match watcher.recv() {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "wills/phone"),
        other => panic!("expected the will, got {other:?}"),
    }
}

#[test]
fn a_qos2_message_to_a_persistent_session_is_delivered_once_across_crashes() {
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let keep = keep(600);
    let mut dev = login(&p, "dev", &token, keep);
    subscribe(&mut dev, "cmd", QoS::ExactlyOnce);
    let mut ctl = login(&p, "ctl", &token, |_| {});
    ctl.send(&Packet::Publish(Publish {
        topic: "cmd".into(),
        qos: QoS::ExactlyOnce,
        packet_id: 5,
        payload: Bytes::from_static(b"open valve"),
        ..Default::default()
    }));
    assert!(matches!(ctl.recv(), Some(Packet::PubRec(_))));
    // Sent to the device, not yet acknowledged: after a crash it comes again
    // with the same packet id and DUP, so the device knows it is not new.
    let first = match dev.recv() {
        Some(Packet::Publish(m)) => m,
        other => panic!("expected the command, got {other:?}"),
    };
    assert_eq!(first.qos, QoS::ExactlyOnce);
    p.crash_and_restart();
    let mut dev = login(&p, "dev", &token, keep);
    match dev.recv() {
        Some(Packet::Publish(m)) => {
            assert_eq!(m.packet_id, first.packet_id);
            assert!(m.dup, "a resent QoS 2 message must have DUP");
            assert_eq!(&m.payload[..], b"open valve");
        }
        other => panic!("expected the command again, got {other:?}"),
    }
    // Received (PUBREC): after the next crash only the PUBREL is owed.
    dev.send(&Packet::PubRec(ack(first.packet_id, 0)));
    assert!(matches!(dev.recv(), Some(Packet::PubRel(r)) if r.packet_id == first.packet_id));
    p.crash_and_restart();
    let mut dev = login(&p, "dev", &token, keep);
    match dev.recv() {
        Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, first.packet_id),
        other => panic!("expected only the PUBREL, got {other:?}"),
    }
    dev.send(&Packet::PubComp(ack(first.packet_id, 0)));
    dev.send(&Packet::PingReq);
    assert!(matches!(dev.recv(), Some(Packet::PingResp)));
    // Complete: the message never comes back. (The record's deletion is not
    // flushed before a crash, so the PUBREL may be repeated: harmless, the
    // client answers it as done.)
    p.crash_and_restart();
    let mut dev = login(&p, "dev", &token, keep);
    dev.send(&Packet::PingReq);
    loop {
        match dev.recv() {
            Some(Packet::PingResp) => break,
            Some(Packet::PubRel(r)) if r.packet_id == first.packet_id => {
                dev.send(&Packet::PubComp(ack(
                    r.packet_id,
                    reason::PACKET_IDENTIFIER_NOT_FOUND,
                )));
            }
            other => panic!("a completed QoS 2 message came back: {other:?}"),
        }
    }
}

#[test]
fn a_qos2_publish_resent_after_a_crash_is_not_routed_twice() {
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let keep = keep(600);
    let mut sub = login(&p, "listener", &token, keep);
    subscribe(&mut sub, "once", QoS::AtLeastOnce);
    leave(&mut sub);
    let command = |dup: bool| {
        Packet::Publish(Publish {
            topic: "once".into(),
            qos: QoS::ExactlyOnce,
            packet_id: 9,
            dup,
            payload: Bytes::from_static(b"pay 10 euro"),
            ..Default::default()
        })
    };
    let mut publisher = login(&p, "payer", &token, keep);
    publisher.send(&command(false));
    assert!(matches!(publisher.recv(), Some(Packet::PubRec(r)) if r.reason_code < 0x80));
    // The PUBREC came, then the server died before the PUBREL: the client
    // may re-send the PUBLISH (it keeps its state), and the server must know
    // the id from before the crash.
    p.crash_and_restart();
    let mut publisher = login(&p, "payer", &token, keep);
    publisher.send(&command(true));
    assert!(matches!(publisher.recv(), Some(Packet::PubRec(r)) if r.packet_id == 9));
    publisher.send(&Packet::PubRel(ack(9, 0)));
    match publisher.recv() {
        Some(Packet::PubComp(c)) => assert_eq!(c.reason_code, reason::SUCCESS),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The listener gets the payment once.
    let mut sub = login(&p, "listener", &token, keep);
    match sub.recv() {
        Some(Packet::Publish(m)) => {
            assert_eq!(&m.payload[..], b"pay 10 euro");
            sub.send(&Packet::PubAck(ack(m.packet_id, 0)));
        }
        other => panic!("expected the message, got {other:?}"),
    }
    sub.send(&Packet::PingReq);
    assert!(
        matches!(sub.recv(), Some(Packet::PingResp)),
        "the QoS 2 message was routed twice"
    );
}

#[test]
fn a_session_whose_connection_ends_in_the_connect_segment_still_expires() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut pk = connect_packet("blink", Some("X-OAUTH2"), Some(token.as_bytes()));
    if let Packet::Connect(c) = &mut pk {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(1);
    }
    // CONNECT and DISCONNECT in one write: the session is live and closed
    // before the connection's live loop ever runs.
    let mut bytes = bytes::BytesMut::new();
    codec::encode(&pk, Version::V5, &mut bytes).unwrap();
    let bye = Packet::Disconnect(codec::Disconnect {
        reason_code: 0,
        properties: Properties::default(),
    });
    codec::encode(&bye, Version::V5, &mut bytes).unwrap();
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send_raw(&bytes);
    let got = c.recv_then_closed();
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.reason_code == 0),
        "{got:?}"
    );
    // Offline, its one-second interval runs out like any other's.
    std::thread::sleep(Duration::from_millis(2500));
    let mut again = RawClient::connect(p.mqtt(), Version::V5);
    again.send(&pk);
    assert!(
        matches!(again.recv(), Some(Packet::ConnAck(a)) if !a.session_present),
        "the session outlived its expiry interval"
    );
}

#[test]
fn an_offline_session_replaced_by_clean_start_sends_its_delayed_will_at_once() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut watcher = login(&p, "watcher", &token, |_| {});
    subscribe(&mut watcher, "wills/#", QoS::AtMostOnce);
    let old = login(&p, "tablet", &token, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(600);
        c.will = will("wills/tablet", 300);
    });
    // Gone without DISCONNECT: the will waits for its 300 s delay …
    drop(old);
    std::thread::sleep(Duration::from_millis(300));
    // … until a Clean Start connection ends the session (recv gives up
    // after 10 s, long before the delay).
    let _new = login(&p, "tablet", &token, |c| c.clean_start = true);
    match watcher.recv() {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "wills/tablet"),
        other => panic!("expected the will, got {other:?}"),
    }
}

#[test]
fn a_shared_subscription_splits_the_messages_between_its_members() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut publisher = login(&p, "pub", &token, |_| {});
    // A retained job is not sent to a new shared subscription (4.8.2).
    publisher.send(&Packet::Publish(Publish {
        topic: "jobs/old".into(),
        retain: true,
        payload: Bytes::from_static(b"stale"),
        ..Default::default()
    }));
    // Handled before the workers subscribe (a QoS 0 publish has no ack of
    // its own: the ping behind it on the same connection stands in).
    publisher.send(&Packet::PingReq);
    assert_eq!(publisher.recv(), Some(Packet::PingResp));
    let mut workers: Vec<RawClient> = (0..2)
        .map(|i| {
            let mut w = login(&p, &format!("worker{i}"), &token, |_| {});
            subscribe(&mut w, "$share/pool/jobs/#", QoS::AtLeastOnce);
            w
        })
        .collect();
    for n in 0..10u8 {
        publisher.send(&Packet::Publish(Publish {
            topic: "jobs/new".into(),
            qos: QoS::AtLeastOnce,
            packet_id: u16::from(n) + 1,
            payload: Bytes::from(vec![n]),
            ..Default::default()
        }));
        assert!(matches!(publisher.recv(), Some(Packet::PubAck(_))));
    }
    // Both members connected: they take turns, five jobs each.
    let mut seen = Vec::new();
    for w in &mut workers {
        for _ in 0..5 {
            match w.recv() {
                Some(Packet::Publish(m)) => {
                    assert_eq!(m.topic, "jobs/new", "a retained message reached the group");
                    seen.push(m.payload[0]);
                    w.send(&Packet::PubAck(ack(m.packet_id, 0)));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<u8>>(), "each job exactly once");
    // No Local on a shared subscription is a protocol error (3.8.3.1).
    let mut bad = login(&p, "bad", &token, |_| {});
    bad.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![(
            "$share/pool/jobs/#".to_string(),
            SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: true,
                ..Default::default()
            },
        )],
    }));
    assert!(matches!(
        bad.recv_then_closed().first(),
        Some(Packet::Disconnect(d)) if d.reason_code == reason::PROTOCOL_ERROR
    ));
}
