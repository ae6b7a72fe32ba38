//! SHELL: the storage boundary. [`Store`] is the handle every caller
//! holds: commands ([`StoreCmd`], applied by the ticket logic,
//! [`crate::desk`]) and typed reads returning [`crate::desk::views`]; no
//! engine's transaction type leaves this module. Two engines: redb
//! (`redb`: tables, blob file, journal, the one writer thread) and
//! PostgreSQL (`postgres`); [`copy()`] copies a store from one into another.
//!
//! Invariants:
//! - Durability is decided here and nowhere else: a [`Store::ingest`] call
//!   returns `Ok` only after the message is on disk — in the journal
//!   (synced; redb commits it in memory right after, or with the batches
//!   that follow it), or in redb committed with `Durability::Immediate`.
//!   Callers may say `250` then, and only then. A typed read sees
//!   every job answered before it.
//! - Everything one message causes (message, Message-ID rows, ticket,
//!   timeline) is written in the same transaction; its raw bytes go to the
//!   blob file just before that transaction commits, and are made durable
//!   before any durable commit that names them.
//! - Messages that arrive together share one commit (group commit); each
//!   caller waits only for the commit that holds its message.
//! - After an I/O error redb refuses writes (`PreviousIo`) until reopened:
//!   the writer reopens the database before the next batch, and every
//!   caller meanwhile gets an error (→ `451`), never a false success.

mod copy;
mod portable;
mod postgres;
mod redb;

pub use copy::{copy, Copied, CopyError};
pub use postgres::{migrate, Migrated};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};

use tokio::sync::{oneshot, Notify};

use self::redb::blobs::BlobFile;
use self::redb::{open_db, read, writer, DbSlot};
use crate::config::{Config, Storage};
use crate::desk::{self, apply_inbound, Txn};
use crate::ingest::TicketId;

use self::redb::schema::OutState;
use crate::clock::Millis;
pub use crate::desk::views::{
    DueMail, MessageView, NodeView, OutboxView, StoredMessage, TicketDetail, TicketFilter,
    TicketView,
};
pub use crate::desk::{Delivery, Envelope, Inbound, Outcome, StoreError};

pub enum StoreCmd {
    Ingest(Box<Inbound>),
    SetStatus {
        config: Arc<Config>,
        id: TicketId,
        status: String,
    },
    Reply {
        config: Arc<Config>,
        id: TicketId,
        body: String,
        user: Option<String>,
    },
    Assign {
        config: Arc<Config>,
        id: TicketId,
        owner: String,
    },
    Delivered {
        id: u64,
        /// The fencing token of the claim it was sent under
        /// ([`DueMail::lease`]).
        lease: u64,
        result: Delivery,
    },
    Merge {
        config: Arc<Config>,
        source: TicketId,
        target: TicketId,
    },
}

/// What a command returns once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Ingested(Outcome),
    Ticket(TicketId),
    /// The outbox id of a queued email.
    Queued(u64),
    Ok,
}

