//! OAuth clients: id -> name, grant type, redirect URI and a hashed secret.

use super::scram::{ScramHash, ScramKeys};
use super::users::{from_stored, to_stored};
use super::{random_bytes, AuthCore, AuthError, BareJid, SCRAM_ITERATIONS};
use crate::store::records::{self, ClientGrant, ClientRecord};
use crate::store::Tree;

/// Whether clients of this kind may use the client credentials grant
/// (those with a secret to authenticate by: RFC 6749 §4.4).
pub fn has_principal(kind: ClientGrant) -> bool {
    matches!(kind, ClientGrant::Password | ClientGrant::Confidential)
}

fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.chars().all(|c| c.is_ascii_graphic())
}

/// An absolute http(s) URI with no fragment (RFC 6749 §3.1.2).
fn valid_redirect_uri(uri: &str) -> bool {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"));
    match rest {
        Some(r) => {
            !r.is_empty()
                && !r.starts_with('/')
                && !uri.contains('#')
                && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

impl AuthCore {
    /// `oauth_add_client_password CLIENT_ID CLIENT_NAME SECRET` (replaces an existing one).
    pub fn add_password_client(&self, id: &str, name: &str, secret: &str) -> Result<(), AuthError> {
        self.put_client(id, name, ClientGrant::Password, None, Some(secret))
    }

    /// `oauth_add_client_implicit CLIENT_ID CLIENT_NAME REDIRECT_URI`.
    pub fn add_implicit_client(
        &self,
        id: &str,
        name: &str,
        redirect_uri: &str,
    ) -> Result<(), AuthError> {
        self.put_client(id, name, ClientGrant::Implicit, Some(redirect_uri), None)
    }

    /// `oauth_add_client_public CLIENT_ID CLIENT_NAME REDIRECT_URI`: an app
    /// that cannot keep a secret (mobile, browser, device): authorization
    /// code with PKCE, the device grant, refresh tokens.
    pub fn add_public_client(
        &self,
        id: &str,
        name: &str,
        redirect_uri: &str,
    ) -> Result<(), AuthError> {
        self.put_client(id, name, ClientGrant::Public, Some(redirect_uri), None)
    }

    /// `oauth_add_client_confidential CLIENT_ID CLIENT_NAME SECRET
    /// REDIRECT_URI`: a server-side app: authorization code (PKCE if it
    /// starts with it), refresh tokens.
    pub fn add_confidential_client(
        &self,
        id: &str,
        name: &str,
        secret: &str,
        redirect_uri: &str,
    ) -> Result<(), AuthError> {
        self.put_client(
            id,
            name,
            ClientGrant::Confidential,
            Some(redirect_uri),
            Some(secret),
        )
    }

    fn put_client(
        &self,
        id: &str,
        name: &str,
        grant: ClientGrant,
        redirect_uri: Option<&str>,
        secret: Option<&str>,
    ) -> Result<(), AuthError> {
        if !valid_client_id(id) {
            return Err(AuthError::BadClientId);
        }
        if redirect_uri.is_some_and(|u| !valid_redirect_uri(u)) {
            return Err(AuthError::BadRedirectUri);
        }
        if secret == Some("") {
            return Err(AuthError::EmptyPassword);
        }
        // Two clients never share one principal (one MQTT identity).
        if has_principal(grant) {
            if let Ok(principal) = self.service_principal(id) {
                if let Some(other) = self.client_named(&principal, Some(id))? {
                    return Err(AuthError::NameHeldByClient {
                        jid: principal.to_string(),
                        client: other,
                    });
                }
            }
        }
        let secret = secret.map(|secret| {
            to_stored(self.hash(|| {
                ScramKeys::derive(
                    ScramHash::Sha256,
                    secret,
                    &random_bytes::<16>(),
                    SCRAM_ITERATIONS,
                )
            }))
        });
        let rec = ClientRecord {
            name: name.to_string(),
            grant,
            redirect_uri: redirect_uri.map(str::to_string),
            secret,
        };
        self.store.put(Tree::Clients, id, records::encode(&rec));
        self.store.barrier_blocking()?;
        // A client registered again starts afresh: what its own principal
        // was given before goes (its kind or name may have changed).
        self.revoke_client_tokens(id, true);
        self.removed_clients.remove(id);
        Ok(())
    }

    /// `oauth_remove_client CLIENT_ID`: the client and every token issued
    /// to it (live sessions holding one end).
    pub fn remove_client(&self, id: &str) -> Result<(), AuthError> {
        // Marked first: a grant that authenticated before the deletion and
        // issues after the sweep below sees the mark ([`Self::issue`]).
        self.removed_clients.insert(id.to_string(), ());
        if self
            .store
            .take_blocking(Tree::Clients, id.as_bytes())?
            .is_none()
        {
            return Err(AuthError::NoSuchClient(id.to_string()));
        }
        self.revoke_client_tokens(id, false);
        self.store.barrier_blocking()?;
        Ok(())
    }

    /// Whether client `id` was removed (and not added again).
    pub(super) fn client_removed(&self, id: &str) -> bool {
        self.removed_clients.contains_key(id)
    }

    /// The principal of client `id`'s own tokens (the client credentials
    /// grant, RFC 6749 §4.4): the client itself, named as a JID so that
    /// MQTT places it in a domain — the client id when it is a JID of a
    /// hosted domain (`backend@example.org`), else `<client id>@<first
    /// host>`. It is no account: it has no password, roster or XMPP login.
    pub fn service_principal(&self, id: &str) -> Result<BareJid, AuthError> {
        let jid = if id.contains('@') {
            BareJid::parse(id)
        } else {
            BareJid::new(id, &self.hosts()[0])
        }
        .map_err(|_| AuthError::NoServiceName(id.to_string()))?;
        self.check_host(&jid)
            .map_err(|_| AuthError::NoServiceName(id.to_string()))?;
        Ok(jid)
    }

    /// The client, able to use client credentials, whose principal is
    /// `jid` (an account may not take that name), other than `except`.
    pub(super) fn client_named(
        &self,
        jid: &BareJid,
        except: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        // Every client's principal is compared (client ids fold case and
        // may be JIDs): a scan of a small tree, at registrations only.
        for (id, rec) in self.clients()? {
            if Some(id.as_str()) != except
                && has_principal(rec.grant)
                && self.service_principal(&id).ok().as_ref() == Some(jid)
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub fn client(&self, id: &str) -> Result<Option<ClientRecord>, AuthError> {
        match self.store.get_blocking(Tree::Clients, id.as_bytes())? {
            Some(v) => Ok(Some(records::decode("clients", &v)?)),
            None => Ok(None),
        }
    }

    /// Checks a client's secret, from a client at `peer`. `Ok(None)` means
    /// unknown client or wrong secret (indistinguishable to the caller, and
    /// equally slow). Throttled like a password: refused without hashing
    /// while the address or the client id is blocked.
    pub fn authenticate_client(
        &self,
        peer: Option<std::net::IpAddr>,
        id: &str,
        secret: &str,
    ) -> Result<Option<ClientRecord>, AuthError> {
        let ticket = self
            .begin_check(peer, Some(&format!("client:{id}")))
            .map_err(AuthError::Throttled)?;
        let rec = self.client(id)?;
        let keys = match rec.as_ref().and_then(|r| r.secret.as_ref()) {
            Some(s) => from_stored(s),
            None => self.fake_scram(ScramHash::Sha256, id),
        };
        let ok = self.hash(|| keys.verify_password(ScramHash::Sha256, secret));
        Ok(match rec {
            Some(r) if ok && r.secret.is_some() => {
                ticket.succeeded();
                Some(r)
            }
            _ => {
                ticket.failed();
                None
            }
        })
    }

    /// Every client id with its record, in id order.
    pub fn clients(&self) -> Result<Vec<(String, ClientRecord)>, AuthError> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix_blocking(Tree::Clients, b"")? {
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                records::decode("clients", &v)?,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::core;
    use super::*;
    use crate::config::Config;

    #[test]
    fn password_clients_authenticate_by_secret() {
        let (a, _d) = core(&Config::default());
        a.add_password_client("app", "My App", "sekrit").unwrap();
        assert!(a
            .authenticate_client(None, "app", "sekrit")
            .unwrap()
            .is_some());
        assert!(a
            .authenticate_client(None, "app", "nope")
            .unwrap()
            .is_none());
        assert!(a
            .authenticate_client(None, "ghost", "sekrit")
            .unwrap()
            .is_none());
        let raw = a
            .store
            .get_blocking(Tree::Clients, b"app")
            .unwrap()
            .unwrap();
        assert!(!raw.windows(6).any(|w| w == b"sekrit"));
        a.remove_client("app").unwrap();
        assert!(a
            .authenticate_client(None, "app", "sekrit")
            .unwrap()
            .is_none());
        assert!(matches!(
            a.remove_client("app"),
            Err(AuthError::NoSuchClient(_))
        ));
    }

    #[test]
    fn implicit_clients_need_a_proper_redirect_uri() {
        let (a, _d) = core(&Config::default());
        a.add_implicit_client("web", "Web", "https://app.example/cb")
            .unwrap();
        assert_eq!(
            a.client("web").unwrap().unwrap().redirect_uri.as_deref(),
            Some("https://app.example/cb")
        );
        assert!(
            a.authenticate_client(None, "web", "").unwrap().is_none(),
            "implicit clients have no secret"
        );
        for bad in [
            "ftp://x/cb",
            "https://x/cb#frag",
            "cb",
            "https:///x",
            "https://a b",
        ] {
            assert!(
                matches!(
                    a.add_implicit_client("w2", "W", bad),
                    Err(AuthError::BadRedirectUri)
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            a.add_password_client("has space", "n", "s"),
            Err(AuthError::BadClientId)
        ));
    }

    /// A client's own principal: named by the client id, never an
    /// account's name, logging in over MQTT only; removing the client
    /// ends its tokens.
    #[test]
    fn client_credentials_principals() {
        use crate::auth::{Credential, LoginRequest, LoginStep, Protocol, Scopes, TokenSpec};
        use crate::store::records::TokenGrant;
        let config = Config {
            hosts: vec!["example.org".into(), "other.org".into()],
            ..Config::default()
        };
        let (a, _d) = core(&config);
        a.add_confidential_client("backend", "Backend", "s3", "https://b.example/cb")
            .unwrap();
        a.add_password_client("bot@other.org", "Bot", "s4").unwrap();
        a.add_public_client("app", "App", "https://a.example/cb")
            .unwrap();
        let backend = a.service_principal("backend").unwrap();
        assert_eq!(backend.to_string(), "backend@example.org");
        assert_eq!(
            a.service_principal("bot@other.org").unwrap().to_string(),
            "bot@other.org"
        );
        assert!(matches!(
            a.service_principal("x@elsewhere.net"),
            Err(AuthError::NoServiceName(_))
        ));
        assert!(matches!(
            a.service_principal("a:b"),
            Err(AuthError::NoServiceName(_))
        ));
        // No account may take a principal's name; a public client has none.
        for name in ["backend@example.org", "bot@other.org"] {
            assert!(matches!(
                a.register(&BareJid::parse(name).unwrap(), "pw"),
                Err(AuthError::NameHeldByClient { .. })
            ));
        }
        a.register(&BareJid::parse("backend@other.org").unwrap(), "pw")
            .unwrap();
        a.register(&BareJid::parse("app@example.org").unwrap(), "pw")
            .unwrap();
        let issue = |owner: &BareJid, scopes: &str, client: &str| {
            a.issue(TokenSpec::access(
                owner,
                Scopes::parse(scopes).unwrap(),
                None,
                Some(client),
                TokenGrant::ClientCredentials,
            ))
        };
        // An account of the principal's name (made before the client was).
        a.add_password_client("app@example.org", "Taken", "s5")
            .unwrap();
        assert!(matches!(
            issue(
                &BareJid::parse("app@example.org").unwrap(),
                "sasl_auth",
                "app@example.org"
            ),
            Err(AuthError::ServiceNameTaken(_))
        ));
        let t = issue(&backend, "sasl_auth", "backend").unwrap();
        let login = |protocol| match a.login(LoginRequest {
            claimed: None,
            credential: Credential::Token(t.token.clone()),
            peer: None,
            protocol,
        }) {
            LoginStep::Done(r) => r,
            LoginStep::CheckPassword(_) => panic!("a token is no password"),
        };
        assert_eq!(login(Protocol::Mqtt).unwrap().account, backend);
        assert_eq!(
            login(Protocol::Xmpp).unwrap_err(),
            crate::auth::LoginError::Token(crate::auth::TokenError::ServicePrincipal)
        );
        a.remove_client("backend").unwrap();
        assert_eq!(
            login(Protocol::Mqtt).unwrap_err(),
            crate::auth::LoginError::Token(crate::auth::TokenError::Revoked),
            "a removed client's tokens end"
        );
        assert!(
            matches!(
                issue(&backend, "mqtt", "backend"),
                Err(AuthError::NoSuchClient(_))
            ),
            "a grant that authenticated before the removal gets nothing"
        );

        // Client ids fold case like JIDs: one principal, one holder.
        a.add_confidential_client("Svc", "Svc", "s6", "https://b.example/cb")
            .unwrap();
        assert!(matches!(
            a.register(&BareJid::parse("svc@example.org").unwrap(), "pw"),
            Err(AuthError::NameHeldByClient { .. })
        ));
        assert!(matches!(
            a.add_password_client("svc@example.org", "Svc 2", "s7"),
            Err(AuthError::NameHeldByClient { .. })
        ));
        a.add_confidential_client("Svc", "Svc again", "s8", "https://b.example/cb")
            .expect("the same client may be registered again");
        // Registered again as a client without a principal: its own tokens end.
        let svc = a.service_principal("Svc").unwrap();
        let t = issue(&svc, "mqtt", "Svc").unwrap();
        a.add_public_client("Svc", "Svc", "https://b.example/cb")
            .unwrap();
        assert!(a.check_login_token(&t.token, None, Protocol::Mqtt).is_err());
        // An account created where a principal's tokens live (the name
        // freed some other way: hosts reordered) ends those tokens.
        let free = BareJid::parse("free@example.org").unwrap();
        let t = issue(&free, "mqtt", "gone").unwrap();
        a.register(&free, "pw").unwrap();
        assert_eq!(
            a.check_login_token(&t.token, None, Protocol::Mqtt)
                .unwrap_err(),
            crate::auth::TokenError::Revoked
        );
    }
}
