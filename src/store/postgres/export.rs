//! The PostgreSQL engine's side of `postdesk store copy`
//! ([`crate::store::copy`]): reading a whole database in id order (one
//! `REPEATABLE READ` snapshot per run), and writing one in this engine's
//! own format — the rows [`super::txn::PgTxn`] writes, a chunk in one
//! transaction of a few statements (arrays, `unnest`), the copy's progress
//! in `schema_meta` row `copy_from`.
//!
//! The copy's connections are its own (not a node's pool), named
//! `postdesk store copy`. A database that postdesk nodes are connected to
//! is neither copied from nor into: a node writing meanwhile would make the
//! copy miss mail, or collide with it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tokio::task::JoinHandle;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Client, GenericClient};

use super::txn::CHUNK;
use super::{db_id, from_db_id, id_key, schema, schema_version, ticket_from_db, url};
use crate::clock::Millis;
use crate::config::Postgres;
use crate::desk::records::{EventRec, MessageRec, OutboxRec, TicketRec};
use crate::desk::StoreError;
use crate::store::portable::{
    self, AutoSent, Chunk, Counters, IdCopy, MessageCopy, Progress, Secrets, SourceInfo,
    TargetState, TicketCopy, BYTES_PER_CHUNK,
};

/// The `application_name` of the copy's connections.
const APP: &str = "postdesk store copy";
const SEQUENCES: [&str; 4] = ["ticket_id_seq", "message_seq", "timeline_seq", "outbox_seq"];

/// A connection of the copy's own.
async fn connect(pg: &Postgres) -> Result<(Client, JoinHandle<()>), StoreError> {
    let mut db = url(pg)?;
    db.config.application_name(APP);
    Ok(db.connect().await?)
}

/// Refuses a database whose schema is not this binary's.
async fn check_schema(c: &Client, migrate_hint: &str) -> Result<(), StoreError> {
    let version = schema_version(c).await?;
    match version {
        v if v == schema::VERSION => Ok(()),
        0 => Err(StoreError::Refused(format!(
            "the database has no postdesk schema: {migrate_hint}"
        ))),
        v if v < schema::VERSION => Err(StoreError::Refused(format!(
            "the database's schema is version {v}, older than this postdesk needs ({}): \
             {migrate_hint}",
            schema::VERSION
        ))),
        v => Err(StoreError::Refused(format!(
            "the database's schema is version {v}, newer than this postdesk ({}): upgrade postdesk",
            schema::VERSION
        ))),
    }
}

/// The postdesk nodes (and other postdesk commands) connected to this
/// database now, by their `application_name`.
async fn connected_nodes(c: &Client) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT DISTINCT application_name FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND application_name LIKE 'postdesk %' AND application_name <> $1
             ORDER BY 1",
            &[&APP],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(0)?;
            Ok(name.trim_start_matches("postdesk ").to_string())
        })
        .collect()
}

/// Refuses a database postdesk nodes are connected to.
async fn check_idle(c: &Client, what: &str) -> Result<(), StoreError> {
    let nodes = connected_nodes(c).await?;
    if nodes.is_empty() {
        return Ok(());
    }
    Err(StoreError::Refused(format!(
        "postdesk is connected to the database (node {}): stop every node {what} first",
        nodes.join(", ")
    )))
}

/// The next value of each id sequence.
async fn sequences(c: &impl GenericClient) -> Result<Counters, StoreError> {
    let mut next = [0u64; 4];
    for (n, seq) in next.iter_mut().zip(SEQUENCES) {
        let row = c
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .await?;
        let last: i64 = row.try_get(0)?;
        let called: bool = row.try_get(1)?;
        *n = from_db_id(last).saturating_add(u64::from(called)).max(1);
    }
    Ok(Counters {
        ticket: next[0],
        message: next[1],
        event: next[2],
        outbox: next[3],
    })
}

