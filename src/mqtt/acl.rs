//! Access rules for MQTT publish and subscribe, from the config
//! (`[[mqtt_acl]]`, `mqtt_acl_default`): the model of Mosquitto's
//! `acl_file` and ejabberd's `access_publish` / `access_subscribe`. A
//! request must pass both these rules and the token's scopes.
//!
//! A rule names a permission (`allow` / `deny`), an action (`publish`,
//! `subscribe` or `all`), a topic filter in which `%u` (the account's
//! localpart), `%c` (the client id) and `%d` (the domain) are substituted,
//! and optionally who it is for: `account`, `client_id`, `domain` patterns
//! (`*` matches any run of characters; absent matches everyone, anonymous
//! clients included; an anonymous client has the account `""`).
//!
//! - Publishing to topic T: a rule applies when its filter matches T.
//! - Subscribing to filter F: a rule applies when its filter covers F
//!   (every topic F can match is one the rule's filter matches).
//! - Delivering a message on topic T to a subscriber (reading): a
//!   `subscribe` rule applies when its filter matches T — so denying
//!   `secret/#` is not undone by subscribing to `#`.
//!
//! A `deny` that applies wins over any `allow`; an `allow` that applies
//! permits; when none applies, `mqtt_acl_default` decides (`allow` unless
//! set). A value substituted into a topic that is missing (`%u` for an
//! anonymous client) or could change the topic's shape (holding `/`, `+`,
//! `#`) makes an `allow` rule not apply and turns its level of a `deny`
//! rule into `+`: rules fail closed.
//!
//! I/O-free; rules are checked per request with no allocation when no
//! rule mentions the request's action.

use serde::Deserialize;

use super::codec::reason::NOT_AUTHORIZED;
use super::topics::{filter_matches, valid_topic_filter};
use crate::auth::scopes::filter_covers;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Publish,
    Subscribe,
    All,
}

/// One `[[mqtt_acl]]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub permission: Permission,
    pub action: RuleAction,
    pub topic: String,
    pub account: Option<String>,
    pub client_id: Option<String>,
    pub domain: Option<String>,
    /// The MQTT 5 reason code a `deny` answers with: 0x87 (Not
    /// authorized, the default), 0x80 (Unspecified error) or 0x83
    /// (Implementation specific error).
    pub reason_code: Option<u8>,
}

/// Reason codes a deny rule may answer with.
const DENY_CODES: [u8; 3] = [0x80, 0x83, 0x87];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    permission: Permission,
    action: RuleAction,
    reason_code: u8,
    /// The filter's levels; a level holding `%u`, `%c` or `%d` is
    /// substituted per request.
    levels: Vec<String>,
    /// The filter as written (what a rule without placeholders matches).
    topic: String,
    templated: bool,
    account: Option<String>,
    client_id: Option<String>,
    domain: Option<String>,
}

/// Who asks: the session's account (a bare JID, `""` when anonymous), its
/// client id and its domain.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub account: &'a str,
    pub client_id: &'a str,
    pub domain: &'a str,
}

impl<'a> Who<'a> {
    /// An MQTT session's: its address holds the account (a bare JID, or
    /// the domain alone for an anonymous client) and the client id.
    pub fn of(addr: &'a crate::session::Address) -> Who<'a> {
        let account = addr.account();
        Who {
            account: if account.contains('@') { account } else { "" },
            client_id: addr.name(),
            domain: addr.domain(),
        }
    }

    /// The account's localpart, if it has one.
    fn local(&self) -> Option<&'a str> {
        self.account.split_once('@').map(|(l, _)| l)
    }
}

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Publish,
    Subscribe,
    /// A message delivered to a subscriber.
    Read,
}

/// The configured rules and the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Permission,
    /// Whether a delivery can be refused (see [`Acl::checks_reads`]).
    reads_checked: bool,
}

