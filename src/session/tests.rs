use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::auth::TokenEnd;

/// A protocol for the tests: queues bytes.
#[derive(Default)]
struct Test;

impl Proto for Test {
    type Item = Bytes;
    fn item_bytes(item: &Bytes) -> u32 {
        item.len() as u32
    }
    fn listed_name(addr: &Address) -> String {
        addr.text().to_string()
    }
}

fn registry(clock: Arc<ManualClock>) -> Registry {
    Registry::new(
        FlowLimits {
            high_water: 100,
            slow_consumer: Duration::from_secs(5),
        },
        clock,
    )
}

fn addr(account: &str, name: &str) -> Address {
    Address::new(Protocol::Mqtt, account, name)
}

#[test]
fn addresses_split_account_and_name() {
    let a = Address::new(Protocol::Xmpp, "alice@example.org", "phone/2");
    assert_eq!(a.text(), "alice@example.org/phone/2");
    assert_eq!(a.account(), "alice@example.org");
    assert_eq!(a.name(), "phone/2");
    assert_eq!((a.local(), a.domain()), ("alice", "example.org"));
    let anon = Address::new(Protocol::Mqtt, "example.org", "dev");
    assert_eq!((anon.local(), anon.domain()), ("", "example.org"));
}

#[test]
fn open_resumes_or_replaces_and_generations_move_on() {
    let r = registry(Arc::default());
    let first = r.open::<Test>(addr("a@x", "c1"), Open::Resume);
    assert!(!first.resumed && first.replaced.is_none());
    let again = r.open::<Test>(addr("a@x", "c1"), Open::Resume);
    assert!(again.resumed);
    assert!(Arc::ptr_eq(&first.session, &again.session));
    assert_eq!(
        first.session.take_kick(first.generation),
        Err(TakenOver),
        "the first connection sees that it was taken over"
    );
    assert_eq!(again.session.take_kick(again.generation), Ok(None));
    let fresh = r.open::<Test>(addr("a@x", "c1"), Open::Replace);
    let old = fresh.replaced.expect("replaced");
    assert!(Arc::ptr_eq(&old, &first.session));
    assert_eq!(old.lock().kick, Some(Kick::Replaced));
    assert!(!r.holds(old.as_ref()) && r.holds(fresh.session.as_ref()));
    // The same client id under another account is another session.
    let other = r.open::<Test>(addr("b@x", "c1"), Open::Resume);
    assert!(!other.resumed);
    assert_eq!(r.len(Protocol::Mqtt), 2);
    assert_eq!(r.with_account("a@x", |s| s.len()), 1);
    // A replaced session cannot remove its successor.
    assert!(!r.remove(&old, |_| false));
    assert!(r.remove(&fresh.session, |_| false));
    assert_eq!(r.with_account("a@x", |s| s.len()), 0);
}

