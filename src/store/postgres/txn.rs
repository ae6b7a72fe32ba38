//! The PostgreSQL engine's side of a desk transaction: [`PgTxn`], one
//! message's or command's statements inside its savepoint of a writer's
//! batch, implementing [`crate::desk::Txn`].
//!
//! Correctness across nodes comes from keys and locks, not from reads:
//! - reading a ticket or an outbox entry locks its row (`FOR UPDATE`), so
//!   two nodes run one ticket's rules one after the other, the second on
//!   what the first committed;
//! - every Message-ID is one row under one unique key. Storing a message
//!   claims its own id; a message naming others claims theirs for its
//!   ticket. A claim that meets a row committed since this attempt read
//!   the id (absent then) means another node won a race the decision
//!   depended on: the attempt is marked [`PgTxn::raced`] and the writer
//!   rolls it back to its savepoint and runs it again, now seeing the
//!   winner (the same message twice → a duplicate; a thread started at two
//!   nodes → one ticket).
//! - lock order: Message-ID rows, then tickets, then the contact's row.
//!
//! Statements run one after another on the writer's connection from its
//! own thread (`block_on`): the ticket logic is synchronous, the engine
//! keeps it so.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use tokio::runtime::Runtime;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::{db_id, from_db_id, id_key, ticket_from_db, Conn, Shared};
use crate::clock::Millis;
use crate::desk::records::{text_of, EventRec, MessageRec, OutboxRec, TicketRec};
use crate::desk::{IdRow, StoreError, TimelineEvent, Txn};
use crate::ingest::trust::ReplyKeys;
use crate::ingest::{ThreadView, TicketId};

/// A parameter of a queued write (owned: it is sent later).
type Param = Box<dyn ToSql + Sync + Send>;

