//! Read views for the admin socket: the shapes of SPEC §7, built from one
//! read transaction each.

use std::ops::Deref;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::blobs::BlobFile;
use super::schema::*;
use super::StoreError;
pub use crate::desk::views::*;
use crate::ingest::TicketId;

/// A read transaction and the blob file: what a view reads from. It is a
/// [`ReadTransaction`] for views that need no raw bytes.
pub struct Snapshot<'a> {
    txn: ReadTransaction,
    blobs: &'a BlobFile,
}

impl Deref for Snapshot<'_> {
    type Target = ReadTransaction;
    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

impl<'a> Snapshot<'a> {
    pub(in crate::store) fn new(txn: ReadTransaction, blobs: &'a BlobFile) -> Self {
        Snapshot { txn, blobs }
    }

    /// The `raw` table, where rows written by earlier builds keep their bytes.
    fn raw_table(&self) -> Result<ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        Ok(self.txn.open_table(RAW)?)
    }

    /// A message's raw bytes: from the blob file, or from `raw_table` for a
    /// row written before the blob file existed.
    fn raw(
        &self,
        rec: &MessageRec,
        raw_table: &ReadOnlyTable<u64, &'static [u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match &rec.blob {
            Some(r) => self.blobs.read(r).map(Some),
            None => Ok(raw_table.get(rec.seq)?.map(|v| v.value().to_vec())),
        }
    }

    /// [`Snapshot::raw`] for a list view: bytes that fail their checksum
    /// (or lie beyond the file) are logged and shown as no text, so that one
    /// damaged message does not hide its whole ticket; `message` still
    /// answers the error for it.
    fn raw_for_view(
        &self,
        rec: &MessageRec,
        raw_table: &ReadOnlyTable<u64, &'static [u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.raw(rec, raw_table) {
            Err(StoreError::Corrupt(e)) => {
                tracing::error!(message_id = %rec.message_id, error = %e, "a stored message cannot be read");
                Ok(None)
            }
            other => other,
        }
    }
}

pub fn ticket_count(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(TICKETS)?.len()?)
}

/// Newest first.
pub fn tickets(
    txn: &ReadTransaction,
    filter: &TicketFilter,
) -> Result<Vec<TicketView>, StoreError> {
    let table = txn.open_table(TICKETS)?;
    let mut out = Vec::new();
    for row in table.iter()?.rev() {
        if out.len() >= filter.limit {
            break;
        }
        let (_, bytes) = row?;
        let t: TicketRec = decode(bytes.value())?;
        if filter.status.as_ref().is_some_and(|s| *s != t.status) {
            continue;
        }
        if filter.pipeline.as_ref().is_some_and(|p| *p != t.pipeline) {
            continue;
        }
        out.push(TicketView::from(&t));
    }
    Ok(out)
}

pub fn ticket(txn: &Snapshot, id: TicketId) -> Result<Option<TicketDetail>, StoreError> {
    let tickets = txn.open_table(TICKETS)?;
    let Some(bytes) = tickets.get(id.0)? else {
        return Ok(None);
    };
    let t: TicketRec = decode(bytes.value())?;
    let index = txn.open_table(TICKET_MESSAGES)?;
    let messages_table = txn.open_table(MESSAGES)?;
    let raw = txn.raw_table()?;
    let mut messages = Vec::new();
    for row in index.range((id.0, 0)..=(id.0, u64::MAX))? {
        let (key, _) = row?;
        let (_, seq) = key.value();
        if let Some(m) = messages_table.get(seq)? {
            let rec: MessageRec = decode(m.value())?;
            let bytes = txn.raw_for_view(&rec, &raw)?;
            messages.push((rec, bytes));
        }
    }
    let timeline_table = txn.open_table(TIMELINE)?;
    let mut events = Vec::new();
    for row in timeline_table.range((id.0, 0)..=(id.0, u64::MAX))? {
        let (_, v) = row?;
        events.push(decode::<EventRec>(v.value())?);
    }
    Ok(Some(TicketDetail::new(&t, messages, events)))
}