/// The raw bytes of the messages `seqs` (a message without chunk rows has
/// none).
async fn raws(c: &Client, seqs: &[i64]) -> Result<HashMap<i64, Vec<u8>>, StoreError> {
    let mut out: HashMap<i64, Vec<u8>> = HashMap::new();
    if seqs.is_empty() {
        return Ok(out);
    }
    let rows = c
        .query(
            "SELECT seq, data FROM message_chunks WHERE seq = ANY($1) ORDER BY seq, part",
            &[&seqs],
        )
        .await?;
    for r in rows {
        out.entry(r.try_get(0)?)
            .or_default()
            .extend_from_slice(r.try_get::<_, &[u8]>(1)?);
    }
    Ok(out)
}

/// Keeps the first of `rows` (with their sizes) that fit in a chunk's
/// bytes, at least one.
fn fit<T>(rows: Vec<(u64, T)>) -> Vec<T> {
    let mut bytes = 0u64;
    let mut out = Vec::new();
    for (size, row) in rows {
        if !out.is_empty() && bytes.saturating_add(size) > BYTES_PER_CHUNK {
            break;
        }
        bytes = bytes.saturating_add(size);
        out.push(row);
    }
    out
}

/// A database being copied from, read in one snapshot.
pub(in crate::store) struct Source {
    c: Client,
    _conn: JoinHandle<()>,
    /// Outbox ids by ticket.
    outbox: BTreeMap<u64, Vec<i64>>,
}

impl Source {
    pub(in crate::store) async fn open(pg: &Postgres) -> Result<Source, StoreError> {
        let (c, conn) = connect(pg).await?;
        check_schema(&c, "nothing to copy").await?;
        check_idle(&c, "on the source").await?;
        if let Some(p) = unfinished_copy(&c).await? {
            return Err(portable::unfinished(&p));
        }
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let mut outbox: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for r in c
            .query(
                "SELECT id, ticket_id FROM outbox WHERE ticket_id IS NOT NULL ORDER BY id",
                &[],
            )
            .await?
        {
            let ticket: i64 = r.try_get(1)?;
            outbox
                .entry(from_db_id(ticket))
                .or_default()
                .push(r.try_get(0)?);
        }
        Ok(Source {
            c,
            _conn: conn,
            outbox,
        })
    }

    pub(in crate::store) async fn info(&mut self) -> Result<SourceInfo, StoreError> {
        let secret = |rows: &[tokio_postgres::Row], name: &str| -> Result<Vec<u8>, StoreError> {
            for r in rows {
                if r.try_get::<_, &str>(0)? == name {
                    return Ok(r.try_get(1)?);
                }
            }
            Err(StoreError::Refused(format!(
                "the database has no {name} secret: it was never served by postdesk (nothing to copy)"
            )))
        };
        let rows = self.c.query("SELECT name, value FROM secrets", &[]).await?;
        let reply_key: [u8; 32] = secret(&rows, "reply_key")?
            .try_into()
            .map_err(|_| StoreError::Corrupt("the reply-key secret is damaged".into()))?;
        let salt: [u8; 8] = secret(&rows, "message_id_salt")?
            .try_into()
            .map_err(|_| StoreError::Corrupt("the Message-ID salt is damaged".into()))?;
        let counts = self
            .c
            .query_one(
                "SELECT (SELECT count(*) FROM tickets), (SELECT count(*) FROM messages),
                        (SELECT count(*) FROM outbox),
                        (SELECT count(*) FROM messages WHERE ticket_id IS NULL)",
                &[],
            )
            .await?;
        Ok(SourceInfo {
            secrets: Secrets {
                reply_key,
                salt: u64::from_le_bytes(salt),
            },
            counters: sequences(&self.c).await?,
            tickets: from_db_id(counts.try_get(0)?),
            messages: from_db_id(counts.try_get(1)?),
            outbox: from_db_id(counts.try_get(2)?),
            conversations: from_db_id(counts.try_get(3)?),
        })
    }

    pub(in crate::store) async fn counters_now(&mut self) -> Result<Counters, StoreError> {
        sequences(&self.c).await
    }