/// A write queued by [`PgTxn::later`].
enum Deferred {
    Simple(std::borrow::Cow<'static, str>),
    Exec(&'static str, Vec<Param>),
    /// A Message-ID claim (`INSERT … ON CONFLICT DO NOTHING`): when it
    /// inserted nothing, the conflict is settled after the round trip
    /// ([`PgTxn::settle`]).
    Claim(&'static str, Vec<Param>, Conflict),
}

/// What to do when a queued claim found its row taken.
enum Conflict {
    /// This message's own Message-ID.
    Own {
        message_id: String,
        ticket: Option<i64>,
        seq: i64,
    },
    /// An id this message names, claimed for `ticket`.
    Named { id: String, ticket: TicketId },
}

/// The prepared statements of queued writes (cached per connection: a
/// round trip only the first time a connection sees one).
async fn prepare(
    c: &Conn,
    pending: &[Deferred],
) -> Result<Vec<Option<tokio_postgres::Statement>>, StoreError> {
    let mut out = Vec::with_capacity(pending.len());
    for d in pending {
        out.push(match d {
            Deferred::Simple(_) => None,
            Deferred::Exec(sql, _) | Deferred::Claim(sql, _, _) => {
                Some(c.prepare_cached(sql).await?)
            }
        });
    }
    Ok(out)
}

/// Sends queued writes pipelined: each request goes out when its future is
/// first polled, and `join_all` polls them in order. The rows each changed.
async fn run(
    c: &Conn,
    pending: &[Deferred],
    statements: &[Option<tokio_postgres::Statement>],
) -> Result<Vec<u64>, StoreError> {
    let futures = pending.iter().zip(statements).map(|(d, st)| async move {
        match (d, st) {
            (Deferred::Simple(sql), _) => c.batch_execute(sql).await.map(|()| 0),
            (Deferred::Exec(_, params) | Deferred::Claim(_, params, _), Some(st)) => {
                let params: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                c.execute(st, &params).await
            }
            (Deferred::Exec(..) | Deferred::Claim(..), None) => Ok(0),
        }
    });
    let mut counts = Vec::with_capacity(pending.len());
    for result in futures_util::future::join_all(futures).await {
        counts.push(result?);
    }
    Ok(counts)
}

/// The conflicts of the claims that inserted nothing.
fn conflicts(pending: Vec<Deferred>, counts: &[u64]) -> Vec<Conflict> {
    pending
        .into_iter()
        .zip(counts)
        .filter_map(|(d, n)| match d {
            Deferred::Claim(_, _, conflict) if *n == 0 => Some(conflict),
            _ => None,
        })
        .collect()
}

/// A record as a query parameter (`$n::text::jsonb`).
fn json<T: serde::Serialize>(value: &T) -> Param {
    Box::new(serde_json::to_string(value).unwrap_or_default())
}

/// The select list that draws ids ahead: message seqs for a message and
/// the emails it causes, outbox ids for those emails (unused ones are gaps
/// nobody sees).
const IDS_AHEAD: &str = "ARRAY(SELECT nextval('message_seq') FROM generate_series(1, 4)), \
                         ARRAY(SELECT nextval('outbox_seq') FROM generate_series(1, 3))";

/// Raw bytes are stored in rows of at most this many bytes.
pub(super) const CHUNK: usize = 256 * 1024;

pub(super) struct PgTxn<'a> {
    rt: &'a Runtime,
    c: &'a Conn,
    shared: &'a Shared,
    /// The batch this attempt belongs to (see `batches`).
    batch: i64,
    /// Emails this attempt queued (counted after the batch's COMMIT).
    pub(super) queued_mail: u64,
    current_text: Option<(u64, String)>,
    /// Message-IDs this attempt found without a ticket.
    absent: RefCell<HashSet<String>>,
    /// A claim met a row committed since this attempt read it: redo.
    raced: Cell<bool>,
    /// Writes not sent yet ([`PgTxn::later`]).
    pending: RefCell<Vec<Deferred>>,
    /// Whether anything was sent (the savepoint among it).
    sent: Cell<bool>,
    /// What this attempt read or wrote, so that it is not asked for again:
    /// Message-ID rows, tickets (locked once read), message rows.
    ids: RefCell<HashMap<String, Option<IdRow>>>,
    tickets: RefCell<HashMap<TicketId, TicketRec>>,
    messages: RefCell<HashMap<u64, MessageRec>>,
    /// Outbox entries read (locked) or written.
    outbox: RefCell<HashMap<u64, OutboxRec>>,
    /// Message seqs drawn ahead (one round trip for a message and the
    /// emails it causes; drawn after the ticket's lock, so still in order
    /// on the ticket). Unused ones are gaps, never seen.
    message_seqs: RefCell<Vec<u64>>,
    outbox_ids: RefCell<Vec<u64>>,
    /// A contact's hourly count taken under its lock: address, since,
    /// count (with this attempt's own sends).
    contact: RefCell<Option<(String, Millis, u64)>>,
    /// A ticket id drawn ahead ([`PgTxn::prefetch_ids`]).
    ticket_ahead: Cell<Option<TicketId>>,
    /// The ids ahead were drawn before any ticket's lock.
    drawn_unlocked: Cell<bool>,
    /// Timeline entries not sent yet (ticket, at, kind, detail as JSON).
    events: RefCell<Vec<(i64, Millis, String, String)>>,
}

impl<'a> PgTxn<'a> {
    pub(super) fn new(rt: &'a Runtime, c: &'a Conn, shared: &'a Shared, batch: i64) -> Self {
        PgTxn {
            rt,
            c,
            shared,
            batch,
            queued_mail: 0,
            current_text: None,
            absent: RefCell::new(HashSet::new()),
            raced: Cell::new(false),
            pending: RefCell::new(Vec::new()),
            sent: Cell::new(false),
            ids: RefCell::new(HashMap::new()),
            tickets: RefCell::new(HashMap::new()),
            messages: RefCell::new(HashMap::new()),
            outbox: RefCell::new(HashMap::new()),
            message_seqs: RefCell::new(Vec::new()),
            outbox_ids: RefCell::new(Vec::new()),
            contact: RefCell::new(None),
            ticket_ahead: Cell::new(None),
            drawn_unlocked: Cell::new(false),
            events: RefCell::new(Vec::new()),
        }
    }

    /// Whether this node still holds lease `token` on outbox entry `id`
    /// (locking the row): a delivery result after the lease was lost and
    /// the email claimed by another node must not be recorded.
    pub(super) fn holds_lease(&self, id: u64, token: u64) -> Result<bool, StoreError> {
        let row = self.opt(
            "SELECT lease_token, rec FROM outbox WHERE id = $1 FOR UPDATE",
            &[&db_id(id)],
        )?;
        Ok(match row {
            Some(r) => {
                let rec = r.try_get::<_, Json<OutboxRec>>(1)?.0;
                self.outbox.borrow_mut().insert(id, rec);
                r.try_get::<_, Option<i64>>(0)?.map(from_db_id) == Some(token)
            }
            None => false,
        })
    }

    pub(super) fn raced(&self) -> bool {
        self.raced.get()
    }

    /// Queues a write whose result nothing waits for: it goes to the
    /// database with the next statement that returns something (or with
    /// [`PgTxn::finish`]), pipelined — one round trip for all of them, in
    /// the order they were queued.
    fn later(&self, sql: &'static str, params: Vec<Param>) {
        self.pending.borrow_mut().push(Deferred::Exec(sql, params));
    }

    /// Queues statements without parameters (a savepoint's, the batch's
    /// BEGIN).
    pub(super) fn later_simple(&self, sql: impl Into<std::borrow::Cow<'static, str>>) {
        self.pending.borrow_mut().push(Deferred::Simple(sql.into()));
    }

    /// Queues the upsert that locks `addr`'s row in `contacts` (new or
    /// not) until the batch commits.
    fn lock_contact(&self, addr: &str) {
        self.later(
            "INSERT INTO contacts (email) VALUES ($1)
             ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email",
            vec![Box::new(addr.to_string())],
        );
    }

    /// Queues the batch's row in `batches` (with its BEGIN: see the
    /// writer's `probe`).
    pub(super) fn later_batch_row(&self, token: i64) {
        self.later(
            "INSERT INTO batches (token, node_id) VALUES ($1, $2)",
            vec![Box::new(token), Box::new(self.shared.node.clone())],
        );
    }

    /// Reads the rows of all the Message-IDs a message names (its own, its
    /// In-Reply-To and References) in one round trip, for threading and
    /// the duplicate check to find in the cache.
    ///
    /// With `new_ticket` (the message most likely makes a ticket, which is
    /// acknowledged to its sender), the same round trip draws the ids
    /// ahead, a ticket id unless the message (`ids[0]`) is stored already,
    /// and locks and counts the sender's hourly limit (`sender`, at `now`:
    /// see [`Txn::auto_sent_last_hour`]). A message that then makes no
    /// ticket leaves a gap in the ticket ids; ids drawn before a ticket's
    /// lock are not used on it (see [`PgTxn::ticket`]). The contact's row
    /// is then locked before the message's Message-ID rows are claimed,
    /// the other way round from a reply: a reply naming this message, from
    /// the same sender, at the same moment, can deadlock with it, which
    /// PostgreSQL breaks and the writer runs again.
    pub(super) fn prefetch_ids(
        &self,
        ids: &[&str],
        new_ticket: Option<(&str, Millis)>,
    ) -> Result<(), StoreError> {
        let wanted: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.ids.borrow().contains_key(*id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = wanted.iter().map(|id| id_key(id)).collect();
        let lookup: (&str, &[&(dyn ToSql + Sync)]) = (
            "SELECT key, ticket_id, message FROM message_ids WHERE key = ANY($1)",
            &[&keys],
        );
        let own = ids.first().map(|id| id_key(id)).unwrap_or_default();
        let draw = format!(
            "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM message_ids
                                          WHERE key = $1 AND message IS NOT NULL)
                    THEN nextval('ticket_id_seq') END, {IDS_AHEAD}"
        );
        let count = "SELECT count(*) FROM auto_sent WHERE email = $1 AND at > $2";
        let sender = new_ticket.filter(|_| self.message_seqs.borrow().is_empty());
        let (addr, since) =
            sender.map_or((String::new(), 0), |(a, now)| (a.to_string(), now - HOUR));
        let mut results = if sender.is_some() {
            self.lock_contact(&addr);
            self.queries(&[lookup, (&draw, &[&own]), (count, &[&addr, &since])])?
        } else {
            self.queries(&[lookup])?
        };
        if results.len() == 3 {
            let counted = results.pop().unwrap_or_default();
            let n = match counted.first() {
                Some(r) => from_db_id(r.try_get(0)?),
                None => 0,
            };
            *self.contact.borrow_mut() = Some((addr, since, n));
            let drawn = results.pop().unwrap_or_default();
            let row = drawn
                .first()
                .ok_or_else(|| StoreError::Corrupt("the sequences gave nothing".into()))?;
            self.take_ids_ahead(row, 1)?;
            self.ticket_ahead
                .set(row.try_get::<_, Option<i64>>(0)?.map(ticket_from_db));
            self.drawn_unlocked.set(true);
        }
        let rows = results.pop().unwrap_or_default();
        let mut found: HashMap<Vec<u8>, IdRow> = HashMap::new();
        for r in rows {
            found.insert(
                r.try_get(0)?,
                IdRow {
                    ticket: r.try_get::<_, Option<i64>>(1)?.map(ticket_from_db),
                    seq: r.try_get::<_, Option<i64>>(2)?.map(from_db_id),
                },
            );
        }
        for (id, key) in wanted.into_iter().zip(keys) {
            let row = found.get(&key).copied();
            if row.is_none_or(|r| r.ticket.is_none()) {
                self.absent.borrow_mut().insert(id.to_string());
            }
            self.ids.borrow_mut().insert(id.to_string(), row);
        }
        Ok(())
    }

    /// Whether any statement went to the database (else there is nothing
    /// to roll back, not even the savepoint).
    pub(super) fn sent(&self) -> bool {
        self.sent.get()
    }

    /// The queued writes, taken to be sent now; with `events` (the job's
    /// last writes), its timeline entries go last, as one statement (in
    /// their order: their ids come from the sequence row by row). Nothing
    /// in a job reads the timeline, so it waits until then.
    fn take_pending(&self, events: bool) -> Vec<Deferred> {
        self.sent.set(true);
        let mut pending = std::mem::take(&mut *self.pending.borrow_mut());
        let events = if events {
            std::mem::take(&mut *self.events.borrow_mut())
        } else {
            Vec::new()
        };
        if !events.is_empty() {
            let mut tickets = Vec::with_capacity(events.len());
            let mut ats = Vec::with_capacity(events.len());
            let mut kinds = Vec::with_capacity(events.len());
            let mut details = Vec::with_capacity(events.len());
            for (t, at, kind, detail) in events {
                tickets.push(t);
                ats.push(at);
                kinds.push(kind);
                details.push(detail);
            }
            pending.push(Deferred::Exec(
                "INSERT INTO timeline (ticket_id, at, kind, detail)
                 SELECT t, a, k, d::jsonb
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])
                      WITH ORDINALITY AS e(t, a, k, d, n)
                 ORDER BY n",
                vec![
                    Box::new(tickets),
                    Box::new(ats),
                    Box::new(kinds),
                    Box::new(details),
                ],
            ));
        }
        pending
    }

