//! The bridge's rules, I/O-free: which MQTT topics and which PubSub nodes
//! are one, and the name of each on the other side.
//!
//! A rule pairs an MQTT topic filter with a node-name template: each
//! wildcard of the filter (`+` one level, `#` the rest) is a capture, and
//! the template names them `{1}`, `{2}`, … in the order they appear in the
//! filter, each exactly once — so a topic and a node map to each other one
//! to one (`sensors/+/temp` ⇄ `sensors/{1}/temp`).

use serde::Deserialize;

use crate::mqtt::topics::{filter_matches, valid_topic_filter, valid_topic_name};

/// The longest topic or node name a rule maps (MQTT's default
/// `max_topic_length`): matching a template is quadratic at worst in the
/// name's length, so names are bounded before.
pub const MAX_NAME: usize = 1024;

/// Which way a rule carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// MQTT publishes become items and items become MQTT publishes.
    #[default]
    Both,
    /// MQTT publishes become items only.
    ToXmpp,
    /// Items become MQTT publishes only.
    ToMqtt,
}

impl Direction {
    pub fn to_xmpp(self) -> bool {
        self != Direction::ToMqtt
    }
    pub fn to_mqtt(self) -> bool {
        self != Direction::ToXmpp
    }
}

/// One `[[bridge.rule]]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The MQTT topic filter.
    pub mqtt: String,
    /// The node-name template (`{1}`… for the filter's wildcards).
    pub node: String,
    #[serde(default)]
    pub direction: Direction,
    /// The hosted domain the rule applies to; none: every host.
    #[serde(default)]
    pub host: Option<String>,
    /// QoS of the MQTT messages made from items (0, 1 or 2).
    #[serde(default = "one")]
    pub qos: u8,
    /// Items become the topic's retained message.
    #[serde(default = "yes")]
    pub retain: bool,
    /// Access model of the nodes the bridge creates: open, presence,
    /// whitelist.
    #[serde(default = "open")]
    pub access: String,
    /// Accounts that own the nodes the bridge creates.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Accounts that may publish items to those nodes (besides owners).
    #[serde(default)]
    pub publishers: Vec<String>,
    /// Items a created node keeps (`pubsub#max_items`); none: the
    /// service's `[pubsub] max_items`.
    #[serde(default)]
    pub max_items: Option<usize>,
}

fn one() -> u8 {
    1
}
fn yes() -> bool {
    true
}
fn open() -> String {
    "open".into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// The 0-based index of a filter wildcard.
    Cap(usize),
}

/// A rule, checked and compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub config: RuleConfig,
    filter_levels: Vec<String>,
    /// Per wildcard of the filter: true for `#`.
    multi: Vec<bool>,
    template: Vec<Part>,
}

impl Rule {
    /// Checks a rule; the error says what is wrong.
    pub fn compile(config: RuleConfig) -> Result<Rule, String> {
        if !valid_topic_filter(&config.mqtt) || config.mqtt.starts_with('$') {
            return Err(format!(
                "mqtt = {:?} is not a topic filter (nor may it start with '$')",
                config.mqtt
            ));
        }
        if config.qos > 2 {
            return Err("qos must be 0, 1 or 2".into());
        }
        if !matches!(config.access.as_str(), "open" | "presence" | "whitelist") {
            return Err("access must be open, presence or whitelist".into());
        }
        if config.max_items == Some(0) {
            return Err("max_items must be at least 1".into());
        }
        for j in config.owners.iter().chain(&config.publishers) {
            if crate::auth::BareJid::parse(j).is_err() {
                return Err(format!("{j:?} is not an account JID"));
            }
        }
        let filter_levels: Vec<String> = config.mqtt.split('/').map(str::to_string).collect();
        let multi: Vec<bool> = filter_levels
            .iter()
            .filter(|l| *l == "+" || *l == "#")
            .map(|l| l == "#")
            .collect();
        let template = parse_template(&config.node, multi.len())?;
        // Two captures side by side could be split anywhere.
        if template
            .windows(2)
            .any(|w| matches!((&w[0], &w[1]), (Part::Cap(_), Part::Cap(_))))
        {
            return Err("node: two captures must be separated by text".into());
        }
        Ok(Rule {
            config,
            filter_levels,
            multi,
            template,
        })
    }

    pub fn applies_to(&self, host: &str) -> bool {
        self.config.host.as_deref().is_none_or(|h| h == host)
    }

