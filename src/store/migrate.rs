//! Bringing a store written by an older Petrel up to the current layout, once,
//! when it is opened.
//!
//! Layout 0 (no `layout` record; Petrel before the session layer) kept MQTT
//! queued messages in the `Offline` tree beside XMPP offline messages, and
//! stored retained messages, queued messages and the server key without a
//! version byte. Layout 1 moves the MQTT entries to their own tree and wraps
//! every value in a versioned record.

use super::records::{self, Layout, StoredFrame, StoredKey};
use super::{Store, StoreError, Tree};

/// The layout this build writes.
pub const CURRENT: u32 = 1;

const LAYOUT_KEY: &[u8] = b"layout";

/// Migrates `store` to [`CURRENT`] if it is older; refuses a newer one.
/// Blocking (runs where the store is opened).
pub(crate) fn to_current(store: &Store) -> Result<(), StoreError> {
    let version = match store.get_blocking(Tree::Meta, LAYOUT_KEY)? {
        Some(v) => records::decode::<Layout>("meta", &v)?.version,
        None => 0,
    };
    if version > CURRENT {
        return Err(StoreError::Unsupported(format!(
            "the store has layout {version}, newer than this Petrel's {CURRENT}"
        )));
    }
    if version == 0 {
        from_layout_0(store)?;
    }
    if version < CURRENT {
        store.put(
            Tree::Meta,
            LAYOUT_KEY,
            records::encode(&Layout { version: CURRENT }),
        );
        store.barrier_blocking()?;
        if version > 0 || !store.scan_prefix_blocking(Tree::Users, b"")?.is_empty() {
            tracing::info!(from = version, to = CURRENT, "store layout migrated");
        }
    }
    Ok(())
}

fn from_layout_0(store: &Store) -> Result<(), StoreError> {
    // Each step skips what a migration cut short already converted. The
    // raw server key is 32 bytes, its record 33; a versioned record starts
    // with its version byte, a raw MQTT frame never does (packet type 0 is
    // reserved).
    let converted = |v: &[u8]| v.first() == Some(&records::VERSION);
    if let Some(k) = store.get_blocking(Tree::Meta, b"server_key")? {
        if let Ok(key) = <[u8; 32]>::try_from(k.as_slice()) {
            store.put(
                Tree::Meta,
                "server_key",
                records::encode(&StoredKey { key }),
            );
        }
    }
    for (k, v) in store.scan_prefix_blocking(Tree::Retained, b"")? {
        if !converted(&v) {
            store.put(
                Tree::Retained,
                k,
                records::encode(&StoredFrame { frame: v }),
            );
        }
    }
    for (k, v) in store.scan_prefix_blocking(Tree::Offline, b"")? {
        // XMPP offline keys begin with a bare JID (which has an '@'), MQTT
        // ones with a domain.
        let first = k.split(|b| *b == 0).next().unwrap_or(&[]);
        if first.contains(&b'@') {
            continue;
        }
        let value = if v.is_empty() || converted(&v) {
            // An incoming QoS 2 packet-id marker, or already converted.
            v
        } else {
            records::encode(&StoredFrame { frame: v })
        };
        store.put(Tree::MqttQueue, k.clone(), value);
        store.delete(Tree::Offline, k);
    }
    Ok(())
}
