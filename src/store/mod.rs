//! SHELL: the redb database.
//!
//! Owns: every table ([`schema`]), the one writer thread ([`writer`]) that
//! performs all write transactions, and the read views the admin socket
//! uses ([`read`]).
//!
//! Invariants:
//! - Durability is decided here and nowhere else: a [`Store::ingest`] call
//!   returns `Ok` only after the write transaction holding the message was
//!   committed with `Durability::Immediate` (fsync). Callers may say `250`
//!   then, and only then.
//! - Everything one message causes (message, raw bytes, Message-ID rows,
//!   ticket, timeline) is written in the same transaction.
//! - Messages that arrive together share one commit (group commit); each
//!   caller waits only for the commit that holds its message.
//! - After an I/O error redb refuses writes (`PreviousIo`) until reopened:
//!   the writer reopens the database before the next batch, and every
//!   caller meanwhile gets an error (→ `451`), never a false success.

mod apply;
pub mod read;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};

use redb::Database;
use tokio::sync::oneshot;

pub use apply::{Inbound, Outcome};
pub use writer::WriterHandle;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("the store is not available (reopening after an error, or shutting down)")]
    Unavailable,
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether redb must be reopened before it accepts writes again.
    pub fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::Db(
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::DatabaseClosed
                    | redb::Error::Backend(_)
            )
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// The database handle shared by the writer (which may replace it after an
/// I/O error) and readers (who clone the `Arc` for one transaction).
struct DbSlot {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbSlot {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        match self.db.read() {
            Ok(guard) => guard.clone().ok_or(StoreError::Unavailable),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder().create(path)?;
    Ok(db)
}

pub(crate) enum StoreCmd {
    Ingest(Box<Inbound>),
}

pub(crate) struct Job {
    cmd: StoreCmd,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

pub(crate) enum WriterMsg {
    Job(Job),
    Shutdown,
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    slot: Arc<DbSlot>,
    tx: mpsc::Sender<WriterMsg>,
}

impl Store {
    /// Opens (or creates) `data_dir/postdesk.redb` and starts the writer.
    pub fn open(data_dir: &Path) -> Result<(Store, WriterHandle), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("postdesk.redb");
        let db = open_db(&path)?;
        writer::init_tables(&db)?;
        let slot = Arc::new(DbSlot {
            path,
            db: RwLock::new(Some(Arc::new(db))),
        });
        let (tx, rx) = mpsc::channel();
        let handle = writer::spawn(slot.clone(), rx, tx.clone())?;
        Ok((Store { slot, tx }, handle))
    }

    /// Threads and durably commits one inbound message. `Ok` means the
    /// message is on disk.
    pub async fn ingest(&self, inbound: Inbound) -> Result<Outcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            cmd: StoreCmd::Ingest(Box::new(inbound)),
            reply,
        };
        self.tx
            .send(WriterMsg::Job(job))
            .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Runs `f` on a read transaction, on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let slot = self.slot.clone();
        let task = tokio::task::spawn_blocking(move || {
            let db = slot.get()?;
            let txn = redb::ReadableDatabase::begin_read(&*db)?;
            f(&txn)
        });
        task.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Asks the writer to finish what is queued and stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(WriterMsg::Shutdown);
    }
}
