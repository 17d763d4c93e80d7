use super::super::test_support::core;
use super::*;
use crate::config::Config;
use crate::store::{Store, StoreKind};

fn alice() -> BareJid {
    BareJid::parse("alice@localhost").unwrap()
}

/// An auth core where alice has an account (tokens are only for
/// accounts that exist).
fn core_with_alice(c: &Config) -> (AuthCore, tempfile::TempDir) {
    let (a, d) = core(c);
    a.register(&alice(), "pw").unwrap();
    (a, d)
}

/// A lifetime near `u64::MAX` (a configured `oauth_expire`) saturates
/// instead of overflowing; the token never expires then.
#[test]
fn a_huge_lifetime_saturates() {
    let (a, _d) = core_with_alice(&Config {
        oauth_expire: u64::MAX,
        ..Config::default()
    });
    let t = a
        .issue_token(&alice(), Scopes::sasl_auth(), None, None)
        .unwrap();
    assert_eq!(t.expires_at, u64::MAX);
    assert!(a.check_login_token(&t.token, None, Protocol::Mqtt).is_ok());
}

/// Printing an issued token (a log line, a panic) shows no token text.
#[test]
fn debug_output_hides_the_token() {
    let (a, _d) = core_with_alice(&Config::default());
    let t = a
        .issue_token(&alice(), Scopes::sasl_auth(), Some(60), Some("app"))
        .unwrap();
    let shown = format!("{t:?} {t:#?}");
    assert!(!shown.contains(&t.token), "{shown}");
    assert!(shown.contains(&t.id), "{shown}");
}

#[test]
fn issued_tokens_check_and_store_only_hashes() {
    let (a, _d) = core_with_alice(&Config::default());
    let t = a
        .issue_token(&alice(), Scopes::sasl_auth(), Some(60), Some("app"))
        .unwrap();
    assert!(t.token.len() >= 43);
    assert_eq!(t.expires_in, 60);
    let g = a
        .check_login_token(&t.token, Some(&alice()), Protocol::Mqtt)
        .unwrap();
    assert_eq!(g.owner(), &alice());
    assert_eq!(g.token_id(), t.id);
    assert!(a.check_login_token(&t.token, None, Protocol::Mqtt).is_ok());
    let bob = BareJid::parse("bob@localhost").unwrap();
    assert_eq!(
        a.check_login_token(&t.token, Some(&bob), Protocol::Mqtt)
            .unwrap_err(),
        TokenError::WrongOwner
    );
    assert_eq!(
        a.check_login_token("nope", None, Protocol::Mqtt)
            .unwrap_err(),
        TokenError::Unknown
    );
    assert_eq!(
        a.check_token(&t.token, None, "xmpp:roster:read")
            .unwrap_err(),
        TokenError::MissingScope("xmpp:roster:read".into())
    );
    for (k, v) in a.store.scan_prefix_blocking(Tree::Tokens, b"").unwrap() {
        assert!(!k.windows(t.token.len()).any(|w| w == t.token.as_bytes()));
        assert!(!v.windows(t.token.len()).any(|w| w == t.token.as_bytes()));
    }
}

#[test]
fn ttl_is_capped_and_zero_refused() {
    let c = Config {
        oauth_expire: 100,
        ..Config::default()
    };
    let (a, _d) = core_with_alice(&c);
    assert_eq!(
        a.issue_token(&alice(), Scopes::sasl_auth(), Some(10_000), None)
            .unwrap()
            .expires_in,
        100
    );
    assert_eq!(
        a.issue_token(&alice(), Scopes::sasl_auth(), None, None)
            .unwrap()
            .expires_in,
        100
    );
    assert!(matches!(
        a.issue_token(&alice(), Scopes::sasl_auth(), Some(0), None),
        Err(AuthError::BadTtl)
    ));
}

/// Records what the auth core announces.
#[derive(Default)]
pub(crate) struct Heard(pub std::sync::Mutex<Vec<(u64, TokenEnd)>>);