    /// Sends what is queued; the first error, if any.
    pub(super) fn finish(&self) -> Result<(), StoreError> {
        loop {
            let pending = self.take_pending(true);
            if pending.is_empty() {
                return Ok(());
            }
            let counts = self.rt.block_on(async {
                let statements = prepare(self.c, &pending).await?;
                run(self.c, &pending, &statements).await
            })?;
            // Settling may queue writes of its own: send those too.
            self.settle(conflicts(pending, &counts))?;
        }
    }

    /// The queued writes, then `sql`, in one round trip.
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let mut rows = self.queries(&[(sql, params)])?;
        Ok(rows.pop().unwrap_or_default())
    }

    /// The queued writes, then each query in order, in one round trip (the
    /// database runs them one after the other: a query behind a
    /// `FOR UPDATE` runs once the lock is held). Their rows, in order.
    fn queries(
        &self,
        list: &[(&str, &[&(dyn ToSql + Sync)])],
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        let pending = self.take_pending(false);
        let (counts, rows) = self.rt.block_on(async {
            let statements = prepare(self.c, &pending).await?;
            let mut prepared = Vec::with_capacity(list.len());
            for (sql, _) in list {
                prepared.push(self.c.prepare_cached(sql).await?);
            }
            let reads = futures_util::future::join_all(
                prepared
                    .iter()
                    .zip(list)
                    .map(|(st, (_, params))| self.c.query(st, params)),
            );
            let (writes, rows) = tokio::join!(run(self.c, &pending, &statements), reads);
            let rows = rows.into_iter().collect::<Result<Vec<_>, _>>();
            Ok::<_, StoreError>((writes?, rows?))
        })?;
        self.settle(conflicts(pending, &counts))?;
        Ok(rows)
    }

    /// A queued claim found its Message-ID row taken: a row only named so
    /// far (a reply came first) becomes this message's; a row that has a
    /// message, or names another ticket though this attempt found the id
    /// without one, means another node won a race since: [`PgTxn::raced`].
    fn settle(&self, conflicts: Vec<Conflict>) -> Result<(), StoreError> {
        for conflict in conflicts {
            match conflict {
                Conflict::Named { id, ticket } => {
                    self.ids.borrow_mut().remove(&id);
                    self.check_claim(&id, Some(ticket))?;
                }
                Conflict::Own {
                    message_id,
                    ticket,
                    seq,
                } => {
                    let key = id_key(&message_id);
                    let row = self.opt(
                        "SELECT ticket_id, message FROM message_ids WHERE key = $1 FOR UPDATE",
                        &[&key],
                    )?;
                    let (owner, stored) = match &row {
                        Some(r) => (
                            r.try_get::<_, Option<i64>>(0)?,
                            r.try_get::<_, Option<i64>>(1)?,
                        ),
                        None => (None, None),
                    };
                    if stored.is_some_and(|s| s != seq) {
                        self.raced.set(true);
                        return Err(StoreError::Database(
                            "the message was stored by another node meanwhile".into(),
                        ));
                    }
                    if owner.is_some()
                        && owner != ticket
                        && self.absent.borrow().contains(&message_id)
                    {
                        self.raced.set(true);
                    }
                    self.later(
                        "UPDATE message_ids SET ticket_id = $2, message = $3 WHERE key = $1",
                        vec![Box::new(key), Box::new(ticket), Box::new(seq)],
                    );
                }
            }
        }
        Ok(())
    }

    fn opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Message seqs and outbox ids drawn ahead, in one round trip.
    fn draw_ids_ahead(&self) -> Result<(), StoreError> {
        let row = self
            .opt(&format!("SELECT 0::bigint, {IDS_AHEAD}"), &[])?
            .ok_or_else(|| StoreError::Corrupt("the sequences gave nothing".into()))?;
        self.take_ids_ahead(&row, 1)
    }

    /// The arrays of [`IDS_AHEAD`] from column `at` on, kept so that
    /// `pop` gives the lowest first.
    fn take_ids_ahead(&self, row: &Row, at: usize) -> Result<(), StoreError> {
        let mut seqs: Vec<i64> = row.try_get(at)?;
        let mut outbox: Vec<i64> = row.try_get(at + 1)?;
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        outbox.sort_unstable_by(|a, b| b.cmp(a));
        self.message_seqs
            .borrow_mut()
            .extend(seqs.into_iter().map(from_db_id));
        self.outbox_ids
            .borrow_mut()
            .extend(outbox.into_iter().map(from_db_id));
        Ok(())
    }

    fn next(&self, seq: &str) -> Result<u64, StoreError> {
        let row = self
            .opt(&format!("SELECT nextval('{seq}')"), &[])?
            .ok_or_else(|| StoreError::Corrupt(format!("sequence {seq} gave nothing")))?;
        Ok(from_db_id(row.try_get(0)?))
    }

    /// The raw bytes of a stored message.
    fn raw(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self.query(
            "SELECT data FROM message_chunks WHERE seq = $1 ORDER BY part",
            &[&db_id(seq)],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for r in rows {
            out.extend_from_slice(r.try_get::<_, &[u8]>(0)?);
        }
        Ok(Some(out))
    }

    fn id_row(&self, id: &str) -> Result<Option<IdRow>, StoreError> {
        if let Some(row) = self.ids.borrow().get(id) {
            return Ok(*row);
        }
        let row = self.opt(
            "SELECT ticket_id, message FROM message_ids WHERE key = $1",
            &[&id_key(id)],
        )?;
        let row = match row {
            Some(r) => Some(IdRow {
                ticket: r.try_get::<_, Option<i64>>(0)?.map(ticket_from_db),
                seq: r.try_get::<_, Option<i64>>(1)?.map(from_db_id),
            }),
            None => None,
        };
        if row.is_none_or(|r| r.ticket.is_none()) {
            self.absent.borrow_mut().insert(id.to_string());
        }
        self.ids.borrow_mut().insert(id.to_string(), row);
        Ok(row)
    }

    /// After a claim of `id` for `ticket` found a row: a race was lost if
    /// this attempt had found `id` without a ticket and the row now names
    /// another one.
    fn check_claim(&self, id: &str, ticket: Option<TicketId>) -> Result<(), StoreError> {
        if !self.absent.borrow().contains(id) {
            return Ok(());
        }
        let now = self.opt(
            "SELECT ticket_id FROM message_ids WHERE key = $1",
            &[&id_key(id)],
        )?;
        let owner = match now {
            Some(r) => r.try_get::<_, Option<i64>>(0)?.map(ticket_from_db),
            None => None,
        };
        if owner.is_some() && owner != ticket {
            self.raced.set(true);
        }
        Ok(())
    }
}

