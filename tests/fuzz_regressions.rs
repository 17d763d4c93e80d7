//! The fuzz harnesses (`petrel::fuzzing`) on stable: every hand-made seed
//! in `fuzz/corpus/<target>/seed-*` and every input a fuzzer once broke
//! the server with, kept in `fuzz/regressions/<target>/`, must pass.

use std::path::Path;

type Harness = fn(&[u8]);

fn mqtt_connection(data: &[u8]) {
    petrel::fuzzing::mqtt_connection(data);
}

fn xmpp_session(data: &[u8]) {
    petrel::fuzzing::xmpp_session(data);
}

const TARGETS: &[(&str, Harness)] = &[
    ("mqtt_connection", mqtt_connection),
    ("xmpp_session", xmpp_session),
    ("oauth_request", petrel::fuzzing::oauth_request),
    ("stored_records", petrel::fuzzing::stored_records),
    ("config", petrel::fuzzing::config),
];

fn files(dir: &Path, seeds_only: bool) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.starts_with('.') && (!seeds_only || name.starts_with("seed-"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_and_kept_crashes_pass_every_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, harness) in TARGETS {
        let seeds = files(&root.join("corpus").join(target), true);
        assert!(!seeds.is_empty(), "{target} has no seeds");
        let kept = files(&root.join("regressions").join(target), false);
        for input in seeds.iter().chain(&kept) {
            let data = std::fs::read(input).unwrap();
            eprintln!("{target}: {}", input.display());
            harness(&data);
        }
    }
}

/// Short inputs and each selector of the harnesses' own layouts.
#[test]
fn edge_inputs_pass_every_harness() {
    for (_, harness) in TARGETS {
        harness(&[]);
        for b in 0..=255u8 {
            harness(&[b]);
            harness(&[b, b]);
        }
    }
}

/// The session harnesses get past login with their seeds (a harness that
/// stopped at login would fuzz nothing after it).
#[test]
fn seeds_reach_the_session_after_login() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for seed in files(&root.join("xmpp_session"), true) {
        let n = petrel::fuzzing::xmpp_session(&std::fs::read(&seed).unwrap());
        assert!(n > 0, "{}: no stanza handled", seed.display());
    }
    for seed in files(&root.join("mqtt_connection"), true) {
        let data = std::fs::read(&seed).unwrap();
        let n = petrel::fuzzing::mqtt_connection(&data);
        if data[1] != 0 {
            assert!(n > 0, "{}: no packet handled after login", seed.display());
        }
    }
}
