//! Unit tests of the MQTT connection/session core: packets in, packets out,
//! no sockets. Time is a [`ManualClock`] moved by hand (session and message
//! expiry, keep-alive without waiting), randomness a counter.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::MqttLimits;
use super::*;
use crate::auth::test_support::core;
use crate::config::Config;
use crate::mqtt::codec::{Ack, SubscriptionOptions};
use crate::session::{CountingEntropy, FlowLimits, ManualClock, Registry};

struct World {
    clock: Arc<ManualClock>,
    auth: Arc<AuthCore>,
    broker: Arc<Broker>,
    settings: Arc<MqttSettings>,
    token: String,
    _dir: tempfile::TempDir,
}

fn alice() -> BareJid {
    BareJid::parse("alice@localhost").unwrap()
}

impl World {
    fn new() -> World {
        World::with_limits(FlowLimits::default())
    }

    fn with_limits(limits: FlowLimits) -> World {
        let (auth, dir) = core(&Config::default());
        auth.register(&alice(), "wonderland").unwrap();
        let token = auth
            .issue_token(&alice(), auth::Scopes::sasl_auth(), None, None)
            .unwrap()
            .token;
        let clock = Arc::new(ManualClock::default());
        let registry = Arc::new(Registry::with_entropy(
            limits,
            clock.clone(),
            Arc::new(CountingEntropy::default()),
        ));
        let broker =
            Broker::new(&["localhost".into()], auth.store().clone(), registry, 100).unwrap();
        World {
            clock,
            auth: Arc::new(auth),
            broker: Arc::new(broker),
            settings: Arc::new(MqttSettings {
                default_host: "localhost".into(),
                allow_anonymous: false,
                max_packet_size: 1 << 20,
                receive_maximum: 16,
                topic_alias_maximum: 8,
                limits: Default::default(),
            }),
            token,
            _dir: dir,
        }
    }

    fn conn(&self) -> Connection {
        Connection::new(
            self.broker.clone(),
            self.auth.clone(),
            self.settings.clone(),
        )
    }

    /// What the connection's task does with [`Next::Login`]: the auth
    /// core's decision (a password hashed here, as on a blocking thread),
    /// fed back.
    fn decide(&self, conn: &mut Connection, next: Next) -> Next {
        match next {
            Next::Login(req) => {
                let result = match self.auth.login(*req) {
                    auth::LoginStep::Done(r) => r,
                    auth::LoginStep::CheckPassword(check) => self.auth.check_login_password(check),
                };
                conn.login_decided(result)
            }
            other => other,
        }
    }

    /// Feeds a packet, then any login it asks for.
    fn feed(&self, conn: &mut Connection, p: Packet) -> Next {
        let next = conn.handle(p);
        self.decide(conn, next)
    }

