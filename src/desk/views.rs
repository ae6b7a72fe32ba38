//! The views of the ticket logic's records that the admin socket (and
//! `ctl`) show and the outbox worker sends: one set of types for every
//! engine, built from records here, so that what a view shows is decided
//! once.

use serde::Serialize;

use super::records::*;
use crate::clock::rfc3339;
use crate::ingest::{bracketed, Mailbox, TicketId};

#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    pub id: TicketId,
    pub pipeline: String,
    pub status: String,
    pub subject: String,
    pub contact: Mailbox,
    pub owner: Option<String>,
    pub channel: String,
    pub source: crate::config::Source,
    pub created_at: String,
    pub updated_at: String,
    /// The contact first, then every customer who wrote on the ticket or
    /// was in the To/Cc of its inbound mail (SPEC §12).
    pub participants: Vec<Mailbox>,
}

impl From<&TicketRec> for TicketView {
    fn from(t: &TicketRec) -> Self {
        TicketView {
            id: t.id,
            pipeline: t.pipeline.clone(),
            status: t.status.clone(),
            subject: t.subject.clone(),
            contact: t.contact.clone(),
            owner: t.owner.clone(),
            channel: t.channel.clone(),
            source: t.source,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            participants: t
                .participants
                .iter()
                .map(|email| Mailbox {
                    email: email.clone(),
                    name: (email == &t.contact.email)
                        .then(|| t.contact.name.clone())
                        .flatten(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub message_id: String,
    pub direction: Direction,
    pub kind: MessageKind,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub subject: String,
    pub date: Option<String>,
    pub received_at: String,
    pub size: u64,
    pub text: String,
    /// `text` without the quoted history and the signature (SPEC §12).
    pub new_text: String,
    /// Mail from an agent's address: whether it proved the agent (SPEC
    /// §12); absent for every other message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// The trusted MTA's verdict: `{status: pass|fail|none, summary}`
    /// (only with `[security] trusted_authserv_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthRec>,
}

impl MessageView {
    /// The view of a row and its raw bytes (the text is derived from them).
    pub fn new(m: MessageRec, raw: Option<&[u8]>) -> Self {
        let text = text_of(m.text, raw);
        let verified = (m.direction == Direction::In && m.kind == MessageKind::AgentEmail)
            .then_some(!m.unverified);
        MessageView {
            new_text: crate::ingest::quote::new_text(&text),
            verified,
            auth: m.auth.clone(),
            message_id: m
                .message_id_written
                .unwrap_or_else(|| bracketed(&m.message_id)),
            direction: m.direction,
            kind: m.kind,
            from: m.from.as_ref().map(|f| f.email.clone()),
            from_name: m.from.and_then(|f| f.name),
            to: m.to,
            subject: m.subject,
            date: m.date.map(rfc3339),
            received_at: rfc3339(m.received_at),
            size: m.size,
            text,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub ticket: TicketView,
    pub messages: Vec<MessageView>,
    pub timeline: Vec<EventView>,
}

#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<String>,
    pub pipeline: Option<String>,
    pub limit: usize,
}

/// A stored message with its ticket and its raw bytes exactly as received
/// or sent.
pub struct StoredMessage {
    pub ticket: Option<TicketId>,
    pub view: MessageView,
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    pub id: u64,
    pub ticket: TicketId,
    pub message_id: String,
    pub kind: OutboxKind,
    pub to: Vec<String>,
    pub subject: String,
    pub state: OutState,
    pub attempts: u32,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
    /// A bounce's word on this email: failed recipients and status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce: Option<serde_json::Value>,
}

impl From<OutboxRec> for OutboxView {
    fn from(r: OutboxRec) -> Self {
        OutboxView {
            id: r.id,
            ticket: r.ticket,
            message_id: bracketed(&r.message_id),
            kind: r.kind,
            to: r.rcpt,
            subject: r.subject,
            state: r.state,
            attempts: r.attempts,
            created_at: rfc3339(r.created_at),
            next_attempt_at: r.next_attempt_at.map(rfc3339),
            sent_at: r.sent_at.map(rfc3339),
            last_error: r.last_error,
            bounce: r.bounce.map(|b| {
                serde_json::json!({
                    "recipients": b.recipients,
                    "status": b.status,
                    "message_id": bracketed(&b.message_id),
                    "at": rfc3339(b.at),
                })
            }),
        }
    }
}

/// One email due for delivery, with its raw bytes.
#[derive(Debug, Clone)]
pub struct DueMail {
    pub id: u64,
    /// The fencing token of this node's claim on it (engines with several
    /// nodes; 0 otherwise): handed back with the delivery's result.
    pub lease: u64,
    pub ticket: TicketId,
    pub message_id: String,
    pub kind: OutboxKind,
    pub mail_from: String,
    pub rcpt: Vec<String>,
    /// The email's bytes, or why they cannot be read (a damaged or missing
    /// copy: the email cannot be sent, ever).
    pub raw: Result<Vec<u8>, String>,
}

impl TicketDetail {
    /// A ticket with its messages (each with its raw bytes, if readable)
    /// and its timeline, in order.
    pub fn new(
        t: &TicketRec,
        messages: Vec<(MessageRec, Option<Vec<u8>>)>,
        events: Vec<EventRec>,
    ) -> TicketDetail {
        // `message_in` entries name their message as `<normalised id>`.
        let mut new_texts = std::collections::HashMap::new();
        let messages: Vec<MessageView> = messages
            .into_iter()
            .map(|(rec, raw)| {
                let named = bracketed(&rec.message_id);
                let view = MessageView::new(rec, raw.as_deref());
                if view.direction == Direction::In {
                    new_texts.insert(named, view.new_text.clone());
                }
                view
            })
            .collect();
        let timeline = events
            .into_iter()
            .map(|e| {
                let mut detail = e.detail;
                // The timeline shows what a message newly says (SPEC §12),
                // derived here rather than stored twice.
                if e.kind == "message_in" {
                    let text = detail["message_id"]
                        .as_str()
                        .and_then(|named| new_texts.get(named));
                    if let (Some(text), Some(obj)) = (text, detail.as_object_mut()) {
                        obj.entry("new_text")
                            .or_insert_with(|| serde_json::Value::String(text.clone()));
                    }
                }
                EventView {
                    at: rfc3339(e.at),
                    kind: e.kind,
                    detail,
                }
            })
            .collect();
        TicketDetail {
            ticket: TicketView::from(t),
            messages,
            timeline,
        }
    }
}

/// A node serving the store (engines with several nodes), as `health`
/// lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub hostname: String,
    pub version: String,
    pub started_at: String,
    pub last_seen: String,
    /// The node's config fingerprint (all but its own keys, and the
    /// templates): nodes that differ run different automation.
    pub config_hash: String,
}