/// Messages kept without a ticket, newest first.
pub fn conversations(txn: &Snapshot, limit: usize) -> Result<Vec<MessageView>, StoreError> {
    let index = txn.open_table(CONVERSATIONS)?;
    let messages = txn.open_table(MESSAGES)?;
    let raw = txn.raw_table()?;
    let mut out = Vec::new();
    for row in index.iter()?.rev().take(limit) {
        let (seq, _) = row?;
        if let Some(m) = messages.get(seq.value())? {
            let rec: MessageRec = decode(m.value())?;
            let bytes = txn.raw_for_view(&rec, &raw)?;
            out.push(MessageView::new(rec, bytes.as_deref()));
        }
    }
    Ok(out)
}

/// One stored message (inbound or outbound) by its normalised Message-ID.
pub fn message(txn: &Snapshot, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
    let ids = txn.open_table(MESSAGE_IDS)?;
    let Some(row) = ids.get(message_id)? else {
        return Ok(None);
    };
    let (_, seq) = row.value();
    if seq == 0 {
        return Ok(None);
    }
    let messages = txn.open_table(MESSAGES)?;
    let Some(m) = messages.get(seq)? else {
        return Ok(None);
    };
    let rec: MessageRec = decode(m.value())?;
    let bytes = txn.raw(&rec, &txn.raw_table()?)?.unwrap_or_default();
    Ok(Some(StoredMessage {
        ticket: rec.ticket,
        view: MessageView::new(rec, Some(&bytes)),
        raw: bytes,
    }))
}

/// Emails waiting for a (first or next) delivery attempt.
pub fn outbox_pending(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(OUTBOX_DUE)?.len()?)
}

/// The outbox, newest first, optionally only one state.
pub fn outbox(
    txn: &ReadTransaction,
    state: Option<OutState>,
    limit: usize,
) -> Result<Vec<OutboxView>, StoreError> {
    let table = txn.open_table(OUTBOX)?;
    let mut out = Vec::new();
    for row in table.iter()?.rev() {
        if out.len() >= limit {
            break;
        }
        let (_, v) = row?;
        let rec: OutboxRec = decode(v.value())?;
        if state.is_some_and(|s| s != rec.state) {
            continue;
        }
        out.push(OutboxView::from(rec));
    }
    Ok(out)
}

/// Up to `limit` emails due at `now`, and when the next one after them is
/// due (if any).
pub fn due(
    txn: &Snapshot,
    now: i64,
    limit: usize,
) -> Result<(Vec<DueMail>, Option<i64>), StoreError> {
    let due = txn.open_table(OUTBOX_DUE)?;
    let outbox = txn.open_table(OUTBOX)?;
    let messages = txn.open_table(MESSAGES)?;
    let raw = txn.raw_table()?;
    let mut out = Vec::new();
    let mut next = None;
    for row in due.iter()? {
        let (key, _) = row?;
        let (at, id) = key.value();
        if at as i64 > now || out.len() >= limit {
            next = Some(at as i64);
            break;
        }
        let Some(v) = outbox.get(id)? else { continue };
        let rec: OutboxRec = decode(v.value())?;
        let bytes = match messages.get(rec.message_seq)? {
            Some(m) => match txn.raw(&decode(m.value())?, &raw) {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err("no stored bytes".to_string()),
                Err(StoreError::Corrupt(e)) => Err(e),
                Err(e) => return Err(e),
            },
            None => Err(format!("no stored message {}", rec.message_seq)),
        };
        out.push(DueMail {
            id,
            lease: 0,
            ticket: rec.ticket,
            message_id: rec.message_id,
            kind: rec.kind,
            mail_from: rec.mail_from,
            rcpt: rec.rcpt,
            raw: bytes,
        });
    }
    Ok((out, next))
}

