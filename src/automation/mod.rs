//! PURE: the rules. Given the configuration, what we know of a ticket and
//! one event, [`decide`] returns the effects in order: status changes (and
//! why), workflows that run, and their actions. It never renders, sends,
//! stores or reads the clock; the store writer applies the effects in the
//! same transaction as the event that caused them.
//!
//! - Status triggers (`[pipeline.triggers]`): `customer_replied` on a
//!   customer's message on an existing ticket, `email_sent_to_customer` on an
//!   agent's email. Automatic emails never fire either; automatic inbound
//!   mail (out-of-office, bounces, lists) never moves a ticket.
//! - `reply_to_closed`: `reopen` moves a closed ticket to the
//!   `customer_replied` status (or `initial_status` if that trigger is
//!   disabled); `new_ticket` is decided by [`route_reply`] before any event.
//! - Workflows run, in config order, each time a ticket's status changes
//!   (creation included) and the enrollment matches *anew*: a workflow runs
//!   once per ticket unless `reenroll = true`. A workflow whose `enroll`
//!   names no source applies to email tickets only. One with
//!   `enabled = false` runs nothing.
//! - A workflow's `set_status` moves the ticket once every workflow of
//!   the status it entered has run (the first one to ask wins; a later one
//!   is noted, not run); that change runs the new status's workflows in
//!   turn. One event makes at most [`MAX_STATUS_CHANGES`] status changes:
//!   a chain past that (two workflows sending a ticket back and forth)
//!   stops, noted.

use crate::config::{ActionKind, Config, NotifyTarget, Pipeline, ReplyToClosed, Source, Workflow};

/// What we know of a ticket when deciding.
#[derive(Debug, Clone)]
pub struct TicketFacts<'a> {
    pub pipeline: &'a str,
    pub status: &'a str,
    pub source: Source,
    pub owner: Option<&'a str>,
    /// Workflows that have run on this ticket.
    pub workflows_ran: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The ticket was just created at its pipeline's initial status.
    Created,
    /// A message from anyone but an agent landed on the ticket's thread.
    CustomerReplied { automatic: bool },
    /// An agent emailed the customer from the ticket (ctl reply, or an
    /// agent's email on the thread, relayed).
    AgentEmailed,
    /// An operator set the status (admin `set_status`).
    SetStatus { to: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    Created,
    CustomerReplied,
    EmailSentToCustomer,
    Reopened,
    Admin,
    /// A workflow's `set_status` action.
    Workflow,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Created => "created",
            Why::CustomerReplied => "customer_replied",
            Why::EmailSentToCustomer => "email_sent_to_customer",
            Why::Reopened => "reopened",
            Why::Admin => "admin",
            Why::Workflow => "workflow",
        }
    }
}

/// A recipient of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    StatusChanged {
        from: Option<String>,
        to: String,
        why: Why,
    },
    WorkflowRan {
        workflow: String,
    },
    /// Render `template` and email it to the contact (`auto-replied`).
    SendEmail {
        workflow: String,
        action: usize,
        template: String,
    },
    /// Email the `notification` template to agents (`auto-generated`).
    Notify {
        workflow: String,
        action: usize,
        to: Vec<Agent>,
    },
    NotifySkipped {
        workflow: String,
        action: usize,
        reason: String,
    },
    /// A `set_status` action that did not move the ticket, and why.
    SetStatusSkipped {
        workflow: String,
        action: usize,
        to: String,
        reason: String,
    },
}

/// The most status changes one event may cause (SPEC §9).
pub const MAX_STATUS_CHANGES: usize = 8;

/// Where a message that threaded onto `ticket` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyRoute {
    SameTicket,
    /// `reply_to_closed = "new_ticket"`: a new ticket linked to the old one.
    NewLinkedTicket,
}

/// A customer's message on a closed ticket of a `new_ticket` pipeline starts
/// a new ticket; everything else stays on the ticket it threaded to.
/// Automatic mail (an out-of-office on a closed ticket) stays too: it must
/// not open tickets by itself.
pub fn route_reply(
    config: &Config,
    t: &TicketFacts<'_>,
    from_agent: bool,
    automatic: bool,
) -> ReplyRoute {
    let Some(p) = config.pipeline(t.pipeline) else {
        return ReplyRoute::SameTicket;
    };
    let closed = p.status(t.status).is_some_and(|s| s.closed);
    if closed && !from_agent && !automatic && p.reply_to_closed == ReplyToClosed::NewTicket {
        ReplyRoute::NewLinkedTicket
    } else {
        ReplyRoute::SameTicket
    }
}