    /// The node an MQTT topic maps to, if the topic matches the filter.
    pub fn node_for(&self, topic: &str) -> Option<String> {
        if topic.len() > MAX_NAME || !filter_matches(&self.config.mqtt, topic) {
            return None;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let mut caps: Vec<String> = Vec::with_capacity(self.multi.len());
        for (i, f) in self.filter_levels.iter().enumerate() {
            match f.as_str() {
                "+" => caps.push(levels.get(i)?.to_string()),
                "#" => caps.push(levels.get(i..).map(|r| r.join("/")).unwrap_or_default()),
                _ => {}
            }
        }
        let mut out = String::new();
        for p in &self.template {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Cap(i) => out.push_str(&caps[*i]),
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The MQTT topic a node maps to, if the node's name fits the template
    /// and the result is a topic name a client could publish to.
    pub fn topic_for(&self, node: &str) -> Option<String> {
        if node.len() > MAX_NAME {
            return None;
        }
        let mut caps: Vec<Option<&str>> = vec![None; self.multi.len()];
        if !match_template(&self.template, &self.multi, node, &mut caps) {
            return None;
        }
        let mut levels: Vec<&str> = Vec::with_capacity(self.filter_levels.len());
        let mut k = 0;
        for f in &self.filter_levels {
            match f.as_str() {
                "+" => {
                    levels.push(caps[k]?);
                    k += 1;
                }
                "#" => {
                    let rest = caps[k]?;
                    k += 1;
                    if !rest.is_empty() {
                        levels.push(rest);
                    } else if levels.is_empty() {
                        return None;
                    }
                }
                lit => levels.push(lit),
            }
        }
        let topic = levels.join("/");
        (valid_topic_name(&topic) && !topic.starts_with('$') && topic.len() <= MAX_NAME)
            .then_some(topic)
    }
}

fn parse_template(t: &str, captures: usize) -> Result<Vec<Part>, String> {
    if t.is_empty() {
        return Err("node must not be empty".into());
    }
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut used = vec![false; captures];
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("node = {t:?}: '{{' without '}}'"))?;
                let n: usize = rest[1..end]
                    .parse()
                    .map_err(|_| format!("node = {t:?}: {{…}} must hold a number"))?;
                if n == 0 || n > captures {
                    return Err(format!(
                        "node = {t:?}: {{{n}}} names no wildcard (the filter has {captures})"
                    ));
                }
                if std::mem::replace(&mut used[n - 1], true) {
                    return Err(format!("node = {t:?}: {{{n}}} is used twice"));
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Cap(n - 1));
                rest = &rest[end + 1..];
            }
            '}' => return Err(format!("node = {t:?}: '}}' without '{{'")),
            c => {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    if let Some(n) = used.iter().position(|u| !u) {
        return Err(format!(
            "node = {t:?}: wildcard {} of the filter is not used ({{{}}})",
            n + 1,
            n + 1
        ));
    }
    Ok(parts)
}

/// Matches `s` against the template, filling `caps`. Captures are
/// separated by text (checked at compile), so each one ends at the first
/// place the following text matches and the rest matches too.
fn match_template<'a>(
    parts: &[Part],
    multi: &[bool],
    s: &'a str,
    caps: &mut [Option<&'a str>],
) -> bool {
    match parts.split_first() {
        None => s.is_empty(),
        Some((Part::Lit(l), rest)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|s| match_template(rest, multi, s, caps)),
        Some((Part::Cap(i), rest)) => {
            let ok = |c: &str| multi[*i] || !c.contains('/');
            let valid = |c: &str| !c.contains(['+', '#', '\0']);
            match rest.first() {
                None => {
                    if ok(s) && valid(s) {
                        caps[*i] = Some(s);
                        true
                    } else {
                        false
                    }
                }
                Some(Part::Lit(next)) => {
                    for (at, _) in s.match_indices(next.as_str()) {
                        let c = &s[..at];
                        if !ok(c) {
                            // A longer capture holds the same '/' too.
                            break;
                        }
                        if valid(c) && match_template(rest, multi, &s[at..], caps) {
                            caps[*i] = Some(c);
                            return true;
                        }
                    }
                    false
                }
                Some(Part::Cap(_)) => false,
            }
        }
    }
}

/// Every rule, in the order written.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    pub fn compile(configs: &[RuleConfig]) -> Result<Rules, String> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, c)| Rule::compile(c.clone()).map_err(|e| format!("rule {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Rules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule (carrying MQTT to XMPP) a topic of `host` matches,
    /// with the node.
    pub fn to_node(&self, host: &str, topic: &str) -> Option<(&Rule, String)> {
        self.rules
            .iter()
            .filter(|r| r.config.direction.to_xmpp() && r.applies_to(host))
            .find_map(|r| r.node_for(topic).map(|n| (r, n)))
    }

    /// Whether a rule carries `topic` of `host` to XMPP (no node name is
    /// made: asked for every publish).
    pub fn carries_topic(&self, host: &str, topic: &str) -> bool {
        topic.len() <= MAX_NAME
            && self.rules.iter().any(|r| {
                r.config.direction.to_xmpp()
                    && r.applies_to(host)
                    && filter_matches(&r.config.mqtt, topic)
            })
    }

    /// The first rule (carrying XMPP to MQTT) a node of `host` matches,
    /// with the topic.
    pub fn to_topic(&self, host: &str, node: &str) -> Option<(&Rule, String)> {
        self.rules
            .iter()
            .filter(|r| r.config.direction.to_mqtt() && r.applies_to(host))
            .find_map(|r| r.topic_for(node).map(|t| (r, t)))
    }

    /// The first rule, either way, a node of `host` belongs to: the one
    /// whose settings a node the bridge creates takes.
    pub fn for_node(&self, host: &str, node: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.applies_to(host))
            .find(|r| r.topic_for(node).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mqtt: &str, node: &str) -> Result<Rule, String> {
        Rule::compile(RuleConfig {
            mqtt: mqtt.into(),
            node: node.into(),
            direction: Direction::Both,
            host: None,
            qos: 1,
            retain: true,
            access: "open".into(),
            owners: vec![],
            publishers: vec![],
            max_items: None,
        })
    }

    #[test]
    fn topics_and_nodes_map_both_ways() {
        let r = rule("sensors/+/temp", "sensors/{1}/temp").unwrap();
        assert_eq!(
            r.node_for("sensors/kitchen/temp").unwrap(),
            "sensors/kitchen/temp"
        );
        assert_eq!(r.node_for("sensors/kitchen/hum"), None);
        assert_eq!(
            r.topic_for("sensors/kitchen/temp").unwrap(),
            "sensors/kitchen/temp"
        );
        // A '+' capture is one level.
        assert_eq!(r.topic_for("sensors/a/b/temp"), None);

        let r = rule("home/+/+/state", "{2} in {1}").unwrap();
        assert_eq!(r.node_for("home/hall/lamp/state").unwrap(), "lamp in hall");
        assert_eq!(r.topic_for("lamp in hall").unwrap(), "home/hall/lamp/state");
        assert_eq!(r.topic_for("lamp+x in hall"), None);

        let r = rule("dev/#", "devices:{1}").unwrap();
        assert_eq!(r.node_for("dev/a/b/c").unwrap(), "devices:a/b/c");
        assert_eq!(r.node_for("dev").unwrap(), "devices:");
        assert_eq!(r.topic_for("devices:a/b/c").unwrap(), "dev/a/b/c");
        assert_eq!(r.topic_for("devices:").unwrap(), "dev");
        assert_eq!(r.topic_for("other"), None);
        let long = format!("devices:{}", "x/".repeat(MAX_NAME));
        assert_eq!(r.topic_for(&long), None);
        assert_eq!(r.node_for(&format!("dev/{}", "x".repeat(MAX_NAME))), None);

        let r = rule("thermostat/setpoint", "thermostat-setpoint").unwrap();
        assert_eq!(
            r.node_for("thermostat/setpoint").unwrap(),
            "thermostat-setpoint"
        );
        assert_eq!(
            r.topic_for("thermostat-setpoint").unwrap(),
            "thermostat/setpoint"
        );
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for (f, t) in [
            ("a/+", "a"),        // wildcard unused
            ("a/+", "{1}{1}"),   // used twice
            ("a/+/+", "{1}{2}"), // captures side by side
            ("a/+", "{2}"),      // no such wildcard
            ("a/+", "x{1"),      // unclosed
            ("a/#/b", "{1}"),    // not a filter
            ("$SYS/+", "{1}"),   // server topics
            ("a", ""),           // empty node
        ] {
            assert!(rule(f, t).is_err(), "{f} {t}");
        }
    }

    #[test]
    fn rules_pick_by_direction_and_host() {
        let mut a = rule("a/+", "a-{1}").unwrap().config;
        a.direction = Direction::ToXmpp;
        let mut b = rule("b/+", "b-{1}").unwrap().config;
        b.direction = Direction::ToMqtt;
        b.host = Some("x.example".into());
        let rules = Rules::compile(&[a, b]).unwrap();
        assert_eq!(rules.to_node("h", "a/1").unwrap().1, "a-1");
        assert!(rules.carries_topic("h", "a/1"));
        assert!(!rules.carries_topic("h", "b/1"), "to_mqtt only");
        assert!(!rules.carries_topic("h", "c/1"));
        assert!(rules.to_topic("h", "a-1").is_none());
        assert!(rules.to_node("x.example", "b/1").is_none());
        assert_eq!(rules.to_topic("x.example", "b-1").unwrap().1, "b/1");
        assert!(rules.to_topic("y.example", "b-1").is_none());
        assert!(rules.for_node("h", "a-1").is_some());
    }
}
