//! Uploaded files on disk, under `<data_dir>/upload/`:
//!
//! * `key` — the 32-byte HMAC key of the PUT URLs (0600, made once);
//! * `files/<id>.data` — a file's bytes, `files/<id>.meta` — its JSON
//!   metadata (name, content type, size, owner, when stored). A file exists
//!   once its `.meta` does; a `.data` without one (a crash in between) is
//!   removed at start;
//! * `tmp/` — bodies being received, emptied at start.
//!
//! A PUT streams to a temporary file, fsyncs it, then hard-links it to its
//! final name — which fails if the name exists, so a file is never
//! overwritten and of two PUTs racing one wins — writes the metadata the
//! same way, and fsyncs the directory before the 201.
//!
//! Quota: the bytes each account has stored (and is uploading) are counted
//! in memory, one number per account with files, rebuilt from the metadata
//! files at start. Expiry walks the metadata files with the time passed in.
//!
//! Everything here blocks: call it from `spawn_blocking`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::slot::is_id;

/// What `files/<id>.meta` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    /// The bare JID whose quota it counts against.
    pub owner: String,
    /// Unix seconds when it was stored.
    pub created: u64,
}

/// Why a finished upload could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("a file is already stored under this slot")]
    Exists,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The upload directory and the per-account usage.
pub struct FileStore {
    files: PathBuf,
    tmp: PathBuf,
    /// Bytes stored or being uploaded, per owner (only owners with some).
    usage: Mutex<HashMap<String, u64>>,
}

impl FileStore {
    /// Opens (or makes) `root` (`<data_dir>/upload`): empties `tmp/`, drops
    /// data without metadata, and counts each account's stored bytes.
    pub fn open(root: &Path) -> io::Result<FileStore> {
        let files = root.join("files");
        let tmp = root.join("tmp");
        for d in [root, &files, &tmp] {
            std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
                .create(d)?;
        }
        for e in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(e?.path());
        }
        let store = FileStore {
            files,
            tmp,
            usage: Mutex::new(HashMap::new()),
        };
        let mut usage = HashMap::new();
        for e in fs::read_dir(&store.files)? {
            let path = e?.path();
            let Some((id, ext)) = file_id(&path) else {
                continue;
            };
            match ext {
                "meta" => match store.meta(id) {
                    Ok(Some(m)) => *usage.entry(m.owner).or_insert(0) += m.size,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unreadable upload metadata: file removed");
                        store.remove(id);
                    }
                },
                "data" if !store.meta_path(id).exists() => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
        *store.usage.lock().unwrap_or_else(|p| p.into_inner()) = usage;
        Ok(store)
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.files.join(format!("{id}.meta"))
    }

