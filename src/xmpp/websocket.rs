//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP
//! listeners (TLS on the HTTPS one), and XEP-0156's `/.well-known/host-meta`
//! (XRD) and `host-meta.json` advertising it. The `xmpp` subprotocol is
//! required; text messages, one element each, are translated by
//! [`framing`] into the bytes of a TCP stream and back, so the connection
//! task, login, limits and sessions are those of TCP.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warp::reply::Reply;
use warp::ws::{Message, WebSocket};
use warp::Filter;

use super::c2s::TlsPolicy;
use super::listener::XmppContext;
use crate::mqtt::websocket::WsConn;
use crate::net::Stream;

pub mod framing;

/// The link relation of XEP-0156 for a WebSocket endpoint.
pub const REL: &str = "urn:xmpp:alt-connections:websocket";

/// A WebSocket carrying RFC 7395 framing, as a byte stream.
pub struct XmppWsStream {
    ws: WebSocket,
    /// What is left of the last message read, translated.
    pending: Bytes,
    out: framing::Outbound,
    /// Messages cut from what was written, not yet handed to the socket.
    queued: VecDeque<String>,
}

impl XmppWsStream {
    pub fn new(ws: WebSocket) -> XmppWsStream {
        XmppWsStream {
            ws,
            pending: Bytes::new(),
            out: framing::Outbound::default(),
            queued: VecDeque::new(),
        }
    }

    /// Hands every queued message to the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queued.is_empty() {
            std::task::ready!(Sink::<Message>::poll_ready(Pin::new(&mut self.ws), cx))
                .map_err(io::Error::other)?;
            let m = self.queued.pop_front().expect("not empty");
            Pin::new(&mut self.ws)
                .start_send(Message::text(m))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for XmppWsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        crate::net::websocket::poll_read_messages(&mut me.ws, &mut me.pending, cx, buf, |m| {
            Ok(framing::inbound(m.as_bytes()).into())
        })
    }
}

impl AsyncWrite for XmppWsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // What was cut before goes first: a slow reader holds the writer.
        std::task::ready!(self.poll_send(cx))?;
        let me = &mut *self;
        me.out.feed(buf, &mut me.queued);
        let _ = me.poll_send(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(cx))?;
        Sink::<Message>::poll_flush(Pin::new(&mut self.ws), cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(cx))?;
        Sink::<Message>::poll_close(Pin::new(&mut self.ws), cx).map_err(io::Error::other)
    }
}

/// The `/xmpp-websocket` route: a message may be as large as a stanza
/// (`max_stanza_size`), and so may a frame.
pub fn route(
    ctx: Arc<XmppContext>,
    secure: bool,
    max_message: usize,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path("xmpp-websocket")
        .and(warp::path::end())
        .and(warp::ws())
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::ext::optional::<WsConn>())
        .map(
            move |ws: warp::ws::Ws, protocols: Option<String>, conn: Option<WsConn>| {
                // RFC 7395 §3.1: the subprotocol is "xmpp".
                let offered = protocols
                    .as_deref()
                    .is_some_and(|p| p.split(',').any(|x| x.trim() == "xmpp"));
                if !offered {
                    return warp::reply::with_status(
                        "the WebSocket subprotocol \"xmpp\" is required\n",
                        warp::http::StatusCode::BAD_REQUEST,
                    )
                    .into_response();
                }
                let ctx = ctx.clone();
                let reply = ws
                    .max_message_size(max_message)
                    .max_frame_size(max_message)
                    .on_upgrade(move |socket| async move {
                        let (peer, _permit) = WsConn::take(conn);
                        let stream = Stream::Boxed(Box::new(XmppWsStream::new(socket)));
                        let policy = TlsPolicy {
                            secure,
                            starttls: false,
                            required: false,
                        };
                        super::listener::serve_stream(stream, peer, policy, ctx).await
                    });
                warp::reply::with_header(reply, "sec-websocket-protocol", "xmpp").into_response()
            },
        )
}

/// XEP-0156: `/.well-known/host-meta` (XRD) and `host-meta.json`, naming
/// this listener's `/xmpp-websocket` under the host the request was made
/// to (`ws://` on HTTP, `wss://` on HTTPS).
pub fn host_meta(
    secure: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path!(".well-known" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("host"))
        .and_then(move |file: String, host: Option<String>| async move {
            let host = host
                .filter(|h| {
                    !h.is_empty()
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
                })
                .unwrap_or_else(|| "localhost".into());
            let href = format!(
                "{}://{host}/xmpp-websocket",
                if secure { "wss" } else { "ws" }
            );
            let (body, ct) = match file.as_str() {
                "host-meta" => (
                    format!(
                        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='{REL}' href='{href}'/>\n</XRD>\n"
                    ),
                    "application/xrd+xml",
                ),
                "host-meta.json" => (
                    serde_json::json!({"links": [{"rel": REL, "href": href}]}).to_string(),
                    "application/json",
                ),
                _ => return Err(warp::reject::not_found()),
            };
            let r = warp::reply::with_header(body, "content-type", ct);
            // Browsers on other origins may read it (XEP-0156 §3.2).
            Ok::<_, warp::Rejection>(
                warp::reply::with_header(r, "access-control-allow-origin", "*").into_response(),
            )
        })
}
