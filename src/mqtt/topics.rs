//! MQTT topic names, topic filters and the two indexes a broker needs:
//! [`TopicTrie`] (subscriptions: which filters match a published topic) and
//! [`RetainedIndex`] (retained messages: which topics match a new filter).
//!
//! Both are tries over topic levels (spec 4.7). Lookups split the input on
//! '/' lazily and walk with an explicit stack instead of recursion, so a
//! topic with tens of thousands of levels neither allocates per level nor
//! overflows the thread stack; for the same reason dropping or pruning a
//! deep branch is done iteratively. A broker should still cap the number of
//! levels it accepts (memory per level), which is a policy for the caller.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Largest topic name or filter: a UTF-8 string field (spec 1.5.4).
const MAX_TOPIC_LEN: usize = 65_535;

/// Valid topic name for PUBLISH (spec 4.7.1, 4.7.3): at least one
/// character, no wildcards, no U+0000, at most 65535 bytes.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// Valid topic filter (spec 4.7.1): non-empty, no U+0000, `#` only as the
/// whole last level, `+` only as a whole level.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        // 4.7.1.2: '#' alone in its level and last.
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        // 4.7.1.3: '+' occupies an entire level.
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether a topic name or filter is within `(max bytes, max levels)`
/// (each level costs a node in the subscription trie).
pub fn within(topic: &str, (max_len, max_levels): (usize, usize)) -> bool {
    topic.len() <= max_len && topic.bytes().filter(|b| *b == b'/').count() < max_levels
}

/// Whether a filter uses the shared subscription syntax (spec 4.8.2).
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

/// Split `$share/{group}/{filter}` into `(group, filter)` (spec 4.8.2).
/// `None` if it is not a shared subscription or is malformed: empty group,
/// group containing `+` or `#`, or an invalid filter after the group.
/// Callers answer a malformed one with SUBACK 0x8F (Topic Filter invalid).
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || !valid_topic_filter(inner) {
        return None;
    }
    Some((group, inner))
}

/// Whether `filter` matches the topic name `topic` (spec 4.7), including the
/// rule that `+` / `#` as the first level do not match `$` topics (4.7.2).
/// One-off check (e.g. authorization rules); indexes use [`TopicTrie`].
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

struct Node<K, V> {
    /// Literal levels.
    children: HashMap<Box<str>, Node<K, V>>,
    /// The `+` level, kept apart so matching never hashes it.
    plus: Option<Box<Node<K, V>>>,
    /// Subscriptions whose filter ends at this node.
    exact: HashMap<K, V>,
    /// Subscriptions whose filter is this node's path followed by `/#` (or
    /// just `#` at the root): they match this node and everything below.
    multi: HashMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            exact: HashMap::new(),
            multi: HashMap::new(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn edges(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.multi.is_empty() && self.edges() == 0
    }

    /// Holds something besides the single edge on a path being pruned.
    fn needed(&self) -> bool {
        !self.exact.is_empty() || !self.multi.is_empty() || self.edges() > 1
    }

    /// Remove and return the edge `level`.
    fn take_child(&mut self, level: &str) -> Option<Node<K, V>> {
        if level == "+" {
            self.plus.take().map(|b| *b)
        } else {
            self.children.remove(level)
        }
    }

    /// Move all children out, so a node can be dropped without recursion.
    fn drain_into(&mut self, out: &mut Vec<Node<K, V>>) {
        out.extend(self.children.drain().map(|(_, n)| n));
        if let Some(p) = self.plus.take() {
            out.push(*p);
        }
    }
}

/// Drop a subtree iteratively (a filter can be ~32k levels deep).
fn dismantle<K, V>(node: Node<K, V>) {
    let mut work = vec![node];
    while let Some(mut n) = work.pop() {
        n.drain_into(&mut work);
    }
}

/// Subscription index: filter -> (key -> value). A key (e.g. a session id)
/// has at most one value per filter but may appear under many filters, so
/// one topic can reach the same key several times; the caller dedups (and
/// applies shared-subscription / no-local policy: shared filters are inserted
/// by their inner filter, with a key that identifies the group member).
pub struct TopicTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> Default for TopicTrie<K, V> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K, V> Drop for TopicTrie<K, V> {
    fn drop(&mut self) {
        dismantle(std::mem::take(&mut self.root));
    }
}

/// Split a filter into the path of the node it ends at (`None` = the
/// root) and whether it ends in `#` (stored in that node's `multi` map).
/// "#" ends at the root, while "/#" ends at the root's "" child.
fn filter_path(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(p) = filter.strip_suffix("/#") {
        (Some(p), true)
    } else {
        (Some(filter), false)
    }
}

impl<K: Eq + Hash, V> TopicTrie<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (filter, key) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Levels of a node path from [`filter_path`]; none for the root.
    fn levels(path: Option<&str>) -> impl Iterator<Item = &str> {
        path.map(|p| p.split('/')).into_iter().flatten()
    }

