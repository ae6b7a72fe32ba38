//! The one thread that owns redb write transactions, and group commit.
//!
//! Loop: block for the first job, take whatever else is already queued (up
//! to [`MAX_BATCH`]), apply them all in one write transaction, make that
//! durable once, then answer every job of the batch. Durable means one of:
//! - the batch's inputs were appended to the [`journal`](super::journal) and
//!   synced (the usual case: one small sequential write and one `fdatasync`
//!   per batch; the record is written, and its writeback started, before
//!   the batch is applied, so the disk writes while the batch is applied).
//!   redb's commit (`Durability::None`, in memory) comes after the answers:
//!   while more jobs wait, the next batches join the same open transaction
//!   and one commit takes them all (at most [`MAX_OPEN_BATCHES`] or
//!   [`MAX_OPEN_AGE`]); it is committed as soon as no job waits, and before
//!   any read ([`WriterMsg::Flush`]: a reader sees every answered job). A
//!   failure that drops the open transaction loses nothing: its batches are
//!   in the journal, which is replayed into redb before anything else;
//! - redb committed it with `Durability::Immediate` — a checkpoint, which
//!   also makes every earlier journaled batch durable in redb, after which
//!   the journal starts over. A batch is a checkpoint when it holds an admin
//!   command, when the journal is full or failing, and at least every
//!   [`CHECKPOINT_INTERVAL`]; an idle writer checkpoints what is pending
//!   after [`IDLE_CHECKPOINT`].
//!
//! One exception: a batch of delivery results only (the outbox worker's
//! reports) is answered once redb committed it in memory, without waiting
//! for the journal's sync, if the journal was synced less than
//! [`IDLE_CHECKPOINT`] ago — the next sync or checkpoint makes it durable,
//! and losing it to a crash only means sending those emails again.
//!
//! Either way the batch's raw messages are written to the blob file
//! ([`super::blobs`]) before its transaction commits (with the batch, where
//! the transaction says they go), and the blob file
//! is synced before every `Immediate` commit and before a database handle
//! is closed (closing makes redb's pending commits durable).
//!
//! If the batch fails, each job is retried alone (and committed at once) so
//! one bad message cannot fail its neighbours; a storage error answers only
//! its own job. An admin command first commits the open transaction, so
//! that its failure drops nothing else. After an I/O error the database is
//! reopened, and the journal replayed into it, before the next batch.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};

use super::blobs::{BlobFile, Pending};
use super::journal::{self, Entry, Journal, CHECKPOINT_INTERVAL, IDLE_CHECKPOINT};
use super::schema::*;
use super::tables::Tables;
use super::{open_db, DbSlot, Delivery, Done, Job, StoreCmd, StoreError, WriterMsg};
use crate::clock::{self, Millis};
use crate::config::Config;
use crate::desk::{Envelope, Inbound};
use crate::ingest::TicketId;
use crate::store::WriterHandle;

pub const MAX_BATCH: usize = 256;
/// An open transaction is committed after this many batches, or once it is
/// this old, even while more jobs wait (bounds how long the outbox waits for
/// an email queued in it, and how much a failure makes recovery replay).
const MAX_OPEN_BATCHES: usize = 64;
const MAX_OPEN_AGE: Duration = if cfg!(test) {
    // Unit tests (a debug build, 4 MiB messages) must see transactions
    // shared, not cut at 20 ms.
    Duration::from_secs(10)
} else {
    Duration::from_millis(20)
};
/// After a failed checkpoint, the next idle one waits this long.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);
/// A batch stops growing once its messages hold this many bytes: the
/// batch's journal record is one buffer, and every message of a batch stays
/// in memory until its commit (256 sessions finishing 25 MiB messages at
/// once must not mean gigabytes in flight).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The writer's state besides the database slot.
pub(in crate::store) struct Writer {
    slot: Arc<DbSlot>,
    journal: Journal,
    /// The sequence number of the next journal record.
    next_seq: u64,
    /// Batches committed without `Durability::Immediate` since the last
    /// checkpoint (they are durable in the journal only).
    pending: bool,
    last_checkpoint: Instant,
    /// When the journal was last synced (or the store checkpointed).
    last_sync: Instant,
    /// [`CHECKPOINT_INTERVAL`] and [`IDLE_CHECKPOINT`], unless
    /// `POSTDESK_CHECKPOINT_MS` sets both (tests use it to crash between
    /// checkpoints on purpose).
    checkpoint_every: Duration,
    checkpoint_idle: Duration,
    /// After a failed checkpoint, idle checkpoints wait until then.
    idle_retry_after: Option<Instant>,
    /// redb was (re)opened and the journal not yet replayed into it.
    must_recover: bool,
    /// The configuration journal recovery applies messages with: the one
    /// the store was opened with, then the newest a job carried.
    config: Arc<Config>,
    /// Journaled batches applied and answered but not committed to redb yet.
    open: Option<OpenTxn>,
    /// A commit or a recovery made queued emails visible: wake the outbox
    /// (after the current batch).
    wake_outbox: bool,
}

