//! Test support: runs the real `petrel` binary on port 0 in a temp data dir and
//! drives it from outside.
#![allow(dead_code)]

pub mod mqtt_raw;
pub mod nats;
pub mod node;
pub mod postgres;
pub mod python;
pub mod slixmpp;
pub mod xmpp;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_petrel");

/// A running server and the directory that holds its config and data.
pub struct Petrel {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    /// module -> addresses in config order (e.g. "http" -> [plain, tls]).
    pub addrs: HashMap<String, Vec<SocketAddr>>,
    /// Where the server's log goes at level info (`None`: inherited stderr
    /// at `PETREL_TEST_LOG`, default warn).
    pub log: Option<PathBuf>,
}

/// The listeners every test server gets, all on port 0. c2s: [0] plain with
/// STARTTLS offered (not required: loopback), [1] direct TLS.
pub const LISTENERS: &str = r#"
[[listen]]
module = "c2s"
port = 0
starttls = true

[[listen]]
module = "c2s"
port = 0
tls = true

[[listen]]
module = "mqtt"
port = 0

[[listen]]
module = "mqtt"
port = 0
tls = true

[[listen]]
module = "http"
port = 0

[[listen]]
module = "http"
port = 0
tls = true
"#;

impl Petrel {
    /// Starts a server with `extra` TOML prepended to the standard listeners.
    pub fn start(extra: &str) -> Petrel {
        Petrel::start_with_listeners(extra, LISTENERS)
    }

    /// Starts a server whose log (level info) goes to `log.txt` in its
    /// directory.
    pub fn start_logging(extra: &str) -> Petrel {
        Petrel::start_inner(extra, LISTENERS, true)
    }

    /// Starts a server with `extra` TOML and the given `[[listen]]` tables.
    pub fn start_with_listeners(extra: &str, listeners: &str) -> Petrel {
        Petrel::start_inner(extra, listeners, false)
    }

    fn start_inner(extra: &str, listeners: &str, log: bool) -> Petrel {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("petrel.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n{extra}\n{listeners}",
                data.display().to_string()
            ),
        )
        .unwrap();
        let log = log.then(|| dir.path().join("log.txt"));
        let mut p = Petrel {
            dir,
            config,
            child: None,
            addrs: HashMap::new(),
            log,
        };
        p.spawn();
        p
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) the server process and waits for `ready`.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped());
        match &self.log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                // The config's `log_level` (info unless it says otherwise),
                // which a reload may change.
                cmd.env_remove("RUST_LOG").stderr(Stdio::from(f));
            }
            None => {
                cmd.env(
                    "RUST_LOG",
                    std::env::var("PETREL_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stderr(Stdio::inherit());
            }
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        self.addrs.clear();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "server did not get ready");
            let line = lines.next().expect("server exited before ready").unwrap();
            if line == "ready" {
                break;
            }
            let mut parts = line.split_whitespace();
            assert_eq!(parts.next(), Some("listening"), "unexpected line {line}");
            let module = parts.next().unwrap().to_string();
            let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
            assert_ne!(addr.port(), 0);
            self.addrs.entry(module).or_default().push(addr);
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// The server's resident memory now (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS")
    }

    /// The server's peak resident memory so far (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM")
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addrs["http"][0])
    }

    /// The plain MQTT listener.
    pub fn mqtt(&self) -> SocketAddr {
        self.addrs["mqtt"][0]
    }

    /// The TLS MQTT listener.
    pub fn mqtts(&self) -> SocketAddr {
        self.addrs["mqtt"][1]
    }

    /// A token for `jid` issued through ctl.
    pub fn token(&self, jid: &str, ttl: u64, scopes: &str) -> String {
        self.ctl_ok(&["oauth_issue_token", jid, &ttl.to_string(), scopes])
            .trim()
            .to_string()
    }

    pub fn https(&self) -> String {
        format!("https://localhost:{}", self.addrs["http"][1].port())
    }

    /// Kills the server with SIGKILL (nothing flushed on the way out) and
    /// starts it again on the same data.
    pub fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.spawn();
    }

    /// Kills the server with SIGKILL (nothing flushed on the way out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe_kill(child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `petrel ctl --config … args…`
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_with(&self.config, args)
    }

    /// Runs ctl and requires success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Many admin commands over the admin socket (as `petrel ctl` talks to
    /// a running server), `threads` connections at a time, without a
    /// process per command. Panics on a refusal; returns the outputs in
    /// order.
    pub fn admin_many(&self, cmds: Vec<Vec<String>>, threads: usize) -> Vec<String> {
        let path = self.data_dir().join("petrel.sock");
        let cmds = std::sync::Arc::new(cmds);
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (cmds, next, path) = (cmds.clone(), next.clone(), path.clone());
            handles.push(std::thread::spawn(move || {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(args) = cmds.get(i) else { return out };
                    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                    let mut req = serde_json::to_vec(&serde_json::json!({ "args": args })).unwrap();
                    req.push(b'\n');
                    std::io::Write::write_all(&mut s, &req).unwrap();
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line).unwrap();
                    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(reply["code"], 0, "admin {args:?}: {reply}");
                    out.push((i, reply["output"].as_str().unwrap_or("").to_string()));
                }
            }));
        }
        let mut all: Vec<(usize, String)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, o)| o).collect()
    }

    /// A registered user and a password-grant client, the usual starting point.
    pub fn with_user_and_client(self) -> Petrel {
        self.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
        self.ctl_ok(&["oauth_add_client_password", "app", "Test App", "app-secret"]);
        self
    }
}

impl Drop for Petrel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn ctl_with(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["ctl", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A field of `/proc/PID/status` given in kB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x):
/// lets a test be a second client address on one machine.
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        sock.connect(to).await.unwrap()
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

fn unsafe_kill(pid: u32, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A blocking HTTP client that trusts the development certificate and does not
/// follow redirects (the tests look at them).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs a form; returns status, headers and JSON body (Null when not JSON).
pub fn post_form(
    url: &str,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let r = client().post(url).form(form).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The password grant with the usual client.
pub fn password_grant(
    base: &str,
    user: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut form = vec![
        ("grant_type", "password"),
        ("username", user),
        ("password", password),
        ("client_id", "app"),
        ("client_secret", "app-secret"),
    ];
    form.extend_from_slice(extra);
    let (s, _, v) = post_form(&format!("{base}/oauth/token"), &form);
    (s, v)
}

/// Whether a peer program is installed. Without it the test says so and
/// passes, unless `PETREL_REQUIRE_PEERS=1` (set by .ci/run, which installs them).
pub fn have_program(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("PETREL_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{name} is required (PETREL_REQUIRE_PEERS=1) but not installed"
        );
        eprintln!("SKIPPED: {name} is not installed (README lists the test peers and how to install them)");
    }
    found
}
