//! The socket loop around [`Connection`]: read, decode, feed, flush, write.
//!
//! One task per connection waits on whichever comes first: bytes from the
//! client, messages queued for its session, a newer connection taking the
//! session over, the end of its token, its keep-alive deadline, or shutdown.
//! Acknowledgements that depend on a store write go out only after the store is
//! flushed.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use tracing::Instrument;

use super::broker::Broker;
use super::codec::{self, reason};
use super::session::{Aftermath, Connection, MqttSettings, Next};
use crate::auth::AuthCore;
use crate::registry::{Protocol, Registry, SessionInfo};
use crate::store::Store;
use crate::wire::Wire;

/// How long a write may make no progress before the connection is dropped.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// How long a new connection may take to send CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every MQTT connection task shares.
pub struct MqttContext {
    pub broker: Arc<Broker>,
    pub auth: Arc<AuthCore>,
    pub registry: Arc<Registry>,
    pub settings: Arc<MqttSettings>,
    pub shutdown: tokio_util::sync::CancellationToken,
}

async fn flush(store: &Arc<dyn Store>) {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "store flush failed"),
        Err(e) => tracing::error!(error = %e, "store flush did not finish"),
    }
}

/// Serves one MQTT connection to its end.
pub async fn serve(wire: Wire, peer: std::net::SocketAddr, ctx: Arc<MqttContext>) {
    let span = tracing::info_span!("mqtt", %peer, client = tracing::field::Empty);
    run(wire, ctx).instrument(span).await
}

/// Decodes and handles every whole packet in `buf` (checking passwords on a
/// blocking thread when CONNECT asks for it).
async fn handle_buffered(conn: &mut Connection, buf: &mut BytesMut, ctx: &MqttContext) -> Next {
    loop {
        match codec::decode(buf, conn.version(), conn.max_packet_size()) {
            Ok(Some(p)) => {
                let mut next = conn.handle(p);
                if let Next::CheckPassword { jid, password } = next {
                    let auth = ctx.auth.clone();
                    let j = jid.clone();
                    let ok = tokio::task::spawn_blocking(move || {
                        auth.check_password(&j, &password).is_ok()
                    })
                    .await
                    .unwrap_or(false);
                    next = conn.password_checked(jid, ok);
                }
                if next == Next::Close {
                    return next;
                }
                if conn.congested.is_some() {
                    // Backpressure: leave the rest buffered until the
                    // congested subscriber has drained.
                    return next;
                }
            }
            Ok(None) => return Next::Continue,
            Err(e) => return conn.decode_error(&e),
        }
    }
}

/// Flushes the store if an acknowledgement waits on it, then writes `out`,
/// pumping more queued messages while the socket takes them.
async fn write_out(
    conn: &mut Connection,
    wire: &mut Wire,
    ctx: &MqttContext,
    mut next: Next,
) -> Next {
    if conn.needs_flush {
        flush(ctx.broker.store()).await;
        conn.needs_flush = false;
    }
    loop {
        if !conn.out.is_empty() {
            // A peer that takes nothing for this long is gone or hostile.
            match tokio::time::timeout(WRITE_STALL, wire.write_all(&conn.out)).await {
                Ok(Ok(())) => {}
                _ => return Next::Close,
            }
            // Idle connections hold no write buffer.
            conn.out = BytesMut::new();
        }
        if next == Next::Close || !conn.pump() {
            if !conn.out.is_empty() && next != Next::Close {
                continue;
            }
            return next;
        }
        if conn.needs_flush {
            flush(ctx.broker.store()).await;
            conn.needs_flush = false;
        }
        next = Next::Continue;
    }
}