/// The write transaction that consecutive journaled batches are applied in
/// while more jobs wait: redb's commit (root updates, checksums, the first
/// copy of every page a transaction touches) is paid once for all of them.
/// What is in it is durable in the journal; a failure drops it, and
/// recovery replays the journal into redb before the next batch.
struct OpenTxn {
    txn: WriteTransaction,
    batches: usize,
    since: Instant,
    /// One of its batches queued an email (the outbox is woken after the
    /// commit).
    queued: bool,
}

impl Writer {
    /// Opens the journal next to the database and replays what it holds
    /// beyond redb's last durable commit, then checkpoints.
    pub(in crate::store) fn open(
        slot: Arc<DbSlot>,
        db: &Database,
        config: Arc<Config>,
    ) -> Result<Writer, StoreError> {
        let path = slot.path.with_file_name("postdesk.journal");
        let journal = Journal::open(&path).map_err(|e| StoreError::Journal {
            path: path.clone(),
            source: e,
        })?;
        let mut w = Writer {
            slot,
            journal,
            next_seq: 1,
            pending: false,
            last_checkpoint: Instant::now(),
            last_sync: Instant::now(),
            checkpoint_every: CHECKPOINT_INTERVAL,
            checkpoint_idle: IDLE_CHECKPOINT,
            idle_retry_after: None,
            must_recover: true,
            config,
            open: None,
            wake_outbox: false,
        };
        if let Some(ms) = std::env::var("POSTDESK_CHECKPOINT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            w.checkpoint_every = Duration::from_millis(ms);
            w.checkpoint_idle = Duration::from_millis(ms);
        }
        w.recover(db)?;
        Ok(w)
    }

