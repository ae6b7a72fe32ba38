//! What a ticket's timeline records: one [`TimelineEvent`] variant for
//! each thing that can happen to a ticket, with the values it names.
//!
//! An entry is stored as its `kind` and a JSON `detail` (SPEC §6: what
//! `ctl ticket --json` shows and scripts read); both are made here, from
//! the variant, so that one kind has one shape wherever it is written, and
//! its `summary` — the sentence `ctl ticket` prints — is worded in one
//! place.

use serde_json::{json, Map, Value};

use super::records::{MessageKind, OutboxKind};
use crate::automation::Why;
use crate::ingest::bounce::BounceRecipient;
use crate::ingest::{bracketed, ThreadedBy, TicketId};

/// One timeline entry about to be written (see [`super::Txn::event`]).
#[derive(Debug, Clone)]
pub enum TimelineEvent<'a> {
    /// A message made the ticket.
    Created {
        pipeline_id: &'a str,
        pipeline_name: &'a str,
        status: &'a str,
        channel: &'a str,
        source: &'a str,
        /// Normalised, without brackets.
        message_id: &'a str,
    },
    /// An inbound message joined the ticket.
    MessageIn(MessageIn<'a>),
    /// A bounce of one of our emails arrived.
    Bounce {
        /// RFC 3464's `Action` (`failed`, `delayed`, …).
        action: &'a str,
        /// The failed recipients, as [`failed_recipients`](super) words them.
        who: &'a str,
        recipients: &'a [BounceRecipient],
        /// The returned email's Message-ID (normalised), if found.
        original: Option<&'a str>,
        /// The outbox entry it returned, if found.
        outbox: Option<u64>,
        /// The bounce's own Message-ID (normalised).
        message_id: &'a str,
        /// Whether the report was RFC 3464 (not a guess from the text).
        standard: bool,
    },
    /// A status change from a rule (`reopened` when a reply reopened a
    /// closed ticket). Status names are the pipeline's, for the summary.
    StatusChanged {
        from: &'a str,
        to: &'a str,
        from_name: &'a str,
        to_name: &'a str,
        why: Why,
    },
    WorkflowRan {
        workflow: &'a str,
        /// The status it ran at.
        status: &'a str,
    },
    NotifySkipped {
        workflow: &'a str,
        action: usize,
        reason: &'a str,
    },
    /// A workflow's `set_status` that did not move the ticket.
    SetStatusSkipped {
        workflow: &'a str,
        action: usize,
        to: &'a str,
        reason: &'a str,
    },
    /// An automatic email that loop protection or the hourly limit kept
    /// back.
    EmailSuppressed {
        workflow: &'a str,
        action: usize,
        template: &'a str,
        to: &'a str,
        /// A code (`auto_submitted`, `rate_limit`, …) and its words.
        code: &'a str,
        words: &'a str,
    },
    /// An email from an agent's address that did not prove the agent:
    /// not relayed (SPEC §12).
    NotRelayed {
        agent_email: &'a str,
        user: &'a str,
        reason: &'a str,
        /// Normalised, without brackets.
        message_id: &'a str,
    },
    /// The notice to an agent about a [`TimelineEvent::NotRelayed`] email,
    /// kept back by the hourly limit.
    NoticeSuppressed {
        to: &'a str,
        user: &'a str,
        words: &'a str,
    },
    /// A template failed to render: no email.
    RenderFailed {
        workflow: &'a str,
        template: &'a str,
        error: &'a str,
    },
    /// An email could not be composed: no email.
    ComposeFailed {
        kind: OutboxKind,
        error: &'a str,
        cause: &'a QueuedFor<'a>,
    },
    EmailQueued {
        kind: OutboxKind,
        rcpt: &'a [String],
        /// Normalised, without brackets.
        message_id: &'a str,
        outbox: u64,
        cause: &'a QueuedFor<'a>,
    },
    EmailSent {
        kind: OutboxKind,
        rcpt: &'a [String],
        /// Normalised, without brackets.
        message_id: &'a str,
        outbox: u64,
        attempts: u32,
    },
    /// A delivery failed for good (`why`: the error, or that the outbox
    /// gave up on it).
    DeliveryFailed {
        kind: OutboxKind,
        rcpt: &'a [String],
        message_id: &'a str,
        outbox: u64,
        error: &'a str,
        why: &'a str,
        attempts: u32,
    },
    Assigned {
        from: Option<&'a str>,
        to: &'a str,
    },
    /// This ticket was merged into `target`.
    MergedInto {
        target: TicketId,
        from_status: &'a str,
        status: &'a str,
        messages: usize,
    },
    /// Ticket `source` was merged into this one.
    MergedFrom {
        source: TicketId,
        messages: usize,
    },
    /// A reply to this closed ticket started ticket `new`.
    ContinuedIn {
        new: TicketId,
    },
    /// This ticket continues closed ticket `old`.
    Continues {
        old: TicketId,
    },
}

