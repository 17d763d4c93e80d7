//! The socket loop around [`Connection`]: read, decode, feed, flush, write.
//!
//! One task per connection waits on whichever comes first: bytes from the
//! client, messages queued for its session, a newer connection taking the
//! session over, the end of its token, its keep-alive deadline, or shutdown.
//! Acknowledgements that depend on a store write go out only after the store is
//! flushed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::broker::Broker;
use super::codec::{self, reason};
use super::session::{Aftermath, Connection, MqttSettings, Next};
use crate::auth::AuthCore;
use crate::net::{ConnPermit, Stream, Traced};

/// How long a write may make no progress before the connection is dropped.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// How long the goodbye (the last packets, DISCONNECT, TLS close) may take
/// once the connection is closing: a kicked slow consumer does not read.
pub const GOODBYE: Duration = Duration::from_secs(2);

/// How long a new connection may take to send CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every MQTT connection task shares.
pub struct MqttContext {
    pub broker: Arc<Broker>,
    pub auth: Arc<AuthCore>,
    /// Swapped whole by a reload: a connection keeps the settings it
    /// began with.
    pub settings: Arc<arc_swap::ArcSwap<MqttSettings>>,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The listener's TLS acceptor (8883), none for plain TCP (1883).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Waits until what was written to the store is durable; false (logged)
/// when the store failed.
async fn flush(broker: &Broker) -> bool {
    match broker.store().barrier().await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "store barrier failed");
            false
        }
    }
}

/// Serves one MQTT connection to its end: the TLS handshake when the
/// listener has TLS, then [`run`]. A plain function returning the future, so
/// that the task holds one future, not one per layer of `async fn`.
pub fn serve(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<MqttContext>,
    permit: ConnPermit,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "mqtt",
        %peer,
        account = tracing::field::Empty,
        client = tracing::field::Empty,
        session = tracing::field::Empty
    );
    // Boxed: the handshakes are large and brief, the idle task small (and the
    // stream moves into the box instead of staying in the task's future).
    let opening = Box::pin(open(stream, peer.ip(), ctx.clone()));
    Traced::new(run(opening, ctx, permit), span)
}

/// Decodes and handles every whole packet in `buf`, stopping early when a
/// login must be decided (the caller runs [`login`]), the connection must
/// close, or backpressure holds the rest back.
fn handle_buffered(conn: &mut Connection, buf: &mut BytesMut) -> Next {
    loop {
        if conn.crossing_pending() {
            // The bridge first: acknowledgements keep the publishes' order.
            return Next::Continue;
        }
        match codec::decode(buf, conn.version(), conn.max_packet_size()) {
            Ok(Some(p)) => {
                let next = conn.handle(p);
                if matches!(next, Next::Login(_) | Next::Close) {
                    return next;
                }
                if conn.congested.is_some() || conn.crossing_pending() {
                    // Backpressure: leave the rest buffered until the
                    // congested subscriber has drained (or the bridge has
                    // carried a publish across).
                    return next;
                }
            }
            Ok(None) => return Next::Continue,
            Err(e) => return conn.decode_error(&e),
        }
    }
}

/// Asks the auth core's login decision for the connection at `peer` (a
/// password check on a blocking thread), answers the connection, and goes
/// on with the buffered packets after it.
async fn login(
    conn: &mut Connection,
    buf: &mut BytesMut,
    ctx: &MqttContext,
    peer: std::net::IpAddr,
    mut next: Next,
) -> Next {
    while let Next::Login(req) = next {
        let mut req = *req;
        req.peer = Some(peer);
        let result = ctx.auth.login_async(req).await;
        // In a cluster, one session per client id: the node holding it
        // hands it off first, and a persistent one is loaded from the store.
        let moving = match (&result, ctx.broker.peers.get()) {
            (Ok(l), Some(peers)) => match conn.opening(&l.account) {
                Some((addr, clean)) => {
                    peers.claim(&addr, clean).await;
                    let key = moved_key(&l.account, &addr);
                    if clean {
                        // The old session is gone, whichever node kept it.
                        ctx.broker.forget_stored(key);
                    } else {
                        load_moved(&ctx.broker, key).await;
                    }
                    Some((peers.clone(), addr, clean))
                }
                None => None,
            },
            _ => None,
        };
        next = conn.login_decided(result);
        if let Some((peers, addr, clean)) = moving {
            peers.claimed(&addr).await;
            if let (false, Some((slot, _))) = (clean, conn.session()) {
                // What the node that kept it stored until it let go.
                let (b, slot) = (ctx.broker.clone(), slot.clone());
                let _ = tokio::task::spawn_blocking(move || b.load_missing(&slot)).await;
            }
        }
        if next == Next::Close || conn.congested.is_some() {
            return next;
        }
        next = handle_buffered(conn, buf);
    }
    next
}