    pub(in crate::store) fn spawn(
        self,
        rx: mpsc::Receiver<WriterMsg>,
        tx: Arc<[mpsc::Sender<WriterMsg>]>,
        outbox: Arc<tokio::sync::Notify>,
    ) -> Result<WriterHandle, StoreError> {
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || self.run(&rx, &outbox))
            .map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        Ok(WriterHandle {
            threads: vec![thread],
            tx,
        })
    }

    fn run(mut self, rx: &mpsc::Receiver<WriterMsg>, outbox: &tokio::sync::Notify) {
        let mut stopping = false;
        // A message taken to see whether more jobs wait (see below).
        let mut carry = None;
        while !stopping {
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let first = if let Some(m) = carry.take() {
                Ok(m)
            } else if self.pending {
                let wait = self
                    .checkpoint_every
                    .saturating_sub(self.last_checkpoint.elapsed())
                    .min(self.checkpoint_idle)
                    .max(self.idle_retry_after.map_or(Duration::ZERO, |t| {
                        t.saturating_duration_since(Instant::now())
                    }));
                match rx.recv_timeout(wait) {
                    Ok(m) => Ok(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.checkpoint_now();
                        self.wake_if_queued(outbox);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                }
            } else {
                rx.recv().map_err(|_| ())
            };
            match first {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Flush(done)) => flushes.push(done),
                Ok(WriterMsg::Shutdown) | Err(()) => break,
            }
            let mut bytes = batch.first().map_or(0, job_bytes);
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(WriterMsg::Job(job)) => {
                        bytes += job_bytes(&job);
                        batch.push(job);
                    }
                    Ok(WriterMsg::Flush(done)) => flushes.push(done),
                    Ok(WriterMsg::Shutdown) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() && self.process(batch) {
                outbox.notify_one();
            }
            // The open transaction is committed when a reader asks, when no
            // job waits (so an idle store has nothing uncommitted), or when
            // it has grown big or old enough; else the next batch joins it.
            if self.open.is_some() {
                if flushes.is_empty() && !stopping {
                    carry = rx.try_recv().ok();
                }
                let full = self.open.as_ref().is_some_and(|o| {
                    o.batches >= MAX_OPEN_BATCHES || o.since.elapsed() >= MAX_OPEN_AGE
                });
                if carry.is_none() || full {
                    self.commit_open_or_reopen();
                }
            }
            // Batches a failure took out of redb were answered: put them
            // back from the journal now, not with the next batch, so that
            // readers do not miss them meanwhile (recovery wakes the outbox).
            if self.must_recover && carry.is_none() {
                if let Err(e) = self.ready() {
                    tracing::error!(error = %e, "cannot replay the journal into the database yet; trying again with the next batch or read");
                }
            }
            self.wake_if_queued(outbox);
            for done in flushes {
                let _ = done.send(());
            }
        }
        // Jobs still queued behind the shutdown get a clean refusal (→ 451);
        // readers are answered after the last checkpoint.
        let mut flushes = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WriterMsg::Job(job) => {
                    let _ = job.reply.send(Err(StoreError::Unavailable));
                }
                WriterMsg::Flush(done) => flushes.push(done),
                WriterMsg::Shutdown => {}
            }
        }
        if self.pending || self.open.is_some() {
            self.checkpoint_now();
        }
        for done in flushes {
            let _ = done.send(());
        }
        tracing::debug!("store writer stopped");
    }

    /// Wakes the outbox if a commit since the last call made queued emails
    /// visible.
    fn wake_if_queued(&mut self, outbox: &tokio::sync::Notify) {
        if std::mem::take(&mut self.wake_outbox) {
            outbox.notify_one();
        }
    }

    /// Commits the open transaction (in memory: its batches are durable in
    /// the journal). A failure leaves them to the journal (recovery replays
    /// them into redb before the next batch) and is returned: the caller
    /// reopens the database if the error asks for it.
    fn commit_open(&mut self) -> Result<(), StoreError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if let Err(e) = open.txn.commit() {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "commit failed; the journal keeps the batches");
            self.lost(open.batches);
            return Err(e);
        }
        transaction_committed();
        self.wake_outbox |= open.queued;
        self.slot.uncommitted.store(false, Ordering::Release);
        Ok(())
    }

    /// [`Writer::commit_open`] where no database handle is held: after an
    /// I/O error the database is reopened here.
    fn commit_open_or_reopen(&mut self) {
        if let Err(e) = self.commit_open() {
            if e.needs_reopen() {
                self.need_recovery();
                if let Ok(db) = self.slot.get() {
                    reopen_if_needed(&self.slot, db, &e);
                }
            }
        }
    }

    /// Takes the open transaction for the next batch, or begins one.
    fn take_open(&mut self, db: &Database) -> Result<OpenTxn, StoreError> {
        match self.open.take() {
            Some(open) => Ok(open),
            None => Ok(OpenTxn {
                txn: begin(db, Durability::None)?,
                batches: 0,
                since: Instant::now(),
                queued: false,
            }),
        }
    }

    /// The open transaction's batches were dropped with it: they are
    /// replayed from the journal before the next batch.
    fn lost(&mut self, open_batches: usize) {
        if open_batches > 0 {
            self.need_recovery();
        }
    }

    /// redb lacks answered batches (dropped with a transaction, or reverted
    /// to the last checkpoint by a reopen): replay the journal before the
    /// next batch, and make readers ask for that replay first. Called before
    /// a reopened database is published.
    fn need_recovery(&mut self) {
        self.must_recover = true;
        self.slot.uncommitted.store(true, Ordering::Release);
    }

    /// The database, reopened and brought up to the journal if need be.
    fn ready(&mut self) -> Result<Arc<Database>, StoreError> {
        let db = ensure_open(&self.slot)?;
        if self.must_recover {
            if let Err(e) = self.recover(&db) {
                reopen_if_needed(&self.slot, db, &e);
                return Err(e);
            }
        }
        Ok(db)
    }

    /// Applies the journal records beyond redb's durable `journal_seq`, in
    /// order, and checkpoints them. After this, redb holds every batch that
    /// was ever answered.
    fn recover(&mut self, db: &Database) -> Result<(), StoreError> {
        let (durable, blob_len) = {
            let txn = redb::ReadableDatabase::begin_read(db)?;
            let meta = txn.open_table(META)?;
            let seq = meta.get(JOURNAL_SEQ)?.map_or(0, |v| v.value());
            let blob_len = meta.get(BLOB_LEN)?.map_or(0, |v| v.value());
            (seq, blob_len)
        };
        let blobs = &*self.slot.blobs;
        blobs.check_len(blob_len)?;
        let mut last = durable;
        let mut applied = 0usize;
        let mut failed = None;
        let config = self.config.clone();
        let path = self.journal.path().to_path_buf();
        let read = self.journal.read_after(durable, |seq, payload| {
            let Some((now, entries)) = journal::decode(payload) else {
                // Its checksum is right, so it holds acknowledged mail:
                // restarting the journal would overwrite it. Refuse instead.
                failed = Some(StoreError::Journal {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "record {seq} is intact but cannot be decoded (written by another \
                             version of postdesk?); the journal is left as it is: run the \
                             version that wrote it, or move the file aside to start without \
                             the mail it holds"
                        ),
                    ),
                });
                return false;
            };
            let cmds: Vec<StoreCmd> = entries
                .into_iter()
                .map(|e| Self::command(&config, e))
                .collect();
            match replay(db, blobs, seq, now, &cmds) {
                Ok(()) => {
                    last = seq;
                    applied += 1;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        read.map_err(|e| StoreError::Journal {
            path: self.journal.path().to_path_buf(),
            source: e,
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // One durable commit makes every replayed record durable, and names
        // the last one even if nothing was replayed.
        let txn = begin(db, Durability::Immediate)?;
        txn.open_table(META)?.insert(JOURNAL_SEQ, last)?;
        blobs.sync();
        txn.commit()?;
        if applied > 0 {
            // Emails queued by the replayed batches are visible now.
            self.wake_outbox = true;
            tracing::info!(
                records = applied,
                from = durable + 1,
                to = last,
                "store recovered from the journal"
            );
        }
        self.journal.restart();
        self.next_seq = last + 1;
        self.pending = false;
        self.last_checkpoint = Instant::now();
        self.must_recover = false;
        self.slot.uncommitted.store(false, Ordering::Release);
        Ok(())
    }

    /// A store command rebuilt from a journal entry, with `config`.
    fn command(config: &Arc<Config>, entry: Entry<'_>) -> StoreCmd {
        match entry {
            Entry::Ingest {
                raw,
                mail_from,
                rcpt,
                channel,
                plus,
                received_at,
                imported,
            } => StoreCmd::Ingest(Box::new(Inbound::new(
                config.clone(),
                raw.to_vec(),
                Envelope {
                    mail_from: mail_from.to_string(),
                    rcpt: rcpt.into_iter().map(String::from).collect(),
                    channel: channel.to_string(),
                    plus: plus.map(TicketId),
                    received_at,
                    imported,
                },
            ))),
            Entry::Delivered { id, kind, detail } => StoreCmd::Delivered {
                id,
                lease: 0,
                result: match kind {
                    0 => Delivery::Sent,
                    1 => Delivery::Transient(detail.to_string()),
                    _ => Delivery::Permanent(detail.to_string()),
                },
            },
        }
    }

    /// A checkpoint with nothing else to commit: makes the journaled
    /// batches durable in redb and restarts the journal.
    fn checkpoint_now(&mut self) {
        let open_batches = self.open.as_ref().map_or(0, |o| o.batches);
        let result = self.ready().and_then(|db| {
            let txn = match self.open.take() {
                Some(open) => {
                    self.wake_outbox |= open.queued;
                    let mut txn = open.txn;
                    txn.set_durability(Durability::Immediate)?;
                    txn.set_quick_repair(true);
                    txn
                }
                None => begin(&db, Durability::Immediate)?,
            };
            let started = Instant::now();
            self.slot.blobs.sync();
            txn.commit()?;
            transaction_committed();
            crate::metrics::METRICS
                .checkpoint_ms
                .observe(started.elapsed().as_millis() as u64);
            Ok(db)
        });
        match result {
            Ok(_) => self.checkpointed(),
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed; the journal keeps the pending batches");
                // The open transaction went with it.
                self.lost(open_batches);
                if e.needs_reopen() {
                    self.need_recovery();
                    if let Ok(db) = self.slot.get() {
                        reopen_if_needed(&self.slot, db, &e);
                    }
                }
                // Not again before a second has passed (a full disk would
                // otherwise fail it, and log it, every idle interval).
                self.last_checkpoint = Instant::now();
                self.idle_retry_after = Some(Instant::now() + CHECKPOINT_RETRY);
            }
        }
    }

    fn checkpointed(&mut self) {
        self.slot.uncommitted.store(false, Ordering::Release);
        self.last_sync = Instant::now();
        self.idle_retry_after = None;
        self.journal.restart();
        self.pending = false;
        self.last_checkpoint = Instant::now();
        crate::metrics::inc(&crate::metrics::METRICS.store_checkpoints);
    }

    /// Commits one batch and answers its jobs; returns whether an email was
    /// queued (so the outbox worker is woken).
    fn process(&mut self, batch: Vec<Job>) -> bool {
        // The configuration recovery replays with becomes this batch's only
        // after it: batches a failure of this one drops are replayed with
        // the configuration they were applied with.
        let newest = batch.iter().rev().find_map(|job| match &job.cmd {
            StoreCmd::Ingest(inb) => Some(inb.config.clone()),
            _ => None,
        });
        let queued = self.process_batch(batch);
        if let Some(config) = newest {
            self.config = config;
        }
        queued
    }

    fn process_batch(&mut self, batch: Vec<Job>) -> bool {
        let started = Instant::now();
        let size = batch.len();
        match self.try_commit(&batch) {
            Ok((outcomes, queued)) => {
                let m = &crate::metrics::METRICS;
                crate::metrics::inc(&m.store_commits);
                m.commit_batch.observe(size as u64);
                m.commit_ms.observe(started.elapsed().as_millis() as u64);
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
                queued
            }
            Err(e) if size == 1 => {
                if !matches!(e, StoreError::NotFound(_) | StoreError::Invalid(_)) {
                    tracing::error!(error = %e, "commit failed");
                }
                if let Some(job) = batch.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, batch = size, "batch commit failed; retrying one by one");
                let mut queued = false;
                for job in batch {
                    match self.try_commit(std::slice::from_ref(&job)) {
                        Ok((mut outcomes, q)) => {
                            // Committed at once: a later job failing here
                            // must not take this one out of redb again.
                            self.commit_open_or_reopen();
                            queued |= q;
                            if let Some(o) = outcomes.pop() {
                                let _ = job.reply.send(Ok(o));
                            }
                        }
                        Err(e) => {
                            if !matches!(e, StoreError::NotFound(_) | StoreError::Invalid(_)) {
                                tracing::error!(error = %e, "commit failed");
                            }
                            let _ = job.reply.send(Err(e));
                        }
                    }
                }
                queued
            }
        }
    }

    /// Commits `batch` on the database, made ready first; a failure is
    /// handled ([`Writer::failed`]) before it is returned.
    fn try_commit(&mut self, batch: &[Job]) -> Result<(Vec<Done>, bool), StoreError> {
        let db = self.ready()?;
        let r = self.commit_batch(&db, batch);
        if let Err(e) = &r {
            self.failed(db, e);
        }
        r
    }

    /// After a failed commit: an I/O error means reopening redb, which
    /// drops every batch not yet checkpointed from it, so the journal must
    /// be replayed before the next batch.
    fn failed(&mut self, db: Arc<Database>, e: &StoreError) {
        if e.needs_reopen() {
            self.need_recovery();
        }
        reopen_if_needed(&self.slot, db, e);
    }

    fn commit_batch(
        &mut self,
        db: &Database,
        batch: &[Job],
    ) -> Result<(Vec<Done>, bool), StoreError> {
        let now = clock::now_millis();
        // Journaled unless an admin command is in it (those are rare, and
        // recovery only knows how to replay inbound mail and deliveries).
        let entries: Option<Vec<Entry<'_>>> = batch.iter().map(|j| entry(&j.cmd)).collect();
        let sets_seq = entries.is_some();
        if !sets_seq && self.open.is_some() {
            // An operator's command can fail (no such ticket): it gets a
            // transaction of its own, so that its failure drops nothing
            // else (the open one would be replayed from the journal). On an
            // error, `try_commit` reopens the database with its handle.
            self.commit_open()?;
        }
        let seq = self.next_seq;
        let rec = entries.map(|e| journal::record(seq, now, &e));
        let checkpoint_due = self.last_checkpoint.elapsed() >= self.checkpoint_every;
        // The record holds only the batch's inputs and `now`, so it is
        // written first and its writeback started; the disk writes it while
        // the batch is applied, and the sync after the apply mostly waits
        // for the disk's cache flush.
        let record = match rec {
            Some(r) if !checkpoint_due && self.journal.fits(r.len()) => self.write_record(&r),
            _ => None,
        };
        let open = match self.take_open(db) {
            Ok(open) => open,
            Err(e) => {
                if let Some(at) = record {
                    self.abandon_record(at);
                }
                return Err(e);
            }
        };
        let (open_batches, open_queued, since) = (open.batches, open.queued, open.since);
        let slot = self.slot.clone();
        let blobs = &*slot.blobs;
        let applied = match apply_batch(
            open.txn,
            blobs,
            batch.iter().map(|j| &j.cmd),
            now,
            sets_seq.then_some(seq),
        ) {
            Ok(a) => a,
            Err(e) => {
                if let Some(at) = record {
                    self.abandon_record(at);
                }
                self.lost(open_batches);
                return Err(e);
            }
        };
        let Some(at) = record else {
            // A checkpoint (with the batches of the open transaction). If
            // the batch took a journal number, redb now holds it durably and
            // the next record follows it.
            let started = Instant::now();
            let (outcomes, queued) = match applied.commit(blobs, true) {
                Ok(done) => {
                    transaction_committed();
                    done
                }
                Err(e) => {
                    self.lost(open_batches);
                    return Err(e);
                }
            };
            crate::metrics::METRICS
                .checkpoint_ms
                .observe(started.elapsed().as_millis() as u64);
            if sets_seq {
                self.next_seq = seq + 1;
            }
            self.checkpointed();
            return Ok((outcomes, queued || open_queued));
        };
        // The batch stays in the open transaction: its raw bytes are
        // written now (where the transaction says they are), redb's commit
        // comes later ([`Writer::commit_open`]); the journal record makes it
        // durable.
        let (txn, outcomes, queued) = match applied.write_blobs(blobs) {
            Ok(done) => done,
            Err(e) => {
                self.abandon_record(at);
                self.lost(open_batches);
                return Err(e);
            }
        };
        self.open = Some(OpenTxn {
            txn,
            batches: open_batches + 1,
            since,
            queued: open_queued || queued,
        });
        self.slot.uncommitted.store(true, Ordering::Release);
        // The open transaction holds the batch and says it holds record `seq`.
        self.next_seq = seq + 1;
        self.pending = true;
        if self.last_sync.elapsed() < self.checkpoint_idle
            && batch
                .iter()
                .all(|j| matches!(j.cmd, StoreCmd::Delivered { .. }))
        {
            // Only delivery results: nobody waits on these for a `250`, so
            // they are answered without waiting for the disk. The next
            // batch's sync (at the latest after the idle interval: a stream
            // of results alone still syncs that often), or the idle
            // checkpoint, makes them durable; a crash before that sends
            // those emails again after the restart (at-least-once, as a
            // crash between the relay's answer and this commit always did).
            // Inbound mail arriving meanwhile does not wait behind an
            // fdatasync made for delivery results.
            return Ok((outcomes, false));
        }
        self.last_sync = Instant::now();
        if let Err(e) = self.journal.sync() {
            // The record may not be on disk: make the batches durable
            // through redb instead (or fail them; recovery after the reopen
            // decides what the journal still holds, and a retried message
            // that was kept is a duplicate).
            tracing::error!(path = %self.journal.path().display(), error = %e, "journal sync failed; checkpointing instead");
            let Some(open) = self.open.take() else {
                return Err(StoreError::Unavailable);
            };
            let (batches, queued) = (open.batches, open.queued);
            let durable = (|| -> Result<(), StoreError> {
                let mut txn = open.txn;
                txn.set_durability(Durability::Immediate)?;
                txn.set_quick_repair(true);
                self.slot.blobs.sync();
                txn.commit()?;
                transaction_committed();
                Ok(())
            })();
            if let Err(e) = durable {
                self.lost(batches);
                return Err(e);
            }
            self.wake_outbox |= queued;
            self.checkpointed();
        }
        Ok((outcomes, false))
    }

    /// Writes the batch's record and starts its writeback; `None` (the
    /// batch is then a checkpoint, which names its journal number, so a
    /// record left behind is never replayed) if the journal cannot take it.
    fn write_record(&mut self, rec: &[u8]) -> Option<u64> {
        match self.journal.write(rec) {
            Ok(at) => Some(at),
            Err(e) => {
                tracing::error!(path = %self.journal.path().display(), error = %e, "journal write failed; committing to the database directly");
                None
            }
        }
    }

    /// The batch of the record at `at` failed: undo the record so that
    /// recovery does not apply it; the next record takes its number.
    fn abandon_record(&mut self, at: u64) {
        if let Err(e) = self.journal.retract(at) {
            tracing::error!(error = %e, "cannot retract a journal record; a message may be stored twice after a crash");
        }
    }
}

/// A batch applied in a write transaction that is not committed yet.
struct Applied {
    txn: WriteTransaction,
    outcomes: Vec<Done>,
    queued: bool,
    blobs: Pending,
}

impl Applied {
    /// Writes the batch's raw bytes to the blob file (where its transaction
    /// says they are) and commits: after this, a reader that sees a row
    /// finds its bytes. A `durable` commit (a checkpoint) syncs the blob
    /// file first and commits with `Durability::Immediate`.
    fn commit(mut self, blobs: &BlobFile, durable: bool) -> Result<(Vec<Done>, bool), StoreError> {
        blobs.write_at(&self.blobs.bytes, self.blobs.base)?;
        if durable {
            self.txn.set_durability(Durability::Immediate)?;
            self.txn.set_quick_repair(true);
            blobs.sync();
        }
        self.txn.commit()?;
        Ok((self.outcomes, self.queued))
    }

    /// Writes the batch's raw bytes to the blob file and hands back the
    /// transaction uncommitted, for more batches to join.
    fn write_blobs(
        self,
        blobs: &BlobFile,
    ) -> Result<(WriteTransaction, Vec<Done>, bool), StoreError> {
        blobs.write_at(&self.blobs.bytes, self.blobs.base)?;
        Ok((self.txn, self.outcomes, self.queued))
    }
}

/// Applies commands in `txn` (not committed here; on an error it is
/// dropped, which undoes everything in it); with `seq`, records that
/// journal record `seq` is in it.
fn apply_batch<'a>(
    txn: WriteTransaction,
    blobs: &BlobFile,
    cmds: impl IntoIterator<Item = &'a StoreCmd>,
    now: Millis,
    seq: Option<u64>,
) -> Result<Applied, StoreError> {
    let mut outcomes = Vec::new();
    let queued;
    let pending;
    {
        let mut tables = Tables::open(&txn, blobs)?;
        for cmd in cmds {
            outcomes.push(super::super::apply(&mut tables, cmd, now)?);
        }
        if let Some(seq) = seq {
            tables.meta_set(JOURNAL_SEQ, seq)?;
        }
        queued = tables.queued_mail;
        pending = tables.finish()?;
    }
    Ok(Applied {
        txn,
        outcomes,
        queued,
        blobs: pending,
    })
}

