//! Gather → decide → apply, for one inbound message, inside an engine's
//! write transaction ([`Txn`]). Gathering is the [`ThreadView`] over it;
//! the decision is [`crate::ingest::thread::decide`] (pure); applying writes
//! every row the message causes.

use std::sync::Arc;

use super::effects::{apply_effects, not_relayed, relay_agent_email, Cause};
use super::records::*;
use super::timeline::{MessageIn, TimelineEvent};
use super::{IdRow, StoreError, Txn};
use crate::automation::{self, route_reply, Event, ReplyRoute};
use crate::clock::Millis;
use crate::config::{Config, Source};
use crate::ingest::authres::{self, AuthStatus};
use crate::ingest::bounce::Bounce;
use crate::ingest::thread::{decide, SubjectTag, ThreadInput};
use crate::ingest::trust::{AuthProof, Credentials};
use crate::ingest::{classify, AutoReason, ParsedMail, ThreadView, ThreadedBy, TicketId};

/// How a message came: the SMTP envelope as the session (or an import)
/// saw it, and when.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Envelope sender, "" for the null sender.
    pub mail_from: String,
    pub rcpt: Vec<String>,
    /// The channel of the first recipient that names one.
    pub channel: String,
    /// The ticket id of a plus recipient, if any.
    pub plus: Option<TicketId>,
    pub received_at: Millis,
    /// Loaded by `postdesk import`: threaded and stored like any message,
    /// but no automation runs and nothing is sent.
    pub imported: bool,
}

/// One message as the SMTP layer (or an import) hands it over.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub config: Arc<Config>,
    pub raw: Vec<u8>,
    pub parsed: ParsedMail,
    pub envelope: Envelope,
    /// The key of the plus recipient (`+<id>.<key>`), as written; derived
    /// from the envelope's `rcpt` (so the journal need not carry it).
    pub plus_key: Option<String>,
    /// A delivery failure report about mail we sent (see
    /// [`crate::ingest::bounce`]), detected before the store is involved.
    pub bounce: Option<Bounce>,
}

impl Inbound {
    /// Parses `raw` and checks it for a bounce: the one way an inbound
    /// message is built (SMTP, import, and journal recovery alike).
    pub fn new(config: Arc<Config>, raw: Vec<u8>, envelope: Envelope) -> Inbound {
        let parsed = crate::ingest::parse(&raw);
        Inbound::parsed(config, raw, parsed, envelope)
    }

    /// [`Inbound::new`] for bytes already parsed.
    fn parsed(
        config: Arc<Config>,
        raw: Vec<u8>,
        parsed: ParsedMail,
        envelope: Envelope,
    ) -> Inbound {
        // Off the commit path, and only for mail that may be one.
        let bounce = if crate::ingest::maybe_bounce(&parsed, &envelope.mail_from) {
            crate::ingest::bounce::detect(&raw, &envelope.mail_from)
        } else {
            None
        };
        let plus_key = envelope.plus.and_then(|ticket| {
            envelope
                .rcpt
                .iter()
                .filter_map(|r| config.recipient(r))
                .find(|r| r.plus == Some(ticket))
                .and_then(|r| r.key)
        });
        Inbound {
            config,
            raw,
            parsed,
            envelope,
            plus_key,
            bounce,
        }
    }

    /// A message loaded by `postdesk import` (or the admin `import`
    /// command): its channel is the first To address that names one (plus
    /// addresses included), else `default_channel`; the envelope sender is
    /// the From address; it was received at its Date, else `now`.
    pub fn imported(
        config: &Arc<Config>,
        raw: Vec<u8>,
        default_channel: &str,
        now: Millis,
    ) -> Inbound {
        let parsed = crate::ingest::parse(&raw);
        let mut channel = default_channel.to_string();
        let mut plus = None;
        let mut rcpt = Vec::new();
        for addr in &parsed.to {
            if let Some(r) = config.recipient(addr) {
                channel = r.channel.id.clone();
                plus = r.plus;
                rcpt.push(addr.clone());
                break;
            }
        }
        if rcpt.is_empty() {
            if let Some(addr) = config.channel(&channel).and_then(|c| c.addresses.first()) {
                rcpt.push(addr.clone());
            }
        }
        let mail_from = parsed
            .from
            .as_ref()
            .map(|f| f.email.clone())
            .unwrap_or_default();
        let received_at = parsed.date.unwrap_or(now);
        Inbound::parsed(
            config.clone(),
            raw,
            parsed,
            Envelope {
                mail_from,
                rcpt,
                channel,
                plus,
                received_at,
                imported: true,
            },
        )
    }

