//! MQTT access rules (`[[mqtt_acl]]`) against independent clients:
//! paho-mqtt (MQTT 5: the reason codes of refused subscriptions and
//! publishes, what a subscriber is not given) and mosquitto_sub (3.1.1:
//! SUBACK 0x80).

mod common;

use std::process::Command;
use std::time::Duration;

use common::python::run_script;
use common::{have_program, Petrel};

/// Deny by default; each account owns `users/<localpart>/#`; everyone
/// reads `public/#` but not `public/+/hidden`; a client publishes under
/// `public/<client id>/`; only admin@localhost publishes `admin/#`.
const RULES: &str = r#"
mqtt_acl_default = "deny"

[[mqtt_acl]]
permission = "allow"
action = "all"
topic = "users/%u/#"

[[mqtt_acl]]
permission = "allow"
action = "subscribe"
topic = "public/#"

[[mqtt_acl]]
permission = "deny"
action = "subscribe"
topic = "public/+/hidden"

[[mqtt_acl]]
permission = "allow"
action = "publish"
topic = "public/%c/#"

[[mqtt_acl]]
permission = "allow"
action = "publish"
topic = "admin/#"
account = "admin@localhost"
"#;

/// alice subscribes to four filters and publishes where she may not at
/// QoS 0, 1 and 2; client `dev` publishes `public/dev/hidden` then
/// `public/dev/open` (one publisher: in that order); prints what came back.
const PAHO_RULES: &str = r#"
import sys, time, json, paho.mqtt.client as mqtt
port, alice, dev = int(sys.argv[1]), sys.argv[2], sys.argv[3]
res = {"suback": None, "pub": {}, "got": []}
def client(cid, user, token):
    st = {"connack": None}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, token)
    def on_connect(c, u, f, rc, props): st["connack"] = rc.value
    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.time() + 10
    while st["connack"] is None and time.time() < deadline: time.sleep(0.02)
    return c
a = client("alice-phone", "alice", alice)
a.on_message = lambda c, u, m: res["got"].append(m.topic)
def on_subscribe(c, u, mid, codes, props): res["suback"] = [x.value for x in codes]
def on_publish(c, u, mid, rc, props): res["pub"][str(mid)] = rc.value
a.on_subscribe, a.on_publish = on_subscribe, on_publish
a.subscribe([("users/alice/#", 1), ("users/bob/#", 1), ("public/#", 1), ("public/dev/hidden", 1)])
deadline = time.time() + 10
while res["suback"] is None and time.time() < deadline: time.sleep(0.02)
mids = {}
for q in (0, 1, 2):
    mids[q] = a.publish("users/bob/x", "no", qos=q).mid
mids["own"] = a.publish("users/alice/x", "yes", qos=1).mid
mids["admin"] = a.publish("admin/x", "no", qos=1).mid
while len(res["pub"]) < 4 and time.time() < deadline: time.sleep(0.02)
d = client("dev", "alice", dev)
for t in ("public/dev/hidden", "public/dev/open"):
    d.publish(t, "m", qos=1).wait_for_publish(5)
while "public/dev/open" not in res["got"] and time.time() < deadline: time.sleep(0.02)
res["mids"] = {str(k): v for k, v in mids.items()}
for c in (a, d):
    c.disconnect(); c.loop_stop()
print(json.dumps(res))
"#;

