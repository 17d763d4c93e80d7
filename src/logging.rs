//! The process's log subscriber: text or JSON lines on stderr, at the
//! configured level, which a reload (`SIGHUP`, `petrel ctl reload`) can
//! change while the server runs. `RUST_LOG`, when set, wins over the config
//! (and then a reload leaves the level alone).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// rustls warns of every client that sends an IP address as SNI (Node
/// does for 127.0.0.1): normal, so not at the default level.
const QUIET: &str = "rustls::msgs::handshake=error";

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter a `log_level` value stands for, or why it is not one.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!("{level},{QUIET}"))
        .map_err(|e| format!("log_level: {level:?} is not a level or filter: {e}"))
}

/// Installs the subscriber (once per process; later calls do nothing).
pub fn init(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let chosen = if from_env {
        EnvFilter::try_from_default_env().ok()
    } else {
        None
    };
    let f = chosen
        .or_else(|| filter(level).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("info,{QUIET}")));
    let (f, handle) = reload::Layer::new(f);
    let base = tracing_subscriber::registry().with(f);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => base
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        // One object per line; the connection's span fields (peer,
        // account, client or JID, session) in "span", the event's own at
        // the top level.
        LogFormat::Json => base
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    if installed.is_ok() && !from_env {
        let _ = LEVEL.set(handle);
    }
}

/// Serves `level` from now on. `Ok(false)` when the level is not this
/// process's to change (`RUST_LOG` set, or no subscriber installed here).
pub fn set_level(level: &str) -> Result<bool, String> {
    let f = filter(level)?;
    match LEVEL.get() {
        Some(h) => h
            .reload(f)
            .map(|()| true)
            .map_err(|e| format!("log_level: {e}")),
        None => Ok(false),
    }
}
