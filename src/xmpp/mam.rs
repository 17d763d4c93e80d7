//! XEP-0313 Message Archive Management (`urn:xmpp:mam:2`) for one-to-one
//! chat, with XEP-0359 stanza ids and XEP-0059 paging.
//!
//! Each account's archive lives in the store's `Archive` tree, keyed
//! `owner NUL id` with `id` a u64 whose upper 48 bits are the Unix time in
//! milliseconds and whose lower 16 a sequence: keys sort by time, a page is
//! one range scan, and retention prunes by key alone. The id is shown to
//! clients as 16 hex digits (`<stanza-id/>`, `<result id/>`, RSM).
//!
//! What is archived (§5.1.1): a `chat` or `normal` message with a body
//! between two accounts, once in each account's archive (once for a message
//! to oneself), when it was delivered or stored offline, as the owner's
//! preferences say (`always` / `roster` / `never`, and per-JID always and
//! never lists, kept in the `MamPrefs` tree; the default is `mam_default`).
//! The copy delivered to the recipient carries `<stanza-id by='recipient's
//! bare JID' id='…'/>`; a `<stanza-id/>` a client put in is removed
//! (XEP-0359 §5). Like offline messages, archiving does not wait for a
//! store barrier: nothing in XMPP acknowledges it.
//!
//! Preferences are kept in memory while the account is online
//! ([`AccountCache`]), so archiving reads no disk for online users in the
//! `always` default.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::account_cache::AccountCache;
use super::element::Element;
use super::stanza::Jid;
use super::stream::NS_CLIENT;
use crate::store::{records, KeyRange, Store, StoreError, Tree};

pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_DATA: &str = "jabber:x:data";

/// Records read for one query at most, matching or not: a query over a
/// large archive with a rare `with` stops there (and says it is not
/// complete).
const MAX_SCANNED: usize = 5_000;
/// Bytes of messages one page carries at most (the page is cut short and
/// not `complete` past it).
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Which messages an account archives by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    Always,
    /// Only with contacts in the roster.
    Roster,
    Never,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Roster => "roster",
            Policy::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "always" => Some(Policy::Always),
            "roster" => Some(Policy::Roster),
            "never" => Some(Policy::Never),
            _ => None,
        }
    }
}

/// An account's archiving preferences (§6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    pub default: Policy,
    /// Bare JIDs always archived.
    pub always: BTreeSet<String>,
    /// Bare JIDs never archived.
    pub never: BTreeSet<String>,
}

impl Prefs {
    fn with_default(default: Policy) -> Prefs {
        Prefs {
            default,
            always: BTreeSet::new(),
            never: BTreeSet::new(),
        }
    }

    /// What the preferences say about `remote` (a bare JID): `Some` when
    /// decided without the roster.
    pub fn decide(&self, remote: &str) -> Option<bool> {
        if self.never.contains(remote) {
            return Some(false);
        }
        if self.always.contains(remote) {
            return Some(true);
        }
        match self.default {
            Policy::Always => Some(true),
            Policy::Never => Some(false),
            Policy::Roster => None,
        }
    }
}

/// One archived message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedMessage {
    /// The other party's JID, as in the stanza.
    pub remote: String,
    /// Sent by the owner.
    pub outgoing: bool,
    /// The stanza as delivered.
    pub stanza: Vec<u8>,
}

/// A query's filters and page (§4, XEP-0059). Ids are exclusive bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub with: Option<Jid>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub after_id: Option<u64>,
    pub before_id: Option<u64>,
    /// Page backwards from the end (RSM `<before/>`), or from before this id.
    pub backwards: bool,
    pub max: usize,
}

/// One page of results, oldest first.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<(u64, ArchivedMessage)>,
    /// The page reaches the end of the results in its direction.
    pub complete: bool,
}

/// The archive id as clients see it.
pub fn id_text(id: u64) -> String {
    format!("{id:016x}")
}

