//! XEP-0115 entity capabilities, as PEP needs them: a client's presence
//! carries `<c node ver hash/>`; the features behind `ver` (asked of the
//! client once with disco#info, then cached by `ver` when the hash checks
//! out) say which nodes it wants notifications of (`<node>+notify`,
//! XEP-0163 §4.3.4). I/O-free: the caller sends the query and hands the
//! answer back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use sha1::{Digest, Sha1};

use super::super::element::Element;
use super::super::mam::NS_DATA;
use super::super::stanza::NS_DISCO_INFO;

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";

/// The nodes a client wants notifications of.
pub type Interest = Arc<[String]>;

/// A presence's capabilities element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub node: String,
    pub ver: String,
    /// The hash function; only `sha-1` (the one every client uses) is
    /// verified and cached.
    pub hash: String,
}

impl Caps {
    pub fn of(presence: &Element) -> Option<Caps> {
        let c = presence.child("c", NS_CAPS)?;
        Some(Caps {
            node: c.attr("node")?.to_string(),
            ver: c.attr("ver")?.to_string(),
            hash: c.attr("hash").unwrap_or("").to_string(),
        })
    }
}

/// The verification string of a disco#info answer (XEP-0115 §5.1) hashed
/// with SHA-1 and base64; `None` when the answer breaks §5.4's rules
/// (duplicate identities, features or forms, a form without FORM_TYPE).
pub fn ver_of(info: &Element) -> Option<String> {
    let mut identities: Vec<String> = info
        .children_named("identity", NS_DISCO_INFO)
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.attr("category").unwrap_or(""),
                i.attr("type").unwrap_or(""),
                i.attr("xml:lang").unwrap_or(""),
                i.attr("name").unwrap_or("")
            )
        })
        .collect();
    let mut features: Vec<String> = info
        .children_named("feature", NS_DISCO_INFO)
        .map(|f| f.attr("var").unwrap_or("").to_string())
        .collect();
    identities.sort();
    features.sort();
    if has_duplicates(&identities) || has_duplicates(&features) {
        return None;
    }
    let mut forms: Vec<(String, Fields)> = Vec::new();
    for x in info.children_named("x", NS_DATA) {
        if x.attr("type") != Some("result") {
            continue;
        }
        let mut form_type = None;
        let mut fields = Vec::new();
        for f in x.children_named("field", NS_DATA) {
            let var = f.attr("var").unwrap_or("").to_string();
            let mut values: Vec<String> = f
                .children_named("value", NS_DATA)
                .map(|v| v.text())
                .collect();
            if var == "FORM_TYPE" {
                if f.attr("type") != Some("hidden") || values.len() != 1 || form_type.is_some() {
                    return None;
                }
                form_type = values.pop();
            } else {
                values.sort();
                fields.push((var, values));
            }
        }
        fields.sort();
        forms.push((form_type?, fields));
    }
    forms.sort();
    if forms.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut s = String::new();
    for i in &identities {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    for (form_type, fields) in &forms {
        s.push_str(form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(var);
            s.push('<');
            for v in values {
                s.push_str(v);
                s.push('<');
            }
        }
    }
    Some(base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes())))
}

/// A form's fields: `(var, sorted values)`, sorted by var.
type Fields = Vec<(String, Vec<String>)>;

