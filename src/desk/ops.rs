//! Operator commands (admin socket) and outbox delivery results, applied in
//! the engine's transaction like inbound mail.

use super::effects::{agent_reply, apply_effects, Cause};
use super::inbound::facts;
use super::records::*;
use super::timeline::{QueuedFor, TimelineEvent};
use super::{StoreError, Txn};
use crate::automation::{self, Event};
use crate::clock::Millis;
use crate::config::Config;
use crate::ingest::TicketId;

/// First retry within 30 s, doubling up to 15 minutes, given up after 5 days.
pub const RETRY_FIRST_MS: i64 = 30_000;
pub const RETRY_MAX_MS: i64 = 15 * 60_000;
pub const GIVE_UP_MS: i64 = 5 * 24 * 3_600_000;

pub fn retry_delay(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(16);
    (RETRY_FIRST_MS << shift).min(RETRY_MAX_MS)
}

fn ticket_or_not_found(tables: &impl Txn, id: TicketId) -> Result<TicketRec, StoreError> {
    tables
        .ticket(id)?
        .ok_or_else(|| StoreError::NotFound(format!("no ticket {id}")))
}

pub fn set_status(
    tables: &mut impl Txn,
    config: &Config,
    id: TicketId,
    status: &str,
    now: Millis,
) -> Result<TicketId, StoreError> {
    let mut t = ticket_or_not_found(tables, id)?;
    let Some(pipeline) = config.pipeline(&t.pipeline) else {
        return Err(StoreError::NotFound(format!(
            "ticket {id}'s pipeline {} is no longer configured",
            t.pipeline
        )));
    };
    if pipeline.status(status).is_none() {
        let known: Vec<&str> = pipeline.statuses.iter().map(|s| s.id.as_str()).collect();
        return Err(StoreError::NotFound(format!(
            "no status \"{status}\" in pipeline {} (known: {})",
            pipeline.id,
            known.join(", ")
        )));
    }
    let effects = automation::decide(config, &facts(&t), &Event::SetStatus { to: status });
    apply_effects(tables, config, &mut t, effects, &Cause::NONE, now)?;
    t.updated_at = now;
    tables.put_ticket(&t)?;
    Ok(id)
}

pub fn reply(
    tables: &mut impl Txn,
    config: &Config,
    id: TicketId,
    body: &str,
    user: Option<&str>,
    now: Millis,
) -> Result<u64, StoreError> {
    let mut t = ticket_or_not_found(tables, id)?;
    let agent = match user.or(t.owner.as_deref()) {
        Some(u) => config
            .user(u)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("no user \"{u}\"")))?,
        None => match config.users.first() {
            Some(u) => u.clone(),
            None => {
                return Err(StoreError::Invalid(
                    "no users are configured; give --user".into(),
                ))
            }
        },
    };
    let out = agent_reply(
        tables,
        config,
        &mut t,
        &agent,
        body,
        now,
        &QueuedFor::AdminReply { user: &agent.id },
    )?;
    let effects = automation::decide(config, &facts(&t), &Event::AgentEmailed);
    apply_effects(tables, config, &mut t, effects, &Cause::NONE, now)?;
    t.updated_at = now;
    tables.put_ticket(&t)?;
    Ok(out)
}

pub fn assign(
    tables: &mut impl Txn,
    config: &Config,
    id: TicketId,
    owner: &str,
    now: Millis,
) -> Result<TicketId, StoreError> {
    let mut t = ticket_or_not_found(tables, id)?;
    if config.user(owner).is_none() {
        let known: Vec<&str> = config.users.iter().map(|u| u.id.as_str()).collect();
        return Err(StoreError::NotFound(format!(
            "no user \"{owner}\" (known: {})",
            known.join(", ")
        )));
    }
    let from = t.owner.replace(owner.to_string());
    t.updated_at = now;
    tables.event(
        id,
        now,
        &TimelineEvent::Assigned {
            from: from.as_deref(),
            to: owner,
        },
    )?;
    tables.put_ticket(&t)?;
    Ok(id)
}

