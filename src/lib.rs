//! Petrel: one server that is an XMPP server, an MQTT 5 broker and an OAuth 2
//! authorization server whose tokens log a user in over both.
//!
//! How the pieces fit (ARCHITECTURE.md has the map): [`config`] turns TOML
//! into a typed `Config`; [`server`] composes the parts and binds the
//! listeners on one tokio runtime; [`net`] is the connection layer under
//! every protocol (accept loop, permits, the byte stream TCP and TLS share),
//! with certificates from [`tls`]. Every protocol logs in through
//! [`auth::AuthCore`] — users, OAuth clients, tokens, scopes and the one
//! login decision — which persists through the [`store`] (a store thread
//! over sled, or memory). [`session`] is the one registry of sessions of
//! both protocols: queues, wake-ups, kicks, flow control, token ends.
//! [`mqtt`] is the MQTT broker, [`xmpp`] the XMPP client-to-server side, each
//! a sans-I/O core with a thin socket loop around it; [`oauth`] serves the
//! OAuth HTTP endpoints and [`ctl`] the admin commands (CLI and admin socket
//! alike). [`loadgen`] is the engine of the load generator
//! (`benches/load.rs`), a client of the listeners like any other.

#![forbid(unsafe_code)]

pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod data_dir;
#[doc(hidden)]
pub mod fuzzing;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod net;
pub mod oauth;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

pub mod xmpp;
