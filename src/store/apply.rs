//! Gather → decide → apply, for one inbound message, inside the writer's
//! write transaction. Gathering is the [`ThreadView`] over the open tables;
//! the decision is [`crate::ingest::thread::decide`] (pure); applying writes
//! every row the message causes.

use std::sync::Arc;

use redb::{ReadableTable, Table, WriteTransaction};
use serde_json::json;

use super::schema::*;
use super::writer::counter;
use super::StoreError;
use crate::clock::Millis;
use crate::config::{Config, Source};
use crate::ingest::thread::{decide, SubjectTag, ThreadInput};
use crate::ingest::{bracketed, ParsedMail, ThreadMatch, ThreadView, ThreadedBy, TicketId};

/// One message as the SMTP layer (or an import) hands it over.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub config: Arc<Config>,
    pub raw: Vec<u8>,
    pub parsed: ParsedMail,
    /// Envelope sender, "" for the null sender.
    pub mail_from: String,
    pub rcpt: Vec<String>,
    /// The channel of the first recipient that names one.
    pub channel: String,
    /// The ticket id of a plus recipient, if any.
    pub plus: Option<TicketId>,
    pub received_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// On a ticket (new or existing).
    Ticket {
        id: TicketId,
        created: bool,
        duplicate: bool,
        by: ThreadedBy,
    },
    /// Kept without a ticket.
    Kept { duplicate: bool },
}

/// Every table a write needs, opened once per batch, plus the id counters.
pub(super) struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    tickets: Table<'txn, u64, &'static [u8]>,
    messages: Table<'txn, u64, &'static [u8]>,
    raw: Table<'txn, u64, &'static [u8]>,
    message_ids: Table<'txn, &'static str, (u64, u64)>,
    ticket_messages: Table<'txn, (u64, u64), ()>,
    timeline: Table<'txn, (u64, u64), &'static [u8]>,
    conversations: Table<'txn, u64, ()>,
    next_ticket: u64,
    next_message: u64,
    next_event: u64,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let next_ticket = counter(&meta, NEXT_TICKET)?;
        let next_message = counter(&meta, NEXT_MESSAGE)?;
        let next_event = counter(&meta, NEXT_EVENT)?;
        Ok(Tables {
            meta,
            tickets: txn.open_table(TICKETS)?,
            messages: txn.open_table(MESSAGES)?,
            raw: txn.open_table(RAW)?,
            message_ids: txn.open_table(MESSAGE_IDS)?,
            ticket_messages: txn.open_table(TICKET_MESSAGES)?,
            timeline: txn.open_table(TIMELINE)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            next_ticket,
            next_message,
            next_event,
        })
    }

    pub(super) fn save_counters(&mut self) -> Result<(), StoreError> {
        self.meta.insert(NEXT_TICKET, self.next_ticket)?;
        self.meta.insert(NEXT_MESSAGE, self.next_message)?;
        self.meta.insert(NEXT_EVENT, self.next_event)?;
        Ok(())
    }

    fn ticket(&self, id: TicketId) -> Result<Option<TicketRec>, StoreError> {
        match self.tickets.get(id)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn put_ticket(&mut self, t: &TicketRec) -> Result<(), StoreError> {
        self.tickets.insert(t.id, encode(t).as_slice())?;
        Ok(())
    }

    fn event(
        &mut self,
        ticket: TicketId,
        at: Millis,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let seq = self.next_event;
        self.next_event += 1;
        let rec = EventRec {
            at,
            kind: kind.to_string(),
            detail,
        };
        self.timeline
            .insert((ticket, seq), encode(&rec).as_slice())?;
        Ok(())
    }
}

impl ThreadView for Tables<'_> {
    type Error = StoreError;

    fn ticket_for_message_id(&self, id: &str) -> Result<Option<TicketId>, StoreError> {
        Ok(self
            .message_ids
            .get(id)?
            .map(|v| v.value().0)
            .filter(|t| *t != 0))
    }

    fn ticket_exists(&self, ticket: TicketId) -> Result<bool, StoreError> {
        Ok(self.tickets.get(ticket)?.is_some())
    }

    fn is_participant(&self, ticket: TicketId, email: &str) -> Result<bool, StoreError> {
        Ok(self
            .ticket(ticket)?
            .is_some_and(|t| t.participants.iter().any(|p| p == email)))
    }
}