/// Replays journal record `seq` as it was applied once: its entries in one
/// transaction (`Durability::None`; recovery checkpoints at the end). If one
/// fails now — only a changed configuration or a damaged store can make it
/// — each entry gets a transaction of its own and a failing one is skipped,
/// so that no message is ever half-written. Only an entry's own fault
/// ([`StoreError::is_entry_fault`]) skips it; any other error (the disk, the
/// blob file) stops the recovery, which is tried again later: skipping would
/// drop acknowledged mail for good, since recovery ends by restarting the
/// journal.
fn replay(
    db: &Database,
    blobs: &BlobFile,
    seq: u64,
    now: Millis,
    cmds: &[StoreCmd],
) -> Result<(), StoreError> {
    let commit = |cmds: &[StoreCmd]| -> Result<(), StoreError> {
        apply_batch(begin(db, Durability::None)?, blobs, cmds, now, Some(seq))?
            .commit(blobs, false)?;
        Ok(())
    };
    match commit(cmds) {
        Ok(()) => return Ok(()),
        Err(e) if !e.is_entry_fault() => return Err(e),
        Err(e) => {
            tracing::warn!(seq, error = %e, "journal record failed to apply as a whole; replaying its entries one by one");
        }
    }
    for cmd in cmds {
        match commit(std::slice::from_ref(cmd)) {
            Ok(()) => {}
            Err(e) if !e.is_entry_fault() => return Err(e),
            Err(e) => tracing::error!(seq, error = %e, "journal entry failed to apply; skipped"),
        }
    }
    Ok(())
}

