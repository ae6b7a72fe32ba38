//! The PostgreSQL engine's writers: K threads, each with one connection
//! and its own queue (the messages of one thread and the commands on one
//! ticket share a queue: see `Store::lane`), taking whatever jobs wait (up to [`MAX_BATCH`], never waiting to fill a
//! batch) and applying them in one transaction, a savepoint per job.
//!
//! Invariants:
//! - A job is answered after `COMMIT` returned, never before. When the
//!   connection breaks during `COMMIT` the outcome is unknown: the writer
//!   reconnects and looks for the batch's row in `batches`; found → the
//!   answers stand, not found (or no database) → every job gets an error
//!   (→ `451`). A `451` is always safe: the client retries, and the
//!   retried message is then a duplicate, stored once.
//! - A job that lost a race ([`PgTxn::raced`]), deadlocked or waited too
//!   long for a lock is rolled back to its savepoint and run again (at most
//!   [`ATTEMPTS`] times); the other jobs of the batch keep their work.
//! - A job's own fault (what it names does not exist) is rolled back to
//!   its savepoint and answered with that error after the commit.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::txn::{is_retryable, PgTxn};
use super::{Conn, Shared};
use crate::clock::Millis;
use crate::desk::StoreError;
use crate::store::{Done, Job, WriterMsg};

/// Jobs per transaction, at most.
const MAX_BATCH: usize = 16;
/// Runs of one job in its batch before it is answered with an error.
const ATTEMPTS: usize = 4;

/// Starts one writer thread per queue.
pub(in crate::store) fn spawn(
    queues: Vec<mpsc::Receiver<WriterMsg>>,
    shared: Arc<Shared>,
    outbox: Arc<Notify>,
) -> Result<Vec<JoinHandle<()>>, StoreError> {
    let mut threads = Vec::with_capacity(queues.len());
    for rx in queues {
        // Each writer drives its own connection: statements and their
        // replies never cross threads.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start a writer's runtime: {e}")))?;
        let w = Writer {
            rt,
            shared: shared.clone(),
            conn: None,
            clock: None,
        };
        let outbox = outbox.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                w.run(&rx, &outbox);
                // What is still queued behind the shutdown is refused
                // (→ 451).
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        WriterMsg::Job(job) => {
                            let _ = job.reply.send(Err(StoreError::Unavailable));
                        }
                        WriterMsg::Flush(done) => {
                            let _ = done.send(());
                        }
                        WriterMsg::Shutdown => {}
                    }
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start a writer thread: {e}")))?;
        threads.push(thread);
    }
    Ok(threads)
}

struct Writer {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    conn: Option<Conn>,
    /// The database's time (ms) as last read, and when: `now` for a batch
    /// is that plus the time since (monotonic), read again every
    /// [`CLOCK_REFRESH`] and on every new connection.
    clock: Option<(std::time::Instant, Millis)>,
}

/// How long the database's time read at the start of a batch is used for
/// the batches after it.
const CLOCK_REFRESH: Duration = Duration::from_secs(10);

/// What one job came to inside the batch.
type Answer = Result<Done, StoreError>;

impl Writer {
    fn run(mut self, queue: &mpsc::Receiver<WriterMsg>, outbox: &Notify) {
        loop {
            let (batch, stop) = take(queue);
            if !batch.is_empty() && self.process(batch) {
                outbox.notify_one();
            }
            if stop {
                break;
            }
        }
        tracing::debug!("store writer stopped");
    }

    /// Applies and commits a batch, answers its jobs; whether an email was
    /// queued.
    fn process(&mut self, batch: Vec<Job>) -> bool {
        let mut jobs: Vec<Option<Job>> = batch.into_iter().map(Some).collect();
        // First without savepoints; a batch one of whose jobs lost a race,
        // a lock or failed is rolled back and run again with one a job.
        let mut savepoints = false;
        // A batch that failed as a whole (the connection, the commit) is
        // tried once more on a fresh connection before its jobs get 451.
        let mut round = 0;
        while round < 2 {
            match self.batch(&mut jobs, savepoints) {
                Ok(Some(queued)) => return queued,
                Ok(None) => {
                    savepoints = true;
                    continue;
                }
                Err(e) => {
                    round += 1;
                    self.conn = None;
                    if round == 2 || jobs.iter().all(Option::is_none) {
                        tracing::warn!(error = %e, "store: a batch failed; its messages get 451");
                        // Each job its copy of the error, said once ("database: …").
                        let text = e.to_string();
                        let text = text.strip_prefix("database: ").unwrap_or(&text);
                        for job in jobs.iter_mut().filter_map(Option::take) {
                            let _ = job.reply.send(Err(StoreError::Database(text.to_string())));
                        }
                        return false;
                    }
                    tracing::info!(error = %e, "store: a batch failed; trying it again on a new connection");
                }
            }
        }
        false
    }

