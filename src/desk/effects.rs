//! Applying what [`crate::automation::decide`] returned, and queueing
//! outbound email — inside the engine's transaction, so an email is queued
//! if and only if the change that caused it is committed.
//!
//! Loop protection is enforced here, in one place, before anything is
//! queued to a contact: automatic/bulk inbound mail (see
//! [`crate::ingest::classify`]), a contact address that is ours or a mailer
//! daemon, and the per-contact hourly limit. A suppressed email leaves a
//! `suppressed` timeline event saying why.

use serde_json::json;

use super::records::*;
use super::{StoreError, Txn};
use crate::automation::{Agent, Effect};
use crate::clock::Millis;
use crate::config::{Config, User};
use crate::ingest::trust::{KeyFor, ReplyKeys};
use crate::ingest::{bracketed, AutoReason};
use crate::mail::compose::{self, OutMail};
use crate::mail::render::{ChannelVars, ContactVars, MessageVars, TicketVars, Vars};

/// What caused the effects: the inbound message's automatic-mail verdict,
/// if the cause was an inbound message.
pub(super) struct Cause<'a> {
    pub auto: Option<&'a AutoReason>,
}

impl Cause<'_> {
    pub(super) const NONE: Cause<'static> = Cause { auto: None };
}

pub(super) fn apply_effects(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    effects: Vec<Effect>,
    cause: &Cause<'_>,
    now: Millis,
) -> Result<(), StoreError> {
    for effect in effects {
        match effect {
            Effect::StatusChanged { from, to, why } => {
                let name = |id: &str| {
                    config
                        .pipeline(&ticket.pipeline)
                        .and_then(|p| p.status(id))
                        .map_or_else(|| id.to_string(), |s| s.name.clone())
                };
                let summary = match &from {
                    Some(f) => format!(
                        "status {} → {} ({})",
                        name(f),
                        name(&to),
                        why_words(why.as_str())
                    ),
                    None => format!("status {} ({})", name(&to), why_words(why.as_str())),
                };
                ticket.status = to.clone();
                ticket.updated_at = now;
                let kind = if why == crate::automation::Why::Reopened {
                    "reopened"
                } else {
                    "status_changed"
                };
                if from.is_some() {
                    tables.event(
                        ticket.id,
                        now,
                        kind,
                        json!({"summary": summary, "from": from, "to": to, "why": why}),
                    )?;
                }
            }
            Effect::WorkflowRan { workflow } => {
                if !ticket.workflows_ran.contains(&workflow) {
                    ticket.workflows_ran.push(workflow.clone());
                }
                tables.event(
                    ticket.id,
                    now,
                    "workflow_ran",
                    json!({"summary": format!("workflow {workflow} ran (status {})", ticket.status), "workflow": workflow, "status": ticket.status}),
                )?;
            }
            Effect::SendEmail {
                workflow,
                action,
                template,
            } => {
                send_template(
                    tables, config, ticket, &workflow, action, &template, cause, now,
                )?;
            }
            Effect::Notify {
                workflow,
                action,
                to,
            } => {
                for agent in to {
                    notify(tables, config, ticket, &workflow, action, &agent, now)?;
                }
            }
            Effect::NotifySkipped {
                workflow,
                action,
                reason,
            } => {
                tables.event(
                    ticket.id,
                    now,
                    "notify_skipped",
                    json!({"summary": format!("notification skipped: {reason}"), "workflow": workflow, "action": action, "reason": reason}),
                )?;
            }
        }
    }
    Ok(())
}

fn why_words(why: &str) -> String {
    match why {
        "customer_replied" => "the customer replied".into(),
        "email_sent_to_customer" => "an agent emailed the customer".into(),
        "reopened" => "a reply reopened the closed ticket".into(),
        "admin" => "set by an operator".into(),
        other => other.replace('_', " "),
    }
}