/// The store key of the session at `addr` (`account/client id`).
fn moved_key(account: &crate::auth::BareJid, addr: &str) -> Vec<u8> {
    let client_id = &addr[account.to_string().len() + 1..];
    crate::mqtt::persist::record_key(account.domain(), Some(account), client_id)
}

/// Loads a persistent session another node held until now (no-op when
/// there is none in the store, or this node holds it).
async fn load_moved(broker: &Arc<Broker>, key: Vec<u8>) {
    let b = broker.clone();
    let loaded = tokio::task::spawn_blocking(move || b.load_session(&key)).await;
    if let Ok(Err(e)) = loaded {
        tracing::error!(error = %e, "could not load a session from the store");
    }
}

/// Writes `out` and pumps queued messages while the socket takes them without
/// waiting. `Err(next)` when the rest needs [`write_out`]: a store flush
/// before an acknowledgement, a TLS stream, or a full socket buffer.
fn write_now(conn: &mut Connection, wire: &mut Stream, mut next: Next) -> Result<Next, Next> {
    loop {
        if conn.needs_flush {
            return Err(next);
        }
        if !conn.out.is_empty() {
            match wire.write_now(&mut conn.out) {
                // Idle connections hold no write buffer.
                Ok(true) => conn.out = BytesMut::new(),
                Ok(false) => return Err(next),
                Err(_) => return Ok(Next::Close),
            }
        }
        if next == Next::Close || !conn.pump() {
            if !conn.out.is_empty() && next != Next::Close {
                continue;
            }
            return Ok(next);
        }
        next = Next::Continue;
    }
}

/// [`write_now`] with the waits it cannot do: flushes the store when what
/// `out` holds depends on it, and writes what the socket did not take at once
/// (or TLS), then goes on pumping.
async fn write_out(
    conn: &mut Connection,
    wire: &mut Stream,
    ctx: &MqttContext,
    mut next: Next,
) -> Next {
    loop {
        // Before every write: what `out` acknowledges, or a QoS 2 message's
        // "sent with this id" record, must be on disk first.
        if conn.needs_flush {
            if !flush(&ctx.broker).await {
                // Never acknowledge what the store did not keep: the client
                // sends it again on its next connection.
                return Next::Close;
            }
            conn.needs_flush = false;
        }
        if !conn.out.is_empty() {
            // A peer that takes nothing for this long is gone or hostile.
            let stall = if next == Next::Close {
                GOODBYE
            } else {
                WRITE_STALL
            };
            match tokio::time::timeout(stall, wire.write_all(&conn.out)).await {
                Ok(Ok(())) => {}
                _ => return Next::Close,
            }
            // Idle connections hold no write buffer.
            conn.out = BytesMut::new();
        }
        match write_now(conn, wire, next) {
            Ok(done) => return done,
            Err(more) => next = more,
        }
    }
}