#[test]
fn access_rules_refuse_with_reason_codes_and_filter_what_is_read() {
    let p = Petrel::start(RULES).with_user_and_client();
    let alice = p.token("alice@localhost", 3600, "sasl_auth");
    let dev = p.token("alice@localhost", 3600, "sasl_auth");
    let (ok, out, err) = run_script(
        PAHO_RULES,
        &[&p.mqtt().port().to_string(), &alice, &dev],
        Duration::from_secs(60),
    );
    assert!(ok, "paho script failed: {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // Granted, refused (another's), granted, refused (denied even though
    // public/# allows it: deny wins).
    assert_eq!(r["suback"], serde_json::json!([1, 0x87, 1, 0x87]), "{r}");
    let code = |k: &str| r["pub"][r["mids"][k].to_string()].as_i64();
    // QoS 1: PUBACK 0x87. QoS 2: PUBREC 0x87, which ends the exchange
    // (4.3.3); paho sends a PUBREL anyway and reports the PUBCOMP's 0x92
    // (the raw PUBREC is checked below).
    assert_eq!(code("1"), Some(0x87), "{r}");
    assert!(matches!(code("2"), Some(0x87 | 0x92)), "{r}");
    assert_eq!(code("admin"), Some(0x87), "not admin@localhost: {r}");
    assert!(matches!(code("own"), Some(0 | 0x10)), "her own topic: {r}");
    // Her own message came back; the QoS 0 one to bob's topic went
    // nowhere; `public/#` did not carry `public/dev/hidden`.
    let got: Vec<&str> = r["got"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(got.contains(&"users/alice/x"), "{r}");
    assert!(!got.contains(&"users/bob/x"), "{r}");
    assert!(got.contains(&"public/dev/open"), "{r}");
    assert!(!got.contains(&"public/dev/hidden"), "{r}");

    use common::mqtt_raw::{connect_packet, RawClient};
    use petrel::mqtt::codec::{Packet, Publish, QoS, Version};
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        "raw",
        Some("X-OAUTH2"),
        Some(alice.as_bytes()),
    ));
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
    c.send(&Packet::Publish(Publish {
        qos: QoS::ExactlyOnce,
        topic: "users/bob/x".into(),
        packet_id: 7,
        payload: bytes::Bytes::from_static(b"no"),
        ..Publish::default()
    }));
    match c.recv() {
        Some(Packet::PubRec(a)) => assert_eq!((a.packet_id, a.reason_code), (7, 0x87)),
        other => panic!("expected PUBREC, got {other:?}"),
    }
}

/// MQTT 3.1.1 has one failure code: mosquitto_sub is told 0x80.
#[test]
fn a_denied_subscription_is_0x80_in_mqtt_311() {
    if !have_program("mosquitto_sub") {
        return;
    }
    let p = Petrel::start(RULES).with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &p.mqtt().port().to_string()])
        .args(["-V", "mqttv311", "-u", "alice", "-P", &token])
        .args(["-t", "users/bob/#", "-C", "1", "-W", "5"])
        .output()
        .unwrap();
    // mosquitto_sub says so (and exits 0) when every filter got 0x80.
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("all subscription requests were denied"),
        "{err}"
    );
}

/// A bad rule stops the server with one line naming it.
#[test]
fn a_bad_rule_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[mqtt_acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"a/#/b\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mqtt_acl") && err.contains("rule 1"), "{err}");
}

/// `$SYS/broker/…` statistics, published every `mqtt_sys_interval`
/// seconds as retained messages: mosquitto_sub reads them; an access rule
/// can deny them.
#[test]
fn sys_topics_are_published_and_can_be_denied() {
    if !have_program("mosquitto_sub") {
        return;
    }
    let p = Petrel::start(
        "mqtt_sys_interval = 1\n\
         [[mqtt_acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"$SYS/#\"\naccount = \"bob@localhost\"\n",
    )
    .with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let sub = |user: &str, token: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &p.mqtt().port().to_string()])
            .args(["-V", "mqttv5", "-u", user, "-P", token, "-v"])
            .args(["-t", "$SYS/broker/#", "-C", "6", "-W", "10"])
            .output()
            .unwrap()
    };
    let alice = p.token("alice@localhost", 3600, "sasl_auth");
    let out = sub("alice", &alice);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "$SYS/broker/version petrel {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("$SYS/broker/uptime "), "{text}");
    // mosquitto_sub itself is connected while it reads.
    assert!(text.contains("$SYS/broker/clients/connected "), "{text}");
    assert!(text.contains("$SYS/broker/messages/received "), "{text}");
    let bob = p.token("bob@localhost", 3600, "sasl_auth");
    let out = sub("bob", &bob);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("denied") || err.contains("not authorized"),
        "{err}"
    );
}
