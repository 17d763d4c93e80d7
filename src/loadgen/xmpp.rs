//! XMPP scenarios: `xmpp-login` here, `xmpp-chat` in [`chat`].
//!
//! Both share the run's [`Ctx`] and an [`Xmpp`] on top of it: the users'
//! domain, the SCRAM salted-password cache, and [`Xmpp::login`], which
//! logs one session in with the client of [`super::xmpp_client`] and counts
//! the outcome. Session `c` logs in as user `c mod --users` (localpart from
//! --user-pattern) with resource `load-c`; its X-OAUTH2 token is the user's
//! (line `user mod lines` of --tokens, or the user's password grant).
//!
//! `xmpp-login` measures logins: `count` of them started at `rate` per
//! second, at most `connect_concurrency` in progress; the latency is TCP
//! connect to bound resource (session iq included when the server requires
//! it). Each login is then closed with `</stream:stream>` — or, with
//! `hold`, kept open with whitespace keepalives until the duration ends, so
//! the server's memory per session can be read with `pid`.

mod chat;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::ctx::{process_watches, spawn_sampler, wind_down, ConnectRun, Ctx};
use super::options::{AuthMode, Plan};
use super::report::Report;
use super::scram::SaltedCache;
use super::stats::{Latency, Phase, Progress};
use super::xmpp_client::{login, Credentials, LoginSpec, XmppClient, XmppError};
use super::{read_rss, LoadError, ProcessWatch, SystemWatch};

pub use chat::run_chat;

/// Longest one login (connect to bound) may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Read room for a held, idle session (pings, stream end).
const IDLE_READ: usize = 512;

/// What every XMPP task of a run shares besides the [`Ctx`].
pub(crate) struct Xmpp {
    pub ctx: Arc<Ctx>,
    /// Where sessions connect (the target, or --xmpp-target when the run
    /// also speaks MQTT).
    endpoint: super::net::Endpoint,
    domain: String,
    salted: SaltedCache,
    /// `--auth fast`: each user's FAST token, fetched before the run.
    fast: Vec<String>,
}

impl Xmpp {
    async fn new(plan: &Plan, progress: Arc<Progress>) -> Result<Arc<Xmpp>, LoadError> {
        Xmpp::with_ctx(Ctx::new(plan, progress).await?).await
    }

    /// The XMPP side of a run whose [`Ctx`] exists already (the bridge
    /// scenarios, whose MQTT clients share it).
    pub(crate) async fn with_ctx(ctx: Arc<Ctx>) -> Result<Arc<Xmpp>, LoadError> {
        let plan = &ctx.plan;
        let endpoint = super::net::Endpoint::xmpp(plan)?;
        let domain = plan.xmpp_domain().to_owned();
        let fast = if plan.auth == AuthMode::Fast {
            fetch_fast_tokens(&ctx, &domain).await?
        } else {
            Vec::new()
        };
        Ok(Arc::new(Xmpp {
            endpoint,
            domain,
            ctx,
            salted: SaltedCache::default(),
            fast,
        }))
    }

    /// Logs session `index` in, counting the outcome; the client and the
    /// connect-to-bound latency in ns.
    pub async fn login(&self, index: u64) -> Result<(XmppClient, u64), XmppError> {
        let plan = &self.ctx.plan;
        let user = index % plan.users;
        let name = plan.username(user);
        let local = name.split_once('@').map_or(name.as_str(), |(l, _)| l);
        let tokens = &self.ctx.tokens;
        let token = match tokens.len() as u64 {
            0 => "",
            n => tokens[(user % n) as usize].as_str(),
        };
        let agent = super::xmpp_client::agent_id(user);
        let credentials = match plan.auth {
            AuthMode::Fast => Credentials::Fast {
                user: local,
                token: &self.fast[user as usize],
                agent: &agent,
            },
            AuthMode::XOauth2 => Credentials::XOauth2 { user: local, token },
            AuthMode::TokenAsPassword => Credentials::Plain {
                user: local,
                password: token,
            },
            AuthMode::ScramSha256 => Credentials::ScramSha256 {
                user: local,
                password: &plan.password,
                cache: &self.salted,
            },
            // None is refused for XMPP by the plan.
            AuthMode::Password | AuthMode::None => Credentials::Plain {
                user: local,
                password: &plan.password,
            },
        };
        let resource = format!("load-{index}");
        let spec = LoginSpec {
            domain: &self.domain,
            credentials,
            resource: &resource,
            starttls: plan.starttls,
        };
        let t0 = Instant::now();
        let r = tokio::time::timeout(LOGIN_TIMEOUT, login(&self.endpoint, &spec))
            .await
            .unwrap_or(Err(XmppError::Timeout));
        let progress = &self.ctx.progress;
        match r {
            Ok(c) => {
                Progress::add(&progress.connects_ok, 1);
                Ok((c, t0.elapsed().as_nanos() as u64))
            }
            Err(e) => {
                Progress::add(&progress.connects_failed, 1);
                self.ctx.error(format!("login: {}", e.kind()));
                Err(e)
            }
        }
    }
}

