//! The PostgreSQL engine's typed reads: records from the database, views
//! built by [`crate::desk::views`] as for every engine. Reads go to the
//! primary (the pool's URL), so a write answered at one node is seen by a
//! read at any node right after.
//!
//! [`due`] is the one read that writes: it claims the due emails for this
//! node under a lease with a fencing token (`FOR UPDATE SKIP LOCKED`, one
//! short transaction), so that each email is sent by one node, and one
//! whose node died is claimed by another once its lease ran out.

use std::collections::HashMap;

use tokio_postgres::types::Json;

use super::{connection, db_id, from_db_id, id_key, Shared};
use crate::clock::Millis;
use crate::desk::records::{EventRec, MessageRec, OutState, OutboxRec, TicketRec};
use crate::desk::views::*;
use crate::desk::StoreError;
use crate::ingest::TicketId;

/// How long a claimed email stays this node's: longer than a delivery
/// attempt may take (the transport's timeouts), short enough that a dead
/// node's emails go out from another within a minute (SPEC §8).
pub const LEASE_SECS: i64 = 45;

/// [`LEASE_SECS`]; debug builds take `POSTDESK_LEASE_SECS` (tests of a
/// dead node's emails do not wait 45 s).
pub(in crate::store) fn lease_secs() -> f64 {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("POSTDESK_LEASE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        return secs;
    }
    LEASE_SECS as f64
}
/// Other nodes' claims and new mail are looked for this often while idle.
const POLL: Millis = 1_000;

/// Raw bytes of the messages `seqs`, by seq.
async fn raws(
    c: &impl tokio_postgres::GenericClient,
    seqs: &[i64],
) -> Result<HashMap<i64, Vec<u8>>, StoreError> {
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
        let seq: i64 = r.try_get(0)?;
        out.entry(seq)
            .or_default()
            .extend_from_slice(r.try_get::<_, &[u8]>(1)?);
    }
    Ok(out)
}

pub async fn counts(s: &Shared) -> Result<(u64, u64), StoreError> {
    let c = connection(&s.pool).await?;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM tickets),
                    (SELECT count(*) FROM outbox WHERE next_attempt_at IS NOT NULL)",
            &[],
        )
        .await?;
    Ok((from_db_id(row.try_get(0)?), from_db_id(row.try_get(1)?)))
}

pub async fn tickets(s: &Shared, filter: &TicketFilter) -> Result<Vec<TicketView>, StoreError> {
    let c = connection(&s.pool).await?;
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT rec FROM tickets
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR pipeline = $2)
             ORDER BY id DESC LIMIT $3",
            &[&filter.status, &filter.pipeline, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(TicketView::from(&r.try_get::<_, Json<TicketRec>>(0)?.0)))
        .collect()
}

pub async fn ticket(s: &Shared, id: TicketId) -> Result<Option<TicketDetail>, StoreError> {
    let mut c = connection(&s.pool).await?;
    // One snapshot for the ticket, its messages and its timeline.
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let Some(row) = tx
        .query_opt("SELECT rec FROM tickets WHERE id = $1", &[&db_id(id)])
        .await?
    else {
        return Ok(None);
    };
    let t = row.try_get::<_, Json<TicketRec>>(0)?.0;
    let rows = tx
        .query(
            "SELECT seq, rec FROM messages WHERE ticket_id = $1 ORDER BY seq",
            &[&db_id(id)],
        )
        .await?;
    let seqs: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut bytes = raws(&*tx, &seqs).await?;
    let mut messages = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: i64 = r.try_get(0)?;
        let rec = r.try_get::<_, Json<MessageRec>>(1)?.0;
        messages.push((rec, bytes.remove(&seq)));
    }
    let events = tx
        .query(
            "SELECT at, kind, detail FROM timeline WHERE ticket_id = $1 ORDER BY id",
            &[&db_id(id)],
        )
        .await?
        .iter()
        .map(super::txn::event_rec)
        .collect::<Result<Vec<EventRec>, _>>()?;
    tx.commit().await?;
    Ok(Some(TicketDetail::new(&t, messages, events)))
}

pub async fn conversations(s: &Shared, limit: usize) -> Result<Vec<MessageView>, StoreError> {
    let c = connection(&s.pool).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT seq, rec FROM messages WHERE ticket_id IS NULL ORDER BY seq DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    let seqs: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut bytes = raws(&**c, &seqs).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: i64 = r.try_get(0)?;
        let rec = r.try_get::<_, Json<MessageRec>>(1)?.0;
        out.push(MessageView::new(rec, bytes.remove(&seq).as_deref()));
    }
    Ok(out)
}

pub async fn message(s: &Shared, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
    let c = connection(&s.pool).await?;
    let Some(row) = c
        .query_opt(
            "SELECT m.seq, m.rec FROM message_ids i JOIN messages m ON m.seq = i.message
             WHERE i.key = $1",
            &[&id_key(message_id)],
        )
        .await?
    else {
        return Ok(None);
    };
    let seq: i64 = row.try_get(0)?;
    let rec = row.try_get::<_, Json<MessageRec>>(1)?.0;
    let raw = raws(&**c, &[seq]).await?.remove(&seq).unwrap_or_default();
    Ok(Some(StoredMessage {
        ticket: rec.ticket,
        view: MessageView::new(rec, Some(&raw)),
        raw,
    }))
}

