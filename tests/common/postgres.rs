//! A throw-away PostgreSQL server for the tests of one test binary:
//! started once (initdb into a temp dir, loopback on a free port), a fresh
//! database per caller, stopped when the test process ends (a watcher
//! process waits for it to exit). As root, the server runs as the
//! `postgres` user (PostgreSQL refuses to run as root).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Pg {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

static PG: OnceLock<Option<Pg>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// PostgreSQL's programs: Debian keeps them in /usr/lib/postgresql/<v>/bin.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Pg {
    fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start() -> Option<Pg> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg {
            _dir: dir,
            bin,
            port,
            as_postgres,
        };
        let root = pg._dir.path();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = root.join("data");
        let out = pg
            .cmd("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "petrel",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c max_connections=200",
            root.display()
        );
        let out = pg
            .cmd("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(root.join("log"))
            .args(["-o", &opts, "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {out:?}");
        // Stopped when this test process exits, however it exits.
        let stop = format!(
            "tail --pid={} -f /dev/null; {} -D {} -m immediate stop",
            std::process::id(),
            if as_postgres {
                format!("runuser -u postgres -- {}", pg.bin.join("pg_ctl").display())
            } else {
                pg.bin.join("pg_ctl").display().to_string()
            },
            data.display()
        );
        // Not waited for: it outlives this process on purpose.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(pg)
    }

    /// Runs SQL on the database of `url` (one made by [`Pg::database`]).
    pub fn sql(&self, url: &str, sql: &str) {
        let db = url.rsplit('/').next().unwrap();
        let out = self
            .cmd("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "petrel",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {out:?}");
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let out = self
            .cmd("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "petrel",
                &name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "createdb: {out:?}");
        format!("postgres://petrel@127.0.0.1:{}/{name}", self.port)
    }
}

/// The server, started on first use; `None` when PostgreSQL is not
/// installed (then the caller skips, unless `PETREL_REQUIRE_PEERS` says
/// it must run).
pub fn pg() -> Option<&'static Pg> {
    let pg = PG.get_or_init(Pg::start).as_ref();
    if pg.is_none() {
        assert!(
            std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
            "PostgreSQL (Debian package postgresql) is required"
        );
    }
    pg
}