/// What an inbound message's `message_in` entry says.
#[derive(Debug, Clone)]
pub struct MessageIn<'a> {
    /// Normalised, without brackets.
    pub message_id: &'a str,
    pub from: Option<&'a str>,
    /// [`MessageKind::Email`], [`MessageKind::AgentEmail`] or
    /// [`MessageKind::Automatic`].
    pub kind: MessageKind,
    /// How it was threaded, and the value that matched.
    pub threaded_by: ThreadedBy,
    pub matched: Option<&'a str>,
    /// The loop-protection code, for an automatic message.
    pub automatic: Option<&'static str>,
    pub unverified: bool,
    pub channel: &'a str,
    pub size: usize,
    pub imported: bool,
}

/// Why an email was queued: the fields an `email_queued` entry (and a
/// `email_failed` one, when it could not be composed) gets besides the
/// email's own.
#[derive(Debug, Clone)]
pub enum QueuedFor<'a> {
    /// A workflow's `send_email` action.
    Template {
        workflow: &'a str,
        action: usize,
        template: &'a str,
    },
    /// A workflow's `notify` action, to agent `user`.
    Notify {
        workflow: &'a str,
        action: usize,
        user: &'a str,
    },
    /// An agent's proven email, relayed to the customer.
    Relayed {
        /// The agent's message (normalised).
        message_id: &'a str,
        user: &'a str,
    },
    /// `ctl reply`.
    AdminReply { user: &'a str },
    /// The notice to an agent that their email was not relayed.
    NotRelayedNotice {
        user: &'a str,
        /// The agent's message (bracketed).
        not_relayed: &'a str,
    },
}

