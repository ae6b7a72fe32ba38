//! The redb engine's side of `postdesk store copy` ([`crate::store::copy`]):
//! reading a whole store in id order, and writing one in this engine's own
//! format — the records through [`Tables`] (as JSON, raw bytes to the blob
//! file at the transaction's `blob_len`, written and synced before the
//! `Immediate` commit that names them), the copy's progress in [`COPY`].
//!
//! Both sides are opened through [`Store`] first, and closed again: that
//! replays what the journal holds beyond the database (a daemon that
//! crashed), so the source is read whole and the target is judged empty or
//! not on everything it holds. Then the copy holds the database itself,
//! which redb locks: no daemon can open either while the copy runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, WriteTransaction,
};

use super::blobs::{BlobFile, Pending};
use super::schema::*;
use super::tables::Tables;
use super::{open_db, window, StoreError};
use crate::clock::Millis;
use crate::config::Config;
use crate::desk::Txn;
use crate::ingest::TicketId;
use crate::store::portable::{
    self, AutoSent, Chunk, Counters, IdCopy, MessageCopy, Progress, Secrets, SourceInfo,
    TargetState, TicketCopy, BYTES_PER_CHUNK,
};
use crate::store::Store;

/// Opens the store at `config`'s data dir through [`Store::open`] (or
/// [`Store::open_for_copy`]) and closes it again: the journal is replayed
/// into the database, which is then free for the copy to open.
fn settle(config: Arc<Config>, target: bool) -> Result<(PathBuf, Database, BlobFile), StoreError> {
    let dir = config.server.data_dir.clone();
    let cache = usize::try_from(config.server.store_cache).unwrap_or(usize::MAX);
    let (store, writer) = if target {
        Store::open_for_copy(&dir, config)?
    } else {
        Store::open(&dir, config)?
    };
    store.shutdown();
    writer.join();
    // The last handle to the database goes with the store: closed, its
    // lock released, its blob file synced.
    drop(store);
    let db = open_db(&dir.join("postdesk.redb"), cache)?;
    let blobs = BlobFile::open(&dir.join("postdesk.blobs"))?;
    Ok((dir, db, blobs))
}

/// A store being copied from: one read transaction for the whole run.
pub(in crate::store) struct Source {
    // Dropped before the database.
    txn: ReadTransaction,
    blobs: BlobFile,
    _db: Database,
    /// Outbox ids by ticket (the table has no such index).
    outbox: BTreeMap<u64, Vec<u64>>,
}

impl Source {
    pub(in crate::store) fn open(config: Arc<Config>) -> Result<Source, StoreError> {
        let path = config.server.data_dir.join("postdesk.redb");
        if !path.exists() {
            return Err(StoreError::Refused(format!(
                "there is no store at {} (server.data_dir of the source's config)",
                path.display()
            )));
        }
        let (_, db, blobs) = settle(config, false)?;
        let txn = db.begin_read()?;
        let blob_len = txn
            .open_table(META)?
            .get(BLOB_LEN)?
            .map_or(0, |v| v.value());
        blobs.check_len(blob_len)?;
        let mut outbox: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for row in txn.open_table(OUTBOX)?.iter()? {
            let (id, v) = row?;
            let rec: OutboxRec = decode(v.value())?;
            outbox.entry(rec.ticket.0).or_default().push(id.value());
        }
        Ok(Source {
            txn,
            blobs,
            _db: db,
            outbox,
        })
    }