    /// A v5 CONNECT carrying the token (X-OAUTH2 in CONNECT).
    fn connect_packet(&self, client_id: &str) -> Connect {
        Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties {
                authentication_method: Some(X_OAUTH2.into()),
                authentication_data: Some(Bytes::from(self.token.clone())),
                ..Properties::default()
            },
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// A live connection for `client_id`, `f` shaping its CONNECT.
    fn live(&self, client_id: &str, f: impl FnOnce(&mut Connect)) -> (Connection, ConnAck) {
        let (conn, ack, rest) = self.live_with(client_id, f);
        assert!(rest.is_empty(), "{rest:?}");
        (conn, ack)
    }

    /// [`World::live`], with what followed the CONNACK (a resumed
    /// session's messages).
    fn live_with(
        &self,
        client_id: &str,
        f: impl FnOnce(&mut Connect),
    ) -> (Connection, ConnAck, Vec<Packet>) {
        let mut c = self.connect_packet(client_id);
        f(&mut c);
        let mut conn = self.conn();
        assert_eq!(self.feed(&mut conn, Packet::Connect(c)), Next::Continue);
        let mut out = take(&mut conn);
        match out.remove(0) {
            Packet::ConnAck(a) => {
                assert_eq!(a.reason_code, reason::SUCCESS, "{a:?}");
                (conn, a, out)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

/// Everything the connection has to write, decoded (and taken).
fn take(conn: &mut Connection) -> Vec<Packet> {
    let v = conn.version().unwrap_or(Version::V5);
    let mut buf = BytesMut::from(&conn.out[..]);
    conn.out.clear();
    let mut out = Vec::new();
    while let Some(p) = codec::decode(&mut buf, Some(v), usize::MAX).unwrap() {
        // Server-to-client packets decoded as a client would: fine for the
        // types used here.
        out.push(p);
    }
    out
}

fn publish(topic: &str, qos: QoS, pid: u16, payload: &str) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: pid,
        payload: Bytes::from(payload.to_string()),
        ..Publish::default()
    })
}

fn subscribe(conn: &mut Connection, filter: &str, qos: QoS) {
    let next = conn.handle(Packet::Subscribe(Subscribe {
        packet_id: 7,
        properties: Properties::default(),
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )],
    }));
    assert_eq!(next, Next::Continue);
    match take(conn).remove(0) {
        Packet::SubAck(a) => assert_eq!(a.reason_codes, vec![qos as u8]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// The reason code of the CONNACK the connection answered with.
fn connack_code(conn: &mut Connection) -> u8 {
    match take(conn).remove(0) {
        Packet::ConnAck(a) => a.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The reason code of the DISCONNECT the connection sent.
fn disconnect_code(conn: &mut Connection) -> u8 {
    match take(conn).remove(0) {
        Packet::Disconnect(d) => d.reason_code,
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// The PUBLISHes a connection's pump hands out now.
fn delivered(conn: &mut Connection) -> Vec<Publish> {
    conn.pump();
    take(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn token_in_connect_logs_in_and_a_bad_one_is_refused() {
    let w = World::new();
    let (conn, ack) = w.live("dev", |_| {});
    assert!(conn.is_live());
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some(X_OAUTH2)
    );
    assert_eq!(conn.grant().unwrap().owner(), &alice());

    let mut bad = w.conn();
    let mut c = w.connect_packet("dev2");
    c.properties.authentication_data = Some(Bytes::from_static(b"nope"));
    assert_eq!(w.feed(&mut bad, Packet::Connect(c)), Next::Close);
    assert_eq!(connack_code(&mut bad), reason::NOT_AUTHORIZED);
}

#[test]
fn the_token_may_come_in_an_auth_continuation() {
    let w = World::new();
    let mut conn = w.conn();
    let mut c = w.connect_packet("dev");
    c.properties.authentication_data = None;
    assert_eq!(conn.handle(Packet::Connect(c)), Next::Continue);
    match take(&mut conn).remove(0) {
        Packet::Auth(a) => assert_eq!(a.reason_code, reason::CONTINUE_AUTHENTICATION),
        other => panic!("{other:?}"),
    }
    let next = w.feed(
        &mut conn,
        Packet::Auth(Auth {
            reason_code: reason::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some(X_OAUTH2.into()),
                authentication_data: Some(Bytes::from(w.token.clone())),
                ..Properties::default()
            },
        }),
    );
    assert_eq!(next, Next::Continue);
    assert!(conn.is_live());
}

#[test]
fn a_password_is_checked_off_the_core_and_answered_back() {
    let w = World::new();
    let mut conn = w.conn();
    let mut c = w.connect_packet("dev");
    c.properties = Properties::default();
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"wonderland"));
    let next = conn.handle(Packet::Connect(c.clone()));
    assert!(
        matches!(next, Next::Login(_)),
        "the login is the caller's to run"
    );
    assert!(
        take(&mut conn).is_empty(),
        "nothing answered before the decision"
    );
    assert_eq!(w.decide(&mut conn, next), Next::Continue);
    assert!(conn.is_live());
    assert!(conn.grant().is_none());

    let mut wrong = w.conn();
    c.password = Some(Bytes::from_static(b"nope"));
    assert_eq!(w.feed(&mut wrong, Packet::Connect(c)), Next::Close);
    assert_eq!(connack_code(&mut wrong), reason::BAD_USER_NAME_OR_PASSWORD);
}

#[test]
fn an_assigned_client_id_comes_from_the_callers_randomness() {
    let w = World::new();
    let (_, ack) = w.live("", |_| {});
    // CountingEntropy's first draw: the counter 1, big-endian.
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("petrel-0000000000000001")
    );
}

#[test]
fn qos1_goes_from_publisher_to_subscriber_and_is_acknowledged() {
    let w = World::new();
    let (mut sub, _) = w.live("sub", |_| {});
    subscribe(&mut sub, "t/+", QoS::AtLeastOnce);
    let (mut publ, _) = w.live("pub", |_| {});
    assert_eq!(
        publ.handle(publish("t/1", QoS::AtLeastOnce, 3, "hi")),
        Next::Continue
    );
    match take(&mut publ).remove(0) {
        Packet::PubAck(a) => assert_eq!((a.packet_id, a.reason_code), (3, reason::SUCCESS)),
        other => panic!("{other:?}"),
    }
    let got = delivered(&mut sub);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].topic.as_str(), &got[0].payload[..]),
        ("t/1", &b"hi"[..])
    );
    let pid = got[0].packet_id;
    assert_eq!(sub.session().unwrap().0.lock().inflight.len(), 1);
    sub.handle(Packet::PubAck(Ack {
        packet_id: pid,
        reason_code: 0,
        properties: Properties::default(),
    }));
    assert!(sub.session().unwrap().0.lock().inflight.is_empty());
}

#[test]
fn a_second_connect_takes_the_session_over() {
    let w = World::new();
    let (mut first, _) = w.live("dev", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    });
    let (_second, ack) = w.live("dev", |c| c.clean_start = false);
    assert!(ack.session_present);
    // The first connection's next packet meets a session that is not its own.
    assert_eq!(first.handle(Packet::PingReq), Next::Close);
    assert_eq!(disconnect_code(&mut first), reason::SESSION_TAKEN_OVER);
}

