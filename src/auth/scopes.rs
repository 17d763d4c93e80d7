//! Token scopes and the one authorization question, [`may`].
//!
//! Known scopes:
//! - `sasl_auth`: the token may log in over XMPP and MQTT. Alone, it may do all
//!   that its owner may do in the owner's own domain.
//! - `mqtt`, `xmpp`: the token may log in over that protocol only (and do
//!   there all that `sasl_auth` would); `mqtt xmpp` is `sasl_auth`.
//! - `mqtt:publish:FILTER`: publishing is limited to topics matching FILTER
//!   (an MQTT topic filter; several such scopes widen each other).
//! - `mqtt:subscribe:FILTER`: subscribing is limited to filters inside FILTER.
//! - `xmpp:roster:read`: the roster may be read but not changed.
//! - `xmpp:client:normal` (XEP-0493 §5): an XMPP client's ordinary access,
//!   here the same as `xmpp`.
//!
//! A family of fine scopes narrows only its own kind of action: a token with
//! `sasl_auth mqtt:publish:devices/42/#` may subscribe anywhere in its domain but
//! publish only under `devices/42/`.

use std::fmt;

pub const SASL_AUTH: &str = "sasl_auth";
const PUBLISH_PREFIX: &str = "mqtt:publish:";
const SUBSCRIBE_PREFIX: &str = "mqtt:subscribe:";
const ROSTER_READ: &str = "xmpp:roster:read";
/// XEP-0493's scope for an XMPP client: logs in over XMPP.
pub const XMPP_CLIENT_NORMAL: &str = "xmpp:client:normal";
/// The admin HTTP API's scope (`POST /api/<command>`): issued by
/// `petrel ctl oauth_issue_token` only, never by the OAuth endpoints.
pub const ADMIN: &str = "petrel:admin";

/// A protocol a session speaks and a token logs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Xmpp = 0,
    Mqtt = 1,
}

impl Protocol {
    /// Its name, which is also the scope that lets a token log in over
    /// this protocol alone.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Xmpp => "xmpp",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// What the README lists, for error messages and RFC 8414 metadata.
pub const SUPPORTED: &[&str] = &[
    SASL_AUTH,
    "mqtt",
    "xmpp",
    "mqtt:publish:FILTER",
    "mqtt:subscribe:FILTER",
    ROSTER_READ,
    XMPP_CLIENT_NORMAL,
    ADMIN,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope \"{0}\"")]
pub struct UnknownScope(pub String);

/// A validated, de-duplicated set of scopes in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Parses scopes separated by spaces (RFC 6749) or `;` (ejabberdctl).
    pub fn parse(text: &str) -> Result<Scopes, UnknownScope> {
        let mut out: Vec<String> = Vec::new();
        for s in text.split([' ', ';']).filter(|s| !s.is_empty()) {
            if !known(s) {
                return Err(UnknownScope(s.to_string()));
            }
            if !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
        Ok(Scopes(out))
    }

    /// Scopes read back from the store (already validated when issued).
    pub fn from_stored(list: Vec<String>) -> Scopes {
        Scopes(list)
    }

    pub fn sasl_auth() -> Scopes {
        Scopes(vec![SASL_AUTH.to_string()])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == scope)
    }

    /// Whether a token with these scopes may log in over `protocol`:
    /// `sasl_auth` (both) or the protocol's own scope.
    pub fn logs_into(&self, protocol: Protocol) -> bool {
        self.has(SASL_AUTH)
            || self.has(protocol.name())
            || (protocol == Protocol::Xmpp && self.has(XMPP_CLIENT_NORMAL))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }

    /// Whether a token with these scopes may do nothing that one with
    /// `granted` may not (RFC 6749 §6: a refresh may narrow, never widen).
    /// Rights, not strings, are compared: the MQTT topic scopes and
    /// `xmpp:roster:read` are limits, so dropping one would widen.
    pub fn within(&self, granted: &Scopes) -> bool {
        if [Protocol::Mqtt, Protocol::Xmpp]
            .into_iter()
            .any(|p| self.logs_into(p) && !granted.logs_into(p))
        {
            return false;
        }
        // A protocol the token does not log into: its limits do not matter.
        if self.logs_into(Protocol::Xmpp) && granted.has(ROSTER_READ) && !self.has(ROSTER_READ) {
            return false;
        }
        if !self.logs_into(Protocol::Mqtt) {
            return true;
        }
        [PUBLISH_PREFIX, SUBSCRIBE_PREFIX].iter().all(|p| {
            let mine: Vec<&str> = self.0.iter().filter_map(|s| s.strip_prefix(p)).collect();
            let theirs: Vec<&str> = granted.0.iter().filter_map(|s| s.strip_prefix(p)).collect();
            // No limit granted: any (or none) asked. A limit granted: a
            // limit asked, each filter inside a granted one.
            theirs.is_empty()
                || (!mine.is_empty()
                    && mine
                        .iter()
                        .all(|m| theirs.iter().any(|t| filter_covers(t, m))))
        })
    }
}