    /// One try of the batch, with a savepoint a job or none. On
    /// `Ok(Some(queued))` every job was answered; on `Ok(None)` (no
    /// savepoints, and a job would have needed its own rollback) nothing
    /// was committed and every job is still in `jobs`, as on `Err`.
    fn batch(
        &mut self,
        jobs: &mut [Option<Job>],
        savepoints: bool,
    ) -> Result<Option<bool>, StoreError> {
        let started = std::time::Instant::now();
        if self.conn.is_none() {
            let c = self.rt.block_on(Conn::open(&self.shared))?;
            self.conn = Some(c);
            self.clock = None;
        }
        let Some(c) = self.conn.as_ref() else {
            return Err(StoreError::Unavailable);
        };
        let mut token_bytes = [0u8; 8];
        getrandom::getrandom(&mut token_bytes)
            .map_err(|e| StoreError::Database(format!("drawing a batch token: {e}")))?;
        let token = i64::from_le_bytes(token_bytes) & i64::MAX;
        // The batch's row (see `probe`) goes with the BEGIN.
        let begin_sql = "BEGIN".to_string();
        // The database's time: read with the BEGIN (a round trip of its
        // own) when due; otherwise the BEGIN goes with the first job's
        // first statement.
        let mut begin = Some(begin_sql);
        let now = match self.clock {
            Some((at, ms)) if at.elapsed() < CLOCK_REFRESH => {
                ms + i64::try_from(at.elapsed().as_millis()).unwrap_or(0)
            }
            _ => {
                // `node` is a validated node name (letters, digits, . - _):
                // safe to quote literally.
                let sql = format!(
                    "{}; INSERT INTO batches (token, node_id) VALUES ({token}, '{}')",
                    begin.take().unwrap_or_default(),
                    self.shared.node
                );
                let ms = self.rt.block_on(begin_with_time(c, &sql))?;
                self.clock = Some((std::time::Instant::now(), ms));
                ms
            }
        };
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(jobs.len());
        let mut queued = 0;
        for job in jobs.iter() {
            let Some(job) = job else {
                answers.push(None);
                continue;
            };
            match self.one(c, token, job, now, &mut begin, savepoints)? {
                Some((answer, q)) => {
                    queued += q;
                    answers.push(Some(answer));
                }
                None => {
                    self.rt.block_on(c.batch_execute("ROLLBACK"))?;
                    return Ok(None);
                }
            }
        }
        crate::failpoint::hit("store.before_commit");
        // Nothing was sent (every job failed before its first statement):
        // no transaction to commit.
        let commit = if begin.is_some() {
            Ok(())
        } else {
            self.rt.block_on(c.batch_execute("COMMIT"))
        };
        match commit {
            Ok(()) => {}
            Err(e) => {
                // The outcome is unknown if the connection broke: ask a
                // fresh one whether the batch's row is there.
                let e = StoreError::Pg(e);
                self.conn = None;
                match self.rt.block_on(probe(&self.shared, token)) {
                    Ok(true) => {
                        tracing::warn!(error = %e, "store: COMMIT failed but the batch is committed");
                    }
                    _ => return Err(e),
                }
            }
        }
        let m = &crate::metrics::METRICS;
        crate::metrics::inc(&m.store_commits);
        crate::metrics::inc(&m.store_transactions);
        m.emails_queued
            .fetch_add(queued, std::sync::atomic::Ordering::Relaxed);
        m.commit_batch.observe(jobs.len() as u64);
        m.commit_ms.observe(started.elapsed().as_millis() as u64);
        for (job, answer) in jobs.iter_mut().zip(answers) {
            if let (Some(job), Some(answer)) = (job.take(), answer) {
                let _ = job.reply.send(answer);
            }
        }
        Ok(Some(queued > 0))
    }