    /// Add or replace `key`'s subscription on `filter`; returns the old
    /// value. `filter` must satisfy [`valid_topic_filter`].
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        debug_assert!(
            valid_topic_filter(filter),
            "invalid topic filter {filter:?}"
        );
        let (path, multi) = filter_path(filter);
        let mut node = &mut self.root;
        for level in Self::levels(path) {
            node = if level == "+" {
                node.plus.get_or_insert_with(Box::default)
            } else {
                // Look up before inserting so existing levels cost no
                // allocation of the key.
                if !node.children.contains_key(level) {
                    node.children.insert(level.into(), Node::default());
                }
                node.children.get_mut(level).expect("inserted above")
            };
        }
        let map = if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        let old = map.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Remove `key`'s subscription on `filter`, pruning nodes left empty.
    pub fn remove<Q>(&mut self, filter: &str, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (path, multi) = filter_path(filter);
        let mut node = &mut self.root;
        for level in Self::levels(path) {
            node = node.child_mut(level)?;
        }
        let old = if multi {
            node.multi.remove(key)
        } else {
            node.exact.remove(key)
        }?;
        self.len -= 1;
        if node.is_empty() {
            self.prune(path);
        }
        Some(old)
    }

    /// The node at `path` is empty: cut the edge below the deepest ancestor
    /// that is still needed, dropping the whole dead chain at once. Two
    /// iterative walks instead of recursion (filters can be very deep).
    fn prune(&mut self, path: Option<&str>) {
        let mut cut = None;
        let mut node = &self.root;
        for (depth, level) in Self::levels(path).enumerate() {
            if depth == 0 || node.needed() {
                cut = Some((depth, level));
            }
            match node.child(level) {
                Some(c) => node = c,
                None => return,
            }
        }
        let Some((depth, edge)) = cut else {
            return; // the root itself: never removed
        };
        let mut node = &mut self.root;
        for level in Self::levels(path).take(depth) {
            match node.child_mut(level) {
                Some(c) => node = c,
                None => return,
            }
        }
        if let Some(dead) = node.take_child(edge) {
            dismantle(dead);
        }
    }

    /// Visit every subscription whose filter matches the topic name
    /// `topic`. Allocation-free unless the walk branches at `+` levels (then
    /// one small stack per call). Spec 4.7.2: `#` and `+` as the first
    /// level do not match topics starting with `$`.
    pub fn matches<'a>(&'a self, topic: &str, mut visit: impl FnMut(&'a K, &'a V)) {
        let dollar = topic.starts_with('$');
        let mut pending: Vec<(&'a Node<K, V>, std::str::Split<'_, char>)> = Vec::new();
        let mut current = Some((&self.root, topic.split('/')));
        let mut at_root = true;
        while let Some((mut node, mut levels)) = current.take() {
            loop {
                let wild_ok = !(at_root && dollar);
                if wild_ok {
                    // "a/#" matches "a" and everything below it (4.7.1.2).
                    node.multi.iter().for_each(|(k, v)| visit(k, v));
                }
                let Some(level) = levels.next() else {
                    node.exact.iter().for_each(|(k, v)| visit(k, v));
                    break;
                };
                if wild_ok {
                    if let Some(plus) = node.plus.as_deref() {
                        pending.push((plus, levels.clone()));
                    }
                }
                at_root = false;
                match node.children.get(level) {
                    Some(c) => node = c,
                    None => break,
                }
            }
            at_root = false;
            current = pending.pop();
        }
    }

    /// [`matches`](Self::matches) collected into a vector.
    pub fn matching(&self, topic: &str) -> Vec<(&K, &V)> {
        let mut out = Vec::new();
        self.matches(topic, |k, v| out.push((k, v)));
        out
    }
}

struct RNode<V> {
    children: HashMap<Box<str>, RNode<V>>,
    /// Full topic name is stored with the value so that matches can be
    /// reported without rebuilding names level by level.
    value: Option<(Box<str>, V)>,
}

