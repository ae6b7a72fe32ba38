//! Every table of the redb database, in one place. The records in them
//! are the desk's ([`crate::desk::records`]), stored as JSON. Raw messages
//! are stored byte-exact outside the database, in the blob file
//! ([`super::blobs`]), named by their message row; rows of earlier builds
//! keep theirs in [`RAW`].

use redb::TableDefinition;

pub use crate::desk::records::*;

/// Counters: `next_ticket`, `next_message`, `next_event`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// ticket id → [`TicketRec`].
pub const TICKETS: TableDefinition<u64, &[u8]> = TableDefinition::new("tickets");
/// message seq → [`MessageRec`].
pub const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// message seq → the raw bytes as received (or as sent), for rows written
/// before the blob file ([`MessageRec::blob`]) existed; no longer written.
pub const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
/// Normalised Message-ID → (ticket id or 0, message seq or 0). A message seq
/// of 0 means the id was only *named* (In-Reply-To/References of a ticket's
/// message) and not stored yet; a ticket of 0 means a conversation. One row
/// per Message-ID is what makes duplicates impossible.
pub const MESSAGE_IDS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("message_ids");
/// (ticket id, message seq) → (): a ticket's messages in order.
pub const TICKET_MESSAGES: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("ticket_messages");
/// (ticket id, event seq) → [`EventRec`]: a ticket's timeline in order.
pub const TIMELINE: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("timeline");
/// message seq → (): messages kept without a ticket.
pub const CONVERSATIONS: TableDefinition<u64, ()> = TableDefinition::new("conversations");
/// outbox id → [`OutboxRec`]: every email postdesk sends, whatever its state.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// (due at, outbox id) → (): the queued emails, soonest first. A row exists
/// exactly while the email is `queued`.
pub const OUTBOX_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("outbox_due");
/// address → automatic emails sent to it in the last hour, per minute
/// ([`super::window`]), for the per-contact hourly limit.
pub const AUTO_SENT: TableDefinition<&str, &[u8]> = TableDefinition::new("auto_sent_minutes");
/// The first version's per-email rows (`(address, sent at) → ()`), dropped
/// at open: the limit restarts its count once on upgrade.
pub const AUTO_SENT_V0: TableDefinition<(&str, u64), ()> = TableDefinition::new("auto_sent");

/// `postdesk store copy` into this store: [`COPY_PROGRESS`] → the copy's
/// progress as JSON ([`crate::store::copy`]). Absent in a store that was
/// never the target of a copy; a copy that is not done makes the store
/// refuse to be served.
pub const COPY: TableDefinition<&str, &[u8]> = TableDefinition::new("copy");
pub const COPY_PROGRESS: &str = "progress";

/// name → secret bytes, drawn once when the store is created (or first
/// opened by a build that needs it) and never changed — except by
/// `postdesk store copy`, which gives a store that holds no data yet the
/// source's: [`REPLY_KEY_SECRET`].
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// The 32-byte secret of the reply addresses' keys
/// ([`crate::ingest::trust::ReplyKeys`]).
pub const REPLY_KEY_SECRET: &str = "reply_key";

pub const NEXT_TICKET: &str = "next_ticket";
pub const NEXT_MESSAGE: &str = "next_message";
pub const NEXT_EVENT: &str = "next_event";
pub const NEXT_OUTBOX: &str = "next_outbox";
/// Random, drawn when the store is created: see
/// [`crate::mail::compose::message_id`].
pub const MESSAGE_ID_SALT: &str = "message_id_salt";
/// The last journal record applied (see [`super::journal`]).
pub const JOURNAL_SEQ: &str = "journal_seq";
/// The committed length of the blob file: where the next raw bytes go.
pub const BLOB_LEN: &str = "blob_len";
