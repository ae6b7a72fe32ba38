//! The records of the ticket logic: tickets, messages, timeline entries and
//! outbox entries, as every storage engine keeps them.
//!
//! Records are serialisable (the redb engine stores them as JSON: small,
//! self-describing, easy to migrate by adding `#[serde(default)]` fields).
//! Raw messages are kept byte-exact by the engine, named by their message
//! row.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::clock::Millis;
use crate::ingest::{Mailbox, TicketId};

/// Where one message's raw bytes are in the redb engine's blob file
/// (`store::redb::blobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub at: u64,
    pub len: u64,
    /// CRC-32 of the bytes: a read that does not match is an error, never
    /// somebody else's message.
    pub crc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

/// What a stored message is. Inbound: a customer's `email`, an
/// `agent_email` (from an agent's address), an `automatic` message
/// (auto-reply, list mail: loop protection's verdict), a `bounce`.
/// Outbound: what the outbox sent ([`OutboxKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Email,
    AgentEmail,
    Automatic,
    Bounce,
    AutoReply,
    Notification,
    AgentReply,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Email => "email",
            MessageKind::AgentEmail => "agent_email",
            MessageKind::Automatic => "automatic",
            MessageKind::Bounce => "bounce",
            MessageKind::AutoReply => "auto_reply",
            MessageKind::Notification => "notification",
            MessageKind::AgentReply => "agent_reply",
        }
    }
}

impl From<OutboxKind> for MessageKind {
    fn from(kind: OutboxKind) -> MessageKind {
        match kind {
            OutboxKind::AutoReply => MessageKind::AutoReply,
            OutboxKind::Notification => MessageKind::Notification,
            OutboxKind::AgentReply => MessageKind::AgentReply,
        }
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an outbox email is: an `auto_reply` to the customer (a workflow's
/// `send_email`), a `notification` to an agent, an `agent_reply` relayed
/// to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    AutoReply,
    Notification,
    AgentReply,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::AutoReply => "auto_reply",
            OutboxKind::Notification => "notification",
            OutboxKind::AgentReply => "agent_reply",
        }
    }

    /// The kind in words: `auto reply`.
    pub fn words(self) -> &'static str {
        match self {
            OutboxKind::AutoReply => "auto reply",
            OutboxKind::Notification => "notification",
            OutboxKind::AgentReply => "agent reply",
        }
    }
}

impl std::fmt::Display for OutboxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketRec {
    pub id: TicketId,
    pub pipeline: String,
    pub status: String,
    pub subject: String,
    pub contact: Mailbox,
    pub owner: Option<String>,
    pub channel: String,
    pub source: crate::config::Source,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Lower-cased addresses that wrote on this ticket (the contact first).
    #[serde(default)]
    pub participants: Vec<String>,
    /// Workflows that have run on this ticket (for `reenroll = false`).
    #[serde(default)]
    pub workflows_ran: Vec<String>,
    /// The customer-facing thread's Message-IDs (normalised), oldest first:
    /// the root and the latest [`THREAD_IDS`] - 1, for In-Reply-To (the
    /// last) and References (all) of what we send.
    #[serde(default)]
    pub thread: Vec<String>,
    /// Set when this ticket was merged into another: threading that finds
    /// this ticket lands on that one.
    #[serde(default)]
    pub merged_into: Option<TicketId>,
    /// The latest inbound message from the contact (seq), for templates.
    #[serde(default)]
    pub last_inbound: Option<u64>,
}

/// How many Message-IDs [`TicketRec::thread`] keeps.
pub const THREAD_IDS: usize = 20;