/// `--auth fast`: one FAST token per user (installation [`agent_id`] of
/// the user's index), by a SASL2 PLAIN login that asks for it, at most
/// `--connect-concurrency` at once. Not part of the measured phase.
///
/// [`agent_id`]: super::xmpp_client::agent_id
async fn fetch_fast_tokens(ctx: &Arc<Ctx>, domain: &str) -> Result<Vec<String>, LoadError> {
    let plan = &ctx.plan;
    // Password logins: a server may refuse many in flight from one address
    // (Petrel's throttle allows `login_failures_allowed`, 5): a few at once,
    // and a refusal waited out.
    let slots = Arc::new(Semaphore::new(plan.connect_concurrency.clamp(1, 4) as usize));
    let mut tasks = JoinSet::new();
    for user in 0..plan.users {
        let (ctx, slots, domain) = (ctx.clone(), slots.clone(), domain.to_owned());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let name = ctx.plan.username(user);
            let local = name
                .split_once('@')
                .map_or(name.as_str(), |(l, _)| l)
                .to_owned();
            let agent = super::xmpp_client::agent_id(user);
            let fetch = || async {
                let io = ctx.endpoint.connect().await?;
                let mut c = XmppClient::new(io);
                let t = c
                    .fetch_fast_token(&domain, &local, &ctx.plan.password, &agent)
                    .await;
                c.close().await;
                t
            };
            let mut r = Err(XmppError::Timeout);
            for attempt in 0..20u32 {
                r = tokio::time::timeout(LOGIN_TIMEOUT, fetch())
                    .await
                    .unwrap_or(Err(XmppError::Timeout));
                match &r {
                    Err(XmppError::Sasl(c)) if c == "temporary-auth-failure" => {
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                    }
                    _ => break,
                }
            }
            (user, r)
        });
    }
    let mut tokens = vec![String::new(); plan.users as usize];
    while let Some(j) = tasks.join_next().await {
        let Ok((user, r)) = j else { continue };
        match r {
            Ok(t) => tokens[user as usize] = t,
            Err(e) => {
                return Err(LoadError::Refused(format!(
                    "FAST token for {}: {e}",
                    plan.username(user)
                )))
            }
        }
    }
    Ok(tokens)
}

/// `xmpp-login`; see the module docs.
pub async fn run_login(plan: &Plan, progress: Arc<Progress>) -> Result<Report, LoadError> {
    let x = Xmpp::new(plan, progress.clone()).await?;
    let ctx = x.ctx.clone();
    let n = plan.count.unwrap_or(100);
    let rss_before = super::broker_rss(plan.pid)?;
    let sampler_stop = CancellationToken::new();
    let sampler = spawn_sampler(&ctx, sampler_stop.clone());
    progress.goal.store(n, Ordering::Relaxed);
    progress.set_phase(Phase::Connecting);

    let watches = process_watches(plan);
    let system = SystemWatch::start();
    let hold_stop = CancellationToken::new();
    let logins = Arc::new(Semaphore::new(plan.connect_concurrency as usize));
    let latency = Arc::new(Mutex::new(Latency::new()));
    let interval = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let t_login = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        if let Some(iv) = interval {
            tokio::time::sleep_until((t_login + iv.mul_f64(i as f64)).into()).await;
        }
        let Ok(permit) = logins.clone().acquire_owned().await else {
            break;
        };
        let (x, latency, stop) = (x.clone(), latency.clone(), hold_stop.clone());
        let hold_it = plan.hold;
        tasks.spawn(async move {
            let r = x.login(i).await;
            drop(permit);
            let Ok((mut client, ns)) = r else { return };
            latency.lock().unwrap_or_else(|p| p.into_inner()).record(ns);
            if x.ctx.plan.presence {
                client.wbuf.extend_from_slice(b"<presence/>");
            }
            if hold_it {
                hold(&x.ctx, client, stop).await;
            } else {
                client.close().await;
            }
        });
        // Reap finished logins as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    // Every attempt ends within LOGIN_TIMEOUT of its start.
    let all_done =
        || Progress::get(&progress.connects_ok) + Progress::get(&progress.connects_failed) >= n;
    let deadline = Instant::now() + LOGIN_TIMEOUT + Duration::from_secs(1);
    while !all_done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let login_phase = t_login.elapsed();

    let (mut held, mut rss_held) = (0, None);
    if plan.hold {
        progress.set_phase(Phase::Running);
        tokio::time::sleep(plan.duration).await;
        held = Progress::get(&progress.connected);
        rss_held = plan.pid.and_then(read_rss);
    }
    let processes = watches.iter().filter_map(ProcessWatch::finish).collect();
    let system_busy = system.finish();
    let timeline = wind_down(&progress, &mut tasks, &hold_stop, &sampler_stop, sampler).await;
    let run = ConnectRun {
        attempted: n,
        phase: login_phase,
        latency,
        rss_before,
        rss_held,
        held,
        processes,
        system_busy,
    };
    Ok(ctx.connect_report(run, timeline))
}

/// Keeps `client` open and idle (a whitespace keepalive at half the
/// keep-alive, server pings answered) until `stop`, then ends the stream.
/// A close by the server counts as dropped.
async fn hold(ctx: &Ctx, mut client: XmppClient, stop: CancellationToken) {
    let progress = &ctx.progress;
    Progress::add(&progress.connected, 1);
    let every = ctx.ping_every();
    let mut ok = client.flush().await.is_ok();
    client.release_buffers();
    let keepalive = tokio::time::sleep(every);
    tokio::pin!(keepalive);
    let mut stopped = false;
    while ok {
        tokio::select! {
            _ = stop.cancelled() => { stopped = true; break }
            r = client.read_some(IDLE_READ) => {
                ok = r.is_ok() && loop {
                    match client.next_buffered() {
                        Ok(Some(el)) => { client.answer(&el); }
                        Ok(None) => break true,
                        Err(_) => break false,
                    }
                };
                ok = ok && client.flush().await.is_ok();
                client.release_buffers();
            }
            () = &mut keepalive => {
                keepalive.as_mut().reset((Instant::now() + every).into());
                ok = client.send(b" ").await.is_ok();
            }
        }
    }
    progress.connected.fetch_sub(1, Ordering::Relaxed);
    if stopped {
        client.close().await;
    } else {
        Progress::add(&progress.dropped, 1);
        ctx.error("held session closed by the server".into());
    }
}