    /// The stored row of this message.
    fn record(&self, seq: u64, ticket: Option<TicketId>, kind: MessageKind) -> MessageRec {
        let p = &self.parsed;
        MessageRec {
            seq,
            ticket,
            message_id: p.message_id.clone(),
            message_id_written: p.message_id_written.clone(),
            direction: Direction::In,
            kind,
            from: p.from.clone(),
            to: p.to.clone(),
            subject: p.subject.clone(),
            date: p.date,
            received_at: self.envelope.received_at,
            mail_from: self.envelope.mail_from.clone(),
            rcpt: self.envelope.rcpt.clone(),
            channel: self.envelope.channel.clone(),
            size: self.raw.len() as u64,
            text: String::new(),
            blob: None,
            unverified: false,
            auth: None,
            outbox: None,
        }
    }
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

/// The store as threading sees it under `require_auth_to_join` for mail
/// whose authentication failed: only the Message-IDs of emails we sent.
struct SentOnly<'a, T>(&'a T);

impl<T: Txn> ThreadView for SentOnly<'_, T> {
    type Error = StoreError;

    fn ticket_for_message_id(&self, id: &str) -> Result<Option<TicketId>, StoreError> {
        let Some(IdRow {
            ticket: Some(ticket),
            seq: Some(seq),
        }) = self.0.message_id_row(id)?
        else {
            return Ok(None);
        };
        let sent = self
            .0
            .message(seq)?
            .is_some_and(|m| m.direction == Direction::Out);
        Ok(sent.then_some(ticket))
    }

    fn ticket_exists(&self, ticket: TicketId) -> Result<bool, StoreError> {
        self.0.ticket_exists(ticket)
    }

    fn is_participant(&self, _: TicketId, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
}

