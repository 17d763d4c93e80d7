//! Several Petrel nodes as one service (issue 17, first part): they share
//! the PostgreSQL store (`store = "postgres://…"`) and tell each other,
//! over NATS (`[cluster]`), what a node keeps in memory and the others must
//! learn: a token revoked or an account changed ends the sessions holding
//! it on every node. A token issued on one node is found by the others in
//! the shared store the first time it is presented (see
//! `AuthCore::login_async`).
//!
//! Subjects: `petrel.auth.revoked` (a token's key), `petrel.auth.account`
//! (a bare JID), each message JSON with the sending node's name; a node
//! ignores its own. Core NATS: at most once, in order per sender — what a
//! node misses while its connection is down it cannot learn afterwards,
//! which is logged.

pub mod xmpp;

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthCore, AuthEvents, BareJid, TokenEnd};

const REVOKED: &str = "petrel.auth.revoked";
const ACCOUNT: &str = "petrel.auth.account";

/// The `[cluster]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server (`nats://host:port`).
    pub nats: String,
    /// This node's name, unique in the cluster.
    pub node: String,
}

impl ClusterConfig {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.nats.starts_with("nats://") || self.nats.starts_with("tls://")) {
            return Err(("nats", "must be a nats:// or tls:// URL".into()));
        }
        if self.node.is_empty()
            || self.node.len() > 64
            || !self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(("node", "must be 1 to 64 of a-z, 0-9, '-', '_'".into()));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Note {
    node: String,
    #[serde(default)]
    key: u64,
    #[serde(default)]
    account: String,
}

/// This node's link to the others. As the auth core's [`AuthEvents`], it
/// passes each event to this node's registry and, for those the other
/// nodes must hear, to them.
pub struct Cluster {
    client: async_nats::Client,
    node: String,
    local: Arc<dyn AuthEvents>,
    rt: tokio::runtime::Handle,
    /// The XMPP part (`xmpp.rs`), once started.
    xmpp: OnceLock<Arc<xmpp::XmppCluster>>,
}

impl Cluster {
    /// Connects to NATS (waits for it: a node that cannot reach the others
    /// does not start).
    pub async fn connect(
        config: &ClusterConfig,
        local: Arc<dyn AuthEvents>,
    ) -> Result<Arc<Cluster>, String> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("petrel-{}", config.node))
            .connect(config.nats.as_str())
            .await
            .map_err(|e| format!("NATS at {}: {e}", config.nats))?;
        Ok(Arc::new(Cluster {
            client,
            node: config.node.clone(),
            local,
            rt: tokio::runtime::Handle::current(),
            xmpp: OnceLock::new(),
        }))
    }

    /// The XMPP part, once [`Cluster::start_xmpp`] ran.
    pub fn xmpp(&self) -> Option<&Arc<xmpp::XmppCluster>> {
        self.xmpp.get()
    }

    fn tell(&self, subject: &'static str, note: Note) {
        let client = self.client.clone();
        let body = serde_json::to_vec(&note).expect("plain data");
        self.rt.spawn(async move {
            if let Err(e) = client.publish(subject, body.into()).await {
                tracing::error!(error = %e, subject, "cluster: could not tell the other nodes");
            }
        });
    }

    /// Listens to the other nodes until `shutdown`; subscribed before it
    /// returns, so nothing told after that is missed.
    pub async fn listen(
        self: &Arc<Self>,
        auth: Arc<AuthCore>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        use futures_util::StreamExt;
        let mut sub = self
            .client
            .subscribe("petrel.auth.>")
            .await
            .map_err(|e| format!("NATS subscribe: {e}"))?;
        // The subscription is in force once the server has seen it.
        self.client
            .flush()
            .await
            .map_err(|e| format!("NATS flush: {e}"))?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = sub.next() => match m {
                        Some(m) => m,
                        None => {
                            tracing::error!("cluster: the NATS subscription ended");
                            return;
                        }
                    },
                };
                let Ok(note) = serde_json::from_slice::<Note>(&msg.payload) else {
                    tracing::warn!(subject = %msg.subject, "cluster: unreadable note");
                    continue;
                };
                if note.node == me.node {
                    continue;
                }
                match msg.subject.as_str() {
                    REVOKED => {
                        auth.token_revoked_elsewhere(note.key);
                        me.local.token_ended(note.key, TokenEnd::Revoked);
                    }
                    ACCOUNT => {
                        if let Ok(a) = BareJid::parse(&note.account) {
                            auth.account_changed_elsewhere(&a);
                            me.local.account_changed(&a);
                        }
                    }
                    _ => {}
                }
            }
        }))
    }
}

impl AuthEvents for Cluster {
    fn token_ended(&self, key: u64, end: TokenEnd) {
        self.local.token_ended(key, end);
        // Every node sees an expiry come by itself; a revocation it must
        // be told.
        if end == TokenEnd::Revoked {
            self.tell(
                REVOKED,
                Note {
                    node: self.node.clone(),
                    key,
                    account: String::new(),
                },
            );
        }
    }

    fn account_changed(&self, account: &BareJid) {
        self.local.account_changed(account);
        self.tell(
            ACCOUNT,
            Note {
                node: self.node.clone(),
                key: 0,
                account: account.to_string(),
            },
        );
    }
}
