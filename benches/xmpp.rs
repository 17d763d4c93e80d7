//! XMPP micro benches: parsing a stanza off the wire, the c2s state machine's
//! per-stanza work, and routing a message between two bound sessions (the
//! whole `ImServer::handle` path: addressing, serialization, queueing, and the
//! receiver draining its queue). `cargo bench --bench xmpp`.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use petrel::auth::{AuthCore, BareJid};
use petrel::config::Config;
use petrel::session::Registry;
use petrel::store::Store;
use petrel::xmpp::element::Element;
use petrel::xmpp::stanza::Jid;
use petrel::xmpp::stream::{Limits, StreamEvent, XmlStream, NS_CLIENT};
use petrel::xmpp::{ImServer, Router};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

const MESSAGE: &[u8] = b"<message to='bob@localhost' type='chat' id='a1b2c3'>\
    <body>Hello Bob, are we still on for lunch at noon? &lt;3</body>\
    <active xmlns='http://jabber.org/protocol/chatstates'/></message>";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("xmpp_parse");
    g.throughput(Throughput::Bytes(MESSAGE.len() as u64));
    g.bench_function("chat_message", |b| {
        let mut p = XmlStream::new(Limits::default());
        p.feed(HEADER);
        assert!(matches!(
            p.next_event(),
            Ok(Some(StreamEvent::StreamStart { .. }))
        ));
        b.iter(|| {
            p.feed(black_box(MESSAGE));
            match p.next_event() {
                Ok(Some(StreamEvent::Stanza(el))) => black_box(el),
                other => panic!("{other:?}"),
            }
        })
    });
    g.bench_function("chat_message_serialize", |b| {
        let mut p = XmlStream::new(Limits::default());
        p.feed(HEADER);
        p.next_event().unwrap();
        p.feed(MESSAGE);
        let Ok(Some(StreamEvent::Stanza(el))) = p.next_event() else {
            panic!("no stanza")
        };
        b.iter(|| black_box(el.to_bytes(NS_CLIENT)))
    });
    g.finish();
}

fn route(c: &mut Criterion) {
    let auth = Arc::new(AuthCore::new(Store::memory(), &Config::default()).unwrap());
    let registry = Arc::new(Registry::standalone());
    let limits = *registry.limits();
    let im = ImServer::new(auth, Router::new(registry));
    let alice = BareJid::parse("alice@localhost").unwrap();
    let bob = BareJid::parse("bob@localhost").unwrap();
    let mut a = im.open_session(Jid::full(&alice, "laptop"), alice, None);
    let b = im.open_session(Jid::full(&bob, "phone"), bob, None);
    {
        b.route.lock().presence.available = true;
    }
    let msg = Element::new("message", NS_CLIENT)
        .with_attr("to", "bob@localhost")
        .with_attr("type", "chat")
        .with_attr("id", "a1b2c3")
        .with_attr("from", "alice@localhost/laptop")
        .with_child(
            Element::new("body", NS_CLIENT).with_text("Hello Bob, are we still on for lunch?"),
        );
    let mut g = c.benchmark_group("xmpp_route");
    g.throughput(Throughput::Elements(1));
    g.bench_function("message_to_bare_jid", |bench| {
        bench.iter(|| {
            // Routing to an online user awaits nothing (no store access).
            let fx = im
                .handle(&mut a, black_box(msg.clone()))
                .now_or_never()
                .expect("routing awaits nothing");
            assert!(fx.replies.is_empty());
            black_box(b.route.pop(&limits, 0).expect("delivered"))
        })
    });
    let full = msg.clone().with_attr("to", "bob@localhost/phone");
    g.bench_function("message_to_full_jid", |bench| {
        bench.iter(|| {
            im.handle(&mut a, black_box(full.clone()))
                .now_or_never()
                .expect("routing awaits nothing");
            black_box(b.route.pop(&limits, 0).expect("delivered"))
        })
    });
    let bytes = bytes::Bytes::from(msg.to_bytes(NS_CLIENT));
    g.bench_function("router_deliver_only", |bench| {
        bench.iter(|| {
            assert_eq!(
                im.router
                    .deliver_to_best("bob@localhost", &bytes, &mut None),
                1
            );
            black_box(b.route.pop(&limits, 0).expect("delivered"))
        })
    });
    g.finish();
}

criterion_group!(benches, parse, route);
criterion_main!(benches);
