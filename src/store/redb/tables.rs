//! The redb engine's side of a desk transaction: [`Tables`], every table
//! a write needs, opened once per batch inside the writer's write
//! transaction, implementing [`crate::desk::Txn`] (and threading's
//! [`ThreadView`]) over them.

use redb::{ReadableTable, Table, WriteTransaction};

use super::blobs::{BlobFile, Pending};
use super::schema::*;
use super::window;
use super::StoreError;
use crate::clock::Millis;
use crate::desk::{IdRow, TimelineEvent, Txn};
use crate::ingest::trust::ReplyKeys;
use crate::ingest::{ThreadView, TicketId};

/// Every table a write needs, opened once per batch, plus the id counters
/// and the raw bytes the batch adds to the blob file.
pub(in crate::store) struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    tickets: Table<'txn, u64, &'static [u8]>,
    messages: Table<'txn, u64, &'static [u8]>,
    raw: Table<'txn, u64, &'static [u8]>,
    message_ids: Table<'txn, &'static str, (u64, u64)>,
    ticket_messages: Table<'txn, (u64, u64), ()>,
    timeline: Table<'txn, (u64, u64), &'static [u8]>,
    conversations: Table<'txn, u64, ()>,
    outbox: Table<'txn, u64, &'static [u8]>,
    outbox_due: Table<'txn, (u64, u64), ()>,
    auto_sent: Table<'txn, &'static str, &'static [u8]>,
    next_ticket: u64,
    next_message: u64,
    next_event: u64,
    next_outbox: u64,
    /// This store's Message-ID salt (see [`crate::mail::compose::message_id`]).
    salt: u64,
    /// The keys of reply addresses, from this store's secret.
    keys: ReplyKeys,
    /// Set when this batch queued an email: the outbox worker is woken
    /// after the commit.
    pub(in crate::store) queued_mail: bool,
    /// The inbound message being applied (seq, decoded text), so that a
    /// template quoting it does not parse its raw bytes again.
    current_text: Option<(u64, String)>,
    blobs: &'txn BlobFile,
    /// Raw bytes of this transaction's messages, to be written at the
    /// transaction's `blob_len` before it commits ([`Tables::finish`]).
    pending: Pending,
}

