//! Admin commands, declared once in [`COMMANDS`] and served both to `petrel ctl`
//! and over the admin Unix socket ([`socket`]).
//!
//! Names are ejabberdctl's (`register`, `oauth_issue_token`, …); each also answers
//! to its kebab-case alias (`oauth-issue-token`). Exit codes: 0 done, 1 refused
//! (the message says why), 2 bad usage.

pub mod socket;

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{AuthCore, AuthError, BareJid, Scopes};
use crate::session::Registry;
use crate::store::records::TokenKind;
use crate::store::Tree;

/// What a command can reach. `live` is set when a server runs the command.
pub struct CtlContext {
    pub auth: Arc<AuthCore>,
    pub live: Option<LiveServer>,
}

/// The parts of a running server that only it has.
pub struct LiveServer {
    pub registry: Arc<Registry>,
    pub started: Instant,
    /// What `reload` swaps (none: nothing to reload).
    pub reload: Option<Arc<crate::server::reload::Reloader>>,
    /// The cluster this node is in, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// How a command ended: printed output, or a refusal.
pub type Outcome = Result<String, String>;

pub struct Command {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// The last argument takes every remaining word (scopes with spaces).
    pub rest: bool,
    pub help: &'static str,
    run: fn(&CtlContext, &[String]) -> Outcome,
}

impl Command {
    pub fn usage(&self) -> String {
        let mut s = self.name.to_string();
        for a in self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    fn arity_ok(&self, n: usize) -> bool {
        if self.rest {
            n >= self.args.len()
        } else {
            n == self.args.len()
        }
    }
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "register",
        args: &["USER", "HOST", "PASSWORD"],
        rest: false,
        help: "create an account",
        run: register,
    },
    Command {
        name: "unregister",
        args: &["USER", "HOST"],
        rest: false,
        help: "delete an account and revoke its tokens",
        run: unregister,
    },
    Command {
        name: "change_password",
        args: &["USER", "HOST", "NEWPASS"],
        rest: false,
        help: "set a new password",
        run: change_password,
    },
    Command {
        name: "registered_users",
        args: &["HOST"],
        rest: false,
        help: "list the accounts of a host",
        run: registered_users,
    },
    Command {
        name: "oauth_add_client_password",
        args: &["CLIENT_ID", "CLIENT_NAME", "SECRET"],
        rest: false,
        help: "register a client for the password grant",
        run: add_client_password,
    },
    Command {
        name: "oauth_add_client_implicit",
        args: &["CLIENT_ID", "CLIENT_NAME", "REDIRECT_URI"],
        rest: false,
        help: "register a client for the implicit grant",
        run: add_client_implicit,
    },
    Command {
        name: "oauth_add_client_public",
        args: &["CLIENT_ID", "CLIENT_NAME", "REDIRECT_URI"],
        rest: false,
        help: "register a public client (authorization code with PKCE, device grant, refresh)",
        run: add_client_public,
    },
    Command {
        name: "oauth_add_client_confidential",
        args: &["CLIENT_ID", "CLIENT_NAME", "SECRET", "REDIRECT_URI"],
        rest: false,
        help: "register a confidential client (authorization code, refresh)",
        run: add_client_confidential,
    },
    Command {
        name: "oauth_remove_client",
        args: &["CLIENT_ID"],
        rest: false,
        help: "remove a client",
        run: remove_client,
    },
    Command {
        name: "oauth_issue_token",
        args: &["JID", "TTL_SECONDS", "SCOPES"],
        rest: true,
        help: "issue a token (scopes separated by ; or spaces); prints it",
        run: issue_token,
    },
    Command {
        name: "oauth_list_tokens",
        args: &[],
        rest: false,
        help: "list live tokens: id, owner, scopes, expiry (never the token)",
        run: list_tokens,
    },
    Command {
        name: "oauth_revoke_token",
        args: &["TOKEN_OR_ID"],
        rest: false,
        help: "revoke a token, given by its text or its id",
        run: revoke_token,
    },
    Command {
        name: "list_cluster",
        args: &[],
        rest: false,
        help: "the cluster's nodes as this one sees them: name, state, shared subscriptions",
        run: list_cluster,
    },
    Command {
        name: "connected_users",
        args: &[],
        rest: false,
        help: "list connected sessions",
        run: connected_users,
    },
    Command {
        name: "stats",
        args: &["[NAME]"],
        rest: true,
        help: "registeredusers, onlineusers, uptimeseconds",
        run: stats,
    },
    Command {
        name: "status",
        args: &[],
        rest: false,
        help: "whether the server runs",
        run: status,
    },
    Command {
        name: "reload",
        args: &[],
        rest: false,
        help: "re-read the TLS certificate files (as SIGHUP does)",
        run: reload,
    },
];

/// Bad usage: unknown command or wrong number of arguments (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

/// Finds a command by name or kebab-case alias and checks its arity.
/// The command of this name (or kebab-case alias), arguments aside.
pub fn command(name: &str) -> Option<&'static Command> {
    let canonical = name.replace('-', "_");
    COMMANDS.iter().find(|c| c.name == canonical)
}

