//! The one thread that owns redb write transactions, and group commit.
//!
//! Loop: block for the first job, take whatever else is already queued (up
//! to [`MAX_BATCH`]), apply them all in one write transaction, commit once
//! with `Durability::Immediate`, then answer every job of the batch. If the
//! batch fails, each job is retried alone so one bad message cannot fail its
//! neighbours; a storage error answers only its own job. After an I/O error
//! the database is reopened before the next batch.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};

use super::apply::{apply_inbound, Tables};
use super::schema::*;
use super::{open_db, ops, DbSlot, Done, Job, StoreCmd, StoreError, WriterMsg};
use crate::clock;

pub const MAX_BATCH: usize = 256;

pub struct WriterHandle {
    thread: Option<JoinHandle<()>>,
    tx: mpsc::Sender<WriterMsg>,
}

impl WriterHandle {
    /// Tells the writer to stop after the queued jobs and waits for it.
    pub fn join(mut self) {
        let _ = self.tx.send(WriterMsg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn spawn(
    slot: Arc<DbSlot>,
    rx: mpsc::Receiver<WriterMsg>,
    tx: mpsc::Sender<WriterMsg>,
    outbox: Arc<tokio::sync::Notify>,
) -> Result<WriterHandle, StoreError> {
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(&slot, &rx, &outbox))
        .map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
    Ok(WriterHandle {
        thread: Some(thread),
        tx,
    })
}

/// Creates every table so that readers never meet a missing one.
pub(super) fn init_tables(db: &Database) -> Result<(), StoreError> {
    let txn = begin(db)?;
    {
        txn.open_table(META)?;
        txn.open_table(TICKETS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(RAW)?;
        txn.open_table(MESSAGE_IDS)?;
        txn.open_table(TICKET_MESSAGES)?;
        txn.open_table(TIMELINE)?;
        txn.open_table(CONVERSATIONS)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(OUTBOX_DUE)?;
        txn.open_table(AUTO_SENT)?;
    }
    txn.commit()?;
    Ok(())
}

fn begin(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    // Keep the allocator state in each commit so that opening after a crash
    // does not need a full repair scan.
    txn.set_quick_repair(true);
    Ok(txn)
}

fn run(slot: &DbSlot, rx: &mpsc::Receiver<WriterMsg>, outbox: &tokio::sync::Notify) {
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::new();
        match rx.recv() {
            Ok(WriterMsg::Job(job)) => batch.push(job),
            Ok(WriterMsg::Shutdown) | Err(_) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Shutdown) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if process(slot, batch) {
            outbox.notify_one();
        }
    }
    // Jobs still queued behind the shutdown get a clean refusal (→ 451).
    while let Ok(msg) = rx.try_recv() {
        if let WriterMsg::Job(job) = msg {
            let _ = job.reply.send(Err(StoreError::Unavailable));
        }
    }
    tracing::debug!("store writer stopped");
}

/// Commits one batch and answers its jobs; returns whether an email was
/// queued (so the outbox worker is woken).
fn process(slot: &DbSlot, batch: Vec<Job>) -> bool {
    let db = match ensure_open(slot) {
        Ok(db) => db,
        Err(e) => {
            tracing::error!(error = %e, "store unavailable; refusing batch");
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Unavailable));
            }
            return false;
        }
    };
    let started = Instant::now();
    let size = batch.len();
    match commit_batch(&db, &batch) {
        Ok((outcomes, queued)) => {
            let m = &crate::metrics::METRICS;
            crate::metrics::inc(&m.store_commits);
            m.commit_batch.observe(size as u64);
            m.commit_ms.observe(started.elapsed().as_millis() as u64);
            tracing::debug!(
                batch = size,
                ms = started.elapsed().as_millis() as u64,
                "committed"
            );
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
            queued
        }
        Err(e) if size == 1 => {
            if !matches!(e, StoreError::NotFound(_) | StoreError::Invalid(_)) {
                tracing::error!(error = %e, "commit failed");
            }
            reopen_if_needed(slot, db, &e);
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, batch = size, "batch commit failed; retrying one by one");
            // Hand our handle over: a reopen needs every handle dropped.
            reopen_if_needed(slot, db, &e);
            let mut queued = false;
            for job in batch {
                let current = match ensure_open(slot) {
                    Ok(d) => d,
                    Err(err) => {
                        let _ = job.reply.send(Err(err));
                        continue;
                    }
                };
                match commit_batch(&current, std::slice::from_ref(&job)) {
                    Ok((mut outcomes, q)) => {
                        queued |= q;
                        if let Some(o) = outcomes.pop() {
                            let _ = job.reply.send(Ok(o));
                        }
                    }
                    Err(e) => {
                        if !matches!(e, StoreError::NotFound(_) | StoreError::Invalid(_)) {
                            tracing::error!(error = %e, "commit failed");
                        }
                        reopen_if_needed(slot, current, &e);
                        let _ = job.reply.send(Err(e));
                    }
                }
            }
            queued
        }
    }
}

