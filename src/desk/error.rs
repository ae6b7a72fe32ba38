//! The one error type of a desk transaction, whichever engine runs it:
//! the command's own fault (what it names does not exist, a record does
//! not decode), or the engine's (the disk, the database, the journal).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Db(#[from] redb::Error),
    /// With the causes tokio-postgres keeps behind its own words ("db
    /// error", "error performing TLS handshake").
    #[error("database: {}", with_causes(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// The database could not be reached (the pool's own errors).
    #[error("database: {0}")]
    Database(String),
    /// The store must not be served as it is (its schema, its durability
    /// settings, its URL): a one-line reason for the operator.
    #[error("{0}")]
    Refused(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("the store is not available (reopening after an error, or shutting down)")]
    Unavailable,
    /// A command named a ticket, status or user that does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob file {path}: {source}")]
    Blobs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the error belongs to the command itself (its data or what
    /// it names), so that applying it again fails the same way; anything
    /// else (the disk, the blob file, the database) may pass.
    pub fn is_entry_fault(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt(_) | StoreError::NotFound(_) | StoreError::Invalid(_)
        )
    }

    /// Whether redb must be reopened before it accepts writes again.
    pub fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::Db(
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::DatabaseClosed
                    | redb::Error::Backend(_)
            ) | StoreError::Journal { .. }
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

/// `e` and its sources, each once: "error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer".
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