/// Has the bridge carry the publish waiting for it across and the other
/// nodes of a cluster take it, then acknowledges it.
async fn cross(conn: &mut Connection, ctx: &MqttContext) -> Option<Next> {
    let (c, slot) = conn.take_crossing()?;
    let mut done = match (ctx.broker.bridge.get(), c.want) {
        (Some(b), Some(want)) => b.from_mqtt(slot.address(), &c.msg, want, c.code).await,
        _ => crate::bridge::Crossed {
            code: c.code,
            ..Default::default()
        },
    };
    if let (true, Some(peers)) = (c.forward, ctx.broker.peers.get()) {
        // QoS 0 goes on its way; QoS 1/2 and retained messages are
        // acknowledged once every node took them.
        let wait = c.qos != codec::QoS::AtMostOnce || c.msg.publish.retain;
        let f = peers.forward(slot.address().domain(), &c.msg, wait).await;
        if f.failed && conn.version() != Some(codec::Version::V5) {
            // MQTT 3.1.1 cannot say "not delivered": no acknowledgement,
            // the connection closes, the client sends it again.
            return Some(conn.crossing_failed(&c));
        } else if f.failed {
            done.code = reason::UNSPECIFIED_ERROR;
        } else if done.code == reason::NO_MATCHING_SUBSCRIBERS && f.receivers > 0 {
            done.code = reason::SUCCESS;
        }
    }
    if let Some(xmpp) = conn.crossed(&c, done) {
        // An XMPP session's queue is full: give it a moment (bounded) to
        // drain before this publisher goes on.
        crate::session::wait_for_room(xmpp.as_ref(), ctx.broker.limits()).await;
    }
    None
}

/// Flow control: a publisher whose message left a subscriber's queue at
/// its high-water mark has nothing more read from its socket until that
/// queue has room again (or the subscriber, draining nothing, is cut off as
/// a slow consumer). Meanwhile its own session's queue still goes out, so
/// two clients publishing to each other never wait on each other.
async fn hold_back(
    conn: &mut Connection,
    wire: &mut Stream,
    ctx: &MqttContext,
    next: Next,
) -> Next {
    let Some(target) = conn.congested.take() else {
        return next;
    };
    let Some((own, mine)) = conn.session().map(|(s, g)| (s.clone(), g)) else {
        return next;
    };
    if Arc::ptr_eq(&own, &target) {
        // Its own queue: this task is the one that drains it.
        return next;
    }
    let room = crate::session::wait_for_room(target.as_ref(), ctx.broker.limits());
    tokio::pin!(room);
    loop {
        tokio::select! {
            _ = &mut room => return next,
            _ = own.news(mine) => {}
        }
        if own.generation() != mine || own.lock().kick.is_some() {
            // Taken over or kicked: the live loop deals with it.
            return next;
        }
        conn.pump();
        let written = match write_now(conn, wire, Next::Continue) {
            Ok(n) => n,
            Err(n) => write_out(conn, wire, ctx, n).await,
        };
        if written == Next::Close {
            return written;
        }
    }
}

/// Until the session is live (CONNACK sent) or refused. Boxed by the caller:
/// its timer, auth exchange and password check are large and brief, and must
/// not size the task of every idle connection.
async fn handshake(
    wire: &mut Stream,
    conn: &mut Connection,
    buf: &mut BytesMut,
    ctx: &MqttContext,
    peer: std::net::IpAddr,
) -> bool {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let next = tokio::select! {
            r = wire.read_into(buf) => match r {
                Ok(0) | Err(_) => return false,
                Ok(_) => {
                    let next = handle_buffered(conn, buf);
                    login(conn, buf, ctx, peer, next).await
                }
            },
            _ = tokio::time::sleep_until(deadline) => Next::Close,
            _ = ctx.shutdown.cancelled() => Next::Close,
        };
        let next = write_out(conn, wire, ctx, next).await;
        if next == Next::Close {
            return false;
        }
        if conn.is_live() {
            return true;
        }
    }
}

/// The TLS handshake (when the listener has TLS) and the MQTT one: the
/// connection's wire and live [`Connection`], or nothing when either failed.
async fn open(
    stream: tokio::net::TcpStream,
    peer: std::net::IpAddr,
    ctx: Arc<MqttContext>,
) -> Option<(Stream, Connection, BytesMut)> {
    let wire = Stream::accept(stream, ctx.tls.as_ref()).await?;
    open_wire(wire, peer, ctx).await
}

