//! Fuzzing harnesses: each takes arbitrary bytes, drives one part of the
//! server the way a client (or a damaged disk) would, and panics only on a
//! bug — a panic in the server's code or a broken invariant checked here.
//!
//! The cargo-fuzz targets in `fuzz/` call these, and so does the stable
//! test `tests/fuzz_regressions.rs`, which replays every input kept under
//! `fuzz/regressions/<target>/` (crashes found once stay fixed). Every
//! harness builds a fresh world per input (an in-memory store, a manual
//! clock, counting randomness), so an input replays the same way anywhere.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::auth::{AuthCore, BareJid, LoginStep};
use crate::config::Config;
use crate::mqtt::broker::Broker;
use crate::mqtt::codec::{self, Packet, Version};
use crate::mqtt::session::{Connection, MqttSettings, Next};
use crate::session::{CountingEntropy, FlowLimits, ManualClock, Registry};
use crate::store::{Store, Tree};
use crate::xmpp::c2s::{C2s, Output, TlsPolicy};
use crate::xmpp::stream::{Limits, StreamEvent, XmlStream};

const HOST: &str = "localhost";
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// The stored records of alice (password "pw") and bob ("pw"), made once:
/// PBKDF2 per input would make every harness a thousand times slower.
fn user_records() -> &'static Vec<(String, Vec<u8>)> {
    static USERS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    USERS.get_or_init(|| {
        let auth = AuthCore::new(Store::memory(), &Config::default()).expect("auth core");
        ["alice", "bob"]
            .iter()
            .map(|u| {
                let jid = BareJid::parse(&format!("{u}@{HOST}")).expect("jid");
                auth.register(&jid, "pw").expect("register");
                let rec = auth
                    .store()
                    .get_blocking(Tree::Users, jid.to_string().as_bytes())
                    .expect("read")
                    .expect("stored");
                (jid.to_string(), rec)
            })
            .collect()
    })
}

/// A fresh server state: store with alice and bob, auth core, registry
/// on a manual clock.
struct World {
    config: Config,
    auth: Arc<AuthCore>,
    clock: Arc<ManualClock>,
    registry: Arc<Registry>,
}

impl World {
    fn new() -> World {
        let config = Config::default();
        let store = Store::memory();
        for (k, v) in user_records() {
            store.put(Tree::Users, k.clone(), v.clone());
        }
        store.barrier_blocking().expect("memory store");
        let auth = Arc::new(AuthCore::new(store, &config).expect("auth core"));
        let clock = Arc::new(ManualClock::default());
        let registry = Arc::new(Registry::with_entropy(
            FlowLimits {
                high_water: config.session_queue_high_water,
                slow_consumer: Duration::from_secs(config.slow_consumer_timeout),
            },
            clock.clone(),
            Arc::new(CountingEntropy::default()),
        ));
        auth.set_events(registry.clone());
        World {
            config,
            auth,
            clock,
            registry,
        }
    }

    fn token(&self, user: &str) -> String {
        self.auth
            .issue_token(
                &BareJid::parse(&format!("{user}@{HOST}")).expect("jid"),
                crate::auth::Scopes::sasl_auth(),
                None,
                None,
            )
            .expect("token")
            .token
    }
}

// ---------------------------------------------------------------- MQTT ----