pub fn lookup(args: &[String]) -> Result<&'static Command, UsageError> {
    let Some(name) = args.first() else {
        return Err(UsageError(format!("no command given\n{}", help_text())));
    };
    let canonical = name.replace('-', "_");
    let cmd = COMMANDS
        .iter()
        .find(|c| c.name == canonical)
        .ok_or_else(|| UsageError(format!("unknown command {name}\n{}", help_text())))?;
    let n = args.len() - 1;
    // `stats` takes zero or one argument.
    let ok = if cmd.name == "stats" {
        n <= 1
    } else {
        cmd.arity_ok(n)
    };
    if !ok {
        return Err(UsageError(format!("usage: petrel ctl {}", cmd.usage())));
    }
    Ok(cmd)
}

pub fn help_text() -> String {
    let mut s = String::from("commands:\n");
    for c in COMMANDS {
        s.push_str(&format!("  {:<58} {}\n", c.usage(), c.help));
    }
    s
}

/// Runs `args` (command name first). Usage is checked by [`lookup`] first.
pub fn execute(ctx: &CtlContext, args: &[String]) -> Result<Outcome, UsageError> {
    let cmd = lookup(args)?;
    let outcome = (cmd.run)(ctx, &args[1..]);
    audit(cmd, &args[1..], &outcome);
    Ok(outcome)
}

/// An audit line for an admin command (target `petrel::audit`): the
/// command, its arguments with every password, secret and token left out,
/// and whether it was done. Never the command's output (a token issued).
fn audit(cmd: &Command, args: &[String], outcome: &Outcome) {
    let secret = |name: &str| ["PASS", "SECRET", "TOKEN"].iter().any(|s| name.contains(s));
    let shown: Vec<&str> = args
        .iter()
        .enumerate()
        .map(|(i, a)| match cmd.args.get(i) {
            Some(name) if secret(name) => "<hidden>",
            _ => a.as_str(),
        })
        .collect();
    let result = if outcome.is_ok() { "done" } else { "refused" };
    tracing::info!(
        target: "petrel::audit",
        command = cmd.name,
        args = %shown.join(" "),
        result,
        "admin command"
    );
}

fn refuse(e: AuthError) -> String {
    e.to_string()
}

fn jid(user: &str, host: &str) -> Result<BareJid, String> {
    BareJid::new(user, host).map_err(|e| e.to_string())
}

fn register(ctx: &CtlContext, a: &[String]) -> Outcome {
    let j = jid(&a[0], &a[1])?;
    ctx.auth.register(&j, &a[2]).map_err(refuse)?;
    Ok(format!("User {j} successfully registered"))
}

fn unregister(ctx: &CtlContext, a: &[String]) -> Outcome {
    let j = jid(&a[0], &a[1])?;
    ctx.auth.unregister(&j).map_err(refuse)?;
    Ok(format!("User {j} unregistered"))
}

fn change_password(ctx: &CtlContext, a: &[String]) -> Outcome {
    let j = jid(&a[0], &a[1])?;
    ctx.auth.change_password(&j, &a[2]).map_err(refuse)?;
    Ok(format!("Password of {j} changed"))
}

fn registered_users(ctx: &CtlContext, a: &[String]) -> Outcome {
    let host = a[0].to_lowercase();
    if !ctx.auth.hosts().contains(&host) {
        return Err(format!("host {host} is not served here"));
    }
    Ok(ctx.auth.registered_users(&host).map_err(refuse)?.join("\n"))
}

fn add_client_password(ctx: &CtlContext, a: &[String]) -> Outcome {
    ctx.auth
        .add_password_client(&a[0], &a[1], &a[2])
        .map_err(refuse)?;
    Ok(format!("Client {} registered (password grant)", a[0]))
}

fn add_client_implicit(ctx: &CtlContext, a: &[String]) -> Outcome {
    ctx.auth
        .add_implicit_client(&a[0], &a[1], &a[2])
        .map_err(refuse)?;
    Ok(format!("Client {} registered (implicit grant)", a[0]))
}

fn add_client_public(ctx: &CtlContext, a: &[String]) -> Outcome {
    ctx.auth
        .add_public_client(&a[0], &a[1], &a[2])
        .map_err(refuse)?;
    Ok(format!(
        "Client {} registered (public: authorization code with PKCE, device grant, refresh)",
        a[0]
    ))
}