    pub(in crate::store) async fn tickets_after(
        &mut self,
        after: u64,
    ) -> Result<Chunk, StoreError> {
        let limit = i64::try_from(portable::per_chunk()).unwrap_or(i64::MAX);
        let rows = self
            .c
            .query(
                "SELECT id, rec FROM tickets WHERE id > $1 ORDER BY id LIMIT $2",
                &[&db_id(after), &limit],
            )
            .await?;
        let mut tickets = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get(0)?;
            let t = r.try_get::<_, Json<TicketRec>>(1)?.0;
            if db_id(t.id) != id {
                return Err(StoreError::Corrupt(format!(
                    "ticket row {id} holds ticket {}",
                    t.id
                )));
            }
            tickets.push((id, t));
        }
        let ids: Vec<i64> = tickets.iter().map(|(id, _)| *id).collect();
        let mut messages: BTreeMap<i64, Vec<MessageRec>> = BTreeMap::new();
        let mut sizes: HashMap<i64, u64> = HashMap::new();
        for r in self
            .c
            .query(
                "SELECT ticket_id, size, rec FROM messages WHERE ticket_id = ANY($1)
                 ORDER BY ticket_id, seq",
                &[&ids],
            )
            .await?
        {
            let ticket: i64 = r.try_get(0)?;
            let size: i64 = r.try_get(1)?;
            *sizes.entry(ticket).or_default() += from_db_id(size);
            messages
                .entry(ticket)
                .or_default()
                .push(r.try_get::<_, Json<MessageRec>>(2)?.0);
        }
        let tickets = fit(tickets
            .into_iter()
            .map(|(id, t)| (sizes.get(&id).copied().unwrap_or(0), (id, t)))
            .collect());
        let ids: Vec<i64> = tickets.iter().map(|(id, _)| *id).collect();
        let seqs: Vec<i64> = ids
            .iter()
            .flat_map(|id| messages.get(id).into_iter().flatten())
            .map(|m| db_id(m.seq))
            .collect();
        let mut bytes = raws(&self.c, &seqs).await?;
        let mut events: BTreeMap<i64, Vec<(u64, EventRec)>> = BTreeMap::new();
        for r in self
            .c
            .query(
                "SELECT ticket_id, id, at, kind, detail FROM timeline WHERE ticket_id = ANY($1)
                 ORDER BY ticket_id, id",
                &[&ids],
            )
            .await?
        {
            let ticket: i64 = r.try_get(0)?;
            let seq: i64 = r.try_get(1)?;
            events.entry(ticket).or_default().push((
                from_db_id(seq),
                EventRec {
                    at: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    detail: r.try_get::<_, Json<serde_json::Value>>(4)?.0,
                },
            ));
        }
        let out_ids: Vec<i64> = ids
            .iter()
            .flat_map(|id| self.outbox.get(&from_db_id(*id)).into_iter().flatten())
            .copied()
            .collect();
        let mut outbox: BTreeMap<u64, Vec<OutboxRec>> = BTreeMap::new();
        for r in self
            .c
            .query(
                "SELECT ticket_id, rec FROM outbox WHERE id = ANY($1) ORDER BY id",
                &[&out_ids],
            )
            .await?
        {
            let ticket: i64 = r.try_get(0)?;
            outbox
                .entry(from_db_id(ticket))
                .or_default()
                .push(r.try_get::<_, Json<OutboxRec>>(1)?.0);
        }
        let mut chunk = Chunk::default();
        for (id, ticket) in tickets {
            let copies = messages
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(|rec| {
                    let raw = bytes.remove(&db_id(rec.seq));
                    MessageCopy { rec, raw }
                })
                .collect();
            chunk.tickets.push(TicketCopy {
                ticket,
                messages: copies,
                events: events.remove(&id).unwrap_or_default(),
                outbox: outbox.remove(&from_db_id(id)).unwrap_or_default(),
            });
        }
        Ok(chunk)
    }

    pub(in crate::store) async fn conversations_after(
        &mut self,
        after: u64,
    ) -> Result<Chunk, StoreError> {
        let limit = i64::try_from(portable::per_chunk()).unwrap_or(i64::MAX);
        let rows = self
            .c
            .query(
                "SELECT seq, size, rec FROM messages WHERE ticket_id IS NULL AND seq > $1
                 ORDER BY seq LIMIT $2",
                &[&db_id(after), &limit],
            )
            .await?;
        let mut recs = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get(0)?;
            let size: i64 = r.try_get(1)?;
            let rec = r.try_get::<_, Json<MessageRec>>(2)?.0;
            if db_id(rec.seq) != seq {
                return Err(StoreError::Corrupt(format!(
                    "message row {seq} holds message {}",
                    rec.seq
                )));
            }
            recs.push((from_db_id(size), rec));
        }
        let recs = fit(recs);
        let seqs: Vec<i64> = recs.iter().map(|m| db_id(m.seq)).collect();
        let mut bytes = raws(&self.c, &seqs).await?;
        let conversations = recs
            .into_iter()
            .map(|rec| {
                let raw = bytes.remove(&db_id(rec.seq));
                MessageCopy { rec, raw }
            })
            .collect();
        Ok(Chunk {
            conversations,
            ..Chunk::default()
        })
    }

    /// The Message-ID rows after `cursor` (the hex of the last key copied),
    /// in key order.
    pub(in crate::store) async fn ids_after(
        &mut self,
        cursor: Option<&str>,
    ) -> Result<Chunk, StoreError> {
        let after = match cursor {
            Some(c) => portable::unhex(c).ok_or_else(|| {
                StoreError::Corrupt(format!("the copy's Message-ID position {c:?} is damaged"))
            })?,
            None => Vec::new(),
        };
        let limit = i64::try_from(portable::ids_per_chunk()).unwrap_or(i64::MAX);
        let rows = self
            .c
            .query(
                "SELECT key, message_id, ticket_id, message FROM message_ids WHERE key > $1
                 ORDER BY key LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        let mut chunk = Chunk::default();
        let mut last = None;
        for r in &rows {
            last = Some(portable::hex(r.try_get::<_, &[u8]>(0)?));
            chunk.ids.push(IdCopy {
                message_id: r.try_get(1)?,
                ticket: r.try_get::<_, Option<i64>>(2)?.map(ticket_from_db),
                seq: r.try_get::<_, Option<i64>>(3)?.map(from_db_id),
            });
        }
        chunk.id_cursor = last;
        Ok(chunk)
    }

    pub(in crate::store) async fn auto_sent(
        &mut self,
        now: Millis,
    ) -> Result<Vec<AutoSent>, StoreError> {
        let rows = self
            .c
            .query(
                "SELECT email, at FROM auto_sent WHERE at > $1 ORDER BY email, at",
                &[&(now - 3_600_000)],
            )
            .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, Millis)>, StoreError>>()?;
        Ok(portable::group_auto_sent(rows, now))
    }
}