impl TicketRec {
    /// Appends a message to the thread, keeping the root and the newest.
    pub fn push_thread(&mut self, id: &str) {
        if self.thread.last().is_some_and(|last| last == id) {
            return;
        }
        self.thread.push(id.to_string());
        if self.thread.len() > THREAD_IDS {
            self.thread.remove(1);
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRec {
    pub seq: u64,
    /// `None` for a conversation (kept without a ticket).
    pub ticket: Option<TicketId>,
    /// Normalised, without brackets.
    pub message_id: String,
    /// As the message wrote it, when that differs from `<message_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id_written: Option<String>,
    pub direction: Direction,
    pub kind: MessageKind,
    pub from: Option<Mailbox>,
    pub to: Vec<String>,
    pub subject: String,
    /// The Date header, when it had one.
    pub date: Option<Millis>,
    pub received_at: Millis,
    /// Envelope sender ("" for the null sender).
    pub mail_from: String,
    pub rcpt: Vec<String>,
    pub channel: String,
    pub size: u64,
    /// The decoded text, only in rows written by earlier builds: a row
    /// leaves it empty now and the text is derived from the raw bytes when
    /// a view or a template needs it ([`text_of`]), so that a message's
    /// body is stored once, not twice.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Where the raw bytes are in the blob file; `None` in rows written
    /// before it existed (their bytes are in the redb engine's `raw` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
    /// From an agent's address but not proven to be the agent (SPEC §12):
    /// kept on the ticket, never relayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    /// The trusted MTA's verdict (`[security] trusted_authserv_id` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthRec>,
    /// An outbound row's outbox entry (rows of earlier builds: none), so
    /// that a bounce naming its Message-ID finds the email it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<u64>,
}

/// What the operator's MTA said about an inbound message (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRec {
    pub status: crate::ingest::authres::AuthStatus,
    pub summary: String,
}

/// The decoded text of a message: its row's own `stored` text (an old
/// row), or parsed from its raw bytes (none: an empty text).
pub fn text_of(stored: String, raw: Option<&[u8]>) -> String {
    if !stored.is_empty() {
        return stored;
    }
    raw.map(|raw| crate::ingest::parse(raw).text)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutState {
    Queued,
    Sent,
    Failed,
    /// Sent, then returned by a bounce (SPEC §12): see [`OutboxRec::bounce`].
    Bounced,
}

impl OutState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutState::Queued => "queued",
            OutState::Sent => "sent",
            OutState::Failed => "failed",
            OutState::Bounced => "bounced",
        }
    }

    pub fn parse(s: &str) -> Option<OutState> {
        Some(match s {
            "queued" => OutState::Queued,
            "sent" => OutState::Sent,
            "failed" => OutState::Failed,
            "bounced" => OutState::Bounced,
            _ => return None,
        })
    }
}

/// What a bounce said about one of our emails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceNote {
    /// The failed recipients, with their DSN status where the bounce gave
    /// one (`carol@example.com (5.1.1)`).
    pub recipients: Vec<String>,
    /// The first recipient's DSN status (`5.1.1`), if any.
    pub status: Option<String>,
    /// The bounce's own Message-ID (normalised).
    pub message_id: String,
    pub at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRec {
    pub id: u64,
    pub ticket: TicketId,
    /// The outbound message's row (it names its raw bytes).
    pub message_seq: u64,
    /// Normalised, without brackets.
    pub message_id: String,
    pub kind: OutboxKind,
    pub mail_from: String,
    pub rcpt: Vec<String>,
    pub subject: String,
    pub state: OutState,
    pub attempts: u32,
    pub created_at: Millis,
    pub next_attempt_at: Option<Millis>,
    pub sent_at: Option<Millis>,
    pub last_error: Option<String>,
    /// Set when a bounce returned this email (state `bounced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceNote>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRec {
    pub at: Millis,
    pub kind: String,
    pub detail: serde_json::Value,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail (no maps with
    // non-string keys, no custom serialisers).
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
impl MessageRec {
    /// An inbound row with `seq` and `message_id` and nothing else, for
    /// tests of the store.
    pub(crate) fn for_test(seq: u64, message_id: &str) -> MessageRec {
        MessageRec {
            seq,
            ticket: None,
            message_id: message_id.into(),
            message_id_written: None,
            direction: Direction::In,
            kind: MessageKind::Email,
            from: None,
            to: vec![],
            subject: String::new(),
            date: None,
            received_at: 0,
            mail_from: String::new(),
            rcpt: vec![],
            channel: "support".into(),
            size: 0,
            text: String::new(),
            blob: None,
            unverified: false,
            auth: None,
            outbox: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(text: &str) -> MessageRec {
        MessageRec {
            text: text.into(),
            ..MessageRec::for_test(7, "a@example.com")
        }
    }

    const RAW: &[u8] = b"Message-ID: <a@example.com>\r\nSubject: Hi\r\n\r\nFrom the raw bytes.\r\n";

    #[test]
    fn a_new_row_keeps_no_text_and_the_text_comes_from_the_raw_bytes() {
        let json = String::from_utf8(encode(&row(""))).unwrap();
        assert!(!json.contains("\"text\""), "{json}");
        let rec: MessageRec = decode(json.as_bytes()).unwrap();
        assert_eq!(
            text_of(rec.text, Some(RAW)).trim_end(),
            "From the raw bytes."
        );
        assert_eq!(text_of(String::new(), None), "");
    }

    #[test]
    fn an_old_row_keeps_its_own_text() {
        let rec: MessageRec = decode(&encode(&row("Stored with the row."))).unwrap();
        assert_eq!(text_of(rec.text, Some(RAW)), "Stored with the row.");
    }
}
