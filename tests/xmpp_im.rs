//! Instant messaging over raw sockets (RFC 6121): message routing by bare
//! and full JID with priorities, iq routing and the server's own answers,
//! rosters with pushes, the subscription state machine, presence, and
//! offline messages.

mod common;

use std::time::Duration;

use common::xmpp::Raw;
use common::Petrel;

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

fn login(p: &Petrel, user: &str, resource: &str) -> Raw {
    let pw = if user == "alice" {
        "wonderland"
    } else {
        "builder"
    };
    Raw::login(p.addrs["c2s"][0], user, pw, resource)
}

#[test]
fn messages_to_full_and_bare_jids_follow_priority() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    alice.available();
    let mut hi = login(&p, "bob", "hi");
    hi.send("<presence><priority>5</priority></presence>");
    hi.expect("</presence>");
    let mut lo = login(&p, "bob", "lo");
    lo.send("<presence><priority>1</priority></presence>");
    lo.expect("</presence>");

    // Bare JID: the highest priority resource only.
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>to bare</body></message>");
    let got = hi.expect("</message>");
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
    assert!(got.contains("<body>to bare</body>"), "{got}");
    assert!(!lo.drain_for(Duration::from_millis(300)).contains("to bare"));

    // Full JID: exactly that resource, whatever its priority.
    alice.send("<message to='bob@localhost/lo' type='chat'><body>to lo</body></message>");
    assert!(lo.expect("</message>").contains("<body>to lo</body>"));
    assert!(!hi.drain_for(Duration::from_millis(300)).contains("to lo"));

    // A full JID that is not online falls back to the bare JID for chat.
    alice.send("<message to='bob@localhost/gone' type='chat'><body>fallback</body></message>");
    assert!(hi.expect("</message>").contains("fallback"));

    // Headline: every non-negative resource.
    alice.send("<message to='bob@localhost' type='headline'><body>news</body></message>");
    hi.expect("news");
    lo.expect("news");

    // Groupchat to a user: service-unavailable.
    alice.send("<message to='bob@localhost' type='groupchat' id='g'><body>x</body></message>");
    let e = alice.expect("</message>");
    assert!(
        e.contains("type='error'") && e.contains("<service-unavailable"),
        "{e}"
    );

    // Unknown account and another domain.
    alice.send("<message to='nobody@localhost' type='chat' id='n'><body>x</body></message>");
    assert!(alice.expect("</message>").contains("<service-unavailable"));
    alice.send("<message to='carol@elsewhere.example' id='r'><body>x</body></message>");
    assert!(alice
        .expect("</message>")
        .contains("<remote-server-not-found"));
}

#[test]
fn negative_priority_gets_no_bare_messages_so_they_go_offline() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    let mut bob = login(&p, "bob", "shy");
    bob.send("<presence><priority>-1</priority></presence>");
    bob.expect("</presence>");
    alice.send("<message to='bob@localhost' type='chat'><body>later</body></message>");
    assert!(!bob.drain_for(Duration::from_millis(300)).contains("later"));
    drop(bob);
    let mut bob = login(&p, "bob", "desk");
    bob.available();
    let got = bob.expect("</message>");
    assert!(got.contains("<body>later</body>"), "{got}");
}

#[test]
fn offline_message_is_delivered_after_initial_presence() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    alice.send(
        "<message to='bob@localhost' type='chat' id='o1'><body>while you were out</body></message>",
    );
    // No error comes back: it was stored.
    assert!(!alice
        .drain_for(Duration::from_millis(300))
        .contains("error"));
    let mut bob = login(&p, "bob", "b");
    // Not before initial presence…
    assert!(!bob
        .drain_for(Duration::from_millis(300))
        .contains("while you were out"));
    bob.send("<presence/>");
    let got = bob.expect("</message>");
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
    assert!(got.contains("<body>while you were out</body>"), "{got}");
    assert!(
        got.contains("<delay xmlns='urn:xmpp:delay' from='localhost' stamp='"),
        "{got}"
    );
    // …and only once.
    drop(bob);
    let mut bob = login(&p, "bob", "b2");
    bob.send("<presence/>");
    assert!(!bob
        .drain_for(Duration::from_millis(500))
        .contains("while you were out"));
}

