//! Reloading a running server (`SIGHUP`, `petrel ctl reload`): the config
//! file is read again and what can change without a restart is swapped in
//! whole — the TLS certificate (new handshakes get it, open connections
//! keep their session), the MQTT access rules (checked from the next
//! packet on), the log level, and the per-connection limits (connections
//! made after the reload get them). A config that does not parse, or a
//! certificate that does not load, is refused with the reason and nothing
//! changes. Keys that only a restart applies (listeners, hosts, store, …)
//! are named in the answer when they changed.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::mqtt::broker::Broker;
use crate::mqtt::session::MqttSettings;
use crate::tls::Tls;
use crate::xmpp::stream::Limits;

/// Top-level config keys a reload applies; a change to any other key waits
/// for a restart.
pub const RELOADABLE: &[&str] = &[
    "certfiles",
    "log_level",
    "mqtt_acl",
    "mqtt_acl_default",
    "mqtt_allow_anonymous",
    "mqtt_max_packet_size",
    "mqtt_max_connect_size",
    "mqtt_max_filters_per_subscribe",
    "mqtt_max_subscriptions",
    "mqtt_max_topic_levels",
    "mqtt_max_topic_length",
    "mqtt_max_sessions_per_account",
    "mqtt_max_session_expiry",
    "mqtt_max_keepalive",
    "mqtt_max_retained",
    "mqtt_max_retained_bytes",
    "max_stanza_size",
    "xml_max_header_size",
    "xml_max_depth",
    "xml_max_attributes",
    "xml_max_children",
    "xml_max_elements",
    "xml_max_namespace_length",
];

/// What a reload swaps, and the file it reads.
pub struct Reloader {
    /// The config file (none: the embedded defaults, so only the
    /// certificate is read again).
    source: Option<PathBuf>,
    /// The file's keys as last applied, to name what waits for a restart.
    applied: Mutex<toml::Table>,
    tls: Option<Arc<Tls>>,
    broker: Arc<Broker>,
    pub(crate) mqtt: Arc<ArcSwap<MqttSettings>>,
    pub(crate) xml: Arc<ArcSwap<Limits>>,
    /// One reload at a time.
    busy: Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(config: &Config, tls: Option<Arc<Tls>>, broker: Arc<Broker>) -> Reloader {
        let applied = config
            .source
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.parse::<toml::Table>().ok())
            .unwrap_or_default();
        Reloader {
            source: config.source.clone(),
            applied: Mutex::new(applied),
            tls,
            broker,
            mqtt: Arc::new(ArcSwap::from_pointee(MqttSettings::from_config(config))),
            xml: Arc::new(ArcSwap::from_pointee(Limits::from_config(config))),
            busy: Mutex::new(()),
        }
    }

    /// Reads the config again and applies it; what was done, or why
    /// nothing was (the old config stays). Blocking: file reads.
    pub fn reload(&self) -> Result<String, String> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.source else {
            // The embedded defaults: nothing to read but the certificate.
            return match &self.tls {
                Some(t) => t
                    .reload()
                    .map(|files| format!("TLS certificate reloaded from {files}"))
                    .map_err(|e| format!("{e} (the old certificate stays)")),
                None => Ok("no config file and no TLS listener: nothing to reload".into()),
            };
        };
        let refused = |e: String| format!("{e}; reload refused, the old config stays");
        let text = std::fs::read_to_string(path)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        let mut config = Config::parse(&text).map_err(|e| refused(e.to_string()))?;
        config.source = Some(path.clone());
        let table: toml::Table = text.parse().map_err(|e| refused(format!("{e}")))?;
        // Everything is checked before anything is swapped.
        let cert = match &self.tls {
            Some(t) => Some(
                t.prepare(&config.certfiles)
                    .map_err(|e| refused(e.to_string()))?,
            ),
            None => None,
        };
        crate::logging::filter(&config.log_level).map_err(refused)?;

        let mut done = Vec::new();
        if let Some(p) = cert {
            done.push(format!("TLS certificate from {}", p.names));
            if let Some(t) = &self.tls {
                t.install(p);
            }
        }
        let rules = config.mqtt_acl.rule_count();
        self.broker.acl.store(Arc::new(config.mqtt_acl.clone()));
        done.push(format!("{rules} MQTT access rules"));
        match crate::logging::set_level(&config.log_level) {
            Ok(true) => done.push(format!("log level {}", config.log_level)),
            Ok(false) => done.push("log level left to RUST_LOG".into()),
            Err(e) => return Err(refused(e)),
        }
        self.broker
            .max_retained
            .store(config.mqtt_max_retained, Ordering::Relaxed);
        self.broker
            .max_retained_bytes
            .store(config.mqtt_max_retained_bytes, Ordering::Relaxed);
        self.mqtt
            .store(Arc::new(MqttSettings::from_config(&config)));
        self.xml.store(Arc::new(Limits::from_config(&config)));
        done.push("limits for new connections".into());

        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let mut waiting: Vec<&str> = applied
            .keys()
            .chain(table.keys())
            .map(String::as_str)
            .filter(|k| !RELOADABLE.contains(k) && applied.get(*k) != table.get(*k))
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        let mut answer = format!("reloaded {}: {}", path.display(), done.join(", "));
        if !waiting.is_empty() {
            answer.push_str(&format!(
                "; changed, applied at the next restart: {}",
                waiting.join(", ")
            ));
        }
        let waiting = waiting.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        tracing::info!(target: "petrel::audit", file = %path.display(), restart_needed = ?waiting, "config reloaded");
        // A key waiting for a restart stays "changed" until then.
        let mut next = table;
        for k in &waiting {
            match applied.get(k) {
                Some(v) => next.insert(k.clone(), v.clone()),
                None => next.remove(k),
            };
        }
        *applied = next;
        Ok(answer)
    }
}
