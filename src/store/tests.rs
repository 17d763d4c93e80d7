use super::*;

fn kv(k: &[u8], v: &[u8]) -> KeyValue {
    (k.to_vec(), v.to_vec())
}

/// What every backend must do, checked on both.
fn behaves(s: &Store) {
    s.put(Tree::TokenExpiry, vec![0, 2], b"".to_vec());
    s.put(Tree::TokenExpiry, vec![0, 1], b"".to_vec());
    s.put(Tree::TokenExpiry, vec![0, 9], b"".to_vec());
    s.put(Tree::Users, "a@x", "1");
    s.put(Tree::Users, "b@x", "2");
    // Reads see the writes queued before them.
    assert_eq!(
        s.get_blocking(Tree::Users, b"a@x").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let below: Vec<_> = s
        .scan_below_blocking(Tree::TokenExpiry, &[0, 5], 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(below, vec![vec![0, 1], vec![0, 2]]);
    let range = |from: &[u8], to: &[u8], limit, reverse| -> Vec<Vec<u8>> {
        s.scan_range_blocking(
            Tree::TokenExpiry,
            KeyRange {
                from: from.to_vec(),
                to: to.to_vec(),
                limit,
                reverse,
            },
        )
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
    };
    assert_eq!(range(&[0, 1], &[0, 9], 10, false), [vec![0, 1], vec![0, 2]]);
    assert_eq!(range(&[0, 2], &[1], 10, false), [vec![0, 2], vec![0, 9]]);
    assert_eq!(range(&[0], &[1], 2, true), [vec![0, 9], vec![0, 2]]);
    assert_eq!(range(&[0], &[1], 1, false), [vec![0, 1]]);
    assert_eq!(s.len_blocking(Tree::TokenExpiry).unwrap(), 3);
    assert_eq!(
        s.take_blocking(Tree::Users, b"a@x").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(s.take_blocking(Tree::Users, b"a@x").unwrap(), None);
    assert_eq!(s.get_blocking(Tree::Users, b"a@x").unwrap(), None);
    s.put(Tree::Roster, "o\0a", "x");
    s.put(Tree::Roster, "o\0b", "y");
    s.put(Tree::Roster, "p\0a", "z");
    assert_eq!(
        s.scan_prefix_blocking(Tree::Roster, b"o\0").unwrap(),
        vec![kv(b"o\0a", b"x"), kv(b"o\0b", b"y")]
    );
    s.delete_prefix(Tree::Roster, "o\0");
    assert_eq!(
        s.scan_prefix_blocking(Tree::Roster, b"").unwrap(),
        vec![kv(b"p\0a", b"z")]
    );
    s.delete(Tree::Roster, "p\0a");
    assert_eq!(s.len_blocking(Tree::Roster).unwrap(), 0);
    s.barrier_blocking().unwrap();
}

#[test]
fn memory_backend() {
    behaves(&Store::memory());
}

#[test]
fn sled_backend_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(&StoreKind::Sled, dir.path()).unwrap();
        behaves(&s);
        s.put(Tree::Users, "kept@x", "3");
        s.barrier_blocking().unwrap();
    }
    let s = Store::open(&StoreKind::Sled, dir.path()).unwrap();
    assert_eq!(
        s.get_blocking(Tree::Users, b"kept@x").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(
        s.get_blocking(Tree::Users, b"b@x").unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

#[test]
fn second_open_is_refused_while_first_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(&StoreKind::Sled, dir.path()).unwrap();
    match Store::open(&StoreKind::Sled, dir.path()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[tokio::test]
async fn async_reads_and_barriers_from_tasks() {
    let s = Store::memory();
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(Tree::Offline, vec![i], vec![i]);
            s.barrier().await.unwrap();
            s.get(Tree::Offline, &[i]).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Some(vec![i as u8]));
    }
    assert_eq!(s.count_prefix(Tree::Offline, b"", 5).await.unwrap(), 5);
    assert_eq!(s.len(Tree::Offline).await.unwrap(), 8);
}

#[tokio::test]
#[should_panic]
async fn blocking_reads_on_an_async_worker_panic() {
    let s = Store::memory();
    let _ = s.get_blocking(Tree::Users, b"x");
}

#[test]
fn store_kinds_parse() {
    assert_eq!(StoreKind::parse("sled"), Ok(StoreKind::Sled));
    assert_eq!(StoreKind::parse("memory"), Ok(StoreKind::Memory));
    let pg = StoreKind::parse("postgres://u:secret@h/db").unwrap();
    assert_eq!(
        pg,
        StoreKind::Postgres(super::PgUrl("postgres://u:secret@h/db".into(), 4))
    );
    // The password never shows.
    assert!(!format!("{pg:?}").contains("secret"));
    assert!(StoreKind::parse("postgres://u@h:notaport/db").is_err());
    assert!(StoreKind::parse("mysql").is_err());
}

/// A store written by an older Petrel (layout 0) is brought up to date:
/// MQTT queue entries leave the XMPP offline tree, raw values get a version.
#[test]
fn layout_0_is_migrated() {
    use super::records::{self, Layout, StoredFrame, StoredKey};
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::with_backend(Box::new(
            sled_backend::SledBackend::open(dir.path()).unwrap(),
        ));
        s.put(Tree::Meta, "server_key", [7u8; 32].to_vec());
        s.put(Tree::Retained, "localhost\0a/b", vec![0x31, 3, 0, 1, b'x']);
        s.put(
            Tree::Offline,
            "bob@localhost\0\0\0\0\0\0\0\0\x01\0\0\0\0",
            "xmpp",
        );
        s.put(
            Tree::Offline,
            "localhost\0:dev\0\0\0\0\0\0\0\0\x05",
            vec![0x32, 1, 2],
        );
        s.put(Tree::Offline, "localhost\0:dev\0q\0\x07", Vec::new());
        s.barrier_blocking().unwrap();
    }
    let s = Store::open(&StoreKind::Sled, dir.path()).unwrap();
    let layout: Layout = records::decode(
        "meta",
        &s.get_blocking(Tree::Meta, b"layout").unwrap().unwrap(),
    )
    .unwrap();
    assert_eq!(layout.version, migrate::CURRENT);
    let key: StoredKey = records::decode(
        "meta",
        &s.get_blocking(Tree::Meta, b"server_key").unwrap().unwrap(),
    )
    .unwrap();
    assert_eq!(key.key, [7u8; 32]);
    let retained: StoredFrame = records::decode(
        "retained",
        &s.get_blocking(Tree::Retained, b"localhost\0a/b")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(retained.frame, vec![0x31, 3, 0, 1, b'x']);
    let offline = s.scan_prefix_blocking(Tree::Offline, b"").unwrap();
    assert_eq!(offline.len(), 1, "only the XMPP message stays");
    assert!(offline[0].0.starts_with(b"bob@localhost"));
    let queue = s.scan_prefix_blocking(Tree::MqttQueue, b"").unwrap();
    assert_eq!(queue.len(), 2);
    let frame: StoredFrame = records::decode("mqtt_queue", &queue[0].1).unwrap();
    assert_eq!(frame.frame, vec![0x32, 1, 2]);
    assert!(queue[1].1.is_empty(), "the QoS 2 marker stays a bare key");
    drop(s);
    // A second open finds the current layout and changes nothing.
    let s = Store::open(&StoreKind::Sled, dir.path()).unwrap();
    assert_eq!(s.len_blocking(Tree::MqttQueue).unwrap(), 2);
}

/// The offline and archive record counts follow puts (new keys only),
/// deletes (existing keys only), takes and prefix deletions, and are
/// counted again when the store is opened.
#[test]
fn counted_trees_follow_every_kind_of_write() {
    let dir = tempfile::tempdir().unwrap();
    let counts = |s: &Store| {
        s.barrier_blocking().unwrap();
        s.records()
    };
    {
        let s = Store::open(&StoreKind::Sled, dir.path()).unwrap();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            s.put(Tree::Offline, k, "m");
        }
        s.put(Tree::Offline, "a/1", "again"); // not a new record
        s.delete(Tree::Offline, "zz"); // nothing there
        s.put(Tree::Archive, "x", "1");
        s.put(Tree::Users, "u", "1"); // not counted
        assert_eq!(counts(&s), vec![("offline", 4), ("archive", 1)]);
        // In one batch: put, delete and put the same key; a prefix gone.
        s.put(Tree::Archive, "y", "1");
        s.delete(Tree::Archive, "y");
        s.put(Tree::Archive, "y", "2");
        s.delete_prefix(Tree::Offline, "a/");
        assert_eq!(counts(&s), vec![("offline", 1), ("archive", 2)]);
        assert!(s.take_blocking(Tree::Archive, b"x").unwrap().is_some());
        assert!(s.take_blocking(Tree::Archive, b"x").unwrap().is_none());
        assert_eq!(counts(&s), vec![("offline", 1), ("archive", 1)]);
    }
    let s = Store::open(&StoreKind::Sled, dir.path()).unwrap();
    assert_eq!(counts(&s), vec![("offline", 1), ("archive", 1)]);
}