pub(super) fn apply_inbound(
    tables: &mut Tables<'_>,
    inb: &Inbound,
    now: Millis,
) -> Result<Outcome, StoreError> {
    let p = &inb.parsed;
    // A Message-ID already stored is a duplicate: accept, store nothing.
    if let Some(existing) = tables.message_ids.get(p.message_id.as_str())? {
        let (ticket, seq) = existing.value();
        if seq != 0 {
            return Ok(match ticket {
                0 => Outcome::Kept { duplicate: true },
                id => Outcome::Ticket {
                    id,
                    created: false,
                    duplicate: true,
                    by: ThreadedBy::New,
                },
            });
        }
    }

    let config = &inb.config;
    let sender = p.from.as_ref().map(|m| m.email.as_str());
    let sender_is_agent = sender.is_some_and(|s| config.agent_by_email(s).is_some());
    let input = ThreadInput {
        message_id: &p.message_id,
        in_reply_to: &p.in_reply_to,
        references: &p.references,
        plus: inb.plus,
        subject: &p.subject,
        sender,
        sender_is_agent,
    };
    let tag = SubjectTag::new(&config.outbound.subject_tag);
    let matched = decide(&input, &tag, &*tables)?;

    let channel = config.channel(&inb.channel);
    let ticket_id = match matched.ticket {
        Some(id) => Some(id),
        None => match channel {
            Some(ch) if opens_tickets(config, ch) => Some(create_ticket(tables, inb, ch, now)?),
            _ => None,
        },
    };

    let seq = tables.next_message;
    tables.next_message += 1;
    let rec = MessageRec {
        seq,
        ticket: ticket_id,
        message_id: p.message_id.clone(),
        direction: Direction::In,
        kind: "email".into(),
        from: p.from.clone(),
        to: p.to.clone(),
        subject: p.subject.clone(),
        date: p.date,
        received_at: inb.received_at,
        mail_from: inb.mail_from.clone(),
        rcpt: inb.rcpt.clone(),
        channel: inb.channel.clone(),
        size: inb.raw.len() as u64,
        text: p.text.clone(),
    };
    tables.messages.insert(seq, encode(&rec).as_slice())?;
    tables.raw.insert(seq, inb.raw.as_slice())?;
    tables
        .message_ids
        .insert(p.message_id.as_str(), (ticket_id.unwrap_or(0), seq))?;

    let Some(ticket_id) = ticket_id else {
        tables.conversations.insert(seq, ())?;
        return Ok(Outcome::Kept { duplicate: false });
    };

    // Ids this message names join its ticket, so a parent that arrives
    // after its reply still finds the thread.
    for id in p.in_reply_to.iter().chain(&p.references) {
        if tables.message_ids.get(id.as_str())?.is_none() {
            tables.message_ids.insert(id.as_str(), (ticket_id, 0))?;
        }
    }
    tables.ticket_messages.insert((ticket_id, seq), ())?;

    let created = matched.ticket.is_none();
    if let Some(mut t) = tables.ticket(ticket_id)? {
        t.updated_at = now;
        if let Some(s) = sender {
            if !t.participants.iter().any(|x| x == s) {
                t.participants.push(s.to_string());
            }
        }
        tables.put_ticket(&t)?;
    }
    tables.event(
        ticket_id,
        now,
        "message_in",
        message_in_detail(p, &matched, inb),
    )?;
    Ok(Outcome::Ticket {
        id: ticket_id,
        created,
        duplicate: false,
        by: matched.by,
    })
}

/// Whether mail that threads nowhere opens a ticket on this channel: email
/// channels with automation on; chat/messenger only when a workflow enrolls
/// that source (SPEC §3.2).
fn opens_tickets(config: &Config, ch: &crate::config::Channel) -> bool {
    if !ch.automation {
        return false;
    }
    match ch.source {
        Source::Email => true,
        source => config
            .workflows
            .iter()
            .any(|w| w.pipeline == ch.pipeline && w.enroll.source == Some(source)),
    }
}

fn create_ticket(
    tables: &mut Tables<'_>,
    inb: &Inbound,
    ch: &crate::config::Channel,
    now: Millis,
) -> Result<TicketId, StoreError> {
    let Some(pipeline) = inb.config.pipeline(&ch.pipeline) else {
        // Config validation guarantees the pipeline; be explicit anyway.
        return Err(StoreError::Corrupt(format!(
            "channel {} names unknown pipeline {}",
            ch.id, ch.pipeline
        )));
    };
    let id = tables.next_ticket;
    tables.next_ticket += 1;
    let p = &inb.parsed;
    let contact = p.from.clone().unwrap_or_else(|| crate::ingest::Mailbox {
        email: inb.mail_from.to_ascii_lowercase(),
        name: None,
    });
    let participants = if contact.email.is_empty() {
        Vec::new()
    } else {
        vec![contact.email.clone()]
    };
    let ticket = TicketRec {
        id,
        pipeline: pipeline.id.clone(),
        status: pipeline.initial_status.clone(),
        subject: if p.subject.is_empty() {
            "(no subject)".into()
        } else {
            p.subject.clone()
        },
        contact,
        owner: None,
        channel: ch.id.clone(),
        source: ch.source,
        created_at: now,
        updated_at: now,
        participants,
    };
    tables.put_ticket(&ticket)?;
    tables.event(
        id,
        now,
        "created",
        json!({
            "summary": format!("ticket created in {} at status {}", pipeline.name, ticket.status),
            "pipeline": pipeline.id,
            "status": ticket.status,
            "channel": ch.id,
            "source": ch.source.as_str(),
            "message_id": bracketed(&p.message_id),
        }),
    )?;
    Ok(id)
}

fn message_in_detail(p: &ParsedMail, m: &ThreadMatch, inb: &Inbound) -> serde_json::Value {
    let how = match m.by {
        ThreadedBy::MessageId => format!(
            "its Message-ID {} was named by the thread",
            m.via.as_deref().map(bracketed).unwrap_or_default()
        ),
        ThreadedBy::InReplyTo => format!(
            "threaded by In-Reply-To {}",
            m.via.as_deref().map(bracketed).unwrap_or_default()
        ),
        ThreadedBy::References => format!(
            "threaded by References {}",
            m.via.as_deref().map(bracketed).unwrap_or_default()
        ),
        ThreadedBy::PlusAddress => format!(
            "threaded by plus address +{}",
            m.via.as_deref().unwrap_or_default()
        ),
        ThreadedBy::SubjectTag => format!(
            "threaded by subject tag {}",
            m.via.as_deref().unwrap_or_default()
        ),
        ThreadedBy::New => "new thread".to_string(),
    };
    json!({
        "summary": format!("message from {}: {how}", p.from.as_ref().map_or("(unknown sender)", |f| f.email.as_str())),
        "message_id": bracketed(&p.message_id),
        "from": p.from.as_ref().map(|f| f.email.clone()),
        "threaded_by": m.by.as_str(),
        "matched": m.via,
        "channel": inb.channel,
        "size": inb.raw.len(),
    })
}
