//! XMPP client-to-server (RFC 6120, RFC 6121) for the hosted domains.
//!
//! How the parts fit, from the socket inwards:
//! - [`listener`]: the connection task — reads into [`stream::XmlStream`],
//!   feeds its events to [`c2s::C2s`], carries out what it asks (write, TLS,
//!   credential checks through the one auth core, bind) and waits for
//!   stanzas queued by others, kicks, the token's end and shutdown;
//! - [`stream`] and [`element`]: the incremental, size-limited XML parser
//!   and the element tree;
//! - [`c2s`] and [`sasl`]: the sans-I/O stream state machine — header checks,
//!   STARTTLS, SASL (PLAIN, SCRAM-SHA-1/-256, X-OAUTH2, OAUTHBEARER), resource
//!   binding, stanza checks and `from` stamping; [`stanza`] has JIDs, stanza
//!   and stream errors;
//! - [`im`]: what happens to a checked stanza — message routing here,
//!   [`presence`] and subscriptions, [`roster`], [`offline`] messages and the
//!   iqs the server answers itself ([`disco`]); [`carbons`] copies chats to
//!   the account's other resources; [`blocking`] keeps block lists;
//! - [`router`]: the lock-free routing table (full JID → session queue, bare
//!   JID → resources) that makes delivery to an online user a memory-only
//!   `try_send`.
//!
//! Only hosted domains are served; there is no server-to-server.

pub mod account_cache;
pub mod blocking;
pub mod c2s;
pub mod carbons;
pub mod devices;
pub mod disco;
pub mod element;
pub mod im;
pub mod listener;
pub mod mam;
pub mod mam_iq;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod presence;
pub mod pubsub;
pub mod remote;
pub mod roster;
pub mod router;
pub mod sasl;
pub mod sasl2;
pub mod services;
pub mod sm;
pub mod stanza;
pub mod storage;
pub mod stream;
pub mod upload;
pub mod websocket;

pub use im::ImServer;
pub use router::Router;