impl Txn for PgTxn<'_> {
    /// Draws the ticket id with the message seqs and outbox ids the
    /// message will need, in one round trip.
    fn next_ticket_id(&mut self) -> Result<TicketId, StoreError> {
        if let Some(id) = self.ticket_ahead.take() {
            return Ok(id);
        }
        let need_more = self.message_seqs.borrow().is_empty();
        if !need_more {
            return self.next("ticket_id_seq").map(TicketId);
        }
        let row = self
            .opt(
                &format!("SELECT nextval('ticket_id_seq'), {IDS_AHEAD}"),
                &[],
            )?
            .ok_or_else(|| StoreError::Corrupt("the sequences gave nothing".into()))?;
        self.take_ids_ahead(&row, 1)?;
        Ok(ticket_from_db(row.try_get(0)?))
    }

    fn next_message_seq(&mut self) -> Result<u64, StoreError> {
        if self.message_seqs.borrow().is_empty() {
            self.draw_ids_ahead()?;
        }
        self.message_seqs
            .borrow_mut()
            .pop()
            .ok_or_else(|| StoreError::Corrupt("sequence message_seq gave nothing".into()))
    }

    fn next_outbox_id(&mut self) -> Result<u64, StoreError> {
        if self.outbox_ids.borrow().is_empty() {
            self.draw_ids_ahead()?;
        }
        self.outbox_ids
            .borrow_mut()
            .pop()
            .ok_or_else(|| StoreError::Corrupt("sequence outbox_seq gave nothing".into()))
    }

    fn salt(&self) -> u64 {
        self.shared.salt
    }

    fn keys(&self) -> &ReplyKeys {
        &self.shared.keys
    }

    /// Locks the ticket's row until the batch commits. The ids ahead are
    /// drawn behind the lock (in the same round trip), so that a ticket's
    /// messages are numbered in the order they were applied to it.
    fn ticket(&self, id: TicketId) -> Result<Option<TicketRec>, StoreError> {
        if let Some(t) = self.tickets.borrow().get(&id) {
            return Ok(Some(t.clone()));
        }
        let lock: (&str, &[&(dyn ToSql + Sync)]) = (
            "SELECT rec FROM tickets WHERE id = $1 FOR UPDATE",
            &[&db_id(id)],
        );
        let draw = format!("SELECT 0::bigint, {IDS_AHEAD}");
        let mut results = if self.message_seqs.borrow().is_empty() || self.drawn_unlocked.get() {
            self.queries(&[lock, (&draw, &[])])?
        } else {
            self.queries(&[lock])?
        };
        if results.len() == 2 {
            let drawn = results.pop().unwrap_or_default();
            let row = drawn
                .first()
                .ok_or_else(|| StoreError::Corrupt("the sequences gave nothing".into()))?;
            self.message_seqs.borrow_mut().clear();
            self.outbox_ids.borrow_mut().clear();
            self.take_ids_ahead(row, 1)?;
            self.drawn_unlocked.set(false);
        }
        let row = results.pop().unwrap_or_default().into_iter().next();
        match row {
            Some(r) => {
                let t = r.try_get::<_, Json<TicketRec>>(0)?.0;
                self.tickets.borrow_mut().insert(id, t.clone());
                Ok(Some(t))
            }
            None => Ok(None),
        }
    }

    fn put_ticket(&mut self, t: &TicketRec) -> Result<(), StoreError> {
        self.tickets.borrow_mut().insert(t.id, t.clone());
        self.later(
            "INSERT INTO tickets (id, pipeline, status, created_at, updated_at, rec)
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
             ON CONFLICT (id) DO UPDATE SET pipeline = EXCLUDED.pipeline,
               status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, rec = EXCLUDED.rec",
            vec![
                Box::new(db_id(t.id)),
                Box::new(t.pipeline.clone()),
                Box::new(t.status.clone()),
                Box::new(t.created_at),
                Box::new(t.updated_at),
                json(t),
            ],
        );
        Ok(())
    }

    fn message(&self, seq: u64) -> Result<Option<MessageRec>, StoreError> {
        if let Some(m) = self.messages.borrow().get(&seq) {
            return Ok(Some(m.clone()));
        }
        let row = self.opt("SELECT rec FROM messages WHERE seq = $1", &[&db_id(seq)])?;
        match row {
            Some(r) => Ok(Some(r.try_get::<_, Json<MessageRec>>(0)?.0)),
            None => Ok(None),
        }
    }

    fn message_text(&self, rec: &MessageRec) -> Result<String, StoreError> {
        if let Some((seq, text)) = &self.current_text {
            if *seq == rec.seq {
                return Ok(text.clone());
            }
        }
        if !rec.text.is_empty() {
            return Ok(rec.text.clone());
        }
        Ok(text_of(String::new(), self.raw(rec.seq)?.as_deref()))
    }

    fn set_current_text(&mut self, seq: u64, text: String) {
        self.current_text = Some((seq, text));
    }

    /// Claims the message's own Message-ID: a row only named so far (a
    /// reply arrived first) becomes this message's; a row that already
    /// has a message means the same message was stored at another node
    /// since this attempt looked: [`PgTxn::raced`].
    fn put_message(&mut self, rec: &mut MessageRec, raw: &[u8]) -> Result<(), StoreError> {
        let key = id_key(&rec.message_id);
        let seq = db_id(rec.seq);
        let ticket = rec.ticket.map(db_id);
        let parts: Vec<Vec<u8>> = if raw.is_empty() {
            vec![Vec::new()]
        } else {
            raw.chunks(CHUNK).map(<[u8]>::to_vec).collect()
        };
        // The row, its raw bytes and the claim of its own Message-ID, in one
        // statement (the count is the claim's).
        self.pending.borrow_mut().push(Deferred::Claim(
            "WITH m AS (
               INSERT INTO messages (seq, ticket_id, message_id, node_id, batch, received_at, size, rec)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb)),
             c AS (
               INSERT INTO message_chunks (seq, part, data)
               SELECT $1, (p - 1)::int, d FROM unnest($9::bytea[]) WITH ORDINALITY AS t(d, p))
             INSERT INTO message_ids (key, message_id, ticket_id, message)
             VALUES ($10, $3, $2, $1) ON CONFLICT DO NOTHING",
            vec![
                Box::new(seq),
                Box::new(ticket),
                Box::new(rec.message_id.clone()),
                Box::new(self.shared.node.clone()),
                Box::new(self.batch),
                Box::new(rec.received_at),
                Box::new(i64::try_from(raw.len()).unwrap_or(i64::MAX)),
                json(&*rec),
                Box::new(parts),
                Box::new(key),
            ],
            Conflict::Own {
                message_id: rec.message_id.clone(),
                ticket,
                seq,
            },
        ));
        self.ids.borrow_mut().insert(
            rec.message_id.clone(),
            Some(IdRow {
                ticket: rec.ticket,
                seq: Some(rec.seq),
            }),
        );
        self.messages.borrow_mut().insert(rec.seq, rec.clone());
        Ok(())
    }

    fn ticket_message_seqs(&self, ticket: TicketId) -> Result<Vec<u64>, StoreError> {
        let rows = self.query(
            "SELECT seq FROM messages WHERE ticket_id = $1 ORDER BY seq",
            &[&db_id(ticket)],
        )?;
        rows.iter().map(|r| Ok(from_db_id(r.try_get(0)?))).collect()
    }

    fn move_message(&mut self, seq: u64, _from: TicketId, to: TicketId) -> Result<(), StoreError> {
        if let Some(mut rec) = self.message(seq)? {
            rec.ticket = Some(to);
            self.later(
                "UPDATE messages SET ticket_id = $2, rec = $3::text::jsonb WHERE seq = $1",
                vec![Box::new(db_id(seq)), Box::new(db_id(to)), json(&rec)],
            );
            self.later(
                "UPDATE message_ids SET ticket_id = $2 WHERE key = $1",
                vec![Box::new(id_key(&rec.message_id)), Box::new(db_id(to))],
            );
            self.ids.borrow_mut().remove(&rec.message_id);
            self.messages.borrow_mut().insert(seq, rec);
        }
        Ok(())
    }

    fn message_id_row(&self, id: &str) -> Result<Option<IdRow>, StoreError> {
        self.id_row(id)
    }

    fn add_reference(&mut self, id: &str, ticket: TicketId) -> Result<(), StoreError> {
        // A row this attempt has seen stays (it is not this call's to change).
        if matches!(self.ids.borrow().get(id), Some(Some(_))) {
            return Ok(());
        }
        self.pending.borrow_mut().push(Deferred::Claim(
            "INSERT INTO message_ids (key, message_id, ticket_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            vec![
                Box::new(id_key(id)),
                Box::new(id.to_string()),
                Box::new(db_id(ticket)),
            ],
            Conflict::Named {
                id: id.to_string(),
                ticket,
            },
        ));
        // Taken for what it claims; a conflict, once known, forgets it.
        self.ids.borrow_mut().insert(
            id.to_string(),
            Some(IdRow {
                ticket: Some(ticket),
                seq: None,
            }),
        );
        Ok(())
    }

    fn event(
        &mut self,
        ticket: TicketId,
        at: Millis,
        event: &TimelineEvent<'_>,
    ) -> Result<(), StoreError> {
        self.events.borrow_mut().push((
            db_id(ticket),
            at,
            event.kind().to_owned(),
            serde_json::to_string(&event.detail()).unwrap_or_default(),
        ));
        Ok(())
    }

    /// Locks the entry's row until the batch commits.
    fn outbox(&self, id: u64) -> Result<Option<OutboxRec>, StoreError> {
        if let Some(rec) = self.outbox.borrow().get(&id) {
            return Ok(Some(rec.clone()));
        }
        let row = self.opt(
            "SELECT rec FROM outbox WHERE id = $1 FOR UPDATE",
            &[&db_id(id)],
        )?;
        match row {
            Some(r) => Ok(Some(r.try_get::<_, Json<OutboxRec>>(0)?.0)),
            None => Ok(None),
        }
    }

    /// A decision about an entry ends whatever lease a node held on it.
    fn put_outbox(&mut self, rec: &OutboxRec, _was_due: Option<Millis>) -> Result<(), StoreError> {
        self.outbox.borrow_mut().insert(rec.id, rec.clone());
        self.later(
            "INSERT INTO outbox (id, ticket_id, state, next_attempt_at, rec)
             VALUES ($1, $2, $3, $4, $5::text::jsonb)
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state,
               next_attempt_at = EXCLUDED.next_attempt_at, rec = EXCLUDED.rec,
               lease_owner = NULL, lease_until = NULL, lease_token = NULL",
            vec![
                Box::new(db_id(rec.id)),
                Box::new(db_id(rec.ticket)),
                Box::new(rec.state.as_str()),
                Box::new(rec.next_attempt_at),
                json(rec),
            ],
        );
        Ok(())
    }

    fn mail_queued(&mut self) {
        self.queued_mail += 1;
    }

    /// Locks the contact's row first, so that nodes count one after the
    /// other and the window slides exactly (counted already, under the
    /// lock, when [`PgTxn::prefetch_ids`] guessed the address).
    fn auto_sent_last_hour(&self, addr: &str, now: Millis) -> Result<u64, StoreError> {
        if let Some((a, since, n)) = &*self.contact.borrow() {
            if a == addr && *since == now - HOUR {
                return Ok(*n);
            }
        }
        // The count is a statement of its own, so that it sees what the
        // previous holder of the lock committed.
        self.lock_contact(addr);
        let row = self.opt(
            "SELECT count(*) FROM auto_sent WHERE email = $1 AND at > $2",
            &[&addr, &(now - HOUR)],
        )?;
        Ok(match row {
            Some(r) => from_db_id(r.try_get(0)?),
            None => 0,
        })
    }

    fn count_auto_sent(&mut self, addr: &str, now: Millis) -> Result<(), StoreError> {
        if let Some((a, _, n)) = &mut *self.contact.borrow_mut() {
            if a == addr {
                *n += 1;
            }
        }
        self.later(
            "WITH old AS (DELETE FROM auto_sent WHERE email = $1 AND at <= $2)
             INSERT INTO auto_sent (email, at) VALUES ($1, $3)",
            vec![
                Box::new(addr.to_string()),
                Box::new(now - HOUR),
                Box::new(now),
            ],
        );
        Ok(())
    }
}

