//! MQTT token login with independent clients: paho-mqtt (Python) and the
//! Debian mosquitto clients.

mod common;

use std::process::Command;
use std::time::Duration;

use common::python::run_script;
use common::{have_program, password_grant, Petrel};

/// paho-mqtt: connect with X-OAUTH2 (token in CONNECT), optionally a username,
/// subscribe, publish at QoS 0/1/2, and report what came back as JSON.
const PAHO_ROUNDTRIP: &str = r#"
import sys, time, json, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, token, username = int(sys.argv[1]), sys.argv[2], sys.argv[3]
res = {"connack": None, "got": [], "disconnect": None, "suback": None}
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + str(port), protocol=mqtt.MQTTv5)
def on_connect(c, u, f, rc, props):
    res["connack"] = rc.value
    res["method"] = getattr(props, "AuthenticationMethod", None)
def on_message(c, u, m): res["got"].append([m.topic, m.payload.decode(), m.qos])
def on_subscribe(c, u, mid, codes, props): res["suback"] = [x.value for x in codes]
def on_disconnect(c, u, f, rc, props): res["disconnect"] = rc.value
c.on_connect, c.on_message, c.on_subscribe, c.on_disconnect = on_connect, on_message, on_subscribe, on_disconnect
if username != "-":
    c.username_pw_set(username, None)
p = Properties(PacketTypes.CONNECT)
p.AuthenticationMethod = "X-OAUTH2"
p.AuthenticationData = token.encode()
c.connect("127.0.0.1", port, properties=p)
c.loop_start()
deadline = time.time() + 10
while res["connack"] is None and res["disconnect"] is None and time.time() < deadline: time.sleep(0.02)
if res["connack"] == 0:
    c.subscribe("sensors/#", qos=2)
    while res["suback"] is None and time.time() < deadline: time.sleep(0.02)
    for q in (0, 1, 2):
        c.publish("sensors/t1", "v%d" % q, qos=q).wait_for_publish(5)
    while len(res["got"]) < 3 and time.time() < deadline: time.sleep(0.02)
    c.disconnect()
time.sleep(0.2)
c.loop_stop()
print(json.dumps(res))
"#;

fn paho(p: &Petrel, token: &str, username: &str) -> serde_json::Value {
    let (ok, out, err) = run_script(
        PAHO_ROUNDTRIP,
        &[&p.mqtt().port().to_string(), token, username],
        Duration::from_secs(60),
    );
    assert!(ok, "paho script failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("bad output {out} / {err}"))
}

#[test]
fn paho_logs_in_with_a_token_from_the_oauth_endpoint() {
    let p = Petrel::start("").with_user_and_client();
    let (s, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 200);
    let token = v["access_token"].as_str().unwrap();
    let r = paho(&p, token, "-");
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["method"], "X-OAUTH2", "method echoed in CONNACK");
    assert_eq!(r["suback"], serde_json::json!([2]));
    assert_eq!(
        r["got"],
        serde_json::json!([
            ["sensors/t1", "v0", 0],
            ["sensors/t1", "v1", 1],
            ["sensors/t1", "v2", 2]
        ])
    );
    // A username naming the owner is fine, as bare JID or localpart.
    assert_eq!(paho(&p, token, "alice@localhost")["connack"], 0);
    assert_eq!(paho(&p, token, "alice")["connack"], 0);
}

#[test]
fn paho_is_refused_with_a_bad_token() {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let good = p.token("alice@localhost", 3600, "sasl_auth");
    // Unknown token, wrong owner, no sasl_auth scope, revoked: 0x87.
    assert_eq!(paho(&p, "not-a-token", "-")["connack"], 0x87);
    assert_eq!(paho(&p, &good, "bob@localhost")["connack"], 0x87);
    let no_login = p.token("alice@localhost", 3600, "mqtt:publish:x");
    assert_eq!(paho(&p, &no_login, "-")["connack"], 0x87);
    let revoked = p.token("alice@localhost", 3600, "sasl_auth");
    p.ctl_ok(&["oauth_revoke_token", &revoked]);
    assert_eq!(paho(&p, &revoked, "-")["connack"], 0x87);
}