fn has_duplicates(sorted: &[String]) -> bool {
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// The nodes a disco#info answer asks notifications of.
pub fn interest_of(info: &Element) -> Interest {
    info.children_named("feature", NS_DISCO_INFO)
        .filter_map(|f| f.attr("var")?.strip_suffix("+notify"))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Verified `ver` → interest, and the queries sent and not yet answered;
/// both bounded (the oldest entry goes first).
pub struct CapsCache {
    inner: Mutex<Inner>,
    max: usize,
}

#[derive(Default)]
struct Inner {
    known: HashMap<String, Interest>,
    order: VecDeque<String>,
    /// query id → (full JID asked, the ver it announced)
    pending: HashMap<String, (String, String)>,
    pending_order: VecDeque<String>,
}

impl CapsCache {
    pub fn new(max: usize) -> CapsCache {
        CapsCache {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a verified `ver` is known to want.
    pub fn known(&self, caps: &Caps) -> Option<Interest> {
        if caps.hash != "sha-1" {
            return None;
        }
        self.lock().known.get(&caps.ver).cloned()
    }

    /// Remembers a query sent to `full` for `ver` under `id`.
    pub fn asked(&self, id: String, full: String, ver: String) {
        let mut g = self.lock();
        if g.pending.len() >= self.max {
            if let Some(old) = g.pending_order.pop_front() {
                g.pending.remove(&old);
            }
        }
        g.pending_order.push_back(id.clone());
        g.pending.insert(id, (full, ver));
    }

    /// An answer to a query: the interest it gives the full JID that was
    /// asked (`None` if nothing was asked under `id` of `from`). A `ver`
    /// whose hash checks out is cached for everyone announcing it.
    pub fn answered(&self, id: &str, from: &str, info: Option<&Element>) -> Option<Interest> {
        let mut g = self.lock();
        match g.pending.get(id) {
            Some((full, _)) if full == from => {}
            _ => return None,
        }
        let (_, ver) = g.pending.remove(id)?;
        g.pending_order.retain(|p| p != id);
        let info = info?;
        let interest = interest_of(info);
        if ver_of(info).as_deref() == Some(ver.as_str()) && !g.known.contains_key(&ver) {
            if g.known.len() >= self.max {
                if let Some(old) = g.order.pop_front() {
                    g.known.remove(&old);
                }
            }
            g.order.push_back(ver.clone());
            g.known.insert(ver, interest.clone());
        }
        Some(interest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(var: &str) -> Element {
        Element::new("feature", NS_DISCO_INFO).with_attr("var", var)
    }

    /// XEP-0115 §5.2's simple example.
    fn simple() -> Element {
        Element::new("query", NS_DISCO_INFO)
            .with_child(
                Element::new("identity", NS_DISCO_INFO)
                    .with_attr("category", "client")
                    .with_attr("type", "pc")
                    .with_attr("name", "Exodus 0.9.1"),
            )
            .with_child(feature("http://jabber.org/protocol/caps"))
            .with_child(feature("http://jabber.org/protocol/disco#info"))
            .with_child(feature("http://jabber.org/protocol/disco#items"))
            .with_child(feature("http://jabber.org/protocol/muc"))
    }

    #[test]
    fn the_xep_s_simple_example_hashes_to_its_ver() {
        assert_eq!(ver_of(&simple()).unwrap(), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    #[test]
    fn the_xep_s_complex_example_with_a_form_hashes_to_its_ver() {
        let ident = |lang: &str, name: &str| {
            Element::new("identity", NS_DISCO_INFO)
                .with_attr("xml:lang", lang)
                .with_attr("category", "client")
                .with_attr("name", name)
                .with_attr("type", "pc")
        };
        let f = |var: &str, ty: Option<&str>, values: &[&str]| {
            let mut e = Element::new("field", NS_DATA).with_attr("var", var);
            if let Some(t) = ty {
                e.set_attr("type", t);
            }
            for v in values {
                e.push_child(Element::new("value", NS_DATA).with_text(*v));
            }
            e
        };
        let form = Element::new("x", NS_DATA)
            .with_attr("type", "result")
            .with_child(f(
                "FORM_TYPE",
                Some("hidden"),
                &["urn:xmpp:dataforms:softwareinfo"],
            ))
            .with_child(f("ip_version", None, &["ipv4", "ipv6"]))
            .with_child(f("os", None, &["Mac"]))
            .with_child(f("os_version", None, &["10.5.1"]))
            .with_child(f("software", None, &["Psi"]))
            .with_child(f("software_version", None, &["0.11"]));
        let q = Element::new("query", NS_DISCO_INFO)
            .with_child(ident("en", "Psi 0.11"))
            .with_child(ident("el", "Ψ 0.11"))
            .with_child(feature("http://jabber.org/protocol/caps"))
            .with_child(feature("http://jabber.org/protocol/disco#info"))
            .with_child(feature("http://jabber.org/protocol/disco#items"))
            .with_child(feature("http://jabber.org/protocol/muc"))
            .with_child(form);
        assert_eq!(ver_of(&q).unwrap(), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn duplicates_are_refused_and_interest_read() {
        let dup = simple().with_child(feature("http://jabber.org/protocol/muc"));
        assert_eq!(ver_of(&dup), None);
        let q = simple()
            .with_child(feature("urn:xmpp:avatar:metadata+notify"))
            .with_child(feature("+notify"));
        assert_eq!(&*interest_of(&q), ["urn:xmpp:avatar:metadata".to_string()]);
    }

    #[test]
    fn only_verified_answers_from_the_asked_jid_are_cached_and_the_cache_is_bounded() {
        let cache = CapsCache::new(1);
        let good = simple().with_child(feature("n+notify"));
        let ver = ver_of(&good).unwrap();
        let caps = |ver: &str| Caps {
            node: "x".into(),
            ver: ver.into(),
            hash: "sha-1".into(),
        };
        cache.asked("1".into(), "a@h/r".into(), ver.clone());
        assert_eq!(
            cache.answered("1", "b@h/r", Some(&good)),
            None,
            "not asked of b"
        );
        assert_eq!(
            &*cache.answered("1", "a@h/r", Some(&good)).unwrap(),
            ["n".to_string()]
        );
        assert!(
            cache.answered("1", "a@h/r", Some(&good)).is_none(),
            "answered once"
        );
        assert!(cache.known(&caps(&ver)).is_some());
        // A wrong ver still serves the session that announced it, uncached.
        cache.asked("2".into(), "a@h/r".into(), "bogus".into());
        assert!(cache.answered("2", "a@h/r", Some(&good)).is_some());
        assert!(cache.known(&caps("bogus")).is_none());
        // Bounded: a second verified ver pushes the first out.
        let other = simple().with_child(feature("m+notify"));
        let ver2 = ver_of(&other).unwrap();
        cache.asked("3".into(), "a@h/r".into(), ver2.clone());
        cache.answered("3", "a@h/r", Some(&other));
        assert!(cache.known(&caps(&ver2)).is_some());
        assert!(cache.known(&caps(&ver)).is_none());
    }
}
