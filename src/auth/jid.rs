//! Bare JIDs (`user@domain`) as accounts and token owners know them.
//!
//! Full stringprep/PRECIS is not applied: localparts and domains are lowercased
//! and checked for the characters RFC 7622 forbids in a localpart, which is what
//! makes `Alice@LocalHost` and `alice@localhost` the same account.

use std::fmt;

/// Characters RFC 7622 §3.3.1 excludes from a localpart, plus whitespace.
const LOCALPART_FORBIDDEN: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@'];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BareJid {
    local: String,
    domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    #[error("JID has no localpart")]
    NoLocalpart,
    #[error("localpart is not valid")]
    BadLocalpart,
    #[error("domain is not valid")]
    BadDomain,
}

impl BareJid {
    /// Parses `user@domain` (a resource, if any, is refused: accounts are bare).
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        let (local, domain) = s.split_once('@').ok_or(JidError::NoLocalpart)?;
        BareJid::new(local, domain)
    }

    pub fn new(local: &str, domain: &str) -> Result<BareJid, JidError> {
        let local = local.to_lowercase();
        let domain = domain.to_lowercase();
        if !valid_localpart(&local) {
            return Err(JidError::BadLocalpart);
        }
        if !valid_domain(&domain) {
            return Err(JidError::BadDomain);
        }
        Ok(BareJid { local, domain })
    }

    /// A user named either as a bare JID or as a localpart of `default_domain`.
    pub fn from_user(user: &str, default_domain: &str) -> Result<BareJid, JidError> {
        if user.contains('@') {
            BareJid::parse(user)
        } else {
            BareJid::new(user, default_domain)
        }
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl fmt::Display for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

pub fn valid_localpart(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1023
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || LOCALPART_FORBIDDEN.contains(&c))
}

/// A DNS-ish domain or an IP literal: labels of letters, digits, `-` and `_`.
pub fn valid_domain(s: &str) -> bool {
    if s.is_empty() || s.len() > 1023 {
        return false;
    }
    if s.starts_with('[') && s.ends_with(']') {
        return s[1..s.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_folds_case() {
        let j = BareJid::parse("Alice@LocalHost").unwrap();
        assert_eq!(j.to_string(), "alice@localhost");
        assert_eq!(
            BareJid::from_user("bob", "example.org")
                .unwrap()
                .to_string(),
            "bob@example.org"
        );
    }

    #[test]
    fn refuses_bad_jids() {
        assert_eq!(BareJid::parse("nodomain"), Err(JidError::NoLocalpart));
        assert_eq!(BareJid::parse("@x"), Err(JidError::BadLocalpart));
        assert_eq!(BareJid::parse("a b@x"), Err(JidError::BadLocalpart));
        assert_eq!(BareJid::parse("a@x/res"), Err(JidError::BadDomain));
        assert_eq!(BareJid::parse("a@"), Err(JidError::BadDomain));
        assert_eq!(BareJid::parse("a@b..c"), Err(JidError::BadDomain));
    }
}
