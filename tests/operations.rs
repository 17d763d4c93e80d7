//! Operating Petrel: `serve --check-config`, JSON logs with audit lines,
//! and certificate rotation
//! without a restart — SIGHUP (and `ctl reload`) re-read the certificate
//! files; a new connection gets the new certificate while an established one
//! stays up; a bad file is refused and the old certificate stays.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Petrel, BIN};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Writes a self-signed certificate for `cn` (and localhost) and its key.
fn write_cert(dir: &Path, cn: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// The DER of the certificate now in `dir`.
fn cert_der(dir: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(dir.join("cert.pem"))
        .unwrap()
        .to_vec()
}

/// Accepts any certificate: the test compares it itself.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An XMPP stream over direct TLS, opened up to the features; the
/// certificate the server showed.
fn xmpps(addr: std::net::SocketAddr) -> (Tls, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let features = open(&mut tls);
    assert!(features.contains("<stream:features>"), "{features}");
    let cert = tls.conn.peer_certificates().unwrap()[0].to_vec();
    (tls, cert)
}

/// Sends a stream header and reads up to the end of the features.
fn open(tls: &mut Tls) -> String {
    tls.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
          xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("</stream:features>") {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn server(dir: &Path) -> Petrel {
    let files = format!(
        "certfiles = [{:?}, {:?}]",
        dir.join("cert.pem").display().to_string(),
        dir.join("key.pem").display().to_string()
    );
    Petrel::start(&files)
}

/// Waits (with a deadline) until a new connection shows `want`.
fn wait_for_cert(addr: std::net::SocketAddr, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if xmpps(addr).1 == want {
            return;
        }
        assert!(Instant::now() < deadline, "the new certificate never came");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_and_ctl_reload_rotate_the_certificate_and_keep_old_sessions() {
    let certs = tempfile::tempdir().unwrap();
    write_cert(certs.path(), "first");
    let first = cert_der(certs.path());
    let p = server(certs.path());
    let addr = p.addrs["c2s"][1];
    let (mut old, shown) = xmpps(addr);
    assert_eq!(shown, first);

    // Renewed on disk; SIGHUP.
    write_cert(certs.path(), "second");
    let second = cert_der(certs.path());
    let pid = p.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for_cert(addr, &second);
    // The established connection still works on its own TLS session: its
    // stream's end is answered.
    old.write_all(b"</stream:stream>").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("</stream:stream>") {
        let n = old.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the old connection died: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }

    // A broken file is refused with a clear message; the old one stays.
    std::fs::write(certs.path().join("cert.pem"), "not a certificate").unwrap();
    let out = p.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cert.pem") && err.contains("old config stays"),
        "{err}"
    );
    assert_eq!(xmpps(addr).1, second);

    // And `ctl reload` takes a good one.
    write_cert(certs.path(), "third");
    let third = cert_der(certs.path());
    assert!(p.ctl_ok(&["reload"]).contains("reloaded"));
    assert_eq!(xmpps(addr).1, third);
}

#[test]
fn check_config_says_good_or_bad_and_exits_0_or_2() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), "ok");
    let check = |toml: &str| {
        let cfg = dir.path().join("p.toml");
        std::fs::write(&cfg, toml).unwrap();
        Command::new(BIN)
            .args(["serve", "--check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let good = format!(
        "data_dir = {:?}\ncertfiles = [{:?}, {:?}]\n[[listen]]\nmodule = \"c2s\"\nport = 0\ntls = true\n",
        dir.path().join("d").display().to_string(),
        dir.path().join("cert.pem").display().to_string(),
        dir.path().join("key.pem").display().to_string()
    );
    let out = check(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
    assert!(!dir.path().join("d").exists(), "a check writes nothing");
    let out = check(&good.replace("port = 0", "port = \"x\""));
    assert_eq!(out.status.code(), Some(2));
    let out = check(&good.replace("key.pem", "missing.pem"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
}

/// `log_format = "json"`: every line is one JSON object; connection events
/// carry the connection's span (peer, JID, session id); admin commands and
/// token issues and revocations leave audit lines without any secret.
#[test]
fn json_logs_with_spans_and_audit_lines() {
    let mut p = Petrel::start_logging("log_format = \"json\"");
    p.ctl_ok(&["register", "alice", "localhost", "s3cret-pw"]);
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let mut c = common::xmpp::Raw::login_token(p.addrs["c2s"][0], "alice", &token, "desk");
    c.ping("p1");
    p.ctl_ok(&["oauth_revoke_token", &token]);
    let _ = c.read_to_close();
    p.stop();
    let text = std::fs::read_to_string(p.log.as_ref().unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        !text.contains("s3cret-pw") && !text.contains(&token),
        "a secret was logged"
    );
    let find = |msg: &str| {
        lines
            .iter()
            .filter(|l| l["message"] == msg)
            .cloned()
            .collect::<Vec<_>>()
    };
    let admin = find("admin command");
    let register = admin
        .iter()
        .find(|l| l["command"] == "register")
        .expect("an audit line for register");
    assert_eq!(register["target"], "petrel::audit");
    assert_eq!(register["args"], "alice localhost <hidden>");
    assert_eq!(register["result"], "done");
    assert!(admin
        .iter()
        .any(|l| l["command"] == "oauth_revoke_token" && l["args"] == "<hidden>"));
    let issued = find("token issued");
    assert!(issued
        .iter()
        .any(|l| l["owner"] == "alice@localhost" && l["grant"] == "ctl"));
    let revoked = find("token revoked");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    let bound = find("session bound");
    let span = &bound.first().expect("a session line")["span"];
    assert_eq!(span["jid"], "alice@localhost/desk");
    assert!(span["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(span["session"].as_u64().is_some(), "{span}");
}

/// Parses an OpenMetrics scrape with the Prometheus project's own parser
/// (Python `prometheus_client`): `name{labels}` (labels sorted, JSON) →
/// value.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True, separators=(",", ":"))] = s.value
print(json.dumps(out))
"#;
    let (ok, out, err) = common::python::run_script(
        script,
        &[file.path().to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(ok, "the parser refused the scrape: {err}\n{text}");
    serde_json::from_str(out.trim()).unwrap()
}

fn sample(m: &std::collections::HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
    let key = format!("{name}{}", serde_json::to_string(&labels).unwrap());
    *m.get(&key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

/// `/metrics` during a scripted session: each family moves as the session
/// goes (scraped and parsed, never matched with a regex).
#[test]
fn metrics_move_with_a_scripted_session() {
    if !common::have_program("mosquitto_pub") {
        return;
    }
    let listeners = format!(
        "{}\n[[listen]]\nmodule = \"metrics\"\nport = 0\n",
        common::LISTENERS
    );
    let p = Petrel::start_with_listeners("", &listeners);
    let url = format!("http://{}/metrics", p.addrs["metrics"][0]);
    let scrape = || {
        let r = reqwest::blocking::get(&url).unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        parse_metrics(&r.text().unwrap())
    };
    assert_eq!(
        reqwest::blocking::get(url.replace("/metrics", "/other"))
            .unwrap()
            .status(),
        404
    );
    let before = scrape();
    assert_eq!(
        sample(
            &before,
            "petrel_connections",
            &[("protocol", "xmpp"), ("transport", "tcp")]
        ),
        0.0
    );

    p.ctl_ok(&["register", "alice", "localhost", "pw"]);
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let c2s = p.addrs["c2s"][0];
    let mut bad = common::xmpp::Raw::connect(c2s);
    assert!(bad
        .try_auth("X-OAUTH2", b"\0alice\0not-a-token")
        .contains("not-authorized"));
    let mut alice = common::xmpp::Raw::login_token(c2s, "alice", &token, "desk");
    alice.available();
    alice.send("<message to='alice@localhost/desk' type='chat'><body>hi</body></message>");
    alice.expect("<body>hi</body>");
    let port = p.mqtt().port().to_string();
    let mqtt = |prog: &str, extra: &[&str]| {
        let out = Command::new(prog)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "alice",
                "-P",
                &token,
                "-q",
                "1",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{prog}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    mqtt(
        "mosquitto_pub",
        &["-t", "m/t", "-m", "kept", "-r", "-i", "pub1"],
    );
    mqtt(
        "mosquitto_sub",
        &["-t", "m/t", "-C", "1", "-W", "10", "-i", "sub1"],
    );
    // A persistent session, gone: a QoS 0 message for it is not kept.
    mqtt("mosquitto_sub", &["-t", "d/#", "-c", "-E", "-i", "away"]);
    mqtt(
        "mosquitto_pub",
        &["-t", "d/x", "-m", "x", "-i", "pub2", "-q", "0"],
    );
    // A message to an account with no resource online is stored offline.
    p.ctl_ok(&["register", "bob", "localhost", "pw"]);
    alice.send("<message to='bob@localhost' type='chat' id='off1'><body>later</body></message>");
    alice.ping("after-offline");

    let m = scrape();
    assert_eq!(
        sample(&m, "petrel_tokens_issued_total", &[("grant", "ctl")]),
        1.0
    );
    let login = |proto, method, result| {
        sample(
            &m,
            "petrel_logins_total",
            &[("method", method), ("protocol", proto), ("result", result)],
        )
    };
    assert_eq!(login("xmpp", "x-oauth2", "success"), 1.0);
    assert_eq!(login("xmpp", "x-oauth2", "failure"), 1.0);
    assert_eq!(login("mqtt", "token", "success"), 4.0);
    assert_eq!(
        sample(&m, "petrel_mqtt_messages_received_total", &[("qos", "1")]),
        1.0
    );
    assert_eq!(
        sample(&m, "petrel_mqtt_messages_sent_total", &[("qos", "1")]),
        1.0
    );
    // mosquitto_pub -q 0 above.
    assert_eq!(
        sample(&m, "petrel_mqtt_messages_received_total", &[("qos", "0")]),
        1.0
    );
    assert_eq!(sample(&m, "petrel_mqtt_retained_messages", &[]), 1.0);
    assert!(
        sample(
            &m,
            "petrel_xmpp_stanzas_routed_total",
            &[("kind", "message")]
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            "petrel_xmpp_stanzas_routed_total",
            &[("kind", "presence")]
        ) >= 1.0
    );
    assert_eq!(
        sample(
            &m,
            "petrel_connections",
            &[("protocol", "xmpp"), ("transport", "tcp")]
        ),
        2.0,
        "alice's, and the one whose login failed"
    );
    assert_eq!(sample(&m, "petrel_sessions", &[("protocol", "xmpp")]), 1.0);
    assert_eq!(
        sample(&m, "petrel_queued_messages", &[("protocol", "mqtt")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "petrel_messages_dropped_total",
            &[("reason", "qos0_session_offline")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "petrel_messages_dropped_total",
            &[("reason", "session_queue_full")]
        ),
        0.0
    );
    assert_eq!(
        sample(&m, "petrel_store_records", &[("tree", "offline")]),
        1.0
    );
    // Archived: alice's message to herself (each side) and to bob.
    assert!(sample(&m, "petrel_store_records", &[("tree", "archive")]) >= 2.0);
    // The retained QoS 1 publish waited for a commit; logins read tokens.
    for op in ["commit", "write", "read"] {
        assert!(
            sample(
                &m,
                "petrel_store_operation_duration_seconds_count",
                &[("op", op)]
            ) >= 1.0,
            "{op}"
        );
    }
    // Every series the Grafana dashboard in configs/ queries exists.
    let dashboard = include_str!("../configs/grafana-petrel.json");
    let known: std::collections::HashSet<&str> =
        m.keys().map(|k| k.split('{').next().unwrap()).collect();
    let used: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("petrel_"))
        .collect();
    assert!(used.len() >= 6);
    for name in used {
        assert!(
            known.contains(name),
            "the dashboard queries {name}, which is not exported"
        );
    }
    assert!(sample(&m, "petrel_process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&m, "petrel_process_open_fds", &[]) > 3.0);

    p.ctl_ok(&["oauth_revoke_token", &token]);
    let _ = alice.read_to_close();
    drop(bad);
    // The connections are counted down as their tasks end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape();
        if sample(
            &m,
            "petrel_connections",
            &[("protocol", "xmpp"), ("transport", "tcp")],
        ) == 0.0
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "XMPP connections never counted down"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        sample(&m, "petrel_tokens_revoked_total", &[("grant", "ctl")]),
        1.0
    );
}

/// The admin HTTP API: `POST /api/<ctl command>` with JSON arguments, for a
/// `petrel:admin` token only (which the OAuth endpoints never issue).
#[test]
fn admin_api_runs_ctl_commands_for_an_admin_token_only() {
    let p = Petrel::start("http_api = true").with_user_and_client();
    let admin = p.token("alice@localhost", 3600, "petrel:admin");
    let user = p.token("alice@localhost", 3600, "sasl_auth");
    let c = common::client();
    let call = |cmd: &str, token: Option<&str>, body: serde_json::Value| {
        let mut r = c.post(format!("{}/api/{cmd}", p.http())).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, r.json::<serde_json::Value>().unwrap(), www)
    };
    let bob = serde_json::json!({"user": "bob", "host": "localhost", "password": "pw"});
    let (s, v, www) = call("register", None, bob.clone());
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_request")));
    assert!(www.unwrap().starts_with("Bearer"));
    let (s, v, _) = call("register", Some("nonsense"), bob.clone());
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_token")));
    let (s, v, _) = call("register", Some(&user), bob.clone());
    assert_eq!((s, v["error"].as_str()), (403, Some("insufficient_scope")));
    let (s, v, _) = call("register", Some(&admin), bob.clone());
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"], "User bob@localhost successfully registered");
    let (s, v, _) = call(
        "registered-users",
        Some(&admin),
        serde_json::json!(["localhost"]),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"], "alice\nbob", "ejabberdctl lists localparts");
    let (s, v, _) = call("register", Some(&admin), bob);
    assert_eq!((s, v["error"].as_str()), (400, Some("refused")));
    assert!(v["message"].as_str().unwrap().contains("already exists"));
    let (s, v, _) = call(
        "register",
        Some(&admin),
        serde_json::json!({"user": "carol"}),
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, _, _) = call("frobnicate", Some(&admin), serde_json::json!([]));
    assert_eq!(s, 404);
    // The OAuth endpoints never hand out the admin scope.
    let (s, v) = common::password_grant(
        &p.http(),
        "alice@localhost",
        "wonderland",
        &[("scope", "petrel:admin")],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_scope")),
        "{v}"
    );
}

#[test]
fn admin_api_is_off_unless_configured() {
    let p = Petrel::start("").with_user_and_client();
    let admin = p.token("alice@localhost", 3600, "petrel:admin");
    let r = common::client()
        .post(format!("{}/api/status", p.http()))
        .bearer_auth(&admin)
        .json(&serde_json::json!([]))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// `ctl reload` with a changed config file: access rules apply to the next
/// packet of an open connection, the log level changes, new connections
/// get the new limits, a key that needs a restart is named, and a bad file
/// is refused with the old config kept.
#[test]
fn reload_applies_access_rules_log_level_and_limits() {
    use common::mqtt_raw::{connect_packet, RawClient};
    use petrel::mqtt::codec::{Packet, Subscribe, Version};
    const DENY: &str = "mqtt_max_packet_size = 100000\n\
        [[mqtt_acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"secret/#\"\n";
    let p = Petrel::start_logging(DENY).with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let logins = std::sync::atomic::AtomicUsize::new(0);
    let login = || {
        let n = logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut c = RawClient::connect(p.mqtt(), Version::V5);
        c.send(&connect_packet(
            &format!("dev{n}"),
            Some("X-OAUTH2"),
            Some(token.as_bytes()),
        ));
        match c.recv() {
            Some(Packet::ConnAck(a)) => {
                assert_eq!(a.reason_code, 0);
                (c, a.properties.maximum_packet_size)
            }
            other => panic!("{other:?}"),
        }
    };
    let mut id = 0;
    let mut subscribe = |c: &mut RawClient| {
        id += 1;
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: id,
            properties: Default::default(),
            filters: vec![("secret/x".to_string(), Default::default())],
        }));
        match c.recv() {
            Some(Packet::SubAck(s)) => s.reason_codes[0],
            other => panic!("{other:?}"),
        }
    };
    let (mut c, max) = login();
    assert_eq!(max, Some(100_000));
    assert_eq!(subscribe(&mut c), 0x87, "the rule denies");
    let log_lines = || {
        std::fs::read_to_string(p.log.as_ref().unwrap())
            .unwrap()
            .lines()
            .filter(|l| l.contains("admin command") && l.contains("stats"))
            .count()
    };
    p.ctl_ok(&["stats", "onlineusers"]);
    assert_eq!(log_lines(), 1);

    // The rule gone, a smaller packet limit, level warn, another host.
    let original = std::fs::read_to_string(&p.config).unwrap();
    let changed = original
        .replace(DENY, "mqtt_max_packet_size = 50000\nlog_level = \"warn\"\n")
        .replacen(
            "data_dir",
            "hosts = [\"localhost\", \"example.net\"]\ndata_dir",
            1,
        );
    assert_ne!(changed, original);
    std::fs::write(&p.config, &changed).unwrap();
    let out = p.ctl_ok(&["reload"]);
    assert!(out.contains("0 MQTT access rules"), "{out}");
    assert!(out.contains("log level warn"), "{out}");
    assert!(out.contains("next restart: hosts"), "{out}");
    assert_eq!(subscribe(&mut c), 0, "the open connection's next packet");
    assert_eq!(login().1, Some(50_000), "a new connection's limit");
    p.ctl_ok(&["stats", "onlineusers"]);
    assert_eq!(log_lines(), 1, "info lines are off at warn");

    // A bad file: refused, named, nothing changes.
    std::fs::write(
        &p.config,
        changed.replace("\"warn\"", "\"warn\"\nmqtt_acl_default = \"maybe\""),
    )
    .unwrap();
    // (`ctl` itself reads the file to find the server, and says so.)
    let out = p.ctl(&["reload"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt_acl_default"));
    let pid = p.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(p.log.as_ref().unwrap())
        .unwrap()
        .lines()
        .any(|l| l.contains("mqtt_acl_default") && l.contains("old config stays"))
    {
        assert!(Instant::now() < deadline, "no refusal logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(login().1, Some(50_000));

    // Back to the first file: denied again, info again.
    std::fs::write(&p.config, &original).unwrap();
    let out = p.ctl_ok(&["reload"]);
    assert!(
        out.contains("1 MQTT access rules") && !out.contains("restart"),
        "{out}"
    );
    assert_eq!(subscribe(&mut c), 0x87);
    p.ctl_ok(&["stats", "onlineusers"]);
    assert_eq!(log_lines(), 2);
}