/// Why no automatic email may go to `addr`, if any.
fn unsafe_recipient(config: &Config, addr: &str) -> Option<String> {
    if addr.is_empty() || !addr.contains('@') {
        return Some("the contact has no usable address".into());
    }
    if crate::ingest::is_daemon_address(addr) {
        return Some("the contact is a mailer daemon or postmaster".into());
    }
    if config.is_channel_address(addr) {
        return Some("the contact is one of our own channel addresses".into());
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn send_template(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    workflow: &str,
    action: usize,
    template: &str,
    cause: &Cause<'_>,
    now: Millis,
) -> Result<(), StoreError> {
    let to = ticket.contact.email.clone();
    let why: Option<(&'static str, String)> = match cause.auto {
        Some(reason) => Some((reason.code(), reason.describe())),
        None => unsafe_recipient(config, &to).map(|w| ("unsafe_recipient", w)),
    };
    let why = match why {
        Some(w) => Some(w),
        None => over_hourly_limit(tables, config, &to, now)?.map(|w| ("rate_limit", w)),
    };
    if let Some((code, words)) = why {
        crate::metrics::inc_key(&crate::metrics::METRICS.suppressed, code);
        return tables.event(
            ticket.id,
            now,
            "suppressed",
            json!({
                "summary": format!("{template} email to {to} suppressed: {words}"),
                "workflow": workflow, "action": action, "template": template, "to": to, "reason": code,
            }),
        );
    }
    let vars = vars(tables, config, ticket, template)?;
    let rendered = match config.templates.render(template, &vars) {
        Ok(r) => r,
        Err(e) => return render_failed(tables, ticket.id, workflow, template, &e.to_string(), now),
    };
    let mail = Draft {
        kind: "auto_reply",
        to: vec![(ticket.contact.name.clone(), to.clone())],
        cc: Vec::new(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        auto_submitted: Some("auto-replied"),
        footer: crate::mail::render::footer(&config.branding),
        agent: None,
    };
    queue(
        tables,
        config,
        ticket,
        mail,
        json!({"workflow": workflow, "action": action, "template": template}),
        now,
    )?;
    tables.count_auto_sent(&to, now)
}

fn notify(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    workflow: &str,
    action: usize,
    agent: &Agent,
    now: Millis,
) -> Result<(), StoreError> {
    let vars = vars(tables, config, ticket, "notification")?;
    let rendered = match config.templates.render("notification", &vars) {
        Ok(r) => r,
        Err(e) => {
            return render_failed(
                tables,
                ticket.id,
                workflow,
                "notification",
                &e.to_string(),
                now,
            )
        }
    };
    let mail = Draft {
        kind: "notification",
        to: vec![(Some(agent.name.clone()), agent.email.clone())],
        cc: Vec::new(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        auto_submitted: Some("auto-generated"),
        footer: crate::mail::render::footer(&config.branding),
        agent: Some(agent.id.clone()),
    };
    queue(tables, config, ticket, mail, json!({"workflow": workflow, "action": action, "template": "notification", "user": agent.id}), now)
        .map(|_| ())
}

fn render_failed(
    tables: &mut impl Txn,
    ticket: u64,
    workflow: &str,
    template: &str,
    error: &str,
    now: Millis,
) -> Result<(), StoreError> {
    tracing::error!(ticket, template, error, "template rendering failed");
    tables.event(
        ticket,
        now,
        "email_failed",
        json!({"summary": format!("{template} email not sent: template error: {error}"), "workflow": workflow, "template": template, "error": error}),
    )
}

/// Why one more automatic email to `addr` would break
/// `limits.auto_replies_per_contact_per_hour`, if it would.
fn over_hourly_limit(
    tables: &mut impl Txn,
    config: &Config,
    addr: &str,
    now: Millis,
) -> Result<Option<String>, StoreError> {
    let limit = u64::from(config.limits.auto_replies_per_contact_per_hour);
    let sent = tables.auto_sent_last_hour(addr, now)?;
    Ok((sent >= limit).then(|| {
        format!("{addr} already got {sent} automatic emails in the last hour (limit {limit})")
    }))
}

/// The variables for rendering `template` about ticket `t`.
fn vars(
    tables: &impl Txn,
    config: &Config,
    t: &TicketRec,
    template: &str,
) -> Result<Vars, StoreError> {
    let pipeline = config.pipeline(&t.pipeline);
    let status_name = pipeline
        .and_then(|p| p.status(&t.status))
        .map_or_else(|| t.status.clone(), |s| s.name.clone());
    let message = match t.last_inbound {
        Some(seq) => match tables.message(seq)? {
            Some(m) => Some({
                let text = tables.message_text(&m)?;
                MessageVars {
                    new_text: if config.templates.uses_new_text(template) {
                        crate::ingest::quote::new_text(&text)
                    } else {
                        String::new()
                    },
                    text,
                    from: m.from.map(|f| f.email).unwrap_or_default(),
                    subject: m.subject,
                }
            }),
            None => None,
        },
        None => None,
    };
    let channel = config.channel(&t.channel);
    Ok(Vars {
        ticket: TicketVars {
            id: t.id,
            subject: t.subject.clone(),
            status: t.status.clone(),
            status_name,
            pipeline: pipeline.map_or_else(|| t.pipeline.clone(), |p| p.name.clone()),
            owner: t.owner.clone(),
        },
        contact: ContactVars {
            email: t.contact.email.clone(),
            name: t.contact.name.clone(),
        },
        message,
        channel: ChannelVars {
            id: t.channel.clone(),
            address: channel
                .and_then(|c| c.addresses.first().cloned())
                .unwrap_or_default(),
            pipeline: t.pipeline.clone(),
            source: t.source,
        },
    })
}

/// An email about to be queued.
pub(super) struct Draft {
    pub kind: &'static str,
    pub to: Vec<(Option<String>, String)>,
    /// Copied: the ticket's other participants (agent replies only).
    pub cc: Vec<(Option<String>, String)>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub auto_submitted: Option<&'static str>,
    pub footer: Option<String>,
    /// The user id of the agent this email goes to (a notification): its
    /// Reply-To carries that agent's key instead of the ticket's.
    pub agent: Option<String>,
}

/// The channel address of a ticket, and its signed plus form for Reply-To
/// (the ticket's key, or the agent's for an email to an agent).
fn channel_addresses(
    config: &Config,
    keys: &ReplyKeys,
    t: &TicketRec,
    agent: Option<&str>,
) -> (String, String) {
    let base = config
        .channel(&t.channel)
        .and_then(|c| c.addresses.first().cloned())
        .or_else(|| {
            config
                .channels
                .first()
                .and_then(|c| c.addresses.first().cloned())
        })
        .unwrap_or_else(|| format!("postmaster@{}", config.server.hostname));
    let whose = match agent {
        Some(user) => KeyFor::Agent(user),
        None => KeyFor::Ticket,
    };
    let plus = keys.reply_address(&base, t.id, whose);
    (base, plus)
}

/// Composes `draft` with the ticket's thread headers and queues it: the
/// outbound message row and raw bytes, its Message-ID row (so replies to it
/// thread), the outbox row and its due row, and an `email_queued` event.
pub(super) fn queue(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    draft: Draft,
    detail: serde_json::Value,
    now: Millis,
) -> Result<u64, StoreError> {
    let out_id = tables.next_outbox_id()?;
    let message_id = compose::message_id(&config.server.hostname, ticket.id, out_id, tables.salt());
    let tag = config.outbound.subject_tag.render(ticket.id);
    let subject = compose::with_subject_tag(&draft.subject, &tag);
    let (channel_addr, reply_to) =
        channel_addresses(config, tables.keys(), ticket, draft.agent.as_deref());
    let references = ticket.thread.clone();
    let rcpt: Vec<String> = draft
        .to
        .iter()
        .chain(&draft.cc)
        .map(|(_, a)| a.clone())
        .collect();
    let mail = OutMail {
        from: config.outbound.from.clone(),
        to: draft.to,
        cc: draft.cc,
        reply_to,
        subject: subject.clone(),
        message_id: message_id.clone(),
        in_reply_to: ticket.thread.last().cloned(),
        references,
        auto_submitted: draft.auto_submitted,
        ticket: ticket.id,
        text: draft.text,
        html: draft.html,
        footer: draft.footer,
        date_millis: now,
    };
    let raw = match compose::compose(&mail) {
        Ok(raw) => raw,
        Err(e) => {
            tables.event(
                ticket.id,
                now,
                "email_failed",
                json!({"summary": format!("{} email not sent: {e}", draft.kind), "kind": draft.kind, "error": e.to_string(), "detail": detail}),
            )?;
            return Ok(out_id);
        }
    };
    let seq = tables.next_message_seq()?;
    let mut rec = MessageRec {
        seq,
        ticket: Some(ticket.id),
        message_id: message_id.clone(),
        message_id_written: None,
        direction: Direction::Out,
        kind: draft.kind.into(),
        from: Some(sender_mailbox(config, &channel_addr)),
        to: rcpt.clone(),
        subject: subject.clone(),
        date: Some(now),
        received_at: now,
        mail_from: channel_addr.clone(),
        rcpt: rcpt.clone(),
        channel: ticket.channel.clone(),
        size: raw.len() as u64,
        text: String::new(),
        blob: None,
        unverified: false,
        auth: None,
        outbox: Some(out_id),
    };
    tables.put_message(&mut rec, &raw)?;
    let out = OutboxRec {
        id: out_id,
        ticket: ticket.id,
        message_seq: seq,
        message_id: message_id.clone(),
        kind: draft.kind.into(),
        mail_from: channel_addr,
        rcpt: rcpt.clone(),
        subject,
        state: OutState::Queued,
        attempts: 0,
        created_at: now,
        next_attempt_at: Some(now),
        sent_at: None,
        last_error: None,
        bounce: None,
    };
    tables.put_outbox(&out, None)?;
    tables.mail_queued();
    if draft.kind != "notification" {
        // The customer's view of the thread; agents' notifications stay out.
        ticket.push_thread(&message_id);
    }
    let mut detail = detail;
    detail["summary"] = json!(format!(
        "{} email to {} queued",
        draft.kind.replace('_', " "),
        rcpt.join(", ")
    ));
    detail["message_id"] = json!(bracketed(&message_id));
    detail["to"] = json!(rcpt);
    detail["kind"] = json!(draft.kind);
    detail["outbox"] = json!(out_id);
    tables.event(ticket.id, now, "email_queued", detail)?;
    Ok(out_id)
}

/// `outbound.from` as a mailbox (validated at config load).
fn sender_mailbox(config: &Config, fallback: &str) -> crate::ingest::Mailbox {
    match config.outbound.from.parse::<lettre::message::Mailbox>() {
        Ok(m) => crate::ingest::Mailbox {
            email: m.email.to_string().to_ascii_lowercase(),
            name: m.name,
        },
        Err(_) => crate::ingest::Mailbox {
            email: fallback.to_string(),
            name: None,
        },
    }
}

/// An agent's email on the ticket's thread goes to the contact, from the
/// channel address, keeping the thread.
pub(super) fn relay_agent_email(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    agent: &User,
    message: &MessageRec,
    text: &str,
    now: Millis,
) -> Result<(), StoreError> {
    agent_reply(
        tables,
        config,
        ticket,
        agent,
        text,
        now,
        json!({"relayed": bracketed(&message.message_id), "user": agent.id}),
    )
    .map(|_| ())
}

/// An agent's reply to the contact (admin `reply`, or a relayed email).
pub(super) fn agent_reply(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    agent: &User,
    body: &str,
    now: Millis,
    detail: serde_json::Value,
) -> Result<u64, StoreError> {
    let contact = ticket.contact.email.clone();
    if contact.eq_ignore_ascii_case(&agent.email) {
        return Ok(0);
    }
    let subject = if ticket.subject.to_ascii_lowercase().starts_with("re:") {
        ticket.subject.clone()
    } else {
        format!("Re: {}", ticket.subject)
    };
    // The other participants are copied (SPEC §12) — never an agent, a
    // channel address or a mailer daemon.
    let cc = ticket
        .participants
        .iter()
        .filter(|p| !p.eq_ignore_ascii_case(&contact) && !p.eq_ignore_ascii_case(&agent.email))
        .filter(|p| config.agent_by_email(p).is_none() && unsafe_recipient(config, p).is_none())
        .map(|p| (None, p.clone()))
        .collect();
    let draft = Draft {
        kind: "agent_reply",
        to: vec![(ticket.contact.name.clone(), contact)],
        cc,
        subject,
        text: body.to_string(),
        html: None,
        auto_submitted: None,
        footer: None,
        agent: None,
    };
    queue(tables, config, ticket, draft, detail, now)
}

/// A message from `agent`'s address that did not prove the agent (SPEC
/// §12): a `suppressed` entry saying why, and an email to the agent's
/// configured address saying that nothing was relayed and how to reply so
/// that it is — to the notification, whose Reply-To carries the agent's
/// key. The email is automatic: the hourly limit per address holds, so a
/// stranger cannot flood an agent through it.
pub(super) fn not_relayed(
    tables: &mut impl Txn,
    config: &Config,
    ticket: &mut TicketRec,
    agent: &User,
    message: &MessageRec,
    reason: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let mid = bracketed(&message.message_id);
    crate::metrics::inc_key(&crate::metrics::METRICS.suppressed, "unverified_agent");
    tables.event(
        ticket.id,
        now,
        "suppressed",
        json!({
            "summary": format!(
                "email from {} ({}) not relayed to the customer and no status change: {reason}",
                agent.email, agent.id
            ),
            "reason": "unverified_agent",
            "user": agent.id,
            "message_id": mid,
        }),
    )?;
    if let Some(words) = over_hourly_limit(tables, config, &agent.email, now)? {
        return tables.event(
            ticket.id,
            now,
            "suppressed",
            json!({
                "summary": format!("not-relayed notice to {} suppressed: {words}", agent.email),
                "reason": "rate_limit", "to": agent.email, "user": agent.id,
            }),
        );
    }
    let text = format!(
        "An email from your address {email} to ticket #{id} (\"{subject}\") was NOT \
         relayed to the customer, and the ticket's status did not change.\n\n\
         Why: {reason}.\n\n\
         postdesk relays an agent's email only when it proves who sent it. To answer \
         the customer, reply to this email (or to a notification about ticket #{id}): \
         its Reply-To address carries your personal key for this ticket. An operator \
         can also use `postdesk ctl reply {id}`.\n\n\
         If you did not write that email, someone used your address: it is kept on \
         the ticket, marked unverified (Message-ID {mid}).\n",
        email = agent.email,
        id = ticket.id,
        subject = ticket.subject,
    );
    let draft = Draft {
        kind: "notification",
        to: vec![(Some(agent.name.clone()), agent.email.clone())],
        cc: Vec::new(),
        subject: format!("Not relayed: {}", ticket.subject),
        text,
        html: None,
        auto_submitted: Some("auto-generated"),
        footer: None,
        agent: Some(agent.id.clone()),
    };
    queue(
        tables,
        config,
        ticket,
        draft,
        json!({"reason": "unverified_agent", "user": agent.id, "not_relayed": mid}),
        now,
    )?;
    tables.count_auto_sent(&agent.email, now)
}