fn add_client_confidential(ctx: &CtlContext, a: &[String]) -> Outcome {
    ctx.auth
        .add_confidential_client(&a[0], &a[1], &a[2], &a[3])
        .map_err(refuse)?;
    Ok(format!(
        "Client {} registered (confidential: authorization code, refresh)",
        a[0]
    ))
}

fn remove_client(ctx: &CtlContext, a: &[String]) -> Outcome {
    ctx.auth.remove_client(&a[0]).map_err(refuse)?;
    Ok(format!("Client {} removed", a[0]))
}

fn issue_token(ctx: &CtlContext, a: &[String]) -> Outcome {
    let owner = BareJid::parse(&a[0]).map_err(|e| format!("{}: {e}", a[0]))?;
    let ttl: u64 = a[1]
        .parse()
        .map_err(|_| format!("TTL_SECONDS must be a whole number, got {}", a[1]))?;
    let scopes = Scopes::parse(&a[2..].join(" ")).map_err(|e| e.to_string())?;
    if scopes.is_empty() {
        return Err("at least one scope is needed (e.g. sasl_auth)".into());
    }
    let t = ctx
        .auth
        .issue_token(&owner, scopes, Some(ttl), None)
        .map_err(refuse)?;
    Ok(t.token)
}

fn list_tokens(ctx: &CtlContext, _: &[String]) -> Outcome {
    Ok(ctx
        .auth
        .list_tokens()
        .iter()
        .map(|t| {
            // A refresh or FAST token is marked in a fifth field (the
            // first four are ejabberdctl's).
            let refresh = if t.kind == TokenKind::Refresh {
                " refresh"
            } else if t.grant == crate::store::records::TokenGrant::Fast {
                " fast"
            } else {
                ""
            };
            format!(
                "{} {} {} {}{refresh}",
                t.id,
                t.owner,
                t.scopes.join(";"),
                rfc3339(t.expires_at)
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

fn revoke_token(ctx: &CtlContext, a: &[String]) -> Outcome {
    if ctx.auth.revoke_token(&a[0]).map_err(refuse)? {
        Ok("Token revoked".into())
    } else {
        Err("no such live token".into())
    }
}

fn connected_users(ctx: &CtlContext, _: &[String]) -> Outcome {
    match &ctx.live {
        Some(l) => Ok(l
            .registry
            .sessions()
            .into_iter()
            .filter(|s| s.online)
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join("\n")),
        None => Err("petrel is not running".into()),
    }
}

fn list_cluster(ctx: &CtlContext, _: &[String]) -> Outcome {
    match &ctx.live {
        Some(LiveServer {
            cluster: Some(c), ..
        }) => Ok(c.describe().join("\n")),
        Some(_) => Err("not in a cluster (no [cluster] in the config)".into()),
        None => Err("petrel is not running".into()),
    }
}

fn stats(ctx: &CtlContext, a: &[String]) -> Outcome {
    let users = ctx
        .auth
        .store()
        .len_blocking(Tree::Users)
        .map_err(|e| e.to_string())?;
    let online = ctx.live.as_ref().map_or(0, |l| l.registry.online());
    let uptime = ctx
        .live
        .as_ref()
        .map_or(0, |l| l.started.elapsed().as_secs());
    let all = [
        ("registeredusers", users as u64),
        ("onlineusers", online as u64),
        ("uptimeseconds", uptime),
    ];
    match a.first() {
        None => Ok(all
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join("\n")),
        Some(name) => all
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| {
                format!(
                    "unknown statistic {name}; known: registeredusers, onlineusers, uptimeseconds"
                )
            }),
    }
}

fn reload(ctx: &CtlContext, _: &[String]) -> Outcome {
    let live = ctx.live.as_ref().ok_or("petrel is not running")?;
    match &live.reload {
        Some(r) => r.reload(),
        None => Ok("nothing to reload".into()),
    }
}

fn status(ctx: &CtlContext, _: &[String]) -> Outcome {
    match &ctx.live {
        Some(l) => Ok(format!(
            "petrel is running: {} sessions, up {} s",
            l.registry.online(),
            l.started.elapsed().as_secs()
        )),
        None => Err("petrel is not running".into()),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (UTC).
pub fn rfc3339(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn lookup_accepts_aliases_and_checks_arity() {
        assert_eq!(
            lookup(&s(&["oauth-issue-token", "a@b", "1", "sasl_auth", "x"]))
                .unwrap()
                .name,
            "oauth_issue_token"
        );
        assert!(lookup(&s(&["register", "a", "b"])).is_err());
        assert!(lookup(&s(&["frobnicate"])).is_err());
        assert!(lookup(&s(&[])).is_err());
        assert!(lookup(&s(&["stats"])).is_ok());
        assert!(lookup(&s(&["stats", "a", "b"])).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_816_188), "2026-11-27T21:49:48Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
