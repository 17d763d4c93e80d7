//! Admin commands against a running and a stopped server, restarts, shutdown
//! and configuration errors.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{ctl_with, password_grant, Petrel, BIN};

#[test]
fn ctl_gives_the_same_results_online_and_offline() {
    let mut p = Petrel::start("");
    // Online: through the admin socket, which only the owner may use.
    let sock = p.data_dir().join("petrel.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(p.ctl_ok(&["status"]).contains("running"));
    assert_eq!(
        p.ctl_ok(&["register", "alice", "localhost", "pw1"]).trim(),
        "User alice@localhost successfully registered"
    );
    let dup = p.ctl(&["register", "alice", "localhost", "pw1"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let token = p
        .ctl_ok(&[
            "oauth_issue_token",
            "alice@localhost",
            "3600",
            "sasl_auth;mqtt:publish:a/#",
        ])
        .trim()
        .to_string();
    assert!(token.len() >= 32);
    let online_list = p.ctl_ok(&["oauth_list_tokens"]);
    assert!(
        online_list.contains(" alice@localhost sasl_auth;mqtt:publish:a/# "),
        "{online_list}"
    );
    assert!(!online_list.contains(&token), "never the secret");
    assert_eq!(p.ctl_ok(&["stats", "registeredusers"]).trim(), "1");
    assert_eq!(p.ctl(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(p.ctl(&["register", "only-one-arg"]).status.code(), Some(2));

    assert_eq!(p.stop(), Some(0));
    assert!(!sock.exists(), "socket removed at shutdown");

    // Offline: the store directly, same answers.
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]), online_list);
    assert_eq!(p.ctl_ok(&["registered-users", "localhost"]).trim(), "alice");
    let dup = p.ctl(&["register", "alice", "localhost", "pw1"]);
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(p.ctl(&["status"]).status.code(), Some(1));
    assert_eq!(
        p.ctl_ok(&["register", "bob", "localhost", "pw2"]).trim(),
        "User bob@localhost successfully registered"
    );
    let id = online_list.split(' ').next().unwrap();
    assert_eq!(
        p.ctl_ok(&["oauth_revoke_token", id]).trim(),
        "Token revoked"
    );
    assert_eq!(p.ctl(&["oauth_revoke_token", id]).status.code(), Some(1));
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]).trim(), "");
    assert_eq!(
        p.ctl(&["oauth_issue_token", "alice@localhost", "60", "nonsense"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        p.ctl(&["register", "carol", "elsewhere.org", "pw"])
            .status
            .code(),
        Some(1)
    );

    // What was done offline is there when the server is back.
    p.spawn();
    assert_eq!(
        p.ctl_ok(&["registered_users", "localhost"]).trim(),
        "alice\nbob"
    );
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]).trim(), "");
    p.ctl_ok(&["change_password", "bob", "localhost", "pw3"]);
    p.ctl_ok(&["unregister", "alice", "localhost"]);
    assert_eq!(p.ctl_ok(&["registered_users", "localhost"]).trim(), "bob");
}

#[test]
fn restart_keeps_users_clients_and_tokens() {
    let mut p = Petrel::start("").with_user_and_client();
    let (s, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 200);
    let before = p.ctl_ok(&["oauth_list_tokens"]);
    assert_eq!(p.stop(), Some(0));
    p.spawn();
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]), before);
    let (s, _) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 200, "user and client survived");
    // Revoking by the token text works after the restart: the hash was kept.
    assert_eq!(
        p.ctl_ok(&["oauth_revoke_token", v["access_token"].as_str().unwrap()])
            .trim(),
        "Token revoked"
    );
}

#[test]
fn a_killed_server_loses_nothing_it_acknowledged() {
    let mut p = Petrel::start("").with_user_and_client();
    let (s, _) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 200);
    let before = p.ctl_ok(&["oauth_list_tokens"]);
    // SIGKILL: no graceful flush; the token must already be on disk.
    let mut child = p.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]), before);
    p.spawn();
    let (s, _) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 200);
}

#[test]
fn bad_config_stops_serve_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("oauth_expire = \"a month\"\n", "oauth_expire"),
        (
            "[[listen]]\nmodule = \"gopher\"\nport = 70\n",
            "listen[0].module",
        ),
        (
            "oauth_client_id_check = \"sometimes\"\n",
            "oauth_client_id_check",
        ),
        ("hosts = [\"bad host\"]\n", "hosts[0]"),
        ("certfiles = [\"/nonexistent.pem\"]\n", "certfiles[0]"),
        ("this is not toml\n", "syntax"),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{key} in {err}");
        assert!(out.stdout.is_empty());
        // ctl reads the same config and refuses it the same way.
        assert_eq!(ctl_with(&cfg, &["status"]).status.code(), Some(2));
    }
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[[listen]]\nmodule = \"http\"\nport = {port}\n",
            dir.path().join("d").display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&port.to_string()));
    // Stopped before anything was written.
    assert!(
        !dir.path().join("d").exists(),
        "the data directory was made"
    );
}

/// What a newcomer met: `connected_users` with no server says so (exit 1,
/// like `status`); the development certificate names Petrel and the host.
#[test]
fn offline_connected_users_and_the_development_certificate() {
    let mut p = Petrel::start("hosts = [\"chat.example\"]");
    let cert = p.data_dir().join("dev-cert.pem");
    if common::have_program("openssl") {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let subject = String::from_utf8_lossy(&out.stdout);
        assert!(
            subject.contains("chat.example (Petrel development certificate)")
                && subject.contains("O = Petrel"),
            "{subject}"
        );
    }
    p.stop();
    let out = p.ctl(&["connected_users"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}