/// A detached persistent session lives for its expiry on the clock, and
/// messages queued for it expire by theirs: no waiting.
#[test]
fn session_and_message_expiry_run_on_the_clock() {
    let w = World::new();
    let (mut sub, _) = w.live("keep", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(30);
    });
    subscribe(&mut sub, "news", QoS::AtLeastOnce);
    assert!(sub.finish(false).is_some());
    let (mut publ, _) = w.live("pub", |_| {});
    let mut short = Publish {
        qos: QoS::AtLeastOnce,
        topic: "news".into(),
        packet_id: 1,
        payload: Bytes::from_static(b"short-lived"),
        ..Publish::default()
    };
    short.properties.message_expiry_interval = Some(5);
    publ.handle(Packet::Publish(short));
    publ.handle(publish("news", QoS::AtLeastOnce, 2, "lasting"));
    let registry = w.broker.registry().clone();

    w.clock.advance(Duration::from_secs(10));
    assert!(registry.sweep().is_empty(), "10 s of 30");
    // Back within its expiry: the short-lived message has expired, the
    // other is delivered.
    let (mut back, ack, got) = w.live_with("keep", |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(30);
    });
    assert!(ack.session_present);
    let got: Vec<Publish> = got
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"lasting");
    assert!(back.finish(false).is_some());

    w.clock.advance(Duration::from_secs(29));
    assert!(registry.sweep().is_empty(), "29 s of 30");
    w.clock.advance(Duration::from_secs(2));
    let expired = registry.sweep();
    assert_eq!(expired.len(), 1);
    assert!(w.broker.end_expired(&expired));
    let (_, ack) = w.live("keep", |c| c.clean_start = false);
    assert!(!ack.session_present, "the session ended at its expiry");
}

