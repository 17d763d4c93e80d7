//! The load generator's engine against the real server, in-process (MQTT
//! and XMPP scenarios): short runs that check the bookkeeping (no losses,
//! no duplicates, every connection counted), never performance.

mod common;

use std::sync::Arc;

use common::Petrel;
use petrel::loadgen::{self, Options, Progress};

fn plan(args: &[String]) -> loadgen::Plan {
    let mut v = vec!["load".to_string()];
    v.extend_from_slice(args);
    Options::parse_from_args(v)
        .expect("options parse")
        .plan()
        .expect("options accepted")
        .expect("a scenario")
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// A server with one user and a file of X-OAUTH2 tokens for it.
fn server_with_tokens(n: usize) -> (Petrel, std::path::PathBuf) {
    let p = Petrel::start("").with_user_and_client();
    let tokens: Vec<String> = (0..n)
        .map(|_| p.token("alice@localhost", 3600, "sasl_auth"))
        .collect();
    let file = p.dir.path().join("tokens.txt");
    std::fs::write(&file, tokens.join("\n")).unwrap();
    (p, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_qos1_one_to_one_loses_nothing() {
    let (p, tokens) = server_with_tokens(2);
    let mut a = args("mqtt-pubsub --auth x-oauth2 --publishers 2 --subscribers 2 --layout one-to-one --qos 1 --payload 64 --rate 2000 --duration 1.5");
    a.extend(["--target".into(), p.mqtt().to_string()]);
    a.extend(["--tokens".into(), tokens.display().to_string()]);
    let progress = Arc::new(Progress::new());
    let report = loadgen::run(&plan(&a), progress.clone()).await.unwrap();
    let m = report.messages.as_ref().expect("message figures");
    assert!(m.sent > 0, "{report:#?}");
    assert_eq!(report.connects.ok, 4, "{:?}", report.errors);
    assert_eq!(report.connects.failed, 0);
    assert_eq!(m.lost, 0, "{report:#?}");
    assert_eq!(m.duplicates, 0, "{report:#?}");
    assert_eq!(m.unexpected, 0);
    assert_eq!(m.received, m.sent, "{report:#?}");
    assert_eq!(m.expected, m.sent);
    assert_eq!(m.acked, m.sent, "every QoS 1 publish acknowledged");
    assert_eq!(m.per_subscriber.len(), 2);
    for s in &m.per_subscriber {
        assert_eq!((s.lost, s.duplicates), (0, 0));
        assert!(s.received > 0);
    }
    assert_eq!(m.latency.count, m.received);
    assert!(m.latency.p50_us > 0.0 && m.latency.p99_us >= m.latency.p50_us);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.timeline.len() >= 2);
    // The report serializes with every figure.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["setup"]["scenario"], "mqtt-pubsub");
    assert_eq!(json["messages"]["lost"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_opens_and_holds_fifty() {
    let (p, tokens) = server_with_tokens(3);
    let pid = p.child.as_ref().unwrap().id();
    let mut a = args("mqtt-conn --auth x-oauth2 --count 50 --rate 500 --duration 1");
    a.extend(["--target".into(), p.mqtt().to_string()]);
    a.extend(["--tokens".into(), tokens.display().to_string()]);
    a.extend(["--pid".into(), pid.to_string()]);
    a.extend(["--source-ips".into(), "127.0.0.1,127.0.0.2".into()]);
    let report = loadgen::run(&plan(&a), Arc::new(Progress::new()))
        .await
        .unwrap();
    assert_eq!(report.connects.ok, 50, "{:?}", report.errors);
    assert_eq!(report.connects.failed, 0);
    assert_eq!(report.connects.dropped, 0);
    assert_eq!(report.connects.latency.count, 50);
    let mem = report.memory.as_ref().expect("memory figures with --pid");
    assert_eq!(mem.connections_held, 50);
    assert!(mem.rss_before_bytes > 0 && mem.rss_held_bytes > 0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_counted_as_failed_connects() {
    let p = Petrel::start("");
    let file = p.dir.path().join("bad-tokens.txt");
    std::fs::write(&file, "not-a-token\n").unwrap();
    let mut a = args("mqtt-conn --auth x-oauth2 --count 5 --duration 0.2");
    a.extend(["--target".into(), p.mqtt().to_string()]);
    a.extend(["--tokens".into(), file.display().to_string()]);
    let report = loadgen::run(&plan(&a), Arc::new(Progress::new()))
        .await
        .unwrap();
    assert_eq!((report.connects.ok, report.connects.failed), (0, 5));
    assert!(
        report
            .errors
            .iter()
            .any(|(e, n)| e.contains("0x87") && *n == 5),
        "{:?}",
        report.errors
    );
}

/// `--username-with-token` (what ejabberd's mod_mqtt needs): the username
/// beside the X-OAUTH2 token is accepted when it names the token's owner and
/// refused otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_oauth2_with_the_username() {
    let (p, tokens) = server_with_tokens(1);
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    for (user, ok) in [("alice@localhost", 3), ("bob@localhost", 0)] {
        let mut a =
            args("mqtt-conn --auth x-oauth2 --username-with-token --count 3 --duration 0.2");
        a.extend(["--target".into(), p.mqtt().to_string()]);
        a.extend(["--tokens".into(), tokens.display().to_string()]);
        a.extend(["--user-pattern".into(), user.into()]);
        let report = loadgen::run(&plan(&a), Arc::new(Progress::new()))
            .await
            .unwrap();
        assert_eq!(report.connects.ok, ok, "{user}: {:?}", report.errors);
        assert_eq!(report.connects.failed, 3 - ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_password_grant() {
    let p = Petrel::start("").with_user_and_client();
    let mut a = args("mqtt-pubsub --auth token-as-password --mqtt-version 3 --user-pattern alice@localhost --password wonderland --client-id app --client-secret app-secret --qos 2 --count 200 --rate 1000 --duration 5");
    a.extend(["--target".into(), p.mqtt().to_string()]);
    a.extend(["--oauth-url".into(), format!("{}/oauth/token", p.http())]);
    let report = loadgen::run(&plan(&a), Arc::new(Progress::new()))
        .await
        .unwrap();
    let m = report.messages.unwrap();
    assert_eq!(m.sent, 200, "{:?}", report.errors);
    assert_eq!((m.received, m.lost, m.duplicates), (200, 0, 0));
}

// --- XMPP -------------------------------------------------------------------

/// A server with `n` users `user0..` (password `pw`) and the usual OAuth
/// client.
fn server_with_users(n: usize) -> Petrel {
    // Load runs log in many times from one address, wrong passwords
    // included: the login throttle is not what these tests measure.
    let p = Petrel::start("login_failures_allowed = 1000").with_user_and_client();
    for i in 0..n {
        p.ctl_ok(&["register", &format!("user{i}"), "localhost", "pw"]);
    }
    p
}

/// The plain c2s listener (STARTTLS offered).
fn c2s(p: &Petrel) -> String {
    p.addrs["c2s"][0].to_string()
}

/// The direct-TLS c2s listener.
fn c2s_tls(p: &Petrel) -> String {
    p.addrs["c2s"][1].to_string()
}

async fn run(a: &[String]) -> loadgen::Report {
    loadgen::run(&plan(a), Arc::new(Progress::new()))
        .await
        .unwrap()
}

fn assert_all_logged_in(report: &loadgen::Report, n: u64) {
    let c = &report.connects;
    assert_eq!(
        (c.attempted, c.ok, c.failed),
        (n, n, 0),
        "{:?}",
        report.errors
    );
    assert_eq!(c.latency.count, n);
    assert!(c.latency.p50_us > 0.0 && c.latency.max_us >= c.latency.p99_us);
    assert!(c.per_s > 0.0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_login_x_oauth2_with_password_grant_tokens() {
    let p = server_with_users(2);
    let mut a = args("xmpp-login --auth x-oauth2 --users 2 --password pw --client-id app --client-secret app-secret --count 40 --rate 400");
    a.extend(["--target".into(), c2s(&p)]);
    a.extend(["--oauth-url".into(), format!("{}/oauth/token", p.http())]);
    let report = run(&a).await;
    assert_all_logged_in(&report, 40);
    assert_eq!(report.setup.scenario, "xmpp-login");
    assert_eq!(report.setup.mqtt_version, None);
    assert!(report.messages.is_none());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["setup"]["auth"], "x-oauth2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_login_scram_sha_256_over_starttls() {
    let p = server_with_users(3);
    let mut a = args(
        "xmpp-login --auth scram-sha-256 --starttls --users 3 --password pw --count 30 --presence",
    );
    a.extend(["--target".into(), c2s(&p)]);
    let report = run(&a).await;
    assert_all_logged_in(&report, 30);
    assert!(report.setup.starttls);
    assert_eq!(
        serde_json::to_value(report.setup.auth).unwrap(),
        "scram-sha-256"
    );
}

/// SASL2 + FAST logins (one round trip, bound inline) over direct TLS,
/// each user's token fetched first; every login checks the server's proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_login_fast_over_tls() {
    let p = server_with_users(3);
    let mut a = args("xmpp-login --auth fast --tls --users 3 --password pw --count 30 --presence");
    a.extend(["--target".into(), c2s_tls(&p)]);
    let report = run(&a).await;
    assert_all_logged_in(&report, 30);
    assert_eq!(serde_json::to_value(report.setup.auth).unwrap(), "fast");
    // One FAST token per user, listed as such.
    let list = p.ctl_ok(&["oauth_list_tokens"]);
    assert_eq!(
        list.lines().filter(|l| l.ends_with(" fast")).count(),
        3,
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_login_plain_over_tls_held_with_memory() {
    let p = server_with_users(2);
    let pid = p.child.as_ref().unwrap().id();
    let mut a = args(
        "xmpp-login --auth plain --tls --users 2 --password pw --count 20 --hold --duration 0.5",
    );
    a.extend(["--target".into(), c2s_tls(&p)]);
    a.extend(["--pid".into(), pid.to_string()]);
    let report = run(&a).await;
    assert_all_logged_in(&report, 20);
    assert_eq!(report.connects.dropped, 0);
    let mem = report
        .memory
        .as_ref()
        .expect("memory figures with --pid --hold");
    assert_eq!(mem.connections_held, 20);
    assert!(report.processes.iter().any(|p| p.role == "broker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_login_wrong_password_counts_failures() {
    let p = server_with_users(1);
    let mut a = args("xmpp-login --auth password --password wrong --user-pattern user0@localhost --count 6 --rate 100");
    a.extend(["--target".into(), c2s(&p)]);
    let report = run(&a).await;
    let c = &report.connects;
    assert_eq!((c.ok, c.failed), (0, 6), "{:?}", report.errors);
    assert_eq!(
        report.errors,
        vec![("login: SASL failure not-authorized".to_string(), 6)]
    );
    // The same run with SCRAM fails the same way, after the full exchange.
    let mut a = args(
        "xmpp-login --auth scram-sha-256 --password wrong --user-pattern user0@localhost --count 3",
    );
    a.extend(["--target".into(), c2s(&p)]);
    let report = run(&a).await;
    assert_eq!((report.connects.ok, report.connects.failed), (0, 3));
    assert_eq!(
        report.errors,
        vec![("login: SASL failure not-authorized".to_string(), 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_chat_pairs_lose_nothing() {
    // 3 pairs over 3 accounts: sessions share accounts, each its resource.
    let p = server_with_users(3);
    let mut a = args("xmpp-chat --auth plain --users 3 --password pw --pairs 3 --count 300 --rate 3000 --payload 100 --inflight 16 --duration 5");
    a.extend(["--target".into(), c2s(&p)]);
    let report = run(&a).await;
    assert_eq!(report.connects.ok, 6, "{:?}", report.errors);
    let m = report.messages.as_ref().expect("message figures");
    assert_eq!(m.sent, 6 * 300, "{report:#?}");
    assert_eq!(m.expected, m.sent);
    assert_eq!(m.received, m.sent, "{report:#?}");
    assert_eq!(
        (m.lost, m.duplicates, m.unexpected),
        (0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(m.latency.count, m.received);
    assert!(m.latency.p50_us > 0.0 && m.latency.p99_us >= m.latency.p50_us);
    assert_eq!(m.per_subscriber.len(), 6);
    for s in &m.per_subscriber {
        assert_eq!((s.expected, s.received, s.lost), (300, 300, 0), "{s:?}");
    }
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.setup.pairs, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_chat_unlimited_to_bare_jids_with_tokens() {
    let p = server_with_users(4);
    let tokens: Vec<String> = (0..4)
        .map(|i| p.token(&format!("user{i}@localhost"), 3600, "sasl_auth"))
        .collect();
    let file = p.dir.path().join("xmpp-tokens.txt");
    std::fs::write(&file, tokens.join("\n")).unwrap();
    let mut a =
        args("xmpp-chat --auth x-oauth2 --users 4 --pairs 2 --to-bare --inflight 8 --duration 1");
    a.extend(["--target".into(), c2s(&p)]);
    a.extend(["--tokens".into(), file.display().to_string()]);
    let report = run(&a).await;
    let m = report.messages.as_ref().expect("message figures");
    assert!(m.sent > 0, "{report:#?}");
    assert_eq!(m.received, m.sent, "{report:#?}");
    assert_eq!((m.lost, m.duplicates, m.unexpected), (0, 0, 0));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

// --- The MQTT ⇄ XMPP bridge ---------------------------------------------------

/// A server with a bridge rule `bench/+/data` ⇄ node `bench/{1}/data` and
/// `n` users `user0..` (password `pw`), each allowed to publish to the
/// nodes the rule creates.
fn bridge_server(n: usize) -> Petrel {
    let publishers: Vec<String> = (0..n).map(|i| format!("\"user{i}@localhost\"")).collect();
    let extra = format!(
        "login_failures_allowed = 1000\n\n[[bridge.rule]]\nmqtt = \"bench/+/data\"\n\
         node = \"bench/{{1}}/data\"\ndirection = \"both\"\nqos = 1\nretain = true\n\
         access = \"open\"\npublishers = [{}]\n",
        publishers.join(", ")
    );
    let p = Petrel::start(&extra);
    for i in 0..n {
        p.ctl_ok(&["register", &format!("user{i}"), "localhost", "pw"]);
    }
    p
}

fn assert_bridged_all(report: &loadgen::Report, scenario: &str, pairs: u64, count: u64) {
    assert_eq!(report.setup.scenario, scenario);
    assert_eq!(report.connects.ok, 2 * pairs, "{:?}", report.errors);
    assert_eq!(report.connects.failed, 0);
    let m = report.messages.as_ref().expect("message figures");
    assert_eq!(m.sent, pairs * count, "{report:#?}");
    assert_eq!(m.acked, m.sent, "every publish acknowledged: {report:#?}");
    assert_eq!(m.expected, m.sent);
    assert_eq!(m.received, m.sent, "{report:#?}");
    assert_eq!(
        (m.lost, m.duplicates, m.unexpected),
        (0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(m.per_subscriber.len() as u64, pairs);
    for s in &m.per_subscriber {
        assert_eq!((s.expected, s.received, s.lost), (count, count, 0), "{s:?}");
    }
    assert_eq!(m.latency.count, m.received);
    assert_eq!(m.ack_latency.count, m.sent);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

/// MQTT → XMPP, XMPP → MQTT, then MQTT → XMPP again on the same nodes:
/// nothing lost either way, and what the first runs left (the topics'
/// retained messages, the nodes' last items sent on subscription) is not
/// counted by the later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_both_ways_loses_nothing() {
    let p = bridge_server(2);
    let run_one = |scenario: &str| {
        let mut a = args(&format!(
            "{scenario} --auth password --users 2 --password pw --pairs 2 --count 150 --rate 1500 --payload 80 --inflight 16 --duration 10"
        ));
        a.extend(["--target".into(), p.mqtt().to_string()]);
        a.extend(["--xmpp-target".into(), c2s(&p)]);
        a
    };
    let report = run(&run_one("bridge")).await;
    assert_bridged_all(&report, "bridge", 2, 150);
    assert_eq!(report.setup.qos, Some(1));
    assert_eq!(report.setup.xmpp_target, Some(c2s(&p)));
    let report = run(&run_one("bridge-back")).await;
    assert_bridged_all(&report, "bridge-back", 2, 150);
    let report = run(&run_one("bridge")).await;
    assert_bridged_all(&report, "bridge", 2, 150);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["setup"]["topic_pattern"], "bench/%d/data");
    assert_eq!(json["messages"]["lost"], 0);
}

/// The bridge over TLS on both sides (MQTT on 8883's listener, XMPP direct
/// TLS), and with X-OAUTH2 tokens: one token per account serves the pair's
/// MQTT client and XMPP session alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_over_tls_with_tokens() {
    let p = bridge_server(2);
    let tokens: Vec<String> = (0..2)
        .map(|i| p.token(&format!("user{i}@localhost"), 3600, "sasl_auth"))
        .collect();
    let file = p.dir.path().join("bridge-tokens.txt");
    std::fs::write(&file, tokens.join("\n")).unwrap();
    for scenario in ["bridge", "bridge-back"] {
        let mut a = args(&format!(
            "{scenario} --tls --auth x-oauth2 --users 2 --pairs 2 --count 50 --rate 500 --duration 10"
        ));
        a.extend(["--target".into(), p.mqtts().to_string()]);
        a.extend(["--xmpp-target".into(), c2s_tls(&p)]);
        a.extend(["--tokens".into(), file.display().to_string()]);
        let report = run(&a).await;
        assert_bridged_all(&report, scenario, 2, 50);
        assert!(report.setup.tls);
    }
}

/// Several `--target`s (the nodes of a cluster): connection i goes to
/// target i mod n, so two servers hold half each while the run holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_spreads_over_several_targets() {
    let a_srv = Arc::new(Petrel::start("mqtt_allow_anonymous = true"));
    let b_srv = Arc::new(Petrel::start("mqtt_allow_anonymous = true"));
    let mut a = args("mqtt-conn --auth none --count 10 --rate 1000 --duration 30");
    a.extend([
        "--target".into(),
        format!("{},{}", a_srv.mqtt(), b_srv.mqtt()),
    ]);
    let progress = Arc::new(Progress::new());
    let plan = plan(&a);
    let run = tokio::spawn({
        let progress = progress.clone();
        async move { loadgen::run(&plan, progress).await }
    });
    let online = |p: Arc<Petrel>| async move {
        tokio::task::spawn_blocking(move || p.ctl_ok(&["stats", "onlineusers"]).trim().to_string())
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (x, y) = (online(a_srv.clone()).await, online(b_srv.clone()).await);
        if x == "5" && y == "5" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "online on the two targets: {x} and {y}, not 5 and 5"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    run.abort();
}

/// `--session-expiry`: the subscribers keep persistent sessions (every QoS 1
/// message stored for them before it is acknowledged); nothing is lost and
/// the sessions are still there after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_qos1_to_persistent_sessions() {
    use common::mqtt_raw::{connect_packet, RawClient};
    use petrel::mqtt::codec::{Packet, Version};
    let (p, tokens) = server_with_tokens(2);
    let mut a = args("mqtt-pubsub --auth x-oauth2 --publishers 2 --subscribers 2 --layout one-to-one --qos 1 --payload 64 --rate 500 --duration 1 --session-expiry 300");
    a.extend(["--target".into(), p.mqtt().to_string()]);
    a.extend(["--tokens".into(), tokens.display().to_string()]);
    let report = loadgen::run(&plan(&a), Arc::new(Progress::new()))
        .await
        .unwrap();
    let m = report.messages.as_ref().expect("message figures");
    assert!(m.sent > 0, "{report:#?}");
    assert_eq!((m.lost, m.duplicates), (0, 0), "{report:#?}");
    assert_eq!(m.acked, m.sent);
    assert_eq!(report.setup.session_expiry_s, Some(300));
    // Subscriber 0's session outlived its connection.
    let id = format!("lg{}s0", std::process::id() % 100_000);
    let token = std::fs::read_to_string(&tokens).unwrap();
    let token = token.lines().next().unwrap().to_string();
    let present = tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(p.mqtt(), Version::V5);
        let mut pk = connect_packet(&id, Some("X-OAUTH2"), Some(token.as_bytes()));
        if let Packet::Connect(cn) = &mut pk {
            cn.clean_start = false;
            cn.properties.session_expiry_interval = Some(300);
        }
        c.send(&pk);
        matches!(c.recv(), Some(Packet::ConnAck(a)) if a.session_present)
    })
    .await
    .unwrap();
    assert!(present, "the subscriber's session was kept");
}

/// `mqtt-storm`: devices with persistent sessions drop at once, messages are
/// queued for them, all reconnect together and get every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_devices_come_back_to_their_queued_messages() {
    let (p, tokens) = server_with_tokens(4);
    let pid = p.child.as_ref().unwrap().id();
    let mut a = args("mqtt-storm --auth x-oauth2 --count 40 --queued 3 --duration 30");
    a.extend(["--target".into(), p.mqtt().to_string()]);
    a.extend(["--tokens".into(), tokens.display().to_string()]);
    a.extend(["--pid".into(), pid.to_string()]);
    let report = loadgen::run(&plan(&a), Arc::new(Progress::new()))
        .await
        .unwrap();
    let st = report.storm.as_ref().expect("storm figures");
    assert_eq!(st.devices, 40, "{:?}", report.errors);
    assert_eq!(st.session_expiry_s, 3600, "persistent unless told");
    assert_eq!(st.queued_acked, 120, "{:?}", report.errors);
    assert_eq!((st.reconnected, st.failed), (40, 0), "{:?}", report.errors);
    assert_eq!(st.sessions_resumed, 40, "every stored session found");
    assert_eq!((st.expected, st.received, st.lost), (120, 120, 0));
    assert_eq!(st.devices_complete, 40);
    assert!(st.all_back_s.is_some() && st.all_delivered_s.is_some());
    assert!(st.all_delivered_s >= st.all_back_s);
    assert!(st.rss_peak_bytes >= st.rss_before_bytes && st.rss_before_bytes.is_some());
    assert_eq!(report.connects.ok, 40);
}