pub fn outbox_one(txn: &ReadTransaction, id: u64) -> Result<Option<OutboxView>, StoreError> {
    let table = txn.open_table(OUTBOX)?;
    match table.get(id)? {
        Some(v) => Ok(Some(OutboxView::from(decode::<OutboxRec>(v.value())?))),
        None => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::store::redb::blobs::Pending;

    const OLD: &[u8] =
        b"Message-ID: <old@example.com>\r\nSubject: Old\r\n\r\nKept in the raw table.\r\n";
    const NEW: &[u8] =
        b"Message-ID: <new@example.com>\r\nSubject: New\r\n\r\nKept in the blob file.\r\n";

    fn row(
        seq: u64,
        message_id: &str,
        blob: Option<crate::store::redb::blobs::BlobRef>,
    ) -> MessageRec {
        MessageRec {
            blob,
            ..MessageRec::for_test(seq, message_id)
        }
    }

    #[test]
    fn a_message_reads_its_bytes_from_the_blob_file_and_an_old_row_from_the_raw_table() {
        let dir = tempfile::tempdir().unwrap();
        let (db, blobs) = crate::store::redb::scratch_store(dir.path());
        let mut pending = Pending::new(0);
        let r = pending.push(NEW);
        blobs.write_at(&pending.bytes, pending.base).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut ids = txn.open_table(MESSAGE_IDS).unwrap();
            // A row of an earlier build: no blob, bytes in the raw table.
            messages
                .insert(1, encode(&row(1, "old@example.com", None)).as_slice())
                .unwrap();
            txn.open_table(RAW).unwrap().insert(1, OLD).unwrap();
            ids.insert("old@example.com", (0, 1)).unwrap();
            messages
                .insert(2, encode(&row(2, "new@example.com", Some(r))).as_slice())
                .unwrap();
            ids.insert("new@example.com", (0, 2)).unwrap();
            txn.open_table(CONVERSATIONS)
                .unwrap()
                .insert(1, ())
                .unwrap();
            txn.open_table(CONVERSATIONS)
                .unwrap()
                .insert(2, ())
                .unwrap();
        }
        txn.commit().unwrap();

        let snap = Snapshot::new(db.begin_read().unwrap(), &blobs);
        let old = message(&snap, "old@example.com").unwrap().unwrap();
        assert_eq!(old.raw, OLD);
        assert_eq!(old.view.text.trim_end(), "Kept in the raw table.");
        let new = message(&snap, "new@example.com").unwrap().unwrap();
        assert_eq!(new.raw, NEW);
        assert_eq!(new.view.text.trim_end(), "Kept in the blob file.");
        let texts: Vec<String> = conversations(&snap, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.text.trim_end().to_string())
            .collect();
        assert_eq!(texts, ["Kept in the blob file.", "Kept in the raw table."]);

        // A damaged byte is an error, never another message's text; a list
        // view shows the message without text rather than failing whole.
        blobs.write_at(b"X", r.at + 3).unwrap();
        let e = message(&snap, "new@example.com").err().unwrap().to_string();
        assert!(
            e.contains("postdesk.blobs") && e.contains("checksum mismatch"),
            "{e}"
        );
        let texts: Vec<String> = conversations(&snap, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.text.trim_end().to_string())
            .collect();
        assert_eq!(texts, ["", "Kept in the raw table."]);
    }

    #[test]
    fn an_email_whose_stored_copy_is_damaged_is_due_with_the_reason_not_an_empty_message() {
        let dir = tempfile::tempdir().unwrap();
        let (db, blobs) = crate::store::redb::scratch_store(dir.path());
        let mut pending = Pending::new(0);
        let good = pending.push(NEW);
        let bad = pending.push(OLD);
        blobs.write_at(&pending.bytes, pending.base).unwrap();
        blobs.write_at(b"X", bad.at).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut outbox = txn.open_table(OUTBOX).unwrap();
            let mut due_rows = txn.open_table(OUTBOX_DUE).unwrap();
            for (id, blob) in [(1u64, good), (2, bad)] {
                let mid = format!("{id}@example.com");
                messages
                    .insert(id, encode(&row(id, &mid, Some(blob))).as_slice())
                    .unwrap();
                let out = OutboxRec {
                    id,
                    ticket: TicketId(1),
                    message_seq: id,
                    message_id: mid,
                    kind: OutboxKind::AutoReply,
                    mail_from: "support@acme.example".into(),
                    rcpt: vec!["jane@example.com".into()],
                    subject: String::new(),
                    state: OutState::Queued,
                    attempts: 0,
                    created_at: 0,
                    next_attempt_at: None,
                    sent_at: None,
                    last_error: None,
                    bounce: None,
                };
                outbox.insert(id, encode(&out).as_slice()).unwrap();
                due_rows.insert((id, id), ()).unwrap();
            }
        }
        txn.commit().unwrap();

        let snap = Snapshot::new(db.begin_read().unwrap(), &blobs);
        let (mails, next) = due(&snap, 10, 10).unwrap();
        assert_eq!(next, None);
        let raws: Vec<_> = mails.iter().map(|m| (m.id, m.raw.clone())).collect();
        assert_eq!(raws[0], (1, Ok(NEW.to_vec())));
        assert_eq!(raws[1].0, 2);
        let e = raws[1].1.clone().unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
    }
}