#[test]
fn iq_routing_and_server_answers() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    let mut bob = login(&p, "bob", "b");
    // An iq to a full JID reaches that session, and its answer comes back.
    alice.send(
        "<iq type='get' id='v1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>",
    );
    let got = bob.expect("</iq>");
    assert!(got.contains("from='alice@localhost/a'"), "{got}");
    bob.send("<iq type='result' id='v1' to='alice@localhost/a'><query xmlns='jabber:iq:version'><name>bobclient</name></query></iq>");
    assert!(alice.expect("</iq>").contains("bobclient"));
    // Nobody at that full JID: service-unavailable.
    alice.send(
        "<iq type='get' id='v2' to='bob@localhost/nope'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert!(alice.expect("</iq>").contains("<service-unavailable"));
    // An iq to a bare JID that the server does not handle.
    alice.send("<iq type='get' id='v3' to='bob@localhost'><query xmlns='jabber:iq:version'/></iq>");
    assert!(alice.expect("</iq>").contains("<service-unavailable"));

    // The server: ping, version, disco#info and disco#items.
    alice.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(alice
        .expect("/>")
        .contains("<iq type='result' id='p' from='localhost' to='alice@localhost/a'"));
    alice.send("<iq type='get' id='ver' to='localhost'><query xmlns='jabber:iq:version'/></iq>");
    assert!(alice.expect("</iq>").contains("<name>Petrel</name>"));
    alice.send("<iq type='get' id='di' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = alice.expect("</iq>");
    assert!(info.contains("category='server' type='im'"), "{info}");
    for f in [
        "urn:xmpp:ping",
        "jabber:iq:version",
        "http://jabber.org/protocol/disco#items",
    ] {
        assert!(info.contains(&format!("var='{f}'")), "{f}: {info}");
    }
    alice.send("<iq type='get' id='dit' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    let items = alice.expect("</iq>");
    assert!(items.contains("type='result' id='dit'"), "{items}");
    // By default every service is on (upload: the server has an http
    // listener).
    for s in ["conference", "upload", "pubsub", "mqtt"] {
        assert!(
            items.contains(&format!("jid='{s}.localhost'")),
            "{s}: {items}"
        );
    }
    assert!(items.matches("<item").count() == 4, "{items}");
    alice.send("<iq type='get' id='unk' to='localhost'><query xmlns='urn:example:nothing'/></iq>");
    assert!(alice.expect("</iq>").contains("<service-unavailable"));
    // The account's own bare JID.
    alice.send(
        "<iq type='get' id='self'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(alice
        .expect("</iq>")
        .contains("category='account' type='registered'"));
    // Someone else's account, without a subscription: as if it did not exist.
    alice.send("<iq type='get' id='other' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert!(alice.expect("</iq>").contains("<service-unavailable"));
}

#[test]
fn services_on_subdomains_are_listed_and_answer_only_when_on() {
    let p =
        Petrel::start("[muc]\nenabled = true\n[upload]\nenabled = false\n").with_user_and_client();
    let mut alice = login(&p, "alice", "a");
    alice.send("<iq type='get' id='dit' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    let items = alice.expect("</iq>");
    assert!(
        items.contains("jid='conference.localhost'"),
        "the group chat service is listed: {items}"
    );
    assert!(
        !items.contains("upload.localhost"),
        "upload is off: {items}"
    );
    alice.send("<iq type='get' id='mi' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = alice.expect("</iq>");
    assert!(info.contains("from='conference.localhost'"), "{info}");
    assert!(info.contains("category='conference'"), "{info}");
    // A service that is off is no domain of this server.
    alice.send("<iq type='get' id='ui' to='upload.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert!(alice.expect("</iq>").contains("<remote-server-not-found"));
    alice.send("<message to='upload.localhost' id='m1'><body>hi</body></message>");
    assert!(alice
        .expect("</message>")
        .contains("<remote-server-not-found"));
}

#[test]
fn roster_set_get_remove_with_pushes_to_interested_resources() {
    let p = server();
    let mut a1 = login(&p, "alice", "one");
    let mut a2 = login(&p, "alice", "two");
    let mut a3 = login(&p, "alice", "uninterested");
    for c in [&mut a1, &mut a2] {
        c.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>");
        assert!(c.expect("</iq>").contains("id='r0'"));
    }
    a1.send(
        "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>\
         <item jid='Bob@LocalHost' name='Bob'><group>Friends</group></item></query></iq>",
    );
    // The result to the requester, and a push to both interested resources.
    let got = a1.expect("id='r1'");
    assert!(got.contains("type='result'"), "{got}");
    for c in [&mut a1, &mut a2] {
        let push = c.expect("</iq>");
        assert!(push.contains("type='set'"), "{push}");
        assert!(
            push.contains("<item jid='bob@localhost' subscription='none' name='Bob'><group>Friends</group></item>"),
            "{push}"
        );
    }
    assert!(!a3
        .drain_for(Duration::from_millis(300))
        .contains("jabber:iq:roster"));
    a2.send("<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>");
    let roster = a2.expect("</iq>");
    assert!(
        roster.contains("jid='bob@localhost'") && roster.contains("name='Bob'"),
        "{roster}"
    );

    // Durable: a restart keeps it.
    drop((a1, a2, a3));
    let mut p = p;
    p.stop();
    p.spawn();
    let mut a = login(&p, "alice", "again");
    a.send("<iq type='get' id='r3'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(a.expect("</iq>").contains("name='Bob'"));

    a.send("<iq type='set' id='r4'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    let got = a.expect("id='r4'");
    assert!(got.contains("type='result'"), "{got}");
    assert!(a.expect("</iq>").contains("subscription='remove'"));
    a.send("<iq type='set' id='r5'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    assert!(a.expect("</iq>").contains("<item-not-found"));
    a.send("<iq type='set' id='r6'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/><item jid='y@localhost'/></query></iq>");
    assert!(a.expect("</iq>").contains("<bad-request"));
    // Another user's roster is not ours to read.
    a.send("<iq type='get' id='r7' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(a.expect("</iq>").contains("<service-unavailable"));
}

#[test]
fn read_only_token_may_read_but_not_change_the_roster() {
    let p = server();
    let token = p
        .ctl_ok(&[
            "oauth_issue_token",
            "alice@localhost",
            "3600",
            "sasl_auth;xmpp:roster:read",
        ])
        .trim()
        .to_string();
    let mut a = Raw::login_token(p.addrs["c2s"][0], "alice", &token, "ro");
    a.send("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(a.expect("</iq>").contains("type='result'"));
    a.send("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>");
    assert!(a.expect("</iq>").contains("<forbidden"));
    a.send("<presence to='bob@localhost' type='subscribe'/>");
    assert!(a.expect("</presence>").contains("<forbidden"));
}

/// Waits for a presence stanza containing all of `parts`.
fn expect_presence(c: &mut Raw, parts: &[&str]) -> String {
    loop {
        let start = c.expect("<presence");
        let _ = start;
        let rest = c.expect(">");
        let mut stanza = format!("<presence{rest}");
        if !rest.ends_with("/>") {
            stanza.push_str(&c.expect("</presence>"));
        }
        if parts.iter().all(|p| stanza.contains(p)) {
            return stanza;
        }
    }
}

#[test]
fn subscription_handshake_presence_and_unavailable() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    alice.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
    alice.expect("id='r'");
    alice.available();
    let mut bob = login(&p, "bob", "b");
    bob.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
    bob.expect("id='r'");
    bob.available();

    // alice asks; her roster shows ask=subscribe; bob gets the request.
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    let push = alice.expect("</iq>");
    assert!(
        push.contains("jid='bob@localhost' subscription='none' ask='subscribe'"),
        "{push}"
    );
    expect_presence(&mut bob, &["type='subscribe'", "from='alice@localhost'"]);

    // bob approves: both rosters change, and bob's presence reaches alice.
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    let push = bob.expect("</iq>");
    assert!(
        push.contains("jid='alice@localhost' subscription='from'"),
        "{push}"
    );
    let push = alice.expect("</iq>");
    assert!(
        push.contains("jid='bob@localhost' subscription='to'"),
        "{push}"
    );
    expect_presence(&mut alice, &["type='subscribed'", "from='bob@localhost'"]);
    expect_presence(&mut alice, &["from='bob@localhost/b'"]);

    // bob's next broadcast reaches alice; alice's does not reach bob.
    bob.send("<presence><show>away</show></presence>");
    let got = expect_presence(&mut alice, &["from='bob@localhost/b'", "<show>away</show>"]);
    assert!(got.contains("to='alice@localhost/a'"), "{got}");
    alice.send("<presence><show>dnd</show></presence>");
    assert!(!bob.drain_for(Duration::from_millis(300)).contains("dnd"));

    // A new session of alice gets bob's presence at once (the probe answer).
    let mut alice2 = login(&p, "alice", "a2");
    alice2.send("<presence/>");
    expect_presence(
        &mut alice2,
        &["from='bob@localhost/b'", "<show>away</show>"],
    );

    // bob going away sends unavailable to alice's resources.
    drop(bob);
    expect_presence(
        &mut alice,
        &["from='bob@localhost/b'", "type='unavailable'"],
    );
    expect_presence(
        &mut alice2,
        &["from='bob@localhost/b'", "type='unavailable'"],
    );
}

#[test]
fn subscription_request_waits_for_an_offline_contact() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    // No roster get yet, so no push; wait until the request is stored by
    // asking for the roster and seeing the pending ask.
    alice.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(alice.expect("</iq>").contains("ask='subscribe'"));
    let mut bob = login(&p, "bob", "b");
    bob.send("<presence/>");
    expect_presence(&mut bob, &["type='subscribe'", "from='alice@localhost'"]);
    // Not in bob's visible roster until he answers.
    bob.send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(bob.expect("id='r'").contains("type='result'"));
    let rest = bob.drain_for(Duration::from_millis(200));
    assert!(!rest.contains("alice@localhost"), "{rest}");
    // Denying: alice's ask is cleared (pushed to her) and she is told.
    bob.send("<presence to='alice@localhost' type='unsubscribed'/>");
    let push = alice.expect("</iq>");
    assert!(
        push.contains("jid='bob@localhost' subscription='none'") && !push.contains("ask="),
        "{push}"
    );
    // (The unsubscribed stanza itself goes to available resources only, and
    // alice never sent presence.)
}

#[test]
fn directed_presence_and_its_unavailable_on_disconnect() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    alice.available();
    let mut bob = login(&p, "bob", "b");
    bob.available();
    alice.send("<presence to='bob@localhost/b'><status>hello</status></presence>");
    expect_presence(
        &mut bob,
        &["from='alice@localhost/a'", "<status>hello</status>"],
    );
    drop(alice);
    expect_presence(
        &mut bob,
        &["from='alice@localhost/a'", "type='unavailable'"],
    );
}

#[test]
fn a_reader_that_stops_reading_is_cut_off_without_stalling_the_sender() {
    // Flow control holds alice back while bob's queue is full; bob, who
    // drains nothing, is cut off after slow_consumer_timeout (shortened
    // here so that alice's pings stay well inside their wait).
    let p = Petrel::start("slow_consumer_timeout = 2").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let mut alice = login(&p, "alice", "a");
    let slow = login(&p, "bob", "slow");
    // bob never reads again. alice floods him; the server must neither block
    // alice nor buffer without bound: bob's session is cut.
    let body = "z".repeat(2000);
    let chunk: String = (0..100)
        .map(|i| {
            format!("<message to='bob@localhost/slow' id='f{i}'><body>{body}</body></message>")
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    loop {
        alice.send(&chunk);
        sent += 100;
        alice.ping(&format!("p{sent}"));
        if p.ctl_ok(&["connected_users"]).lines().count() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow reader still connected after {sent} messages"
        );
    }
    assert_eq!(p.ctl_ok(&["connected_users"]).trim(), "alice@localhost/a");
    drop(slow);
}

/// XEP-0191 on presence: a block hides presence both ways (broadcasts and
/// the answers to a new session's probes), sends the blocked contact an
/// unavailable presence, and an unblock sends the current presence both
/// ways.
#[test]
fn blocking_hides_presence_both_ways_until_unblocked() {
    let p = server();
    let mut alice = login(&p, "alice", "a");
    alice.available();
    let mut bob = login(&p, "bob", "b");
    bob.available();
    // Mutual subscription.
    subscribe(&mut alice, &mut bob, "alice@localhost", "bob@localhost");
    subscribe(&mut bob, &mut alice, "bob@localhost", "alice@localhost");
    alice.send("<presence><show>chat</show></presence>");
    expect_presence(&mut bob, &["from='alice@localhost/a'", "<show>chat</show>"]);

    alice.send(
        "<iq type='set' id='bl'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>",
    );
    assert!(alice.expect("id='bl'").contains("type='result'"));
    expect_presence(
        &mut bob,
        &["from='alice@localhost/a'", "type='unavailable'"],
    );
    bob.send("<presence><show>away</show></presence>");
    alice.send("<presence><show>dnd</show></presence>");
    assert!(!alice.drain_for(Duration::from_millis(300)).contains("away"));
    assert!(!bob.drain_for(Duration::from_millis(300)).contains("dnd"));
    // A new session of bob is not told alice's presence, nor she his.
    let mut bob2 = login(&p, "bob", "b2");
    bob2.send("<presence><show>xa</show></presence>");
    assert!(!bob2
        .drain_for(Duration::from_millis(300))
        .contains("from='alice@localhost/a'"));
    assert!(!alice.drain_for(Duration::from_millis(300)).contains("xa"));

    alice.send(
        "<iq type='set' id='ub'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>",
    );
    assert!(alice.expect("id='ub'").contains("type='result'"));
    expect_presence(&mut bob, &["from='alice@localhost/a'", "<show>dnd</show>"]);
    expect_presence(&mut bob2, &["from='alice@localhost/a'", "<show>dnd</show>"]);
    let seen = [
        expect_presence(&mut alice, &["from='bob@localhost/"]),
        expect_presence(&mut alice, &["from='bob@localhost/"]),
    ]
    .join("");
    assert!(
        seen.contains("<show>away</show>") && seen.contains("<show>xa</show>"),
        "{seen}"
    );
}

/// `asker` (account `from`) subscribes to `to`, whose session approves.
fn subscribe(asker: &mut Raw, answerer: &mut Raw, from: &str, to: &str) {
    asker.send(&format!("<presence to='{to}' type='subscribe'/>"));
    expect_presence(answerer, &["type='subscribe'"]);
    answerer.send(&format!("<presence to='{from}' type='subscribed'/>"));
    expect_presence(asker, &["type='subscribed'"]);
}

/// XEP-0049 refusals: a reserved namespace (not-acceptable), another
/// account's storage (forbidden), past `max_private_items`
/// (resource-constraint); a vCard of an unknown account.
#[test]
fn private_storage_refusals_and_limit() {
    let p = Petrel::start("max_private_items = 2").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let mut a = login(&p, "alice", "desk");
    let set = |id: &str, body: &str| {
        format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'>{body}</query></iq>")
    };
    a.send(&set("r1", "<x xmlns='jabber:client'/>"));
    assert!(a.expect("</iq>").contains("not-acceptable"));
    a.send("<iq type='get' id='r2' to='bob@localhost'><query xmlns='jabber:iq:private'><x xmlns='a:b'/></query></iq>");
    assert!(a.expect("</iq>").contains("forbidden"));
    a.send(&set("r3", "<x xmlns='a:1'>one</x><x xmlns='a:2'/>"));
    let r = a.expect("id='r3'") + &a.expect(">");
    assert!(r.contains("type='result'") && !r.contains("error"), "{r}");
    a.send(&set("r4", "<x xmlns='a:3'/>"));
    assert!(a.expect("</iq>").contains("resource-constraint"));
    // Replacing a kept one is no new item.
    a.send(&set("r5", "<x xmlns='a:1'>uno</x>"));
    let r = a.expect("id='r5'") + &a.expect(">");
    assert!(r.contains("type='result'") && !r.contains("error"), "{r}");
    a.send("<iq type='get' id='r6'><query xmlns='jabber:iq:private'><x xmlns='a:1'/></query></iq>");
    assert!(a.expect("</iq>").contains("uno"));
    a.send("<iq type='get' id='r7' to='nobody@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert!(a.expect("</iq>").contains("service-unavailable"));
}
