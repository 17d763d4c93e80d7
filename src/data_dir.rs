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

/// `dir` 0700, its files 0600 and its directories 0700, recursively
/// (symbolic links are left alone).
pub fn tighten(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten(&entry.path())?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
            }
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
}
