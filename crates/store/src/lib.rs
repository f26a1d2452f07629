//! Persistence: content-addressed blob files (a blob is stored once, under
//! the BLAKE3 hash of its bytes, and never changes) and the node's SQLite
//! database ([`Db`]).
//!
//! Writes go to a temporary file that is renamed into place after its hash
//! is known, so a crash never leaves a blob whose name lies about its bytes.

mod db;

pub use db::{Attempt, Db, JobEnd, JobRecord, Reputation, Run, RunTotals, SettledTask};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use types::BlobHash;

/// Largest blob accepted; inputs beyond this belong in a data service.
pub const BLOB_BYTES_MAX: u64 = 4 * types::limits::GIB;
const COPY_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("blob {expected} arrived with hash {actual}: refused")]
    HashMismatch { expected: String, actual: String },
    #[error("{path}: {size_bytes} bytes is over the blob limit of {limit_bytes} (BLOB_BYTES_MAX)")]
    TooLarge {
        path: String,
        size_bytes: u64,
        limit_bytes: u64,
    },
    #[error("the database holds something unreadable: {what}")]
    Corrupt { what: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
        Ok(BlobStore { root })
    }

    /// Where the blob lives (whether or not it is present).
    pub fn path(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.path(hash).is_file()
    }

    /// Stores a copy of the file at `source`; returns its hash.
    pub fn put_file(&self, source: &Path) -> Result<BlobHash, StoreError> {
        let shown = source.display().to_string();
        let mut file = std::fs::File::open(source).map_err(io(format!("open {shown}")))?;
        let size = file.metadata().map_err(io(format!("stat {shown}")))?.len();
        if size > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge {
                path: shown,
                size_bytes: size,
                limit_bytes: BLOB_BYTES_MAX,
            });
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root)
            .map_err(io(format!("create a file in {}", self.root.display())))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; COPY_CHUNK_BYTES];
        let mut copied = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io(format!("read {shown}")))?;
            if n == 0 {
                break;
            }
            copied += n as u64;
            if copied > BLOB_BYTES_MAX {
                return Err(StoreError::TooLarge {
                    path: shown,
                    size_bytes: copied,
                    limit_bytes: BLOB_BYTES_MAX,
                });
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io("write blob"))?;
        }
        let hash = BlobHash::from(hasher.finalize());
        self.commit(tmp, &hash)?;
        Ok(hash)
    }

    /// Stores bytes held in memory; returns their hash.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobHash, StoreError> {
        let hash = BlobHash::of(bytes);
        if self.contains(&hash) {
            return Ok(hash);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root).map_err(io("create blob"))?;
        tmp.write_all(bytes).map_err(io("write blob"))?;
        self.commit(tmp, &hash)?;
        Ok(hash)
    }

    /// Starts writing a blob that arrives in pieces (from the network); it is
    /// stored only if its bytes hash to what was asked for.
    pub fn writer(&self) -> Result<BlobWriter<'_>, StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(&self.root).map_err(io("create blob"))?;
        Ok(BlobWriter {
            store: self,
            tmp,
            hasher: blake3::Hasher::new(),
            written: 0,
        })
    }

    fn commit(&self, tmp: tempfile::NamedTempFile, hash: &BlobHash) -> Result<(), StoreError> {
        let target = self.path(hash);
        if target.is_file() {
            return Ok(()); // same name, same bytes
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        }
        tmp.as_file().sync_all().map_err(io("sync blob"))?;
        tmp.persist(&target).map_err(|e| StoreError::Io {
            context: format!("store {}", target.display()),
            source: e.error,
        })?;
        Ok(())
    }
}

pub struct BlobWriter<'a> {
    store: &'a BlobStore,
    tmp: tempfile::NamedTempFile,
    hasher: blake3::Hasher,
    written: u64,
}

impl BlobWriter<'_> {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.written += bytes.len() as u64;
        if self.written > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge {
                path: "incoming blob".into(),
                size_bytes: self.written,
                limit_bytes: BLOB_BYTES_MAX,
            });
        }
        self.hasher.update(bytes);
        self.tmp.write_all(bytes).map_err(io("write blob"))
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn finish(self, expected: &BlobHash) -> Result<(), StoreError> {
        let actual = BlobHash::from(self.hasher.finalize());
        if actual != *expected {
            return Err(StoreError::HashMismatch {
                expected: expected.to_hex(),
                actual: actual.to_hex(),
            });
        }
        self.store.commit(self.tmp, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_once_under_its_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path().join("blobs")).expect("open");
        let source = dir.path().join("input.txt");
        std::fs::write(&source, b"hello plexus").expect("write");
        let h1 = store.put_file(&source).expect("put");
        let h2 = store.put_bytes(b"hello plexus").expect("put");
        assert_eq!(h1, h2);
        assert_eq!(h1, BlobHash::of(b"hello plexus"));
        assert_eq!(
            std::fs::read(store.path(&h1)).expect("read"),
            b"hello plexus"
        );
        assert!(!store.contains(&BlobHash::of(b"other")));
    }

    #[test]
    fn a_blob_whose_bytes_do_not_match_its_hash_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path()).expect("open");
        let mut w = store.writer().expect("writer");
        w.write(b"hello ").expect("write");
        w.write(b"plexus").expect("write");
        w.finish(&BlobHash::of(b"hello plexus")).expect("matches");
        let mut w = store.writer().expect("writer");
        w.write(b"forged").expect("write");
        let expected = BlobHash::of(b"genuine");
        assert!(matches!(
            w.finish(&expected),
            Err(StoreError::HashMismatch { .. })
        ));
        assert!(!store.contains(&expected));
    }
}