/// The progress of the copy into this database (`schema_meta` row
/// `copy_from`), if it was ever the target of one.
async fn progress_in(c: &impl GenericClient) -> Result<Option<Progress>, StoreError> {
    let row = c
        .query_opt("SELECT value FROM schema_meta WHERE key = 'copy_from'", &[])
        .await?;
    let Some(row) = row else { return Ok(None) };
    let value: &str = row.try_get(0)?;
    if value.is_empty() {
        // A copy beginning right now (its row is claimed, not written).
        return Ok(None);
    }
    serde_json::from_str(value)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("schema_meta copy_from: {e}")))
}

/// The copy into this database that has not finished, if any (a database
/// that is its target is not served).
pub(in crate::store) async fn unfinished_copy(
    c: &impl GenericClient,
) -> Result<Option<Progress>, StoreError> {
    Ok(progress_in(c).await?.filter(|p| !p.done))
}

/// A database being copied into.
pub(in crate::store) struct Target {
    c: Client,
    _conn: JoinHandle<()>,
}

/// A Message-ID row: the id, its ticket, its message.
type IdRow<'a> = (&'a str, Option<i64>, Option<i64>);

/// Column arrays of one chunk, for `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
struct Rows<'a> {
    t_id: Vec<i64>,
    t_pipeline: Vec<&'a str>,
    t_status: Vec<&'a str>,
    t_created: Vec<i64>,
    t_updated: Vec<i64>,
    t_rec: Vec<Json<&'a TicketRec>>,
    m_seq: Vec<i64>,
    m_ticket: Vec<Option<i64>>,
    m_id: Vec<&'a str>,
    m_received: Vec<i64>,
    m_size: Vec<i64>,
    m_rec: Vec<Json<&'a MessageRec>>,
    c_seq: Vec<i64>,
    c_part: Vec<i32>,
    c_data: Vec<&'a [u8]>,
    /// Message-ID rows by key (one row per key in a statement).
    ids: BTreeMap<Vec<u8>, IdRow<'a>>,
    e_id: Vec<i64>,
    e_ticket: Vec<i64>,
    e_at: Vec<i64>,
    e_kind: Vec<&'a str>,
    e_detail: Vec<Json<&'a serde_json::Value>>,
    o_id: Vec<i64>,
    o_ticket: Vec<i64>,
    o_state: Vec<&'a str>,
    o_next: Vec<Option<i64>>,
    o_rec: Vec<Json<&'a OutboxRec>>,
}