#[test]
fn a_token_end_kicks_exactly_the_sessions_holding_it() {
    let (auth, _d) = crate::auth::test_support::core(&crate::config::Config::default());
    let alice = crate::auth::BareJid::parse("alice@localhost").unwrap();
    auth.register(&alice, "pw").unwrap();
    let t1 = auth
        .issue_token(&alice, crate::auth::Scopes::sasl_auth(), None, None)
        .unwrap();
    let t2 = auth
        .issue_token(&alice, crate::auth::Scopes::sasl_auth(), None, None)
        .unwrap();
    let g1 = auth
        .check_login_token(&t1.token, None, Protocol::Mqtt)
        .unwrap();
    let g2 = auth
        .check_login_token(&t2.token, None, Protocol::Mqtt)
        .unwrap();
    let r = Arc::new(registry(Arc::default()));
    auth.set_events(r.clone());
    let mqtt = r
        .open::<Test>(addr("alice@localhost", "dev"), Open::Resume)
        .session;
    let xmpp = r
        .open::<Test>(
            Address::new(Protocol::Xmpp, "alice@localhost", "phone"),
            Open::Replace,
        )
        .session;
    let other = r
        .open::<Test>(addr("alice@localhost", "other"), Open::Resume)
        .session;
    r.set_grant(&mqtt, Some(g1.clone()));
    r.set_grant(&xmpp, Some(g1.clone()));
    r.set_grant(&other, Some(g2.clone()));
    // Re-authenticated with t2: t1's end no longer concerns it.
    let moved = r
        .open::<Test>(addr("alice@localhost", "moved"), Open::Resume)
        .session;
    r.set_grant(&moved, Some(g1));
    r.set_grant(&moved, Some(g2));
    assert!(auth.revoke_token(&t1.token).unwrap());
    assert_eq!(mqtt.lock().kick, Some(Kick::TokenEnded(TokenEnd::Revoked)));
    assert_eq!(xmpp.lock().kick, Some(Kick::TokenEnded(TokenEnd::Revoked)));
    assert_eq!(other.lock().kick, None);
    assert_eq!(moved.lock().kick, None);
    // A grant whose token already ended ends the session at once.
    let late = r
        .open::<Test>(addr("alice@localhost", "late"), Open::Resume)
        .session;
    let g1_again = mqtt.lock().grant.clone();
    r.set_grant(&late, g1_again);
    assert_eq!(late.lock().kick, Some(Kick::TokenEnded(TokenEnd::Revoked)));
    // Expiry, at its deadline, through the same path.
    // (t1, revoked, is kept until its expiry too, and reported as revoked.)
    assert_eq!(auth.sweep_expired(t2.expires_at), 2);
    assert_eq!(other.lock().kick, Some(Kick::TokenEnded(TokenEnd::Expired)));
    assert_eq!(moved.lock().kick, Some(Kick::TokenEnded(TokenEnd::Expired)));
}

#[test]
fn an_account_change_kicks_every_session_of_the_account() {
    let r = registry(Arc::default());
    let a = r.open::<Test>(addr("alice@x", "dev"), Open::Resume).session;
    let b = r
        .open::<Test>(
            Address::new(Protocol::Xmpp, "alice@x", "phone"),
            Open::Replace,
        )
        .session;
    let c = r.open::<Test>(addr("bob@x", "dev"), Open::Resume).session;
    r.account_changed("alice@x");
    assert_eq!(a.lock().kick, Some(Kick::AccountChanged));
    assert_eq!(b.lock().kick, Some(Kick::AccountChanged));
    assert_eq!(c.lock().kick, None);
}

/// Expiry and keep-alive on a clock moved by hand: no waiting.
#[test]
fn the_sweep_expires_detached_sessions_and_kicks_silent_ones() {
    let clock = Arc::new(ManualClock::default());
    let r = registry(clock.clone());
    let quiet = r.open::<Test>(addr("a@x", "quiet"), Open::Resume).session;
    quiet.lock().keep_alive = 10;
    let gone = r.open::<Test>(addr("a@x", "gone"), Open::Resume).session;
    {
        let mut st = gone.lock();
        st.expiry = 60;
        st.online = false;
    }
    gone.last_rx
        .store(clock.now_ms(), std::sync::atomic::Ordering::Relaxed);
    let forever = r.open::<Test>(addr("a@x", "forever"), Open::Resume).session;
    {
        let mut st = forever.lock();
        st.expiry = u32::MAX;
        st.online = false;
    }
    clock.advance(Duration::from_secs(15));
    assert!(r.sweep().is_empty());
    assert_eq!(quiet.lock().kick, None, "1.5 x 10 s not yet passed");
    clock.advance(Duration::from_secs(1));
    assert!(r.sweep().is_empty());
    assert_eq!(quiet.lock().kick, Some(Kick::KeepAlive));
    clock.advance(Duration::from_secs(44));
    let expired = r.sweep();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id(), gone.id());
    clock.advance(Duration::from_secs(1_000_000));
    assert_eq!(r.sweep().len(), 1, "u32::MAX never expires");
}