pub(crate) struct Job {
    cmd: StoreCmd,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

pub(crate) enum WriterMsg {
    Job(Job),
    /// Commit what is applied and answered but not committed yet, then
    /// answer: what a reader sees after that includes every job answered.
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    /// The writers' queues: one for redb; one per writer connection for
    /// PostgreSQL (see [`Store::lane`]).
    tx: Arc<[mpsc::Sender<WriterMsg>]>,
    /// Woken after a commit that queued an email.
    outbox: Arc<Notify>,
    engine: Engine,
}

/// What reads need of each engine.
#[derive(Clone)]
enum Engine {
    Redb(Arc<DbSlot>),
    Postgres(Arc<postgres::Shared>),
}

/// The store's writer thread(s); [`WriterHandle::join`] stops them.
pub struct WriterHandle {
    threads: Vec<std::thread::JoinHandle<()>>,
    tx: Arc<[mpsc::Sender<WriterMsg>]>,
}

impl WriterHandle {
    /// Tells the writers to stop after the queued jobs and waits for them.
    pub fn join(self) {
        for tx in self.tx.iter() {
            let _ = tx.send(WriterMsg::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Opens the engine `config.storage` names: redb under
    /// `server.data_dir`, or PostgreSQL (checking its schema and
    /// durability first).
    pub async fn connect(config: Arc<Config>) -> Result<(Store, WriterHandle), StoreError> {
        match &config.storage {
            Storage::Redb => {
                let dir = config.server.data_dir.clone();
                tokio::task::spawn_blocking(move || Store::open(&dir, config))
                    .await
                    .map_err(|_| StoreError::Unavailable)?
            }
            Storage::Postgres(pg) => {
                let shared = postgres::open(pg, &config.fingerprint).await?;
                tokio::spawn(postgres::heartbeat(Arc::downgrade(&shared)));
                let (senders, queues): (Vec<_>, Vec<_>) =
                    (0..pg.writers().max(1)).map(|_| mpsc::channel()).unzip();
                let tx: Arc<[mpsc::Sender<WriterMsg>]> = senders.into();
                let outbox = Arc::new(Notify::new());
                let threads = postgres::writer::spawn(queues, shared.clone(), outbox.clone())?;
                Ok((
                    Store {
                        tx: tx.clone(),
                        outbox,
                        engine: Engine::Postgres(shared),
                    },
                    WriterHandle { threads, tx },
                ))
            }
        }
    }

    /// Opens (or creates) `data_dir/postdesk.redb` and its journal, applies
    /// what the journal holds beyond the database (after a crash), and
    /// starts the writer. `config` is what recovered messages are threaded
    /// with. A store that is the target of an unfinished `store copy` is
    /// refused.
    pub fn open(data_dir: &Path, config: Arc<Config>) -> Result<(Store, WriterHandle), StoreError> {
        Store::open_redb(data_dir, config, false)
    }

    /// [`Store::open`] for `store copy`'s target, which may hold an
    /// unfinished copy (the one it goes on with).
    pub(in crate::store) fn open_for_copy(
        data_dir: &Path,
        config: Arc<Config>,
    ) -> Result<(Store, WriterHandle), StoreError> {
        Store::open_redb(data_dir, config, true)
    }

    fn open_redb(
        data_dir: &Path,
        config: Arc<Config>,
        for_copy: bool,
    ) -> Result<(Store, WriterHandle), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("postdesk.redb");
        let cache = usize::try_from(config.server.store_cache).unwrap_or(usize::MAX);
        let blobs = Arc::new(BlobFile::open(&data_dir.join("postdesk.blobs"))?);
        let db = open_db(&path, cache)?;
        writer::init_tables(&db)?;
        if !for_copy {
            if let Some(p) = self::redb::export::unfinished_copy(&db)? {
                return Err(portable::unfinished(&p));
            }
        }
        let db = Arc::new(db);
        let slot = Arc::new(DbSlot {
            path,
            cache,
            db: RwLock::new(Some(db.clone())),
            blobs,
            uncommitted: AtomicBool::new(false),
        });
        let w = writer::Writer::open(slot.clone(), &db, config)?;
        drop(db);
        let (tx, rx) = mpsc::channel();
        let outbox = Arc::new(Notify::new());
        let tx: Arc<[mpsc::Sender<WriterMsg>]> = vec![tx].into();
        let handle = w.spawn(rx, tx.clone(), outbox.clone())?;
        Ok((
            Store {
                tx,
                outbox,
                engine: Engine::Redb(slot),
            },
            handle,
        ))
    }

    #[cfg(test)]
    fn slot(&self) -> &Arc<DbSlot> {
        match &self.engine {
            Engine::Redb(slot) => slot,
            Engine::Postgres(_) => panic!("not a redb store"),
        }
    }

    /// The engine's name, as `[storage] engine` writes it.
    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Redb(_) => "redb",
            Engine::Postgres(_) => "postgres",
        }
    }

    async fn run(&self, cmd: StoreCmd) -> Result<Done, StoreError> {
        let lane = Store::lane(&cmd);
        self.enqueue(cmd, lane).await
    }