impl QueuedFor<'_> {
    fn fields(&self) -> Map<String, Value> {
        let v = match self {
            QueuedFor::Template {
                workflow,
                action,
                template,
            } => json!({"workflow": workflow, "action": action, "template": template}),
            QueuedFor::Notify {
                workflow,
                action,
                user,
            } => {
                json!({"workflow": workflow, "action": action, "template": "notification", "user": user})
            }
            QueuedFor::Relayed { message_id, user } => {
                json!({"relayed": bracketed(message_id), "user": user})
            }
            QueuedFor::AdminReply { user } => json!({"user": user, "via": "admin"}),
            QueuedFor::NotRelayedNotice { user, not_relayed } => {
                json!({"reason": "unverified_agent", "user": user, "not_relayed": not_relayed})
            }
        };
        match v {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// Words for a status change's cause.
pub fn why_words(why: &str) -> String {
    match why {
        "customer_replied" => "the customer replied".into(),
        "email_sent_to_customer" => "an agent emailed the customer".into(),
        "reopened" => "a reply reopened the closed ticket".into(),
        "admin" => "set by an operator".into(),
        "workflow" => "set by a workflow".into(),
        other => other.replace('_', " "),
    }
}

impl TimelineEvent<'_> {
    /// The entry's kind, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            TimelineEvent::Created { .. } => "created",
            TimelineEvent::MessageIn(_) => "message_in",
            TimelineEvent::Bounce { .. } => "bounce",
            TimelineEvent::StatusChanged { why, .. } if *why == Why::Reopened => "reopened",
            TimelineEvent::StatusChanged { .. } => "status_changed",
            TimelineEvent::WorkflowRan { .. } => "workflow_ran",
            TimelineEvent::NotifySkipped { .. } => "notify_skipped",
            TimelineEvent::SetStatusSkipped { .. } => "set_status_skipped",
            TimelineEvent::EmailSuppressed { .. }
            | TimelineEvent::NotRelayed { .. }
            | TimelineEvent::NoticeSuppressed { .. } => "suppressed",
            TimelineEvent::RenderFailed { .. }
            | TimelineEvent::ComposeFailed { .. }
            | TimelineEvent::DeliveryFailed { .. } => "email_failed",
            TimelineEvent::EmailQueued { .. } => "email_queued",
            TimelineEvent::EmailSent { .. } => "email_sent",
            TimelineEvent::Assigned { .. } => "assigned",
            TimelineEvent::MergedInto { .. } | TimelineEvent::MergedFrom { .. } => "merged",
            TimelineEvent::ContinuedIn { .. } | TimelineEvent::Continues { .. } => "linked",
        }
    }

    /// The entry's detail, as stored: always an object with a `summary`.
    pub fn detail(&self) -> Value {
        match self {
            TimelineEvent::Created {
                pipeline_id,
                pipeline_name,
                status,
                channel,
                source,
                message_id,
            } => json!({
                "summary": format!("ticket created in {pipeline_name} at status {status}"),
                "pipeline": pipeline_id,
                "status": status,
                "channel": channel,
                "source": source,
                "message_id": bracketed(message_id),
            }),
            TimelineEvent::MessageIn(m) => {
                let from = m.from.unwrap_or("(unknown sender)");
                let what = match m.kind {
                    MessageKind::AgentEmail if m.unverified => "unverified agent email",
                    MessageKind::AgentEmail => "agent email",
                    MessageKind::Automatic => "automatic message",
                    _ => "message",
                };
                let via = m.matched.unwrap_or_default();
                let how = match m.threaded_by {
                    ThreadedBy::MessageId => {
                        format!("its Message-ID {} was named by the thread", bracketed(via))
                    }
                    ThreadedBy::InReplyTo => format!("threaded by In-Reply-To {}", bracketed(via)),
                    ThreadedBy::References => format!("threaded by References {}", bracketed(via)),
                    ThreadedBy::PlusAddress => format!("threaded by plus address +{via}"),
                    ThreadedBy::SubjectTag => format!("threaded by subject tag {via}"),
                    ThreadedBy::New => "new thread".to_string(),
                };
                json!({
                    "summary": format!("{what} from {from}: {how}"),
                    "message_id": bracketed(m.message_id),
                    "from": m.from,
                    "kind": m.kind,
                    "threaded_by": m.threaded_by.as_str(),
                    "matched": m.matched,
                    "automatic": m.automatic,
                    "verified": (m.kind == MessageKind::AgentEmail).then_some(!m.unverified),
                    "channel": m.channel,
                    "size": m.size,
                    "imported": m.imported,
                })
            }
            TimelineEvent::Bounce {
                action,
                who,
                recipients,
                original,
                outbox,
                message_id,
                standard,
            } => {
                let original = original.map(bracketed);
                json!({
                    "summary": format!(
                        "delivery {action} for {}{}",
                        if who.is_empty() { "an unnamed recipient" } else { who },
                        original.as_ref().map(|o| format!(" of {o}")).unwrap_or_default()
                    ),
                    "action": action,
                    "recipients": recipients
                        .iter()
                        .map(|r| json!({"address": r.address, "status": r.status, "action": r.action, "diagnostic": r.diagnostic}))
                        .collect::<Vec<_>>(),
                    "original_message_id": original,
                    "outbox": outbox,
                    "message_id": bracketed(message_id),
                    "standard": standard,
                })
            }
            TimelineEvent::StatusChanged {
                from,
                to,
                from_name,
                to_name,
                why,
            } => json!({
                "summary": format!("status {from_name} → {to_name} ({})", why_words(why.as_str())),
                "from": from,
                "to": to,
                "why": why,
            }),
            TimelineEvent::WorkflowRan { workflow, status } => json!({
                "summary": format!("workflow {workflow} ran (status {status})"),
                "workflow": workflow,
                "status": status,
            }),
            TimelineEvent::SetStatusSkipped {
                workflow,
                action,
                to,
                reason,
            } => json!({
                "summary": format!("workflow {workflow} did not set status {to}: {reason}"),
                "workflow": workflow,
                "action": action,
                "to": to,
                "reason": reason,
            }),
            TimelineEvent::NotifySkipped {
                workflow,
                action,
                reason,
            } => json!({
                "summary": format!("notification skipped: {reason}"),
                "workflow": workflow,
                "action": action,
                "reason": reason,
            }),
            TimelineEvent::EmailSuppressed {
                workflow,
                action,
                template,
                to,
                code,
                words,
            } => json!({
                "summary": format!("{template} email to {to} suppressed: {words}"),
                "workflow": workflow,
                "action": action,
                "template": template,
                "to": to,
                "reason": code,
            }),
            TimelineEvent::NotRelayed {
                agent_email,
                user,
                reason,
                message_id,
            } => json!({
                "summary": format!(
                    "email from {agent_email} ({user}) not relayed to the customer and no \
                     status change: {reason}"
                ),
                "reason": "unverified_agent",
                "user": user,
                "message_id": bracketed(message_id),
            }),
            TimelineEvent::NoticeSuppressed { to, user, words } => json!({
                "summary": format!("not-relayed notice to {to} suppressed: {words}"),
                "reason": "rate_limit",
                "to": to,
                "user": user,
            }),
            TimelineEvent::RenderFailed {
                workflow,
                template,
                error,
            } => json!({
                "summary": format!("{template} email not sent: template error: {error}"),
                "workflow": workflow,
                "template": template,
                "error": error,
            }),
            TimelineEvent::ComposeFailed { kind, error, cause } => json!({
                "summary": format!("{kind} email not sent: {error}"),
                "kind": kind,
                "error": error,
                "detail": Value::Object(cause.fields()),
            }),
            TimelineEvent::EmailQueued {
                kind,
                rcpt,
                message_id,
                outbox,
                cause,
            } => {
                let mut detail = cause.fields();
                let mut put = |k: &str, v: Value| detail.insert(k.to_owned(), v);
                put(
                    "summary",
                    json!(format!(
                        "{} email to {} queued",
                        kind.words(),
                        rcpt.join(", ")
                    )),
                );
                put("message_id", json!(bracketed(message_id)));
                put("to", json!(rcpt));
                put("kind", json!(kind));
                put("outbox", json!(outbox));
                Value::Object(detail)
            }
            TimelineEvent::EmailSent {
                kind,
                rcpt,
                message_id,
                outbox,
                attempts,
            } => json!({
                "summary": format!("{} email to {} sent", kind.words(), rcpt.join(", ")),
                "message_id": bracketed(message_id),
                "to": rcpt,
                "outbox": outbox,
                "attempts": attempts,
            }),
            TimelineEvent::DeliveryFailed {
                kind,
                rcpt,
                message_id,
                outbox,
                error,
                why,
                attempts,
            } => json!({
                "summary": format!("{} email to {} failed: {why}", kind.words(), rcpt.join(", ")),
                "message_id": bracketed(message_id),
                "to": rcpt,
                "outbox": outbox,
                "error": error,
                "attempts": attempts,
            }),
            TimelineEvent::Assigned { from, to } => json!({
                "summary": format!("owner {} → {to}", from.unwrap_or("none")),
                "from": from,
                "to": to,
            }),
            TimelineEvent::MergedInto {
                target,
                from_status,
                status,
                messages,
            } => json!({
                "summary": format!("merged into ticket {target}; status {from_status} → {status}"),
                "into": target,
                "messages": messages,
            }),
            TimelineEvent::MergedFrom { source, messages } => json!({
                "summary": format!("ticket {source} merged into this one ({messages} messages)"),
                "from": source,
                "messages": messages,
            }),
            TimelineEvent::ContinuedIn { new } => json!({
                "summary": format!("a reply to this closed ticket started ticket {new}"),
                "ticket": new,
                "relation": "continued_in",
            }),
            TimelineEvent::Continues { old } => json!({
                "summary": format!("continues closed ticket {old}"),
                "ticket": old,
                "relation": "continues",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_has_one_shape_and_every_detail_a_summary() {
        let rcpt = vec!["c@example.com".to_owned(), "d@example.com".to_owned()];
        let cause = QueuedFor::Template {
            workflow: "ack",
            action: 0,
            template: "ticket_received",
        };
        let queued = TimelineEvent::EmailQueued {
            kind: OutboxKind::AutoReply,
            rcpt: &rcpt,
            message_id: "m@x",
            outbox: 7,
            cause: &cause,
        };
        assert_eq!(queued.kind(), "email_queued");
        assert_eq!(
            queued.detail(),
            json!({
                "summary": "auto reply email to c@example.com, d@example.com queued",
                "workflow": "ack", "action": 0, "template": "ticket_received",
                "message_id": "<m@x>", "to": rcpt, "kind": "auto_reply", "outbox": 7,
            })
        );
        let reopened = TimelineEvent::StatusChanged {
            from: "closed",
            to: "waiting_on_us",
            from_name: "Closed",
            to_name: "Waiting on us",
            why: Why::Reopened,
        };
        assert_eq!(reopened.kind(), "reopened");
        assert_eq!(
            reopened.detail()["summary"],
            "status Closed → Waiting on us (a reply reopened the closed ticket)"
        );
        let failed = TimelineEvent::ComposeFailed {
            kind: OutboxKind::Notification,
            error: "no recipient",
            cause: &QueuedFor::AdminReply { user: "alice" },
        };
        assert_eq!(failed.kind(), "email_failed");
        assert_eq!(
            failed.detail(),
            json!({
                "summary": "notification email not sent: no recipient",
                "kind": "notification", "error": "no recipient",
                "detail": {"user": "alice", "via": "admin"},
            })
        );
        let bounce = TimelineEvent::Bounce {
            action: "failed",
            who: "",
            recipients: &[],
            original: Some("o@x"),
            outbox: None,
            message_id: "b@x",
            standard: true,
        };
        assert_eq!(
            bounce.detail()["summary"],
            "delivery failed for an unnamed recipient of <o@x>"
        );
    }
}