impl Default for Acl {
    /// No rules, everything allowed (what a config without rules means).
    fn default() -> Acl {
        Acl {
            rules: Vec::new(),
            default: Permission::Allow,
            reads_checked: false,
        }
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// A value that may go into a topic level as is.
fn safe(v: &str) -> bool {
    !v.is_empty() && !v.contains(['/', '+', '#'])
}

use std::borrow::Cow;

impl Acl {
    /// Checks and builds the rules; the error says which rule and why.
    pub fn new(raw: &[RawRule], default: Permission) -> Result<Acl, String> {
        let mut rules = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let n = i + 1;
            // The filter must be valid whatever is substituted.
            let probe = r
                .topic
                .replace("%u", "u")
                .replace("%c", "c")
                .replace("%d", "d");
            if !valid_topic_filter(&probe) {
                return Err(format!(
                    "rule {n}: topic \"{}\" is not an MQTT topic filter",
                    r.topic
                ));
            }
            for (key, v) in [
                ("account", &r.account),
                ("client_id", &r.client_id),
                ("domain", &r.domain),
            ] {
                if v.as_deref().is_some_and(str::is_empty) {
                    return Err(format!("rule {n}: {key} must not be empty"));
                }
            }
            let reason_code = match (r.permission, r.reason_code) {
                (_, None) => NOT_AUTHORIZED,
                (Permission::Deny, Some(c)) if DENY_CODES.contains(&c) => c,
                (Permission::Deny, Some(c)) => {
                    return Err(format!(
                        "rule {n}: reason_code {c:#04x} is not one of 0x80, 0x83, 0x87"
                    ))
                }
                (Permission::Allow, Some(_)) => {
                    return Err(format!("rule {n}: reason_code is for deny rules"))
                }
            };
            let templated = ["%u", "%c", "%d"].iter().any(|t| r.topic.contains(t));
            rules.push(Rule {
                permission: r.permission,
                action: r.action,
                reason_code,
                levels: r.topic.split('/').map(str::to_string).collect(),
                topic: r.topic.clone(),
                templated,
                // Accounts and domains are case-folded, as JIDs are.
                account: r.account.as_deref().map(str::to_lowercase),
                client_id: r.client_id.clone(),
                domain: r.domain.as_deref().map(str::to_lowercase),
            });
        }
        let reads_checked = default == Permission::Deny
            || rules
                .iter()
                .any(|r| r.permission == Permission::Deny && r.action != RuleAction::Publish);
        Ok(Acl {
            rules,
            default,
            reads_checked,
        })
    }

    /// How many rules there are (`[[mqtt_acl]]` tables).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether any message delivery could be refused (else reading is not
    /// checked at all: the broker's fast path).
    pub fn checks_reads(&self) -> bool {
        self.reads_checked
    }

    /// Whether `who` may do `req` on `topic` (a topic name for publish and
    /// read, a filter for subscribe).
    pub fn allows(&self, who: Who<'_>, req: Request, topic: &str) -> bool {
        self.check(who, req, topic).is_ok()
    }

    /// [`Acl::allows`], with the reason code of a refusal.
    pub fn check(&self, who: Who<'_>, req: Request, topic: &str) -> Result<(), u8> {
        let mut allowed = false;
        for r in &self.rules {
            let action_fits = matches!(
                (r.action, req),
                (RuleAction::All, _)
                    | (RuleAction::Publish, Request::Publish)
                    | (RuleAction::Subscribe, Request::Subscribe | Request::Read)
            );
            if !action_fits || !r.is_for(who) {
                continue;
            }
            let deny = r.permission == Permission::Deny;
            let applies = match r.filter(who, deny) {
                None => false,
                Some(f) => match req {
                    Request::Subscribe => filter_covers(&f, topic),
                    Request::Publish | Request::Read => filter_matches(&f, topic),
                },
            };
            if applies {
                if deny {
                    return Err(r.reason_code);
                }
                allowed = true;
            }
        }
        if allowed || self.default == Permission::Allow {
            Ok(())
        } else {
            Err(NOT_AUTHORIZED)
        }
    }
}

impl Rule {
    fn is_for(&self, who: Who<'_>) -> bool {
        self.account.as_deref().is_none_or(|p| glob(p, who.account))
            && self
                .client_id
                .as_deref()
                .is_none_or(|p| glob(p, who.client_id))
            && self.domain.as_deref().is_none_or(|p| glob(p, who.domain))
    }

