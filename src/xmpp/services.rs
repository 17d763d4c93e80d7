//! The XMPP services a hosted domain offers beside its accounts, each on a
//! subdomain of its own (CONVENTIONS.md): `conference.<host>` (XEP-0045
//! group chat, [`super::muc`]) and `upload.<host>` (XEP-0363 HTTP file
//! upload, [`super::upload`]) and `pubsub.<host>` (XEP-0060,
//! [`super::pubsub`]).
//!
//! This module only decides which domain is which service and dispatches
//! the stanzas addressed to one; each service answers them in its module.
//! A service that is turned off is not a domain here: stanzas to it get
//! `remote-server-not-found` like any other unknown domain, and the server's
//! disco#items does not list it.

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::stanza::StanzaError;

/// One kind of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// XEP-0045 Multi-User Chat.
    Muc,
    /// XEP-0363 HTTP File Upload.
    Upload,
    /// XEP-0060 Publish-Subscribe.
    Pubsub,
    /// MQTT clients as XMPP addresses (the bridge's direct addressing).
    Mqtt,
}

impl Service {
    /// The subdomain label in front of the host.
    pub fn label(self) -> &'static str {
        match self {
            Service::Muc => "conference",
            Service::Upload => "upload",
            Service::Pubsub => "pubsub",
            Service::Mqtt => "mqtt",
        }
    }

    /// The name shown in disco#items.
    pub fn name(self) -> &'static str {
        match self {
            Service::Muc => "Chatrooms",
            Service::Upload => "HTTP File Upload",
            Service::Pubsub => "Publish-Subscribe",
            Service::Mqtt => "MQTT devices",
        }
    }
}

/// The services turned on, for every hosted domain.
#[derive(Debug, Clone, Default)]
pub struct Services {
    on: Vec<Service>,
}

impl Services {
    pub fn new(on: impl IntoIterator<Item = Service>) -> Services {
        Services {
            on: on.into_iter().collect(),
        }
    }

    pub fn is_on(&self, service: Service) -> bool {
        self.on.contains(&service)
    }

    /// Which service `domain` is, and the host it belongs to.
    pub fn find<'a>(&self, domain: &'a str, hosts: &[String]) -> Option<(Service, &'a str)> {
        let (label, host) = domain.split_once('.')?;
        let service = *self.on.iter().find(|s| s.label() == label)?;
        hosts.iter().any(|h| h == host).then_some((service, host))
    }

    /// The service's domain for `host`.
    pub fn domain(service: Service, host: &str) -> String {
        format!("{}.{host}", service.label())
    }

    /// The disco#items of a hosted domain: its services.
    pub fn items(&self, host: &str) -> impl Iterator<Item = (String, &'static str)> + '_ {
        let host = host.to_owned();
        self.on
            .iter()
            .map(move |s| (Self::domain(*s, &host), s.name()))
    }
}

impl ImServer {
    /// Which service a domain is, if it is one of the hosts' services.
    pub(crate) fn service_of<'a>(&self, domain: &'a str) -> Option<(Service, &'a str)> {
        self.services.find(domain, self.hosts())
    }

    /// A stanza addressed to a service's domain or to something under it.
    pub(crate) async fn service_stanza(
        &self,
        service: Service,
        s: &mut ImSession,
        el: Element,
        fx: &mut Effects,
    ) {
        match service {
            Service::Muc => self.muc_stanza(s, el, fx).await,
            Service::Upload => self.upload_stanza(s, el, fx).await,
            Service::Pubsub => self.pubsub_stanza(s, el, fx).await,
            Service::Mqtt => self.mqtt_stanza(s, el, fx).await,
        }
    }
}

/// The answer of a service to a stanza it does not serve: an error for a
/// request or a message, nothing for presence or for an answer.
pub(crate) fn refuse(el: &Element, fx: &mut Effects) {
    match (el.name.as_str(), el.attr("type")) {
        ("iq", Some("get" | "set")) => fx.error(el, StanzaError::ServiceUnavailable),
        ("message", Some("error")) => {}
        ("message", _) => fx.error(el, StanzaError::ServiceUnavailable),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_a_service_only_when_it_is_on_and_under_a_host() {
        let hosts = vec!["example.com".to_string(), "b.org".to_string()];
        let s = Services::new([Service::Muc]);
        assert_eq!(
            s.find("conference.b.org", &hosts),
            Some((Service::Muc, "b.org"))
        );
        assert_eq!(s.find("upload.b.org", &hosts), None, "upload is off");
        assert_eq!(s.find("conference.other.org", &hosts), None);
        assert_eq!(s.find("b.org", &hosts), None);
        assert_eq!(s.find("conference.", &hosts), None);
        let all = Services::new([Service::Muc, Service::Upload]);
        let items: Vec<_> = all.items("example.com").collect();
        assert_eq!(
            items,
            vec![
                ("conference.example.com".to_string(), "Chatrooms"),
                ("upload.example.com".to_string(), "HTTP File Upload"),
            ]
        );
        assert_eq!(Services::default().items("example.com").count(), 0);
    }
}