impl<'a> Rows<'a> {
    fn message(&mut self, m: &'a MessageCopy) {
        let seq = db_id(m.rec.seq);
        let ticket = m.rec.ticket.map(db_id);
        self.m_seq.push(seq);
        self.m_ticket.push(ticket);
        self.m_id.push(&m.rec.message_id);
        self.m_received.push(m.rec.received_at);
        let size = m.raw.as_ref().map_or(m.rec.size, |r| r.len() as u64);
        self.m_size.push(i64::try_from(size).unwrap_or(i64::MAX));
        self.m_rec.push(Json(&m.rec));
        if let Some(raw) = &m.raw {
            // As `PgTxn::put_message`: an empty message is one empty chunk.
            let parts: Vec<&[u8]> = if raw.is_empty() {
                vec![raw.as_slice()]
            } else {
                raw.chunks(CHUNK).collect()
            };
            for (part, data) in parts.into_iter().enumerate() {
                self.c_seq.push(seq);
                self.c_part.push(i32::try_from(part).unwrap_or(i32::MAX));
                self.c_data.push(data);
            }
        }
        self.ids.insert(
            id_key(&m.rec.message_id),
            (&m.rec.message_id, ticket, Some(seq)),
        );
    }
}

impl Target {
    pub(in crate::store) async fn open(pg: &Postgres, config: &Path) -> Result<Target, StoreError> {
        let (c, conn) = connect(pg).await?;
        check_schema(
            &c,
            &format!(
                "run `postdesk migrate -c {}` first (the copy needs the current schema)",
                config.display()
            ),
        )
        .await?;
        Ok(Target { c, _conn: conn })
    }

    pub(in crate::store) async fn state(&mut self) -> Result<TargetState, StoreError> {
        let counts = self
            .c
            .query_one(
                "SELECT (SELECT count(*) FROM tickets), (SELECT count(*) FROM messages),
                        (SELECT count(*) FROM outbox)",
                &[],
            )
            .await?;
        let reply_key = self
            .c
            .query_opt("SELECT value FROM secrets WHERE name = 'reply_key'", &[])
            .await?
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .transpose()?;
        Ok(TargetState {
            progress: progress_in(&self.c).await?,
            tickets: from_db_id(counts.try_get(0)?),
            messages: from_db_id(counts.try_get(1)?),
            outbox: from_db_id(counts.try_get(2)?),
            reply_key,
        })
    }

    pub(in crate::store) async fn check_idle(&mut self) -> Result<(), StoreError> {
        check_idle(&self.c, "on the target").await
    }