/// The MQTT connection/session core after (or during) login.
///
/// Input: byte 0 is the clock step in seconds taken after every packet;
/// byte 1 picks the login the harness sends first (0: none — the input
/// brings its own CONNECT; 1: v5 with a token; 2: 3.1.1 with the token as
/// password; 3: v5 with alice's password); the rest is what the socket
/// delivers. A second connection, subscribed to `#`, receives whatever
/// gets routed. Checks: no panic; everything the server writes decodes as
/// packets of the connection's version; a closed connection stays closed.
/// Returns how many packets were handled after login (seeds must get
/// that far).
pub fn mqtt_connection(data: &[u8]) -> usize {
    let [step, login, stream @ ..] = data else {
        return 0;
    };
    let mut handled_live = 0;
    let w = World::new();
    let broker = Arc::new(
        Broker::new(
            &w.config.hosts,
            w.auth.store().clone(),
            w.registry.clone(),
            w.config.mqtt_max_queue,
        )
        .expect("broker"),
    );
    let settings = Arc::new(MqttSettings::from_config(&w.config));
    let token = w.token("alice");
    let connect = |id: &str, v: Version, how: u8| -> Option<Packet> {
        let mut c = codec::Connect {
            version: v,
            clean_start: true,
            keep_alive: 60,
            properties: codec::Properties::default(),
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
        };
        match how {
            1 => {
                c.properties.authentication_method = Some("X-OAUTH2".into());
                c.properties.authentication_data = Some(Bytes::from(token.clone()));
            }
            2 => c.password = Some(Bytes::from(token.clone())),
            3 => {
                c.username = Some("alice".into());
                c.password = Some(Bytes::from_static(b"pw"));
            }
            _ => return None,
        }
        Some(Packet::Connect(c))
    };
    // The watcher: logged in with the token, subscribed to everything.
    let mut watcher = Connection::new(broker.clone(), w.auth.clone(), settings.clone());
    let mut watcher_out = BytesMut::new();
    if let Some(p) = connect("watcher", Version::V5, 1) {
        let next = watcher.handle(p);
        decide(&w.auth, &mut watcher, next);
        watcher.handle(Packet::Subscribe(codec::Subscribe {
            packet_id: 1,
            properties: codec::Properties::default(),
            filters: vec![("#".into(), codec::SubscriptionOptions::default())],
        }));
    }
    let mut conn = Connection::new(broker.clone(), w.auth.clone(), settings.clone());
    let mut written = BytesMut::new();
    let mut closed = false;
    let version = match login % 4 {
        2 => Version::V311,
        _ => Version::V5,
    };
    if let Some(p) = connect("fuzz", version, login % 4) {
        let next = conn.handle(p);
        if decide(&w.auth, &mut conn, next) == Next::Close {
            closed = true;
        }
    }
    let mut buf = BytesMut::from(stream);
    while !closed {
        let next = match codec::decode(&mut buf, conn.version(), conn.max_packet_size()) {
            Ok(Some(p)) => {
                handled_live += usize::from(conn.is_live());
                conn.handle(p)
            }
            Ok(None) => break,
            Err(e) => conn.decode_error(&e),
        };
        if decide(&w.auth, &mut conn, next) == Next::Close {
            closed = true;
        }
        conn.pump();
        watcher.pump();
        written.extend_from_slice(&conn.out);
        conn.out.clear();
        watcher_out.extend_from_slice(&watcher.out);
        watcher.out.clear();
        w.clock.advance(Duration::from_secs(u64::from(*step)));
    }
    conn.pump();
    written.extend_from_slice(&conn.out);
    conn.out.clear();
    if let Some(after) = conn.finish(false) {
        drop(after);
    }
    if closed {
        // Nothing more is read from a closed connection.
        assert_eq!(
            conn.handle(Packet::PingReq),
            Next::Close,
            "a closed connection handled a packet"
        );
    }
    check_decodes(&written, conn.version().unwrap_or(version));
    watcher.pump();
    watcher_out.extend_from_slice(&watcher.out);
    check_decodes(&watcher_out, Version::V5);
    drop(watcher.finish(false));
    handled_live
}

/// Runs a login the connection asked for, as its task would.
fn decide(auth: &AuthCore, conn: &mut Connection, next: Next) -> Next {
    match next {
        Next::Login(req) => {
            let result = match auth.login(*req) {
                LoginStep::Done(r) => r,
                LoginStep::CheckPassword(check) => auth.check_login_password(check),
            };
            conn.login_decided(result)
        }
        other => other,
    }
}

/// Everything the server wrote must decode as whole packets.
fn check_decodes(written: &[u8], v: Version) {
    let mut buf = BytesMut::from(written);
    loop {
        match codec::decode(&mut buf, Some(v), usize::MAX) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("the server wrote an undecodable packet ({v:?}): {e}"),
        }
    }
    assert!(buf.is_empty(), "the server wrote a partial packet");
}

// ---------------------------------------------------------------- XMPP ----

