//! What `postdesk store copy` ([`super::copy`]) carries from one engine
//! to the other: the engine-neutral rows of a store, the copy's progress,
//! and the few rules both engines' exports share. A leaf: the engines'
//! exports and the copy itself import it, it imports neither.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::desk::records::{EventRec, MessageRec, OutboxRec, TicketRec};
use crate::desk::StoreError;
use crate::ingest::TicketId;

/// Tickets per target transaction, at most.
const TICKETS_PER_CHUNK: usize = 500;
/// Raw bytes per target transaction, about (a chunk holds at least one
/// ticket or message, however big).
pub(in crate::store) const BYTES_PER_CHUNK: u64 = 32 << 20;
/// Message-ID rows per target transaction.
const IDS_PER_CHUNK: usize = 5000;

/// Tickets (and conversations) per chunk: [`TICKETS_PER_CHUNK`], or in
/// debug builds `POSTDESK_COPY_CHUNK` (tests copy in chunks of one).
pub(in crate::store) fn per_chunk() -> usize {
    if cfg!(debug_assertions) {
        if let Some(n) = std::env::var("POSTDESK_COPY_CHUNK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            return n.max(1);
        }
    }
    TICKETS_PER_CHUNK
}

pub(in crate::store) fn ids_per_chunk() -> usize {
    if per_chunk() < TICKETS_PER_CHUNK {
        per_chunk()
    } else {
        IDS_PER_CHUNK
    }
}

/// One message row and its raw bytes (`None`: the source has none for it).
pub(in crate::store) struct MessageCopy {
    pub rec: MessageRec,
    pub raw: Option<Vec<u8>>,
}

/// A ticket and everything that is its own.
pub(in crate::store) struct TicketCopy {
    pub ticket: TicketRec,
    /// In the ticket's order (message seq).
    pub messages: Vec<MessageCopy>,
    /// `(event seq, entry)`, in the timeline's order.
    pub events: Vec<(u64, EventRec)>,
    pub outbox: Vec<OutboxRec>,
}

/// One row of the Message-ID table.
pub(in crate::store) struct IdCopy {
    pub message_id: String,
    pub ticket: Option<TicketId>,
    pub seq: Option<u64>,
}

/// What one target transaction takes: one of the three kinds.
#[derive(Default)]
pub(in crate::store) struct Chunk {
    pub tickets: Vec<TicketCopy>,
    pub conversations: Vec<MessageCopy>,
    pub ids: Vec<IdCopy>,
    /// The source's position after `ids` (its own order; opaque here).
    pub id_cursor: Option<String>,
}

impl Chunk {
    pub(in crate::store) fn is_empty(&self) -> bool {
        self.tickets.is_empty() && self.conversations.is_empty() && self.ids.is_empty()
    }
}

pub(in crate::store) struct Secrets {
    pub reply_key: [u8; 32],
    pub salt: u64,
}

/// The next id each counter gives (as redb's `next_*`; a PostgreSQL
/// sequence's next `nextval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::store) struct Counters {
    pub ticket: u64,
    pub message: u64,
    pub event: u64,
    pub outbox: u64,
}

impl Counters {
    pub(in crate::store) fn raise(&mut self, other: &Counters) {
        self.ticket = self.ticket.max(other.ticket);
        self.message = self.message.max(other.message);
        self.event = self.event.max(other.event);
        self.outbox = self.outbox.max(other.outbox);
    }
}

/// Automatic emails sent to one address, per minute (`(minute since the
/// epoch, count)`, oldest first), within the last hour.
pub(in crate::store) struct AutoSent {
    pub address: String,
    pub minutes: Vec<(u32, u32)>,
}

/// What the source is: read once at the start of a run.
pub(in crate::store) struct SourceInfo {
    pub secrets: Secrets,
    pub counters: Counters,
    pub tickets: u64,
    pub messages: u64,
    pub outbox: u64,
    pub conversations: u64,
}

/// What the target holds before this run writes anything.
pub(in crate::store) struct TargetState {
    pub progress: Option<Progress>,
    pub tickets: u64,
    pub messages: u64,
    pub outbox: u64,
    pub reply_key: Option<Vec<u8>>,
}

impl TargetState {
    pub(in crate::store) fn has_data(&self) -> bool {
        self.tickets + self.messages + self.outbox > 0
    }

