//! Accounts: bare JID -> SCRAM keys. Passwords are never stored.

use super::scram::{ScramHash, ScramKeys};
use super::{now, random_bytes, AuthCore, AuthError, BareJid, SCRAM_ITERATIONS};
use crate::store::records::{self, StoredScram, UserRecord};
use crate::store::Tree;

pub(crate) fn to_stored(k: ScramKeys) -> StoredScram {
    StoredScram {
        salt: k.salt,
        iterations: k.iterations,
        stored_key: k.stored_key,
        server_key: k.server_key,
    }
}

pub(crate) fn from_stored(s: &StoredScram) -> ScramKeys {
    ScramKeys {
        salt: s.salt.clone(),
        iterations: s.iterations,
        stored_key: s.stored_key.clone(),
        server_key: s.server_key.clone(),
    }
}

/// Both hashes' keys for a new password, each with its own salt.
pub(crate) fn derive_pair(password: &str) -> (StoredScram, StoredScram) {
    let sha1 = ScramKeys::derive(
        ScramHash::Sha1,
        password,
        &random_bytes::<16>(),
        SCRAM_ITERATIONS,
    );
    let sha256 = ScramKeys::derive(
        ScramHash::Sha256,
        password,
        &random_bytes::<16>(),
        SCRAM_ITERATIONS,
    );
    (to_stored(sha1), to_stored(sha256))
}

impl AuthCore {
    /// `register USER HOST PASSWORD`: creates an account, durable on return.
    pub fn register(&self, jid: &BareJid, password: &str) -> Result<(), AuthError> {
        self.check_host(jid)?;
        if password.is_empty() {
            return Err(AuthError::EmptyPassword);
        }
        let key = jid.to_string();
        if self
            .store
            .get_blocking(Tree::Users, key.as_bytes())?
            .is_some()
        {
            return Err(AuthError::UserExists(key));
        }
        if let Some(client) = self.client_named(jid, None)? {
            return Err(AuthError::NameHeldByClient { jid: key, client });
        }
        let (scram_sha1, scram_sha256) = self.hash(|| derive_pair(password));
        let rec = UserRecord {
            scram_sha1,
            scram_sha256,
            created_at: now(),
        };
        self.store.put(Tree::Users, key, records::encode(&rec));
        self.store.barrier_blocking()?;
        // However the name was free (a client removed, its id's case, the
        // hosts reordered): a service's tokens never act as this account.
        self.revoke_principal(jid);
        self.store.barrier_blocking()?;
        Ok(())
    }

    /// `unregister USER HOST`: removes the account, its roster and offline
    /// messages, and revokes its tokens.
    pub fn unregister(&self, jid: &BareJid) -> Result<(), AuthError> {
        let key = jid.to_string();
        if self
            .store
            .take_blocking(Tree::Users, key.as_bytes())?
            .is_none()
        {
            return Err(AuthError::NoSuchUser(key));
        }
        self.revoke_owner(jid)?;
        // What the account kept goes with it (as ejabberd's unregister
        // does): a later account of the same name inherits no roster and
        // no offline messages, block list, archive, vCard, private data or
        // PEP nodes.
        let mut prefix = key.clone().into_bytes();
        prefix.push(0);
        for tree in [
            Tree::Roster,
            Tree::Offline,
            Tree::Blocklist,
            Tree::Archive,
            Tree::AccountXml,
            Tree::Pep,
        ] {
            for (k, _) in self.store.scan_prefix_blocking(tree, &prefix)? {
                self.store.delete(tree, k);
            }
        }
        self.store.delete(Tree::MamPrefs, key.as_bytes().to_vec());
        self.store.barrier_blocking()?;
        // Sessions that logged in with the password end too.
        self.announce_account_change(jid);
        Ok(())
    }