pub async fn outbox(
    s: &Shared,
    state: Option<OutState>,
    limit: usize,
) -> Result<Vec<OutboxView>, StoreError> {
    let c = connection(&s.pool).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let state = state.map(OutState::as_str);
    let rows = c
        .query(
            "SELECT rec FROM outbox WHERE ($1::text IS NULL OR state = $1) ORDER BY id DESC LIMIT $2",
            &[&state, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(OutboxView::from(r.try_get::<_, Json<OutboxRec>>(0)?.0)))
        .collect()
}

pub async fn outbox_entry(s: &Shared, id: u64) -> Result<Option<OutboxView>, StoreError> {
    let c = connection(&s.pool).await?;
    let row = c
        .query_opt("SELECT rec FROM outbox WHERE id = $1", &[&db_id(id)])
        .await?;
    match row {
        Some(r) => Ok(Some(OutboxView::from(
            r.try_get::<_, Json<OutboxRec>>(0)?.0,
        ))),
        None => Ok(None),
    }
}

/// Claims up to `limit` emails due at `now` for this node (see the module
/// doc), with their bytes — its own claims too: this node's one outbox
/// worker sends nothing between two claims, so an email it still holds is
/// one whose claim's answer was lost (the database went away just after
/// committing it) or whose result could not be recorded; it is not left
/// waiting for the lease to run out; and when to look again: the next due email, but
/// no later than [`POLL`] from now (other nodes' leases run out, other
/// nodes queue mail).
pub async fn due(
    s: &Shared,
    now: Millis,
    limit: usize,
) -> Result<(Vec<DueMail>, Option<Millis>), StoreError> {
    let c = connection(&s.pool).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "UPDATE outbox o SET lease_owner = $1,
               lease_until = now() + make_interval(secs => $4),
               lease_token = nextval('lease_seq')
             FROM (SELECT id FROM outbox
                   WHERE next_attempt_at <= $2
                     AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $1)
                   ORDER BY next_attempt_at, id LIMIT $3
                   FOR UPDATE SKIP LOCKED) due
             WHERE o.id = due.id
             RETURNING o.rec, o.lease_token",
            &[&s.owner, &now, &limit, &lease_secs()],
        )
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in &rows {
        let rec = r.try_get::<_, Json<OutboxRec>>(0)?.0;
        let lease: i64 = r.try_get(1)?;
        claimed.push((rec, from_db_id(lease)));
    }
    claimed.sort_by_key(|(r, _)| (r.next_attempt_at, r.id));
    let seqs: Vec<i64> = claimed.iter().map(|(r, _)| db_id(r.message_seq)).collect();
    let mut bytes = raws(&**c, &seqs).await?;
    let out = claimed
        .into_iter()
        .map(|(rec, lease)| DueMail {
            id: rec.id,
            lease,
            ticket: rec.ticket,
            raw: bytes
                .remove(&db_id(rec.message_seq))
                .ok_or_else(|| format!("no stored message {}", rec.message_seq)),
            message_id: rec.message_id,
            kind: rec.kind,
            mail_from: rec.mail_from,
            rcpt: rec.rcpt,
        })
        .collect();
    let next: Option<i64> = c
        .query_one(
            "SELECT min(next_attempt_at) FROM outbox WHERE next_attempt_at > $1",
            &[&now],
        )
        .await?
        .try_get(0)?;
    let poll = now + POLL;
    Ok((out, Some(next.map_or(poll, |n| n.min(poll)))))
}

/// Extends this node's leases on `(id, token)` by [`LEASE_SECS`] from now.
pub async fn renew(s: &Shared, leases: &[(u64, u64)]) -> Result<(), StoreError> {
    let c = connection(&s.pool).await?;
    let ids: Vec<i64> = leases.iter().map(|(id, _)| db_id(*id)).collect();
    let tokens: Vec<i64> = leases.iter().map(|(_, t)| db_id(*t)).collect();
    c.execute(
        "UPDATE outbox SET lease_until = now() + make_interval(secs => $4)
         WHERE lease_owner = $1 AND (id, lease_token) IN
           (SELECT * FROM unnest($2::bigint[], $3::bigint[]))",
        &[&s.owner, &ids, &tokens, &lease_secs()],
    )
    .await?;
    Ok(())
}

/// What a COMMIT waits for, as the database says for this node's role:
/// `synchronous_commit` and `synchronous_standby_names` (for `health`).
pub async fn durability(s: &Shared) -> Result<(String, String), StoreError> {
    let c = connection(&s.pool).await?;
    let row = c
        .query_one(
            "SELECT current_setting('synchronous_commit'),
                    current_setting('synchronous_standby_names')",
            &[],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The nodes seen in the last minute.
pub async fn nodes(s: &Shared) -> Result<Vec<NodeView>, StoreError> {
    let c = connection(&s.pool).await?;
    let rows = c
        .query(
            "SELECT node_id, hostname, version,
                    (extract(epoch FROM started_at) * 1000)::bigint,
                    (extract(epoch FROM last_seen) * 1000)::bigint, config_hash
             FROM nodes WHERE last_seen > now() - interval '1 minute' ORDER BY node_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(NodeView {
                node_id: r.try_get(0)?,
                hostname: r.try_get(1)?,
                version: r.try_get(2)?,
                started_at: crate::clock::rfc3339(r.try_get(3)?),
                last_seen: crate::clock::rfc3339(r.try_get(4)?),
                config_hash: r.try_get(5)?,
            })
        })
        .collect()
}