    /// The source's secrets and the copy's first progress, into a database
    /// that holds no data (checked again here, under the `copy_from` row's
    /// lock).
    pub(in crate::store) async fn begin(
        &mut self,
        secrets: &Secrets,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let tx = self.c.transaction().await?;
        tx.execute(
            "INSERT INTO schema_meta (key, value) VALUES ('copy_from', '') ON CONFLICT DO NOTHING",
            &[],
        )
        .await?;
        tx.execute(
            "SELECT value FROM schema_meta WHERE key = 'copy_from' FOR UPDATE",
            &[],
        )
        .await?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM tickets) + (SELECT count(*) FROM messages)
                        + (SELECT count(*) FROM outbox)",
                &[],
            )
            .await?
            .try_get(0)?;
        if held > 0 {
            return Err(StoreError::Refused(
                "the target database took data while the copy began; refusing".into(),
            ));
        }
        let salt = secrets.salt.to_le_bytes();
        for (name, value) in [
            ("reply_key", secrets.reply_key.as_slice()),
            ("message_id_salt", salt.as_slice()),
        ] {
            tx.execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                &[&name, &value],
            )
            .await?;
        }
        set_progress(&tx, progress).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One chunk, with the progress after it, in one transaction.
    pub(in crate::store) async fn write(
        &mut self,
        chunk: &mut Chunk,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        // Rows of the redb engine name their bytes in its blob file: not
        // here (this engine's are in `message_chunks`).
        for m in chunk
            .tickets
            .iter_mut()
            .flat_map(|t| t.messages.iter_mut())
            .chain(chunk.conversations.iter_mut())
        {
            m.rec.blob = None;
        }
        let mut rows = Rows::default();
        for tc in &chunk.tickets {
            let t = &tc.ticket;
            rows.t_id.push(db_id(t.id));
            rows.t_pipeline.push(&t.pipeline);
            rows.t_status.push(&t.status);
            rows.t_created.push(t.created_at);
            rows.t_updated.push(t.updated_at);
            rows.t_rec.push(Json(t));
            for m in &tc.messages {
                rows.message(m);
            }
            for (seq, e) in &tc.events {
                rows.e_id.push(db_id(*seq));
                rows.e_ticket.push(db_id(t.id));
                rows.e_at.push(e.at);
                rows.e_kind.push(&e.kind);
                rows.e_detail.push(Json(&e.detail));
            }
            for o in &tc.outbox {
                rows.o_id.push(db_id(o.id));
                rows.o_ticket.push(db_id(o.ticket));
                rows.o_state.push(o.state.as_str());
                rows.o_next.push(o.next_attempt_at);
                rows.o_rec.push(Json(o));
            }
        }
        for m in &chunk.conversations {
            rows.message(m);
        }
        for r in &chunk.ids {
            rows.ids.insert(
                id_key(&r.message_id),
                (&r.message_id, r.ticket.map(db_id), r.seq.map(db_id)),
            );
        }
        let tx = self.c.transaction().await?;
        advance(&tx, before, after).await?;
        let statements: [(&str, Vec<&(dyn ToSql + Sync)>, bool); 5] = [
            (
                "INSERT INTO tickets (id, pipeline, status, created_at, updated_at, rec)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[],
                                      $5::bigint[], $6::jsonb[])",
                vec![
                    &rows.t_id,
                    &rows.t_pipeline,
                    &rows.t_status,
                    &rows.t_created,
                    &rows.t_updated,
                    &rows.t_rec,
                ],
                rows.t_id.is_empty(),
            ),
            (
                "INSERT INTO messages (seq, ticket_id, message_id, node_id, batch, received_at, size, rec)
                 SELECT s, t, m, 'store-copy', 0, r, z, j
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                             $6::jsonb[]) AS u(s, t, m, r, z, j)",
                vec![
                    &rows.m_seq,
                    &rows.m_ticket,
                    &rows.m_id,
                    &rows.m_received,
                    &rows.m_size,
                    &rows.m_rec,
                ],
                rows.m_seq.is_empty(),
            ),
            (
                "INSERT INTO message_chunks (seq, part, data)
                 SELECT * FROM unnest($1::bigint[], $2::int[], $3::bytea[])",
                vec![&rows.c_seq, &rows.c_part, &rows.c_data],
                rows.c_seq.is_empty(),
            ),
            (
                "INSERT INTO timeline (id, ticket_id, at, kind, detail)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[],
                                      $5::jsonb[])",
                vec![
                    &rows.e_id,
                    &rows.e_ticket,
                    &rows.e_at,
                    &rows.e_kind,
                    &rows.e_detail,
                ],
                rows.e_id.is_empty(),
            ),
            (
                "INSERT INTO outbox (id, ticket_id, state, next_attempt_at, rec)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[],
                                      $5::jsonb[])",
                vec![
                    &rows.o_id,
                    &rows.o_ticket,
                    &rows.o_state,
                    &rows.o_next,
                    &rows.o_rec,
                ],
                rows.o_id.is_empty(),
            ),
        ];
        for (sql, params, empty) in statements {
            if !empty {
                tx.execute(sql, &params).await?;
            }
        }
        if !rows.ids.is_empty() {
            let mut keys: Vec<&[u8]> = Vec::with_capacity(rows.ids.len());
            let mut ids: Vec<&str> = Vec::with_capacity(rows.ids.len());
            let mut tickets: Vec<Option<i64>> = Vec::with_capacity(rows.ids.len());
            let mut seqs: Vec<Option<i64>> = Vec::with_capacity(rows.ids.len());
            for (key, (id, ticket, seq)) in &rows.ids {
                keys.push(key);
                ids.push(id);
                tickets.push(*ticket);
                seqs.push(*seq);
            }
            // The source's row wins over the one a message wrote for
            // itself in an earlier chunk (they agree in a sound store).
            tx.execute(
                "INSERT INTO message_ids (key, message_id, ticket_id, message)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::bigint[])
                 ON CONFLICT (key) DO UPDATE SET message_id = EXCLUDED.message_id,
                   ticket_id = EXCLUDED.ticket_id, message = EXCLUDED.message",
                &[&keys, &ids, &tickets, &seqs],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The hourly counts, the sequences and `done`, in one transaction.
    pub(in crate::store) async fn finish(
        &mut self,
        auto: &[AutoSent],
        counters: &Counters,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        let tx = self.c.transaction().await?;
        advance(&tx, before, after).await?;
        let mut emails: Vec<&str> = Vec::new();
        let mut ats: Vec<i64> = Vec::new();
        for a in auto {
            for (minute, n) in &a.minutes {
                for _ in 0..*n {
                    emails.push(&a.address);
                    ats.push(i64::from(*minute) * 60_000);
                }
            }
        }
        let addresses: Vec<&str> = auto.iter().map(|a| a.address.as_str()).collect();
        tx.execute(
            "INSERT INTO contacts (email) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            &[&addresses],
        )
        .await?;
        tx.execute("DELETE FROM auto_sent WHERE email = ANY($1)", &[&addresses])
            .await?;
        tx.execute(
            "INSERT INTO auto_sent (email, at) SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&emails, &ats],
        )
        .await?;
        let now = sequences(&tx).await?;
        let wanted = [
            counters.ticket,
            counters.message,
            counters.event,
            counters.outbox,
        ];
        let have = [now.ticket, now.message, now.event, now.outbox];
        for ((seq, want), have) in SEQUENCES.into_iter().zip(wanted).zip(have) {
            let next = want.max(have);
            if next > 1 {
                // `nextval` then gives `next`.
                tx.execute(
                    &format!("SELECT setval('{seq}', $1, true)"),
                    &[&db_id(next - 1)],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Writes the copy's progress (the `copy_from` row exists, locked).
async fn set_progress(
    tx: &tokio_postgres::Transaction<'_>,
    p: &Progress,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "UPDATE schema_meta SET value = $1 WHERE key = 'copy_from'",
        &[&json],
    )
    .await?;
    Ok(())
}

/// Locks the `copy_from` row and fails unless it holds `before` (another
/// copy into the same database would have moved it); then records `after`.
async fn advance(
    tx: &tokio_postgres::Transaction<'_>,
    before: &Progress,
    after: &Progress,
) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            "SELECT value FROM schema_meta WHERE key = 'copy_from' FOR UPDATE",
            &[],
        )
        .await?;
    let now: Option<Progress> = match &row {
        Some(r) => serde_json::from_str(r.try_get::<_, &str>(0)?).ok(),
        None => None,
    };
    if now.as_ref() != Some(before) {
        return Err(StoreError::Refused(
            "the copy's progress in the target changed under it (another `store copy` into \
             the same target?); stopping"
                .into(),
        ));
    }
    set_progress(tx, after).await
}