#[test]
fn listing_shows_sessions_and_who_is_online() {
    let r = registry(Arc::default());
    let a = r.open::<Test>(addr("a@x", "one"), Open::Resume).session;
    let _b = r.open::<Test>(addr("x", "anon"), Open::Resume).session;
    a.lock().online = false;
    let all = r.sessions();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "a@x/one");
    assert_eq!(all[0].account.as_deref(), Some("a@x"));
    assert!(!all[0].online);
    assert_eq!(all[1].account, None, "an anonymous client has no account");
    assert_eq!(r.online(), 1);
}

/// A sender waits while the queue is over its mark, goes on once the
/// receiver drains below half of it (or after one wait step), and never
/// drops anything.
#[tokio::test(start_paused = true)]
async fn senders_wait_for_room_and_go_on_when_it_drains() {
    let clock = Arc::new(ManualClock::default());
    let r = registry(clock.clone());
    let rx = r.open::<Test>(addr("a@x", "rx"), Open::Resume).session;
    let limits = *r.limits();
    let now = clock.now_ms();
    for _ in 0..9 {
        assert!(!rx.push(Bytes::from_static(&[0; 10]), &limits, now));
    }
    assert!(
        rx.push(Bytes::from_static(&[0; 10]), &limits, now),
        "at 100 bytes"
    );
    let waiter = {
        let rx = rx.clone();
        tokio::spawn(async move { wait_for_room(rx.as_ref(), &limits).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    for _ in 0..5 {
        rx.pop(&limits, now).unwrap();
    }
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "at 50 bytes: not under half yet");
    rx.pop(&limits, now).unwrap();
    waiter.await.unwrap();
    assert_eq!(rx.lock().queue_len(), 4);
    // A wait is bounded: with no room it still ends after one step.
    for _ in 0..6 {
        rx.push(Bytes::from_static(&[0; 10]), &limits, now);
    }
    let started = tokio::time::Instant::now();
    wait_for_room(rx.as_ref(), &limits).await;
    assert_eq!(started.elapsed(), flow::WAIT_STEP);
    assert_eq!(rx.lock().queue_len(), 10, "nothing dropped");
}

/// The sweep cuts off a session whose queue stayed full with nothing
/// taken for the slow-consumer time; one that drains, however slowly, is
/// never cut off. On a hand-moved clock.
#[test]
fn only_a_receiver_that_drains_nothing_is_a_slow_consumer() {
    let clock = Arc::new(ManualClock::default());
    let r = registry(clock.clone());
    let limits = *r.limits();
    let slow = r.open::<Test>(addr("a@x", "slow"), Open::Resume).session;
    slow.push(Bytes::from_static(&[0; 60]), &limits, clock.now_ms());
    assert!(slow.push(Bytes::from_static(&[0; 60]), &limits, clock.now_ms()));
    // It takes one item every 4 s (under the 5 s limit): never cut off.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(4));
        r.sweep();
        assert_eq!(slow.lock().kick, None);
        slow.pop(&limits, clock.now_ms()).unwrap();
        slow.push(Bytes::from_static(&[0; 60]), &limits, clock.now_ms());
    }
    // A full queue that was idle before is not stale: the stall counts
    // from when it filled.
    let other = r.open::<Test>(addr("a@x", "other"), Open::Resume).session;
    clock.advance(Duration::from_secs(60));
    other.push(Bytes::from_static(&[0; 120]), &limits, clock.now_ms());
    r.sweep();
    assert_eq!(other.lock().kick, None);
    // Then nothing more is taken from `slow`.
    assert_eq!(slow.lock().kick, Some(Kick::SlowConsumer));
    clock.advance(Duration::from_secs(5));
    r.sweep();
    assert_eq!(other.lock().kick, Some(Kick::SlowConsumer));
}
