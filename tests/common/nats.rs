//! A throw-away NATS server (Debian package nats-server) on a free loopback
//! port, for the cluster tests of one test binary; killed with it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Nats {
    child: Child,
    pub port: u16,
}

impl Nats {
    /// `None` when nats-server is not installed (the caller skips, unless
    /// `PETREL_REQUIRE_PEERS` says it must run).
    pub fn start() -> Option<Nats> {
        if !super::have_program("nats-server") {
            assert!(
                std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
                "nats-server (Debian package nats-server) is required"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It says so on stderr once it accepts clients (or exits: EOF).
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let ready = lines.any(|l| l.is_ok_and(|l| l.contains("Server is ready")));
        assert!(ready, "nats-server did not start");
        // Keep draining it so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(Nats { child, port })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