pub fn apply_inbound(
    tables: &mut impl Txn,
    inb: &Inbound,
    now: Millis,
) -> Result<Outcome, StoreError> {
    let p = &inb.parsed;
    // A Message-ID already stored is a duplicate: accept, store nothing.
    if let Some(IdRow {
        ticket,
        seq: Some(_),
    }) = tables.message_id_row(&p.message_id)?
    {
        return Ok(match ticket {
            None => Outcome::Kept { duplicate: true },
            Some(id) => Outcome::Ticket {
                id,
                created: false,
                duplicate: true,
                by: ThreadedBy::New,
            },
        });
    }

    if let Some(bounce) = &inb.bounce {
        return apply_bounce(tables, inb, bounce, now);
    }
    let config = &inb.config;
    let auto = classify(p, &inb.envelope.mail_from, |a| config.is_channel_address(a));
    let sender = p.from.as_ref().map(|m| m.email.as_str());
    let agent = sender.and_then(|s| config.agent_by_email(s));
    let auth = config.security.trusted_authserv_id.as_deref().map(|id| {
        let from_domain = sender.and_then(|s| s.rsplit_once('@')).map(|(_, d)| d);
        authres::verdict(&p.auth_results(), id, from_domain)
    });
    let creds = Credentials::assess(
        tables.keys(),
        inb.envelope.plus,
        inb.plus_key.as_deref(),
        config.users.iter().map(|u| u.id.as_str()),
        auth.as_ref().and_then(|a| a.proof.clone()).map(AuthProof),
    );
    // `require_auth_to_join`: failed mail joins only by a signed address or
    // a Message-ID we sent (SPEC §12).
    let restricted = config.security.require_auth_to_join
        && auth.as_ref().is_some_and(|a| a.status == AuthStatus::Fail);
    let plus = creds
        .plus_for_threading()
        .filter(|(_, signed)| *signed || !restricted);
    let input = ThreadInput {
        message_id: &p.message_id,
        in_reply_to: &p.in_reply_to,
        references: &p.references,
        plus,
        subject: &p.subject,
        sender,
        sender_is_agent: agent.is_some(),
    };
    let matched = if restricted {
        // No subject tag, and only the ids of emails we sent.
        let input = ThreadInput {
            subject: "",
            ..input
        };
        decide(&input, &SubjectTag::new(""), &SentOnly(&*tables))?
    } else {
        decide(&input, &config.outbound.subject_tag, &*tables)?
    };

    // Where the message goes: the matched ticket, a new ticket linked to a
    // closed one (reply_to_closed = new_ticket), a new ticket, or nowhere.
    let channel = config.channel(&inb.envelope.channel);
    let mut linked_from = None;
    let mut target = match matched.ticket {
        Some(id) => follow_merges(tables, id)?,
        None => None,
    };
    if let Some(t) = &target {
        let facts = facts(t);
        if route_reply(config, &facts, agent.is_some(), auto.is_some())
            == ReplyRoute::NewLinkedTicket
        {
            linked_from = Some(t.id);
            target = None;
        }
    }
    let created = target.is_none();
    let mut ticket = match target {
        Some(t) => Some(t),
        None => match channel {
            Some(ch) if linked_from.is_some() || opens_tickets(config, ch) => {
                Some(create_ticket(tables, inb, ch, now)?)
            }
            _ => None,
        },
    };

    let seq = tables.next_message_seq()?;
    let kind = if agent.is_some() {
        MessageKind::AgentEmail
    } else if auto.is_some() {
        MessageKind::Automatic
    } else {
        MessageKind::Email
    };
    // An agent's address on an existing ticket acts as the agent only when
    // proven (SPEC §12); an out-of-office of theirs acts as nothing anyway.
    let unproven = match (agent, &ticket, matched.ticket) {
        (Some(a), Some(_), Some(threaded)) if !created && auto.is_none() => {
            creds.agent_proof(&a.id, threaded).err()
        }
        _ => None,
    };
    let mut rec = inb.record(seq, ticket.as_ref().map(|t| t.id), kind);
    rec.unverified = unproven.is_some();
    rec.auth = auth.as_ref().map(|a| AuthRec {
        status: a.status,
        summary: a.summary.clone(),
    });
    tables.put_message(&mut rec, &inb.raw)?;

    let Some(ticket) = ticket.as_mut() else {
        return Ok(Outcome::Kept { duplicate: false });
    };
    let id = ticket.id;

    // Ids this message names join its ticket, so a parent that arrives
    // after its reply still finds the thread.
    for named in p.in_reply_to.iter().chain(&p.references) {
        tables.add_reference(named, id)?;
    }
    ticket.updated_at = now;
    // The sender and the customers in To/Cc become participants (SPEC
    // §12) — not agents, not our own addresses; nobody from an automatic
    // message (a list's members) or an unverified one (a forger would add
    // themselves to the agents' replies).
    if auto.is_none() && !rec.unverified {
        let named = p.to.iter().chain(&p.cc).map(String::as_str);
        for who in sender.filter(|_| agent.is_none()).into_iter().chain(named) {
            let ours = config.agent_by_email(who).is_some() || config.is_channel_address(who);
            let full = ticket.participants.len() >= MAX_PARTICIPANTS;
            if !ours && !full && !ticket.participants.iter().any(|x| x == who) {
                ticket.participants.push(who.to_string());
            }
        }
    }
    // The customer's view of the thread: an agent's email is relayed under
    // a new Message-ID, which joins the thread instead.
    if auto.is_none() && agent.is_none() {
        ticket.push_thread(&p.message_id);
    }
    if agent.is_none() {
        ticket.last_inbound = Some(seq);
    }
    tables.event(
        id,
        now,
        &TimelineEvent::MessageIn(MessageIn {
            message_id: &p.message_id,
            from: p.from.as_ref().map(|f| f.email.as_str()),
            kind,
            threaded_by: matched.by,
            matched: matched.via.as_deref(),
            automatic: auto.as_ref().map(AutoReason::code),
            unverified: rec.unverified,
            channel: &inb.envelope.channel,
            size: inb.raw.len(),
            imported: inb.envelope.imported,
        }),
    )?;
    if let Some(old) = linked_from {
        link(tables, old, id, now)?;
    }
    if let (Some(why), Some(agent)) = (unproven, agent) {
        // Kept on the ticket, nothing relayed, no status change; the real
        // agent is told how to reply so that it counts.
        if !inb.envelope.imported {
            not_relayed(tables, config, ticket, agent, &rec, &why.reason, now)?;
        }
    }
    if inb.envelope.imported || rec.unverified {
        tables.put_ticket(ticket)?;
        return Ok(Outcome::Ticket {
            id,
            created,
            duplicate: false,
            by: matched.by,
        });
    }
    // Templates run below may quote this message (`message.text`).
    tables.set_current_text(seq, p.text.clone());
    let cause = Cause {
        auto: auto.as_ref(),
    };
    let event = if created {
        Event::Created
    } else if let Some(agent) = agent {
        if auto.is_none() {
            relay_agent_email(tables, config, ticket, agent, &rec, &p.text, now)?;
            Event::AgentEmailed
        } else {
            // An agent's out-of-office is never relayed to the customer.
            Event::CustomerReplied { automatic: true }
        }
    } else {
        Event::CustomerReplied {
            automatic: auto.is_some(),
        }
    };
    let effects = automation::decide(config, &facts(ticket), &event);
    apply_effects(tables, config, ticket, effects, &cause, now)?;
    tables.put_ticket(ticket)?;
    Ok(Outcome::Ticket {
        id,
        created,
        duplicate: false,
        by: matched.by,
    })
}