/// Backpressure for QoS 1/2: a publisher whose messages left a subscriber's
/// queue over its bound gets its acknowledgements (and so its next messages)
/// only once that queue drains, or after at most five seconds.
async fn hold_back(broker: &Broker, target: &super::broker::Slot) {
    let until = Instant::now() + Duration::from_secs(5);
    while broker.is_congested(target) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Until the session is live (CONNACK sent) or refused. Boxed by the caller:
/// its timer, auth exchange and password check are large and brief, and must
/// not size the task of every idle connection.
async fn handshake(
    wire: &mut Wire,
    conn: &mut Connection,
    buf: &mut BytesMut,
    ctx: &MqttContext,
) -> bool {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let next = tokio::select! {
            r = wire.read_into(buf) => match r {
                Ok(0) | Err(_) => return false,
                Ok(_) => handle_buffered(conn, buf, ctx).await,
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

async fn run(mut wire: Wire, ctx: Arc<MqttContext>) {
    let mut conn = Connection::new(ctx.broker.clone(), ctx.auth.clone(), ctx.settings.clone());
    let mut buf = BytesMut::new();
    if !Box::pin(handshake(&mut wire, &mut conn, &mut buf, &ctx)).await {
        wire.shutdown().await;
        return;
    }
    let Some((slot, mine)) = conn.slot() else {
        return;
    };
    let registry_key = conn.identity().map(|(account, name)| {
        tracing::Span::current().record("client", name.as_str());
        ctx.registry.add(SessionInfo {
            protocol: Protocol::Mqtt,
            name,
            account,
            since: crate::auth::now(),
        })
    });
    let mut taken_over = false;
    let mut held_back = false;
    // The live loop waits on two things only: the socket and the slot's
    // Notify. Keep-alive, token ends and shutdown arrive as kicks from the
    // broker's sweep, so no timer or channel lives in an idle task.
    loop {
        // Registered before the checks below, so that a takeover or kick that
        // happens right after them still wakes this task.
        let notified = slot.ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let kick = slot.lock().kick.take();
        let next = if slot.generation() != mine {
            taken_over = true;
            conn.disconnect(reason::SESSION_TAKEN_OVER)
        } else if let Some(code) = kick {
            tracing::info!(code, "MQTT session kicked");
            conn.disconnect(code)
        } else if ctx.shutdown.is_cancelled() {
            conn.disconnect(reason::SERVER_SHUTTING_DOWN)
        } else if held_back {
            // Packets were left in the buffer by backpressure: go on with them.
            held_back = false;
            handle_buffered(&mut conn, &mut buf, &ctx).await
        } else {
            tokio::select! {
                r = wire.read_into(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        slot.last_rx.store(ctx.broker.clock_ms(), std::sync::atomic::Ordering::Relaxed);
                        handle_buffered(&mut conn, &mut buf, &ctx).await
                    }
                },
                _ = &mut notified => {
                    conn.pump();
                    Next::Continue
                }
            }
        };
        if let Some(target) = conn.congested.take() {
            held_back = !buf.is_empty();
            // Not for its own queue: this task is the one that drains it.
            if !Arc::ptr_eq(&target, &slot) {
                hold_back(&ctx.broker, &target).await;
            }
        }
        if write_out(&mut conn, &mut wire, &ctx, next).await == Next::Close {
            break;
        }
        if buf.is_empty() {
            // Between bursts an idle connection owns no read buffer.
            buf = BytesMut::new();
        }
    }
    wire.shutdown().await;
    taken_over |= slot.generation() != mine;
    if let Some(k) = registry_key {
        ctx.registry.remove(k);
    }
    if let Some(after) = conn.finish(taken_over) {
        tokio::spawn(aftermath(ctx.broker.clone(), after, taken_over));
    }
}

/// Wills and session expiry, after the connection is gone.
async fn aftermath(broker: Arc<Broker>, a: Aftermath, taken_over: bool) {
    let resumed = |a: &Aftermath| a.slot.generation() != a.generation;
    if let Some((will, delay)) = a.will.clone() {
        let delay = delay.min(a.expiry);
        let send = if delay == 0 {
            true
        } else if taken_over {
            false
        } else {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            !resumed(&a)
        };
        if send {
            if will.publish.retain {
                if let Err(e) = broker.retain(&a.domain, &will) {
                    tracing::error!(error = %e, "storing a retained will failed");
                }
                flush(broker.store()).await;
            }
            if broker.publish(&a.domain, &will).stored {
                flush(broker.store()).await;
            }
        }
    }
    if taken_over {
        return;
    }
    expire_later(broker, a.domain, a.slot, a.generation, a.expiry).await;
}

/// Ends a disconnected session after `secs` unless a connection resumed it.
pub async fn expire_later(
    broker: Arc<Broker>,
    domain: Arc<super::broker::Domain>,
    slot: Arc<super::broker::Slot>,
    generation: u64,
    secs: u32,
) {
    if secs == u32::MAX {
        return;
    }
    if secs > 0 {
        tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
    }
    if slot.generation() == generation && !slot.lock().online {
        broker.end_session(&domain, &slot);
        flush(broker.store()).await;
    }
}
