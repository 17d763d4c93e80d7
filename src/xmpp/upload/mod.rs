//! XEP-0363 HTTP File Upload on `upload.<host>` (see [`super::services`]).
//!
//! A client asks `upload.<host>` for a slot (an iq with `<request/>`); the
//! answer is a PUT URL and a GET URL on this server's HTTP listener. The
//! parts:
//!
//! * [`slot`] — I/O-free: the request's checks, the sanitized file name, the
//!   signed PUT URL (nothing is remembered per slot: the URL carries the
//!   grant and its HMAC);
//! * [`store`] — the files on disk under `<data_dir>/upload/`, the
//!   per-account usage (quota) and the expiry sweep;
//! * [`http`] — the warp route at `/upload/…` the HTTP listeners serve: PUT
//!   (checked, streamed to disk, fsynced, never overwriting), GET/HEAD with
//!   safe headers, OPTIONS for browsers.
//!
//! The service is served when `[upload] enabled` and the server has an HTTP
//! listener (`Config::services`); the URLs start with `[upload] url`, by
//! default the first HTTP listener's `http(s)://<first host>:<port>`.

pub mod http;
pub mod slot;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::services::refuse;
use super::stanza::{error_reply, iq_result, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS};
use super::stream::NS_CLIENT;
use crate::session::{Clock, Entropy};
use slot::{Grant, NS_UPLOAD};
use store::FileStore;

/// The `[upload]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Whether `upload.<host>` is served (only with an HTTP listener).
    pub enabled: bool,
    /// Bytes of one file at most (`max_size`).
    pub max_size: u64,
    /// Bytes one account may have stored at once (`quota`).
    pub quota: u64,
    /// Days a file is kept (0: for ever) (`max_days`).
    pub max_days: u64,
    /// Seconds a slot's PUT URL stays valid (`slot_expire`).
    pub slot_expire: u64,
    /// Seconds a PUT may take, body included (`put_timeout`): uploads are
    /// exempt from `http_request_timeout`.
    pub put_timeout: u64,
    /// The public base URL of the slots (`url`); default: the first HTTP
    /// listener's.
    pub url: Option<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            max_size: 100 * 1024 * 1024,
            quota: 1024 * 1024 * 1024,
            max_days: 30,
            slot_expire: 600,
            put_timeout: 3600,
            url: None,
        }
    }
}