impl<'txn> Tables<'txn> {
    pub(in crate::store) fn open(
        txn: &'txn WriteTransaction,
        blobs: &'txn BlobFile,
    ) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let blob_len = meta.get(BLOB_LEN)?.map_or(0, |v| v.value());
        let next_ticket = counter(&meta, NEXT_TICKET)?;
        let next_message = counter(&meta, NEXT_MESSAGE)?;
        let next_event = counter(&meta, NEXT_EVENT)?;
        let next_outbox = counter(&meta, NEXT_OUTBOX)?;
        let salt = meta.get(MESSAGE_ID_SALT)?.map_or(0, |v| v.value());
        let keys = reply_keys(txn)?;
        Ok(Tables {
            meta,
            tickets: txn.open_table(TICKETS)?,
            messages: txn.open_table(MESSAGES)?,
            raw: txn.open_table(RAW)?,
            message_ids: txn.open_table(MESSAGE_IDS)?,
            ticket_messages: txn.open_table(TICKET_MESSAGES)?,
            timeline: txn.open_table(TIMELINE)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            outbox: txn.open_table(OUTBOX)?,
            outbox_due: txn.open_table(OUTBOX_DUE)?,
            auto_sent: txn.open_table(AUTO_SENT)?,
            next_ticket,
            next_message,
            next_event,
            next_outbox,
            salt,
            keys,
            queued_mail: false,
            current_text: None,
            blobs,
            pending: Pending::new(blob_len),
        })
    }

    pub(in crate::store) fn meta_set(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    /// The rows of a message (the message, its Message-ID row, its place
    /// on its ticket or among the conversations), its `blob` already set.
    fn put_message_rows(&mut self, rec: &MessageRec) -> Result<(), StoreError> {
        self.messages.insert(rec.seq, encode(rec).as_slice())?;
        self.message_ids.insert(
            rec.message_id.as_str(),
            (rec.ticket.map_or(0, TicketId::get), rec.seq),
        )?;
        match rec.ticket {
            Some(t) => self.ticket_messages.insert((t.0, rec.seq), ())?,
            None => self.conversations.insert(rec.seq, ())?,
        };
        Ok(())
    }

    /// `store copy`: a message row as the source has it, with its raw bytes
    /// (queued for the blob file like [`Txn::put_message`]'s), or without
    /// any when the source had none for it.
    pub(in crate::store) fn copy_message(
        &mut self,
        rec: &mut MessageRec,
        raw: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        match raw {
            Some(raw) => self.put_message(rec, raw),
            None => {
                rec.blob = None;
                self.put_message_rows(rec)
            }
        }
    }

    /// `store copy`: a timeline entry under the source's event number (so
    /// that the order of a ticket's timeline is the source's).
    pub(in crate::store) fn copy_event(
        &mut self,
        ticket: TicketId,
        seq: u64,
        rec: &EventRec,
    ) -> Result<(), StoreError> {
        self.timeline
            .insert((ticket.0, seq), encode(rec).as_slice())?;
        Ok(())
    }

    /// `store copy`: a Message-ID row as the source has it (`None`: a
    /// conversation's, or only named so far).
    pub(in crate::store) fn copy_id_row(
        &mut self,
        id: &str,
        ticket: Option<TicketId>,
        seq: Option<u64>,
    ) -> Result<(), StoreError> {
        self.message_ids
            .insert(id, (ticket.map_or(0, TicketId::get), seq.unwrap_or(0)))?;
        Ok(())
    }

    /// `store copy`: an address's automatic emails per minute ([`window`]).
    pub(in crate::store) fn copy_auto_sent(
        &mut self,
        addr: &str,
        minutes: &[(u32, u32)],
    ) -> Result<(), StoreError> {
        self.auto_sent
            .insert(addr, window::encode(minutes).as_slice())?;
        Ok(())
    }

    /// `store copy`: the next ids are at least these (saved by
    /// [`Tables::finish`]), so that new tickets, messages, events and
    /// emails continue after the copied ones.
    pub(in crate::store) fn raise_counters(
        &mut self,
        ticket: u64,
        message: u64,
        event: u64,
        outbox: u64,
    ) {
        self.next_ticket = self.next_ticket.max(ticket);
        self.next_message = self.next_message.max(message);
        self.next_event = self.next_event.max(event);
        self.next_outbox = self.next_outbox.max(outbox);
    }

    /// Saves the counters and the blob file's new length; returns the raw
    /// bytes the caller must write (at [`Pending::base`]) before it commits.
    pub(in crate::store) fn finish(mut self) -> Result<Pending, StoreError> {
        self.meta.insert(NEXT_TICKET, self.next_ticket)?;
        self.meta.insert(NEXT_MESSAGE, self.next_message)?;
        self.meta.insert(NEXT_EVENT, self.next_event)?;
        self.meta.insert(NEXT_OUTBOX, self.next_outbox)?;
        if !self.pending.bytes.is_empty() {
            self.meta.insert(BLOB_LEN, self.pending.end())?;
        }
        Ok(self.pending)
    }
}