    pub(in crate::store) fn info(&self) -> Result<SourceInfo, StoreError> {
        let meta = self.txn.open_table(META)?;
        let next = |key: &str| -> Result<u64, StoreError> {
            Ok(meta.get(key)?.map_or(1, |v| v.value()).max(1))
        };
        let counters = Counters {
            ticket: next(NEXT_TICKET)?,
            message: next(NEXT_MESSAGE)?,
            event: next(NEXT_EVENT)?,
            outbox: next(NEXT_OUTBOX)?,
        };
        let salt = meta.get(MESSAGE_ID_SALT)?.map_or(0, |v| v.value());
        let secrets = self.txn.open_table(SECRETS)?;
        let reply_key = secrets
            .get(REPLY_KEY_SECRET)?
            .and_then(|v| <[u8; 32]>::try_from(v.value()).ok())
            .ok_or_else(|| {
                StoreError::Corrupt("the reply-key secret is missing or damaged".into())
            })?;
        Ok(SourceInfo {
            secrets: Secrets { reply_key, salt },
            counters,
            tickets: self.txn.open_table(TICKETS)?.len()?,
            messages: self.txn.open_table(MESSAGES)?.len()?,
            outbox: self.txn.open_table(OUTBOX)?.len()?,
            conversations: self.txn.open_table(CONVERSATIONS)?.len()?,
        })
    }

    /// A message row's raw bytes: from the blob file, or from the `raw`
    /// table for a row of an earlier build (`None`: it has none).
    fn raw(
        &self,
        rec: &MessageRec,
        raw: &ReadOnlyTable<u64, &'static [u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = match &rec.blob {
            Some(r) => self.blobs.read(r).map(Some),
            None => Ok(raw.get(rec.seq)?.map(|v| v.value().to_vec())),
        };
        bytes.map_err(|e| match e {
            StoreError::Corrupt(why) => StoreError::Corrupt(format!(
                "message {} (seq {}): {why}",
                rec.message_id, rec.seq
            )),
            other => other,
        })
    }

    /// The tickets after `after`, in id order: as many as a chunk takes.
    pub(in crate::store) fn tickets_after(&self, after: u64) -> Result<Chunk, StoreError> {
        let tickets = self.txn.open_table(TICKETS)?;
        let index = self.txn.open_table(TICKET_MESSAGES)?;
        let messages = self.txn.open_table(MESSAGES)?;
        let raw = self.txn.open_table(RAW)?;
        let timeline = self.txn.open_table(TIMELINE)?;
        let outbox = self.txn.open_table(OUTBOX)?;
        let mut chunk = Chunk::default();
        let mut bytes = 0u64;
        let Some(from) = after.checked_add(1) else {
            return Ok(chunk);
        };
        for row in tickets.range(from..)? {
            if chunk.tickets.len() >= portable::per_chunk() {
                break;
            }
            let (id, v) = row?;
            let id = id.value();
            let ticket: TicketRec = decode(v.value())?;
            if ticket.id.0 != id {
                return Err(StoreError::Corrupt(format!(
                    "ticket row {id} holds ticket {}",
                    ticket.id
                )));
            }
            let mut recs = Vec::new();
            for row in index.range((id, 0)..=(id, u64::MAX))? {
                let (key, _) = row?;
                if let Some(m) = messages.get(key.value().1)? {
                    recs.push(decode::<MessageRec>(m.value())?);
                }
            }
            let size: u64 = recs.iter().map(|r| r.blob.map_or(r.size, |b| b.len)).sum();
            if !chunk.tickets.is_empty() && bytes.saturating_add(size) > BYTES_PER_CHUNK {
                break;
            }
            bytes = bytes.saturating_add(size);
            let mut copies = Vec::with_capacity(recs.len());
            for rec in recs {
                let raw = self.raw(&rec, &raw)?;
                copies.push(MessageCopy { rec, raw });
            }
            let mut events = Vec::new();
            for row in timeline.range((id, 0)..=(id, u64::MAX))? {
                let (key, v) = row?;
                events.push((key.value().1, decode::<EventRec>(v.value())?));
            }
            let mut emails = Vec::new();
            for oid in self.outbox.get(&id).into_iter().flatten() {
                if let Some(v) = outbox.get(*oid)? {
                    emails.push(decode::<OutboxRec>(v.value())?);
                }
            }
            chunk.tickets.push(TicketCopy {
                ticket,
                messages: copies,
                events,
                outbox: emails,
            });
        }
        Ok(chunk)
    }

    /// The conversations (messages kept without a ticket) after seq
    /// `after`.
    pub(in crate::store) fn conversations_after(&self, after: u64) -> Result<Chunk, StoreError> {
        let index = self.txn.open_table(CONVERSATIONS)?;
        let messages = self.txn.open_table(MESSAGES)?;
        let raw = self.txn.open_table(RAW)?;
        let mut chunk = Chunk::default();
        let mut bytes = 0u64;
        let Some(from) = after.checked_add(1) else {
            return Ok(chunk);
        };
        for row in index.range(from..)? {
            if chunk.conversations.len() >= portable::per_chunk() {
                break;
            }
            let (seq, _) = row?;
            let Some(m) = messages.get(seq.value())? else {
                continue;
            };
            let rec: MessageRec = decode(m.value())?;
            if rec.seq != seq.value() {
                return Err(StoreError::Corrupt(format!(
                    "message row {} holds message {}",
                    seq.value(),
                    rec.seq
                )));
            }
            let size = rec.blob.map_or(rec.size, |b| b.len);
            if !chunk.conversations.is_empty() && bytes.saturating_add(size) > BYTES_PER_CHUNK {
                break;
            }
            bytes = bytes.saturating_add(size);
            let raw = self.raw(&rec, &raw)?;
            chunk.conversations.push(MessageCopy { rec, raw });
        }
        Ok(chunk)
    }

    /// The Message-ID rows after `cursor` (the last Message-ID copied), in
    /// the table's order.
    pub(in crate::store) fn ids_after(&self, cursor: Option<&str>) -> Result<Chunk, StoreError> {
        let ids = self.txn.open_table(MESSAGE_IDS)?;
        let start = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut chunk = Chunk::default();
        for row in ids.range::<&str>((start, Bound::Unbounded))? {
            if chunk.ids.len() >= portable::ids_per_chunk() {
                break;
            }
            let (id, v) = row?;
            let (ticket, seq) = v.value();
            chunk.ids.push(IdCopy {
                message_id: id.value().to_string(),
                ticket: (ticket != 0).then_some(TicketId(ticket)),
                seq: (seq != 0).then_some(seq),
            });
        }
        chunk.id_cursor = chunk.ids.last().map(|r| r.message_id.clone());
        Ok(chunk)
    }

    /// The per-minute counts of the hour before `now`.
    pub(in crate::store) fn auto_sent(&self, now: Millis) -> Result<Vec<AutoSent>, StoreError> {
        let table = self.txn.open_table(AUTO_SENT)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (addr, v) = row?;
            let mut minutes = window::decode(v.value());
            window::prune(&mut minutes, window::minute(now));
            if !minutes.is_empty() {
                out.push(AutoSent {
                    address: addr.value().to_string(),
                    minutes,
                });
            }
        }
        Ok(out)
    }
}