impl UploadConfig {
    /// Checks the ranges; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("max_size", self.max_size),
            ("quota", self.quota),
            ("slot_expire", self.slot_expire),
            ("put_timeout", self.put_timeout),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.slot_expire > 7 * 86_400 {
            return Err(("slot_expire", "must be at most 604800 (a week)".into()));
        }
        if let Some(u) = &self.url {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty()
                    && !r.starts_with('/')
                    && r.bytes().all(|b| b.is_ascii_graphic())
                    && !r.contains(['?', '#'])
            });
            if !ok {
                return Err((
                    "url",
                    "must be an http:// or https:// URL with no query or fragment".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The running upload service: what the slot requests and the HTTP route
/// share.
pub struct Uploads {
    pub config: UploadConfig,
    /// The base of every slot URL, without a trailing slash.
    pub base_url: String,
    key: [u8; 32],
    pub store: FileStore,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
}

impl Uploads {
    /// Opens `<data_dir>/upload` (its key made on first use). Blocks.
    pub fn open(
        config: UploadConfig,
        base_url: String,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> std::io::Result<Uploads> {
        let root = data_dir.join(UPLOAD_DIR);
        let store = FileStore::open(&root)?;
        let key = crate::auth::fast::load_or_create_key(&root.join("key"))?;
        Ok(Uploads {
            config,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            store,
            clock,
            entropy,
        })
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.clock.unix()
    }

    /// `N` random bytes as hex.
    pub fn random_hex<const N: usize>(&self) -> String {
        hex::encode(crate::session::random::<N>(self.entropy.as_ref()))
    }

    /// The answer to a slot request from `owner`: the slot, or the error
    /// condition and the XEP's application element.
    fn slot(
        &self,
        owner: &str,
        req: &Element,
    ) -> Result<Element, (StanzaError, Option<Element>, &'static str)> {
        let r = slot::parse_request(req).map_err(|e| {
            let text = match e {
                slot::RequestError::Filename => "filename missing",
                slot::RequestError::Size => "size missing or not a number",
                slot::RequestError::ContentType => "content-type is not a media type",
            };
            (StanzaError::BadRequest, None, text)
        })?;
        if r.size > self.config.max_size {
            return Err((
                StanzaError::NotAcceptable,
                Some(slot::file_too_large(self.config.max_size)),
                "file too large",
            ));
        }
        if self.store.used(owner).saturating_add(r.size) > self.config.quota {
            return Err((
                StanzaError::ResourceConstraint,
                None,
                "upload quota reached",
            ));
        }
        let grant = Grant {
            id: self.random_hex::<{ slot::ID_BYTES }>(),
            name: r.name,
            size: r.size,
            content_type: r.content_type,
            expires: self.now().saturating_add(self.config.slot_expire),
            owner: owner.to_string(),
        };
        Ok(slot::slot_element(
            &grant.put_url(&self.base_url, &self.key),
            &grant.get_url(&self.base_url),
        ))
    }

    /// The disco#info of the service.
    fn info(&self) -> Element {
        Element::new("query", NS_DISCO_INFO)
            .with_child(
                Element::new("identity", NS_DISCO_INFO)
                    .with_attr("category", "store")
                    .with_attr("type", "file")
                    .with_attr("name", "HTTP File Upload"),
            )
            .with_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_DISCO_INFO))
            .with_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", NS_UPLOAD))
            .with_child(
                Element::new("x", "jabber:x:data")
                    .with_attr("type", "result")
                    .with_child(
                        Element::new("field", "jabber:x:data")
                            .with_attr("var", "FORM_TYPE")
                            .with_attr("type", "hidden")
                            .with_child(
                                Element::new("value", "jabber:x:data").with_text(NS_UPLOAD),
                            ),
                    )
                    .with_child(
                        Element::new("field", "jabber:x:data")
                            .with_attr("var", "max-file-size")
                            .with_child(
                                Element::new("value", "jabber:x:data")
                                    .with_text(self.config.max_size.to_string()),
                            ),
                    ),
            )
    }

    /// Deletes files past `max_days` at `now` (unix seconds). Blocks.
    pub fn sweep(&self, now: u64) -> std::io::Result<usize> {
        self.store.sweep(now, self.config.max_days)
    }
}

/// The upload directory's name in the data directory.
pub const UPLOAD_DIR: &str = "upload";

/// Deletes the files past `max_days` now, saying what it did. Blocks.
pub fn sweep_logged(u: &Uploads) {
    match u.sweep(u.now()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "uploaded files past max_days deleted"),
        Err(e) => tracing::error!(error = %e, "could not sweep the uploaded files"),
    }
}

/// Hourly: files older than `max_days` deleted (the start's sweep is done
/// by the server before it serves).
pub async fn run_expiry(uploads: Arc<Uploads>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
        let u = uploads.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || sweep_logged(&u)).await {
            tracing::error!(error = %e, "the upload sweep failed");
        }
    }
}

