//! MQTT.js (npm `mqtt`), the client whose `handleAuth` answers a server AUTH.
//! Installed on first use into `target/test-node` from `tests/js/package.json`,
//! under a lock directory like the Python venv.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `node_modules/mqtt`, installed on first use.
pub fn node_dir() -> PathBuf {
    let dir = root().join("target").join("test-node");
    let manifest = std::fs::read_to_string(root().join("tests/js/package.json")).unwrap();
    let stamp = dir.join("petrel-package.json");
    let ready = || std::fs::read_to_string(&stamp).ok().as_deref() == Some(manifest.as_str());
    if ready() {
        return dir;
    }
    std::fs::create_dir_all(root().join("target")).unwrap();
    let lock = root().join("target").join("test-node.lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::fs::create_dir(&lock).is_err() {
        if ready() {
            return dir;
        }
        assert!(
            Instant::now() < deadline,
            "waited too long for {}",
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let result = (|| -> Result<(), String> {
        if ready() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("package.json"), &manifest).map_err(|e| e.to_string())?;
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(&stamp, &manifest).map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir(&lock);
    if let Err(e) = result {
        panic!("could not prepare the JavaScript test clients: {e}");
    }
    dir
}

/// Runs `tests/js/<script>` with node; returns (success, stdout, stderr).
pub fn run_js(script: &str, args: &[&str]) -> (bool, String, String) {
    let dir = node_dir();
    let out = Command::new("node")
        .arg(root().join("tests/js").join(script))
        .args(args)
        .env("NODE_PATH", dir.join("node_modules"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