pub fn parse_id(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// The Unix time in milliseconds an id was given at.
pub fn id_ms(id: u64) -> u64 {
    id >> 16
}

fn key(owner: &str, id: u64) -> Vec<u8> {
    let mut k = owner.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The id of a key of the `Archive` tree.
fn key_id(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Whether an archived message's other party matches `with` (§4.1.1: a bare
/// JID matches its resources, a domain everyone there).
fn matches_with(remote: &str, with: &Jid) -> bool {
    let Ok(r) = Jid::parse(remote) else {
        return false;
    };
    match (with.local(), with.resource()) {
        (None, _) => r.domain() == with.domain(),
        (Some(_), None) => r.bare() == *with,
        (Some(_), Some(_)) => r == *with,
    }
}

/// The archives of every account. See the module docs.
pub struct Archive {
    store: Store,
    prefs: AccountCache<Prefs>,
    last: AtomicU64,
    clock: Arc<dyn crate::session::Clock>,
    /// `mam_default`.
    pub default: Policy,
    /// `mam_max_page`: results per page at most.
    pub max_page: usize,
    /// In a cluster, the low 8 bits of every id this node gives (a tag of
    /// its name), so two nodes archiving for one account in the same
    /// millisecond do not give the same id; 0 and unused on one node.
    tag: u64,
}

impl Archive {
    pub fn new(store: Store, clock: Arc<dyn crate::session::Clock>) -> Archive {
        Archive {
            store,
            prefs: AccountCache::default(),
            last: AtomicU64::new(0),
            clock,
            default: Policy::Always,
            max_page: 250,
            tag: 0,
        }
    }

    /// This archive is one node's of a cluster (see `tag`).
    pub fn set_node(&mut self, node: &str) {
        let h = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        // 1..=255: never 0, so a node's ids differ from a lone server's.
        self.tag = h % 255 + 1;
    }

    /// A fresh id: later than every id given before, its upper bits now.
    pub fn next_id(&self) -> u64 {
        let now = ((self.clock.unix_micros() / 1000) << 16) | self.tag;
        // In a cluster ids step by 256, keeping the node's tag in the low
        // bits.
        let step = if self.tag == 0 { 1 } else { 256 };
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let id = now.max(prev + step);
            match self
                .last
                .compare_exchange_weak(prev, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(p) => prev = p,
            }
        }
    }

    /// Archives `stanza` for `owner` under `id`.
    pub fn put(&self, owner: &str, id: u64, remote: &str, outgoing: bool, stanza: &Element) {
        let rec = ArchivedMessage {
            remote: remote.to_owned(),
            outgoing,
            stanza: stanza.to_bytes(NS_CLIENT),
        };
        self.store
            .put(Tree::Archive, key(owner, id), records::encode(&rec));
    }

    /// Whether `owner` has a message with `id`.
    pub async fn has(&self, owner: &str, id: u64) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get(Tree::Archive, &key(owner, id))
            .await?
            .is_some())
    }

    async fn read_prefs(&self, owner: &str) -> Result<Prefs, StoreError> {
        match self.store.get(Tree::MamPrefs, owner.as_bytes()).await? {
            Some(v) => records::decode("mam_prefs", &v),
            None => Ok(Prefs::with_default(self.default)),
        }
    }

    /// An account's preferences (kept in memory while `online`).
    pub async fn prefs(
        &self,
        owner: &str,
        online: impl Fn() -> bool,
    ) -> Result<Arc<Prefs>, StoreError> {
        self.prefs
            .get(owner, || self.read_prefs(owner), online)
            .await
    }

    /// Stores new preferences.
    pub async fn set_prefs(&self, owner: &str, prefs: Prefs) {
        let _g = self.prefs.lock(owner).await;
        self.store.put(
            Tree::MamPrefs,
            owner.as_bytes().to_vec(),
            records::encode(&prefs),
        );
        self.prefs.changed(owner, Arc::new(prefs));
    }

    /// The account's last session closed.
    pub async fn forget(&self, owner: &str, online: impl Fn() -> bool) {
        self.prefs.forget(owner, online).await;
    }

    /// One page of `owner`'s archive.
    /// The ids of the account's oldest and newest archived messages, if
    /// any (XEP-0313 §7.1's metadata, which Bind 2 sends on binding).
    pub async fn bounds(&self, owner: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let mut end = owner.as_bytes().to_vec();
        end.push(1);
        let mut ends = [None, None];
        for (i, reverse) in [false, true].into_iter().enumerate() {
            let got = self
                .store
                .scan_range(
                    Tree::Archive,
                    KeyRange {
                        from: key(owner, 0),
                        to: end.clone(),
                        limit: 1,
                        reverse,
                    },
                )
                .await?;
            ends[i] = got.first().and_then(|(k, _)| key_id(k));
        }
        Ok(ends[0].zip(ends[1]))
    }

    /// `<metadata xmlns='urn:xmpp:mam:2'>` for the account, serialized.
    pub async fn metadata(&self, owner: &str) -> Result<Vec<u8>, StoreError> {
        let Some((first, last)) = self.bounds(owner).await? else {
            return Ok(format!("<metadata xmlns='{NS_MAM}'/>").into_bytes());
        };
        let at = |id: u64| crate::ctl::rfc3339(id_ms(id) / 1000);
        Ok(format!(
            "<metadata xmlns='{NS_MAM}'><start id='{}' timestamp='{}'/><end id='{}' timestamp='{}'/></metadata>",
            id_text(first),
            at(first),
            id_text(last),
            at(last)
        )
        .into_bytes())
    }

    pub async fn page(&self, owner: &str, q: &Query) -> Result<Page, StoreError> {
        let mut lo = 0u64;
        let mut hi = u64::MAX;
        if let Some(s) = q.start_ms {
            lo = lo.max(s.saturating_mul(1 << 16));
        }
        if let Some(a) = q.after_id {
            lo = lo.max(a.saturating_add(1));
        }
        if let Some(e) = q.end_ms {
            // `end` is inclusive: everything in its millisecond.
            hi = hi.min(e.saturating_add(1).saturating_mul(1 << 16));
        }
        if let Some(b) = q.before_id {
            hi = hi.min(b);
        }
        let mut items = Vec::new();
        let mut from = key(owner, lo);
        let mut to = if hi == u64::MAX {
            let mut k = owner.as_bytes().to_vec();
            k.push(1);
            k
        } else {
            key(owner, hi)
        };
        let chunk = (q.max + 1).clamp(16, 512);
        let mut scanned = 0;
        let mut exhausted = false;
        let mut bytes = 0usize;
        let mut full = false;
        while items.len() <= q.max && scanned < MAX_SCANNED && lo < hi && !full {
            let got = self
                .store
                .scan_range(
                    Tree::Archive,
                    KeyRange {
                        from: from.clone(),
                        to: to.clone(),
                        limit: chunk,
                        reverse: q.backwards,
                    },
                )
                .await?;
            let n = got.len();
            for (k, v) in got {
                scanned += 1;
                let Some(id) = key_id(&k) else { continue };
                if q.backwards {
                    to = k;
                } else {
                    from = k;
                    from.push(0);
                }
                let m: ArchivedMessage = records::decode("archive", &v)?;
                if q.with.as_ref().is_none_or(|w| matches_with(&m.remote, w)) {
                    bytes += m.stanza.len();
                    if bytes > MAX_PAGE_BYTES && !items.is_empty() {
                        full = true;
                        break;
                    }
                    items.push((id, m));
                    if items.len() > q.max {
                        break;
                    }
                }
            }
            if n < chunk {
                exhausted = true;
                break;
            }
        }
        let complete = !full && items.len() <= q.max && (exhausted || lo >= hi);
        items.truncate(q.max);
        if q.backwards {
            items.reverse();
        }
        Ok(Page { items, complete })
    }

    /// Deletes every archived message older than `cutoff_ms` (Unix), in
    /// chunks; returns how many.
    pub async fn prune(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let cutoff = cutoff_ms.saturating_mul(1 << 16);
        let mut from = Vec::new();
        let mut deleted = 0;
        loop {
            let got = self
                .store
                .scan_range(
                    Tree::Archive,
                    KeyRange {
                        from: from.clone(),
                        to: vec![0xff; 1024],
                        limit: 1024,
                        reverse: false,
                    },
                )
                .await?;
            let n = got.len();
            for (k, _) in got {
                if key_id(&k).is_some_and(|id| id < cutoff) {
                    self.store.delete(Tree::Archive, k.clone());
                    deleted += 1;
                }
                from = k;
                from.push(0);
            }
            if n < 1024 {
                return Ok(deleted);
            }
            // Let other work through between chunks.
            tokio::task::yield_now().await;
        }
    }
}

