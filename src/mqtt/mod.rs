//! MQTT 3.1.1 and 5.0 broker.
//!
//! - [`codec`]: our own sans-I/O codec (why not mqttbytes: see its module doc);
//! - [`topics`]: topic validation, the subscription trie and the retained index;
//! - [`broker`]: per-domain sessions, subscriptions, retained messages, routing;
//! - [`subscriptions`]: exact topics in a concurrent map, wildcards in the trie;
//! - [`persist`]: persistent sessions and their queued messages in the store;
//! - [`wills`]: wills kept in the shared store, for a node that dies (a cluster);
//! - [`connect`]: what a CONNECT's credentials call for (through the auth core);
//! - [`session`]: the sans-I/O connection state machine;
//! - [`listener`]: the thin socket loop around it.

pub mod acl;
pub mod broker;
pub mod codec;
pub mod connect;
pub mod listener;
pub mod persist;
pub mod session;
pub mod subscriptions;
pub mod topics;
pub mod websocket;
pub mod wills;
