//! The broker with rumqttc (v5 and 3.1.1): pub/sub at every QoS, retained
//! messages across a restart, wills; session takeover and resume at the byte
//! level.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::mqtt_raw::{connect_packet, RawClient};
use common::Petrel;
use petrel::mqtt::codec::{reason, Packet, Version};
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet as P5};
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::{Client as Client5, Event as Event5, MqttOptions as Options5};

/// A v5 client logged in with X-OAUTH2; its incoming packets arrive on the channel.
fn v5_client(
    p: &Petrel,
    id: &str,
    token: &str,
    tweak: impl FnOnce(&mut Options5),
) -> (Client5, mpsc::Receiver<P5>) {
    let mut o = Options5::new(id, "127.0.0.1", p.mqtt().port());
    o.set_outgoing_inflight_upper_limit(32);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_authentication_method(Some("X-OAUTH2".into()));
    o.set_authentication_data(Some(bytes::Bytes::from(token.to_string())));
    tweak(&mut o);
    let (client, mut conn) = Client5::new(o, 16);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event5::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx)
}

/// Waits for the first packet matching `pick`.
fn wait_for<T>(rx: &mpsc::Receiver<P5>, mut pick: impl FnMut(&P5) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let p = rx
            .recv_timeout(left)
            .expect("timed out waiting for a packet");
        if let Some(t) = pick(&p) {
            return t;
        }
    }
}

fn publishes(rx: &mpsc::Receiver<P5>, n: usize) -> Vec<(String, String, u8, bool)> {
    (0..n)
        .map(|_| {
            wait_for(rx, |p| match p {
                P5::Publish(m) => Some((
                    String::from_utf8_lossy(&m.topic).into_owned(),
                    String::from_utf8_lossy(&m.payload).into_owned(),
                    m.qos as u8,
                    m.retain,
                )),
                _ => None,
            })
        })
        .collect()
}

fn connack(rx: &mpsc::Receiver<P5>) -> (u8, bool) {
    wait_for(rx, |p| match p {
        P5::ConnAck(c) => Some((c.code as u8, c.session_present)),
        _ => None,
    })
}

fn suback(rx: &mpsc::Receiver<P5>) {
    wait_for(rx, |p| matches!(p, P5::SubAck(_)).then_some(()));
}

#[test]
fn pubsub_at_every_qos_between_v5_and_v311_clients() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let (sub, rx) = v5_client(&p, "sub5", &token, |_| {});
    assert_eq!(connack(&rx).0, 0);
    sub.subscribe("room/#", Q5::ExactlyOnce).unwrap();
    suback(&rx);

    // A 3.1.1 publisher with the token as its password.
    let mut o = rumqttc::MqttOptions::new("pub311", "127.0.0.1", p.mqtt().port());
    o.set_credentials("alice", token.as_str());
    o.set_inflight(32);
    let (publ, mut conn) = rumqttc::Client::new(o, 16);
    let (ptx, prx) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(i)) => {
                    let _ = ptx.send(format!("{i:?}"));
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    for (i, q) in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ]
    .into_iter()
    .enumerate()
    {
        publ.publish("room/1", q, false, format!("m{i}")).unwrap();
    }
    let mut got = publishes(&rx, 3);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("room/1".into(), "m0".into(), 0, false),
            ("room/1".into(), "m1".into(), 1, false),
            ("room/1".into(), "m2".into(), 2, false)
        ]
    );
    // The publisher saw its acknowledgements (PUBACK, PUBREC, PUBCOMP).
    let mut acks = Vec::new();
    while acks.len() < 3 {
        let e = prx
            .recv_timeout(Duration::from_secs(10))
            .expect("publisher acks");
        if e.starts_with("PubAck") || e.starts_with("PubRec") || e.starts_with("PubComp") {
            acks.push(e);
        }
    }
    // A subscription at QoS 0 downgrades.
    let (sub0, rx0) = v5_client(&p, "sub0", &token, |_| {});
    connack(&rx0);
    sub0.subscribe("room/1", Q5::AtMostOnce).unwrap();
    suback(&rx0);
    publ.publish("room/1", rumqttc::QoS::ExactlyOnce, false, "x")
        .unwrap();
    assert_eq!(publishes(&rx0, 1)[0].2, 0);
}

#[test]
fn retained_messages_survive_a_restart_and_empty_payload_deletes() {
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let (c, rx) = v5_client(&p, "retainer", &token, |_| {});
    connack(&rx);
    c.publish("config/a", Q5::AtLeastOnce, true, "v1").unwrap();
    wait_for(&rx, |p| matches!(p, P5::PubAck(_)).then_some(()));
    assert_eq!(p.stop(), Some(0));
    p.spawn();
    let (s, rx) = v5_client(&p, "reader", &token, |_| {});
    connack(&rx);
    s.subscribe("config/#", Q5::AtLeastOnce).unwrap();
    assert_eq!(
        publishes(&rx, 1),
        vec![("config/a".into(), "v1".into(), 1, true)]
    );
    // Deleting it with an empty retained payload.
    s.publish("config/a", Q5::AtLeastOnce, true, "").unwrap();
    wait_for(&rx, |p| matches!(p, P5::PubAck(_)).then_some(()));
    let (s2, rx2) = v5_client(&p, "reader2", &token, |_| {});
    connack(&rx2);
    s2.subscribe("config/#", Q5::AtLeastOnce).unwrap();
    suback(&rx2);
    s2.publish("config/marker", Q5::AtLeastOnce, false, "m")
        .unwrap();
    let got = publishes(&rx2, 1);
    assert_eq!(
        got[0].0, "config/marker",
        "no retained message before the marker: {got:?}"
    );
}