    /// Runs one job (in its savepoint, with `savepoints`) until it neither
    /// races nor deadlocks. `Ok(None)`: without savepoints, the job failed
    /// after it sent something, so the whole batch must be rolled back.
    /// `Err` only for what breaks the whole batch (the connection).
    fn one(
        &self,
        c: &Conn,
        token: i64,
        job: &Job,
        now: Millis,
        begin: &mut Option<String>,
        savepoints: bool,
    ) -> Result<Option<(Answer, u64)>, StoreError> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Jittered, short: the other node's transaction is about to
                // commit (or has).
                std::thread::sleep(Duration::from_millis(
                    5 + (token as u64 % 20) * attempt as u64,
                ));
            }
            let mut txn = PgTxn::new(&self.rt, c, &self.shared, token);
            // Sent with the job's first statement (see `PgTxn::later`):
            // the batch's BEGIN if not sent yet, the job's savepoint.
            let opening = begin.clone();
            if let Some(sql) = &opening {
                txn.later_simple(sql.clone());
                txn.later_batch_row(token);
            }
            if savepoints {
                txn.later_simple("SAVEPOINT job");
            }
            if let crate::store::StoreCmd::Ingest(inb) = &job.cmd {
                let p = &inb.parsed;
                let ids: Vec<&str> = std::iter::once(p.message_id.as_str())
                    .chain(p.in_reply_to.iter().map(String::as_str))
                    .chain(p.references.iter().map(String::as_str))
                    .collect();
                // Most likely a new ticket: it names no other message, no
                // ticket by plus address or subject tag (a guess; when it
                // is wrong the ticket id drawn for it is a gap).
                let new_ticket = p.in_reply_to.is_empty()
                    && p.references.is_empty()
                    && inb.envelope.plus.is_none()
                    && inb.config.outbound.subject_tag.find(&p.subject).is_none();
                let sender = p.from.as_ref().map(|f| f.email.as_str());
                let fetched =
                    txn.prefetch_ids(&ids, sender.filter(|_| new_ticket).map(|a| (a, now)));
                if opening.is_some() && txn.sent() {
                    *begin = None;
                }
                fetched?;
            }
            if let crate::store::StoreCmd::Delivered { id, lease, .. } = &job.cmd {
                let held = txn.holds_lease(*id, *lease);
                if txn.sent() {
                    *begin = None;
                }
                if !held? {
                    if savepoints {
                        txn.later_simple("RELEASE SAVEPOINT job");
                    }
                    txn.finish()?;
                    tracing::warn!(outbox = id, "outbox: the lease on this email ran out before its delivery was recorded; another node may send it again");
                    return Ok(Some((Ok(Done::Ok), 0)));
                }
            }
            let result = crate::store::apply(&mut txn, &job.cmd, now);
            let raced = txn.raced();
            // The job's last writes go with the release of its savepoint.
            let result = match result {
                Ok(done) if !raced => {
                    if savepoints {
                        txn.later_simple("RELEASE SAVEPOINT job");
                    }
                    txn.finish().map(|()| done)
                }
                other => other,
            };
            let (queued, sent) = (txn.queued_mail, txn.sent());
            drop(txn);
            if sent {
                *begin = None;
            }
            match result {
                Ok(done) if !raced => return Ok(Some((Ok(done), queued))),
                other => {
                    if c.is_closed() {
                        return Err(other.err().unwrap_or(StoreError::Unavailable));
                    }
                    if sent && !savepoints {
                        return Ok(None);
                    }
                    if sent {
                        self.rt.block_on(
                            c.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job"),
                        )?;
                    }
                    match other {
                        Err(e) if !raced && !is_retryable(&e) => return Ok(Some((Err(e), 0))),
                        Err(e) => last = Some(e),
                        Ok(_) => last = None,
                    }
                    tracing::debug!(
                        attempt,
                        "store: a job lost a race or a lock; running it again"
                    );
                }
            }
        }
        Ok(Some((
            Err(last.unwrap_or_else(|| {
                StoreError::Database("another node kept winning the same rows; try again".into())
            })),
            0,
        )))
    }
}

/// Opens the batch's transaction, records its token, and returns the
/// database's time (milliseconds): one round trip.
async fn begin_with_time(c: &tokio_postgres::Client, begin: &str) -> Result<Millis, StoreError> {
    let sql =
        format!("{begin}; SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text");
    let rows = c.simple_query(&sql).await?;
    for m in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            if let Some(Ok(ms)) = r.get(0).map(str::parse::<Millis>) {
                return Ok(ms);
            }
        }
    }
    Err(StoreError::Database(
        "the database did not say its time".into(),
    ))
}

/// Whether the batch with `token` was committed.
async fn probe(shared: &Shared, token: i64) -> Result<bool, StoreError> {
    let c = Conn::open(shared).await?;
    Ok(
        c.query_opt("SELECT 1 FROM batches WHERE token = $1", &[&token])
            .await?
            .is_some(),
    )
}

/// Takes the first message (waiting for it), then whatever else waits, up
/// to [`MAX_BATCH`] jobs; flushes are answered at once (every answered job
/// is committed already). Whether to stop after this batch.
fn take(rx: &mpsc::Receiver<WriterMsg>) -> (Vec<Job>, bool) {
    let mut batch = Vec::new();
    let mut next = rx.recv().map_err(|_| ());
    loop {
        match next {
            Ok(WriterMsg::Job(job)) => batch.push(job),
            Ok(WriterMsg::Flush(done)) => {
                let _ = done.send(());
            }
            Ok(WriterMsg::Shutdown) | Err(()) => return (batch, true),
        }
        if batch.len() >= MAX_BATCH {
            return (batch, false);
        }
        next = match rx.try_recv() {
            Ok(m) => Ok(m),
            Err(_) => return (batch, false),
        };
    }
}