    /// The filter for `who`; `None` when an allow rule cannot be
    /// substituted safely (a deny rule then widens the level to `+`).
    fn filter<'r>(&'r self, who: Who<'_>, deny: bool) -> Option<Cow<'r, str>> {
        if !self.templated {
            return Some(Cow::Borrowed(&self.topic));
        }
        let mut out = Vec::with_capacity(self.levels.len());
        for level in &self.levels {
            // One pass over the level as written: a value is never read
            // again for placeholders (an account named `%c` stays `%c`).
            let mut text = String::with_capacity(level.len());
            let mut unsafe_value = false;
            let mut chars = level.chars();
            while let Some(ch) = chars.next() {
                if ch != '%' {
                    text.push(ch);
                    continue;
                }
                let rest = chars.as_str();
                let value = match rest.chars().next() {
                    Some('u') => who.local(),
                    Some('c') => Some(who.client_id),
                    Some('d') => Some(who.domain),
                    _ => {
                        text.push('%');
                        continue;
                    }
                };
                chars.next();
                match value {
                    Some(v) if safe(v) => text.push_str(v),
                    _ => unsafe_value = true,
                }
            }
            if unsafe_value {
                if !deny {
                    return None;
                }
                text = "+".to_string();
            }
            out.push(text);
        }
        Some(Cow::Owned(out.join("/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: Permission, a: RuleAction, topic: &str) -> RawRule {
        RawRule {
            permission: p,
            action: a,
            topic: topic.into(),
            account: None,
            client_id: None,
            domain: None,
            reason_code: None,
        }
    }

    const ALICE: Who<'static> = Who {
        account: "alice@example.org",
        client_id: "phone",
        domain: "example.org",
    };
    const ANON: Who<'static> = Who {
        account: "",
        client_id: "dev1",
        domain: "example.org",
    };

    #[test]
    fn deny_wins_and_default_decides_the_rest() {
        use Permission::*;
        let acl = Acl::new(
            &[
                rule(Allow, RuleAction::All, "test/#"),
                rule(Deny, RuleAction::Subscribe, "test/nosubscribe"),
            ],
            Deny,
        )
        .unwrap();
        assert!(acl.allows(ALICE, Request::Subscribe, "test/a"));
        assert!(!acl.allows(ALICE, Request::Subscribe, "test/nosubscribe"));
        assert!(acl.allows(ALICE, Request::Publish, "test/nosubscribe"));
        assert!(!acl.allows(ALICE, Request::Read, "test/nosubscribe"));
        assert!(
            acl.allows(ALICE, Request::Subscribe, "test/#"),
            "# is covered by the allow"
        );
        assert!(
            !acl.allows(ALICE, Request::Publish, "other"),
            "default deny"
        );
        assert!(acl.checks_reads());
        let open = Acl::new(
            &[rule(Deny, RuleAction::Subscribe, "test/nosubscribe")],
            Allow,
        )
        .unwrap();
        assert!(
            open.allows(ALICE, Request::Subscribe, "#"),
            "# is not covered by the deny"
        );
        assert!(
            !open.allows(ALICE, Request::Read, "test/nosubscribe"),
            "but not read through it"
        );
        assert!(open.allows(ALICE, Request::Read, "test/other"));
        assert!(!Acl::default().checks_reads());
    }

    #[test]
    fn substitution_and_who() {
        use Permission::*;
        let mut own = rule(Allow, RuleAction::All, "users/%u/#");
        own.domain = Some("example.*".into());
        let mut dev = rule(Allow, RuleAction::Publish, "devices/%c/state");
        dev.client_id = Some("dev*".into());
        let acl = Acl::new(&[own, dev], Deny).unwrap();
        assert!(acl.allows(ALICE, Request::Publish, "users/alice/x"));
        assert!(!acl.allows(ALICE, Request::Publish, "users/bob/x"));
        assert!(
            !acl.allows(ANON, Request::Publish, "users//x"),
            "no %u: allow does not apply"
        );
        assert!(acl.allows(ANON, Request::Publish, "devices/dev1/state"));
        assert!(
            !acl.allows(ALICE, Request::Publish, "devices/phone/state"),
            "client id pattern"
        );
        let sneaky = Who {
            client_id: "dev+",
            ..ANON
        };
        assert!(!acl.allows(sneaky, Request::Publish, "devices/dev+/state"));
        // A value is never read again for placeholders.
        let sly = Who {
            account: "%c@example.org",
            client_id: "bob",
            domain: "example.org",
        };
        assert!(!acl.allows(sly, Request::Publish, "users/bob/x"));
        assert!(acl.allows(sly, Request::Publish, "users/%c/x"));
        // Account and domain patterns fold case, as JIDs do.
        let mut upper = rule(Deny, RuleAction::All, "x");
        upper.account = Some("Alice@Example.ORG".into());
        let d = Acl::new(&[upper], Allow).unwrap();
        assert!(!d.allows(ALICE, Request::Publish, "x"));
        // A deny with an unsafe value fails closed: the level becomes +.
        let d = Acl::new(&[rule(Deny, RuleAction::Publish, "secret/%u")], Allow).unwrap();
        assert!(!d.allows(ANON, Request::Publish, "secret/anything"));
        assert!(!d.allows(ALICE, Request::Publish, "secret/alice"));
        assert!(d.allows(ALICE, Request::Publish, "secret/bob"));
    }

    #[test]
    fn bad_rules_are_refused() {
        use Permission::*;
        assert!(Acl::new(&[rule(Allow, RuleAction::All, "a/#/b")], Allow).is_err());
        assert!(Acl::new(&[rule(Allow, RuleAction::All, "")], Allow).is_err());
        let mut r = rule(Allow, RuleAction::All, "a");
        r.account = Some(String::new());
        assert!(Acl::new(&[r], Allow).is_err());
        let mut r = rule(Deny, RuleAction::All, "a");
        r.reason_code = Some(0x10);
        assert!(Acl::new(&[r.clone()], Allow).is_err());
        r.reason_code = Some(0x80);
        let acl = Acl::new(&[r.clone()], Allow).unwrap();
        assert_eq!(acl.check(ALICE, Request::Subscribe, "a"), Err(0x80));
        r.permission = Allow;
        assert!(Acl::new(&[r], Allow).is_err(), "a code on an allow rule");
        let closed = Acl::new(&[], Deny).unwrap();
        assert_eq!(closed.check(ALICE, Request::Publish, "a"), Err(0x87));
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*", "abc"));
        assert!(glob("*c", "abc"));
        assert!(glob("a*c", "abc"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXc"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("x", "x") && !glob("x", "y"));
    }
}