    /// Which writer's queue a command goes to (with several writers): the
    /// replies in one thread, and the commands on one ticket, to the same
    /// one, so that on one node they are applied in the order they came
    /// (across nodes, and between threads, the database's keys and locks
    /// decide). A message that names no other starts a thread: it goes to
    /// its sender's queue, so that one sender's new tickets (a web form's,
    /// a monitoring system's) share transactions rather than wait on each
    /// other's lock of the sender's auto-reply count in K transactions.
    fn lane(cmd: &StoreCmd) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = |s: &str| BuildHasherDefault::<DefaultHasher>::default().hash_one(s);
        match cmd {
            StoreCmd::Ingest(inb) => {
                let p = &inb.parsed;
                match p.references.first().or(p.in_reply_to.first()) {
                    Some(root) => hash(root),
                    None => match &p.from {
                        Some(from) => hash(&from.email),
                        None => hash(&p.message_id),
                    },
                }
            }
            StoreCmd::SetStatus { id, .. }
            | StoreCmd::Reply { id, .. }
            | StoreCmd::Assign { id, .. } => id.0,
            StoreCmd::Merge { source, .. } => source.0,
            StoreCmd::Delivered { id, .. } => *id,
        }
    }

    /// Hands `cmd` to writer queue `lane` (modulo their number) now
    /// (commands enqueued on one lane one after the other are applied in
    /// that order) and returns a future of its answer.
    fn enqueue(
        &self,
        cmd: StoreCmd,
        lane: u64,
    ) -> impl std::future::Future<Output = Result<Done, StoreError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let tx = &self.tx[(lane % self.tx.len().max(1) as u64) as usize];
        let sent = tx.send(WriterMsg::Job(Job { cmd, reply })).is_ok();
        async move {
            if !sent {
                return Err(StoreError::Unavailable);
            }
            rx.await.map_err(|_| StoreError::Unavailable)?
        }
    }

    /// Threads and durably commits one inbound message, with everything it
    /// causes (status changes, workflows, queued emails). `Ok` means the
    /// message is on disk.
    pub async fn ingest(&self, inbound: Inbound) -> Result<Outcome, StoreError> {
        match self.run(StoreCmd::Ingest(Box::new(inbound))).await? {
            Done::Ingested(o) => Ok(o),
            other => Err(StoreError::Corrupt(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    /// Queues one inbound message now (so messages submitted one after the
    /// other are applied in that order, all on one writer) and returns a
    /// future of its outcome.
    pub fn submit(
        &self,
        inbound: Inbound,
    ) -> impl std::future::Future<Output = Result<Outcome, StoreError>> + Send + 'static {
        let done = self.enqueue(StoreCmd::Ingest(Box::new(inbound)), 0);
        async move {
            match done.await? {
                Done::Ingested(o) => Ok(o),
                other => Err(StoreError::Corrupt(format!(
                    "unexpected writer answer {other:?}"
                ))),
            }
        }
    }

    /// Runs an operator command; see [`StoreCmd`].
    pub async fn command(&self, cmd: StoreCmd) -> Result<Done, StoreError> {
        self.run(cmd).await
    }

    /// Records what became of outbox emails (sent, retry later, failed).
    /// Every result is handed to the writer before any answer is awaited,
    /// so they share a commit.
    pub async fn delivered_all(
        &self,
        results: Vec<(u64, u64, Delivery)>,
    ) -> Vec<(u64, Result<(), StoreError>)> {
        let waiting: Vec<_> = results
            .into_iter()
            .map(|(id, lease, result)| {
                (
                    id,
                    self.enqueue(StoreCmd::Delivered { id, lease, result }, id),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(waiting.len());
        for (id, done) in waiting {
            out.push((id, done.await.map(drop)));
        }
        out
    }

    /// Resolves when a commit queued an email (or was already signalled).
    pub async fn outbox_notified(&self) {
        self.outbox.notified().await;
    }

    /// How many tickets are stored, and how many emails wait for a (first or
    /// next) delivery attempt.
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        match &self.engine {
            Engine::Redb(_) => {
                self.read(|txn| Ok((read::ticket_count(txn)?, read::outbox_pending(txn)?)))
                    .await
            }
            Engine::Postgres(s) => postgres::read::counts(s).await,
        }
    }

    /// Tickets, newest first.
    pub async fn tickets(&self, filter: TicketFilter) -> Result<Vec<TicketView>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::tickets(txn, &filter)).await,
            Engine::Postgres(s) => postgres::read::tickets(s, &filter).await,
        }
    }

    /// A ticket with its messages and timeline.
    pub async fn ticket(&self, id: TicketId) -> Result<Option<TicketDetail>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::ticket(txn, id)).await,
            Engine::Postgres(s) => postgres::read::ticket(s, id).await,
        }
    }

    /// Messages kept without a ticket, newest first.
    pub async fn conversations(&self, limit: usize) -> Result<Vec<MessageView>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::conversations(txn, limit)).await,
            Engine::Postgres(s) => postgres::read::conversations(s, limit).await,
        }
    }

    /// One stored message (inbound or outbound) by its normalised
    /// Message-ID, with its raw bytes.
    pub async fn message(&self, message_id: String) -> Result<Option<StoredMessage>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::message(txn, &message_id)).await,
            Engine::Postgres(s) => postgres::read::message(s, &message_id).await,
        }
    }

    /// The outbox, newest first, optionally only one state.
    pub async fn outbox(
        &self,
        state: Option<OutState>,
        limit: usize,
    ) -> Result<Vec<OutboxView>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::outbox(txn, state, limit)).await,
            Engine::Postgres(s) => postgres::read::outbox(s, state, limit).await,
        }
    }

    /// One outbox entry.
    pub async fn outbox_entry(&self, id: u64) -> Result<Option<OutboxView>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::outbox_one(txn, id)).await,
            Engine::Postgres(s) => postgres::read::outbox_entry(s, id).await,
        }
    }

    /// Up to `limit` emails due at `now` with their bytes, and when the
    /// next one after them is due (if any). With several nodes the emails
    /// are claimed for this one ([`DueMail::lease`]): each is handed to one
    /// node at a time.
    pub async fn due(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<(Vec<DueMail>, Option<Millis>), StoreError> {
        match &self.engine {
            Engine::Redb(_) => self.read(move |txn| read::due(txn, now, limit)).await,
            Engine::Postgres(s) => postgres::read::due(s, now, limit).await,
        }
    }

    /// Renews this node's claims `(outbox id, lease)` on emails it is
    /// sending (engines with several nodes; nothing to do on redb).
    pub async fn renew(&self, leases: &[(u64, u64)]) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(()),
            Engine::Postgres(s) => postgres::read::renew(s, leases).await,
        }
    }

    /// How often the outbox worker renews its claims while it sends: a
    /// third of the lease.
    pub fn renew_every(&self) -> std::time::Duration {
        match &self.engine {
            Engine::Redb(_) => std::time::Duration::from_secs(15),
            Engine::Postgres(_) => {
                std::time::Duration::from_secs_f64(postgres::read::lease_secs() / 3.0)
            }
        }
    }

    /// The live config, whose fingerprint the heartbeat reports (engines
    /// with several nodes: `health` compares them).
    pub fn watch_config(&self, cell: Arc<crate::config::ConfigCell>) {
        if let Engine::Postgres(s) = &self.engine {
            let _ = s.live.set(cell);
        }
    }

    /// This node's config fingerprint as the store reports it.
    pub fn fingerprint(&self) -> Option<String> {
        match &self.engine {
            Engine::Redb(_) => None,
            Engine::Postgres(s) => Some(match s.live.get() {
                Some(cell) => cell.get().fingerprint.clone(),
                None => s
                    .fingerprint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            }),
        }
    }

    /// Set when another process registered with this node's `node_id`
    /// (engines with several nodes): what `health` warns about.
    pub fn duplicate_node(&self) -> Option<String> {
        match &self.engine {
            Engine::Redb(_) => None,
            Engine::Postgres(s) => s
                .duplicate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// What a commit waits for (engines with several nodes):
    /// PostgreSQL's `synchronous_commit` and `synchronous_standby_names`.
    pub async fn durability(&self) -> Result<Option<(String, String)>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(None),
            Engine::Postgres(s) => postgres::read::durability(s).await.map(Some),
        }
    }

    /// A clean stop, once the outbox worker is done (engines with several
    /// nodes): this process's leases are given up, so that its emails go
    /// out at once from another node or its own next run, and its row in
    /// `nodes` is marked as gone.
    pub async fn leave(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(()),
            Engine::Postgres(s) => postgres::leave(s).await,
        }
    }

    /// The nodes that serve this store and were seen in the last minute
    /// (one, this one, on redb).
    pub async fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(Vec::new()),
            Engine::Postgres(s) => postgres::read::nodes(s).await,
        }
    }

    /// Runs `f` on a redb read transaction, on a blocking thread. It sees
    /// every job the writer has answered before the call. Callers outside
    /// the store use the typed reads above: no engine's transaction leaves
    /// it.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&read::Snapshot) -> Result<T, StoreError> + Send + 'static,
    {
        let Engine::Redb(slot) = &self.engine else {
            return Err(StoreError::Unavailable);
        };
        if slot.uncommitted.load(Ordering::Acquire) {
            let (tx, rx) = oneshot::channel();
            if self.tx[0].send(WriterMsg::Flush(tx)).is_ok() {
                // A writer that stopped has committed what it answered, or
                // left it to the journal: read what is there either way.
                let _ = rx.await;
            }
        }
        let slot = slot.clone();
        let task = tokio::task::spawn_blocking(move || {
            let db = slot.get()?;
            let txn = ::redb::ReadableDatabase::begin_read(&*db)?;
            f(&read::Snapshot::new(txn, &slot.blobs))
        });
        task.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Asks the writer to finish what is queued and stop (every writer
    /// thread: [`WriterHandle::join`] sends the rest).
    pub fn shutdown(&self) {
        for tx in self.tx.iter() {
            let _ = tx.send(WriterMsg::Shutdown);
        }
    }
}

/// Applies one command inside an engine's transaction: the one mapping
/// of a command onto the ticket logic, for every engine.
pub(crate) fn apply(
    tables: &mut impl Txn,
    cmd: &StoreCmd,
    now: Millis,
) -> Result<Done, StoreError> {
    Ok(match cmd {
        StoreCmd::Ingest(inbound) => Done::Ingested(apply_inbound(tables, inbound, now)?),
        StoreCmd::SetStatus { config, id, status } => {
            Done::Ticket(desk::set_status(tables, config, *id, status, now)?)
        }
        StoreCmd::Reply {
            config,
            id,
            body,
            user,
        } => Done::Queued(desk::reply(
            tables,
            config,
            *id,
            body,
            user.as_deref(),
            now,
        )?),
        StoreCmd::Assign { config, id, owner } => {
            Done::Ticket(desk::assign(tables, config, *id, owner, now)?)
        }
        StoreCmd::Merge {
            config,
            source,
            target,
        } => Done::Ticket(desk::merge(tables, config, *source, *target, now)?),
        StoreCmd::Delivered { id, result, .. } => {
            desk::delivered(tables, *id, result, now)?;
            Done::Ok
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::redb::schema;

    /// A store in `dir` with one channel that opens tickets.
    fn open(dir: &Path) -> (Store, WriterHandle, Arc<Config>) {
        let text = format!(
            r#"
[server]
templates = "{templates}"
data_dir = "{data}"

[outbound]
from = "Acme Support <support@acme.example>"

[[channel]]
id = "support"
addresses = ["support@acme.example"]
pipeline = "support"

[[pipeline]]
id = "support"
statuses = [{{ id = "new" }}, {{ id = "closed", closed = true }}]
initial_status = "new"
"#,
            templates = concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
            data = dir.join("data").display(),
        );
        let path = dir.join("postdesk.toml");
        std::fs::write(&path, text).unwrap();
        let config = Arc::new(crate::config::load(&path).unwrap());
        let (store, writer) = Store::open(&config.server.data_dir, config.clone()).unwrap();
        (store, writer, config)
    }

    fn mail(config: &Arc<Config>, n: usize, body: &str) -> Inbound {
        let raw = format!(
            "From: c{n}@example.com\r\nTo: support@acme.example\r\nSubject: request {n}\r\n\
             Message-ID: <m{n}@example.com>\r\n\r\n{body}\r\n"
        );
        Inbound::imported(config, raw.into_bytes(), "support", 0)
    }

    /// Stops the store, opens it again from `dir` and counts its tickets.
    async fn tickets_after_restart(dir: &Path, store: Store, writer: WriterHandle) -> u64 {
        store.shutdown();
        writer.join();
        drop(store);
        let (store, writer, _) = open(dir);
        let count = store.counts().await.unwrap().0;
        store.shutdown();
        writer.join();
        count
    }

    type Answer =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, StoreError>> + Send>>;

    /// Round `round`: a message as big as a whole batch may be (so that it
    /// is a batch of its own), then `small` small ones queued behind it —
    /// all built before the first is submitted, so that the small ones are
    /// queued before the writer can finish the big one and join its
    /// transaction. Their answers, the big one's first.
    fn big_then_small(
        store: &Store,
        config: &Arc<Config>,
        round: usize,
        small: usize,
    ) -> (Answer, Vec<Answer>) {
        let big = mail(config, round * 100, &"x".repeat(writer::MAX_BATCH_BYTES));
        let small: Vec<_> = (1..=small)
            .map(|i| mail(config, round * 100 + i, "small"))
            .collect();
        let first: Answer = Box::pin(store.submit(big));
        let rest = small
            .into_iter()
            .map(|m| Box::pin(store.submit(m)) as Answer)
            .collect();
        (first, rest)
    }

    /// A batch answered while the next one is being applied is not yet
    /// committed to redb (both share one transaction): a read made right
    /// after the answer must see it all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_every_answered_message_while_later_ones_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer, config) = open(dir.path());
        for round in 0..20 {
            let (first, rest) = big_then_small(&store, &config, round, 39);
            let Outcome::Ticket { id, .. } = first.await.unwrap() else {
                panic!("no ticket");
            };
            let seen = store.ticket(id).await.unwrap();
            assert!(
                seen.is_some(),
                "round {round}: ticket {id} answered but not visible"
            );
            for done in rest {
                done.await.unwrap();
            }
        }
        store.shutdown();
        writer.join();
    }

    /// A batch that fails drops the transaction it shares with batches
    /// already answered; those come back from the journal, once each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_batch_does_not_lose_the_answered_ones_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer, config) = open(dir.path());
        // A damaged outbox row: recording a delivery for it fails.
        {
            let db = store.slot().get().unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(schema::OUTBOX)
                .unwrap()
                .insert(7, b"not a record".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let mut answered = 0;
        for round in 0..10 {
            let (first, small) = big_then_small(&store, &config, round, 19);
            // Journaled like the mail, and fails in the small ones' batch
            // (in the transaction that holds the first one, answered).
            let bad = store.enqueue(
                StoreCmd::Delivered {
                    id: 7,
                    lease: 0,
                    result: Delivery::Sent,
                },
                0,
            );
            first.await.unwrap();
            for done in small {
                done.await.unwrap();
            }
            assert!(matches!(bad.await, Err(StoreError::Corrupt(_))));
            answered += 20;
            let count = store.counts().await.unwrap().0;
            assert_eq!(count, answered, "round {round}");
        }
        // And after a restart (the journal replayed again, if anything is
        // left in it), still once each.
        assert_eq!(
            tickets_after_restart(dir.path(), store, writer).await,
            answered
        );
    }

    /// The disk breaks on the batch after an answered one (sharing its
    /// transaction) and stays broken while the journal is replayed: the
    /// replay stops instead of skipping the answered message, and puts it
    /// back once the disk works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answered_message_survives_a_disk_that_fails_its_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer, config) = open(dir.path());
        let big = "x".repeat(writer::MAX_BATCH_BYTES);
        let marker = "BREAK-THE-DISK";
        store.slot().blobs.fault.lock().unwrap().marker = Some(marker.as_bytes().to_vec());
        // Both queued before the writer can finish the first.
        let (a, b) = (mail(&config, 1, &big), mail(&config, 2, marker));
        let first = store.submit(a);
        let breaking = store.submit(b);
        let Outcome::Ticket { id, .. } = first.await.unwrap() else {
            panic!("no ticket");
        };
        assert!(breaking.await.is_err(), "its bytes were never written");
        assert!(store.slot().blobs.fault.lock().unwrap().failing);
        // A read while the disk is still broken: the writer tries the
        // replay for it (and cannot write the answered message's bytes).
        store.counts().await.unwrap();
        {
            let mut fault = store.slot().blobs.fault.lock().unwrap();
            fault.marker = None;
            fault.failing = false;
        }
        let seen = store.ticket(id).await.unwrap();
        assert!(seen.is_some(), "ticket {id} was answered but is gone");
        assert_eq!(
            tickets_after_restart(dir.path(), store, writer).await,
            1,
            "the answered message, once"
        );
    }
}