impl Txn for Tables<'_> {
    fn next_ticket_id(&mut self) -> Result<TicketId, StoreError> {
        let id = self.next_ticket;
        self.next_ticket += 1;
        Ok(TicketId(id))
    }

    fn next_message_seq(&mut self) -> Result<u64, StoreError> {
        let seq = self.next_message;
        self.next_message += 1;
        Ok(seq)
    }

    fn next_outbox_id(&mut self) -> Result<u64, StoreError> {
        let id = self.next_outbox;
        self.next_outbox += 1;
        Ok(id)
    }

    fn salt(&self) -> u64 {
        self.salt
    }

    fn keys(&self) -> &ReplyKeys {
        &self.keys
    }

    fn ticket(&self, id: TicketId) -> Result<Option<TicketRec>, StoreError> {
        match self.tickets.get(id.0)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn put_ticket(&mut self, t: &TicketRec) -> Result<(), StoreError> {
        self.tickets.insert(t.id.0, encode(t).as_slice())?;
        Ok(())
    }

    fn message(&self, seq: u64) -> Result<Option<MessageRec>, StoreError> {
        match self.messages.get(seq)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
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
        Ok(match &rec.blob {
            Some(r) => text_of(String::new(), Some(&self.pending.read(self.blobs, r)?)),
            None => {
                let raw = self.raw.get(rec.seq)?;
                text_of(String::new(), raw.as_ref().map(|r| r.value()))
            }
        })
    }

    fn set_current_text(&mut self, seq: u64, text: String) {
        self.current_text = Some((seq, text));
    }

    /// The raw bytes are queued for the blob file (written just before
    /// the transaction commits, see [`Tables::finish`]).
    fn put_message(&mut self, rec: &mut MessageRec, raw: &[u8]) -> Result<(), StoreError> {
        rec.blob = Some(self.pending.push(raw));
        self.put_message_rows(rec)
    }

    fn ticket_message_seqs(&self, ticket: TicketId) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for row in self
            .ticket_messages
            .range((ticket.0, 0)..=(ticket.0, u64::MAX))?
        {
            let (k, _) = row?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    fn move_message(&mut self, seq: u64, from: TicketId, to: TicketId) -> Result<(), StoreError> {
        self.ticket_messages.remove((from.0, seq))?;
        self.ticket_messages.insert((to.0, seq), ())?;
        if let Some(mut rec) = self.message(seq)? {
            rec.ticket = Some(to);
            self.messages.insert(seq, encode(&rec).as_slice())?;
            self.message_ids
                .insert(rec.message_id.as_str(), (to.0, seq))?;
        }
        Ok(())
    }

    /// Rows are `(ticket or 0, message seq or 0)`.
    fn message_id_row(&self, id: &str) -> Result<Option<IdRow>, StoreError> {
        Ok(self.message_ids.get(id)?.map(|v| {
            let (ticket, seq) = v.value();
            IdRow {
                ticket: (ticket != 0).then_some(TicketId(ticket)),
                seq: (seq != 0).then_some(seq),
            }
        }))
    }

    fn add_reference(&mut self, id: &str, ticket: TicketId) -> Result<(), StoreError> {
        if self.message_ids.get(id)?.is_none() {
            self.message_ids.insert(id, (ticket.0, 0))?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        ticket: TicketId,
        at: Millis,
        event: &TimelineEvent<'_>,
    ) -> Result<(), StoreError> {
        let seq = self.next_event;
        self.next_event += 1;
        let rec = EventRec {
            at,
            kind: event.kind().to_owned(),
            detail: event.detail(),
        };
        self.timeline
            .insert((ticket.0, seq), encode(&rec).as_slice())?;
        Ok(())
    }

    fn outbox(&self, id: u64) -> Result<Option<OutboxRec>, StoreError> {
        self.outbox
            .get(id)?
            .map(|v| decode::<OutboxRec>(v.value()))
            .transpose()
    }

    /// The due index holds `(next_attempt_at, id)` of every queued entry.
    fn put_outbox(&mut self, rec: &OutboxRec, was_due: Option<Millis>) -> Result<(), StoreError> {
        if was_due != rec.next_attempt_at {
            if let Some(due) = was_due {
                self.outbox_due.remove((due.max(0) as u64, rec.id))?;
            }
            if let Some(due) = rec.next_attempt_at {
                self.outbox_due.insert((due.max(0) as u64, rec.id), ())?;
            }
        }
        self.outbox.insert(rec.id, encode(rec).as_slice())?;
        Ok(())
    }

    /// Counted when applied: the one writer applies a batch once (again
    /// only in the recovery after a failure).
    fn mail_queued(&mut self) {
        self.queued_mail = true;
        crate::metrics::inc(&crate::metrics::METRICS.emails_queued);
    }

    /// A per-address record of automatic emails per minute (see
    /// [`window`]).
    fn auto_sent_last_hour(&self, addr: &str, now: Millis) -> Result<u64, StoreError> {
        let pairs = match self.auto_sent.get(addr)? {
            Some(v) => window::decode(v.value()),
            None => return Ok(0),
        };
        Ok(window::count(&pairs, window::minute(now)))
    }

    fn count_auto_sent(&mut self, addr: &str, now: Millis) -> Result<(), StoreError> {
        let minute = window::minute(now);
        let mut pairs = match self.auto_sent.get(addr)? {
            Some(v) => window::decode(v.value()),
            None => Vec::new(),
        };
        window::prune(&mut pairs, minute);
        window::record(&mut pairs, minute);
        self.auto_sent
            .insert(addr, window::encode(&pairs).as_slice())?;
        Ok(())
    }
}

/// The store's reply-key secret (created at open by `init_tables`).
fn reply_keys(txn: &WriteTransaction) -> Result<ReplyKeys, StoreError> {
    let secrets = txn.open_table(SECRETS)?;
    let secret = secrets.get(REPLY_KEY_SECRET)?;
    match secret.as_ref().map(|s| <[u8; 32]>::try_from(s.value())) {
        Some(Ok(secret)) => Ok(ReplyKeys::new(secret)),
        _ => Err(StoreError::Corrupt(
            "the reply-key secret is missing or damaged".into(),
        )),
    }
}

impl ThreadView for Tables<'_> {
    type Error = StoreError;

    fn ticket_for_message_id(&self, id: &str) -> Result<Option<TicketId>, StoreError> {
        Ok(self
            .message_ids
            .get(id)?
            .map(|v| v.value().0)
            .filter(|t| *t != 0)
            .map(TicketId))
    }

    fn ticket_exists(&self, ticket: TicketId) -> Result<bool, StoreError> {
        Ok(self.tickets.get(ticket.0)?.is_some())
    }

    fn is_participant(&self, ticket: TicketId, email: &str) -> Result<bool, StoreError> {
        Ok(self
            .ticket(ticket)?
            .is_some_and(|t| t.participants.iter().any(|p| p == email)))
    }
}

/// Reads a counter inside the write transaction .
fn counter(meta: &redb::Table<'_, &'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(1).max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(seq: u64) -> MessageRec {
        MessageRec {
            ticket: Some(TicketId(1)),
            ..MessageRec::for_test(seq, &format!("{seq}@example.com"))
        }
    }

    /// Templates quote a ticket's last inbound message: after an upgrade
    /// that may be a row of an earlier build (bytes in the `raw` table),
    /// one committed in the blob file, or one of this very transaction.
    #[test]
    fn a_message_text_comes_from_the_raw_table_the_blob_file_or_this_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (db, blobs) = super::super::scratch_store(dir.path());

        let txn = db.begin_write().unwrap();
        let (old, committed) = {
            let mut t = Tables::open(&txn, &blobs).unwrap();
            let old = row(1);
            t.messages.insert(1, encode(&old).as_slice()).unwrap();
            t.raw
                .insert(1, b"Subject: a\r\n\r\nFrom the raw table.\r\n".as_slice())
                .unwrap();
            let mut committed = row(2);
            t.put_message(&mut committed, b"Subject: b\r\n\r\nFrom the blob file.\r\n")
                .unwrap();
            let pending = t.finish().unwrap();
            blobs.write_at(&pending.bytes, pending.base).unwrap();
            (old, committed)
        };
        txn.commit().unwrap();

        let txn = db.begin_write().unwrap();
        let mut t = Tables::open(&txn, &blobs).unwrap();
        let mut current = row(3);
        t.put_message(
            &mut current,
            b"Subject: c\r\n\r\nFrom this transaction.\r\n",
        )
        .unwrap();
        let text = |t: &Tables<'_>, rec: &MessageRec| t.message_text(rec).unwrap();
        assert_eq!(text(&t, &old).trim_end(), "From the raw table.");
        assert_eq!(text(&t, &committed).trim_end(), "From the blob file.");
        assert_eq!(text(&t, &current).trim_end(), "From this transaction.");
        // The second transaction's bytes go where the first one's ended.
        let (c, n) = (committed.blob.unwrap(), current.blob.unwrap());
        assert_eq!(n.at, c.at + c.len);
    }
}