    /// `change_password USER HOST NEWPASS`.
    pub fn change_password(&self, jid: &BareJid, password: &str) -> Result<(), AuthError> {
        if password.is_empty() {
            return Err(AuthError::EmptyPassword);
        }
        let key = jid.to_string();
        let Some(old) = self.user(jid)? else {
            return Err(AuthError::NoSuchUser(key));
        };
        let (scram_sha1, scram_sha256) = self.hash(|| derive_pair(password));
        let rec = UserRecord {
            scram_sha1,
            scram_sha256,
            created_at: old.created_at,
        };
        // A new password ends what the old one (and its tokens) opened.
        self.revoke_owner(jid)?;
        self.store.put(Tree::Users, key, records::encode(&rec));
        self.store.barrier_blocking()?;
        self.announce_account_change(jid);
        Ok(())
    }

    pub fn user(&self, jid: &BareJid) -> Result<Option<UserRecord>, AuthError> {
        match self
            .store
            .get_blocking(Tree::Users, jid.to_string().as_bytes())?
        {
            Some(v) => Ok(Some(records::decode("users", &v)?)),
            None => Ok(None),
        }
    }

    pub fn user_exists(&self, jid: &BareJid) -> Result<bool, AuthError> {
        Ok(self
            .store
            .get_blocking(Tree::Users, jid.to_string().as_bytes())?
            .is_some())
    }

    /// [`AuthCore::user_exists`] for async callers.
    pub async fn has_account(&self, jid: &BareJid) -> Result<bool, AuthError> {
        Ok(self
            .store
            .get(Tree::Users, jid.to_string().as_bytes())
            .await?
            .is_some())
    }

    /// Checks a plaintext password (PLAIN, MQTT password, OAuth password grant).
    /// An unknown user costs the same derivation as a known one, so timing does
    /// not reveal which accounts exist.
    /// Not throttled: callers facing clients use
    /// [`AuthCore::check_password_from`] or the login decision.
    pub fn check_password(&self, jid: &BareJid, password: &str) -> Result<(), AuthError> {
        let keys = match self.user(jid)? {
            Some(u) => Some(from_stored(&u.scram_sha256)),
            None => None,
        };
        let ok = self.hash(|| match &keys {
            Some(k) => k.verify_password(ScramHash::Sha256, password),
            None => {
                let fake = self.fake_scram(ScramHash::Sha256, &jid.to_string());
                let _ = fake.verify_password(ScramHash::Sha256, password);
                false
            }
        });
        if ok {
            Ok(())
        } else {
            Err(AuthError::BadPassword)
        }
    }

    /// [`AuthCore::check_password`] for a client at `peer` (the OAuth
    /// password grant and sign-in page): refused without hashing while the
    /// address or the account is throttled; every result counted.
    pub fn check_password_from(
        &self,
        peer: Option<std::net::IpAddr>,
        jid: &BareJid,
        password: &str,
    ) -> Result<(), AuthError> {
        let ticket = self
            .begin_check(peer, Some(&jid.to_string()))
            .map_err(AuthError::Throttled)?;
        let r = self.check_password(jid, password);
        match &r {
            Ok(()) => ticket.succeeded(),
            Err(AuthError::BadPassword) => ticket.failed(),
            Err(_) => drop(ticket),
        }
        r
    }

    /// The stored SCRAM keys of a user for one hash, for the SASL SCRAM exchange.
    pub fn scram_keys(
        &self,
        jid: &BareJid,
        hash: ScramHash,
    ) -> Result<Option<ScramKeys>, AuthError> {
        Ok(self.user(jid)?.map(|u| match hash {
            ScramHash::Sha1 => from_stored(&u.scram_sha1),
            ScramHash::Sha256 => from_stored(&u.scram_sha256),
        }))
    }

    /// Keys that look real for a name that has no account: a salt fixed per name
    /// (so repeated tries see the same salt) and keys nobody can match.
    pub fn fake_scram(&self, hash: ScramHash, name: &str) -> ScramKeys {
        ScramKeys::fake_for(hash, name, &self.server_key, SCRAM_ITERATIONS)
    }

