//! Bursts meet flow control, not loss (the session-layer issue): a fast
//! XMPP sender into one connected receiver, a presence burst from thousands
//! of contacts into one user, and an MQTT QoS 0 flood into one subscriber
//! that reads as fast as loopback allows. Every message must arrive.
//! A binary of its own: these runs are the slowest of the suite.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::xmpp::Raw;
use common::Petrel;

/// Reads `<body>N</body>` numbers from `c` until `n` arrived (or the
/// deadline passes), in arrival order.
fn read_bodies(c: &mut Raw, n: usize, within: Duration) -> Vec<usize> {
    let deadline = Instant::now() + within;
    let mut text = String::new();
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline && !c.closed {
        text.push_str(&c.drain_for(Duration::from_millis(50)));
        let mut consumed = 0;
        while let Some(start) = text[consumed..].find("<body>") {
            let from = consumed + start + "<body>".len();
            let Some(len) = text[from..].find("</body>") else {
                break;
            };
            got.push(text[from..from + len].parse().expect("a number"));
            consumed = from + len + "</body>".len();
        }
        text.drain(..consumed);
    }
    got
}

/// One sender writes 2,000 chat messages to one connected receiver in
/// writes of 500: the receiver gets all of them, in order, and the sender
/// is still served. Before flow control the receiver's queue (1,024
/// stanzas) overflowed and it was cut off with most of them unseen.
fn chat_burst(initial_presence: bool) {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let c2s = p.addrs["c2s"][0];
    let mut bob = Raw::login(c2s, "bob", "builder", "r");
    // Without initial presence only its full JID reaches the session.
    let to = if initial_presence {
        bob.available();
        "bob@localhost"
    } else {
        "bob@localhost/r"
    };
    let mut alice = Raw::login(c2s, "alice", "wonderland", "a");
    let sender = std::thread::spawn(move || {
        for w in 0..4 {
            let chunk: String = (w * 500..(w + 1) * 500)
                .map(|i| {
                    format!("<message to='{to}' type='chat' id='m{i}'><body>{i}</body></message>")
                })
                .collect();
            alice.send(&chunk);
        }
        alice.ping("after-burst");
    });
    let got = read_bodies(&mut bob, 2000, Duration::from_secs(120));
    assert_eq!(got.len(), 2000, "received {} of 2000", got.len());
    assert_eq!(
        got,
        (0..2000).collect::<Vec<_>>(),
        "all, once each, in order"
    );
    sender.join().expect("the sender was served to the end");
    bob.ping("still-here");
}

#[test]
fn a_2000_message_burst_reaches_a_receiver_without_initial_presence() {
    chat_burst(false);
}

#[test]
fn a_2000_message_burst_reaches_an_available_receiver() {
    chat_burst(true);
}

/// Available presences (no type) in `text` by sender, with the unparsed
/// tail left in `text`.
fn presences_from(text: &mut String, seen: &mut HashSet<String>) {
    let mut consumed = 0;
    while let Some(start) = text[consumed..].find("<presence") {
        let at = consumed + start;
        let Some(end) = text[at..].find('>') else {
            break;
        };
        let tag = &text[at..at + end];
        if !tag.contains("type=") {
            if let Some(f) = tag
                .split("from='")
                .nth(1)
                .and_then(|r| r.split('\'').next())
            {
                seen.insert(f.to_string());
            }
        }
        consumed = at + end + 1;
    }
    text.drain(..consumed);
}