#[test]
fn wills_go_out_on_a_dropped_connection_only() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let (w, wrx) = v5_client(&p, "watcher", &token, |_| {});
    connack(&wrx);
    w.subscribe("status/#", Q5::AtLeastOnce).unwrap();
    suback(&wrx);
    // A clean DISCONNECT: no will.
    let (polite, prx) = v5_client(&p, "polite", &token, |o| {
        o.set_last_will(LastWill::new(
            "status/polite",
            "gone",
            Q5::AtLeastOnce,
            false,
            None,
        ));
    });
    connack(&prx);
    polite.disconnect().unwrap();
    // A dropped connection (no DISCONNECT): the will.
    let mut raw = RawClient::connect(p.mqtt(), Version::V5);
    let mut c = connect_packet("rude", Some("X-OAUTH2"), Some(token.as_bytes()));
    if let Packet::Connect(c) = &mut c {
        c.will = Some(Box::new(petrel::mqtt::codec::LastWill {
            topic: "status/rude".into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: petrel::mqtt::codec::QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        }));
    }
    raw.send(&c);
    assert!(matches!(raw.recv(), Some(Packet::ConnAck(_))));
    drop(raw);
    let got = publishes(&wrx, 1);
    assert_eq!(got, vec![("status/rude".into(), "gone".into(), 1, false)]);
    // And the polite one never arrives.
    assert!(wrx
        .recv_timeout(Duration::from_millis(500))
        .map(|p| !matches!(p, P5::Publish(_)))
        .unwrap_or(true));
}

#[test]
fn a_second_connect_with_the_same_id_takes_the_session_over() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut first = RawClient::connect(p.mqtt(), Version::V5);
    first.send(&connect_packet(
        "same",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert!(matches!(first.recv(), Some(Packet::ConnAck(_))));
    let mut second = RawClient::connect(p.mqtt(), Version::V5);
    second.send(&connect_packet(
        "same",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert!(matches!(second.recv(), Some(Packet::ConnAck(_))));
    match first.recv_then_closed().as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, reason::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    second.send(&Packet::PingReq);
    assert_eq!(second.recv(), Some(Packet::PingResp));
}

#[test]
fn a_persistent_session_resumes_with_what_came_while_offline() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let (dev, rx) = v5_client(&p, "device-7", &token, |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    });
    assert_eq!(connack(&rx), (0, false));
    dev.subscribe("cmd/device-7", Q5::AtLeastOnce).unwrap();
    suback(&rx);
    dev.disconnect().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // While it is away, a command at QoS 1 (kept) and one at QoS 0 (dropped).
    let (ctl, crx) = v5_client(&p, "controller", &token, |_| {});
    connack(&crx);
    ctl.publish("cmd/device-7", Q5::AtMostOnce, false, "lost")
        .unwrap();
    ctl.publish("cmd/device-7", Q5::AtLeastOnce, false, "reboot")
        .unwrap();
    wait_for(&crx, |p| matches!(p, P5::PubAck(_)).then_some(()));
    let (_dev2, rx2) = v5_client(&p, "device-7", &token, |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    });
    assert_eq!(connack(&rx2), (0, true), "session present");
    assert_eq!(
        publishes(&rx2, 1),
        vec![("cmd/device-7".into(), "reboot".into(), 1, false)]
    );
    // Clean start discards it.
    let (_dev3, rx3) = v5_client(&p, "device-7", &token, |o| {
        o.set_clean_start(true);
    });
    assert_eq!(connack(&rx3), (0, false));
}

#[test]
fn an_acknowledged_qos1_message_for_a_persistent_session_survives_a_crash() {
    let mut p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let persistent = |o: &mut Options5| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(600));
    };
    let (dev, rx) = v5_client(&p, "device-9", &token, persistent);
    assert_eq!(connack(&rx), (0, false));
    dev.subscribe("cmd/9", Q5::AtLeastOnce).unwrap();
    suback(&rx);
    dev.disconnect().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (ctl, crx) = v5_client(&p, "controller", &token, |_| {});
    connack(&crx);
    ctl.publish("cmd/9", Q5::AtLeastOnce, false, "reboot")
        .unwrap();
    wait_for(&crx, |p| matches!(p, P5::PubAck(_)).then_some(()));
    drop(ctl);
    // SIGKILL: nothing gets a graceful flush.
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    p.spawn();
    let (dev, rx) = v5_client(&p, "device-9", &token, persistent);
    assert_eq!(connack(&rx), (0, true), "the session came back");
    assert_eq!(
        publishes(&rx, 1),
        vec![("cmd/9".into(), "reboot".into(), 1, false)]
    );
    // Acknowledged now (rumqttc acks on receipt): gone for good, and the
    // subscription survived too.
    std::thread::sleep(Duration::from_millis(300));
    dev.disconnect().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.stop(), Some(0));
    p.spawn();
    let (dev, rx) = v5_client(&p, "device-9", &token, persistent);
    assert_eq!(connack(&rx), (0, true));
    dev.publish("cmd/9", Q5::AtLeastOnce, false, "marker")
        .unwrap();
    assert_eq!(
        publishes(&rx, 1)[0].1,
        "marker",
        "the acknowledged message was not delivered twice"
    );
}