/// The XMPP session after login: the harness opens a stream, logs alice
/// in with a token (X-OAUTH2) and binds a resource; bob is bound and
/// available beside her. The input is what alice's client sends next (the
/// stream header already sent), parsed with the production limits: IM,
/// roster, presence, disco, pings, bad stanzas. Checks: no panic; every
/// stanza the server answers or routes parses as XML again; the stream
/// state machine stays consistent (a closed stream produces nothing).
/// Returns how many of the input's stanzas the IM service handled.
pub fn xmpp_session(data: &[u8]) -> usize {
    let mut handled = 0;
    let w = World::new();
    let im = crate::xmpp::ImServer::with_offline_limit(
        w.auth.clone(),
        crate::xmpp::Router::new(w.registry.clone()),
        w.config.max_offline_messages,
    );
    let token = w.token("alice");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let hosts: Arc<[String]> = w.config.hosts.clone().into();
    let mut c2s = C2s::new(
        hosts,
        TlsPolicy {
            secure: true,
            starttls: false,
            required: false,
        },
        Arc::new(CountingEntropy::default()),
    );
    let mut parser = XmlStream::new(Limits::from_config(&w.config));
    let bob = im.open_session(
        crate::xmpp::stanza::Jid::parse("bob@localhost/desk").expect("jid"),
        BareJid::parse("bob@localhost").expect("jid"),
        None,
    );
    let mut bob = Box::new(bob);
    let presence = crate::xmpp::element::Element::new("presence", crate::xmpp::stream::NS_CLIENT);
    rt.block_on(im.handle(&mut bob, presence));

    let login = format!(
        "{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-OAUTH2'>{}</auth>",
        {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{token}"))
        }
    );
    let bind = format!(
        "{HEADER}<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>fuzz</resource></bind></iq>"
    );
    let mut alice: Option<crate::xmpp::im::ImSession> = None;
    let mut routed: Vec<Bytes> = Vec::new();
    let mut closed = false;
    for chunk in [login.as_bytes(), bind.as_bytes(), data] {
        if closed {
            break;
        }
        parser.feed(chunk);
        loop {
            let mut out = Vec::new();
            match parser.next_event() {
                Ok(Some(ev)) => c2s.event(ev, &mut out),
                Ok(None) => break,
                Err(e) => c2s.parse_error(&e, &mut out),
            }
            let mut queue: std::collections::VecDeque<Output> = out.into();
            let mut restart = false;
            while let Some(o) = queue.pop_front() {
                match o {
                    Output::Send(_) => {}
                    Output::StartTls => closed = true,
                    Output::ResetParser => {
                        parser.reset();
                        restart = true;
                    }
                    Output::Auth(req) => {
                        let mut more = Vec::new();
                        c2s.auth_reply(crate::xmpp::sasl::perform(&w.auth, req), &mut more);
                        for m in more.into_iter().rev() {
                            queue.push_front(m);
                        }
                    }
                    Output::ClientState(_)
                    | Output::Reply(_)
                    | Output::SmEnable { .. }
                    | Output::SmAck(_)
                    | Output::SmResume { .. }
                    | Output::Sasl2(_) => {}
                    Output::Bind(jid) => {
                        let user = c2s.user().cloned().expect("bound after login");
                        let scopes = c2s.grant().map(|g| g.scopes().clone());
                        alice = Some(im.open_session(jid, user, scopes));
                    }
                    Output::Stanza(el) => {
                        let Some(s) = alice.as_mut() else {
                            panic!("a stanza came through before binding");
                        };
                        let fx = rt.block_on(im.handle(s, el));
                        handled += usize::from(chunk.as_ptr() == data.as_ptr());
                        routed.extend(fx.replies);
                    }
                    Output::Close => closed = true,
                }
            }
            for s in alice.iter().chain(std::iter::once(&*bob)) {
                let limits = *w.registry.limits();
                while let Some(b) = s.route.pop(&limits, w.registry.now_ms()) {
                    routed.push(b);
                }
            }
            if closed || restart {
                break;
            }
        }
        if chunk.as_ptr() != data.as_ptr() {
            assert!(
                !closed && alice.is_some() == (chunk.as_ptr() == bind.as_ptr()),
                "the harness's own login failed"
            );
        }
    }
    if closed {
        let mut out = Vec::new();
        c2s.event(StreamEvent::StreamEnd, &mut out);
        assert!(
            out.iter().all(|o| matches!(o, Output::Close)),
            "a closed stream acted"
        );
    }
    if let Some(s) = alice {
        rt.block_on(im.close_session(s));
    }
    rt.block_on(im.close_session(*bob));
    for b in &routed {
        check_parses(b);
    }
    handled
}

