//! Raw message bytes, outside the database: `postdesk.blobs`, one
//! append-only file next to `postdesk.redb`.
//!
//! A message row names its bytes by offset, length and CRC-32
//! ([`BlobRef`]). Writing them into redb cost a B-tree insert, fresh pages
//! and their checksums per message, and wrote every page again at each
//! checkpoint; here a batch's bytes are one `pwrite`.
//!
//! Invariants:
//! - `meta.blob_len`, in the same transaction as the rows that name bytes,
//!   is where the next bytes go. A batch's bytes are written at that offset
//!   *before* its transaction commits, so a reader that sees a row finds
//!   its bytes; bytes beyond the committed `blob_len` belong to a batch
//!   that did not commit and are overwritten by the next one.
//! - The file is `fdatasync`ed before every durable (`Immediate`) redb
//!   commit and before a database handle is closed (closing makes pending
//!   in-memory commits durable), so redb's durable state never names bytes
//!   that are not on disk; a failed sync stops the process ([`BlobFile::sync`]). Batches after that commit are in the journal: replaying them
//!   writes their bytes again from the durable `blob_len`.
//! - The file never shrinks; its length is at least the durable
//!   `blob_len`, or the store refuses to open (bytes it names are missing).
//!
//! Rows written by builds before this file existed keep their bytes in the
//! `raw` table and are read from there.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::StoreError;

pub use crate::desk::records::BlobRef;

/// The open blob file, shared by the writer and readers (positioned reads
/// and writes only, so no cursor is shared).
pub struct BlobFile {
    path: PathBuf,
    file: File,
    /// Tests: a disk that breaks on a given write and stays broken.
    #[cfg(test)]
    pub(in crate::store) fault: std::sync::Mutex<Fault>,
}

/// Tests: the first write holding `marker` fails, and every write after it
/// until the test clears `failing`.
#[cfg(test)]
#[derive(Default)]
pub(in crate::store) struct Fault {
    pub marker: Option<Vec<u8>>,
    pub failing: bool,
}

impl BlobFile {
    /// Opens (or creates) the file; a new file's directory entry is synced
    /// at once, since durable rows will name bytes in it.
    pub fn open(path: &Path) -> Result<BlobFile, StoreError> {
        let file = super::open_store_file(path).map_err(|e| blob_error(path, e))?;
        Ok(BlobFile {
            path: path.to_path_buf(),
            file,
            #[cfg(test)]
            fault: std::sync::Mutex::new(Fault::default()),
        })
    }

    /// Fails unless the file holds the `durable` bytes the database names.
    pub fn check_len(&self, durable: u64) -> Result<(), StoreError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| blob_error(&self.path, e))?
            .len();
        if len < durable {
            return Err(blob_error(
                &self.path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "holds {len} bytes but the database names {durable}: the raw \
                         messages of this database are missing (a backup or restore that \
                         left this file out?); put back the file that belongs to it"
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// Writes a batch's bytes at `at` (the transaction's `blob_len` before
    /// the batch).
    pub fn write_at(&self, bytes: &[u8], at: u64) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if let Ok(mut fault) = self.fault.lock() {
            let hit = fault
                .marker
                .as_deref()
                .is_some_and(|m| bytes.windows(m.len()).any(|w| w == m));
            if fault.failing || hit {
                fault.failing = true;
                return Err(blob_error(
                    &self.path,
                    std::io::Error::other("injected write failure"),
                ));
            }
        }
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| blob_error(&self.path, e))
    }

    /// Makes every byte written so far durable, or stops the process.
    ///
    /// A failed `fdatasync` may have dropped the pages it could not write
    /// (a later one then succeeds without them), and closing redb makes its
    /// pending in-memory commits durable: going on, or closing, could leave
    /// a durable database naming bytes that never reached the disk. Stopping
    /// without closing leaves redb at its last checkpoint and the journal
    /// holding every batch since; the restart replays them and writes their
    /// bytes again (PostgreSQL treats a failed fsync the same way).
    pub fn sync(&self) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot sync the blob file; stopping without closing the database (the restart replays the journal)"
            );
            std::process::abort();
        }
    }

    /// The bytes `r` names, checked against its CRC.
    pub fn read(&self, r: &BlobRef) -> Result<Vec<u8>, StoreError> {
        // Checked before allocating: a damaged length must not ask for
        // gigabytes.
        let file_len = self
            .file
            .metadata()
            .map_err(|e| blob_error(&self.path, e))?
            .len();
        if r.at.checked_add(r.len).is_none_or(|end| end > file_len) {
            return Err(self.corrupt(r, "beyond the end of the file"));
        }
        let len = usize::try_from(r.len).map_err(|_| self.corrupt(r, "too long"))?;
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, r.at).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.corrupt(r, "beyond the end of the file")
            } else {
                blob_error(&self.path, e)
            }
        })?;
        if crc32fast::hash(&buf) != r.crc {
            return Err(self.corrupt(r, "checksum mismatch"));
        }
        Ok(buf)
    }

    fn corrupt(&self, r: &BlobRef, what: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "{}: {} bytes at {}: {what}",
            self.path.display(),
            r.len,
            r.at
        ))
    }
}