    /// "12 tickets", or what else it holds.
    pub(in crate::store) fn holds(&self) -> String {
        if self.tickets > 0 {
            plural(self.tickets, "ticket")
        } else if self.messages > 0 {
            plural(self.messages, "message")
        } else {
            plural(self.outbox, "outbox email")
        }
    }
}

pub(in crate::store) fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A copy's progress, kept in its target (PostgreSQL: `schema_meta` row
/// `copy_from`; redb: the `copy` table), updated in the transaction of
/// each chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::store) struct Progress {
    /// Which store is copied: [`fingerprint`] of its reply-key secret.
    pub source: String,
    /// Its engine (the cursors below are in its order).
    pub engine: String,
    /// Its counters when the copy began: a source that has changed since
    /// (it took mail, sent email) is not copied on top of what was.
    pub counters: Counters,
    /// The last ticket id copied (0: none yet).
    pub ticket: u64,
    /// The last conversation (message seq) copied.
    pub conversation: u64,
    /// The source's position in its Message-ID rows.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The counters the copied ids need (one past the highest of each).
    pub seen: Counters,
    pub done: bool,
    pub tickets: u64,
    /// Message rows, conversations included.
    pub messages: u64,
    pub outbox: u64,
    pub conversations: u64,
    pub message_ids: u64,
}

impl Progress {
    /// The progress once `chunk` is in the target.
    pub(in crate::store) fn after(&self, chunk: &Chunk) -> Progress {
        let mut p = self.clone();
        let message = |p: &mut Progress, m: &MessageCopy| {
            p.messages += 1;
            p.seen.message = p.seen.message.max(m.rec.seq.saturating_add(1));
        };
        for t in &chunk.tickets {
            p.ticket = p.ticket.max(t.ticket.id.0);
            p.tickets += 1;
            p.seen.ticket = p.seen.ticket.max(t.ticket.id.0.saturating_add(1));
            for m in &t.messages {
                message(&mut p, m);
            }
            for (seq, _) in &t.events {
                p.seen.event = p.seen.event.max(seq.saturating_add(1));
            }
            for o in &t.outbox {
                p.outbox += 1;
                p.seen.outbox = p.seen.outbox.max(o.id.saturating_add(1));
            }
        }
        for m in &chunk.conversations {
            p.conversation = p.conversation.max(m.rec.seq);
            p.conversations += 1;
            message(&mut p, m);
        }
        p.message_ids += chunk.ids.len() as u64;
        if chunk.id_cursor.is_some() {
            p.message_id = chunk.id_cursor.clone();
        }
        p
    }
}

/// Which store a copy is of: the SHA-256 (hex) of its reply-key secret,
/// under a label of its own (it names the store without giving away
/// anything about the keys).
pub(in crate::store) fn fingerprint(secrets: &Secrets) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"postdesk store copy\0");
    h.update(secrets.reply_key);
    hex(&h.finalize())
}

pub(in crate::store) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(in crate::store) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why a store refuses to be served (or copied from) while it is the
/// target of an unfinished copy.
pub(in crate::store) fn unfinished(p: &Progress) -> StoreError {
    StoreError::Refused(format!(
        "this store is the target of an unfinished `postdesk store copy` (from {}, {} copied \
         so far): run the same copy again to finish it before using the store",
        p.engine,
        plural(p.tickets, "ticket")
    ))
}

/// Groups `(address, sent at)` rows into [`AutoSent`] minutes, keeping
/// those of the hour before `now`.
pub(in crate::store) fn group_auto_sent(rows: Vec<(String, Millis)>, now: Millis) -> Vec<AutoSent> {
    use super::redb::window;
    let oldest = window::minute(now).saturating_sub(window::WINDOW_MINUTES - 1);
    let mut by: BTreeMap<String, BTreeMap<u32, u32>> = BTreeMap::new();
    for (address, at) in rows {
        let m = window::minute(at);
        if m < oldest {
            continue;
        }
        let n = by.entry(address).or_default().entry(m).or_default();
        *n = n.saturating_add(1);
    }
    by.into_iter()
        .map(|(address, minutes)| AutoSent {
            address,
            minutes: minutes.into_iter().collect(),
        })
        .collect()
}
