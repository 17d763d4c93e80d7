//! Petrel: one server that is an XMPP server, an MQTT 5 broker and an OAuth 2
//! authorization server whose tokens log a user in over both.
//!
//! How the pieces fit: [`config`] turns TOML into a typed `Config`; [`server`]
//! binds the listeners on one tokio runtime and runs each accept loop, with TLS
//! from [`tls`]. Every protocol authenticates through [`auth::AuthCore`] — users,
//! OAuth clients, tokens and scopes — which persists through the [`store`] trait
//! (sled today). [`oauth`] serves the OAuth HTTP endpoints, [`ctl`] the admin
//! commands (CLI and admin socket alike), and [`registry`] is the lock-free map of
//! connected sessions that routing reads. [`xmpp`] is the XMPP client-to-server
//! side: a sans-I/O stream state machine, its IM layer and routing table.
//! [`loadgen`] is the engine of the load generator (`benches/load.rs`), a
//! client of the listeners like any other.

#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod ctl;
pub mod loadgen;
pub mod mqtt;
pub mod net;
pub mod oauth;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

pub mod xmpp;
