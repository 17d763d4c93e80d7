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
        Err(e) => tracing::error!(error = %e, "store flush panicked"),
    }
}

/// Serves one MQTT connection to its end.
pub async fn serve(wire: Wire, peer: std::net::SocketAddr, ctx: Arc<MqttContext>) {
    let span = tracing::info_span!("mqtt", %peer, client = tracing::field::Empty);
    run(wire, ctx).instrument(span).await
}

async fn run(mut wire: Wire, ctx: Arc<MqttContext>) {
    let mut conn = Connection::new(ctx.broker.clone(), ctx.auth.clone(), ctx.settings.clone());
    let mut buf = BytesMut::new();
    let started = Instant::now();
    let mut last_rx = started;
    let mut registry_key = None;
    let mut taken_over = false;
    loop {
        let mut next = Next::Continue;
        let live = conn.slot();
        let grant = conn.grant().cloned();
        let ka = conn.keep_alive();
        let deadline = match (&live, ka) {
            (None, _) => started + CONNECT_TIMEOUT,
            (Some(_), 0) => Instant::now() + Duration::from_secs(86_400),
            (Some(_), k) => last_rx + Duration::from_millis(u64::from(k) * 1500),
        };
        let mut gen_rx = live.as_ref().map(|(s, _)| s.generation.subscribe());
        // A takeover that happened while this task was busy is not a "change"
        // to a receiver made after it: compare the generation itself first.
        if let (Some(rx), Some((_, mine))) = (&gen_rx, &live) {
            if *rx.borrow() != *mine {
                taken_over = true;
                next = conn.disconnect(reason::SESSION_TAKEN_OVER);
            }
        }
        if next != Next::Close {
            tokio::select! {
                r = wire.read_into(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        last_rx = Instant::now();
                        loop {
                            match codec::decode(&mut buf, conn.version(), conn.max_packet_size()) {
                                Ok(Some(p)) => {
                                    next = conn.handle(p);
                                    if let Next::CheckPassword { jid, password } = next {
                                        let auth = ctx.auth.clone();
                                        let j = jid.clone();
                                        let ok = tokio::task::spawn_blocking(move || auth.check_password(&j, &password).is_ok()).await.unwrap_or(false);
                                        next = conn.password_checked(jid, ok);
                                    }
                                    if next == Next::Close {
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    next = conn.decode_error(&e);
                                    break;
                                }
                            }
                        }
                    }
                },
                _ = async { live.as_ref().expect("guarded").0.ready.notified().await }, if live.is_some() => {
                    conn.pump();
                }
                _ = async { gen_rx.as_mut().expect("guarded").changed().await }, if gen_rx.is_some() => {
                    let (_, mine) = live.as_ref().expect("guarded");
                    if *gen_rx.as_ref().expect("guarded").borrow() != *mine {
                        taken_over = true;
                        next = conn.disconnect(reason::SESSION_TAKEN_OVER);
                    }
                }
                end = async { grant.as_ref().expect("guarded").ended().await }, if grant.is_some() => {
                    tracing::info!(why = ?end, "token ended; closing the MQTT session");
                    next = conn.disconnect(reason::NOT_AUTHORIZED);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    next = if live.is_some() { conn.disconnect(reason::KEEP_ALIVE_TIMEOUT) } else { Next::Close };
                }
                _ = ctx.shutdown.cancelled() => {
                    next = conn.disconnect(reason::SERVER_SHUTTING_DOWN);
                }
            }
        }
        if registry_key.is_none() {
            if let Some((account, name)) = conn.identity() {
                tracing::Span::current().record("client", name.as_str());
                registry_key = Some(ctx.registry.add(SessionInfo {
                    protocol: Protocol::Mqtt,
                    name,
                    account,
                    since: crate::auth::now(),
                }));
            }
        }
        if conn.needs_flush {
            flush(ctx.broker.store()).await;
            conn.needs_flush = false;
        }
        // Keep writing while the session has more queued than one batch.
        loop {
            if !conn.out.is_empty() {
                if wire.write_all(&conn.out).await.is_err() {
                    next = Next::Close;
                    break;
                }
                // Idle connections hold no write buffer.
                conn.out = BytesMut::new();
            }
            if next == Next::Close || !conn.pump() {
                if !conn.out.is_empty() && next != Next::Close {
                    continue;
                }
                break;
            }
        }
        if next == Next::Close {
            break;
        }
        if buf.is_empty() {
            // Between bursts an idle connection owns no read buffer.
            buf = BytesMut::new();
        }
    }
    wire.shutdown().await;
    if let Some(k) = registry_key {
        ctx.registry.remove(k);
    }
    if let Some(after) = conn.finish(taken_over) {
        tokio::spawn(aftermath(ctx.broker.clone(), after, taken_over));
    }
}

/// Wills and session expiry, after the connection is gone.
async fn aftermath(broker: Arc<Broker>, a: Aftermath, taken_over: bool) {
    let resumed = |a: &Aftermath| *a.slot.generation.borrow() != a.generation;
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
            if broker.publish(&a.domain, &will).1 {
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
    if *slot.generation.borrow() == generation && !slot.lock().online {
        broker.end_session(&domain, &slot);
        flush(broker.store()).await;
    }
}