pub fn decide(config: &Config, t: &TicketFacts<'_>, event: &Event<'_>) -> Vec<Effect> {
    let Some(pipeline) = config.pipeline(t.pipeline) else {
        return Vec::new();
    };
    let change = match *event {
        Event::Created => Some((None, t.status.to_string(), Why::Created)),
        Event::CustomerReplied { automatic: true } => None,
        Event::CustomerReplied { automatic: false } => {
            let closed = pipeline.status(t.status).is_some_and(|s| s.closed);
            let trigger = &pipeline.triggers.customer_replied;
            if closed {
                // Reopen (new_ticket was routed before we got here).
                let to = trigger
                    .set_status
                    .as_deref()
                    .filter(|_| trigger.enabled)
                    .unwrap_or(&pipeline.initial_status);
                Some((Some(t.status.to_string()), to.to_string(), Why::Reopened))
            } else if trigger.enabled {
                trigger
                    .set_status
                    .as_ref()
                    .map(|to| (Some(t.status.to_string()), to.clone(), Why::CustomerReplied))
            } else {
                None
            }
        }
        Event::AgentEmailed => {
            let trigger = &pipeline.triggers.email_sent_to_customer;
            trigger
                .set_status
                .as_ref()
                .filter(|_| trigger.enabled)
                .map(|to| {
                    (
                        Some(t.status.to_string()),
                        to.clone(),
                        Why::EmailSentToCustomer,
                    )
                })
        }
        Event::SetStatus { to } => Some((Some(t.status.to_string()), to.to_string(), Why::Admin)),
    };
    let Some(first) = change else {
        return Vec::new();
    };
    let mut effects = Vec::new();
    let mut ran: Vec<&str> = t.workflows_ran.iter().map(String::as_str).collect();
    let mut next = Some(first);
    let mut changes = 0;
    while let Some((from, to, why)) = next.take() {
        if from.as_deref() == Some(to.as_str()) {
            break;
        }
        changes += 1;
        effects.push(Effect::StatusChanged {
            from: from.clone(),
            to: to.clone(),
            why,
        });
        let facts = TicketFacts {
            status: &to,
            ..t.clone()
        };
        for w in config
            .workflows
            .iter()
            .filter(|w| w.pipeline == pipeline.id && w.enabled)
        {
            let now = enrolls(w, t.source, &to);
            let before = from.as_deref().is_some_and(|f| enrolls(w, t.source, f));
            let has_run = ran.contains(&w.id.as_str());
            if !now || before || (has_run && !w.reenroll) {
                continue;
            }
            if !has_run {
                ran.push(&w.id);
            }
            effects.push(Effect::WorkflowRan {
                workflow: w.id.clone(),
            });
            for step in actions(config, pipeline, w, &facts) {
                let (action, wanted) = match step {
                    Step::Effect(effect) => {
                        effects.push(effect);
                        continue;
                    }
                    Step::SetStatus { action, to } => (action, to),
                };
                let reason = if let Some((_, taken, _)) = &next {
                    Some(format!(
                        "an earlier set_status at status {to} already set status {taken}"
                    ))
                } else if wanted == to {
                    Some(format!("the ticket is already at status {to}"))
                } else if changes == MAX_STATUS_CHANGES {
                    Some(format!(
                        "this event already changed the status {MAX_STATUS_CHANGES} times \
                         (workflows setting each other's status?): the chain stops here"
                    ))
                } else {
                    None
                };
                match reason {
                    Some(reason) => effects.push(Effect::SetStatusSkipped {
                        workflow: w.id.clone(),
                        action,
                        to: wanted,
                        reason,
                    }),
                    None => next = Some((Some(to.clone()), wanted, Why::Workflow)),
                }
            }
        }
    }
    effects
}

/// Whether a ticket of `source` at `status` meets `w`'s enrollment.
fn enrolls(w: &Workflow, source: Source, status: &str) -> bool {
    let source_ok = match w.enroll.source {
        Some(s) => s == source,
        None => source == Source::Email,
    };
    let status_ok = w.enroll.status.as_deref().is_none_or(|s| s == status);
    source_ok && status_ok
}

/// One action of a workflow: its effect, or a `set_status` for
/// [`decide`] to weigh against the chain.
enum Step {
    Effect(Effect),
    SetStatus { action: usize, to: String },
}

fn actions(config: &Config, _pipeline: &Pipeline, w: &Workflow, t: &TicketFacts<'_>) -> Vec<Step> {
    let agent = |id: &str| {
        config.user(id).map(|u| Agent {
            id: u.id.clone(),
            name: u.name.clone(),
            email: u.email.clone(),
        })
    };
    w.actions
        .iter()
        .enumerate()
        .map(|(i, a)| match &a.kind {
            // Decided by `decide`, which knows the chain.
            ActionKind::SetStatus(to) => Step::SetStatus {
                action: i,
                to: to.clone(),
            },
            ActionKind::SendEmail(template) => Step::Effect(Effect::SendEmail {
                workflow: w.id.clone(),
                action: i,
                template: template.clone(),
            }),
            ActionKind::Notify(target) => {
                let (to, none_reason) = match target {
                    NotifyTarget::User(id) => (
                        agent(id).into_iter().collect(),
                        format!("user {id} is not configured"),
                    ),
                    NotifyTarget::Team(id) => {
                        let members = config
                            .teams
                            .iter()
                            .find(|team| team.id == *id)
                            .map(|team| team.members.clone());
                        (
                            members
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|m| agent(m))
                                .collect::<Vec<_>>(),
                            format!("team {id} has no members"),
                        )
                    }
                    NotifyTarget::Owner => (
                        t.owner.and_then(agent).into_iter().collect(),
                        "the ticket has no owner".to_string(),
                    ),
                };
                Step::Effect(if to.is_empty() {
                    Effect::NotifySkipped {
                        workflow: w.id.clone(),
                        action: i,
                        reason: none_reason,
                    }
                } else {
                    Effect::Notify {
                        workflow: w.id.clone(),
                        action: i,
                        to,
                    }
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
