//! MQTT over WebSocket (MQTT 5 §6) at `/mqtt` on the HTTP listeners (TLS
//! on the HTTPS one): the upgrade, the `mqtt` subprotocol, message and
//! frame size bounds, then the same connection task as TCP
//! ([`super::listener::serve_stream`]) — the same login, limits and
//! sessions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use warp::reply::Reply;
use warp::Filter;

use super::listener::{serve_stream, MqttContext};
use crate::net::websocket::WsStream;
use crate::net::{ConnPermit, Stream};

/// What the HTTP connection hands to an upgrade: the peer, and the
/// connection's permit (the upgraded connection keeps counting against
/// the listener's `max_connections` once hyper lets go of it).
#[derive(Clone)]
pub struct WsConn {
    pub peer: SocketAddr,
    pub permit: Arc<Mutex<Option<ConnPermit>>>,
}

impl WsConn {
    /// The upgraded connection's peer and permit (unknown and detached when
    /// the request came without them).
    pub fn take(conn: Option<WsConn>) -> (SocketAddr, ConnPermit) {
        match conn {
            Some(c) => {
                let taken = c.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
                (c.peer, taken.unwrap_or_else(ConnPermit::detached))
            }
            None => (SocketAddr::from(([0, 0, 0, 0], 0)), ConnPermit::detached()),
        }
    }
}

/// The `/mqtt` route. A WebSocket message may be as large as an MQTT
/// packet (`max_packet`); a frame at most `max_frame` (the WebSocket layer
/// reserves a frame's announced length as soon as it reads its header, so
/// this is what a peer can pin before it logs in).
pub fn route(
    ctx: Arc<MqttContext>,
    max_packet: usize,
    max_frame: usize,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let max_frame = max_frame.min(max_packet);
    warp::path("mqtt")
        .and(warp::path::end())
        .and(warp::ws())
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::ext::optional::<WsConn>())
        .map(
            move |ws: warp::ws::Ws, protocols: Option<String>, conn: Option<WsConn>| {
                let ctx = ctx.clone();
                let reply = ws
                    .max_message_size(max_packet)
                    .max_frame_size(max_frame)
                    .on_upgrade(move |socket| async move {
                        let (peer, permit) = WsConn::take(conn);
                        let wire = Stream::Boxed(Box::new(WsStream::new(socket)));
                        serve_stream(wire, peer, ctx, permit).await
                    });
                // §6.0: the subprotocol is "mqtt" (a client that offers none
                // is served without one).
                let offered = protocols
                    .as_deref()
                    .is_some_and(|p| p.split(',').any(|x| x.trim() == "mqtt"));
                if offered {
                    warp::reply::with_header(reply, "sec-websocket-protocol", "mqtt")
                        .into_response()
                } else {
                    reply.into_response()
                }
            },
        )
}