/// A stanza the server wrote must parse as XML (generous limits: an error
/// reply may carry the stanza it answers).
fn check_parses(stanza: &[u8]) {
    let mut p = XmlStream::new(Limits {
        max_stanza_size: usize::MAX,
        max_header_size: 4096,
        max_depth: 1024,
        max_attrs: usize::MAX,
        max_children: usize::MAX,
        max_elements: usize::MAX,
        max_namespace_len: usize::MAX,
    });
    p.feed(HEADER.as_bytes());
    p.feed(stanza);
    let mut stanzas = 0;
    loop {
        match p.next_event() {
            Ok(Some(StreamEvent::Stanza(_))) => stanzas += 1,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!(
                "the server wrote XML it cannot read back ({}): {}",
                e.condition(),
                String::from_utf8_lossy(stanza)
            ),
        }
    }
    assert_eq!(
        stanzas,
        1,
        "one stanza per item: {}",
        String::from_utf8_lossy(stanza)
    );
}

// --------------------------------------------------------------- OAuth ----

/// The OAuth endpoints' parsing, from raw request parts: byte 0 picks the
/// endpoint (token — every grant —, revoke, sign-in page, sign-in form, the
/// ttl/scope/CSRF-stamp parsers, introspection, device authorization, the
/// device page and its form); the rest is split at the first NUL into a
/// header (Authorization or Cookie) and the body or query. A password
/// client `app` (secret `s`), an implicit client `web`, a public client
/// `pub` and a confidential client `conf` (secret `s`) are registered.
/// Checks: no panic; every error is a 4xx with an RFC 6749 error code;
/// nothing answers 500.
pub fn oauth_request(data: &[u8]) {
    use crate::oauth::{authorize, token, OauthState};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (
            Some(String::from_utf8_lossy(&rest[..i]).into_owned()),
            &rest[i + 1..],
        ),
        None => (None, rest),
    };
    let w = World::new();
    let state = OauthState::new(w.auth.clone(), &w.config, false, 5280);
    static CLIENTS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(|| {
        let auth = AuthCore::new(Store::memory(), &Config::default()).expect("auth core");
        auth.add_password_client("app", "App", "s").expect("client");
        auth.add_implicit_client("web", "Web", "https://app.example/cb")
            .expect("client");
        auth.add_public_client("pub", "Public", "https://app.example/cb")
            .expect("client");
        auth.add_confidential_client("conf", "Conf", "s", "https://app.example/cb")
            .expect("client");
        auth.store()
            .scan_prefix_blocking(Tree::Clients, b"")
            .expect("scan")
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).expect("id"), v))
            .collect()
    });
    for (k, v) in clients {
        w.auth.store().put(Tree::Clients, k.clone(), v.clone());
    }
    w.auth.store().barrier_blocking().expect("memory store");
    let peer = Some(std::net::IpAddr::from([192, 0, 2, 1]));
    let check = |r: Result<warp::http::Response<Bytes>, crate::oauth::OauthError>| match r {
        Ok(resp) => assert!(resp.status().as_u16() < 500, "{resp:?}"),
        Err(e) => {
            let resp = e.into_response();
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "status {status}");
            let body: serde_json::Value =
                serde_json::from_slice(resp.body()).expect("an error body is JSON");
            assert!(body["error"].is_string(), "{body}");
        }
    };
    match which % 9 {
        0 => check(token::token_endpoint(&state, header.as_deref(), body, peer)),
        1 => check(token::revoke(&state, header.as_deref(), body, peer)),
        2 => {
            let resp = authorize::show(&state, &String::from_utf8_lossy(body), which & 0x80 != 0);
            assert!(resp.status().as_u16() < 500, "{resp:?}");
        }
        3 => {
            let resp = authorize::submit(&state, header.as_deref(), body, false, peer);
            assert!(resp.status().as_u16() < 500, "{resp:?}");
        }
        6 => check(token::introspect(&state, header.as_deref(), body, peer)),
        7 => check(crate::oauth::device::authorization(
            &state,
            header.as_deref(),
            body,
            peer,
        )),
        8 => {
            let resp = if which & 0x80 != 0 {
                crate::oauth::device::show(&state, &String::from_utf8_lossy(body), false, peer)
            } else {
                crate::oauth::device::submit(&state, header.as_deref(), body, false, peer)
            };
            assert!(resp.status().as_u16() < 500, "{resp:?}");
        }
        4 => {
            if let Ok(form) = crate::oauth::parse_form(body) {
                let _ = token::parse_ttl(form.get("ttl"));
                let _ = token::parse_scope(form.get("scope"));
                let _ = crate::oauth::client_credentials(header.as_deref(), &form);
            }
        }
        _ => {
            if body.len() >= 16 {
                let ts = u64::from_be_bytes(body[..8].try_into().expect("8"));
                let now = u64::from_be_bytes(body[8..16].try_into().expect("8"));
                // Stamps from any time are judged without overflow.
                let fresh = crate::oauth::pages::csrf_fresh(ts, now);
                assert!(!fresh || ts <= now.saturating_add(5));
            }
        }
    }
}