impl fmt::Display for Scopes {
    /// Space-separated, as OAuth responses carry them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

fn known(s: &str) -> bool {
    if [
        SASL_AUTH,
        ROSTER_READ,
        "mqtt",
        "xmpp",
        XMPP_CLIENT_NORMAL,
        ADMIN,
    ]
    .contains(&s)
    {
        return true;
    }
    if let Some(filter) = s
        .strip_prefix(PUBLISH_PREFIX)
        .or_else(|| s.strip_prefix(SUBSCRIBE_PREFIX))
    {
        return crate::mqtt::topics::valid_topic_filter(filter);
    }
    false
}

/// Something a logged-in session wants to do.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Publish to an MQTT topic name.
    Publish(&'a str),
    /// Subscribe to an MQTT topic filter.
    Subscribe(&'a str),
    RosterRead,
    RosterWrite,
    /// Send a message, presence or iq.
    Send,
}

/// The one authorization question every protocol asks. `scopes` is `None` for a
/// password login, which may do everything its account may.
pub fn may(scopes: Option<&Scopes>, action: Action<'_>) -> bool {
    let Some(scopes) = scopes else { return true };
    let protocol = match action {
        Action::Publish(_) | Action::Subscribe(_) => Protocol::Mqtt,
        Action::RosterRead | Action::RosterWrite | Action::Send => Protocol::Xmpp,
    };
    if !scopes.logs_into(protocol) {
        return false;
    }
    let family = |prefix: &str| {
        scopes
            .0
            .iter()
            .filter_map(move |s| s.strip_prefix(prefix))
            .collect::<Vec<_>>()
    };
    match action {
        Action::Publish(topic) => {
            let allowed = family(PUBLISH_PREFIX);
            allowed.is_empty()
                || allowed
                    .iter()
                    .any(|f| crate::mqtt::topics::filter_matches(f, topic))
        }
        Action::Subscribe(filter) => {
            let allowed = family(SUBSCRIBE_PREFIX);
            allowed.is_empty() || allowed.iter().any(|f| filter_covers(f, filter))
        }
        Action::RosterRead => true,
        Action::RosterWrite => !scopes.has(ROSTER_READ),
        Action::Send => true,
    }
}

/// Whether the token's `mqtt:publish:` limits (if any) let it publish to
/// `topic`, whatever protocol it logs into: what a bridge rule asks of an
/// XMPP user's item crossing to MQTT.
pub fn topic_within_limits(scopes: Option<&Scopes>, topic: &str) -> bool {
    let Some(scopes) = scopes else { return true };
    let mut limits = scopes
        .0
        .iter()
        .filter_map(|s| s.strip_prefix(PUBLISH_PREFIX))
        .peekable();
    limits.peek().is_none() || limits.any(|f| crate::mqtt::topics::filter_matches(f, topic))
}

/// Whether every topic matched by `inner` is also matched by `outer`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    // MQTT 4.7.2: a filter starting with a wildcard does not reach topics
    // starting with '$' (a scope of `+/x` does not cover `$SYS/x`).
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(x)) if x != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Narrowing is judged by rights: dropping a limit widens.
    #[test]
    fn within_compares_rights() {
        let s = |t: &str| Scopes::parse(t).unwrap();
        let granted = s("sasl_auth mqtt:publish:dev/42/# xmpp:roster:read");
        assert!(granted.within(&granted));
        assert!(s("sasl_auth mqtt:publish:dev/42/t xmpp:roster:read").within(&granted));
        assert!(
            s("sasl_auth mqtt:publish:dev/42/# xmpp:roster:read mqtt:subscribe:a/#")
                .within(&granted),
            "a new limit narrows"
        );
        assert!(
            !s("sasl_auth xmpp:roster:read").within(&granted),
            "no publish limit: wider"
        );
        assert!(
            !s("sasl_auth mqtt:publish:dev/42/#").within(&granted),
            "roster write: wider"
        );
        assert!(!s("sasl_auth mqtt:publish:dev/# xmpp:roster:read").within(&granted));
        assert!(
            s("mqtt:publish:dev/42/# xmpp:roster:read").within(&granted),
            "no login: narrower"
        );
        assert!(
            !s("sasl_auth").within(&s("xmpp:roster:read")),
            "login not granted"
        );
        assert!(s("sasl_auth mqtt:subscribe:x/#").within(&s("sasl_auth")));
        assert!(s("mqtt").within(&s("sasl_auth")), "one protocol of two");
        assert!(s("mqtt xmpp").within(&s("sasl_auth")));
        assert!(s("sasl_auth").within(&s("mqtt xmpp")), "the same rights");
        assert!(!s("xmpp").within(&s("mqtt")), "another protocol: wider");
        assert!(!s("sasl_auth").within(&s("mqtt")));
        assert!(
            s("xmpp").within(&s("sasl_auth mqtt:publish:a/#")),
            "no MQTT login: its topic limits do not matter"
        );
        assert!(
            s("mqtt").within(&s("sasl_auth xmpp:roster:read")),
            "no XMPP login: the roster limit does not matter"
        );
        assert!(!s("mqtt").within(&s("sasl_auth mqtt:publish:a/#")));
    }