impl super::super::AuthEvents for Heard {
    fn token_ended(&self, key: u64, end: TokenEnd) {
        self.0.lock().unwrap().push((key, end));
    }
    fn account_changed(&self, _: &BareJid) {}
}

fn listen(a: &AuthCore) -> Arc<Heard> {
    let heard = Arc::new(Heard::default());
    a.set_events(heard.clone());
    heard
}

#[test]
fn revocation_by_text_or_id_ends_grants() {
    let (a, _d) = core_with_alice(&Config::default());
    let heard = listen(&a);
    let t1 = a
        .issue_token(&alice(), Scopes::sasl_auth(), None, None)
        .unwrap();
    let t2 = a
        .issue_token(&alice(), Scopes::sasl_auth(), None, None)
        .unwrap();
    let g1 = a
        .check_login_token(&t1.token, None, Protocol::Mqtt)
        .unwrap();
    assert_eq!(a.list_tokens().len(), 2);
    assert!(a.revoke_token(&t1.token).unwrap());
    assert_eq!(g1.end(), Some(TokenEnd::Revoked));
    assert_eq!(
        *heard.0.lock().unwrap(),
        vec![(g1.key(), TokenEnd::Revoked)]
    );
    assert_eq!(
        a.check_login_token(&t1.token, None, Protocol::Mqtt)
            .unwrap_err(),
        TokenError::Revoked
    );
    assert!(!a.revoke_token(&t1.token).unwrap(), "already revoked");
    assert!(a.revoke_token(&t2.id).unwrap());
    assert!(a.list_tokens().is_empty());
    assert!(!a.revoke_token("0000000000000000").unwrap());
}

#[test]
fn sweeper_expires_and_tells_sessions() {
    let (a, _d) = core_with_alice(&Config::default());
    let heard = listen(&a);
    let t = a
        .issue_token(&alice(), Scopes::sasl_auth(), Some(5), None)
        .unwrap();
    let keep = a
        .issue_token(&alice(), Scopes::sasl_auth(), Some(500), None)
        .unwrap();
    let g = a.check_login_token(&t.token, None, Protocol::Mqtt).unwrap();
    assert_eq!(a.sweep_expired(t.expires_at - 1), 0);
    assert_eq!(g.end(), None);
    assert!(heard.0.lock().unwrap().is_empty());
    assert_eq!(a.sweep_expired(t.expires_at), 1);
    assert_eq!(g.end(), Some(TokenEnd::Expired));
    assert_eq!(*heard.0.lock().unwrap(), vec![(g.key(), TokenEnd::Expired)]);
    assert_eq!(
        a.check_login_token(&t.token, None, Protocol::Mqtt)
            .unwrap_err(),
        TokenError::Unknown
    );
    assert!(a
        .check_login_token(&keep.token, None, Protocol::Mqtt)
        .is_ok());
    assert_eq!(a.store.len_blocking(Tree::Tokens).unwrap(), 1);
    assert_eq!(a.store.len_blocking(Tree::TokenExpiry).unwrap(), 1);
}

#[test]
fn tokens_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let token;
    {
        let store = Store::open(&StoreKind::Sled, dir.path()).unwrap();
        let a = AuthCore::new(store, &Config::default()).unwrap();
        a.register(&alice(), "pw").unwrap();
        token = a
            .issue_token(&alice(), Scopes::sasl_auth(), None, None)
            .unwrap()
            .token;
    }
    let store = Store::open(&StoreKind::Sled, dir.path()).unwrap();
    let a = AuthCore::new(store, &Config::default()).unwrap();
    assert!(a.check_login_token(&token, None, Protocol::Mqtt).is_ok());
}

#[test]
fn unregister_revokes_the_accounts_tokens() {
    let (a, _d) = core(&Config::default());
    a.register(&alice(), "pw").unwrap();
    let t = a
        .issue_token(&alice(), Scopes::sasl_auth(), None, None)
        .unwrap();
    a.unregister(&alice()).unwrap();
    assert_eq!(
        a.check_login_token(&t.token, None, Protocol::Mqtt)
            .unwrap_err(),
        TokenError::Revoked
    );
}
