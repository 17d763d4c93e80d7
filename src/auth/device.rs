//! The device authorization grant (RFC 8628), for devices without a
//! keyboard: the device gets a `device_code` (kept secret, polled with) and
//! a `user_code` (8 characters from BCDFGHJKLMNPQRSTVWXZ, shown XXXX-XXXX)
//! that the user enters on the verification page, signed in, to allow or
//! deny. Pending authorizations live in memory, by the SHA-256 of the
//! device code, for `oauth_device_code_expire` seconds (a restart makes the
//! device start over), at most `oauth_max_pending_codes` of them.
//!
//! Time is passed in (milliseconds) so that polling intervals and
//! `slow_down` are decided without a clock here.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{random_bytes, AuthCore, AuthError, BareJid, IssuedToken, Scopes, TokenSpec};
use crate::store::records::TokenGrant;

/// RFC 8628 §6.1: consonants only (no vowels: no words), no look-alikes.
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Added to the interval on every `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Approved(BareJid),
    Denied,
    /// An approved poll is being answered (its tokens stored): other polls
    /// wait as for a pending one.
    Issuing(BareJid),
}

pub(super) struct DeviceEntry {
    /// Who asked (its /64 for IPv6): a per-address count is kept.
    peer: Option<IpAddr>,
    client_id: String,
    scopes: Scopes,
    user_code: String,
    expires_ms: u64,
    interval_ms: u64,
    last_poll_ms: Option<u64>,
    state: State,
}

/// What `POST /oauth/device_authorization` answers with.
#[derive(Clone)]
pub struct DeviceStart {
    pub device_code: String,
    /// As shown: `XXXX-XXXX`.
    pub user_code: String,
    pub expires_in: u64,
    pub interval: u64,
}

impl std::fmt::Debug for DeviceStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither code: both act for someone while they live.
        f.debug_struct("DeviceStart")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// What the verification page shows about a pending user code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAsk {
    pub client_id: String,
    pub scopes: Scopes,
}

/// The token endpoint's answers to a poll that gives no token (RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("the user has not yet answered")]
    Pending,
    #[error("polling faster than the interval; wait 5 s more between polls")]
    SlowDown,
    #[error("the user denied the request")]
    Denied,
    #[error("the device code expired; start over")]
    Expired,
    #[error("unknown device code, or issued to another client")]
    Invalid,
    #[error("the account may no longer get tokens")]
    AccountGone,
    /// The store failed (a server error, not the client's).
    #[error("internal error")]
    Internal,
}

impl PollError {
    /// The RFC's error code.
    pub fn code(&self) -> &'static str {
        match self {
            PollError::Pending => "authorization_pending",
            PollError::SlowDown => "slow_down",
            PollError::Denied => "access_denied",
            PollError::Expired => "expired_token",
            PollError::Invalid | PollError::AccountGone => "invalid_grant",
            PollError::Internal => "server_error",
        }
    }
}

/// A user code as typed: upper case, without the dash and spaces. `None`
/// when it cannot be one of ours.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let c: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (c.len() == 8 && c.bytes().all(|b| ALPHABET.contains(&b))).then_some(c)
}

fn new_user_code() -> String {
    let mut out = String::with_capacity(8);
    while out.len() < 8 {
        for b in random_bytes::<16>() {
            // 240 = 12 × 20: rejection keeps every letter equally likely.
            if b < 240 && out.len() < 8 {
                out.push(char::from(ALPHABET[usize::from(b % 20)]));
            }
        }
    }
    out
}

/// `XXXX-XXXX`.
pub fn show_user_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

fn hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

impl AuthCore {
    /// Starts a device authorization for `client_id`, asked from `peer`;
    /// `None` when too many are pending, in all or from this address (the
    /// endpoint answers 503).
    pub fn new_device(
        &self,
        client_id: &str,
        scopes: Scopes,
        now_ms: u64,
        peer: Option<IpAddr>,
    ) -> Option<DeviceStart> {
        if self.devices.len() >= self.max_pending_codes {
            // Full: what has expired goes first, grace or not.
            self.drop_devices(|e| now_ms < e.expires_ms);
            if self.devices.len() >= self.max_pending_codes {
                return None;
            }
        }
        let peer = peer.map(super::throttle::peer_key);
        if let Some(p) = peer {
            if !self.count_peer(p) {
                // This address's expired ones make room first.
                self.drop_devices(|e| e.peer != Some(p) || now_ms < e.expires_ms);
                if !self.count_peer(p) {
                    return None;
                }
            }
        }
        let device_code = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let key = hash(&device_code);
        // A user code in use is drawn again (20^8 codes: rare).
        let user_code = loop {
            let c = new_user_code();
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.user_codes.entry(c.clone()) {
                v.insert(key);
                break c;
            }
        };
        self.devices.insert(
            key,
            DeviceEntry {
                peer,
                client_id: client_id.to_string(),
                scopes,
                user_code: user_code.clone(),
                expires_ms: now_ms.saturating_add(self.device_expire.saturating_mul(1000)),
                interval_ms: self.device_interval.saturating_mul(1000),
                last_poll_ms: None,
                state: State::Pending,
            },
        );
        Some(DeviceStart {
            device_code,
            user_code: show_user_code(&user_code),
            expires_in: self.device_expire,
            interval: self.device_interval,
        })
    }

    /// The pending request behind a user code (normalized), if any.
    pub fn device_ask(&self, user_code: &str, now_ms: u64) -> Option<DeviceAsk> {
        let key = *self.user_codes.get(user_code)?;
        let e = self.devices.get(&key)?;
        (e.state == State::Pending && now_ms < e.expires_ms).then(|| DeviceAsk {
            client_id: e.client_id.clone(),
            scopes: e.scopes.clone(),
        })
    }

    /// The user's answer on the verification page: `Some(owner)` allows,
    /// `None` denies. False when the code is no longer pending.
    pub fn device_answer(&self, user_code: &str, owner: Option<BareJid>, now_ms: u64) -> bool {
        let Some(key) = self.user_codes.get(user_code).map(|k| *k) else {
            return false;
        };
        let Some(mut e) = self.devices.get_mut(&key) else {
            return false;
        };
        if e.state != State::Pending || now_ms >= e.expires_ms {
            return false;
        }
        e.state = match owner {
            Some(o) => State::Approved(o),
            None => State::Denied,
        };
        true
    }

    /// A device's poll at the token endpoint (RFC 8628 §3.4, §3.5).
    pub fn poll_device(
        &self,
        device_code: &str,
        client_id: &str,
        now_ms: u64,
        refresh: bool,
    ) -> Result<IssuedToken, PollError> {
        let key = hash(device_code);
        let (owner, scopes) = {
            let mut e = self.devices.get_mut(&key).ok_or(PollError::Invalid)?;
            if e.client_id != client_id {
                return Err(PollError::Invalid);
            }
            if now_ms >= e.expires_ms {
                return Err(PollError::Expired);
            }
            let last = e.last_poll_ms.replace(now_ms);
            if last.is_some_and(|l| now_ms.saturating_sub(l) < e.interval_ms) {
                e.interval_ms = e.interval_ms.saturating_add(SLOW_DOWN_MS);
                return Err(PollError::SlowDown);
            }
            match e.state.clone() {
                State::Pending | State::Issuing(_) => return Err(PollError::Pending),
                State::Denied => {
                    let code = e.user_code.clone();
                    drop(e);
                    self.forget_device(&key, &code);
                    return Err(PollError::Denied);
                }
                State::Approved(owner) => {
                    e.state = State::Issuing(owner.clone());
                    (owner, e.scopes.clone())
                }
            }
        };
        if !self.may_get_tokens(&owner) {
            self.forget_device_by_key(&key);
            return Err(PollError::AccountGone);
        }
        let issued = self.issue(TokenSpec {
            owner: &owner,
            scopes,
            ttl: None,
            client_id: Some(client_id),
            grant: TokenGrant::DeviceCode,
            refresh,
            refresh_scopes: None,
            family: None,
        });
        match issued {
            // Used once: the next poll with it is an unknown code.
            Ok(t) => {
                self.forget_device_by_key(&key);
                Ok(t)
            }
            Err(
                AuthError::NoSuchUser(_)
                | AuthError::UnknownHost(_)
                | AuthError::FamilyRevoked
                | AuthError::NoSuchClient(_),
            ) => {
                self.forget_device_by_key(&key);
                Err(PollError::AccountGone)
            }
            Err(e) => {
                // The server failed, not the device: the next poll tries again.
                tracing::error!(error = %e, "device grant failed");
                if let Some(mut d) = self.devices.get_mut(&key) {
                    d.state = State::Approved(owner);
                }
                Err(PollError::Internal)
            }
        }
    }

    fn forget_device_by_key(&self, key: &[u8; 32]) {
        let code = self.devices.get(key).map(|e| e.user_code.clone());
        if let Some(code) = code {
            self.forget_device(key, &code);
        }
    }

    fn forget_device(&self, key: &[u8; 32], user_code: &str) {
        if let Some((_, e)) = self.devices.remove(key) {
            self.uncount_peer(e.peer);
        }
        self.user_codes.remove(user_code);
    }

    /// Counts one more pending authorization for `p`, unless it has its fill.
    fn count_peer(&self, p: IpAddr) -> bool {
        let mut n = self.device_peers.entry(p).or_insert(0);
        if *n >= self.max_devices_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    fn uncount_peer(&self, peer: Option<IpAddr>) {
        if let Some(p) = peer {
            if let dashmap::mapref::entry::Entry::Occupied(mut o) = self.device_peers.entry(p) {
                *o.get_mut() -= 1;
                if *o.get() == 0 {
                    o.remove();
                }
            }
        }
    }

    /// Forgets the device authorizations `keep` refuses.
    fn drop_devices(&self, keep: impl Fn(&DeviceEntry) -> bool) {
        let mut gone = Vec::new();
        self.devices.retain(|_, e| {
            let k = keep(e);
            if !k {
                gone.push((e.user_code.clone(), e.peer));
            }
            k
        });
        for (c, peer) in gone {
            self.user_codes.remove(&c);
            self.uncount_peer(peer);
        }
    }

    /// Forgets device authorizations past their time (kept a while after
    /// expiry, so that a late poll hears `expired_token`).
    pub fn sweep_devices(&self, now_ms: u64) {
        let grace = self.device_expire.saturating_mul(1000);
        self.drop_devices(|e| now_ms < e.expires_ms.saturating_add(grace));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::core;
    use super::*;
    use crate::auth::Protocol;
    use crate::config::Config;

    fn setup() -> (AuthCore, tempfile::TempDir, BareJid) {
        let (a, d) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        a.register(&alice, "pw").unwrap();
        (a, d, alice)
    }

    #[test]
    fn user_codes_look_right_and_normalize() {
        for _ in 0..100 {
            let c = new_user_code();
            assert_eq!(
                normalize_user_code(&show_user_code(&c)).as_deref(),
                Some(c.as_str())
            );
        }
        assert_eq!(
            normalize_user_code("bcdf-ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code("BCDF GHJK").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code("ABCD-EFGH"),
            None,
            "vowels are not used"
        );
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
    }

    #[test]
    fn polling_pending_slow_down_approval_and_single_use() {
        let (a, _d, alice) = setup();
        let t0 = 1_000_000;
        let s = a.new_device("tv", Scopes::sasl_auth(), t0, None).unwrap();
        assert_eq!((s.interval, s.expires_in), (5, 600));
        let code = normalize_user_code(&s.user_code).unwrap();
        assert_eq!(
            a.poll_device(&s.device_code, "tv", t0, true).unwrap_err(),
            PollError::Pending
        );
        // Too soon: slow_down, and the interval grows to 10 s.
        assert_eq!(
            a.poll_device(&s.device_code, "tv", t0 + 1_000, true)
                .unwrap_err(),
            PollError::SlowDown
        );
        assert_eq!(
            a.poll_device(&s.device_code, "tv", t0 + 7_000, true)
                .unwrap_err(),
            PollError::SlowDown,
            "6 s after the last poll is under the new 10 s"
        );
        assert_eq!(
            a.poll_device(&s.device_code, "other", t0 + 30_000, true)
                .unwrap_err(),
            PollError::Invalid
        );
        assert_eq!(
            a.device_ask(&code, t0 + 1),
            Some(DeviceAsk {
                client_id: "tv".into(),
                scopes: Scopes::sasl_auth()
            })
        );
        assert!(a.device_answer(&code, Some(alice.clone()), t0 + 2));
        assert!(!a.device_answer(&code, None, t0 + 3), "answered once");
        let t = a
            .poll_device(&s.device_code, "tv", t0 + 60_000, true)
            .unwrap();
        assert!(a
            .check_login_token(&t.token, Some(&alice), Protocol::Mqtt)
            .is_ok());
        assert!(t.refresh.is_some());
        assert_eq!(
            a.poll_device(&s.device_code, "tv", t0 + 120_000, true)
                .unwrap_err(),
            PollError::Invalid
        );
        assert_eq!(a.device_ask(&code, t0 + 120_001), None);
    }

    #[test]
    fn denial_and_expiry() {
        let (a, _d, _alice) = setup();
        let s = a.new_device("tv", Scopes::sasl_auth(), 0, None).unwrap();
        let code = normalize_user_code(&s.user_code).unwrap();
        assert!(a.device_answer(&code, None, 1));
        assert_eq!(
            a.poll_device(&s.device_code, "tv", 10_000, false)
                .unwrap_err(),
            PollError::Denied
        );
        let s = a.new_device("tv", Scopes::sasl_auth(), 0, None).unwrap();
        let late = 600_000;
        assert_eq!(
            a.poll_device(&s.device_code, "tv", late, false)
                .unwrap_err(),
            PollError::Expired
        );
        let code = normalize_user_code(&s.user_code).unwrap();
        assert!(!a.device_answer(&code, None, late), "too late to answer");
        a.sweep_devices(late * 3);
        assert_eq!(
            a.poll_device(&s.device_code, "tv", late * 3, false)
                .unwrap_err(),
            PollError::Invalid
        );
        assert!(a.devices.is_empty() && a.user_codes.is_empty());
    }

    /// One address may hold `oauth_max_device_codes_per_ip` pending codes;
    /// at the global cap, expired ones make room first.
    #[test]
    fn pending_codes_are_capped_per_address_and_in_all() {
        let (a, _d) = core(&Config {
            oauth_max_device_codes_per_ip: 2,
            oauth_max_pending_codes: 3,
            ..Config::default()
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let s = || Scopes::sasl_auth();
        let first = a.new_device("tv", s(), 0, ip("192.0.2.1")).unwrap();
        assert!(a.new_device("tv", s(), 0, ip("192.0.2.1")).is_some());
        assert!(
            a.new_device("tv", s(), 0, ip("192.0.2.1")).is_none(),
            "per address"
        );
        assert!(a.new_device("tv", s(), 0, ip("2001:db8::1")).is_some());
        assert!(
            a.new_device("tv", s(), 0, ip("2001:db8::2")).is_none(),
            "same /64, and full"
        );
        // Answered and polled: its place is free again.
        let code = normalize_user_code(&first.user_code).unwrap();
        assert!(a.device_answer(&code, None, 1));
        assert!(a.poll_device(&first.device_code, "tv", 1, false).is_err());
        assert!(a.new_device("tv", s(), 2, ip("192.0.2.1")).is_some());
        // The address's own expired ones make room for it at once.
        let (b, _d2) = core(&Config {
            oauth_max_device_codes_per_ip: 1,
            ..Config::default()
        });
        assert!(b.new_device("tv", s(), 0, ip("192.0.2.9")).is_some());
        assert!(b.new_device("tv", s(), 1, ip("192.0.2.9")).is_none());
        assert!(b.new_device("tv", s(), 600_000, ip("192.0.2.9")).is_some());
        // Full of live codes; once they expire, new ones fit at once.
        assert!(a.new_device("tv", s(), 3, ip("198.51.100.1")).is_none());
        assert!(a
            .new_device("tv", s(), 600_001, ip("198.51.100.1"))
            .is_some());
    }
}