#[test]
fn keep_alive_is_enforced_at_one_and_a_half_times_on_the_clock() {
    let w = World::new();
    let (mut conn, _) = w.live("dev", |c| c.keep_alive = 10);
    let (slot, mine) = conn.session().map(|(s, g)| (s.clone(), g)).unwrap();
    w.clock.advance(Duration::from_secs(14));
    w.broker.registry().sweep();
    assert_eq!(slot.take_kick(mine), Ok(None));
    w.clock.advance(Duration::from_secs(2));
    w.broker.registry().sweep();
    let kick = slot.take_kick(mine).unwrap().expect("kicked");
    conn.disconnect(connect::kick_code(kick));
    assert_eq!(disconnect_code(&mut conn), reason::KEEP_ALIVE_TIMEOUT);
}

/// A burst at QoS 0 meets flow control: the publisher is told to wait once
/// the subscriber's queue reaches its high-water mark, and nothing is
/// dropped for a subscriber that is still there to read.
#[test]
fn a_qos0_burst_congests_instead_of_dropping() {
    let w = World::with_limits(FlowLimits {
        high_water: 4096,
        slow_consumer: Duration::from_secs(30),
    });
    let (mut sub, _) = w.live("sub", |_| {});
    subscribe(&mut sub, "burst", QoS::AtMostOnce);
    let (mut publ, _) = w.live("pub", |_| {});
    let mut sent = 0;
    while publ.congested.is_none() {
        publ.handle(publish("burst", QoS::AtMostOnce, 0, &"x".repeat(100)));
        sent += 1;
        assert!(sent < 1000, "never congested");
    }
    // Past the mark the publisher would wait; a few more still go in.
    for _ in 0..5 {
        publ.handle(publish("burst", QoS::AtMostOnce, 0, &"x".repeat(100)));
        sent += 1;
    }
    let mut got = 0;
    loop {
        let n = delivered(&mut sub).len();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, sent, "nothing dropped");
    assert_eq!(
        w.broker
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn re_authentication_swaps_the_token_the_session_ends_with() {
    let w = World::new();
    let (mut conn, _) = w.live("dev", |_| {});
    let fresh = w
        .auth
        .issue_token(&alice(), auth::Scopes::sasl_auth(), None, None)
        .unwrap();
    let next = conn.handle(Packet::Auth(Auth {
        reason_code: reason::RE_AUTHENTICATE,
        properties: Properties {
            authentication_method: Some(X_OAUTH2.into()),
            authentication_data: Some(Bytes::from(fresh.token.clone())),
            ..Properties::default()
        },
    }));
    assert_eq!(next, Next::Continue);
    match take(&mut conn).remove(0) {
        Packet::Auth(a) => assert_eq!(a.reason_code, reason::SUCCESS),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.grant().unwrap().token_id(), fresh.id);
    let (slot, _) = conn.session().unwrap();
    assert_eq!(
        slot.lock().grant.as_ref().map(|g| g.token_id()),
        Some(fresh.id)
    );
}

fn with_limits(f: impl FnOnce(&mut MqttLimits)) -> World {
    let mut w = World::new();
    let mut s = (*w.settings).clone();
    f(&mut s.limits);
    w.settings = Arc::new(s);
    w
}

fn subscribe_many(conn: &mut Connection, filters: &[&str]) -> Vec<u8> {
    conn.handle(Packet::Subscribe(Subscribe {
        packet_id: 9,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| (f.to_string(), SubscriptionOptions::default()))
            .collect(),
    }));
    match take(conn).remove(0) {
        Packet::SubAck(a) => a.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[test]
fn before_login_only_a_small_packet_is_read() {
    let w = World::new();
    let conn = w.conn();
    assert_eq!(conn.max_packet_size(), 64 * 1024);
    let (conn, _) = w.live("dev", |_| {});
    assert_eq!(conn.max_packet_size(), 1 << 20);
}

/// Filters past the per-packet cap get 0x97 unread; a filter named twice
/// is one subscription; past the per-session cap new filters get 0x97;
/// over-long or over-deep filters are invalid.
#[test]
fn subscribe_is_capped_and_deduplicated() {
    let w = with_limits(|l| {
        l.max_filters_per_subscribe = 4;
        l.max_subscriptions = 3;
        l.max_topic_levels = 3;
        l.max_topic_length = 20;
    });
    let (mut c, _) = w.live("dev", |_| {});
    let codes = subscribe_many(&mut c, &["a", "b", "a", "a/b/c/d", "x", "y"]);
    assert_eq!(
        codes,
        vec![
            0,
            0,
            0,
            reason::TOPIC_FILTER_INVALID,
            reason::QUOTA_EXCEEDED,
            reason::QUOTA_EXCEEDED
        ]
    );
    assert_eq!(c.session().unwrap().0.lock().subscriptions.len(), 2);
    let codes = subscribe_many(&mut c, &["c", "d", "a", &"z".repeat(21)]);
    assert_eq!(
        codes,
        vec![0, reason::QUOTA_EXCEEDED, 0, reason::TOPIC_FILTER_INVALID],
        "a third fits, a fourth does not, an existing one is replaced"
    );
    // A topic name over the limits ends the connection (0x90).
    assert_eq!(
        c.handle(publish("a/b/c/d", QoS::AtMostOnce, 0, "x")),
        Next::Close
    );
    assert_eq!(disconnect_code(&mut c), reason::TOPIC_NAME_INVALID);
}

#[test]
fn session_expiry_is_capped_and_the_grant_told() {
    let w = with_limits(|l| l.max_session_expiry = 3600);
    let (_, ack) = w.live("long", |c| {
        c.properties.session_expiry_interval = Some(u32::MAX)
    });
    assert_eq!(ack.properties.session_expiry_interval, Some(3600));
    let (_, ack) = w.live("short", |c| c.properties.session_expiry_interval = Some(60));
    assert_eq!(
        ack.properties.session_expiry_interval, None,
        "granted as asked"
    );
    let (c, _) = w.live("v3", |c| {
        c.version = Version::V311;
        c.clean_start = false;
        c.properties = Properties::default();
        c.username = Some("alice".into());
        c.password = Some(Bytes::from(w.token.clone()));
    });
    assert_eq!(
        c.session().unwrap().0.lock().expiry,
        3600,
        "3.1.1 persistent too"
    );
}

#[test]
fn an_account_has_at_most_so_many_sessions() {
    let w = with_limits(|l| l.max_sessions_per_account = 2);
    let (_a, _) = w.live("a", |_| {});
    let (_b, _) = w.live("b", |_| {});
    let mut c = w.conn();
    assert_eq!(
        w.feed(&mut c, Packet::Connect(w.connect_packet("c"))),
        Next::Close
    );
    assert_eq!(connack_code(&mut c), reason::QUOTA_EXCEEDED);
    // Taking one of them over adds none.
    let (_b2, _) = w.live("b", |_| {});
}

/// Past the retained cap a new retained topic is refused (0x97); a `#`
/// subscription gets retained messages only up to the session's hard cap.
#[test]
fn retained_topics_are_capped_and_delivered_within_a_budget() {
    let w = World::with_limits(FlowLimits {
        high_water: 4096,
        slow_consumer: Duration::from_secs(30),
    });
    w.broker.max_retained.store(200, Ordering::Relaxed);
    let (mut publ, _) = w.live("pub", |_| {});
    let retained = |topic: String, pid: u16| {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic,
            packet_id: pid,
            payload: Bytes::from(vec![b'r'; 1000]),
            ..Publish::default()
        })
    };
    for i in 0..200u16 {
        publ.handle(retained(format!("r/{i}"), i + 1));
    }
    take(&mut publ);
    publ.handle(retained("r/new".into(), 999));
    match take(&mut publ).remove(0) {
        Packet::PubAck(a) => assert_eq!(a.reason_code, reason::QUOTA_EXCEEDED),
        other => panic!("{other:?}"),
    }
    publ.handle(retained("r/7".into(), 1000));
    match take(&mut publ).remove(0) {
        Packet::PubAck(a) => assert_eq!(a.reason_code, reason::NO_MATCHING_SUBSCRIBERS),
        other => panic!("{other:?}"),
    }
    let (mut sub, _) = w.live("sub", |_| {});
    subscribe(&mut sub, "r/#", QoS::AtMostOnce);
    // 16 x 4 KiB of room: some fifty messages of 1 KB (each counted with
    // its record), not two hundred.
    let queued = sub.session().unwrap().0.lock().queue_len();
    assert!(
        (40..=65).contains(&queued),
        "{queued} retained messages queued"
    );
}

/// A session kicked because its token ended (or its account changed)
/// leaves without its will; kicked for other reasons (keep-alive, the
/// server shutting down) it sends it.
#[test]
fn a_session_whose_token_ended_has_no_will() {
    use crate::auth::TokenEnd;
    use crate::session::Kick;
    let w = World::new();
    let with_will = |id: &str| {
        w.live(id, |c| {
            c.will = Some(Box::new(crate::mqtt::codec::LastWill {
                topic: format!("will/{id}"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
            }))
        })
        .0
    };
    for (why, sends) in [
        (Kick::TokenEnded(TokenEnd::Revoked), false),
        (Kick::TokenEnded(TokenEnd::Expired), false),
        (Kick::AccountChanged, false),
        (Kick::KeepAlive, true),
        (Kick::Shutdown, true),
    ] {
        let mut c = with_will("w");
        assert_eq!(c.kicked(why), Next::Close);
        let after = c.finish(false).expect("a live session leaves an aftermath");
        assert_eq!(after.will.is_some(), sends, "{why:?}");
    }
}

/// Past the retained byte cap a retained PUBLISH is refused with 0x97 and
/// not routed (a reason code of 0x80 or more means "not accepted"); a
/// message's user properties count towards the bytes it holds.
#[test]
fn retained_bytes_are_capped_and_a_refused_publish_is_not_routed() {
    let w = World::new();
    w.broker.max_retained_bytes.store(60_000, Ordering::Relaxed);
    let (mut watcher, _) = w.live("watcher", |_| {});
    subscribe(&mut watcher, "r/#", QoS::AtMostOnce);
    let (mut publ, _) = w.live("pub", |_| {});
    let heavy = |topic: &str, pid: u16| {
        let mut p = Publish {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: topic.into(),
            packet_id: pid,
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        };
        // Small payload, some 23 KB of user properties (as held).
        p.properties.user_properties = (0..300)
            .map(|i| (format!("k{i:04}"), "v".repeat(25)))
            .collect();
        Packet::Publish(p)
    };
    let mut codes = Vec::new();
    for i in 0..4u16 {
        publ.handle(heavy(&format!("r/{i}"), i + 1));
        match take(&mut publ).remove(0) {
            Packet::PubAck(a) => codes.push(a.reason_code),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(codes[..2], [0, 0], "{codes:?}");
    assert!(
        codes[2..].iter().all(|&c| c == reason::QUOTA_EXCEEDED),
        "{codes:?}"
    );
    watcher.pump();
    let got: Vec<String> = take(&mut watcher)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["r/0", "r/1"], "refused publishes are not routed");
}

/// A will's topic follows the PUBLISH rules: not a `$` topic, within the
/// topic limits (CONNACK 0x90 otherwise).
#[test]
fn a_will_on_a_dollar_topic_or_too_deep_is_refused() {
    let w = with_limits(|l| l.max_topic_levels = 4);
    for topic in ["$SYS/broker/uptime", "a/b/c/d/e"] {
        let mut c = w.connect_packet("w");
        c.will = Some(Box::new(crate::mqtt::codec::LastWill {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
        }));
        let mut conn = w.conn();
        assert_eq!(
            w.feed(&mut conn, Packet::Connect(c)),
            Next::Close,
            "{topic}"
        );
        assert_eq!(
            connack_code(&mut conn),
            reason::TOPIC_NAME_INVALID,
            "{topic}"
        );
    }
}