    /// Where a stored file's bytes are.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.files.join(format!("{id}.data"))
    }

    /// A fresh temporary path (`nonce` random hex).
    pub fn tmp_path(&self, nonce: &str) -> PathBuf {
        self.tmp.join(nonce)
    }

    /// Bytes `owner` has stored or is uploading.
    pub fn used(&self, owner: &str) -> u64 {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.get(owner).copied().unwrap_or(0)
    }

    /// Counts `size` more bytes for `owner` if that stays within `quota`.
    pub fn reserve(&self, owner: &str, size: u64, quota: u64) -> bool {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let used = usage.get(owner).copied().unwrap_or(0);
        if used.saturating_add(size) > quota {
            return false;
        }
        usage.insert(owner.to_string(), used + size);
        true
    }

    /// Gives back bytes counted by [`Self::reserve`] or a deleted file's.
    pub fn release(&self, owner: &str, size: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(used) = usage.get_mut(owner) {
            *used = used.saturating_sub(size);
            if *used == 0 {
                usage.remove(owner);
            }
        }
    }

    /// Whether something is stored under `id` (or its bytes are).
    pub fn exists(&self, id: &str) -> bool {
        self.meta_path(id).exists() || self.data_path(id).exists()
    }

    /// The metadata of the file stored under `id`, if any.
    pub fn meta(&self, id: &str) -> io::Result<Option<Meta>> {
        match fs::read(self.meta_path(id)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores the (already fsynced) temporary file `tmp` under `id` with
    /// `meta`, never over an existing one; durable when it returns.
    pub fn commit(&self, id: &str, tmp: &Path, meta: &Meta) -> Result<(), CommitError> {
        let data = self.data_path(id);
        let linked = fs::hard_link(tmp, &data);
        let _ = fs::remove_file(tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(CommitError::Exists),
            Err(e) => return Err(e.into()),
        }
        let written = (|| -> io::Result<()> {
            let tmp_meta = self.tmp.join(format!("{id}.meta"));
            write_synced(
                &tmp_meta,
                &serde_json::to_vec(meta).map_err(io::Error::other)?,
            )?;
            fs::rename(&tmp_meta, self.meta_path(id))?;
            fs::File::open(&self.files)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&data);
            return Err(e.into());
        }
        Ok(())
    }

    /// Deletes what is stored under `id` (metadata first: from then on it
    /// is gone).
    fn remove(&self, id: &str) {
        let _ = fs::remove_file(self.meta_path(id));
        let _ = fs::remove_file(self.data_path(id));
    }

    /// Deletes the files stored before `now - max_days` (unix seconds;
    /// `max_days` 0 keeps them for ever) and gives their bytes back to
    /// their owners' quotas. Returns how many went.
    pub fn sweep(&self, now: u64, max_days: u64) -> io::Result<usize> {
        if max_days == 0 {
            return Ok(0);
        }
        let cutoff = now.saturating_sub(max_days.saturating_mul(86_400));
        let mut deleted = 0;
        for e in fs::read_dir(&self.files)? {
            let path = e?.path();
            let Some((id, "meta")) = file_id(&path) else {
                continue;
            };
            if let Ok(Some(m)) = self.meta(id) {
                if m.created < cutoff {
                    self.remove(id);
                    self.release(&m.owner, m.size);
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

/// `(id, extension)` of a file in `files/`.
fn file_id(path: &Path) -> Option<(&str, &str)> {
    let name = path.file_name()?.to_str()?;
    let (id, ext) = name.split_once('.')?;
    is_id(id).then_some((id, ext))
}

/// Writes a whole file, 0600, and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn meta(owner: &str, size: u64, created: u64) -> Meta {
        Meta {
            name: "f.txt".into(),
            content_type: "text/plain".into(),
            size,
            owner: owner.into(),
            created,
        }
    }

    fn put(s: &FileStore, id: &str, m: &Meta) -> Result<(), CommitError> {
        let tmp = s.tmp_path(&format!("t{id}"));
        write_synced(&tmp, &vec![b'x'; m.size as usize]).unwrap();
        s.commit(id, &tmp, m)
    }

    #[test]
    fn stored_files_are_never_overwritten_and_counted_again_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        assert!(s.reserve("a@x", 10, 15));
        assert!(!s.reserve("a@x", 10, 15), "over quota");
        put(&s, A, &meta("a@x", 10, 100)).unwrap();
        assert!(s.exists(A));
        assert!(matches!(
            put(&s, A, &meta("a@x", 3, 100)),
            Err(CommitError::Exists)
        ));
        assert_eq!(
            fs::read(s.data_path(A)).unwrap().len(),
            10,
            "first one kept"
        );
        assert_eq!(s.meta(A).unwrap(), Some(meta("a@x", 10, 100)));
        assert_eq!(s.meta(B).unwrap(), None);
        // Leftovers of a crash: a temporary file, data without metadata.
        fs::write(s.tmp_path("left"), b"x").unwrap();
        fs::write(s.data_path(B), b"orphan").unwrap();
        drop(s);
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.used("a@x"), 10);
        assert!(!s.exists(B));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn the_sweep_deletes_files_older_than_max_days_and_frees_their_quota() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        let day = 86_400;
        let t0 = 1_800_000_000;
        s.reserve("a@x", 5, 100);
        put(&s, A, &meta("a@x", 5, t0)).unwrap();
        s.reserve("a@x", 7, 100);
        put(&s, B, &meta("a@x", 7, t0 + 10 * day)).unwrap();
        assert_eq!(s.used("a@x"), 12);
        assert_eq!(s.sweep(t0 + 30 * day, 30).unwrap(), 0, "not yet");
        assert_eq!(s.sweep(t0 + 31 * day, 0).unwrap(), 0, "0 keeps for ever");
        assert_eq!(s.sweep(t0 + 31 * day, 30).unwrap(), 1);
        assert!(!s.exists(A));
        assert!(s.exists(B));
        assert_eq!(s.used("a@x"), 7);
        assert_eq!(s.sweep(t0 + 41 * day, 30).unwrap(), 1);
        assert_eq!(s.used("a@x"), 0);
        assert_eq!(fs::read_dir(dir.path().join("files")).unwrap().count(), 0);
    }
}
