//! One PEP node, I/O-free: its configuration (the XEP-0060 node config form
//! subset PEP needs), its items, publish with `max_items`, retract, and the
//! checks of XEP-0223 publish-options.

use serde::{Deserialize, Serialize};

use super::super::element::Element;
use super::super::mam::NS_DATA;

pub const NS_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const NS_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Who may read a node's items and hear about them (XEP-0060 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Anyone.
    Open,
    /// Contacts subscribed to the owner's presence (the PEP default).
    Presence,
    /// The owner only (no member list is kept).
    Whitelist,
}

impl Access {
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "open" => Some(Access::Open),
            "presence" => Some(Access::Presence),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Whitelist => "whitelist",
        }
    }
}

/// When a new interested resource gets the last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendLast {
    Never,
    OnSubAndPresence,
}

impl SendLast {
    fn parse(s: &str) -> Option<SendLast> {
        match s {
            "never" => Some(SendLast::Never),
            // PEP subscriptions are implicit, so "on_sub" is on presence too.
            "on_sub" | "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
}

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub access: Access,
    pub persist_items: bool,
    pub max_items: usize,
    pub send_last: SendLast,
    pub notify_retract: bool,
    pub title: String,
}

impl NodeConfig {
    /// A new node's configuration: XEP-0163 §4's defaults.
    pub fn pep_default(max_items: usize) -> NodeConfig {
        NodeConfig {
            access: Access::Presence,
            persist_items: true,
            max_items: 1.min(max_items),
            send_last: SendLast::OnSubAndPresence,
            notify_retract: true,
            title: String::new(),
        }
    }

    /// Applies a submitted form's fields; `max_allowed` caps `max_items`
    /// ("max" means it). Unknown fields and values are refused by name, as
    /// XEP-0060 §8.2.3.5 has `not-acceptable` for them.
    pub fn apply(
        &mut self,
        fields: &[(String, Vec<String>)],
        max_allowed: usize,
    ) -> Result<(), String> {
        let mut next = self.clone();
        for (var, values) in fields {
            let v = values.first().map(String::as_str).unwrap_or("");
            let bad = || format!("{var}: {v:?} is not a value it takes");
            match var.as_str() {
                "FORM_TYPE" => {}
                "pubsub#access_model" => next.access = Access::parse(v).ok_or_else(bad)?,
                "pubsub#persist_items" => next.persist_items = parse_bool(v).ok_or_else(bad)?,
                "pubsub#max_items" => {
                    next.max_items = if v == "max" {
                        max_allowed
                    } else {
                        match v.parse::<usize>() {
                            Ok(n) if (1..=max_allowed).contains(&n) => n,
                            _ => return Err(bad()),
                        }
                    }
                }
                "pubsub#send_last_published_item" => {
                    next.send_last = SendLast::parse(v).ok_or_else(bad)?
                }
                "pubsub#notify_retract" => next.notify_retract = parse_bool(v).ok_or_else(bad)?,
                "pubsub#title" => next.title = v.chars().take(256).collect(),
                // Fixed in PEP: always on, or nothing to change.
                "pubsub#deliver_notifications"
                | "pubsub#deliver_payloads"
                | "pubsub#presence_based_delivery"
                    if parse_bool(v) == Some(true) => {}
                "pubsub#notify_delete" | "pubsub#notify_config" if parse_bool(v).is_some() => {}
                "pubsub#publish_model" if v == "publishers" => {}
                _ => return Err(format!("{var} is not a field this node takes")),
            }
        }
        *self = next;
        Ok(())
    }

    /// XEP-0223 §3: whether the node's configuration is what the publisher
    /// asks for (`max` matches whatever the node allows most).
    pub fn agrees(&self, fields: &[(String, Vec<String>)], max_allowed: usize) -> bool {
        let mut want = self.clone();
        if want.apply(fields, max_allowed).is_err() {
            return false;
        }
        want == *self
    }

