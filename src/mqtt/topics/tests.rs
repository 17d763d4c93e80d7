use super::*;
use proptest::prelude::*;

fn keys(t: &TopicTrie<&'static str, ()>, topic: &str) -> Vec<&'static str> {
    let mut v: Vec<_> = t.matching(topic).into_iter().map(|(k, _)| *k).collect();
    v.sort();
    v
}

/// Count of nodes, to check pruning.
fn nodes<K, V>(n: &Node<K, V>) -> usize {
    let mut count = 0;
    let mut work = vec![n];
    while let Some(n) = work.pop() {
        count += 1;
        work.extend(n.children.values());
        work.extend(n.plus.as_deref());
    }
    count
}

#[test]
fn name_and_filter_validity() {
    assert!(valid_topic_name("a/b") && valid_topic_name("/") && valid_topic_name("$SYS/x"));
    assert!(
        !valid_topic_name("")
            && !valid_topic_name("a/+")
            && !valid_topic_name("#")
            && !valid_topic_name("a\0")
    );
    assert!(!valid_topic_name(&"a".repeat(65_536)));
    for ok in [
        "#",
        "+",
        "a/#",
        "+/+",
        "/+",
        "sport/+/player1",
        "a//b",
        "/",
        "+/#",
    ] {
        assert!(valid_topic_filter(ok), "{ok}");
    }
    for bad in [
        "", "a/#/b", "a#", "#a", "a/b#", "a+", "+a/b", "a/++", "a\0b",
    ] {
        assert!(!valid_topic_filter(bad), "{bad}");
    }
}

#[test]
fn shared_subscriptions() {
    assert_eq!(split_shared("$share/g1/a/+/b"), Some(("g1", "a/+/b")));
    assert_eq!(split_shared("$share/g/#"), Some(("g", "#")));
    assert!(is_shared("$share/g/x") && !is_shared("$sharex/g/x"));
    for bad in [
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/g/a#",
        "a/b",
        "$share/g/",
    ] {
        assert_eq!(split_shared(bad), None, "{bad}");
    }
}

#[test]
fn spec_examples() {
    let mut t = TopicTrie::new();
    for f in [
        "sport/tennis/player1/#",
        "sport/#",
        "sport/tennis/+",
        "sport/+",
        "+/+",
        "/+",
        "+",
        "#",
        "+/monitor/Clients",
        "$SYS/#",
        "$SYS/monitor/+",
        "/finance",
    ] {
        t.insert(f, f, ());
    }
    assert_eq!(
        keys(&t, "sport/tennis/player1"),
        ["#", "sport/#", "sport/tennis/+", "sport/tennis/player1/#"]
    );
    assert_eq!(
        keys(&t, "sport/tennis/player1/score/wimbledon"),
        ["#", "sport/#", "sport/tennis/player1/#"]
    );
    assert_eq!(keys(&t, "sport"), ["#", "+", "sport/#"]);
    // "sport/+" matches "sport/" (empty level) but not "sport".
    assert_eq!(keys(&t, "sport/"), ["#", "+/+", "sport/#", "sport/+"]);
    assert_eq!(keys(&t, "/finance"), ["#", "+/+", "/+", "/finance"]);
    // 4.7.2: first-level wildcards never match $ topics.
    assert_eq!(
        keys(&t, "$SYS/monitor/Clients"),
        ["$SYS/#", "$SYS/monitor/+"]
    );
    assert_eq!(keys(&t, "$SYS"), ["$SYS/#"]);
    assert_eq!(keys(&t, "a/monitor/Clients"), ["#", "+/monitor/Clients"]);
}

#[test]
fn insert_replace_remove_and_prune() {
    let mut t = TopicTrie::new();
    assert_eq!(t.insert("a/b/c/d", "s1", 1), None);
    assert_eq!(t.insert("a/b/c/d", "s1", 2), Some(1));
    t.insert("a/+/#", "s1", 3);
    t.insert("a/b", "s2", 4);
    t.insert("/#", "s3", 5);
    t.insert("#", "s4", 6);
    assert_eq!(t.len(), 5);
    assert_eq!(t.matching("a/b/c/d").len(), 3);
    assert_eq!(t.remove("a/b/c/d", "s2"), None);
    assert_eq!(t.remove("a/b/c/d", "s1"), Some(2));
    // The dead chain c/d is gone but a/b stays for s2.
    assert_eq!(nodes(&t.root), 1 + 3 + 1); // root, a, a/b, a/+, ""
    assert_eq!(t.remove("/#", "s3"), Some(5));
    assert_eq!(t.remove("#", "s4"), Some(6));
    assert_eq!(t.remove("a/+/#", "s1"), Some(3));
    assert_eq!(t.remove("a/b", "s2"), Some(4));
    assert!(t.is_empty());
    assert_eq!(nodes(&t.root), 1);
    assert_eq!(t.remove("x/y", "s1"), None);
}

#[test]
fn many_keys_on_shared_filters() {
    let mut t = TopicTrie::new();
    for i in 0..2000u32 {
        t.insert("devices/+/telemetry", i, ());
        t.insert(&format!("devices/{i}/#"), i, ());
    }
    let mut hits = 0;
    t.matches("devices/7/telemetry", |_, _| hits += 1);
    assert_eq!(hits, 2001);
    for i in 0..2000u32 {
        assert!(t.remove("devices/+/telemetry", &i).is_some());
        assert!(t.remove(&format!("devices/{i}/#"), &i).is_some());
    }
    assert!(t.is_empty());
    assert_eq!(nodes(&t.root), 1);
}

#[test]
fn very_deep_filters_do_not_overflow_the_stack() {
    let deep = "/".repeat(60_000);
    let mut t = TopicTrie::new();
    t.insert(&deep, 1, ());
    t.insert(&format!("{}+", "+/".repeat(20_000)), 2, ());
    assert_eq!(t.matching(&deep).len(), 1);
    assert_eq!(t.matching(&"x/".repeat(20_000)).len(), 1);
    t.remove(&deep, &1);
    drop(t);
    let mut r = RetainedIndex::new();
    r.set(&deep, ());
    let mut n = 0;
    r.matching("#", |_, _| n += 1);
    assert_eq!(n, 1);
}

#[test]
fn retained_index() {
    let mut r = RetainedIndex::new();
    for t in [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport",
        "sport/",
        "/finance",
        "$SYS/uptime",
    ] {
        r.set(t, t.len());
    }
    let find = |f: &str| {
        let mut v = Vec::new();
        r.matching(f, |t, _| v.push(t.to_string()));
        v.sort();
        v
    };
    assert_eq!(
        find("sport/tennis/player1/#"),
        ["sport/tennis/player1", "sport/tennis/player1/ranking"]
    );
    assert_eq!(
        find("sport/#"),
        [
            "sport",
            "sport/",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking"
        ]
    );
    assert_eq!(find("sport/+"), ["sport/"]);
    assert_eq!(find("+/+"), ["/finance", "sport/"]);
    assert_eq!(find("#").len(), 5);
    assert_eq!(find("$SYS/#"), ["$SYS/uptime"]);
    assert_eq!(find("+/uptime"), Vec::<String>::new());
    assert_eq!(r.get("sport"), Some(&5));
    assert_eq!(r.set("sport", 9), Some(5));
    assert_eq!(r.remove("sport/tennis/player1/ranking"), Some(28));
    assert_eq!(r.remove("sport/tennis/player1/ranking"), None);
    for t in [
        "sport/tennis/player1",
        "sport",
        "sport/",
        "/finance",
        "$SYS/uptime",
    ] {
        assert!(r.remove(t).is_some());
    }
    assert!(r.is_empty());
    assert!(r.root.children.is_empty());
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "$x"])
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("topic names are non-empty", |t| !t.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "+", "$x"]), 1..5),
        any::<bool>(),
    )
        .prop_map(|(l, hash)| {
            let mut f = l.join("/");
            if hash {
                f.push_str("/#");
            }
            f
        })
        .prop_filter("filters are non-empty", |f| !f.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Trie lookups agree with the one-off matcher, both directions,
    /// and removal leaves nothing behind.
    #[test]
    fn indexes_agree_with_filter_matches(filters in prop::collection::vec(filter(), 1..20), topics in prop::collection::vec(topic(), 1..20)) {
        let mut trie = TopicTrie::new();
        let mut retained = RetainedIndex::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i, ());
        }
        for t in &topics {
            retained.set(t, ());
        }
        for t in &topics {
            let mut got: Vec<usize> = trie.matching(t).into_iter().map(|(k, _)| *k).collect();
            got.sort();
            let want: Vec<usize> = (0..filters.len()).filter(|&i| filter_matches(&filters[i], t)).collect();
            prop_assert_eq!(got, want);
        }
        for f in &filters {
            let mut got = Vec::new();
            retained.matching(f, |t, _| got.push(t.to_string()));
            got.sort();
            let mut want: Vec<String> = topics.iter().filter(|t| filter_matches(f, t)).cloned().collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want);
        }
        for (i, f) in filters.iter().enumerate() {
            prop_assert!(trie.remove(f, &i).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(nodes(&trie.root), 1);
        for t in &topics {
            retained.remove(t);
        }
        prop_assert!(retained.root.children.is_empty());
    }
}