const HOUR: Millis = 3_600_000;

impl ThreadView for PgTxn<'_> {
    type Error = StoreError;

    fn ticket_for_message_id(&self, id: &str) -> Result<Option<TicketId>, StoreError> {
        Ok(self.id_row(id)?.and_then(|r| r.ticket))
    }

    fn ticket_exists(&self, ticket: TicketId) -> Result<bool, StoreError> {
        Ok(self
            .opt("SELECT 1 FROM tickets WHERE id = $1", &[&db_id(ticket)])?
            .is_some())
    }

    fn is_participant(&self, ticket: TicketId, email: &str) -> Result<bool, StoreError> {
        Ok(self
            .ticket(ticket)?
            .is_some_and(|t| t.participants.iter().any(|p| p == email)))
    }
}

/// Whether an engine error should make the writer run the message again
/// (a lost race on a key, a deadlock, a lock wait that timed out).
pub(super) fn is_retryable(e: &StoreError) -> bool {
    use tokio_postgres::error::SqlState;
    match e {
        StoreError::Pg(e) => e.code().is_some_and(|c| {
            *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::LOCK_NOT_AVAILABLE
        }),
        _ => false,
    }
}

/// Reads a stored event row.
pub(super) fn event_rec(r: &Row) -> Result<EventRec, StoreError> {
    Ok(EventRec {
        at: r.try_get(0)?,
        kind: r.try_get(1)?,
        detail: r.try_get::<_, Json<serde_json::Value>>(2)?.0,
    })
}
