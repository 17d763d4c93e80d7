//! XEP-0198 Stream Management on the wire: acknowledgements, resumption
//! after a dead connection with 100 messages in flight, and the edge cases
//! (unknown or expired session, takeover by a new bind, `h` too high).

mod common;

use std::time::{Duration, Instant};

use common::xmpp::Raw;
use common::Petrel;

const SM: &str = "xmlns='urn:xmpp:sm:3'";

fn server(config: &str) -> Petrel {
    let p = Petrel::start(config).with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

fn c2s(p: &Petrel) -> std::net::SocketAddr {
    p.addrs["c2s"][0]
}

/// alice/phone with resumable stream management; returns the id.
fn alice_with_sm(p: &Petrel) -> (Raw, String) {
    let mut a = Raw::login(c2s(p), "alice", "wonderland", "phone");
    a.send(&format!("<enable {SM} resume='true'/>"));
    let r = a.expect("/>");
    assert!(r.contains("<enabled") && r.contains("resume='true'"), "{r}");
    let id = r.split("id='").nth(1).unwrap().split('\'').next().unwrap();
    (a, id.to_string())
}

/// The bodies of the `<message>`s in `text`, in order.
fn bodies(text: &str) -> Vec<String> {
    text.split("<body>")
        .skip(1)
        .map(|b| b.split("</body>").next().unwrap().to_string())
        .collect()
}

/// Waits (with a deadline) until `ctl connected_users` does or does not
/// list `jid`.
fn wait_listed(p: &Petrel, jid: &str, listed: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = p.ctl_ok(&["connected_users"]);
        if out.lines().any(|l| l.trim() == jid) == listed {
            return;
        }
        assert!(Instant::now() < deadline, "{jid} listed: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_connection_resumes_with_all_100_messages_once_in_order() {
    let p = server("");
    let (mut alice, id) = alice_with_sm(&p);
    let mut bob = Raw::login(c2s(&p), "bob", "builder", "desk");
    let mut burst = String::new();
    for i in 1..=100 {
        burst.push_str(&format!(
            "<message to='alice@localhost/phone' type='chat' id='m{i}'><body>{i}</body></message>"
        ));
    }
    bob.send(&burst);
    // alice reads up to the 30th, acknowledges 20 of them, and her
    // connection dies with the rest in flight.
    alice.wait_for("<body>30</body>");
    alice.send(&format!("<a {SM} h='20'/>"));
    alice.kill();

    let (mut again, features) = Raw::authenticated(c2s(&p), "alice", "wonderland");
    assert!(
        features.contains("<sm xmlns='urn:xmpp:sm:3'/>"),
        "{features}"
    );
    again.send(&format!("<resume {SM} previd='{id}' h='20'/>"));
    let r = again.expect("/>");
    assert!(
        r.contains(&format!(
            "<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
        )),
        "{r}"
    );
    again.wait_for("<body>100</body>");
    let text = again.drain_for(Duration::from_millis(300));
    let got = bodies(&text);
    let want: Vec<String> = (21..=100).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "each unacknowledged message once, in order");
    // The resumed stream goes on: the client acknowledges everything.
    again.send(&format!("<r {SM}/>"));
    assert!(again.expect("/>").contains("h='0'"));
    again.send(&format!("<a {SM} h='100'/>"));
    again.ping("after-resume");
    bob.send("<message to='alice@localhost/phone' type='chat'><body>next</body></message>");
    again.expect("<body>next</body>");
}

#[test]
fn resumption_edge_cases() {
    let p = server("resume_timeout = 2");
    // An unknown id: <failed/>, and the client can bind instead.
    let (mut c, _) = Raw::authenticated(c2s(&p), "alice", "wonderland");
    c.send(&format!("<resume {SM} previd='nope' h='0'/>"));
    assert!(c.expect("</failed>").contains("<item-not-found"));
    c.send(&common::xmpp::bind("laptop"));
    assert!(c.expect("</iq>").contains("type='result'"));

    // Someone else's session cannot be resumed.
    let (alice, id) = alice_with_sm(&p);
    alice.kill();
    let (mut bob, _) = Raw::authenticated(c2s(&p), "bob", "builder");
    bob.send(&format!("<resume {SM} previd='{id}' h='0'/>"));
    assert!(bob.expect("</failed>").contains("<item-not-found"));

    // A new bind of the same resource takes over the detached session: it
    // cannot be resumed any more.
    let _phone = Raw::login(c2s(&p), "alice", "wonderland", "phone");
    let (mut late, _) = Raw::authenticated(c2s(&p), "alice", "wonderland");
    late.send(&format!("<resume {SM} previd='{id}' h='0'/>"));
    assert!(late.expect("</failed>").contains("<item-not-found"));

    // An expired session: what was sent to it while detached is kept
    // offline, and it cannot be resumed.
    let mut bob = Raw::login(c2s(&p), "bob", "builder", "desk");
    let mut carol_like = Raw::login(c2s(&p), "alice", "wonderland", "tablet");
    let mut tablet_sm = String::new();
    carol_like.send(&format!("<enable {SM} resume='true'/>"));
    tablet_sm.push_str(&carol_like.expect("/>"));
    let tid = tablet_sm
        .split("id='")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    carol_like.kill();
    bob.send("<message to='alice@localhost/tablet' type='chat'><body>while away</body></message>");
    wait_listed(&p, "alice@localhost/tablet", false);
    let (mut after, _) = Raw::authenticated(c2s(&p), "alice", "wonderland");
    after.send(&format!("<resume {SM} previd='{tid}' h='0'/>"));
    assert!(after.expect("</failed>").contains("<item-not-found"));
    // Only "laptop" and "phone" are bound, without presence: offline.
    let mut fresh = Raw::login(c2s(&p), "alice", "wonderland", "fresh");
    fresh.send("<presence/>");
    fresh.expect("<body>while away</body>");
}

#[test]
fn acknowledging_more_than_was_sent_ends_the_stream() {
    let p = server("");
    let (mut alice, id) = alice_with_sm(&p);
    alice.ping("p1");
    alice.send(&format!("<a {SM} h='5'/>"));
    let r = alice.read_to_close();
    assert!(r.contains("<undefined-condition"), "{r}");
    assert!(
        r.contains("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='5' send-count='1'/>"),
        "{r}"
    );
    // A stream that ended with an error is not resumable.
    let (mut again, _) = Raw::authenticated(c2s(&p), "alice", "wonderland");
    again.send(&format!("<resume {SM} previd='{id}' h='0'/>"));
    assert!(again.expect("</failed>").contains("<item-not-found"));
}

#[test]
fn the_server_asks_for_acks_and_answers_requests() {
    let p = server("");
    let (mut alice, _) = alice_with_sm(&p);
    alice.send(&format!("<r {SM}/>"));
    assert!(alice
        .expect("/>")
        .contains("<a xmlns='urn:xmpp:sm:3' h='0'/>"));
    alice.ping("p1");
    // The server asks after sending the ping result.
    alice.expect(&format!("<r {SM}/>"));
    alice.send(&format!("<r {SM}/>"));
    assert!(alice.expect("/>").contains("h='1'"), "the ping counted");
}

/// A new bind of the resource and a resumption of its detached session,
/// racing: whatever the order, one session is left — the new bind's — and
/// the resumption either fails or is ended by the bind with `<conflict/>`.
#[test]
fn a_takeover_racing_a_resumption_leaves_one_session() {
    let p = server("");
    let addr = c2s(&p);
    let mut outcomes = Vec::new();
    for round in 0..8 {
        let (alice, id) = alice_with_sm(&p);
        alice.kill();
        // Both authenticated, then the bind and the resume sent at once.
        let (mut resumer, _) = Raw::authenticated(addr, "alice", "wonderland");
        let (mut binder, _) = Raw::authenticated(addr, "alice", "wonderland");
        let binder = std::thread::spawn(move || {
            binder.send(&common::xmpp::bind("phone"));
            assert!(binder.expect("</iq>").contains("type='result'"));
            binder
        });
        resumer.send(&format!("<resume {SM} previd='{id}' h='0'/>"));
        let mut binder = binder.join().unwrap();
        let r = resumer.drain_for(Duration::from_millis(300));
        let outcome = if r.contains("<failed") {
            "failed"
        } else if r.is_empty() && resumer.closed {
            // Resumed, and taken over before <resumed/> was written.
            "closed"
        } else {
            assert!(r.contains("<resumed"), "round {round}: {r}");
            // Resumed first: the bind then took the session over.
            let rest = r + &resumer.read_to_close();
            assert!(rest.contains("<conflict"), "round {round}: {rest}");
            "resumed then replaced"
        };
        outcomes.push(outcome);
        binder.ping(&format!("alive{round}"));
        let listed = p.ctl_ok(&["connected_users"]);
        assert_eq!(
            listed
                .lines()
                .filter(|l| l.trim() == "alice@localhost/phone")
                .count(),
            1,
            "round {round}: {listed}"
        );
        drop(binder);
        wait_listed(&p, "alice@localhost/phone", false);
    }
    eprintln!("outcomes: {outcomes:?}");
}
