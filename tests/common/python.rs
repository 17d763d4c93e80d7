//! The Python clients (paho-mqtt, slixmpp) used as independent peers.
//!
//! `cargo test` must work on a fresh machine with nothing installed by hand, so
//! the first test that needs Python creates a venv in `target/test-venv` from
//! `tests/python-requirements.txt`. A lock directory keeps parallel test
//! binaries from building it twice; a stamp file records what was installed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, created and filled on first use.
pub fn python() -> PathBuf {
    let venv = root().join("target").join("test-venv");
    let py = venv.join("bin").join("python");
    let reqs = std::fs::read_to_string(root().join("tests/python-requirements.txt")).unwrap();
    let stamp = venv.join("petrel-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(reqs.as_str()) {
        return py;
    }
    let lock = root().join("target").join("test-venv.lock");
    std::fs::create_dir_all(root().join("target")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    // mkdir is atomic: whoever creates the lock builds the venv.
    while std::fs::create_dir(&lock).is_err() {
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(reqs.as_str()) {
            return py;
        }
        assert!(
            Instant::now() < deadline,
            "waited too long for {}",
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let result = (|| {
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(reqs.as_str()) {
            return Ok(());
        }
        if !py.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        run(Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root().join("tests/python-requirements.txt")))?;
        std::fs::write(&stamp, &reqs).map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir(&lock);
    if let Err(e) = result {
        panic!("could not prepare the Python test clients: {e}");
    }
    py
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a Python script with the venv; returns (success, stdout, stderr).
pub fn run_script(script: &str, args: &[&str], timeout: Duration) -> (bool, String, String) {
    let py = python();
    let mut child = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
