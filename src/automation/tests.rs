#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::config::Config;

const BASE: &str = r#"
[server]
templates = "@TEMPLATES@"
data_dir = "/tmp/postdesk-automation-test"

[outbound]
from = "Acme Support <support@acme.example>"

[[user]]
id = "alice"
email = "alice@acme.example"

[[user]]
id = "bob"
email = "bob@acme.example"

[[team]]
id = "tier1"
members = ["alice", "bob"]

[[team]]
id = "empty"
members = []

[[channel]]
id = "support"
addresses = ["support@acme.example"]
pipeline = "support"

[[pipeline]]
id = "support"
statuses = [
  { id = "new" },
  { id = "waiting_on_contact" },
  { id = "waiting_on_us" },
  { id = "closed", closed = true },
]
initial_status = "new"
reply_to_closed = "@REPLY_TO_CLOSED@"

[pipeline.triggers]
email_sent_to_customer = { enabled = @SENT@, set_status = "waiting_on_contact" }
customer_replied       = { enabled = @REPLIED@, set_status = "waiting_on_us" }

[[workflow]]
id = "ack-new"
pipeline = "support"
enroll = { status = "new" }
actions = [ { send_email = "ticket_received" }, { notify = { team = "tier1" } } ]

[[workflow]]
id = "closed-mail"
pipeline = "support"
enroll = { status = "closed" }
reenroll = @REENROLL@
actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

[[workflow]]
id = "chat-intake"
pipeline = "support"
enroll = { source = "chat" }
actions = [ { notify = { user = "bob" } }, { notify = { team = "empty" } } ]
"#;

fn config(reply_to_closed: &str, sent: bool, replied: bool, reenroll: bool) -> Config {
    load(&base(reply_to_closed, sent, replied, reenroll))
}

/// BASE with its placeholders filled in.
fn base(reply_to_closed: &str, sent: bool, replied: bool, reenroll: bool) -> String {
    let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
    BASE.replace("@TEMPLATES@", templates)
        .replace("@REPLY_TO_CLOSED@", reply_to_closed)
        .replace("@SENT@", &sent.to_string())
        .replace("@REPLIED@", &replied.to_string())
        .replace("@REENROLL@", &reenroll.to_string())
}

/// The config `text`, loaded by the real loader.
fn load(text: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postdesk.toml");
    std::fs::write(&path, text).unwrap();
    match crate::config::load(&path) {
        Ok(c) => c,
        Err(p) => panic!("{p}"),
    }
}

/// The default config with more workflows appended.
fn config_with(workflows: &str) -> Config {
    load(&(base("reopen", true, true, false) + workflows))
}

fn default_config() -> Config {
    config("reopen", true, true, false)
}

