//! The networking layer under every protocol: accepting connections and the
//! byte stream they arrive on.
//!
//! - [`accept`]: the accept loop of one listener — a connection limit
//!   (`max_connections`) held by a one-pointer [`ConnPermit`] per connection,
//!   back-off when accepting fails (out of file descriptors), and the count
//!   of open connections that a graceful shutdown drains;
//! - [`stream`]: [`Stream`], the one byte-stream type that plain TCP, TLS
//!   (direct or after STARTTLS) and any other transport fit, read through a
//!   per-thread scratch buffer so an idle connection holds none;
//! - [`websocket`]: a WebSocket (binary messages) as such a byte stream;
//! - [`Traced`]: a future inside a tracing span that costs one pointer when
//!   the span is disabled.
//!
//! Nothing here knows a protocol: the MQTT, XMPP and HTTP listeners use these
//! pieces, and `server.rs` only composes them.

pub mod accept;
pub mod stream;
mod traced;
pub mod websocket;

pub use accept::{accept_loop, Acceptor, ConnPermit, OpenConns};
pub use stream::{Io, Stream, HANDSHAKE_TIMEOUT};
pub use traced::Traced;