fn commit_batch(db: &Database, batch: &[Job]) -> Result<(Vec<Done>, bool), StoreError> {
    let txn = begin(db)?;
    let now = clock::now_millis();
    let mut outcomes = Vec::with_capacity(batch.len());
    let queued;
    {
        let mut tables = Tables::open(&txn)?;
        for job in batch {
            let done = match &job.cmd {
                StoreCmd::Ingest(inbound) => {
                    Done::Ingested(apply_inbound(&mut tables, inbound, now)?)
                }
                StoreCmd::SetStatus { config, id, status } => {
                    Done::Ticket(ops::set_status(&mut tables, config, *id, status, now)?)
                }
                StoreCmd::Reply {
                    config,
                    id,
                    body,
                    user,
                } => Done::Queued(ops::reply(
                    &mut tables,
                    config,
                    *id,
                    body,
                    user.as_deref(),
                    now,
                )?),
                StoreCmd::Assign { config, id, owner } => {
                    Done::Ticket(ops::assign(&mut tables, config, *id, owner, now)?)
                }
                StoreCmd::Merge {
                    config,
                    source,
                    target,
                } => Done::Ticket(ops::merge(&mut tables, config, *source, *target, now)?),
                StoreCmd::Delivered { id, result } => {
                    ops::delivered(&mut tables, *id, result, now)?;
                    Done::Ok
                }
            };
            outcomes.push(done);
        }
        tables.save_counters()?;
        queued = tables.queued_mail;
    }
    txn.commit()?;
    Ok((outcomes, queued))
}

fn ensure_open(slot: &DbSlot) -> Result<Arc<Database>, StoreError> {
    if let Ok(db) = slot.get() {
        return Ok(db);
    }
    let db = Arc::new(open_db(&slot.path)?);
    if let Ok(mut guard) = slot.db.write() {
        *guard = Some(db.clone());
    }
    tracing::info!(path = %slot.path.display(), "store reopened");
    Ok(db)
}

/// After an I/O error redb answers `PreviousIo` until reopened: drop every
/// handle (waiting briefly for readers to let go of theirs) and reopen.
///
/// Takes the caller's handle so that it cannot be the one keeping the old
/// database alive. Readers hold theirs for one transaction only.
fn reopen_if_needed(slot: &DbSlot, db: Arc<Database>, e: &StoreError) {
    if !e.needs_reopen() {
        return;
    }
    if let Ok(mut guard) = slot.db.write() {
        *guard = None;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(inner) => {
                drop(inner);
                break;
            }
            Err(shared) if Instant::now() < deadline => {
                db = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                tracing::error!("readers still hold the database; reopen deferred");
                return;
            }
        }
    }
    if let Err(err) = ensure_open(slot) {
        tracing::error!(error = %err, "reopening the store failed; will retry on the next message");
    }
}

/// Reads a counter inside the write transaction (used by [`Tables::open`]).
pub(super) fn counter(
    meta: &redb::Table<'_, &'static str, u64>,
    key: &str,
) -> Result<u64, StoreError> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(1).max(1))
}