fn show(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(|e| match e {
            Effect::StatusChanged { from, to, why } => {
                format!(
                    "status {}->{to} ({})",
                    from.as_deref().unwrap_or("-"),
                    why.as_str()
                )
            }
            Effect::WorkflowRan { workflow } => format!("workflow {workflow}"),
            Effect::SendEmail {
                template, action, ..
            } => format!("  [{action}] send {template}"),
            Effect::Notify { to, action, .. } => {
                format!(
                    "  [{action}] notify {}",
                    to.iter()
                        .map(|a| a.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            Effect::NotifySkipped { reason, action, .. } => {
                format!("  [{action}] skipped: {reason}")
            }
            Effect::SetStatusSkipped {
                reason, action, to, ..
            } => {
                format!("  [{action}] not set to {to}: {reason}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(
    config: &Config,
    status: &str,
    source: Source,
    owner: Option<&str>,
    ran: &[&str],
    event: Event<'_>,
    expect: &str,
) {
    let ran: Vec<String> = ran.iter().map(|s| s.to_string()).collect();
    let facts = TicketFacts {
        pipeline: "support",
        status,
        source,
        owner,
        workflows_ran: &ran,
    };
    let got = show(&decide(config, &facts, &event));
    assert_eq!(got, expect.trim(), "\nevent {event:?} at {status}");
}

#[test]
fn new_email_ticket_runs_the_ack_workflow() {
    check(
        &default_config(),
        "new",
        Source::Email,
        None,
        &[],
        Event::Created,
        "status -->new (created)\nworkflow ack-new\n  [0] send ticket_received\n  [1] notify alice,bob",
    );
}

#[test]
fn customer_reply_moves_to_waiting_on_us_and_runs_nothing_new() {
    let c = default_config();
    check(
        &c,
        "waiting_on_contact",
        Source::Email,
        None,
        &["ack-new"],
        Event::CustomerReplied { automatic: false },
        "status waiting_on_contact->waiting_on_us (customer_replied)",
    );
    // Already there: no change, no effects.
    check(
        &c,
        "waiting_on_us",
        Source::Email,
        None,
        &[],
        Event::CustomerReplied { automatic: false },
        "",
    );
    // Out-of-office and other automatic mail never move a ticket.
    check(
        &c,
        "waiting_on_contact",
        Source::Email,
        None,
        &[],
        Event::CustomerReplied { automatic: true },
        "",
    );
}

#[test]
fn triggers_can_be_disabled() {
    let off = config("reopen", false, false, false);
    check(
        &off,
        "new",
        Source::Email,
        None,
        &["ack-new"],
        Event::CustomerReplied { automatic: false },
        "",
    );
    check(
        &off,
        "new",
        Source::Email,
        None,
        &["ack-new"],
        Event::AgentEmailed,
        "",
    );
    let on = default_config();
    check(
        &on,
        "new",
        Source::Email,
        None,
        &["ack-new"],
        Event::AgentEmailed,
        "status new->waiting_on_contact (email_sent_to_customer)",
    );
}

#[test]
fn closing_runs_closed_mail_and_notifies_the_owner_or_skips() {
    let c = default_config();
    check(&c, "waiting_on_us", Source::Email, Some("alice"), &["ack-new"], Event::SetStatus { to: "closed" }, "status waiting_on_us->closed (admin)\nworkflow closed-mail\n  [0] send ticket_closed\n  [1] notify alice");
    check(&c, "waiting_on_us", Source::Email, None, &["ack-new"], Event::SetStatus { to: "closed" }, "status waiting_on_us->closed (admin)\nworkflow closed-mail\n  [0] send ticket_closed\n  [1] skipped: the ticket has no owner");
}

#[test]
fn reenroll_off_runs_once_on_runs_each_time() {
    let once = default_config();
    check(
        &once,
        "waiting_on_us",
        Source::Email,
        None,
        &["ack-new", "closed-mail"],
        Event::SetStatus { to: "closed" },
        "status waiting_on_us->closed (admin)",
    );
    let again = config("reopen", true, true, true);
    check(&again, "waiting_on_us", Source::Email, None, &["ack-new", "closed-mail"], Event::SetStatus { to: "closed" }, "status waiting_on_us->closed (admin)\nworkflow closed-mail\n  [0] send ticket_closed\n  [1] skipped: the ticket has no owner");
    // ack-new with reenroll off does not run when a ticket goes back to new.
    check(
        &once,
        "waiting_on_us",
        Source::Email,
        None,
        &["ack-new"],
        Event::SetStatus { to: "new" },
        "status waiting_on_us->new (admin)",
    );
}

#[test]
fn reply_to_closed_reopens_to_the_trigger_status_or_initial() {
    let c = default_config();
    check(
        &c,
        "closed",
        Source::Email,
        None,
        &["ack-new", "closed-mail"],
        Event::CustomerReplied { automatic: false },
        "status closed->waiting_on_us (reopened)",
    );
    let off = config("reopen", true, false, false);
    check(
        &off,
        "closed",
        Source::Email,
        None,
        &["ack-new", "closed-mail"],
        Event::CustomerReplied { automatic: false },
        "status closed->new (reopened)",
    );
    // An out-of-office on a closed ticket does not reopen it.
    check(
        &c,
        "closed",
        Source::Email,
        None,
        &[],
        Event::CustomerReplied { automatic: true },
        "",
    );
}

#[test]
fn route_reply_new_ticket_mode() {
    let c = config("new_ticket", true, true, false);
    let ran = Vec::new();
    let closed = TicketFacts {
        pipeline: "support",
        status: "closed",
        source: Source::Email,
        owner: None,
        workflows_ran: &ran,
    };
    let open = TicketFacts {
        status: "new",
        ..closed.clone()
    };
    assert_eq!(
        route_reply(&c, &closed, false, false),
        ReplyRoute::NewLinkedTicket
    );
    assert_eq!(
        route_reply(&c, &closed, true, false),
        ReplyRoute::SameTicket,
        "agents stay on the ticket"
    );
    assert_eq!(
        route_reply(&c, &closed, false, true),
        ReplyRoute::SameTicket,
        "automatic mail opens nothing"
    );
    assert_eq!(route_reply(&c, &open, false, false), ReplyRoute::SameTicket);
    assert_eq!(
        route_reply(&default_config(), &closed, false, false),
        ReplyRoute::SameTicket
    );
}

#[test]
fn source_rules() {
    let c = default_config();
    // Email-only workflows never run on chat tickets; chat-intake only on chat.
    check(&c, "new", Source::Chat, None, &[], Event::Created, "status -->new (created)\nworkflow chat-intake\n  [0] notify bob\n  [1] skipped: team empty has no members");
    // Source-only enrollment is met once, at creation, not on every change.
    check(
        &c,
        "new",
        Source::Chat,
        None,
        &["chat-intake"],
        Event::SetStatus {
            to: "waiting_on_us",
        },
        "status new->waiting_on_us (admin)",
    );
    check(
        &c,
        "new",
        Source::Chat,
        None,
        &[],
        Event::SetStatus {
            to: "waiting_on_us",
        },
        "status new->waiting_on_us (admin)",
    );
}

#[test]
fn set_status_runs_after_the_status_workflows_and_chains_on() {
    let c = config_with(
        r#"
[[workflow]]
id = "triage"
pipeline = "support"
enroll = { status = "new" }
actions = [ { set_status = "waiting_on_us" }, { set_status = "closed" } ]

[[workflow]]
id = "note-new"
pipeline = "support"
enroll = { status = "new" }
actions = [ { notify = { user = "alice" } } ]

[[workflow]]
id = "escalate"
pipeline = "support"
enroll = { status = "waiting_on_us" }
actions = [ { set_status = "waiting_on_us" }, { set_status = "closed" } ]
"#,
    );
    check(
        &c,
        "new",
        Source::Email,
        None,
        &[],
        Event::Created,
        "
status -->new (created)
workflow ack-new
  [0] send ticket_received
  [1] notify alice,bob
workflow triage
  [1] not set to closed: an earlier set_status at status new already set status waiting_on_us
workflow note-new
  [0] notify alice
status new->waiting_on_us (workflow)
workflow escalate
  [0] not set to waiting_on_us: the ticket is already at status waiting_on_us
status waiting_on_us->closed (workflow)
workflow closed-mail
  [0] send ticket_closed
  [1] skipped: the ticket has no owner",
    );
}

#[test]
fn a_set_status_ping_pong_stops_after_eight_changes() {
    let c = config_with(
        r#"
[[workflow]]
id = "ping"
pipeline = "support"
enroll = { status = "waiting_on_us" }
reenroll = true
actions = [ { set_status = "waiting_on_contact" } ]

[[workflow]]
id = "pong"
pipeline = "support"
enroll = { status = "waiting_on_contact" }
reenroll = true
actions = [ { set_status = "waiting_on_us" } ]
"#,
    );
    let facts = TicketFacts {
        pipeline: "support",
        status: "new",
        source: Source::Email,
        owner: None,
        workflows_ran: &["ack-new".to_string()],
    };
    let effects = decide(
        &c,
        &facts,
        &Event::SetStatus {
            to: "waiting_on_us",
        },
    );
    let changes = effects
        .iter()
        .filter(|e| matches!(e, Effect::StatusChanged { .. }))
        .count();
    assert_eq!(changes, MAX_STATUS_CHANGES);
    let last = show(&effects[effects.len() - 3..]);
    assert_eq!(
        last,
        "status waiting_on_us->waiting_on_contact (workflow)\nworkflow pong\n  [0] not set to \
         waiting_on_us: this event already changed the status 8 times (workflows setting each \
         other's status?): the chain stops here"
    );
    // Without reenroll each runs once, and the chain ends by itself.
    let once = config_with(
        r#"
[[workflow]]
id = "ping"
pipeline = "support"
enroll = { status = "waiting_on_us" }
actions = [ { set_status = "waiting_on_contact" } ]

[[workflow]]
id = "pong"
pipeline = "support"
enroll = { status = "waiting_on_contact" }
actions = [ { set_status = "waiting_on_us" } ]
"#,
    );
    check(
        &once,
        "new",
        Source::Email,
        None,
        &["ack-new"],
        Event::SetStatus {
            to: "waiting_on_us",
        },
        "
status new->waiting_on_us (admin)
workflow ping
status waiting_on_us->waiting_on_contact (workflow)
workflow pong
status waiting_on_contact->waiting_on_us (workflow)",
    );
}