/// The progress of the copy into this store, if it was ever the target of
/// one.
fn progress_in(txn: &ReadTransaction) -> Result<Option<Progress>, StoreError> {
    let table = match txn.open_table(COPY) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let progress = table.get(COPY_PROGRESS)?;
    progress.map(|v| decode(v.value())).transpose()
}

/// The copy into this store that has not finished, if any (a store that
/// is its target is not served).
pub(in crate::store) fn unfinished_copy(db: &Database) -> Result<Option<Progress>, StoreError> {
    let txn = db.begin_read()?;
    Ok(progress_in(&txn)?.filter(|p| !p.done))
}

/// A store being copied into.
pub(in crate::store) struct Target {
    db: Database,
    blobs: BlobFile,
}

impl Target {
    /// Opens (or creates) the store at `config`'s data dir, as
    /// [`Store::open`] does, for the copy alone.
    pub(in crate::store) fn open(config: Arc<Config>) -> Result<Target, StoreError> {
        let (_, db, blobs) = settle(config, true)?;
        Ok(Target { db, blobs })
    }

    pub(in crate::store) fn state(&self) -> Result<TargetState, StoreError> {
        let txn = self.db.begin_read()?;
        let reply_key = txn
            .open_table(SECRETS)?
            .get(REPLY_KEY_SECRET)?
            .map(|v| v.value().to_vec());
        Ok(TargetState {
            progress: progress_in(&txn)?,
            tickets: txn.open_table(TICKETS)?.len()?,
            messages: txn.open_table(MESSAGES)?.len()?,
            outbox: txn.open_table(OUTBOX)?.len()?,
            reply_key,
        })
    }

