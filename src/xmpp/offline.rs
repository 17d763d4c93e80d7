//! Offline messages (XEP-0160): chat and normal messages for an account with
//! no available resource are kept in the store's `Offline` tree and handed
//! over after the account's next initial presence, oldest first, each with a
//! XEP-0203 `<delay/>` saying when it arrived.
//!
//! Keys are `owner NUL time(µs, BE) seq(BE)`, so one prefix scan returns an
//! account's messages in arrival order. Values are the serialized stanza in a
//! versioned record. Nothing acknowledges a message to its sender in XMPP, so
//! storing does not wait for a barrier; the store's next commit (any
//! barrier, or sled's own periodic flush) makes it durable soon. The cap is
//! checked by counting keys, never by reading the messages.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::element::Element;
use super::stanza::NS_DELAY;
use super::stream::NS_CLIENT;
use crate::auth::BareJid;
use crate::store::{records, Store, StoreError, Tree};

/// Messages kept per account by default (`max_offline_messages`); beyond
/// that senders get `resource-constraint`.
pub const MAX_PER_ACCOUNT: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OfflineRecord {
    /// The stanza as it will be written to the recipient.
    stanza: Vec<u8>,
}

pub struct OfflineStore {
    store: Store,
    /// Messages kept per account.
    pub max: usize,
    clock: Arc<dyn crate::session::Clock>,
    seq: AtomicU32,
}

fn prefix(owner: &BareJid) -> Vec<u8> {
    let mut k = owner.to_string().into_bytes();
    k.push(0);
    k
}

impl OfflineStore {
    pub fn new(store: Store, clock: Arc<dyn crate::session::Clock>) -> OfflineStore {
        OfflineStore {
            store,
            max: MAX_PER_ACCOUNT,
            clock,
            seq: AtomicU32::new(0),
        }
    }

    /// Keeps `msg` for `owner`; `Ok(false)` when the account's storage is full.
    pub async fn push(
        &self,
        owner: &BareJid,
        msg: &Element,
        server: &str,
    ) -> Result<bool, StoreError> {
        let p = prefix(owner);
        let held = self.store.count_prefix(Tree::Offline, &p, self.max).await?;
        if held >= self.max {
            return Ok(false);
        }
        let micros = self.clock.unix_micros();
        let mut msg = msg.clone();
        msg.push_child(
            Element::new("delay", NS_DELAY)
                .with_attr("from", server)
                .with_attr("stamp", rfc3339(micros / 1_000_000))
                .with_text("Offline storage"),
        );
        let mut key = p;
        key.extend_from_slice(&micros.to_be_bytes());
        key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let rec = OfflineRecord {
            stanza: msg.to_bytes(NS_CLIENT),
        };
        self.store.put(Tree::Offline, key, records::encode(&rec));
        Ok(true)
    }

    /// Removes and returns `owner`'s messages, oldest first. A record that
    /// is unreadable, or whose stanza is not one well-formed element (a
    /// damaged disk), is logged and dropped: written out, it would break
    /// the recipient's stream at every login.
    pub async fn take(&self, owner: &BareJid) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self
            .store
            .scan_prefix(Tree::Offline, &prefix(owner))
            .await?
        {
            self.store.delete(Tree::Offline, k);
            match records::decode::<OfflineRecord>("offline", &v) {
                Ok(rec) if super::stream::is_one_stanza(&rec.stanza) => out.push(rec.stanza),
                Ok(_) | Err(_) => {
                    tracing::error!(account = %owner, "skipping an unreadable offline message")
                }
            }
        }
        Ok(out)
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` (XEP-0082), the same form the admin commands print.
pub use crate::ctl::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    /// A damaged record (undecodable, or a stanza that is not one
    /// well-formed element) is dropped; the good ones still arrive.
    #[tokio::test]
    async fn damaged_records_are_skipped() {
        let store = Store::memory();
        let o = OfflineStore::new(
            store.clone(),
            Arc::new(crate::session::SystemClock::default()),
        );
        let bob = BareJid::parse("bob@x").unwrap();
        let key = |n: u8| {
            let mut k = prefix(&bob);
            k.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, n, 0, 0, 0, 0]);
            k
        };
        let rec = |s: &str| {
            records::encode(&OfflineRecord {
                stanza: s.as_bytes().to_vec(),
            })
        };
        store.put(
            Tree::Offline,
            key(1),
            rec("<message><body>ok</body></message>"),
        );
        store.put(Tree::Offline, key(2), rec("<m"));
        store.put(Tree::Offline, key(3), rec("<a/><b/>"));
        store.put(Tree::Offline, key(4), b"\x01\xff\xff".to_vec());
        store.put(Tree::Offline, key(5), rec("<message/>"));
        let got = o.take(&bob).await.unwrap();
        assert_eq!(
            got,
            vec![
                b"<message><body>ok</body></message>".to_vec(),
                b"<message/>".to_vec()
            ]
        );
        assert!(o.take(&bob).await.unwrap().is_empty(), "all removed");
    }

    #[tokio::test]
    async fn push_take_in_order_and_cap() {
        let o = OfflineStore::new(
            Store::memory(),
            Arc::new(crate::session::SystemClock::default()),
        );
        let bob = BareJid::parse("bob@x").unwrap();
        let other = BareJid::parse("bob@x.y").unwrap();
        for i in 0..3 {
            let m = Element::new("message", NS_CLIENT)
                .with_child(Element::new("body", NS_CLIENT).with_text(format!("m{i}")));
            assert!(o.push(&bob, &m, "x").await.unwrap());
        }
        assert!(o.take(&other).await.unwrap().is_empty());
        let got = o.take(&bob).await.unwrap();
        assert_eq!(got.len(), 3);
        let first = String::from_utf8(got[0].clone()).unwrap();
        assert!(first.contains("<body>m0</body><delay xmlns='urn:xmpp:delay' from='x' stamp='"));
        assert!(o.take(&bob).await.unwrap().is_empty());
        let m = Element::new("message", NS_CLIENT);
        for _ in 0..MAX_PER_ACCOUNT {
            assert!(o.push(&bob, &m, "x").await.unwrap());
        }
        assert!(!o.push(&bob, &m, "x").await.unwrap());
    }
}