impl ImServer {
    /// A stanza to `upload.<host>`.
    pub(crate) async fn upload_stanza(&self, s: &mut ImSession, el: Element, fx: &mut Effects) {
        let Some(up) = self.upload.as_ref() else {
            return refuse(&el, fx);
        };
        // The service itself, not something under it.
        if el.attr("to").is_some_and(|t| t.contains(['@', '/'])) {
            return refuse(&el, fx);
        }
        let payload = el.elements().next();
        match (el.name.as_str(), el.attr("type"), payload) {
            ("iq", Some("get"), Some(q)) if q.is("query", NS_DISCO_INFO) => {
                if q.attr("node").is_some() {
                    return fx.error(&el, StanzaError::ItemNotFound);
                }
                fx.reply(iq_result(&el, Some(up.info())));
            }
            ("iq", Some("get"), Some(q)) if q.is("query", NS_DISCO_ITEMS) => {
                fx.reply(iq_result(&el, Some(Element::new("query", NS_DISCO_ITEMS))));
            }
            ("iq", Some("get"), Some(q)) if q.is("request", NS_UPLOAD) => {
                match up.slot(&s.user.to_string(), q) {
                    Ok(slot) => fx.reply(iq_result(&el, Some(slot))),
                    Err((cond, app, text)) => {
                        if let Some(mut reply) = error_reply(&el, cond, Some(text)) {
                            if let (Some(app), Some(e)) = (app, reply.child_mut("error", NS_CLIENT))
                            {
                                e.push_child(app);
                            }
                            fx.reply(reply);
                        }
                    }
                }
            }
            ("iq", Some("set"), Some(q)) if q.is("request", NS_UPLOAD) => {
                fx.error(&el, StanzaError::BadRequest)
            }
            _ => refuse(&el, fx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{CountingEntropy, ManualClock};

    fn uploads(dir: &Path, config: UploadConfig) -> Uploads {
        Uploads::open(
            config,
            "http://h:1/".into(),
            dir,
            Arc::new(ManualClock::default()),
            Arc::new(CountingEntropy::default()),
        )
        .unwrap()
    }

    fn request(name: &str, size: u64) -> Element {
        Element::new("request", NS_UPLOAD)
            .with_attr("filename", name)
            .with_attr("size", size.to_string())
    }

    #[test]
    fn slots_are_signed_and_refused_past_the_size_limit_and_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let config = UploadConfig {
            max_size: 100,
            quota: 150,
            ..Default::default()
        };
        let up = uploads(dir.path(), config);
        let key = std::fs::read(dir.path().join("upload/key")).unwrap();
        assert_eq!(key.len(), 32);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("upload/key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");

        let slot = up.slot("a@x", &request("f.txt", 100)).unwrap();
        let put = slot.child("put", NS_UPLOAD).unwrap().attr("url").unwrap();
        let get = slot.child("get", NS_UPLOAD).unwrap().attr("url").unwrap();
        assert!(
            get.starts_with("http://h:1/upload/") && get.ends_with("/f.txt"),
            "{get}"
        );
        let (tail, query) = put
            .strip_prefix("http://h:1/upload/")
            .unwrap()
            .split_once('?')
            .unwrap();
        let g = slot::check_put(tail, query, &up.key, up.now()).unwrap();
        assert_eq!((g.size, g.owner.as_str()), (100, "a@x"));
        assert_eq!(g.expires, up.now() + 600);
        assert_eq!(
            g.content_type,
            slot::DEFAULT_CONTENT_TYPE,
            "no content-type asked for"
        );

        let (cond, app, _) = up.slot("a@x", &request("f", 101)).unwrap_err();
        assert_eq!(cond, StanzaError::NotAcceptable);
        let app = app.unwrap();
        assert!(app.is("file-too-large", NS_UPLOAD));
        assert_eq!(app.child("max-size", NS_UPLOAD).unwrap().text(), "100");

        assert!(up.store.reserve("a@x", 100, 150));
        assert_eq!(
            up.slot("a@x", &request("f", 51)).unwrap_err().0,
            StanzaError::ResourceConstraint
        );
        assert!(up.slot("a@x", &request("f", 50)).is_ok());
        assert!(
            up.slot("b@x", &request("f", 100)).is_ok(),
            "quota per account"
        );
        let bad = Element::new("request", NS_UPLOAD).with_attr("size", "1");
        assert_eq!(up.slot("a@x", &bad).unwrap_err().0, StanzaError::BadRequest);

        let info = up.info();
        let form = info.child("x", "jabber:x:data").unwrap();
        assert!(form
            .elements()
            .any(|f| f.attr("var") == Some("max-file-size")
                && f.child("value", "jabber:x:data")
                    .map(|v| v.text())
                    .as_deref()
                    == Some("100")));
    }

    #[test]
    fn the_config_checks_name_the_key_and_the_documented_file_has_the_defaults() {
        assert_eq!(UploadConfig::default().check(), Ok(()));
        for (c, key) in [
            (
                UploadConfig {
                    max_size: 0,
                    ..Default::default()
                },
                "max_size",
            ),
            (
                UploadConfig {
                    quota: 0,
                    ..Default::default()
                },
                "quota",
            ),
            (
                UploadConfig {
                    slot_expire: 0,
                    ..Default::default()
                },
                "slot_expire",
            ),
            (
                UploadConfig {
                    slot_expire: 700_000,
                    ..Default::default()
                },
                "slot_expire",
            ),
            (
                UploadConfig {
                    put_timeout: 0,
                    ..Default::default()
                },
                "put_timeout",
            ),
            (
                UploadConfig {
                    url: Some("ftp://x".into()),
                    ..Default::default()
                },
                "url",
            ),
            (
                UploadConfig {
                    url: Some("https://x/?a".into()),
                    ..Default::default()
                },
                "url",
            ),
            (
                UploadConfig {
                    url: Some("https://".into()),
                    ..Default::default()
                },
                "url",
            ),
        ] {
            assert_eq!(c.check().unwrap_err().0, key, "{c:?}");
        }
        let ok = UploadConfig {
            url: Some("https://chat.example/files/".into()),
            ..Default::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let c = crate::config::Config::parse(include_str!("../../../configs/petrel.toml")).unwrap();
        assert_eq!(c.upload, UploadConfig::default());
        assert!(c.services().is_on(crate::xmpp::services::Service::Upload));
        let e = crate::config::Config::parse("[upload]\nmax_size = 0\n").unwrap_err();
        assert!(e.key.contains("max_size"), "{}", e.key);
    }
}