    /// The source's secrets and the copy's first progress, into a store
    /// that holds no data (checked again here).
    pub(in crate::store) fn begin(
        &self,
        secrets: &Secrets,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let held = txn.open_table(TICKETS)?.len()?
                + txn.open_table(MESSAGES)?.len()?
                + txn.open_table(OUTBOX)?.len()?;
            if held > 0 {
                return Err(StoreError::Refused(
                    "the target store took data while the copy began; refusing".into(),
                ));
            }
            txn.open_table(SECRETS)?
                .insert(REPLY_KEY_SECRET, secrets.reply_key.as_slice())?;
            txn.open_table(META)?
                .insert(MESSAGE_ID_SALT, secrets.salt)?;
            txn.open_table(COPY)?
                .insert(COPY_PROGRESS, encode(progress).as_slice())?;
        }
        self.commit(txn, None)
    }

    /// Fails unless the progress in the target is `before` (another copy
    /// into the same target would have moved it), then records `after`.
    fn advance(
        txn: &WriteTransaction,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        let mut table = txn.open_table(COPY)?;
        let now: Option<Progress> = table
            .get(COPY_PROGRESS)?
            .map(|v| decode(v.value()))
            .transpose()?;
        if now.as_ref() != Some(before) {
            return Err(StoreError::Refused(
                "the copy's progress in the target changed under it (another `store copy` \
                 into the same target?); stopping"
                    .into(),
            ));
        }
        table.insert(COPY_PROGRESS, encode(after).as_slice())?;
        Ok(())
    }

    /// One chunk, with the progress after it, in one durable transaction.
    pub(in crate::store) fn write(
        &self,
        chunk: &mut Chunk,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        Self::advance(&txn, before, after)?;
        let pending = {
            let mut t = Tables::open(&txn, &self.blobs)?;
            for tc in &mut chunk.tickets {
                t.put_ticket(&tc.ticket)?;
                for m in &mut tc.messages {
                    t.copy_message(&mut m.rec, m.raw.as_deref())?;
                }
                for (seq, e) in &tc.events {
                    t.copy_event(tc.ticket.id, *seq, e)?;
                }
                for o in &tc.outbox {
                    // `None`: not in the due index yet; a queued email is
                    // put there at its `next_attempt_at`.
                    t.put_outbox(o, None)?;
                }
            }
            for m in &mut chunk.conversations {
                t.copy_message(&mut m.rec, m.raw.as_deref())?;
            }
            for r in &chunk.ids {
                t.copy_id_row(&r.message_id, r.ticket, r.seq)?;
            }
            let s = &after.seen;
            t.raise_counters(s.ticket, s.message, s.event, s.outbox);
            t.finish()?
        };
        self.commit(txn, Some(pending))
    }

    /// The hourly counts, the counters and `done`, in one transaction.
    pub(in crate::store) fn finish(
        &self,
        auto: &[AutoSent],
        counters: &Counters,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        Self::advance(&txn, before, after)?;
        let pending = {
            let mut t = Tables::open(&txn, &self.blobs)?;
            for a in auto {
                t.copy_auto_sent(&a.address, &a.minutes)?;
            }
            t.raise_counters(
                counters.ticket,
                counters.message,
                counters.event,
                counters.outbox,
            );
            t.finish()?
        };
        self.commit(txn, Some(pending))
    }

    /// The raw bytes first (where the transaction says they go), synced,
    /// then an `Immediate` commit: a durable row never names bytes that
    /// are not on disk.
    fn commit(
        &self,
        mut txn: WriteTransaction,
        pending: Option<Pending>,
    ) -> Result<(), StoreError> {
        if let Some(p) = pending {
            self.blobs.write_at(&p.bytes, p.base)?;
        }
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        self.blobs.sync();
        txn.commit()?;
        Ok(())
    }
}
