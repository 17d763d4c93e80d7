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
        let Ok(token) = self.fast_tokens(&user, done.fast, &inline).await else {
            let mut out = Vec::new();
            self.c2s.fail_stream(
                StreamCondition::InternalServerError,
                "the token could not be invalidated",
                &mut out,
            );
            Box::pin(self.execute(out)).await;
            return false;
        };
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
                self.bind(jid).await;
                if let Some(im) = self.bound.as_mut() {
                    im.mam_synced = true;
                }
                // The archive's state at binding (XEP-0386 §3.2).
                let mut bound = match self.ctx.im.mam.metadata(&user.to_string()).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(error = %e, "could not read the archive's bounds");
                        Vec::new()
                    }
                };
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
    /// asked for, or due for rotation, is issued. The `<token/>` to send;
    /// `Err` when the invalidation could not be made durable (the login
    /// must not be confirmed then).
    async fn fast_tokens(
        &mut self,
        user: &crate::auth::BareJid,
        used: Option<(HtMechanism, String, bool)>,
        inline: &crate::xmpp::sasl2::Inline,
    ) -> Result<Option<Vec<u8>>, ()> {
        let auth = self.ctx.auth.clone();
        let grant = self.c2s.grant().cloned();
        let invalidate = used.is_some() && inline.fast == Some(true);
        if invalidate {
            if let Some(g) = grant.clone() {
                let a = auth.clone();
                let r = tokio::task::spawn_blocking(move || a.revoke_grant(&g)).await;
                if !matches!(r, Ok(Ok(_))) {
                    tracing::error!("could not invalidate a FAST token");
                    return Err(());
                }
                // The session goes on, with the token's scopes.
                self.c2s.drop_grant();
            }
        }
        // A rotation is for the mechanism in use; a request names its own.
        let rotation = used
            .as_ref()
            .filter(|(_, _, rotate)| *rotate && !invalidate)
            .map(|(m, _, _)| *m);
        let Some(mechanism) = inline.request_token.or(rotation) else {
            return Ok(None);
        };
        // The installation: the one the used token is bound to, else the
        // client's <user-agent id> (no id, no token: XEP-0484 §5.1).
        let Some(agent) = used
            .as_ref()
            .map(|(_, a, _)| a.clone())
            .or_else(|| inline.agent.clone())
        else {
            return Ok(None);
        };
        // The login's token, if any, is the new one's parent (scopes,
        // client, family, expiry limit); a used FAST token stays valid
        // until its successor is used.
        let keep_parent = used.is_some() && !invalidate;
        let owner = user.clone();
        let issued = tokio::task::spawn_blocking(move || {
            auth.issue_fast(&owner, &agent, mechanism, grant.as_ref(), keep_parent)
        })
        .await;
        Ok(match issued {
            Ok(Ok(t)) => Some(s2::token(&t.token, t.expires_at)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no FAST token issued");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "issuing a FAST token failed");
                None
            }
        })
    }
}