    /// The node config form (`type='form'` for a get, the values as they are).
    pub fn form(&self, max_allowed: usize) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", "form");
        x.push_child(hidden("FORM_TYPE", NS_NODE_CONFIG));
        let options = |var: &str, value: &str, opts: &[&str]| {
            let mut f = field(var, "list-single", value);
            for o in opts {
                f.push_child(
                    Element::new("option", NS_DATA)
                        .with_child(Element::new("value", NS_DATA).with_text(*o)),
                );
            }
            f
        };
        x.push_child(options(
            "pubsub#access_model",
            self.access.as_str(),
            &["open", "presence", "whitelist"],
        ));
        x.push_child(field(
            "pubsub#persist_items",
            "boolean",
            bool_text(self.persist_items),
        ));
        x.push_child(
            field(
                "pubsub#max_items",
                "text-single",
                &self.max_items.to_string(),
            )
            .with_attr("label", format!("at most {max_allowed}")),
        );
        x.push_child(options(
            "pubsub#send_last_published_item",
            self.send_last.as_str(),
            &["never", "on_sub_and_presence"],
        ));
        x.push_child(field(
            "pubsub#notify_retract",
            "boolean",
            bool_text(self.notify_retract),
        ));
        x.push_child(field("pubsub#title", "text-single", &self.title));
        x.push_child(field("pubsub#deliver_notifications", "boolean", "1"));
        x.push_child(field("pubsub#deliver_payloads", "boolean", "1"));
        x
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn field(var: &str, ty: &str, value: &str) -> Element {
    Element::new("field", NS_DATA)
        .with_attr("var", var)
        .with_attr("type", ty)
        .with_child(Element::new("value", NS_DATA).with_text(value))
}

fn hidden(var: &str, value: &str) -> Element {
    field(var, "hidden", value)
}

/// The fields of a submitted data form, in order: `(var, values)`. `None`
/// when `x` is not a submission of `form_type` (a missing FORM_TYPE is
/// taken as the expected one, as clients often leave it out).
pub fn fields(x: &Element, form_type: &str) -> Option<Vec<(String, Vec<String>)>> {
    if !x.is("x", NS_DATA) || !matches!(x.attr("type"), Some("submit") | None) {
        return None;
    }
    let mut out = Vec::new();
    for f in x.children_named("field", NS_DATA) {
        let var = f.attr("var")?.to_string();
        let values: Vec<String> = f
            .children_named("value", NS_DATA)
            .map(|v| v.text())
            .collect();
        if var == "FORM_TYPE" && values.first().map(String::as_str) != Some(form_type) {
            return None;
        }
        out.push((var, values));
    }
    Some(out)
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    /// The payload element as written (client namespace as parent).
    pub payload: Vec<u8>,
    /// Unix milliseconds of the publish.
    pub published: u64,
}

/// A node: configuration and items, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub config: NodeConfig,
    pub items: Vec<Item>,
}

impl Node {
    pub fn new(config: NodeConfig) -> Node {
        Node {
            config,
            items: Vec::new(),
        }
    }

    /// Adds or replaces (same id: moved to newest) an item, then keeps the
    /// newest `max_items`.
    pub fn publish(&mut self, item: Item) {
        self.items.retain(|i| i.id != item.id);
        self.items.push(item);
        self.trim();
    }

    /// Drops the oldest items over `max_items`.
    pub fn trim(&mut self) {
        let over = self.items.len().saturating_sub(self.config.max_items);
        self.items.drain(..over);
    }

    /// Removes an item; false when there was none with that id.
    pub fn retract(&mut self, id: &str) -> bool {
        let before = self.items.len();
        self.items.retain(|i| i.id != id);
        self.items.len() != before
    }

    pub fn last(&self) -> Option<&Item> {
        self.items.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Item {
        Item {
            id: id.into(),
            payload: b"<x/>".to_vec(),
            published: 0,
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    #[test]
    fn max_items_keeps_the_newest_and_a_same_id_replaces() {
        let mut c = NodeConfig::pep_default(10);
        c.apply(&kv(&[("pubsub#max_items", "2")]), 10).unwrap();
        let mut n = Node::new(c);
        n.publish(item("a"));
        n.publish(item("b"));
        n.publish(item("a"));
        assert_eq!(
            n.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        n.publish(item("c"));
        assert_eq!(
            n.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert!(n.retract("a"));
        assert!(!n.retract("a"));
        assert_eq!(n.last().unwrap().id, "c");
    }

    #[test]
    fn form_values_are_checked_and_publish_options_compared() {
        let mut c = NodeConfig::pep_default(256);
        assert_eq!(c.max_items, 1);
        assert!(c
            .apply(&kv(&[("pubsub#access_model", "roster")]), 256)
            .is_err());
        assert!(c.apply(&kv(&[("pubsub#max_items", "0")]), 256).is_err());
        assert!(c.apply(&kv(&[("pubsub#max_items", "257")]), 256).is_err());
        assert!(c.apply(&kv(&[("pubsub#unknown", "1")]), 256).is_err());
        assert_eq!(
            c,
            NodeConfig::pep_default(256),
            "a refused form changes nothing"
        );
        // XEP-0402's options.
        let bookmarks = kv(&[
            ("FORM_TYPE", NS_PUBLISH_OPTIONS),
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
            ("pubsub#access_model", "whitelist"),
        ]);
        assert!(!c.agrees(&bookmarks, 256));
        c.apply(&bookmarks, 256).unwrap();
        assert_eq!(c.max_items, 256);
        assert_eq!(c.access, Access::Whitelist);
        assert!(c.agrees(&bookmarks, 256));
        assert!(!c.agrees(&kv(&[("pubsub#access_model", "open")]), 256));
    }

    #[test]
    fn submitted_forms_are_read_and_foreign_ones_refused() {
        let x = Element::new("x", NS_DATA)
            .with_attr("type", "submit")
            .with_child(field("FORM_TYPE", "hidden", NS_PUBLISH_OPTIONS))
            .with_child(field("pubsub#access_model", "list-single", "open"));
        let f = fields(&x, NS_PUBLISH_OPTIONS).unwrap();
        assert_eq!(
            f[1],
            ("pubsub#access_model".to_string(), vec!["open".to_string()])
        );
        assert!(fields(&x, NS_NODE_CONFIG).is_none());
        let form = NodeConfig::pep_default(5).form(5);
        assert_eq!(form.attr("type"), Some("form"));
        assert!(
            fields(&form, NS_NODE_CONFIG).is_none(),
            "a form is not a submission"
        );
    }
}