// ------------------------------------------------------------- records ----

/// Stored records as a damaged disk might hold them: the input is a list
/// of entries (tree selector, key length, key, value length as two bytes,
/// value) written into a fresh store, which is then migrated and loaded
/// the way the server starts (auth core, broker, restored MQTT sessions),
/// and read by the XMPP side (alice's roster, offline messages, presence).
/// Checks: no panic; the start succeeds unless the layout record itself
/// was damaged (an unknown layout must stop the server, not be guessed).
pub fn stored_records(data: &[u8]) {
    let store = Store::memory();
    for (k, v) in user_records() {
        store.put(Tree::Users, k.clone(), v.clone());
    }
    let mut rest = data;
    let mut layout_touched = false;
    while let [tree, klen, more @ ..] = rest {
        let klen = usize::from(*klen).min(more.len());
        let (key, more) = more.split_at(klen);
        let [a, b, more @ ..] = more else { break };
        let vlen = usize::from(u16::from_be_bytes([*a, *b])).min(more.len());
        let (value, more) = more.split_at(vlen);
        let tree = Tree::ALL[usize::from(*tree) % Tree::ALL.len()];
        if tree == Tree::Meta && key == b"layout" {
            layout_touched = true;
        }
        store.put(tree, key.to_vec(), value.to_vec());
        rest = more;
    }
    store.barrier_blocking().expect("memory store");
    if let Err(e) = crate::store::migrate::to_current(&store) {
        assert!(layout_touched, "migration failed on records: {e}");
        return;
    }
    let config = Config::default();
    let auth =
        Arc::new(AuthCore::new(store.clone(), &config).expect("a damaged record stops the start"));
    let clock = Arc::new(ManualClock::default());
    let registry = Arc::new(Registry::with_entropy(
        FlowLimits::default(),
        clock,
        Arc::new(CountingEntropy::default()),
    ));
    let broker = Broker::new(
        &config.hosts,
        store.clone(),
        registry.clone(),
        config.mqtt_max_queue,
    )
    .expect("a damaged record stops the broker");
    broker
        .restore_sessions()
        .expect("a damaged record stops the session restore");
    let _ = auth.list_tokens();
    let _ = auth.registered_users(HOST);
    let im = crate::xmpp::ImServer::new(auth.clone(), crate::xmpp::Router::new(registry));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut s = im.open_session(
        crate::xmpp::stanza::Jid::parse("alice@localhost/r").expect("jid"),
        BareJid::parse("alice@localhost").expect("jid"),
        None,
    );
    for stanza in [
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        "<presence/>",
    ] {
        let mut p = XmlStream::new(Limits::default());
        p.feed(HEADER.as_bytes());
        p.feed(stanza.as_bytes());
        while let Ok(Some(ev)) = p.next_event() {
            if let StreamEvent::Stanza(el) = ev {
                let fx = rt.block_on(im.handle(&mut s, el));
                for r in &fx.replies {
                    check_parses(r);
                }
            }
        }
    }
    let limits = FlowLimits::default();
    while let Some(b) = s.route.pop(&limits, 0) {
        check_parses(&b);
    }
    rt.block_on(im.close_session(s));
}

// -------------------------------------------------------------- config ----

/// The config file parser: any text gives a config or an error naming the
/// problem, never a panic; a config that parses has sane limits.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(text) {
        assert!(!c.hosts.is_empty(), "a config without hosts");
        let _ = Limits::from_config(&c);
        let _ = MqttSettings::from_config(&c);
        for l in &c.listen {
            let _ = l.per_ip_cap();
            let _ = l.requires_starttls();
        }
    }
}