/// A user with 3,000 contacts, all of whom come online at once: every
/// contact's presence reaches the user (who stays connected).
#[test]
fn a_3000_contact_presence_burst_reaches_the_user() {
    const N: usize = 3000;
    // In memory: the setup's 6,000 admin commands need no disk flushes.
    let p = Petrel::start("store = \"memory\"").with_user_and_client();
    let register: Vec<Vec<String>> = (0..N)
        .map(|i| {
            ["register", &format!("c{i}"), "localhost", "pw"]
                .map(String::from)
                .to_vec()
        })
        .collect();
    p.admin_many(register, 4);
    let tokens = p.admin_many(
        (0..N)
            .map(|i| {
                [
                    "oauth_issue_token",
                    &format!("c{i}@localhost"),
                    "3600",
                    "sasl_auth",
                ]
                .map(String::from)
                .to_vec()
            })
            .collect(),
        4,
    );
    let c2s = p.addrs["c2s"][0];
    let mut hub = Raw::login(c2s, "alice", "wonderland", "hub");
    hub.available();
    // The user asks every contact for its presence, in one write.
    let asks: String = (0..N)
        .map(|i| format!("<presence to='c{i}@localhost' type='subscribe'/>"))
        .collect();
    hub.send(&asks);
    hub.ping("asked");
    // From here on the user only reads, in a thread of its own.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        // Until told the burst is out, then until every presence arrived.
        let mut burst_out = false;
        while !hub.closed && Instant::now() < deadline {
            text.push_str(&hub.drain_for(Duration::from_millis(50)));
            presences_from(&mut text, &mut seen);
            burst_out |= done_rx.try_recv().is_ok();
            if burst_out && seen.len() >= N {
                break;
            }
        }
        (seen, hub)
    });
    // Every contact logs in and approves, without presence yet.
    let mut contacts: Vec<Raw> = (0..N)
        .map(|i| {
            let mut c = Raw::login_token(c2s, &format!("c{i}"), tokens[i].trim(), "r");
            c.send("<presence to='alice@localhost' type='subscribed'/>");
            c
        })
        .collect();
    // Each approval is processed before the contact's next stanza.
    for (i, c) in contacts.iter_mut().enumerate() {
        c.ping(&format!("approved{i}"));
    }
    // The burst: every contact comes online at once.
    for c in contacts.iter_mut() {
        c.send("<presence/>");
    }
    done_tx.send(()).unwrap();
    let (seen, mut hub) = reader.join().unwrap();
    let missing: Vec<usize> = (0..N)
        .filter(|i| !seen.contains(&format!("c{i}@localhost/r")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} presences missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    hub.ping("still-here");
    drop(contacts);
}

/// One MQTT 5 publisher floods one subscriber with 100,000 QoS 0 messages
/// of 64 bytes (rumqttc on both ends), ten times: none is lost. A
/// subscriber reading as fast as loopback allows is not a slow consumer;
/// the publisher is slowed instead.
#[test]
fn a_qos0_flood_into_a_reading_subscriber_loses_nothing_ten_times() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    const N: u32 = 100_000;
    let p = Petrel::start("").with_user_and_client();
    let token = p.token("alice@localhost", 3600, "sasl_auth");
    let port = p.mqtt().port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for run in 0..10 {
        let options = |id: &str| {
            let mut o = MqttOptions::new(id, "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_authentication_method(Some("X-OAUTH2".into()));
            o.set_authentication_data(Some(bytes::Bytes::from(token.clone())));
            o
        };
        let (received, lost) = rt.block_on(async {
            let topic = format!("flood/{run}");
            let (sub, mut sub_loop) = AsyncClient::new(options(&format!("sub{run}")), 1024);
            sub.subscribe(topic.clone(), QoS::AtMostOnce).await.unwrap();
            // Subscribed (SUBACK) before the first publish.
            loop {
                if let Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_)) =
                    sub_loop.poll().await.unwrap()
                {
                    break;
                }
            }
            let counter = tokio::spawn(async move {
                let mut seen = vec![false; N as usize];
                let mut count = 0u32;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                while count < N {
                    let ev = tokio::time::timeout_at(deadline, sub_loop.poll()).await;
                    match ev {
                        Ok(Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)))) => {
                            let i = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
                            if !std::mem::replace(&mut seen[i as usize], true) {
                                count += 1;
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => panic!("subscriber: {e}"),
                        Err(_) => break,
                    }
                }
                count
            });
            let (publ, mut pub_loop) = AsyncClient::new(options(&format!("pub{run}")), 1024);
            let driver = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
            for i in 0..N {
                let mut payload = vec![0u8; 64];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                publ.publish(topic.clone(), QoS::AtMostOnce, false, payload)
                    .await
                    .unwrap();
            }
            let received = counter.await.unwrap();
            publ.disconnect().await.ok();
            driver.abort();
            (received, N - received)
        });
        assert_eq!(lost, 0, "run {run}: {received} of {N} received");
    }
}