    /// `mqtt` and `xmpp` each open one protocol, with its full rights there.
    #[test]
    fn protocol_scopes_open_one_protocol() {
        let m = Scopes::parse("mqtt mqtt:publish:devices/42/#").unwrap();
        assert!(m.logs_into(Protocol::Mqtt));
        assert!(!m.logs_into(Protocol::Xmpp));
        assert!(may(Some(&m), Action::Publish("devices/42/t")));
        assert!(!may(Some(&m), Action::Publish("devices/43/t")));
        assert!(may(Some(&m), Action::Subscribe("a/#")));
        assert!(!may(Some(&m), Action::Send));
        assert!(!may(Some(&m), Action::RosterRead));
        let x = Scopes::parse("xmpp").unwrap();
        assert!(x.logs_into(Protocol::Xmpp) && !x.logs_into(Protocol::Mqtt));
        assert!(may(Some(&x), Action::Send) && may(Some(&x), Action::RosterWrite));
        assert!(!may(Some(&x), Action::Publish("a")));
        let both = Scopes::parse("sasl_auth").unwrap();
        assert!(both.logs_into(Protocol::Mqtt) && both.logs_into(Protocol::Xmpp));
    }

    #[test]
    fn parse_accepts_both_separators_and_refuses_unknown() {
        let s = Scopes::parse("sasl_auth;mqtt:publish:devices/42/# sasl_auth").unwrap();
        assert_eq!(s.as_slice(), ["sasl_auth", "mqtt:publish:devices/42/#"]);
        assert_eq!(
            Scopes::parse("sasl_auth admin"),
            Err(UnknownScope("admin".into()))
        );
        assert!(Scopes::parse("mqtt:publish:a/#/b").is_err());
        assert!(Scopes::parse("mqtt:publish:").is_err());
        assert_eq!(s.to_string(), "sasl_auth mqtt:publish:devices/42/#");
    }

    #[test]
    fn fine_scopes_narrow_their_family_only() {
        let s = Scopes::parse("sasl_auth mqtt:publish:devices/42/#").unwrap();
        assert!(may(Some(&s), Action::Publish("devices/42/temp")));
        assert!(!may(Some(&s), Action::Publish("devices/43/temp")));
        assert!(may(Some(&s), Action::Subscribe("anything/#")));
        assert!(may(Some(&s), Action::RosterWrite));
        let r = Scopes::parse("sasl_auth xmpp:roster:read").unwrap();
        assert!(may(Some(&r), Action::RosterRead));
        assert!(!may(Some(&r), Action::RosterWrite));
        let sub = Scopes::parse("sasl_auth mqtt:subscribe:a/+/c").unwrap();
        assert!(may(Some(&sub), Action::Subscribe("a/b/c")));
        assert!(may(Some(&sub), Action::Subscribe("a/+/c")));
        assert!(!may(Some(&sub), Action::Subscribe("a/#")));
        assert!(may(None, Action::Publish("x")));
        let none = Scopes::parse("mqtt:publish:x").unwrap();
        assert!(
            !may(Some(&none), Action::Publish("x")),
            "no sasl_auth: nothing"
        );
    }

    #[test]
    fn a_wildcard_first_level_does_not_cover_dollar_topics() {
        assert!(!filter_covers("+/x", "$SYS/x"));
        assert!(!filter_covers("#", "$SYS/broker/load"));
        assert!(filter_covers("$SYS/#", "$SYS/broker/load"));
        assert!(filter_covers("+/x", "a/x"));
        let s = Scopes::parse("sasl_auth mqtt:subscribe:+/x").unwrap();
        assert!(!may(Some(&s), Action::Subscribe("$SYS/x")));
        assert!(may(Some(&s), Action::Subscribe("a/x")));
    }
}