/// Parses an XEP-0082 date-time (`2026-12-05T10:00:00Z`, fractions and a
/// `±hh:mm` offset allowed) to Unix milliseconds.
pub fn parse_datetime(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        let padded = format!("{:0<3}", &f[..f.len().min(3)]);
        millis = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let off = &rest[1..];
            if off.len() != 5 || off.as_bytes()[2] != b':' {
                return None;
            }
            let (oh, om) = (num_of(&off[0..2])?, num_of(&off[3..5])?);
            sign * (oh * 3600 + om * 60)
        }
    };
    // Howard Hinnant's days-from-civil.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    u64::try_from(secs * 1000 + millis).ok()
}

fn num_of(t: &str) -> Option<i64> {
    t.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| t.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedClock(u64);
    impl crate::session::Clock for FixedClock {
        fn now_ms(&self) -> u64 {
            0
        }
        fn unix(&self) -> u64 {
            self.0 / 1_000_000
        }
        fn unix_micros(&self) -> u64 {
            self.0
        }
    }

    fn msg(n: u32, from: &str) -> Element {
        Element::new("message", NS_CLIENT)
            .with_attr("from", from)
            .with_attr("type", "chat")
            .with_child(Element::new("body", NS_CLIENT).with_text(n.to_string()))
    }

    fn bodies(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|(_, m)| {
                let el = crate::xmpp::stream::read_back(&m.stanza).unwrap();
                el.child("body", NS_CLIENT).unwrap().text()
            })
            .collect()
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2010-06-07T00:00:00Z"),
            Some(1_275_868_800_000)
        );
        assert_eq!(
            parse_datetime("2010-06-07T00:00:00.5Z"),
            Some(1_275_868_800_500)
        );
        assert_eq!(
            parse_datetime("2010-06-07T02:00:00+02:00"),
            Some(1_275_868_800_000)
        );
        assert_eq!(
            parse_datetime("2010-06-06T23:30:00.123456-00:30"),
            Some(1_275_868_800_123)
        );
        for bad in [
            "",
            "2010-06-07",
            "2010-13-07T00:00:00Z",
            "2010-06-07T00:00:00",
            "2010-06-07T00:00:00+0200",
            "20x0-06-07T00:00:00Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_grow_and_carry_the_time() {
        let a = Archive::new(Store::memory(), Arc::new(FixedClock(5_000_000)));
        let x = a.next_id();
        let y = a.next_id();
        assert!(y > x && id_ms(x) == 5000 && id_ms(y) == 5000);
        assert_eq!(parse_id(&id_text(y)), Some(y));
        assert_eq!(parse_id("xyz"), None);
        // Two nodes of a cluster in the same millisecond: apart.
        let mut n1 = Archive::new(Store::memory(), Arc::new(FixedClock(5_000_000)));
        let mut n2 = Archive::new(Store::memory(), Arc::new(FixedClock(5_000_000)));
        n1.set_node("n1");
        n2.set_node("n2");
        let one: Vec<u64> = (0..300).map(|_| n1.next_id()).collect();
        let two: Vec<u64> = (0..300).map(|_| n2.next_id()).collect();
        assert!(one.windows(2).all(|w| w[1] > w[0]));
        assert!(one.iter().all(|i| !two.contains(i)), "no id given twice");
        assert_eq!(id_ms(one[0]), 5000);
    }

    #[tokio::test]
    async fn pages_forwards_backwards_and_filtered() {
        let a = Archive::new(Store::memory(), Arc::new(FixedClock(1_000_000)));
        let mut ids = Vec::new();
        for n in 0..10u32 {
            let from = if n % 2 == 0 { "bob@x/r" } else { "carol@x/r" };
            let id = a.next_id();
            a.put("alice@x", id, from, false, &msg(n, from));
            ids.push(id);
        }
        a.put("zed@x", a.next_id(), "bob@x/r", false, &msg(99, "bob@x/r"));
        let q = |max| Query {
            max,
            ..Query::default()
        };
        let p = a.page("alice@x", &q(4)).await.unwrap();
        assert_eq!(bodies(&p), ["0", "1", "2", "3"]);
        assert!(!p.complete);
        let p = a
            .page(
                "alice@x",
                &Query {
                    after_id: Some(ids[7]),
                    ..q(4)
                },
            )
            .await
            .unwrap();
        assert_eq!(bodies(&p), ["8", "9"]);
        assert!(p.complete);
        // The last page, then the one before it.
        let p = a
            .page(
                "alice@x",
                &Query {
                    backwards: true,
                    ..q(3)
                },
            )
            .await
            .unwrap();
        assert_eq!(bodies(&p), ["7", "8", "9"]);
        assert!(!p.complete);
        let p = a
            .page(
                "alice@x",
                &Query {
                    backwards: true,
                    before_id: Some(ids[2]),
                    ..q(3)
                },
            )
            .await
            .unwrap();
        assert_eq!(bodies(&p), ["0", "1"]);
        assert!(p.complete);
        // With a bare JID: its resources; with a domain: everyone there.
        let with = |w: &str, max| Query {
            with: Some(Jid::parse(w).unwrap()),
            ..q(max)
        };
        let p = a.page("alice@x", &with("carol@x", 3)).await.unwrap();
        assert_eq!(bodies(&p), ["1", "3", "5"]);
        assert!(!p.complete);
        let p = a.page("alice@x", &with("carol@x/r", 10)).await.unwrap();
        assert_eq!(bodies(&p), ["1", "3", "5", "7", "9"]);
        assert!(p.complete);
        assert!(a
            .page("alice@x", &with("dave@x", 10))
            .await
            .unwrap()
            .items
            .is_empty());
        assert_eq!(
            a.page("alice@x", &with("x", 20)).await.unwrap().items.len(),
            10
        );
        assert!(a.has("alice@x", ids[3]).await.unwrap());
        assert!(!a.has("zed@x", ids[3]).await.unwrap());
    }

    #[tokio::test]
    async fn prune_deletes_what_is_older() {
        let store = Store::memory();
        let old = Archive::new(store.clone(), Arc::new(FixedClock(1_000_000)));
        old.put("a@x", old.next_id(), "b@x", true, &msg(1, "a@x/r"));
        let new = Archive::new(store.clone(), Arc::new(FixedClock(9_000_000)));
        new.put("a@x", new.next_id(), "b@x", true, &msg(2, "a@x/r"));
        assert_eq!(new.prune(5_000).await.unwrap(), 1);
        let p = new
            .page(
                "a@x",
                &Query {
                    max: 10,
                    ..Query::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(bodies(&p), ["2"]);
    }

    #[tokio::test]
    async fn prefs_decide() {
        let a = Archive::new(Store::memory(), Arc::new(FixedClock(0)));
        let p = a.prefs("o@x", || true).await.unwrap();
        assert_eq!(p.decide("b@x"), Some(true), "always by default");
        let mut new = Prefs::with_default(Policy::Roster);
        new.never.insert("spy@x".into());
        new.always.insert("friend@y".into());
        a.set_prefs("o@x", new.clone()).await;
        let p = a.prefs("o@x", || true).await.unwrap();
        assert_eq!(*p, new);
        assert_eq!(p.decide("spy@x"), Some(false));
        assert_eq!(p.decide("friend@y"), Some(true));
        assert_eq!(p.decide("b@x"), None, "the roster decides");
    }
}