/// Participants a ticket keeps at most: a message with a thousand Cc
/// addresses must not grow every later reply's Cc (or the ticket row).
const MAX_PARTICIPANTS: usize = 50;

/// The ticket `id`, or the one it was merged into (transitively).
pub(super) fn follow_merges(
    tables: &impl Txn,
    id: TicketId,
) -> Result<Option<TicketRec>, StoreError> {
    let mut current = tables.ticket(id)?;
    // Merges cannot form cycles (a merged ticket cannot be a merge target),
    // but bound the walk anyway.
    for _ in 0..16 {
        match current.as_ref().and_then(|t| t.merged_into) {
            Some(next) => current = tables.ticket(next)?,
            None => break,
        }
    }
    Ok(current)
}

/// A bounce joins the ticket whose email it returns (by the returned
/// Message-ID, else our `X-Postdesk-Ticket` marker) as a `bounce` event. It
/// is never a customer reply: no status change, no automation, no answer.
/// A bounce of nothing we know (backscatter) is kept without a ticket.
fn apply_bounce(
    tables: &mut impl Txn,
    inb: &Inbound,
    b: &Bounce,
    now: Millis,
) -> Result<Outcome, StoreError> {
    let p = &inb.parsed;
    let mut found = None;
    for id in &b.original_message_ids {
        if let Some(t) = tables.ticket_for_message_id(id)? {
            found = Some((t, ThreadedBy::InReplyTo, Some(id.clone())));
            break;
        }
    }
    if found.is_none() {
        if let Some(t) = b.original_ticket.filter(|t| t.0 > 0) {
            if tables.ticket_exists(t)? {
                found = Some((t, ThreadedBy::PlusAddress, None));
            }
        }
    }
    let ticket = match &found {
        Some((id, _, _)) => follow_merges(tables, *id)?,
        None => None,
    };
    let seq = tables.next_message_seq()?;
    let mut rec = inb.record(seq, ticket.as_ref().map(|t| t.id), MessageKind::Bounce);
    tables.put_message(&mut rec, &inb.raw)?;
    crate::metrics::inc(&crate::metrics::METRICS.bounces);
    let Some(mut ticket) = ticket else {
        return Ok(Outcome::Kept { duplicate: false });
    };
    let who = failed_recipients(b).join(", ");
    let original = found.as_ref().and_then(|(_, _, id)| id.as_deref());
    let returned = match found.as_ref().and_then(|(_, _, id)| id.as_deref()) {
        Some(id) => mark_bounced(tables, id, b, &p.message_id, now)?,
        None => None,
    };
    tables.event(
        ticket.id,
        now,
        &TimelineEvent::Bounce {
            action: &b.action,
            who: &who,
            recipients: &b.recipients,
            original,
            outbox: returned,
            message_id: &p.message_id,
            standard: b.standard,
        },
    )?;
    ticket.updated_at = now;
    tables.put_ticket(&ticket)?;
    let by = found.map_or(ThreadedBy::New, |(_, by, _)| by);
    Ok(Outcome::Ticket {
        id: ticket.id,
        created: false,
        duplicate: false,
        by,
    })
}