fn blob_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Blobs {
        path: path.to_path_buf(),
        source,
    }
}

/// The bytes one write transaction adds to the blob file: they go at
/// `base` (the transaction's `blob_len`) and are written just before it
/// commits.
#[derive(Debug, Default)]
pub struct Pending {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl Pending {
    pub fn new(base: u64) -> Pending {
        Pending {
            base,
            bytes: Vec::new(),
        }
    }

    /// Adds `raw` and returns where it will be.
    pub fn push(&mut self, raw: &[u8]) -> BlobRef {
        let r = BlobRef {
            at: self.end(),
            len: raw.len() as u64,
            crc: crc32fast::hash(raw),
        };
        self.bytes.extend_from_slice(raw);
        r
    }

    /// The transaction's `blob_len` after these bytes.
    pub fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    /// The bytes `r` names: from this transaction's own, or from the file.
    pub fn read<'a>(&'a self, file: &BlobFile, r: &BlobRef) -> Result<Cow<'a, [u8]>, StoreError> {
        if r.at >= self.base {
            let from = usize::try_from(r.at - self.base).ok();
            let to = from.and_then(|f| f.checked_add(usize::try_from(r.len).ok()?));
            if let Some(slice) = from.zip(to).and_then(|(f, t)| self.bytes.get(f..t)) {
                return Ok(Cow::Borrowed(slice));
            }
            return Err(file.corrupt(r, "beyond this transaction's bytes"));
        }
        file.read(r).map(Cow::Owned)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_where_pending_put_them_read_back_and_a_damaged_byte_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = BlobFile::open(&dir.path().join("postdesk.blobs")).unwrap();
        let mut first = Pending::new(0);
        let a = first.push(b"first message");
        let b = first.push(b"second");
        assert_eq!(first.read(&file, &b).unwrap().as_ref(), b"second");
        file.write_at(&first.bytes, first.base).unwrap();

        let mut next = Pending::new(first.end());
        let c = next.push(b"third");
        assert_eq!(next.read(&file, &a).unwrap().as_ref(), b"first message");
        assert_eq!(next.read(&file, &c).unwrap().as_ref(), b"third");
        file.write_at(&next.bytes, next.base).unwrap();
        assert_eq!(file.read(&c).unwrap(), b"third");
        file.check_len(next.end()).unwrap();
        assert!(file.check_len(next.end() + 1).is_err());

        file.write_at(b"X", a.at).unwrap();
        let e = file.read(&a).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        let beyond = BlobRef {
            at: next.end(),
            len: 4,
            crc: 0,
        };
        let e = file.read(&beyond).unwrap_err().to_string();
        assert!(e.contains("beyond the end"), "{e}");
        // A damaged length is refused before anything is allocated for it.
        let huge = BlobRef {
            at: 0,
            len: u64::MAX / 2,
            crc: 0,
        };
        let e = file.read(&huge).unwrap_err().to_string();
        assert!(e.contains("beyond the end"), "{e}");
    }

    #[test]
    fn an_uncommitted_batch_is_overwritten_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let file = BlobFile::open(&dir.path().join("postdesk.blobs")).unwrap();
        let mut lost = Pending::new(0);
        lost.push(b"a batch whose transaction failed");
        file.write_at(&lost.bytes, lost.base).unwrap();
        // Its transaction did not commit: blob_len is still 0.
        let mut next = Pending::new(0);
        let r = next.push(b"kept");
        file.write_at(&next.bytes, next.base).unwrap();
        assert_eq!(file.read(&r).unwrap(), b"kept");
    }
}