impl<V> Default for RNode<V> {
    fn default() -> Self {
        RNode {
            children: HashMap::new(),
            value: None,
        }
    }
}

/// Retained messages by topic name, searchable by topic filter (spec 3.3.1.3:
/// on SUBSCRIBE the server sends the retained messages matching the filter).
pub struct RetainedIndex<V> {
    root: RNode<V>,
    len: usize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        RetainedIndex {
            root: RNode::default(),
            len: 0,
        }
    }
}

impl<V> Drop for RetainedIndex<V> {
    fn drop(&mut self) {
        let mut work = vec![std::mem::take(&mut self.root)];
        while let Some(mut n) = work.pop() {
            work.extend(n.children.drain().map(|(_, c)| c));
        }
    }
}

enum Walk<'a, 'f, V> {
    /// Match the remaining filter levels from this node.
    Filter(&'a RNode<V>, std::str::Split<'f, char>, bool),
    /// `#`: everything at and below this node.
    All(&'a RNode<V>),
}

impl<V> RetainedIndex<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Store the retained message for `topic` (a valid topic name); returns
    /// the previous one.
    pub fn set(&mut self, topic: &str, value: V) -> Option<V> {
        debug_assert!(valid_topic_name(topic), "invalid topic name {topic:?}");
        let mut node = &mut self.root;
        for level in topic.split('/') {
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), RNode::default());
            }
            node = node.children.get_mut(level).expect("inserted above");
        }
        let old = node.value.replace((topic.into(), value)).map(|(_, v)| v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref().map(|(_, v)| v)
    }

    /// Remove the retained message for `topic`, pruning empty nodes.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let (_, old) = node.value.take()?;
        self.len -= 1;
        if node.children.is_empty() {
            // Same two-walk pruning as TopicTrie::prune.
            let mut cut = None;
            let mut node = &self.root;
            for (depth, level) in topic.split('/').enumerate() {
                if depth == 0 || node.value.is_some() || node.children.len() > 1 {
                    cut = Some((depth, level));
                }
                node = &node.children[level];
            }
            if let Some((depth, edge)) = cut {
                let mut node = &mut self.root;
                for level in topic.split('/').take(depth) {
                    node = node.children.get_mut(level).expect("path exists");
                }
                if let Some(dead) = node.children.remove(edge) {
                    let mut work = vec![dead];
                    while let Some(mut n) = work.pop() {
                        work.extend(n.children.drain().map(|(_, c)| c));
                    }
                }
            }
        }
        Some(old)
    }

    /// Visit `(topic, value)` for every stored topic matching `filter` (a
    /// valid topic filter), honouring the `$` rule of spec 4.7.2.
    pub fn matching<'a>(&'a self, filter: &str, mut visit: impl FnMut(&'a str, &'a V)) {
        self.matching_while(filter, |t, v| {
            visit(t, v);
            true
        });
    }

    /// [`RetainedIndex::matching`] until `visit` returns false: the walk
    /// stops there (a budget spent need not visit the rest of the domain).
    pub fn matching_while<'a>(
        &'a self,
        filter: &str,
        mut visit: impl FnMut(&'a str, &'a V) -> bool,
    ) {
        let mut stack = vec![Walk::Filter(&self.root, filter.split('/'), true)];
        let mut report = |node: &'a RNode<V>| match &node.value {
            Some((t, v)) => visit(t, v),
            None => true,
        };
        while let Some(step) = stack.pop() {
            match step {
                Walk::All(node) => {
                    if !report(node) {
                        return;
                    }
                    stack.extend(node.children.values().map(Walk::All));
                }
                Walk::Filter(node, mut levels, at_root) => {
                    let level = match levels.next() {
                        None => {
                            if !report(node) {
                                return;
                            }
                            continue;
                        }
                        Some(l) => l,
                    };
                    // First-level wildcards skip `$` topics (4.7.2).
                    let skip = |name: &str| at_root && name.starts_with('$');
                    match level {
                        "#" => {
                            // "a/#" also matches "a" itself (4.7.1.2).
                            if !report(node) {
                                return;
                            }
                            for (name, c) in &node.children {
                                if !skip(name) {
                                    stack.push(Walk::All(c));
                                }
                            }
                        }
                        "+" => {
                            for (name, c) in &node.children {
                                if !skip(name) {
                                    stack.push(Walk::Filter(c, levels.clone(), false));
                                }
                            }
                        }
                        literal => {
                            if let Some(c) = node.children.get(literal) {
                                stack.push(Walk::Filter(c, levels, false));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