/// Marks the outbox entry of our email `message_id` as `bounced` with what
/// the bounce says; its id, if there is one (a delayed-delivery notice is
/// recorded on the timeline only: the email may still arrive).
fn mark_bounced(
    tables: &mut impl Txn,
    message_id: &str,
    b: &Bounce,
    bounce_id: &str,
    now: Millis,
) -> Result<Option<u64>, StoreError> {
    if b.action != "failed" {
        return Ok(None);
    }
    let Some(IdRow { seq: Some(seq), .. }) = tables.message_id_row(message_id)? else {
        return Ok(None);
    };
    let Some(out_id) = tables.message(seq)?.and_then(|m| m.outbox) else {
        return Ok(None);
    };
    let Some(mut rec) = tables.outbox(out_id)? else {
        return Ok(None);
    };
    let was_due = rec.next_attempt_at;
    if rec.state == OutState::Queued {
        // Sent before a crash and queued again: it will not arrive.
        rec.next_attempt_at = None;
    }
    rec.state = OutState::Bounced;
    rec.bounce = Some(BounceNote {
        recipients: failed_recipients(b),
        status: b.recipients.iter().find_map(|r| r.status.clone()),
        message_id: bounce_id.to_string(),
        at: now,
    });
    tables.put_outbox(&rec, was_due)?;
    Ok(Some(out_id))
}

/// A bounce's recipients as people read them: `addr (5.1.1)`.
fn failed_recipients(b: &Bounce) -> Vec<String> {
    b.recipients
        .iter()
        .map(|r| match &r.status {
            Some(s) => format!("{} ({s})", r.address),
            None => r.address.clone(),
        })
        .collect()
}

pub(super) fn facts(t: &TicketRec) -> automation::TicketFacts<'_> {
    automation::TicketFacts {
        pipeline: &t.pipeline,
        status: &t.status,
        source: t.source,
        owner: t.owner.as_deref(),
        workflows_ran: &t.workflows_ran,
    }
}

fn link(
    tables: &mut impl Txn,
    old: TicketId,
    new: TicketId,
    now: Millis,
) -> Result<(), StoreError> {
    tables.event(old, now, &TimelineEvent::ContinuedIn { new })?;
    tables.event(new, now, &TimelineEvent::Continues { old })
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
    tables: &mut impl Txn,
    inb: &Inbound,
    ch: &crate::config::Channel,
    now: Millis,
) -> Result<TicketRec, StoreError> {
    let Some(pipeline) = inb.config.pipeline(&ch.pipeline) else {
        // Config validation guarantees the pipeline; be explicit anyway.
        return Err(StoreError::Corrupt(format!(
            "channel {} names unknown pipeline {}",
            ch.id, ch.pipeline
        )));
    };
    let id = tables.next_ticket_id()?;
    let p = &inb.parsed;
    let contact = p.from.clone().unwrap_or_else(|| crate::ingest::Mailbox {
        email: inb.envelope.mail_from.to_ascii_lowercase(),
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
        workflows_ran: Vec::new(),
        thread: Vec::new(),
        merged_into: None,
        last_inbound: None,
    };
    tables.event(
        id,
        now,
        &TimelineEvent::Created {
            pipeline_id: &pipeline.id,
            pipeline_name: &pipeline.name,
            status: &ticket.status,
            channel: &ch.id,
            source: ch.source.as_str(),
            message_id: &p.message_id,
        },
    )?;
    Ok(ticket)
}
