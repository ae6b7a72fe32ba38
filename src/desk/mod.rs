//! The ticket logic: what one inbound message, operator command or
//! delivery result does to the tickets — gather, decide (the pure
//! [`crate::ingest::thread::decide`] and [`crate::automation::decide`]),
//! apply — written once against a transaction interface, [`Txn`], that
//! each storage engine implements.
//!
//! Owns: the inbound step (`inbound`: duplicates, bounces, trust,
//! threading, tickets, participants), what automation's effects write and
//! send (`effects`: loop protection, outgoing drafts, the outbox), the
//! operator commands and delivery results (`ops`), the records
//! ([`records`]) and the views of them that the admin socket shows
//! ([`views`]).
//!
//! Invariants:
//! - No rule lives in an engine. An engine stores, locks, batches,
//!   retries and decides durability; everything a message or command
//!   causes is decided here, the same for every engine.
//! - Everything one message or command causes is written through one
//!   [`Txn`]: the engine commits all of it or none.
//! - Time comes in as `now`; nothing here reads a clock, a socket or a
//!   file.

mod effects;
mod error;
mod inbound;
mod ops;
pub mod records;
pub mod timeline;
pub mod views;

pub use error::StoreError;
pub use inbound::{apply_inbound, Envelope, Inbound, Outcome};
pub use ops::{assign, delivered, merge, reply, set_status, Delivery};
pub use timeline::TimelineEvent;

use crate::clock::Millis;
use crate::ingest::trust::ReplyKeys;
use crate::ingest::{ThreadView, TicketId};
use records::{MessageRec, OutboxRec, TicketRec};

/// What the store holds under one Message-ID: the ticket it belongs to
/// (none: a conversation without a ticket), and the message stored under
/// it (none: an id only named by a ticket's messages, in their
/// In-Reply-To or References).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRow {
    pub ticket: Option<TicketId>,
    pub seq: Option<u64>,
}

/// One open write transaction of a storage engine, as the ticket logic
/// sees it. Threading reads it through [`ThreadView`].
///
/// Every write is part of the transaction: the engine commits all of it or
/// none. Ids come from the engine (counters, sequences) and increase.
pub trait Txn: ThreadView<Error = StoreError> {
    fn next_ticket_id(&mut self) -> Result<TicketId, StoreError>;
    fn next_message_seq(&mut self) -> Result<u64, StoreError>;
    fn next_outbox_id(&mut self) -> Result<u64, StoreError>;
    /// This store's Message-ID salt (see
    /// [`crate::mail::compose::message_id`]).
    fn salt(&self) -> u64;
    /// The keys of reply addresses, from this store's secret.
    fn keys(&self) -> &ReplyKeys;

    fn ticket(&self, id: TicketId) -> Result<Option<TicketRec>, StoreError>;
    fn put_ticket(&mut self, t: &TicketRec) -> Result<(), StoreError>;

    fn message(&self, seq: u64) -> Result<Option<MessageRec>, StoreError>;
    /// The decoded text of a stored message (see [`records::text_of`]).
    fn message_text(&self, rec: &MessageRec) -> Result<String, StoreError>;
    /// The decoded text of the inbound message being applied, so that a
    /// template quoting it does not parse its raw bytes again.
    fn set_current_text(&mut self, seq: u64, text: String);
    /// Stores a message row with its raw bytes (byte-exact; `rec.blob` is
    /// set to where they are) and its Message-ID row; adds it to its
    /// ticket's messages, or to the conversations.
    fn put_message(&mut self, rec: &mut MessageRec, raw: &[u8]) -> Result<(), StoreError>;
    /// A ticket's message seqs, in order.
    fn ticket_message_seqs(&self, ticket: TicketId) -> Result<Vec<u64>, StoreError>;
    /// Moves one message (its row, its place among the ticket's messages
    /// and its Message-ID row) from one ticket to another.
    fn move_message(&mut self, seq: u64, from: TicketId, to: TicketId) -> Result<(), StoreError>;

    /// The row of a Message-ID (normalised, without brackets).
    fn message_id_row(&self, id: &str) -> Result<Option<IdRow>, StoreError>;
    /// Records that a message of `ticket` names `id`, unless `id` has a
    /// row already.
    fn add_reference(&mut self, id: &str, ticket: TicketId) -> Result<(), StoreError>;

    /// Adds a timeline entry: its [`TimelineEvent::kind`] and
    /// [`TimelineEvent::detail`].
    fn event(
        &mut self,
        ticket: TicketId,
        at: Millis,
        event: &TimelineEvent<'_>,
    ) -> Result<(), StoreError>;

    fn outbox(&self, id: u64) -> Result<Option<OutboxRec>, StoreError>;
    /// Stores an outbox entry; `was_due` is the `next_attempt_at` it had
    /// when read (`None` for a new one), so that the engine can keep an
    /// index of due entries.
    fn put_outbox(&mut self, rec: &OutboxRec, was_due: Option<Millis>) -> Result<(), StoreError>;
    /// An email was queued: the outbox worker is to be woken after the
    /// commit, and `stats` to count it once (an engine that runs a job
    /// again after a rollback counts it at its commit).
    fn mail_queued(&mut self);

    /// Automatic emails counted for `addr` in the hour before `now`.
    fn auto_sent_last_hour(&self, addr: &str, now: Millis) -> Result<u64, StoreError>;
    /// Counts one automatic email to `addr` at `now`.
    fn count_auto_sent(&mut self, addr: &str, now: Millis) -> Result<(), StoreError>;
}
