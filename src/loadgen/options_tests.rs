//! Option parsing and the checks of [`Options::plan`].

use super::*;

fn plan(args: &[&str]) -> Result<Option<Plan>, LoadError> {
    let mut v = vec!["load"];
    v.extend_from_slice(args);
    Options::parse_from_args(v).expect("parses").plan()
}

fn refused(args: &[&str]) -> String {
    plan(args).unwrap_err().to_string()
}

#[test]
fn no_scenario_means_usage() {
    // What `cargo bench` passes to every bench target.
    let o = Options::parse_from_args(["load", "--bench"]).unwrap();
    assert!(o.scenario.is_none());
    assert!(o.plan().unwrap().is_none());
}

#[test]
fn pubsub_options() {
    let p = plan(&[
        "mqtt-pubsub",
        "--target",
        "127.0.0.1:1999",
        "--auth",
        "none",
        "--publishers",
        "4",
        "--subscribers",
        "4",
        "--qos",
        "1",
        "--payload",
        "128",
        "--rate",
        "500",
        "--duration",
        "2.5",
        "--bench",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(p.scenario, Scenario::MqttPubSub);
    assert_eq!(p.target, "127.0.0.1:1999".parse().unwrap());
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert_eq!(p.payload, 128);
    assert_eq!(p.rate, Some(500.0));
    assert_eq!(p.duration, Duration::from_millis(2500));
    assert_eq!(p.count, None);
    assert_eq!(p.layout, Layout::OneToOne);
    assert_eq!(p.version, Version::V5);
}

#[test]
fn conn_defaults_and_caps() {
    let p = plan(&["mqtt-conn", "--auth", "none", "--duration", "9999"])
        .unwrap()
        .unwrap();
    assert_eq!(p.count, Some(100));
    assert_eq!(p.rate, Some(1000.0));
    assert_eq!(p.duration, MAX_DURATION);
    assert!(refused(&["mqtt-conn", "--auth", "none", "--count", "20001"]).contains("--count"));
    assert!(refused(&["mqtt-conn", "--auth", "none", "--count", "0"]).contains("--count"));
    assert!(refused(&["mqtt-conn", "--auth", "none", "--duration", "0"]).contains("--duration"));
    assert!(refused(&["mqtt-conn", "--auth", "none", "--rate=-1"]).contains("--rate"));
}

#[test]
fn refuses_what_it_must() {
    assert!(
        refused(&["mqtt-conn", "--auth", "none", "--target", "10.0.0.1:1883"])
            .contains("not loopback")
    );
    assert!(refused(&["mqtt-conn"]).contains("--tokens"));
    assert!(refused(&[
        "mqtt-conn",
        "--mqtt-version",
        "3",
        "--oauth-url",
        "http://127.0.0.1:5280/oauth/token"
    ])
    .contains("MQTT 5"));
    assert!(refused(&[
        "mqtt-pubsub",
        "--auth",
        "none",
        "--publishers",
        "2",
        "--subscribers",
        "3"
    ])
    .contains("one-to-one"));
    assert!(refused(&["mqtt-pubsub", "--auth", "none", "--payload", "8"]).contains("--payload"));
    assert!(refused(&[
        "mqtt-conn",
        "--oauth-url",
        "http://192.168.1.5:5280/oauth/token"
    ])
    .contains("loopback"));
    assert!(refused(&[
        "mqtt-conn",
        "--auth",
        "password",
        "--user-pattern",
        "bob@localhost",
        "--users",
        "3"
    ])
    .contains("%d"));
}

#[test]
fn source_ips_loopback_only() {
    let o = Options::parse_from_args(["load", "mqtt-conn", "--source-ips", "127.0.0.2,127.0.0.3"])
        .unwrap();
    assert_eq!(
        o.source_ips,
        vec![
            "127.0.0.2".parse::<IpAddr>().unwrap(),
            "127.0.0.3".parse().unwrap()
        ]
    );
    for bad in [
        "10.0.0.2",
        "127.0.0.2,192.168.0.1",
        "0.0.0.0",
        "::1",
        "nope",
    ] {
        assert!(
            Options::parse_from_args(["load", "mqtt-conn", "--source-ips", bad]).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn tokens_file_round_robin_source() {
    let dir = std::env::temp_dir().join(format!("petrel-lg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("tokens");
    std::fs::write(&f, "tok-a\n\n# comment\ntok-b\n").unwrap();
    let p = plan(&["mqtt-conn", "--tokens", f.to_str().unwrap()])
        .unwrap()
        .unwrap();
    assert_eq!(
        p.tokens,
        TokenSource::List(vec!["tok-a".into(), "tok-b".into()])
    );
    std::fs::write(&f, "\n").unwrap();
    assert!(refused(&["mqtt-conn", "--tokens", f.to_str().unwrap()]).contains("no token"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn username_with_token() {
    let dir = std::env::temp_dir().join(format!("petrel-lg-uwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("tokens");
    std::fs::write(&f, "tok-0\ntok-1\n").unwrap();
    let f = f.to_str().unwrap();
    let p = plan(&[
        "mqtt-conn",
        "--tokens",
        f,
        "--users",
        "2",
        "--username-with-token",
    ])
    .unwrap()
    .unwrap();
    assert!(p.username_with_token);
    assert!(refused(&[
        "mqtt-conn",
        "--tokens",
        f,
        "--users",
        "3",
        "--username-with-token"
    ])
    .contains("one token per user"));
    assert!(
        refused(&["mqtt-conn", "--auth", "password", "--username-with-token"]).contains("x-oauth2")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usernames_from_pattern() {
    let p = plan(&[
        "mqtt-conn",
        "--auth",
        "none",
        "--user-pattern",
        "dev%d@localhost",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(p.username(7), "dev7@localhost");
}

#[test]
fn xmpp_defaults_and_refusals() {
    let p = plan(&["xmpp-login", "--tokens", "/dev/null"]);
    assert!(p.unwrap_err().to_string().contains("no token"));
    let p = plan(&["xmpp-login", "--auth", "plain", "--password", "pw"])
        .unwrap()
        .unwrap();
    assert_eq!(p.auth, AuthMode::Password, "plain is password");
    assert_eq!(p.target, "127.0.0.1:5222".parse().unwrap());
    assert_eq!((p.count, p.rate), (Some(100), Some(1000.0)));
    assert_eq!(p.xmpp_domain(), "localhost");
    let p = plan(&[
        "xmpp-chat",
        "--auth",
        "scram-sha-256",
        "--password",
        "pw",
        "--tls",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(p.target, "127.0.0.1:5223".parse().unwrap());
    assert_eq!((p.pairs, p.count, p.rate), (1, None, None));
    let p = plan(&["mqtt-conn", "--auth", "none", "--tls"])
        .unwrap()
        .unwrap();
    assert_eq!(p.target, "127.0.0.1:8883".parse().unwrap());

    let xmpp = ["--auth", "plain", "--password", "pw"];
    let with = |extra: &[&'static str]| {
        let mut v = xmpp.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert!(refused(&["xmpp-login", "--auth", "none"]).contains("credentials"));
    assert!(refused(&["xmpp-login", "--auth", "plain"]).contains("--password"));
    assert!(refused(&["mqtt-conn", "--auth", "scram-sha-256"]).contains("XMPP"));
    assert!(refused(&["mqtt-conn", "--auth", "none", "--starttls"]).contains("--starttls"));
    assert!(Options::parse_from_args(["load", "xmpp-login", "--tls", "--starttls"]).is_err());
    let mut v = vec!["xmpp-login"];
    v.extend(with(&["--user-pattern", "nodomain%d", "--users", "2"]));
    assert!(refused(&v).contains("localpart@domain"));
    let mut v = vec!["xmpp-chat"];
    v.extend(with(&["--payload", "41"]));
    assert!(refused(&v).contains("between 42"));
    let mut v = vec!["xmpp-chat"];
    v.extend(with(&["--pairs", "2", "--users", "3", "--to-bare"]));
    assert!(refused(&v).contains("--users at least 4"));
    let mut v = vec!["xmpp-chat"];
    v.extend(with(&["--pairs", "0"]));
    assert!(refused(&v).contains("--pairs"));
    let mut v = vec!["xmpp-chat"];
    v.extend(with(&["--hold"]));
    assert!(refused(&v).contains("xmpp-login option"));
    let mut v = vec!["xmpp-login"];
    v.extend(with(&["--count", "20001", "--hold"]));
    assert!(refused(&v).contains("with --hold"));
    let mut v = vec!["xmpp-login"];
    v.extend(with(&["--count", "20001"]));
    assert!(
        plan(&v).is_ok(),
        "unheld logins may exceed the open-file bound"
    );
}

#[test]
fn qos_out_of_range_is_a_parse_error() {
    assert!(Options::parse_from_args(["load", "mqtt-pubsub", "--qos", "3"]).is_err());
    assert!(Options::parse_from_args(["load", "mqtt-pubsub", "--layout", "star"]).is_err());
    assert!(Options::parse_from_args(["load", "mqtt-pubsub", "--mqtt-version", "4"]).is_err());
}

#[test]
fn bridge_defaults_and_refusals() {
    let p = plan(&[
        "bridge",
        "--auth",
        "password",
        "--password",
        "pw",
        "--pairs",
        "100",
        "--users",
        "100",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(p.scenario, Scenario::Bridge);
    assert_eq!(p.target, "127.0.0.1:1883".parse().unwrap(), "MQTT");
    assert_eq!(p.xmpp_target, Some("127.0.0.1:5222".parse().unwrap()));
    assert_eq!(p.qos, QoS::AtLeastOnce, "QoS 1 unless told");
    assert_eq!(p.payload, 64);
    assert_eq!((p.pairs, p.count, p.rate), (100, None, None));
    assert_eq!(p.topic(7), "bench/7/data");
    assert_eq!(
        p.node(7),
        "bench/7/data",
        "the node is the topic by default"
    );
    assert_eq!(p.pubsub_service, "pubsub.localhost");
    assert_eq!(p.xmpp_domain(), "localhost");

    let dir = std::env::temp_dir().join(format!("petrel-lg-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "t0\nt1\n").unwrap();
    let p = plan(&[
        "bridge-back",
        "--auth",
        "x-oauth2",
        "--tokens",
        tokens.to_str().unwrap(),
        "--tls",
        "--qos",
        "0",
        "--target",
        "127.0.0.1:1999",
        "--xmpp-target",
        "127.0.0.2:5999",
        "--topic-pattern",
        "dev/%d/up",
        "--node-pattern",
        "devices-%d",
        "--pubsub-service",
        "ps.example.org",
        "--user-pattern",
        "d%d@example.org",
        "--users",
        "2",
        "--pairs",
        "2",
    ])
    .unwrap()
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(p.scenario, Scenario::BridgeBack);
    assert_eq!(p.target, "127.0.0.1:1999".parse().unwrap());
    assert_eq!(p.xmpp_target, Some("127.0.0.2:5999".parse().unwrap()));
    assert_eq!(p.qos, QoS::AtMostOnce);
    assert_eq!(
        (p.topic(1).as_str(), p.node(1).as_str()),
        ("dev/1/up", "devices-1")
    );
    assert_eq!(p.pubsub_service, "ps.example.org");
    let p = plan(&["bridge", "--auth", "password", "--password", "pw", "--tls"])
        .unwrap()
        .unwrap();
    assert_eq!(p.target, "127.0.0.1:8883".parse().unwrap());
    assert_eq!(p.xmpp_target, Some("127.0.0.1:5223".parse().unwrap()));
    // STARTTLS applies to the XMPP side.
    assert!(plan(&[
        "bridge",
        "--auth",
        "password",
        "--password",
        "pw",
        "--starttls"
    ])
    .is_ok());

    let b = ["bridge", "--auth", "password", "--password", "pw"];
    let with = |extra: &[&'static str]| {
        let mut v = b.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert!(refused(&["bridge", "--auth", "none"]).contains("credentials"));
    assert!(
        refused(&["bridge-back", "--auth", "scram-sha-256", "--password", "x"]).contains("XMPP")
    );
    assert!(refused(&with(&["--payload", "50"])).contains("between 51"));
    assert!(refused(&with(&["--pairs", "0"])).contains("--pairs"));
    assert!(refused(&with(&["--pairs", "10001"])).contains("--pairs"));
    assert!(refused(&with(&["--count", "0"])).contains("--count"));
    assert!(
        refused(&with(&["--pairs", "2", "--topic-pattern", "one/topic"]))
            .contains("--topic-pattern needs %d")
    );
    assert!(refused(&with(&["--pairs", "2", "--node-pattern", "one"]))
        .contains("--node-pattern needs %d"));
    assert!(refused(&with(&["--topic-pattern", "a/+/%d"])).contains("topic names"));
    assert!(refused(&with(&["--topic-pattern", "$SYS/%d"])).contains("topic names"));
    assert!(refused(&with(&["--user-pattern", "nodomain"])).contains("localpart@domain"));
    assert!(refused(&with(&["--xmpp-target", "10.0.0.1:5222"])).contains("not loopback"));
    assert!(refused(&with(&["--to-bare"])).contains("xmpp-chat option"));
    // The bridge options belong to the bridge scenarios.
    assert!(refused(&[
        "mqtt-pubsub",
        "--auth",
        "none",
        "--xmpp-target",
        "127.0.0.1:5222"
    ])
    .contains("bridge"));
    assert!(
        refused(&["mqtt-pubsub", "--auth", "none", "--node-pattern", "n%d"]).contains("bridge")
    );
    // mqtt-pubsub keeps QoS 0 as its default.
    let p = plan(&["mqtt-pubsub", "--auth", "none"]).unwrap().unwrap();
    assert_eq!(p.qos, QoS::AtMostOnce);
}

#[test]
fn several_targets_for_a_cluster() {
    let p = plan(&[
        "mqtt-pubsub",
        "--auth",
        "none",
        "--target",
        "127.0.0.1:1001, 127.0.0.1:1002,localhost:1003",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(p.targets.len(), 3);
    assert_eq!(p.target, "127.0.0.1:1001".parse().unwrap());
    assert_eq!(p.targets[1], "127.0.0.1:1002".parse().unwrap());
    assert_eq!(p.targets[2].port(), 1003);
    assert_eq!(p.target_host, "127.0.0.1");
    // Every one of them must be loopback.
    let e = refused(&[
        "mqtt-conn",
        "--auth",
        "none",
        "--target",
        "127.0.0.1:1001,10.0.0.1:1883",
    ]);
    assert!(e.contains("not loopback"), "{e}");
    // XMPP and the bridges take one.
    let e = refused(&["xmpp-login", "--target", "127.0.0.1:5222,127.0.0.1:5223"]);
    assert!(e.contains("MQTT scenarios"), "{e}");
}

#[test]
fn storm_options() {
    let p = plan(&["mqtt-storm", "--auth", "none"]).unwrap().unwrap();
    assert_eq!(p.scenario, Scenario::MqttStorm);
    assert_eq!(p.count, Some(1000));
    assert_eq!(p.queued, 1);
    assert_eq!(
        p.qos,
        QoS::AtLeastOnce,
        "queued messages are QoS 1 unless told"
    );
    assert_eq!(p.session_expiry, 3600, "persistent sessions unless told");
    let p = plan(&[
        "mqtt-storm",
        "--auth",
        "none",
        "--count",
        "19000",
        "--queued",
        "5",
        "--qos",
        "2",
        "--session-expiry",
        "60",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        (p.count, p.queued, p.qos, p.session_expiry),
        (Some(19000), 5, QoS::ExactlyOnce, 60)
    );
    assert!(refused(&["mqtt-storm", "--auth", "none", "--qos", "0"]).contains("QoS 1 or 2"));
    assert!(refused(&["mqtt-storm", "--auth", "none", "--queued", "0"]).contains("--queued"));
    assert!(refused(&["mqtt-storm", "--auth", "none", "--count", "0"]).contains("--count"));
}