/// The MQTT handshake on a stream already open (TCP, TLS, WebSocket).
async fn open_wire(
    mut wire: Stream,
    peer: std::net::IpAddr,
    ctx: Arc<MqttContext>,
) -> Option<(Stream, Connection, BytesMut)> {
    let ctx = &*ctx;
    let mut buf = BytesMut::new();
    let mut conn = Connection::new(
        ctx.broker.clone(),
        ctx.auth.clone(),
        ctx.settings.load_full(),
    );
    if handshake(&mut wire, &mut conn, &mut buf, ctx, peer).await {
        if buf.is_empty() {
            // The CONNECT's bytes are decoded: an idle connection keeps no
            // read buffer (nor the allocation its packets were split from).
            buf = BytesMut::new();
        }
        Some((wire, conn, buf))
    } else {
        // A connection can fail after going live (a CONNACK that could not
        // be written, a bad packet right behind CONNECT): its session still
        // goes offline, with its will and expiry, like any other.
        let taken_over = conn
            .session()
            .is_some_and(|(slot, mine)| slot.generation() != mine);
        go_offline(conn, &ctx.broker, taken_over);
        drop(buf);
        Box::pin(wire.close(GOODBYE)).await;
        None
    }
}

/// MQTT over an already open stream (a WebSocket at `/mqtt`, MQTT 5 §6):
/// the same login, limits and sessions as over TCP.
pub fn serve_stream(
    wire: Stream,
    peer: std::net::SocketAddr,
    ctx: Arc<MqttContext>,
    permit: ConnPermit,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "mqtt-ws",
        %peer,
        account = tracing::field::Empty,
        client = tracing::field::Empty,
        session = tracing::field::Empty
    );
    let opening = Box::pin(open_wire(wire, peer.ip(), ctx.clone()));
    Traced::new(run(opening, ctx, permit), span)
}

/// What woke an idle connection.
enum Wake {
    /// Bytes arrived (appended to the read buffer).
    Read,
    /// Bytes holding a SUBSCRIBE arrived: counted in
    /// [`SUBSCRIBES_BEING_READ`] until handled.
    ReadSubscribe,
    /// End of stream or a read error.
    Closed,
    /// The session has something for it (messages, a takeover, a kick).
    Session,
}

/// When a connection steps aside for others (see [`poll_idle`]). One
/// byte: it lives in every connection's future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Turn(u8);

impl Turn {
    const NONE: Turn = Turn(0);
    /// A batch was handled: others go before the next read.
    const AFTER_BATCH: Turn = Turn(1);
    /// A batch holding a PUBLISH was read; others went first `n` times:
    /// route it once no SUBSCRIBE read elsewhere is being installed.
    fn route(n: u8) -> Turn {
        Turn(2 + n)
    }
}

/// Connections that have read a batch holding a SUBSCRIBE and not yet
/// handled it (process-wide: only a hint to publishers, see [`poll_idle`]).
static SUBSCRIBES_BEING_READ: AtomicUsize = AtomicUsize::new(0);

/// One count of [`SUBSCRIBES_BEING_READ`], given back when dropped.
struct SubscribeRead;

