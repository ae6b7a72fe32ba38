//! The redb engine: one database file (`postdesk.redb`), the raw
//! messages' file ([`blobs`]), the write-ahead journal ([`journal`]), the
//! one writer thread ([`writer`]) that applies every command through
//! [`tables::Tables`], this engine's [`crate::desk::Txn`], and the reads
//! behind `Store`'s typed reads ([`read`]).

pub(super) mod blobs;
pub(super) mod export;
mod journal;
pub(super) mod read;
pub(super) mod schema;
mod tables;
pub(super) mod window;
pub(super) mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use redb::Database;

use super::{Delivery, Done, Job, StoreCmd, StoreError, WriterMsg};
use blobs::BlobFile;

/// The database handle shared by the writer (which may replace it after an
/// I/O error) and readers (who clone the `Arc` for one transaction).
pub(super) struct DbSlot {
    pub(super) path: PathBuf,
    pub(super) cache: usize,
    pub(super) db: RwLock<Option<Arc<Database>>>,
    /// The raw messages ([`blobs`]); never reopened.
    pub(super) blobs: Arc<BlobFile>,
    /// Set by the writer while batches it has answered are applied in a
    /// write transaction not yet committed to redb (they are durable in the
    /// journal); a reader then asks the writer to commit first.
    pub(super) uncommitted: AtomicBool,
}

impl Drop for DbSlot {
    /// The last handle to redb may close with the slot (at shutdown, or a
    /// failed open), making pending in-memory commits durable: the bytes
    /// they name go to disk first.
    fn drop(&mut self) {
        self.blobs.sync();
    }
}

impl DbSlot {
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        match self.db.read() {
            Ok(guard) => guard.clone().ok_or(StoreError::Unavailable),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

/// Opens (or creates) a file of the store for reading and writing; a new
/// file's directory entry is synced at once, since durable state will
/// depend on the file being there.
fn open_store_file(path: &Path) -> std::io::Result<std::fs::File> {
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if !existed {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(file)
}

/// A scratch database with every table, and its blob file, in `dir`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) fn scratch_store(dir: &Path) -> (Database, BlobFile) {
    let db = Database::create(dir.join("postdesk.redb")).unwrap();
    writer::init_tables(&db).unwrap();
    let blobs = BlobFile::open(&dir.join("postdesk.blobs")).unwrap();
    (db, blobs)
}

/// `cache` is redb's page cache (`server.store_cache`).
pub(super) fn open_db(path: &Path, cache: usize) -> Result<Database, StoreError> {
    let db = Database::builder().set_cache_size(cache).create(path)?;
    Ok(db)
}