/// The bytes a job holds (its raw message), for [`MAX_BATCH_BYTES`].
fn job_bytes(job: &Job) -> usize {
    match &job.cmd {
        StoreCmd::Ingest(inb) => inb.raw.len() + inb.parsed.text.len(),
        _ => 0,
    }
}

/// The journal entry for a command, if it is one the journal carries.
fn entry(cmd: &StoreCmd) -> Option<Entry<'_>> {
    match cmd {
        StoreCmd::Ingest(inb) => Some(Entry::Ingest {
            raw: &inb.raw,
            mail_from: &inb.envelope.mail_from,
            rcpt: inb.envelope.rcpt.iter().map(String::as_str).collect(),
            channel: &inb.envelope.channel,
            plus: inb.envelope.plus.map(TicketId::get),
            received_at: inb.envelope.received_at,
            imported: inb.envelope.imported,
        }),
        StoreCmd::Delivered { id, result, .. } => Some(match result {
            Delivery::Sent => Entry::Delivered {
                id: *id,
                kind: 0,
                detail: "",
            },
            Delivery::Transient(d) => Entry::Delivered {
                id: *id,
                kind: 1,
                detail: d,
            },
            Delivery::Permanent(d) => Entry::Delivered {
                id: *id,
                kind: 2,
                detail: d,
            },
        }),
        _ => None,
    }
}

