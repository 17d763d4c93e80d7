//! The connection task's part of a SASL2 success (XEP-0388): what the
//! client asked for inline, in the order XEP-0386 §3.2 gives — FAST tokens
//! (XEP-0484), a resumption (XEP-0198), else Bind 2 (XEP-0386) with
//! carbons, stream management and client state — then `<success/>` with
//! the results and the stream features that are left. No stream restart.

use super::*;
use crate::auth::fast::HtMechanism;
use crate::xmpp::c2s::Sasl2Done;
use crate::xmpp::sasl2::{self as s2, SuccessParts};
use resume::Sasl2Resume;

impl Connection {
    /// Finishes a SASL2 login. True when a resumption took the socket
    /// (this task is done with it).
    pub(super) async fn sasl2_done(&mut self, done: Sasl2Done) -> bool {
        let Some(user) = self.c2s.user().cloned() else {
            return false;
        };
        let inline = done.inline;
        let token = self.fast_tokens(&user, done.fast, &inline).await;
        let mut parts = SuccessParts {
            data: done.data,
            identifier: user.to_string(),
            token,
            ..SuccessParts::default()
        };
        if let Some((previd, h)) = inline.resume {
            let wrap = Sasl2Resume {
                data: parts.data.clone(),
                token: parts.token.clone(),
            };
            match self.resume(previd, h, Some(wrap)).await {
                Ok(()) => return true,
                // Bind 2 goes on (XEP-0386 §3.2); the failure is reported.
                Err(failed) => parts.resume = Some(failed),
            }
        }
        if let Some(b) = inline.bind {
            let jid = self
                .c2s
                .bind_inline(b.tag.as_deref(), inline.agent.as_deref());
            if let Some(jid) = jid {
                parts.identifier = jid.to_string();
                self.bind(jid);
                let mut bound = Vec::new();
                if b.carbons {
                    if let Some(im) = self.bound.as_ref() {
                        im.route.lock().carbons = true;
                    }
                }
                if let Some(resume) = b.sm {
                    self.c2s.sm_enabled_inline();
                    bound.extend_from_slice(&self.enable_sm(resume));
                }
                if let Some(inactive) = b.inactive {
                    self.inactive = inactive;
                }
                parts.bound = Some(bound);
            }
        }
        self.wbuf.extend_from_slice(&s2::success(&parts));
        self.wbuf.extend_from_slice(&self.c2s.features_bytes());
        false
    }

    /// XEP-0484 for a login that succeeded: a token the client used with
    /// `invalidate` ends (and the session no longer hangs on it); a token
    /// asked for, or due for rotation, is issued. The `<token/>` to send.
    async fn fast_tokens(
        &mut self,
        user: &crate::auth::BareJid,
        used: Option<(HtMechanism, String, bool)>,
        inline: &crate::xmpp::sasl2::Inline,
    ) -> Option<Vec<u8>> {
        let auth = self.ctx.auth.clone();
        let grant = self.c2s.grant().cloned();
        let invalidate = used.is_some() && inline.fast == Some(true);
        if invalidate {
            if let Some(g) = grant.clone() {
                let a = auth.clone();
                let r = tokio::task::spawn_blocking(move || a.revoke_grant(&g)).await;
                if !matches!(r, Ok(Ok(_))) {
                    tracing::error!("could not invalidate a FAST token");
                }
                self.c2s.drop_grant();
            }
        }
        // A rotation is for the mechanism in use; a request names its own.
        let rotation = used
            .as_ref()
            .filter(|(_, _, rotate)| *rotate && !invalidate)
            .map(|(m, _, _)| *m);
        let mechanism = inline.request_token.or(rotation)?;
        // The installation: the one the used token is bound to, else the
        // client's <user-agent id> (no id, no token: XEP-0484 §5.1).
        let agent = used
            .as_ref()
            .map(|(_, a, _)| a.clone())
            .or_else(|| inline.agent.clone())?;
        // Never more than what got it: the scopes of the token that logged
        // in, or a full login's for a password.
        let scopes = grant
            .as_ref()
            .map_or_else(crate::auth::Scopes::sasl_auth, |g| g.scopes().clone());
        let keep = grant.as_ref().filter(|_| !invalidate).map(|g| g.key());
        let owner = user.clone();
        let issued = tokio::task::spawn_blocking(move || {
            auth.issue_fast(&owner, &agent, mechanism, scopes, keep)
        })
        .await;
        match issued {
            Ok(Ok(t)) => Some(s2::token(&t.token, t.expires_at)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no FAST token issued");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "issuing a FAST token failed");
                None
            }
        }
    }
}