#[test]
fn the_same_client_id_under_another_account_is_another_session() {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let alice = p.token("alice@localhost", 3600, "sasl_auth");
    let bob = p.token("bob@localhost", 3600, "sasl_auth");
    let mut a = RawClient::connect(p.mqtt(), Version::V5);
    let mut pk = connect_packet("phone", Some("X-OAUTH2"), Some(alice.as_bytes()));
    if let Packet::Connect(c) = &mut pk {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    }
    a.send(&pk);
    assert!(matches!(a.recv(), Some(Packet::ConnAck(c)) if !c.session_present));
    // Bob with the same client id: his own fresh session; Alice stays.
    let mut b = RawClient::connect(p.mqtt(), Version::V5);
    let mut pk = connect_packet("phone", Some("X-OAUTH2"), Some(bob.as_bytes()));
    if let Packet::Connect(c) = &mut pk {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    }
    b.send(&pk);
    assert!(
        matches!(b.recv(), Some(Packet::ConnAck(c)) if !c.session_present),
        "not Alice's session"
    );
    a.send(&Packet::PingReq);
    assert_eq!(a.recv(), Some(Packet::PingResp), "Alice was not taken over");
}

#[test]
fn a_resumed_session_keeps_only_what_the_new_token_allows() {
    let p = Petrel::start("").with_user_and_client();
    let wide = p.token("alice@localhost", 3600, "sasl_auth");
    let narrow = p.token("alice@localhost", 3600, "sasl_auth;mqtt:subscribe:b/#");
    let connect = |token: &str| {
        let mut c = RawClient::connect(p.mqtt(), Version::V5);
        let mut pk = connect_packet("scoped", Some("X-OAUTH2"), Some(token.as_bytes()));
        if let Packet::Connect(cn) = &mut pk {
            cn.clean_start = false;
            cn.properties.session_expiry_interval = Some(600);
        }
        c.send(&pk);
        assert!(matches!(c.recv(), Some(Packet::ConnAck(_))));
        c
    };
    let mut c = connect(&wide);
    for f in ["a/#", "b/#"] {
        c.send(&Packet::Subscribe(petrel::mqtt::codec::Subscribe {
            packet_id: 1,
            properties: Default::default(),
            filters: vec![(f.to_string(), Default::default())],
        }));
        assert!(matches!(c.recv(), Some(Packet::SubAck(s)) if s.reason_codes == vec![0]));
    }
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let mut c = connect(&narrow);
    let mut publ = RawClient::connect(p.mqtt(), Version::V5);
    publ.send(&connect_packet(
        "pub",
        Some("X-OAUTH2"),
        Some(wide.as_bytes()),
    ));
    assert!(matches!(publ.recv(), Some(Packet::ConnAck(_))));
    for t in ["a/1", "b/1"] {
        publ.send(&Packet::Publish(petrel::mqtt::codec::Publish {
            topic: t.into(),
            payload: bytes::Bytes::from_static(b"x"),
            ..Default::default()
        }));
    }
    match c.recv() {
        Some(Packet::Publish(m)) => assert_eq!(m.topic, "b/1", "a/# went with the wide token"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rumqttc_workers_share_a_subscription() {
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (c, rx) = v5_client(&p, &format!("w{i}"), &token, |_| {});
            assert_eq!(connack(&rx).0, 0);
            c.subscribe("$share/pool/tasks/#", Q5::AtLeastOnce).unwrap();
            suback(&rx);
            (c, rx)
        })
        .collect();
    let (publisher, prx) = v5_client(&p, "boss", &token, |_| {});
    connack(&prx);
    for n in 0..6 {
        publisher
            .publish("tasks/build", Q5::AtLeastOnce, false, format!("t{n}"))
            .unwrap();
        wait_for(&prx, |p| matches!(p, P5::PubAck(_)).then_some(()));
    }
    // Taking turns: three each, six in all, none twice.
    let mut all: Vec<String> = workers
        .iter()
        .flat_map(|(_, rx)| publishes(rx, 3).into_iter().map(|m| m.1))
        .collect();
    all.sort();
    assert_eq!(all, (0..6).map(|n| format!("t{n}")).collect::<Vec<_>>());
}
