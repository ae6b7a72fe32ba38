//! Applying what [`crate::automation::decide`] returned, and queueing
//! outbound email — inside the engine's transaction, so an email is queued
//! if and only if the change that caused it is committed.
//!
//! Loop protection is enforced here, in one place, before anything is
//! queued to a contact: automatic/bulk inbound mail (see
//! [`crate::ingest::classify`]), a contact address that is ours or a mailer
//! daemon, and the per-contact hourly limit. A suppressed email leaves a
//! `suppressed` timeline event saying why.

use super::records::*;
use super::timeline::{QueuedFor, TimelineEvent};
use super::{StoreError, Txn};
use crate::automation::{Agent, Effect};
use crate::clock::Millis;
use crate::config::{Config, User};
use crate::ingest::trust::{KeyFor, ReplyKeys};
use crate::ingest::{bracketed, AutoReason, TicketId};
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
                ticket.status = to.clone();
                ticket.updated_at = now;
                // The first status of a new ticket is in its `created` entry.
                if let Some(from) = &from {
                    tables.event(
                        ticket.id,
                        now,
                        &TimelineEvent::StatusChanged {
                            from,
                            to: &to,
                            from_name: &name(from),
                            to_name: &name(&to),
                            why,
                        },
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
                    &TimelineEvent::WorkflowRan {
                        workflow: &workflow,
                        status: &ticket.status,
                    },
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
            Effect::SetStatusSkipped {
                workflow,
                action,
                to,
                reason,
            } => {
                tables.event(
                    ticket.id,
                    now,
                    &TimelineEvent::SetStatusSkipped {
                        workflow: &workflow,
                        action,
                        to: &to,
                        reason: &reason,
                    },
                )?;
            }
            Effect::NotifySkipped {
                workflow,
                action,
                reason,
            } => {
                tables.event(
                    ticket.id,
                    now,
                    &TimelineEvent::NotifySkipped {
                        workflow: &workflow,
                        action,
                        reason: &reason,
                    },
                )?;
            }
        }
    }
    Ok(())
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
            &TimelineEvent::EmailSuppressed {
                workflow,
                action,
                template,
                to: &to,
                code,
                words: &words,
            },
        );
    }
    let vars = vars(tables, config, ticket, template)?;
    let rendered = match config.templates.render(template, &vars) {
        Ok(r) => r,
        Err(e) => return render_failed(tables, ticket.id, workflow, template, &e.to_string(), now),
    };
    let mail = Draft {
        kind: OutboxKind::AutoReply,
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
        &QueuedFor::Template {
            workflow,
            action,
            template,
        },
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
        kind: OutboxKind::Notification,
        to: vec![(Some(agent.name.clone()), agent.email.clone())],
        cc: Vec::new(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        auto_submitted: Some("auto-generated"),
        footer: crate::mail::render::footer(&config.branding),
        agent: Some(agent.id.clone()),
    };
    let cause = QueuedFor::Notify {
        workflow,
        action,
        user: &agent.id,
    };
    queue(tables, config, ticket, mail, &cause, now).map(|_| ())
}

fn render_failed(
    tables: &mut impl Txn,
    ticket: TicketId,
    workflow: &str,
    template: &str,
    error: &str,
    now: Millis,
) -> Result<(), StoreError> {
    tracing::error!(
        ticket = ticket.get(),
        template,
        error,
        "template rendering failed"
    );
    tables.event(
        ticket,
        now,
        &TimelineEvent::RenderFailed {
            workflow,
            template,
            error,
        },
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
    pub kind: OutboxKind,
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
    cause: &QueuedFor<'_>,
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
                &TimelineEvent::ComposeFailed {
                    kind: draft.kind,
                    error: &e.to_string(),
                    cause,
                },
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
        from: Some(sender_mailbox(config)),
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
        kind: draft.kind,
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
    if draft.kind != OutboxKind::Notification {
        // The customer's view of the thread; agents' notifications stay out.
        ticket.push_thread(&message_id);
    }
    tables.event(
        ticket.id,
        now,
        &TimelineEvent::EmailQueued {
            kind: draft.kind,
            rcpt: &rcpt,
            message_id: &message_id,
            outbox: out_id,
            cause,
        },
    )?;
    Ok(out_id)
}

/// `outbound.from` as a mailbox (validated at config load).
fn sender_mailbox(config: &Config) -> crate::ingest::Mailbox {
    let from = &config.outbound.from;
    crate::ingest::Mailbox {
        email: from.email.to_string().to_ascii_lowercase(),
        name: from.name.clone(),
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
        &QueuedFor::Relayed {
            message_id: &message.message_id,
            user: &agent.id,
        },
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
    cause: &QueuedFor<'_>,
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
        kind: OutboxKind::AgentReply,
        to: vec![(ticket.contact.name.clone(), contact)],
        cc,
        subject,
        text: body.to_string(),
        html: None,
        auto_submitted: None,
        footer: None,
        agent: None,
    };
    queue(tables, config, ticket, draft, cause, now)
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
        &TimelineEvent::NotRelayed {
            agent_email: &agent.email,
            user: &agent.id,
            reason,
            message_id: &message.message_id,
        },
    )?;
    if let Some(words) = over_hourly_limit(tables, config, &agent.email, now)? {
        return tables.event(
            ticket.id,
            now,
            &TimelineEvent::NoticeSuppressed {
                to: &agent.email,
                user: &agent.id,
                words: &words,
            },
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
        kind: OutboxKind::Notification,
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
        &QueuedFor::NotRelayedNotice {
            user: &agent.id,
            not_relayed: &mid,
        },
        now,
    )?;
    tables.count_auto_sent(&agent.email, now)
}
