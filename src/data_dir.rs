//! The data directory: created readable by the server's user only (0700),
//! with everything in it 0600 (files) or 0700 (directories), so other local
//! users can read neither the store (SCRAM keys, the server key) nor the
//! development key, and cannot reach the admin socket even in the moment
//! between its bind and its chmod. Files sled creates later inherit the
//! directory's protection: nobody else can traverse it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Makes everything this process creates from now on private to its user
/// (umask 077): the store's files, the certificate, the admin socket at its
/// bind. Called first thing by `serve` and by `ctl` without a server.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

/// Creates `dir` (and its parents) 0700 if missing, and tightens what is
/// there already.
pub fn prepare(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir)
}

/// `dir` 0700, and what Petrel keeps in it — the store (files 0600,
/// directories 0700, recursively) and the development certificate and
/// key — owner-only. Nothing else is touched: a `data_dir` pointed at a
/// directory holding other files by mistake must not have them changed.
pub fn tighten(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for name in OWN_ENTRIES {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => tighten_tree(&path)?,
            Ok(m) if m.is_file() => private_file(&path, &m)?,
            _ => {}
        }
    }
    Ok(())
}

/// What Petrel itself creates in the data directory (the admin socket is
/// bound 0600 on its own).
const OWN_ENTRIES: [&str; 5] = [
    "store",
    crate::xmpp::upload::UPLOAD_DIR,
    crate::tls::DEV_CERT,
    crate::tls::DEV_KEY,
    crate::auth::fast::FAST_KEY_FILE,
];

fn private_file(path: &Path, m: &fs::Metadata) -> io::Result<()> {
    if m.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A directory of Petrel's own: 0700, its files 0600, recursively
/// (symbolic links are left alone).
fn tighten_tree(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten_tree(&entry.path())?;
        } else if kind.is_file() {
            private_file(&entry.path(), &entry.metadata()?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_becomes_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/data");
        prepare(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::create_dir(dir.join("store")).unwrap();
        fs::set_permissions(dir.join("store"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("store/db"), "x").unwrap();
        fs::set_permissions(dir.join("store/db"), fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(
            fs::metadata(dir.join("store"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(dir.join("store/db"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    /// Files that are not Petrel's keep their modes.
    #[test]
    fn other_files_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        fs::write(dir.join("notes.sh"), "x").unwrap();
        fs::set_permissions(dir.join("notes.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join(crate::tls::DEV_KEY), "k").unwrap();
        fs::set_permissions(
            dir.join(crate::tls::DEV_KEY),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        prepare(&dir).unwrap();
        let mode = |n: &str| fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("notes.sh"), 0o755);
        assert_eq!(mode(crate::tls::DEV_KEY), 0o600);
    }
}
