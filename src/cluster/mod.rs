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
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::{AuthCore, AuthEvents, BareJid, TokenEnd};
use crate::mqtt::broker::Broker;

pub mod members;
pub mod mqtt;

use members::{Heard, Members};
use mqtt::MqttPeers;

const REVOKED: &str = "petrel.auth.revoked";
const ACCOUNT: &str = "petrel.auth.account";
const HEARTBEAT: &str = "petrel.hb";
const ADOPTED: &str = "petrel.cluster.adopted";
/// The most a heartbeat says of shared subscriptions.
const MAX_SHARED_BYTES: usize = 256 * 1024;

/// The `[cluster]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server (`nats://host:port`).
    pub nats: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// How often this node says it is alive.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Silence after which a node counts as dead.
    #[serde(default = "default_dead_after")]
    pub dead_after_ms: u64,
    /// The longest wait for the other nodes to take a message or answer a
    /// session claim.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// Messages from NATS one subscription may hold while this node is
    /// busy; past it the NATS client drops them (counted in
    /// `petrel_messages_dropped_total{reason="cluster_receive_queue_full"}`
    /// and logged).
    #[serde(default = "default_receive_queue")]
    pub receive_queue: usize,
}

fn default_receive_queue() -> usize {
    65_536
}

fn default_heartbeat() -> u64 {
    500
}
fn default_dead_after() -> u64 {
    2000
}
fn default_ack_timeout() -> u64 {
    10_000
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
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err(("heartbeat_ms", "must be 10 to 60000".into()));
        }
        if self.dead_after_ms < 2 * self.heartbeat_ms {
            return Err((
                "dead_after_ms",
                "must be at least twice heartbeat_ms".into(),
            ));
        }
        if self.ack_timeout_ms < 100 {
            return Err(("ack_timeout_ms", "must be at least 100".into()));
        }
        if !(1024..=4_194_304).contains(&self.receive_queue) {
            return Err(("receive_queue", "must be 1024 to 4194304".into()));
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

#[derive(Serialize, Deserialize)]
struct Beat {
    node: String,
    epoch: u64,
    #[serde(default)]
    leaving: bool,
    /// The node's shared subscriptions (`domain NUL group NUL filter`).
    #[serde(default)]
    shared: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Adoption {
    dead: String,
    /// The dead node's epoch: the life whose sessions were adopted.
    epoch: u64,
    by: String,
}

/// This node's link to the others. As the auth core's [`AuthEvents`], it
/// passes each event to this node's registry and, for those the other
/// nodes must hear, to them.
pub struct Cluster {
    client: async_nats::Client,
    node: String,
    config: ClusterConfig,
    local: Arc<dyn AuthEvents>,
    rt: tokio::runtime::Handle,
    members: Arc<Members>,
    /// This life's number (a new one after being taken for dead).
    epoch: std::sync::atomic::AtomicU64,
    mqtt: OnceLock<Arc<MqttPeers>>,
    /// Cancelled by [`Cluster::leave`].
    stop: tokio_util::sync::CancellationToken,
    /// Said once: the shared subscriptions did not all fit a heartbeat.
    shared_cut: std::sync::atomic::AtomicBool,
    /// The XMPP part (`xmpp.rs`), once started.
    xmpp: OnceLock<Arc<xmpp::XmppCluster>>,
}

/// What the NATS client tells: a message dropped because a subscription's
/// queue was full is counted (and logged at most every 10 s); a lost or
/// regained connection is logged.
fn nats_event(event: async_nats::Event, last_warning: &std::sync::atomic::AtomicU64) {
    use std::sync::atomic::Ordering;
    match event {
        async_nats::Event::SlowConsumer(_) => {
            crate::metrics::metrics().dropped(crate::metrics::DropReason::ClusterReceiveQueueFull);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if now >= last_warning.load(Ordering::Relaxed) + 10 {
                last_warning.store(now, Ordering::Relaxed);
                tracing::warn!(
                    "cluster: messages from other nodes dropped: this node's receive queue \
                     ([cluster] receive_queue) is full; QoS 0 ones are lost, QoS 1/2 ones \
                     are answered 0x80 to their publishers after ack_timeout_ms \
                     (petrel_messages_dropped_total{{reason=\"cluster_receive_queue_full\"}})"
                );
            }
        }
        async_nats::Event::Disconnected => {
            tracing::warn!("cluster: the NATS connection was lost; reconnecting")
        }
        async_nats::Event::Connected => tracing::info!("cluster: connected to NATS"),
        other => tracing::warn!(event = %other, "cluster: NATS"),
    }
}

impl Cluster {
    /// Connects to NATS (waits for it: a node that cannot reach the others
    /// does not start).
    pub async fn connect(
        config: &ClusterConfig,
        local: Arc<dyn AuthEvents>,
    ) -> Result<Arc<Cluster>, String> {
        let last_warning = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let client = async_nats::ConnectOptions::new()
            .name(format!("petrel-{}", config.node))
            .subscription_capacity(config.receive_queue)
            .event_callback(move |event| {
                let last_warning = last_warning.clone();
                async move { nats_event(event, &last_warning) }
            })
            .connect(config.nats.as_str())
            .await
            .map_err(|e| format!("NATS at {}: {e}", config.nats))?;
        let epoch = u64::from_be_bytes(crate::session::random::<8>(&crate::session::OsEntropy));
        Ok(Arc::new(Cluster {
            client,
            node: config.node.clone(),
            config: config.clone(),
            local,
            rt: tokio::runtime::Handle::current(),
            members: Arc::new(Members::new(
                &config.node,
                Duration::from_millis(config.dead_after_ms),
            )),
            epoch: epoch.into(),
            mqtt: OnceLock::new(),
            stop: tokio_util::sync::CancellationToken::new(),
            shared_cut: Default::default(),
            xmpp: OnceLock::new(),
        }))
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn members(&self) -> &Arc<Members> {
        &self.members
    }

    /// `list_cluster`: this node, then each other one with its state and
    /// the shared subscriptions it has members of.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![format!("{} self", self.node)];
        for (n, st) in self.members.all() {
            let state = match st {
                members::State::Alive => "alive".to_string(),
                members::State::Dead => "dead".to_string(),
                members::State::Adopted(by) => format!("dead, sessions on {by}"),
            };
            let shared = self.mqtt.get().map_or(0, |p| p.shared_of(&n));
            out.push(format!("{n} {state} shared={shared}"));
        }
        out
    }

    /// Routes MQTT across the nodes: the broker forwards through this.
    pub fn attach_broker(&self, broker: &Arc<Broker>) {
        let peers = MqttPeers::new(
            self.client.clone(),
            &self.node,
            self.members.clone(),
            broker,
            Duration::from_millis(self.config.ack_timeout_ms),
        );
        let _ = broker.peers.set(peers.clone());
        let _ = self.mqtt.set(peers);
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

    async fn beat(&self, leaving: bool) {
        let mut shared = match self.mqtt.get().and_then(|p| p.broker()) {
            Some(b) if !leaving => b.shared_keys(),
            _ => Vec::new(),
        };
        // Within NATS's default message size (1 MB) whatever clients
        // subscribe: groups past the bound are not told, and their turns
        // are taken on every node that has members (each message then
        // reaches one member per such node).
        let mut bytes = 0;
        if let Some(cut) = shared.iter().position(|k| {
            bytes += k.len() + 8;
            bytes > MAX_SHARED_BYTES
        }) {
            shared.truncate(cut);
            if !self
                .shared_cut
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!("cluster: too many shared subscriptions to tell the other nodes; some groups may take a turn on each node");
            }
        }
        let b = Beat {
            node: self.node.clone(),
            epoch: self.epoch.load(std::sync::atomic::Ordering::Relaxed),
            leaving,
            shared,
        };
        let body = serde_json::to_vec(&b).expect("plain data");
        if let Err(e) = self.client.publish(HEARTBEAT, body.into()).await {
            tracing::warn!(error = %e, "cluster: heartbeat not sent");
        }
    }

    /// Tells the others this node leaves (its connections are closed and
    /// what they left is saved: its sessions may be adopted now), then
    /// stops listening.
    pub async fn leave(&self) {
        self.beat(true).await;
        let _ = self.client.flush().await;
        self.stop.cancel();
    }

    /// Listens to the other nodes until [`Cluster::leave`] (through a
    /// server's shutdown: the last connections' wills still go out to the
    /// others); subscribed before it returns, so nothing told after that
    /// is missed.
    pub async fn listen(
        self: &Arc<Self>,
        auth: Arc<AuthCore>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let shutdown = self.stop.clone();
        let sub = |s: String| {
            let c = self.client.clone();
            async move {
                c.subscribe(s)
                    .await
                    .map_err(|e| format!("NATS subscribe: {e}"))
            }
        };
        let mine = |what: &str| format!("petrel.node.{}.{what}", self.node);
        let auth_sub = sub("petrel.auth.>".into()).await?;
        let control = [
            sub(HEARTBEAT.into()).await?,
            sub(ADOPTED.into()).await?,
            sub(mine("claim")).await?,
            sub(mine("letgo")).await?,
        ];
        let publishes = [sub(mqtt::PUBLISH.into()).await?, sub(mine("mqtt")).await?];
        let acks = sub(mine("ack")).await?;
        // The subscriptions are in force once the server has seen them.
        self.client
            .flush()
            .await
            .map_err(|e| format!("NATS flush: {e}"))?;
        let mut tasks = vec![tokio::spawn(self.clone().auth_notes(
            auth_sub,
            auth,
            shutdown.clone(),
        ))];
        tasks.push(tokio::spawn(self.clone().control(
            futures_util::stream::select_all(control),
            shutdown.clone(),
        )));
        if let Some(peers) = self.mqtt.get().cloned() {
            let mut pubs = futures_util::stream::select_all(publishes);
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                loop {
                    let m = tokio::select! {
                        _ = sd.cancelled() => return,
                        m = pubs.next() => match m { Some(m) => m, None => return },
                    };
                    let _gate = peers.gate.lock().await;
                    peers.received(&m.payload, m.reply.map(|r| r.to_string()));
                }
            }));
            let peers = self.mqtt.get().cloned().expect("set above");
            let mut acks = acks;
            tasks.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                loop {
                    let m = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = acks.next() => match m { Some(m) => m, None => return },
                    };
                    peers.acked(&m.payload);
                }
            }));
        }
        // Said at once: the others learn of this node now, not a beat later.
        self.beat(false).await;
        // The wills of the connections this node's previous life had open.
        if let Some(broker) = self.mqtt.get().and_then(|p| p.broker()) {
            let node = self.node.clone();
            tasks.push(tokio::spawn(async move {
                broker.publish_orphaned(&node).await;
            }));
        }
        Ok(tasks)
    }

    async fn auth_notes(
        self: Arc<Self>,
        mut sub: async_nats::Subscriber,
        auth: Arc<AuthCore>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        use futures_util::StreamExt;
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
            if note.node == self.node {
                continue;
            }
            match msg.subject.as_str() {
                REVOKED => {
                    auth.token_revoked_elsewhere(note.key);
                    self.local.token_ended(note.key, TokenEnd::Revoked);
                }
                ACCOUNT => {
                    if let Ok(a) = BareJid::parse(&note.account) {
                        auth.account_changed_elsewhere(&a);
                        self.local.account_changed(&a);
                    }
                }
                _ => {}
            }
        }
    }

    /// Heartbeats (sent and heard), deaths, adoptions, session claims.
    async fn control(
        self: Arc<Self>,
        mut sub: futures_util::stream::SelectAll<async_nats::Subscriber>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        use futures_util::StreamExt;
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    self.beat(false).await;
                    for dead in self.members.sweep(Instant::now()) {
                        self.node_dead(&dead);
                    }
                    continue;
                }
                m = sub.next() => match m { Some(m) => m, None => return },
            };
            let subject = msg.subject.as_str();
            if subject == HEARTBEAT {
                let Ok(b) = serde_json::from_slice::<Beat>(&msg.payload) else {
                    continue;
                };
                if b.node == self.node {
                    continue;
                }
                if let (false, Some(p)) = (b.leaving, self.mqtt.get()) {
                    p.shared_heard(&b.node, &b.shared);
                }
                match self
                    .members
                    .heard(&b.node, b.epoch, b.leaving, Instant::now())
                {
                    Heard::Known => {}
                    Heard::Joined => {
                        tracing::info!(node = %b.node, "cluster: a node joined");
                        // The newcomer learns of this node now.
                        self.beat(false).await;
                    }
                    Heard::Left => self.node_dead(&b.node),
                }
            } else if subject == ADOPTED {
                let Ok(a) = serde_json::from_slice::<Adoption>(&msg.payload) else {
                    continue;
                };
                if a.by == self.node {
                    continue;
                }
                if a.dead == self.node {
                    if a.epoch == self.epoch.load(std::sync::atomic::Ordering::Relaxed) {
                        self.fence(&a.by);
                    }
                    continue;
                }
                match self.members.adopted(&a.dead, a.epoch, &a.by) {
                    // The adopter saw it die first: it is dead here too.
                    Some(Some(members::State::Alive)) => self.node_dead(&a.dead),
                    Some(_) => {
                        if let Some(p) = self.mqtt.get() {
                            p.node_adopted(&a.dead, &a.by);
                        }
                    }
                    None => {}
                }
            } else if subject.ends_with(".claim") {
                if let Some(p) = self.mqtt.get() {
                    p.claimed_here(&msg.payload, msg.reply.map(|r| r.to_string()));
                }
            } else if subject.ends_with(".letgo") {
                if let Some(p) = self.mqtt.get() {
                    p.let_go_here(&msg.payload, msg.reply.map(|r| r.to_string()));
                }
            }
        }
    }

    /// The others took this node for dead (it was silent too long: a
    /// stall, a network cut) and `by` adopted its persistent sessions: they
    /// are not this node's any more. Every MQTT session here is let go
    /// without touching the store (its connections are taken over, 0x8E;
    /// they reconnect and their sessions are claimed from wherever they
    /// are), and this node comes back as a new life.
    fn fence(&self, by: &str) {
        tracing::error!(adopter = %by, "cluster: this node was taken for dead and its sessions adopted; letting every MQTT session go");
        if let Some(b) = self.mqtt.get().and_then(|p| p.broker()) {
            b.forget_all_here();
        }
        let epoch = u64::from_be_bytes(crate::session::random::<8>(&crate::session::OsEntropy));
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// A node is found dead (silent, or it said it leaves): the others'
    /// parts forget it, and the adopter takes its persistent sessions.
    fn node_dead(self: &Arc<Self>, dead: &str) {
        tracing::warn!(node = %dead, "cluster: a node is gone");
        // Its XMPP resources are gone: contacts here see them unavailable.
        if let Some(x) = self.xmpp() {
            x.node_gone(dead);
        }
        let Some(peers) = self.mqtt.get().cloned() else {
            return;
        };
        peers.node_dead(dead);
        if self.members.state(dead) != Some(members::State::Dead)
            || self.members.adopter() != self.node
        {
            return;
        }
        let epoch = self.members.epoch(dead);
        let Some(broker) = peers.broker() else { return };
        let me = self.clone();
        let dead = dead.to_string();
        tokio::spawn(async move {
            let b = broker.clone();
            let d = dead.clone();
            // Forwarded messages wait: each reaches the adopted sessions
            // wholly through the resend or wholly as any other.
            let gate = peers.gate.lock().await;
            let ids = match tokio::task::spawn_blocking(move || b.adopt_sessions(&d)).await {
                Ok(Ok(ids)) => ids,
                other => {
                    tracing::error!(node = %dead, ?other, "cluster: could not adopt a dead node's sessions");
                    return;
                }
            };
            peers.adopted_here(&dead, ids.clone());
            drop(gate);
            if broker.store().barrier().await.is_err() {
                return;
            }
            tracing::info!(node = %dead, sessions = ids.len(), "cluster: adopted a dead node's sessions");
            if me.members.adopted(&dead, epoch, &me.node).is_none() {
                // It came back meanwhile: nothing waits on its adoption.
                return;
            }
            let body = serde_json::to_vec(&Adoption {
                dead: dead.clone(),
                epoch,
                by: me.node.clone(),
            })
            .expect("plain data");
            let _ = me.client.publish(ADOPTED, body.into()).await;
            peers.node_adopted(&dead, &me.node);
            // Its connections died with it: their wills go out now.
            broker.publish_orphaned(&dead).await;
        });
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