impl Drop for SubscribeRead {
    fn drop(&mut self) {
        SUBSCRIBES_BEING_READ.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many turns a PUBLISH batch gives up at most waiting for SUBSCRIBEs
/// read elsewhere (bounded: a stream of subscribers never starves it).
const MAX_ROUTE_TURNS: u8 = 8;

/// Waits, without storing a future, for the socket or the session: the one
/// await an idle connection sits in.
///
/// Order across connections: a SUBSCRIBE the server has read must be in
/// force for a PUBLISH read after it on another connection — what a
/// single-threaded broker's order of reads gives, and what clients that
/// publish without waiting for the subscriber's SUBACK rely on. A
/// subscription is installed as soon as it is decoded, with no await
/// before; a batch holding a PUBLISH is routed only after the connection
/// gave its turn to the tasks woken with it (so a SUBSCRIBE on the same
/// worker is read and installed first) and, while another connection is
/// between reading a SUBSCRIBE and installing it, a few turns more.
fn poll_idle(
    cx: &mut std::task::Context<'_>,
    slot: &super::broker::Slot,
    mine: u64,
    wire: &mut Stream,
    buf: &mut BytesMut,
    turn: &mut Turn,
) -> Poll<Wake> {
    let taken = std::mem::take(turn);
    let route = taken.0.checked_sub(2);
    match route {
        // After a read, others first: a publisher whose socket never runs
        // dry would otherwise keep its worker for a whole cooperative budget
        // (128 reads of up to 64 KiB) and overrun the queues of the
        // subscribers it wakes. They get a turn after each batch it brings.
        None if taken == Turn::AFTER_BATCH => {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        None => {}
        Some(n @ (0 | 2)) => {
            // Behind whatever the driver poll just woke (which a woken
            // task would otherwise overtake).
            *turn = Turn::route(n + 1);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Some(1) => {
            // Once more past a poll of the driver.
            *turn = Turn::route(2);
            let _ = std::future::Future::poll(std::pin::pin!(tokio::task::yield_now()), cx);
            return Poll::Pending;
        }
        Some(n) => {
            if n < MAX_ROUTE_TURNS && SUBSCRIBES_BEING_READ.load(Ordering::Acquire) > 0 {
                *turn = Turn::route(n + 1);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Wake::Read);
        }
    }
    // A batch of queued messages spends one unit of tokio's cooperative
    // budget (given back if nothing happens), so that a connection its
    // session keeps busy still lets its worker go now and then.
    let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
    let session = slot.register(mine, cx.waker());
    // The socket is read even when the session has news: a subscriber kept
    // busy by a fast publisher must still read its acknowledgements and
    // pings (the read path pumps the queue too).
    match wire.poll_read_into(cx, buf) {
        Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(Wake::Closed),
        Poll::Ready(Ok(_)) => {
            coop.made_progress();
            *turn = Turn::AFTER_BATCH;
            if codec::holds_subscribe(buf) {
                // Handled at once; publishers elsewhere wait for it.
                SUBSCRIBES_BEING_READ.fetch_add(1, Ordering::AcqRel);
                return Poll::Ready(Wake::ReadSubscribe);
            }
            if codec::holds_publish(buf) {
                // First turn: until this worker has polled the I/O driver
                // (tokio's yield_now defers the wake until then), so that
                // sockets that became readable before this read are seen.
                *turn = Turn::route(0);
                let _ = std::future::Future::poll(std::pin::pin!(tokio::task::yield_now()), cx);
                return Poll::Pending;
            }
            Poll::Ready(Wake::Read)
        }
        Poll::Pending if session => {
            coop.made_progress();
            Poll::Ready(Wake::Session)
        }
        Poll::Pending => Poll::Pending,
    }
}

async fn run<F>(opening: std::pin::Pin<Box<F>>, ctx: Arc<MqttContext>, _permit: ConnPermit)
where
    F: std::future::Future<Output = Option<(Stream, Connection, BytesMut)>>,
{
    let Some((mut wire, mut conn, mut buf)) = opening.await else {
        return;
    };
    let Some((slot, _)) = conn.session() else {
        return;
    };
    if !tracing::Span::current().is_disabled() {
        let span = tracing::Span::current();
        span.record("client", slot.address().name());
        span.record("account", slot.address().account());
        span.record("session", slot.id());
    }
    let mut taken_over = false;
    // A publish read with the CONNECT may wait for the bridge.
    let mut held_back = conn.crossing_pending();
    let mut turn = Turn::NONE;
    // The live loop waits on two things only, polled in place so that no
    // future is stored while idle: the socket and the session's waker.
    // Keep-alive, token ends and shutdown arrive as kicks from the broker's
    // sweep, so no timer or channel lives in an idle task. Everything that
    // must wait for something else (a store flush, a full socket, a
    // congested subscriber) is boxed: rare, and it must not size the task.
    // The session and its generation are read from `conn` each time rather
    // than kept in locals: every byte of this future is paid per connection.
    while let Some((slot, mine)) = conn.session() {
        // Under the lock with the generation check: a taken-over connection
        // must not take its successor's kick.
        let kick = slot.take_kick(mine);
        let mut next = if kick.is_err() {
            taken_over = true;
            conn.disconnect(reason::SESSION_TAKEN_OVER)
        } else if let Ok(Some(why)) = kick {
            tracing::info!(?why, "MQTT session kicked");
            conn.kicked(why)
        } else if ctx.shutdown.is_cancelled() {
            conn.disconnect(reason::SERVER_SHUTTING_DOWN)
        } else if held_back {
            // Packets were left in the buffer by backpressure: go on with
            // them (they were received: the client is alive).
            held_back = false;
            slot.last_rx
                .store(ctx.broker.now_ms(), std::sync::atomic::Ordering::Relaxed);
            handle_buffered(&mut conn, &mut buf)
        } else {
            let (w, b, y) = (&mut wire, &mut buf, &mut turn);
            match std::future::poll_fn(move |cx| poll_idle(cx, slot, mine, w, b, y)).await {
                Wake::Closed => break,
                Wake::Read => {
                    slot.last_rx
                        .store(ctx.broker.now_ms(), std::sync::atomic::Ordering::Relaxed);
                    handle_buffered(&mut conn, &mut buf)
                }
                Wake::ReadSubscribe => {
                    slot.last_rx
                        .store(ctx.broker.now_ms(), std::sync::atomic::Ordering::Relaxed);
                    // Counted off however the handling ends (a panic too).
                    let _counted = SubscribeRead;
                    handle_buffered(&mut conn, &mut buf)
                }
                Wake::Session => {
                    conn.pump();
                    Next::Continue
                }
            }
        };
        if matches!(next, Next::Login(_)) {
            // Logins happen before the session is live; a live one has none.
            next = Next::Close;
        }
        if conn.crossing_pending() && next != Next::Close {
            held_back = !buf.is_empty();
            if let Some(close) = Box::pin(cross(&mut conn, &ctx)).await {
                next = close;
            }
        }
        if conn.congested.is_some() {
            held_back = !buf.is_empty();
            if next != Next::Close {
                next = Box::pin(hold_back(&mut conn, &mut wire, &ctx, next)).await;
            }
        }
        let next = match write_now(&mut conn, &mut wire, next) {
            Ok(next) => next,
            Err(next) => Box::pin(write_out(&mut conn, &mut wire, &ctx, next)).await,
        };
        if next == Next::Close {
            break;
        }
        if buf.is_empty() {
            // Between bursts an idle connection owns no read buffer.
            buf = BytesMut::new();
        }
    }
    if let Some((slot, mine)) = conn.session() {
        slot.unregister(mine);
        taken_over |= slot.generation() != mine;
    }
    // The session goes offline first: a peer slow to close delays
    // nobody's will or takeover.
    go_offline(conn, &ctx.broker, taken_over);
    // No read buffer kept through the linger.
    drop(std::mem::take(&mut buf));
    Box::pin(wire.close(GOODBYE)).await;
}

/// The session of a closed connection goes offline; its will and, for a
/// session that ends with its connection, its end are scheduled.
fn go_offline(mut conn: Connection, broker: &Arc<Broker>, taken_over: bool) {
    if let Some(after) = conn.finish(taken_over) {
        if after.will.is_some() || (after.expiry == 0 && !taken_over) {
            tokio::spawn(aftermath(broker.clone(), after, taken_over));
        }
    }
}

/// Wills and session expiry, after the connection is gone.
async fn aftermath(broker: Arc<Broker>, a: Aftermath, taken_over: bool) {
    let resumed = |a: &Aftermath| a.slot.generation() != a.generation;
    // The session is over when the map no longer holds it (expired, or
    // replaced by a Clean Start connection): its will goes out then, whatever
    // its delay (3.1.2.5: the delay or the end of the session, first wins).
    let ended = |a: &Aftermath| !broker.holds(&a.slot);
    if let Some((will, delay)) = a.will.clone() {
        let delay = delay.min(a.expiry);
        let send = if delay == 0 || ended(&a) {
            true
        } else if taken_over {
            false
        } else {
            // Looked at every second: the session may end (a Clean Start
            // connection replaces it) or resume before the delay is over.
            let until = Instant::now() + Duration::from_secs(u64::from(delay));
            loop {
                if ended(&a) {
                    break true;
                }
                if resumed(&a) {
                    break false;
                }
                let now = Instant::now();
                if now >= until {
                    break true;
                }
                tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
            }
        };
        if send {
            if will.publish.retain {
                if broker.retain(&a.domain, &will) {
                    flush(&broker).await;
                } else {
                    tracing::info!(topic = %will.publish.topic, "retained topic quota reached: will not kept");
                }
            }
            let mut stored = broker.publish(&a.domain, &will).stored;
            if let Some(peers) = broker.peers.get() {
                if peers.forward(&a.domain.name, &will, true).await.failed {
                    tracing::warn!(topic = %will.publish.topic, "a will did not reach every cluster node");
                }
            }
            // A will on a bridged topic crosses like the client's publishes.
            if let Some(b) = broker.bridge.get() {
                if let Some(want @ crate::bridge::Want::Rule) =
                    b.wants(&a.domain.name, &will.publish.topic)
                {
                    let code = crate::mqtt::codec::reason::SUCCESS;
                    stored |= b
                        .from_mqtt(a.slot.address(), &will, want, code)
                        .await
                        .stored;
                }
            }
            if stored {
                flush(&broker).await;
            }
        }
    }
    // A session that ends with its connection ends now; one with an expiry
    // interval is ended by the broker's sweep once the interval has passed.
    // (`end_session` leaves it alone if a connection resumed it meanwhile.)
    if !taken_over && a.expiry == 0 && broker.end_session(&a.domain, &a.slot) {
        flush(&broker).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte of a live connection's future and of its session slot is
    /// paid once per connected device: tokio rounds a task to 128 bytes, and
    /// a 280-byte future is the largest that fits a 384-byte task. This
    /// fails when a change grows them, so the growth is a decision. A slot of
    /// 208 bytes is an allocation of 224 in its `Arc`.
    #[test]
    fn idle_connection_state_stays_small() {
        fn size_of_val<F>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let (auth, _dir) = crate::auth::test_support::core(&crate::config::Config::default());
        let auth = Arc::new(auth);
        let registry = Arc::new(crate::session::Registry::standalone());
        let broker =
            Broker::new(&["localhost".into()], auth.store().clone(), registry, 10).unwrap();
        let ctx = Arc::new(MqttContext {
            broker: Arc::new(broker),
            auth,
            settings: Arc::new(arc_swap::ArcSwap::from_pointee(MqttSettings {
                default_host: "localhost".into(),
                allow_anonymous: false,
                max_packet_size: 1024,
                receive_maximum: 16,
                topic_alias_maximum: 0,
                limits: Default::default(),
            })),
            shutdown: tokio_util::sync::CancellationToken::new(),
            tls: None,
        });
        // Never polled: only its size is looked at.
        let opening = Box::pin(async { None });
        let task = Traced::new(
            run(opening, ctx, ConnPermit::detached()),
            tracing::Span::none(),
        );
        let future = size_of_val(&task);
        assert!(future <= 280, "connection future is {future} bytes");
        let slot = std::mem::size_of::<super::super::broker::Slot>();
        assert!(slot <= 208, "session slot is {slot} bytes");
    }
}
