//! The SASL2 side of [`C2s`] (XEP-0388): `<authenticate/>`, `<response/>`
//! and `<abort/>` before authentication, and what the connection task calls
//! to carry out a success inline (Bind 2, stream management, a FAST token
//! invalidated).

use super::*;

impl C2s {
    /// XEP-0388 elements before authentication.
    pub(super) fn sasl2_element(&mut self, el: &Element, out: &mut Vec<Output>) {
        use crate::auth::sasl::SaslError;
        if !self.sasl_allowed() {
            Self::send_element(out, &sasl2::failure("encryption-required", None));
            return self.count_auth_failure(out);
        }
        let domain = self.domain.clone().unwrap_or_default();
        let offered = self.fast_offered();
        let metadata = self.oauth_metadata.clone();
        let sasl = self
            .sasl
            .get_or_insert_with(|| Box::new(Sasl::new(&domain).with_metadata(metadata)));
        let outcome = match el.name.as_str() {
            "authenticate" => match sasl2::parse_authenticate(el) {
                Err(why) => {
                    // Whatever exchange was under way is over.
                    **sasl = Sasl::new(&domain).with_metadata(self.oauth_metadata.clone());
                    self.sasl2 = Some(Box::new(Sasl2Pending {
                        inline: Inline::default(),
                        fast: None,
                    }));
                    SaslOutcome::Failure {
                        error: SaslError::MalformedRequest(why),
                        text: Some(why),
                    }
                }
                Ok(a) => {
                    let ht = HtMechanism::from_name(&a.mechanism);
                    self.login_method = match ht {
                        Some(m) => m.name(),
                        None => {
                            Mechanism::from_name(&a.mechanism).map_or("unknown", Mechanism::name)
                        }
                    };
                    let outcome = match (ht, a.inline.fast) {
                        (Some(m), Some(_)) if offered.contains(&m) => {
                            sasl.start_fast(m, a.initial.as_deref(), a.inline.agent.as_deref())
                        }
                        (None, None) => {
                            // An empty <initial-response/> is an empty
                            // response, which SASL1 spells "=".
                            let initial =
                                a.initial
                                    .as_deref()
                                    .map(|t| if t.is_empty() { "=" } else { t });
                            sasl.start(&a.mechanism, initial)
                        }
                        _ => SaslOutcome::Failure {
                            error: SaslError::InvalidMechanism,
                            text: Some(
                                "FAST mechanisms need <fast/>, and <fast/> a FAST mechanism",
                            ),
                        },
                    };
                    self.sasl2 = Some(Box::new(Sasl2Pending {
                        inline: a.inline,
                        fast: ht,
                    }));
                    outcome
                }
            },
            "response" => sasl.response(&el.text()),
            "abort" => sasl.abort(),
            _ => {
                return self.fail_stream(
                    StreamCondition::UnsupportedStanzaType,
                    "unknown SASL2 element",
                    out,
                )
            }
        };
        self.sasl_outcome(outcome, out);
    }

    /// XEP-0386 Bind 2: binds a resource made from the client's tag (and
    /// its installation, for a stable one); the full JID.
    pub fn bind_inline(&mut self, tag: Option<&str>, agent: Option<&str>) -> Option<Jid> {
        if self.jid.is_some() {
            return None;
        }
        let user = self.auth.as_ref()?.user.clone();
        let entropy = self.entropy.clone();
        let resource = sasl2::resource(&user.to_string(), tag, agent, || {
            crate::session::random::<6>(entropy.as_ref())
        });
        let jid = Jid::full(&user, &resource);
        self.jid_text = jid.to_string();
        self.jid = Some(jid.clone());
        Some(jid)
    }

    /// Stream management enabled inline (Bind 2): the inbound count starts.
    pub fn sm_enabled_inline(&mut self) {
        if self.jid.is_some() && self.sm_in.is_none() {
            self.sm_in = Some(0);
        }
    }

    /// The login's token ended at the client's request (a FAST token it
    /// invalidated): the session no longer hangs on it.
    pub fn drop_grant(&mut self) {
        if let Some(a) = self.auth.as_mut() {
            a.grant = None;
        }
    }
}