    /// `registered_users HOST`, sorted.
    pub fn registered_users(&self, host: &str) -> Result<Vec<String>, AuthError> {
        let suffix = format!("@{}", host.to_lowercase());
        let mut out: Vec<String> = self
            .store
            .scan_prefix_blocking(Tree::Users, b"")?
            .into_iter()
            .filter_map(|(k, _)| String::from_utf8(k).ok())
            .filter(|k| k.ends_with(&suffix))
            .filter_map(|k| k.strip_suffix(&suffix).map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::core;
    use super::*;
    use crate::config::Config;

    /// Unregistering takes the account's roster, offline messages and block
    /// list with it, and nobody else's.
    #[test]
    fn unregister_removes_what_the_account_kept() {
        let (a, _d) = core(&Config::default());
        let j = BareJid::parse("alice@localhost").unwrap();
        a.register(&j, "pw").unwrap();
        let st = a.store().clone();
        st.put(
            Tree::Roster,
            b"alice@localhost\0bob@localhost".to_vec(),
            b"r".to_vec(),
        );
        st.put(
            Tree::Offline,
            b"alice@localhost\0\x01\x02".to_vec(),
            b"m".to_vec(),
        );
        st.put(
            Tree::Roster,
            b"bob@localhost\0alice@localhost".to_vec(),
            b"r".to_vec(),
        );
        st.put(
            Tree::Blocklist,
            b"alice@localhost\0mallory@localhost".to_vec(),
            Vec::new(),
        );
        st.put(
            Tree::Offline,
            b"alice@localhost.org\0\x01".to_vec(),
            b"m".to_vec(),
        );
        a.unregister(&j).unwrap();
        let keys = |t| {
            st.scan_prefix_blocking(t, b"")
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(Tree::Roster),
            vec![b"bob@localhost\0alice@localhost".to_vec()]
        );
        assert!(keys(Tree::Blocklist).is_empty());
        assert_eq!(
            keys(Tree::Offline),
            vec![b"alice@localhost.org\0\x01".to_vec()]
        );
    }

    #[test]
    fn register_check_change_unregister() {
        let (a, _d) = core(&Config::default());
        let j = BareJid::parse("alice@localhost").unwrap();
        a.register(&j, "s3cret").unwrap();
        assert!(matches!(a.register(&j, "x"), Err(AuthError::UserExists(_))));
        a.check_password(&j, "s3cret").unwrap();
        assert!(matches!(
            a.check_password(&j, "wrong"),
            Err(AuthError::BadPassword)
        ));
        a.change_password(&j, "new").unwrap();
        assert!(a.check_password(&j, "s3cret").is_err());
        a.check_password(&j, "new").unwrap();
        assert_eq!(a.registered_users("localhost").unwrap(), vec!["alice"]);
        a.unregister(&j).unwrap();
        assert!(matches!(
            a.check_password(&j, "new"),
            Err(AuthError::BadPassword)
        ));
        assert!(matches!(a.unregister(&j), Err(AuthError::NoSuchUser(_))));
    }

    #[test]
    fn stores_no_plaintext_and_refuses_foreign_hosts() {
        let (a, _d) = core(&Config::default());
        let j = BareJid::parse("bob@localhost").unwrap();
        a.register(&j, "plaintext-marker").unwrap();
        let raw = a
            .store
            .get_blocking(Tree::Users, b"bob@localhost")
            .unwrap()
            .unwrap();
        assert!(!raw.windows(16).any(|w| w == b"plaintext-marker"));
        let u = a.user(&j).unwrap().unwrap();
        assert_eq!(u.scram_sha256.iterations, SCRAM_ITERATIONS);
        assert_ne!(u.scram_sha1.salt, u.scram_sha256.salt);
        let other = BareJid::parse("bob@elsewhere.org").unwrap();
        assert!(matches!(
            a.register(&other, "x"),
            Err(AuthError::UnknownHost(_))
        ));
        assert!(matches!(
            a.register(&BareJid::parse("c@localhost").unwrap(), ""),
            Err(AuthError::EmptyPassword)
        ));
    }

    #[test]
    fn fake_keys_are_stable_per_name() {
        let (a, _d) = core(&Config::default());
        assert_eq!(
            a.fake_scram(ScramHash::Sha256, "x@y").salt,
            a.fake_scram(ScramHash::Sha256, "x@y").salt
        );
        assert_ne!(
            a.fake_scram(ScramHash::Sha256, "x@y").salt,
            a.fake_scram(ScramHash::Sha256, "z@y").salt
        );
    }
}