/// Creates every table so that readers never meet a missing one, and draws
/// the store's Message-ID salt and reply-key secret the first time.
pub(in crate::store) fn init_tables(db: &Database) -> Result<(), StoreError> {
    let txn = begin(db, Durability::Immediate)?;
    {
        let mut secrets = txn.open_table(SECRETS)?;
        if secrets.get(REPLY_KEY_SECRET)?.is_none() {
            // From the operating system's CSPRNG: the keys of every reply
            // address rest on it.
            let mut secret = [0u8; 32];
            getrandom::getrandom(&mut secret)
                .map_err(|e| StoreError::Corrupt(format!("drawing the reply-key secret: {e}")))?;
            secrets.insert(REPLY_KEY_SECRET, secret.as_slice())?;
        }
        drop(secrets);
        let mut meta = txn.open_table(META)?;
        if meta.get(MESSAGE_ID_SALT)?.is_none() {
            use std::hash::BuildHasher;
            let salt = std::collections::hash_map::RandomState::new().hash_one(clock::now_millis());
            meta.insert(MESSAGE_ID_SALT, salt)?;
        }
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
        txn.delete_table(AUTO_SENT_V0)?;
    }
    txn.commit()?;
    Ok(())
}

fn transaction_committed() {
    crate::metrics::inc(&crate::metrics::METRICS.store_transactions);
}

fn begin(db: &Database, durability: Durability) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    // Keep the allocator state in each durable commit so that opening after
    // a crash does not need a full repair scan.
    txn.set_quick_repair(matches!(durability, Durability::Immediate));
    Ok(txn)
}

fn ensure_open(slot: &DbSlot) -> Result<Arc<Database>, StoreError> {
    if let Ok(db) = slot.get() {
        return Ok(db);
    }
    let db = Arc::new(open_db(&slot.path, slot.cache)?);
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
    // Closing this handle (here, or by the last reader) makes its pending
    // in-memory commits durable: the bytes they name must be on disk first.
    slot.blobs.sync();
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