/// paho-mqtt stays connected while the test revokes (or lets expire) its token.
const PAHO_WAIT_FOR_CUT: &str = r#"
import sys, time, json, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, token = int(sys.argv[1]), sys.argv[2]
res = {"connack": None, "disconnect": None, "after": None}
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cut-me", protocol=mqtt.MQTTv5)
t0 = [0]
def on_connect(c, u, f, rc, props):
    res["connack"] = rc.value
    print("connected", flush=True)
    t0[0] = time.time()
def on_disconnect(c, u, f, rc, props):
    res["disconnect"] = rc.value
    res["after"] = time.time() - t0[0]
c.on_connect, c.on_disconnect = on_connect, on_disconnect
p = Properties(PacketTypes.CONNECT)
p.AuthenticationMethod = "X-OAUTH2"
p.AuthenticationData = token.encode()
c.connect("127.0.0.1", port, keepalive=60, properties=p)
c.loop_start()
deadline = time.time() + 20
while res["disconnect"] is None and time.time() < deadline: time.sleep(0.02)
c.loop_stop()
print(json.dumps(res))
"#;

#[test]
fn a_revoked_or_expired_token_cuts_the_live_session() {
    let p = Petrel::start("").with_user_and_client();
    // Revocation through /oauth/revoke while connected.
    let (_, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    let token = v["access_token"].as_str().unwrap().to_string();
    let port = p.mqtt().port().to_string();
    let script = std::thread::spawn({
        let token = token.clone();
        move || run_script(PAHO_WAIT_FOR_CUT, &[&port, &token], Duration::from_secs(60))
    });
    // Wait until the session is registered, then revoke.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !p.ctl_ok(&["connected_users"]).contains("cut-me@localhost") {
        assert!(std::time::Instant::now() < deadline, "paho never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, _, _) = common::post_form(
        &format!("{}/oauth/revoke", p.http()),
        &[
            ("token", &token),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(s, 200);
    let (ok, out, err) = script.join().unwrap();
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(r["connack"], 0);
    assert_eq!(r["disconnect"], 0x87, "DISCONNECT 0x87 on revocation: {r}");

    // Expiry: a two-second token ends its session about then.
    let short = p.token("alice@localhost", 2, "sasl_auth");
    let (ok, out, err) = run_script(
        PAHO_WAIT_FOR_CUT,
        &[&p.mqtt().port().to_string(), &short],
        Duration::from_secs(60),
    );
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(r["disconnect"], 0x87, "{r}");
    let after = r["after"].as_f64().unwrap();
    assert!(after < 10.0, "cut after {after} s, long after expiry");
}

fn mosquitto(bin: &str, p: &Petrel, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(["-h", "127.0.0.1", "-p", &p.mqtt().port().to_string()])
        .args(args);
    c
}

/// mosquitto client arguments for MQTT 5 with an Authentication Method (and
/// Data), then `rest`.
fn v5<'a>(method: &'a str, data: Option<&'a str>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "-V",
        "mqttv5",
        "-D",
        "connect",
        "authentication-method",
        method,
    ];
    if let Some(d) = data {
        v.extend(["-D", "connect", "authentication-data", d]);
    }
    v.extend_from_slice(rest);
    v
}

/// Runs a mosquitto client to its end: its stdout when it succeeded.
fn mosquitto_ok(bin: &str, p: &Petrel, args: &[&str]) -> String {
    let out = mosquitto(bin, p, args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{bin} {args:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs a mosquitto client that must be refused, with `says` in its error
/// output (lower-cased; empty: any refusal).
fn mosquitto_refused(bin: &str, p: &Petrel, args: &[&str], says: &str) {
    let out = mosquitto(bin, p, args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "{bin} {args:?} was let in");
    assert!(err.contains(says), "{bin} {args:?}: {err}");
}

#[test]
fn mosquitto_clients_log_in_with_a_token_v5_and_v311() {
    if !have_program("mosquitto_pub") {
        return;
    }
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let msg = ["-t", "x", "-m", "y"];
    // A retained message published with v5 enhanced auth …
    let publish = v5(
        "X-OAUTH2",
        Some(&token),
        &["-t", "plant/line1", "-m", "running", "-q", "1", "-r"],
    );
    mosquitto_ok("mosquitto_pub", &p, &publish);
    // … is read by a 3.1.1 subscriber that passes the token as its password.
    let sub311 = [
        "-V", "mqttv311", "-u", "alice", "-P", &token, "-t", "plant/#", "-C", "1", "-W", "10", "-v",
    ];
    assert_eq!(
        mosquitto_ok("mosquitto_sub", &p, &sub311),
        "plant/line1 running"
    );
    // And v5 with the password as a token, no username.
    let sub5 = [
        "-V", "mqttv5", "-P", &token, "-t", "plant/#", "-C", "1", "-W", "10",
    ];
    mosquitto_ok("mosquitto_sub", &p, &sub5);
    // A bad token is refused, in both versions.
    let bogus = v5("X-OAUTH2", Some("bogus"), &msg);
    mosquitto_refused("mosquitto_pub", &p, &bogus, "not authorized");
    let bogus311 = [&["-V", "mqttv311", "-u", "alice", "-P", "bogus"][..], &msg].concat();
    mosquitto_refused("mosquitto_pub", &p, &bogus311, "");
    // An unknown method: 0x8C.
    let scram = v5("SCRAM-SHA-1", None, &msg);
    mosquitto_refused("mosquitto_pub", &p, &scram, "bad authentication method");
    // The account's password still works for 3.1.1 devices, a wrong one not.
    let password = |pw: &'static str| {
        [
            &["-V", "mqttv311", "-u", "alice@localhost", "-P", pw][..],
            &msg,
        ]
        .concat()
    };
    mosquitto_ok("mosquitto_pub", &p, &password("wonderland"));
    mosquitto_refused("mosquitto_pub", &p, &password("wrong"), "");
}

#[test]
fn mosquitto_over_tls_with_the_development_certificate() {
    if !have_program("mosquitto_pub") {
        return;
    }
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let cafile = p.data_dir().join("dev-cert.pem");
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &p.mqtts().port().to_string(),
            "--cafile",
        ])
        .arg(&cafile)
        .args([
            "-V",
            "mqttv5",
            "-D",
            "connect",
            "authentication-method",
            "X-OAUTH2",
            "-D",
            "connect",
            "authentication-data",
            &token,
            "-t",
            "secure/x",
            "-m",
            "hello",
            "-q",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqttjs_answers_the_servers_auth_continue_with_the_token() {
    if !have_program("node") {
        return;
    }
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let port = p.mqtt().port().to_string();
    let (ok, out, err) = common::node::run_js("mqtt_auth_flow.js", &[&port, &token]);
    assert!(ok, "{out} {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["asked"], true, "server sent AUTH 0x18: {r}");
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["method"], "X-OAUTH2");
    assert_eq!(r["got"], serde_json::json!(["js/t", "hi"]));
    let (_, out, _) = common::node::run_js("mqtt_auth_flow.js", &[&port, "bad-token"]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["error"], "135", "0x87 after the exchange: {r}");
}

/// Server topic aliases (MQTT 5 3.3.2.3.4) towards MQTT.js, which allows
/// two: each topic goes once with a new alias, then as the alias alone; a
/// third topic takes over the least recently used alias; MQTT.js resolves
/// every message to its topic.
#[test]
fn mqttjs_resolves_the_servers_topic_aliases() {
    if !have_program("node") {
        return;
    }
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let port = p.mqtt().port().to_string();
    let (ok, out, err) = common::node::run_js("mqtt_topic_alias.js", &[&port, &token]);
    assert!(ok, "{out} {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["connack"], 0, "{r}");
    let got: Vec<(String, String, Option<u64>, String)> = r["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g[0].as_str().unwrap_or("").to_string(),
                g[1].as_str().unwrap().to_string(),
                g[2].as_u64(),
                g[3].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = [
        ("ta/a", Some(1), true),
        ("ta/a", Some(1), false),
        ("ta/b", Some(2), true),
        ("ta/a", Some(1), false),
        ("ta/c", Some(2), true), // b was used least recently
        ("ta/c", Some(2), false),
        ("ta/b", Some(1), true), // now a was
    ];
    assert_eq!(got.len(), expect.len(), "{r}");
    for (i, ((topic, payload, alias, wire), (want, want_alias, named))) in
        got.iter().zip(expect).enumerate()
    {
        assert_eq!(payload, &format!("m{i}"), "{r}");
        assert_eq!(topic, want, "MQTT.js resolved message {i}: {r}");
        assert_eq!(*alias, want_alias, "alias of message {i}: {r}");
        assert_eq!(
            !wire.is_empty(),
            named,
            "topic on the wire for message {i}: {r}"
        );
    }
}

/// Protocol scopes: a token scoped `mqtt` (with a topic limit) logs in over
/// MQTT (paho-mqtt) and publishes within its limit, but is refused over
/// XMPP with `<not-authorized/>`; one scoped `xmpp` is refused over MQTT.
#[test]
fn protocol_scopes_choose_the_protocol() {
    let p = Petrel::start("").with_user_and_client();
    let mqtt_only = p.token("alice@localhost", 3600, "mqtt mqtt:publish:sensors/#");
    let r = paho(&p, &mqtt_only, "-");
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["got"].as_array().map(Vec::len), Some(3), "{r}");
    let mut x = common::xmpp::Raw::connect(p.addrs["c2s"][0]);
    let reply = x.try_auth("X-OAUTH2", format!("\0alice\0{mqtt_only}").as_bytes());
    assert!(reply.contains("<not-authorized/>"), "{reply}");
    let xmpp_only = p.token("alice@localhost", 3600, "xmpp");
    assert_eq!(paho(&p, &xmpp_only, "-")["connack"], 0x87);
    let mut x = common::xmpp::Raw::connect(p.addrs["c2s"][0]);
    let reply = x.try_auth("X-OAUTH2", format!("\0alice\0{xmpp_only}").as_bytes());
    assert!(reply.contains("<success"), "{reply}");
}

/// paho-mqtt: a persistent session subscribed to `a/#` and `b/#` goes
/// offline; messages for both are queued; it comes back with a token that
/// may read only `a/#`: the `b/` message is dropped, not delivered.
const PAHO_NARROWER_RESUME: &str = r#"
import sys, time, json, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, wide, narrow = int(sys.argv[1]), sys.argv[2], sys.argv[3]
res = {"got": []}
def session(token, cid, clean):
    state = {"connack": None, "sub": None}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    def on_connect(c, u, f, rc, props): state["connack"] = [rc.value, f.session_present]
    def on_subscribe(c, u, mid, codes, props): state["sub"] = [x.value for x in codes]
    c.on_connect, c.on_subscribe = on_connect, on_subscribe
    c.on_message = lambda c, u, m: res["got"].append(m.topic)
    p = Properties(PacketTypes.CONNECT)
    p.AuthenticationMethod = "X-OAUTH2"
    p.AuthenticationData = token.encode()
    p.SessionExpiryInterval = 300
    c.connect("127.0.0.1", port, clean_start=clean, properties=p)
    c.loop_start()
    deadline = time.time() + 10
    while state["connack"] is None and time.time() < deadline: time.sleep(0.02)
    return c, state
c, st = session(wide, "narrowed", True)
c.subscribe([("a/#", 1), ("b/#", 1)])
deadline = time.time() + 10
while st["sub"] is None and time.time() < deadline: time.sleep(0.02)
res["sub"] = st["sub"]
c.disconnect(); c.loop_stop()
pub, _ = session(wide, "publisher", True)
for t in ("a/1", "b/1", "a/end"):
    pub.publish(t, "x", qos=1).wait_for_publish(5)
pub.disconnect(); pub.loop_stop()
c, st = session(narrow, "narrowed", False)
res["connack"] = st["connack"]
deadline = time.time() + 10
while "a/end" not in res["got"] and time.time() < deadline: time.sleep(0.02)
c.disconnect(); c.loop_stop()
print(json.dumps(res))
"#;

#[test]
fn a_narrower_token_on_resume_drops_what_it_may_not_read() {
    let p = Petrel::start("").with_user_and_client();
    let wide = p.token("alice@localhost", 3600, "sasl_auth");
    let narrow = p.token("alice@localhost", 3600, "mqtt mqtt:subscribe:a/#");
    let (ok, out, err) = run_script(
        PAHO_NARROWER_RESUME,
        &[&p.mqtt().port().to_string(), &wide, &narrow],
        Duration::from_secs(60),
    );
    assert!(ok, "paho script failed: {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["sub"], serde_json::json!([1, 1]), "{r}");
    assert_eq!(r["connack"], serde_json::json!([0, true]), "{r}");
    assert_eq!(r["got"], serde_json::json!(["a/1", "a/end"]), "{r}");
}

/// A WebSocket upgrade to `/mqtt` offering `mqttv3.1, mqtt`: the stream
/// and the response head (lower case).
fn ws_handshake(p: &Petrel) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let addr = p.http().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).to_lowercase())
}

/// MQTT over WebSocket at `/mqtt`: MQTT.js over `ws://` (the HTTP
/// listener) and `wss://` (the HTTPS one), logging in with a token,
/// exchanging messages with an MQTT.js client on TCP.
#[test]
fn mqttjs_over_websocket_ws_and_wss() {
    if !have_program("node") {
        return;
    }
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let port = p.mqtt().port().to_string();
    for base in [p.http(), p.https()] {
        let url = format!("{}/mqtt", base.replacen("http", "ws", 1));
        let (ok, out, err) = common::node::run_js("mqtt_websocket.js", &[&url, &port, &token]);
        assert!(ok, "{url}: {out} {err}");
        let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(r["connack"], 0, "{r}");
        let mut got: Vec<String> = r["got"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| format!("{}={}", g[0].as_str().unwrap(), g[1].as_str().unwrap()))
            .collect();
        got.sort();
        assert_eq!(got, ["ws/other=from tcp", "ws/self=from ws"], "{r}");
        assert_eq!(r["tcpGot"], serde_json::json!([["tcp/x", "to tcp"]]), "{r}");
    }
    // The handshake selects the `mqtt` subprotocol (MQTT 5 §6.0).
    let (_s, head) = ws_handshake(&p);
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: mqtt\r\n"), "{head}");
    // A frame announcing more than `mqtt_ws_max_frame_size` before any
    // login is refused before anything is reserved for it: the
    // connection closes, and the server goes on serving.
    {
        use std::io::{Read, Write};
        let (mut s, _) = ws_handshake(&p);
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        s.write_all(&frame).unwrap();
        // At once, not at the CONNECT timeout (10 s).
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(r.is_ok(), "the server kept waiting for the frame: {r:?}");
        // Nothing but (at most) a close frame came back.
        assert!(rest.is_empty() || rest[0] == 0x88, "{rest:?}");
    }
    // A bad token over WebSocket is refused like over TCP.
    let url = format!("{}/mqtt", p.http().replacen("http", "ws", 1));
    let (ok, out, _) = common::node::run_js("mqtt_websocket.js", &[&url, &port, "nope"]);
    assert!(!ok, "{out}");
}