/// Moves the source ticket's messages, participants and thread into the
/// target; the source is closed (without running workflows: nobody should
/// get a "your ticket is closed" email for a merge) and points at the
/// target, so every future reply to either thread lands on the target.
pub fn merge(
    tables: &mut impl Txn,
    config: &Config,
    source: TicketId,
    target: TicketId,
    now: Millis,
) -> Result<TicketId, StoreError> {
    if source == target {
        return Err(StoreError::Invalid(
            "cannot merge a ticket into itself".into(),
        ));
    }
    let mut src = ticket_or_not_found(tables, source)?;
    let mut dst = ticket_or_not_found(tables, target)?;
    if let Some(into) = src.merged_into {
        return Err(StoreError::Invalid(format!(
            "ticket {source} was already merged into {into}"
        )));
    }
    if let Some(into) = dst.merged_into {
        return Err(StoreError::Invalid(format!(
            "ticket {target} was merged into {into}; merge into that one"
        )));
    }
    let seqs = tables.ticket_message_seqs(source)?;
    for seq in &seqs {
        tables.move_message(*seq, source, target)?;
    }
    for p in &src.participants {
        if !dst.participants.contains(p) {
            dst.participants.push(p.clone());
        }
    }
    for id in &src.thread {
        dst.push_thread(id);
    }
    dst.updated_at = now;
    let closed = config
        .pipeline(&src.pipeline)
        .and_then(|p| p.statuses.iter().find(|s| s.closed))
        .map(|s| s.id.clone());
    let from = src.status.clone();
    if let Some(closed) = closed {
        src.status = closed;
    }
    src.merged_into = Some(target);
    src.updated_at = now;
    tables.event(
        source,
        now,
        &TimelineEvent::MergedInto {
            target,
            from_status: &from,
            status: &src.status,
            messages: seqs.len(),
        },
    )?;
    tables.event(
        target,
        now,
        &TimelineEvent::MergedFrom {
            source,
            messages: seqs.len(),
        },
    )?;
    tables.put_ticket(&src)?;
    tables.put_ticket(&dst)?;
    Ok(target)
}

/// What the outbox worker reports for one delivery attempt.
#[derive(Debug, Clone)]
pub enum Delivery {
    Sent,
    Transient(String),
    Permanent(String),
}

pub fn delivered(
    tables: &mut impl Txn,
    id: u64,
    result: &Delivery,
    now: Millis,
) -> Result<(), StoreError> {
    let Some(mut rec) = tables.outbox(id)? else {
        return Ok(());
    };
    if rec.state != OutState::Queued {
        return Ok(());
    }
    let was_due = rec.next_attempt_at;
    rec.attempts += 1;
    match result {
        Delivery::Sent => {
            rec.state = OutState::Sent;
            rec.sent_at = Some(now);
            rec.next_attempt_at = None;
            tables.event(
                rec.ticket,
                now,
                &TimelineEvent::EmailSent {
                    kind: rec.kind,
                    rcpt: &rec.rcpt,
                    message_id: &rec.message_id,
                    outbox: id,
                    attempts: rec.attempts,
                },
            )?;
        }
        Delivery::Transient(err) if now - rec.created_at < GIVE_UP_MS => {
            let next = now + retry_delay(rec.attempts);
            rec.next_attempt_at = Some(next);
            rec.last_error = Some(err.clone());
        }
        Delivery::Transient(err) | Delivery::Permanent(err) => {
            let gave_up = matches!(result, Delivery::Transient(_));
            rec.state = OutState::Failed;
            rec.next_attempt_at = None;
            rec.last_error = Some(err.clone());
            let why = if gave_up {
                format!("gave up after 5 days: {err}")
            } else {
                err.clone()
            };
            tables.event(
                rec.ticket,
                now,
                &TimelineEvent::DeliveryFailed {
                    kind: rec.kind,
                    rcpt: &rec.rcpt,
                    message_id: &rec.message_id,
                    outbox: id,
                    error: err,
                    why: &why,
                    attempts: rec.attempts,
                },
            )?;
        }
    }
    tables.put_outbox(&rec, was_due)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_from_30s_to_15min() {
        let delays: Vec<i64> = (1..=8).map(super::retry_delay).collect();
        assert_eq!(
            delays,
            vec![30_000, 60_000, 120_000, 240_000, 480_000, 900_000, 900_000, 900_000]
        );
    }
}
