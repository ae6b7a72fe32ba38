//! SPEC §3 (status triggers, workflows, chat channels), §6 (loop
//! protection) and reload (§1, §7): what postdesk decides, seen through the
//! admin socket, the outbox and the `.eml` files it writes.
//!
//! The outbox row of an email is committed with the decision that queued it,
//! so after a `250` or an admin answer "nothing was queued" is already
//! true: the tests read the outbox instead of waiting for mail that should
//! not come.

use serde_json::{json, Value};

use crate::support::eml::{self, footer, Eml};
use crate::support::ACK_NEW;
use crate::support::{
    config_with, edit_config, msg, timeline_events, timeline_kinds, unique_id, wait_until, Client,
    Daemon, Msg, DEADLINE,
};

/// On closing: tell the customer, and the owner.
const CLOSED_MAIL: &str = r#"
[[workflow]]
id = "closed-mail"
pipeline = "support"
enroll = { status = "closed" }
actions = [
  { send_email = "ticket_closed" },
  { notify = { owner = true } },
]
"#;

const TRIGGER_CUSTOMER_REPLIED_ON: &str = "customer_replied       = { enabled = true";
const TRIGGER_CUSTOMER_REPLIED_OFF: &str = "customer_replied       = { enabled = false";
const TRIGGER_EMAIL_SENT_ON: &str = "email_sent_to_customer = { enabled = true";
const TRIGGER_EMAIL_SENT_OFF: &str = "email_sent_to_customer = { enabled = false";

/// Subjects of the shipped templates.
const RECEIVED: &str = "We received your request";
const CLOSED: &str = "Your request has been closed";

/// The outbox entries (any state) of ticket `id`.
fn outbox_for(d: &Daemon, id: u64) -> Vec<Value> {
    d.outbox_all()
        .into_iter()
        .filter(|o| o["ticket"] == id)
        .collect()
}

/// How many outbox entries of ticket `id` have a subject starting with
/// `prefix`.
fn count_subject(d: &Daemon, id: u64, prefix: &str) -> usize {
    outbox_for(d, id)
        .iter()
        .filter(|o| {
            o["subject"]
                .as_str()
                .unwrap_or_default()
                .starts_with(prefix)
        })
        .count()
}

/// The `to` of an outbox entry, as text (a string or a list).
fn to_of(o: &Value) -> String {
    o["to"].to_string()
}

/// `set_status`, which must succeed; the updated ticket.
fn set_status(d: &Daemon, id: u64, status: &str) -> Value {
    let t = d.cmd(json!({"cmd": "set_status", "id": id, "status": status}));
    assert_eq!(
        t["status"], status,
        "set_status returns the updated ticket: {t:#}"
    );
    t
}

/// The `status_changed` entries of a ticket, as (from, to, why).
fn status_changes(t: &Value) -> Vec<(String, String, String)> {
    timeline_events(t, "status_changed")
        .iter()
        .map(|e| {
            let f = |k: &str| e["detail"][k].as_str().unwrap_or("?").to_string();
            (f("from"), f("to"), f("why"))
        })
        .collect()
}

fn change(from: &str, to: &str, why: &str) -> (String, String, String) {
    (from.to_string(), to.to_string(), why.to_string())
}

/// Whether `v` names ticket `id` anywhere (a number, `"3"`, `"#3"`).
fn mentions_id(v: &Value, id: u64) -> bool {
    match v {
        Value::Number(n) => n.as_u64() == Some(id),
        Value::String(s) => s == &id.to_string() || s == &format!("#{id}"),
        Value::Array(items) => items.iter().any(|x| mentions_id(x, id)),
        Value::Object(map) => map.values().any(|x| mentions_id(x, id)),
        _ => false,
    }
}

/// The `suppressed` reasons on a ticket's timeline.
fn suppressed_reasons(t: &Value) -> Vec<String> {
    timeline_events(t, "suppressed")
        .iter()
        .map(|e| e["detail"]["reason"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The email of ticket `id` to `addr` whose subject starts with `prefix`,
/// once it is written.
fn wait_email(d: &Daemon, id: u64, addr: &str, prefix: &str) -> Eml {
    eml::wait_for_one(
        &d.sent_dir(),
        DEADLINE,
        &format!("an email {prefix:?} to {addr} about ticket {id}"),
        |e| e.ticket() == Some(id) && e.is_to(addr) && e.subject().starts_with(prefix),
    )
}

/// Carol's first message on a new thread.
fn carol(subject: &str) -> Msg {
    msg()
        .from("Carol Customer <carol@example.com>")
        .subject(subject)
}

/// Carol's reply to `parent` (a Message-ID).
fn carol_reply(subject: &str, parent: &str) -> Msg {
    carol(&format!("Re: {subject}"))
        .in_reply_to(parent)
        .references(parent)
        .body("Here is more about it.\n")
}

// ---- customer_replied ----

#[test]
fn customer_replied_moves_the_ticket_to_its_status() {
    let d = Daemon::start(&config_with("", &[]));
    let first = carol("Login broken");
    let id = d.send_ok(&first);
    assert_eq!(d.ticket(id)["status"], "new");

    assert_eq!(d.send_ok(&carol_reply("Login broken", &first.mid())), id);
    let t = d.ticket(id);
    assert_eq!(t["status"], "waiting_on_us", "{t:#}");
    assert_eq!(
        status_changes(&t),
        vec![change("new", "waiting_on_us", "customer_replied")],
        "{t:#}"
    );
}

#[test]
fn customer_replied_disabled_leaves_the_status() {
    let d = Daemon::start(&config_with(
        "",
        &[(TRIGGER_CUSTOMER_REPLIED_ON, TRIGGER_CUSTOMER_REPLIED_OFF)],
    ));
    let first = carol("Login broken");
    let id = d.send_ok(&first);
    assert_eq!(d.send_ok(&carol_reply("Login broken", &first.mid())), id);
    let t = d.ticket(id);
    assert_eq!(t["status"], "new", "{t:#}");
    assert!(status_changes(&t).is_empty(), "{t:#}");
    assert_eq!(t["messages"].as_array().map(Vec::len), Some(2), "{t:#}");
}

// ---- email_sent_to_customer ----

#[test]
fn an_agent_reply_fires_email_sent_to_customer() {
    let d = Daemon::start(&config_with("", &[]));
    let id = d.send_ok(&carol("Where is my order"));

    let queued =
        d.cmd(json!({"cmd": "reply", "id": id, "body": "It ships today.", "user": "alice"}));
    let t = d.ticket(id);
    assert_eq!(
        t["status"], "waiting_on_contact",
        "{t:#}\nreply: {queued:#}"
    );
    assert_eq!(
        status_changes(&t),
        vec![change(
            "new",
            "waiting_on_contact",
            "email_sent_to_customer"
        )],
        "{t:#}"
    );
    let q = timeline_events(&t, "email_queued");
    assert_eq!(q.len(), 1, "{t:#}");
    assert_eq!(q[0]["detail"]["kind"], "agent_reply", "{t:#}");

    let e = wait_email(&d, id, "carol@example.com", "");
    assert!(e.text().contains("It ships today."), "{}", e.raw);
    assert_eq!(e.header("Auto-Submitted"), None, "{}", e.raw);
    assert_eq!(footer(&e.text()), None, "{}", e.raw);
}

#[test]
fn an_agent_reply_with_email_sent_to_customer_disabled_leaves_the_status() {
    let d = Daemon::start(&config_with(
        "",
        &[(TRIGGER_EMAIL_SENT_ON, TRIGGER_EMAIL_SENT_OFF)],
    ));
    let id = d.send_ok(&carol("Where is my order"));
    d.cmd(json!({"cmd": "reply", "id": id, "body": "It ships today.", "user": "alice"}));
    let t = d.ticket(id);
    assert_eq!(t["status"], "new", "{t:#}");
    assert!(status_changes(&t).is_empty(), "{t:#}");
    // The reply itself still goes out.
    let e = wait_email(&d, id, "carol@example.com", "");
    assert!(e.text().contains("It ships today."), "{}", e.raw);
}

#[test]
fn an_automatic_email_never_fires_email_sent_to_customer() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));
    let id = d.send_ok(&carol("Automatic only"));
    wait_email(&d, id, "carol@example.com", RECEIVED);
    // After the send is recorded, too.
    let t = wait_until(DEADLINE, "email_sent on the timeline", || {
        let t = d.ticket(id);
        if timeline_events(&t, "email_sent").is_empty() {
            Err(format!("{:?}", timeline_kinds(&t)))
        } else {
            Ok(t)
        }
    });
    assert_eq!(t["status"], "new", "{t:#}");
    assert!(status_changes(&t).is_empty(), "{t:#}");
}

/// Notifies alice of every new ticket: her notification's Reply-To is her
/// signed address for that ticket.
pub const NOTIFY_ALICE: &str = r#"
[[workflow]]
id = "notify-new"
pipeline = "support"
enroll = { status = "new" }
actions = [ { notify = { user = "alice" } } ]
"#;

#[test]
fn an_agent_reply_by_email_is_relayed_to_the_contact() {
    let d = Daemon::start(&config_with(NOTIFY_ALICE, &[]));
    let first = carol("Refund");
    let id = d.send_ok(&first);
    let note = wait_email(&d, id, "alice@acme.example", "");
    let signed = note.header("Reply-To").unwrap_or_default().to_string();

    // Alice answers her notification: to her own signed address.
    let agent = msg()
        .from("Alice Agent <alice@acme.example>")
        .to("support@acme.example")
        .rcpt_to(&signed)
        .subject(&format!("Re: Refund [#{id}]"))
        .in_reply_to(&note.message_id())
        .references(&note.message_id())
        .body("Your refund was approved today.\n\nAlice\n");
    assert_eq!(d.send_ok(&agent), id, "the agent's reply joins the ticket");

    let e = wait_email(&d, id, "carol@example.com", "");
    let raw = &e.raw;
    let from = e.header("From").unwrap_or_default();
    assert!(
        from.contains("support@acme.example"),
        "relayed from the channel address, got {from:?}:\n{raw}"
    );
    assert!(!from.contains("alice@acme.example"), "{raw}");
    assert!(
        e.text().contains("Your refund was approved today."),
        "the agent's text is relayed:\n{raw}"
    );
    assert_eq!(e.ticket(), Some(id), "{raw}");
    assert!(
        e.message_id().ends_with("@desk.acme.example>"),
        "a fresh Message-ID:\n{raw}"
    );
    let reply_to = e.header("Reply-To").unwrap_or_default();
    assert!(
        reply_to.starts_with(&format!("support+{id}.")) && reply_to != signed,
        "the customer gets the ticket's signed address, not the agent's:\n{raw}"
    );
    let known = [first.mid(), agent.mid()];
    let irt = e.in_reply_to();
    assert!(
        irt.len() == 1 && known.contains(&irt[0]),
        "In-Reply-To stays in the thread ({known:?}), got {irt:?}:\n{raw}"
    );
    assert!(
        e.references().contains(&first.mid()),
        "References keep the customer's message:\n{raw}"
    );
    assert_eq!(
        e.header("Auto-Submitted"),
        None,
        "an agent's reply is not automatic:\n{raw}"
    );

    let t = d.ticket(id);
    assert_eq!(t["status"], "waiting_on_contact", "{t:#}");
    assert_eq!(
        status_changes(&t),
        vec![change(
            "new",
            "waiting_on_contact",
            "email_sent_to_customer"
        )],
        "an agent is not a customer: no customer_replied\n{t:#}"
    );
    // The notification to alice, and the relayed reply: nothing else.
    let files = eml::read_dir(&d.sent_dir());
    assert_eq!(files.len(), 2, "{}", eml::describe(&files));
}

// ---- workflows on closing ----

#[test]
fn closing_sends_ticket_closed_and_notifies_the_owner() {
    let d = Daemon::start(&config_with(CLOSED_MAIL, &[]));
    let id = d.send_ok(&carol("Please close me"));
    let t = d.cmd(json!({"cmd": "assign", "id": id, "owner": "alice"}));
    assert_eq!(
        t["owner"], "alice",
        "assign returns the updated ticket: {t:#}"
    );
    assert!(
        timeline_kinds(&d.ticket(id)).contains(&"assigned".to_string()),
        "{:#}",
        d.ticket(id)
    );

    set_status(&d, id, "closed");
    let t = d.ticket(id);
    assert_eq!(
        status_changes(&t),
        vec![change("new", "closed", "admin")],
        "{t:#}"
    );
    assert!(
        timeline_events(&t, "workflow_ran")
            .iter()
            .any(|e| e["detail"]["workflow"] == "closed-mail"),
        "{t:#}"
    );
    let out = outbox_for(&d, id);
    assert_eq!(out.len(), 2, "{out:#?}");

    let closed = wait_email(&d, id, "carol@example.com", CLOSED);
    assert_eq!(closed.header("Auto-Submitted"), Some("auto-replied"));
    assert!(closed.subject().ends_with(&format!("[#{id}]")));
    let note = wait_email(&d, id, "alice@acme.example", "");
    assert_eq!(
        note.header("Auto-Submitted"),
        Some("auto-generated"),
        "{}",
        note.raw
    );
    assert!(!note.is_to("carol@example.com"), "{}", note.raw);
}

#[test]
fn closing_without_an_owner_notes_notify_skipped() {
    let d = Daemon::start(&config_with(CLOSED_MAIL, &[]));
    let id = d.send_ok(&carol("Nobody owns me"));
    set_status(&d, id, "closed");
    let t = d.ticket(id);
    assert_eq!(
        timeline_events(&t, "notify_skipped").len(),
        1,
        "no owner: the notify action is skipped, with a note\n{t:#}"
    );
    let out = outbox_for(&d, id);
    assert_eq!(out.len(), 1, "only ticket_closed: {out:#?}");
    assert!(to_of(&out[0]).contains("carol@example.com"), "{out:#?}");
    wait_email(&d, id, "carol@example.com", CLOSED);
}

// ---- a reply to a closed ticket ----

/// Carol's ticket, closed by an agent; the daemon, the ticket id and the
/// first message.
fn closed_ticket(config: &str) -> (Daemon, u64, Msg) {
    let d = Daemon::start(config);
    let first = carol("Closed too soon");
    let id = d.send_ok(&first);
    set_status(&d, id, "closed");
    (d, id, first)
}

#[test]
fn a_reply_to_a_closed_ticket_reopens_it() {
    let (d, id, first) = closed_ticket(&config_with("", &[]));
    let reply = carol_reply("Closed too soon", &first.mid());
    assert_eq!(d.send_ok(&reply), id, "reopen mode: the same ticket");
    let t = d.ticket(id);
    assert_eq!(t["status"], "waiting_on_us", "{t:#}");
    assert_eq!(timeline_events(&t, "reopened").len(), 1, "{t:#}");
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn a_reply_to_a_closed_ticket_reopens_at_initial_status_without_customer_replied() {
    let (d, id, first) = closed_ticket(&config_with(
        "",
        &[(TRIGGER_CUSTOMER_REPLIED_ON, TRIGGER_CUSTOMER_REPLIED_OFF)],
    ));
    assert_eq!(d.send_ok(&carol_reply("Closed too soon", &first.mid())), id);
    let t = d.ticket(id);
    assert_eq!(t["status"], "new", "{t:#}");
    assert_eq!(timeline_events(&t, "reopened").len(), 1, "{t:#}");
}

#[test]
fn a_reply_to_a_closed_ticket_in_new_ticket_mode_opens_a_linked_ticket() {
    let (d, id, first) = closed_ticket(&config_with(
        "",
        &[(
            r#"reply_to_closed = "reopen""#,
            r#"reply_to_closed = "new_ticket""#,
        )],
    ));
    let reply = carol_reply("Closed too soon", &first.mid());
    let other = d.send_ok(&reply);
    assert_ne!(other, id, "new_ticket mode: a new ticket");

    let old = d.ticket(id);
    assert_eq!(
        old["status"], "closed",
        "the old ticket stays closed: {old:#}"
    );
    let new = d.ticket(other);
    assert_eq!(new["status"], "new", "{new:#}");
    assert_eq!(new["contact"]["email"], "carol@example.com", "{new:#}");
    assert!(
        crate::support::message_ids(&new).contains(&reply.mid()),
        "the reply is on the new ticket: {new:#}"
    );
    let old_links = timeline_events(&old, "linked");
    let new_links = timeline_events(&new, "linked");
    assert!(
        old_links.iter().any(|e| mentions_id(&e["detail"], other)),
        "the old ticket links to {other}: {old:#}"
    );
    assert!(
        new_links.iter().any(|e| mentions_id(&e["detail"], id)),
        "the new ticket links to {id}: {new:#}"
    );
    assert_eq!(d.tickets().len(), 2);
}

// ---- re-enrollment ----

/// Closes, reopens and closes ticket 1 with `reenroll` as given; how many
/// ticket_closed emails were queued.
fn ticket_closed_count(reenroll: bool) -> (usize, Value) {
    let workflow = format!(
        "\n[[workflow]]\nid = \"closed-mail\"\npipeline = \"support\"\nenroll = {{ status = \"closed\" }}\nreenroll = {reenroll}\nactions = [ {{ send_email = \"ticket_closed\" }} ]\n"
    );
    let d = Daemon::start(&config_with(&workflow, &[]));
    let id = d.send_ok(&carol("Again and again"));
    set_status(&d, id, "closed");
    set_status(&d, id, "waiting_on_us");
    set_status(&d, id, "closed");
    (count_subject(&d, id, CLOSED), d.ticket(id))
}

#[test]
fn without_reenroll_a_workflow_runs_once_per_ticket() {
    let (n, t) = ticket_closed_count(false);
    assert_eq!(n, 1, "ticket_closed once: {t:#}");
    let ran = timeline_events(&t, "workflow_ran");
    assert_eq!(ran.len(), 1, "{t:#}");
}

#[test]
fn with_reenroll_a_workflow_runs_each_time() {
    let (n, t) = ticket_closed_count(true);
    assert_eq!(n, 2, "ticket_closed twice: {t:#}");
    let ran = timeline_events(&t, "workflow_ran");
    assert_eq!(ran.len(), 2, "{t:#}");
}

// ---- notifications ----

#[test]
fn a_team_notification_goes_to_every_member() {
    let config = config_with(
        r#"
[[workflow]]
id = "tell-tier1"
pipeline = "support"
enroll = { status = "new" }
actions = [ { notify = { team = "tier1" } } ]
"#,
        &[
            (
                "email = \"alice@acme.example\"\n",
                "email = \"alice@acme.example\"\n\n[[user]]\nid = \"bob\"\nname = \"Bob Agent\"\nemail = \"bob@acme.example\"\n",
            ),
            (r#"members = ["alice"]"#, r#"members = ["alice", "bob"]"#),
        ],
    );
    let d = Daemon::start(&config);
    let id = d.send_ok(&carol("Everyone look"));
    let out = outbox_for(&d, id);
    assert_eq!(out.len(), 2, "one notification per member: {out:#?}");
    for addr in ["alice@acme.example", "bob@acme.example"] {
        let e = wait_email(&d, id, addr, "");
        assert_eq!(
            e.header("Auto-Submitted"),
            Some("auto-generated"),
            "{}",
            e.raw
        );
    }
    let files = eml::read_dir(&d.sent_dir());
    assert!(
        !files.iter().any(|e| e.is_to("carol@example.com")),
        "nothing to the customer: {}",
        eml::describe(&files)
    );
}

// ---- chat channels ----

/// The default config with a chat channel (chat@acme.example) and `extra`.
fn chat_config(extra: &str) -> String {
    config_with(
        extra,
        &[(
            "[[pipeline]]",
            "[[channel]]\nid = \"chat\"\naddresses = [\"chat@acme.example\"]\npipeline = \"support\"\nsource = \"chat\"\n\n[[pipeline]]",
        )],
    )
}

#[test]
fn chat_without_an_enrolling_workflow_is_kept_as_a_conversation() {
    let d = Daemon::start(&chat_config(ACK_NEW));
    let m = carol("Chat transcript").to("chat@acme.example");
    let reply = d.send(&m);
    assert!(
        reply.is_kept(),
        "no workflow enrolls source chat: `250 2.0.0 Ok: kept`, got {reply}"
    );
    assert!(d.tickets().is_empty(), "{:#?}", d.tickets());
    let kept = d.conversations();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0]["message_id"], m.mid().as_str(), "{kept:#?}");
    assert!(d.outbox_all().is_empty(), "{:#?}", d.outbox_all());
}

#[test]
fn chat_with_an_enrolling_workflow_gets_a_ticket_automated_by_it_only() {
    let d = Daemon::start(&chat_config(&format!(
        "{ACK_NEW}\n[[workflow]]\nid = \"chat-intake\"\npipeline = \"support\"\nenroll = {{ source = \"chat\" }}\nactions = [ {{ notify = {{ user = \"alice\" }} }} ]\n"
    )));
    let m = carol("Chat transcript").to("chat@acme.example");
    let id = d.send_ok(&m);
    let t = d.ticket(id);
    assert_eq!(t["source"], "chat", "{t:#}");
    assert_eq!(t["channel"], "chat", "{t:#}");
    let ran: Vec<_> = timeline_events(&t, "workflow_ran")
        .iter()
        .map(|e| e["detail"]["workflow"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        ran,
        vec!["chat-intake".to_string()],
        "a workflow naming no source is for email tickets only: {t:#}"
    );
    let out = outbox_for(&d, id);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert!(to_of(&out[0]).contains("alice@acme.example"), "{out:#?}");
    assert_eq!(count_subject(&d, id, RECEIVED), 0, "{out:#?}");

    // An email ticket still gets ack-new, and not chat-intake.
    let email = d.send_ok(&carol("By email"));
    assert_eq!(count_subject(&d, email, RECEIVED), 1);
    assert_eq!(
        outbox_for(&d, email).len(),
        1,
        "{:#?}",
        outbox_for(&d, email)
    );
}

// ---- loop protection ----

#[test]
fn an_out_of_office_gets_no_auto_reply_and_moves_nothing() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));

    // An out-of-office opening a thread: a ticket, no ticket_received.
    let ooo = msg()
        .from("Dave Away <dave@example.org>")
        .subject("Out of office")
        .header("Auto-Submitted", "auto-replied")
        .body("I am away until Monday.\n");
    let dave = d.send_ok(&ooo);
    let t = d.ticket(dave);
    assert_eq!(
        suppressed_reasons(&t),
        vec!["auto_submitted".to_string()],
        "{t:#}"
    );
    assert!(
        outbox_for(&d, dave).is_empty(),
        "{:#?}",
        outbox_for(&d, dave)
    );

    // Carol's ticket gets its ack; her out-of-office answers it.
    let first = carol("Invoice wrong");
    let id = d.send_ok(&first);
    let ack = wait_email(&d, id, "carol@example.com", RECEIVED);
    let away = carol_reply(&ack.subject(), &ack.message_id())
        .header("Auto-Submitted", "auto-replied")
        .body("I am on holiday.\n");
    assert_eq!(d.send_ok(&away), id, "the out-of-office is threaded");
    let t = d.ticket(id);
    assert_eq!(
        t["status"], "new",
        "an out-of-office never moves a ticket: {t:#}"
    );
    assert!(status_changes(&t).is_empty(), "{t:#}");
    assert!(crate::support::message_ids(&t).contains(&away.mid()));
    assert_eq!(outbox_for(&d, id).len(), 1, "{:#?}", outbox_for(&d, id));
}

#[test]
fn mail_from_the_null_sender_gets_no_auto_reply() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));
    let m = carol("Delivery report").mail_from("");
    let id = d.send_ok(&m);
    let t = d.ticket(id);
    assert_eq!(
        suppressed_reasons(&t),
        vec!["null_sender".to_string()],
        "{t:#}"
    );
    assert!(outbox_for(&d, id).is_empty(), "{:#?}", outbox_for(&d, id));
}

#[test]
fn no_auto_reply_to_automatic_or_bulk_mail() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));
    // (From, extra header), each from its own address.
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("a1@example.net", Some(("Auto-Submitted", "auto-generated"))),
        ("a2@example.net", Some(("Precedence", "bulk"))),
        ("a3@example.net", Some(("Precedence", "junk"))),
        ("a4@example.net", Some(("Precedence", "list"))),
        ("a5@example.net", Some(("Precedence", "auto_reply"))),
        (
            "a6@example.net",
            Some(("List-Id", "News <news.example.net>")),
        ),
        (
            "a7@example.net",
            Some(("List-Unsubscribe", "<mailto:unsub@example.net>")),
        ),
        ("a8@example.net", Some(("X-Autoreply", "yes"))),
        ("a9@example.net", Some(("X-Autorespond", "yes"))),
        ("a10@example.net", Some(("X-Auto-Response-Suppress", "All"))),
        ("a11@example.net", Some(("X-Auto-Response-Suppress", "OOF"))),
        ("a12@example.net", Some(("X-Postdesk-Ticket", "12345"))),
        ("MAILER-DAEMON@example.net", None),
        ("postmaster@example.net", None),
        ("support@acme.example", None),
    ];
    for (from, header) in cases {
        let mut m = msg()
            .from(from)
            .subject(&format!("Automatic from {from}"))
            .message_id(&unique_id("auto"));
        if let Some((name, value)) = header {
            m = m.header(name, value);
        }
        let id = d.send_ok(&m);
        let t = d.ticket(id);
        let reasons = suppressed_reasons(&t);
        assert!(
            reasons.len() == 1 && reasons[0] != "?" && !reasons[0].is_empty(),
            "{from} {header:?}: one `suppressed` with a reason, got {reasons:?}\n{t:#}"
        );
        assert!(
            outbox_for(&d, id).is_empty(),
            "{from} {header:?}: no auto-reply: {:#?}",
            outbox_for(&d, id)
        );
    }

    // Auto-Submitted: no is a person: acknowledged.
    let human = msg()
        .from("h1@example.net")
        .subject("A person")
        .header("Auto-Submitted", "no");
    let id = d.send_ok(&human);
    let t = d.ticket(id);
    assert!(suppressed_reasons(&t).is_empty(), "{t:#}");
    assert_eq!(
        count_subject(&d, id, RECEIVED),
        1,
        "{:#?}",
        outbox_for(&d, id)
    );
}

#[test]
fn auto_replies_per_contact_are_limited() {
    let d = Daemon::start(&config_with(
        &format!("{ACK_NEW}\n[limits]\nauto_replies_per_contact_per_hour = 2\n"),
        &[],
    ));
    let ids: Vec<u64> = (1..=3)
        .map(|i| d.send_ok(&carol(&format!("Problem number {i}"))))
        .collect();
    for &id in &ids[..2] {
        assert_eq!(count_subject(&d, id, RECEIVED), 1, "ticket {id}");
        assert!(suppressed_reasons(&d.ticket(id)).is_empty());
    }
    let third = d.ticket(ids[2]);
    assert!(
        outbox_for(&d, ids[2]).is_empty(),
        "the third ack in the hour is suppressed: {:#?}",
        outbox_for(&d, ids[2])
    );
    assert_eq!(
        suppressed_reasons(&third),
        vec!["rate_limit".to_string()],
        "{third:#}"
    );

    // Another contact is not limited by Carol's count.
    let dave = d.send_ok(&msg().from("dave@example.org").subject("Mine"));
    assert_eq!(count_subject(&d, dave, RECEIVED), 1);
    let sent = eml::wait_for(&d.sent_dir(), DEADLINE, "three acks", |all| all.len() >= 3);
    assert_eq!(sent.len(), 3, "{}", eml::describe(&sent));
}

// ---- admin errors ----

#[test]
fn unknown_names_get_not_found() {
    let d = Daemon::start(&config_with("", &[]));
    let id = d.send_ok(&carol("Exists"));
    for req in [
        json!({"cmd": "set_status", "id": id, "status": "no_such_status"}),
        json!({"cmd": "set_status", "id": 999, "status": "closed"}),
        json!({"cmd": "assign", "id": id, "owner": "nobody"}),
        json!({"cmd": "assign", "id": 999, "owner": "alice"}),
        json!({"cmd": "reply", "id": 999, "body": "x", "user": "alice"}),
        json!({"cmd": "reply", "id": id, "body": "x", "user": "nobody"}),
    ] {
        let resp = d.request(req.clone());
        assert_eq!(resp["ok"], false, "{req}: {resp}");
        assert_eq!(resp["error"]["code"], "not_found", "{req}: {resp}");
    }
    let t = d.ticket(id);
    assert_eq!(t["status"], "new", "{t:#}");
    assert!(t["owner"].is_null(), "{t:#}");
    assert!(d.outbox_all().is_empty(), "{:#?}", d.outbox_all());
}

// ---- reload ----

/// ACK_NEW with a branding footer of `text`.
fn branded(text: &str) -> String {
    config_with(&format!("{ACK_NEW}\n[branding]\ntext = \"{text}\"\n"), &[])
}

/// The footer of the ticket_received email of ticket `id`.
fn ack_footer(d: &Daemon, id: u64) -> Option<String> {
    footer(&wait_email(d, id, "carol@example.com", RECEIVED).text())
}

#[test]
fn reload_with_an_invalid_config_lists_problems_and_keeps_the_old_one() {
    let d = Daemon::start(&branded("Footer one"));
    let id = d.send_ok(&carol("Before"));
    assert_eq!(ack_footer(&d, id).as_deref(), Some("Footer one"));

    let bad = edit_config(
        &branded("Footer two"),
        &[("[server]\n", "[server]\nbogus_key = 1\n")],
    );
    d.rewrite_config(&bad);
    let resp = d.request(json!({"cmd": "reload"}));
    assert_eq!(resp["ok"], false, "{resp}");
    assert_eq!(resp["error"]["code"], "invalid_config", "{resp}");
    let problems: Vec<String> = resp["error"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("error.problems is a list: {resp}"))
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_string())
        .collect();
    let line = bad
        .lines()
        .position(|l| l.contains("bogus_key"))
        .expect("the bad line")
        + 1;
    assert!(
        problems
            .iter()
            .any(|p| { p.contains(&format!("postdesk.toml:{line}:")) && p.contains("bogus_key") }),
        "a `FILE:LINE:COL: message` naming bogus_key at line {line}: {problems:#?}"
    );

    // The old config keeps working: mail, automation, its footer.
    let id = d.send_ok(&carol("After"));
    assert_eq!(
        ack_footer(&d, id).as_deref(),
        Some("Footer one"),
        "the old config stays"
    );
    assert_eq!(d.health()["tickets"], 2);
}

#[test]
fn sighup_reloads_the_config_for_the_next_email() {
    let d = Daemon::start(&branded("Footer one"));
    let id = d.send_ok(&carol("Before"));
    assert_eq!(ack_footer(&d, id).as_deref(), Some("Footer one"));

    // The new config also takes help@acme.example: that tells us it is in.
    d.rewrite_config(&edit_config(
        &branded("Footer two"),
        &[(
            r#"addresses = ["support@acme.example"]"#,
            r#"addresses = ["support@acme.example", "help@acme.example"]"#,
        )],
    ));
    d.sighup();
    wait_until(DEADLINE, "help@acme.example accepted after SIGHUP", || {
        let mut c = Client::ready(d.smtp_addr());
        let from = c.mail_from("carol@example.com");
        let rcpt = c.rcpt_to("help@acme.example");
        let _ = c.quit();
        if from.code == 250 && rcpt.code == 250 {
            Ok(())
        } else {
            Err(format!("MAIL: {from}; RCPT: {rcpt}"))
        }
    });

    let id = d.send_ok(&carol("After"));
    assert_eq!(
        ack_footer(&d, id).as_deref(),
        Some("Footer two"),
        "the reloaded branding"
    );
}

// ---- set_status actions (SPEC §9) ----

#[test]
fn a_set_status_action_moves_the_ticket_and_runs_the_next_status_workflows() {
    let workflows = format!(
        r#"{CLOSED_MAIL}
[[workflow]]
id = "close-on-reply"
pipeline = "support"
enroll = {{ status = "waiting_on_us" }}
actions = [ {{ set_status = "closed" }} ]
"#
    );
    let d = Daemon::start(&config_with(&workflows, &[]));
    let first = carol("Close me when I answer");
    let id = d.send_ok(&first);
    let reply = carol_reply("Close me when I answer", &first.mid());
    assert_eq!(d.send_ok(&reply), id);
    let t = d.ticket(id);
    assert_eq!(t["status"], "closed", "{t:#}");
    assert_eq!(
        status_changes(&t),
        vec![
            change("new", "waiting_on_us", "customer_replied"),
            change("waiting_on_us", "closed", "workflow"),
        ],
        "{t:#}"
    );
    let ran: Vec<String> = timeline_events(&t, "workflow_ran")
        .iter()
        .filter_map(|e| e["detail"]["workflow"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ran, ["close-on-reply", "closed-mail"], "{t:#}");
    // The closing email went out, rendered at the status it was sent at.
    let closed = wait_email(&d, id, "carol@example.com", CLOSED);
    assert!(closed.subject().ends_with(&format!("[#{id}]")));
}

#[test]
fn workflows_setting_each_other_s_status_stop_after_eight_changes() {
    let ping_pong = r#"
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
"#;
    let d = Daemon::start(&config_with(ping_pong, &[]));
    let id = d.send_ok(&carol("Ping pong"));
    let t = d.cmd(json!({"cmd": "set_status", "id": id, "status": "waiting_on_us"}));
    assert_eq!(t["status"], "waiting_on_contact", "{t:#}");
    let t = d.ticket(id);
    assert_eq!(status_changes(&t).len(), 8, "{t:#}");
    let stopped = timeline_events(&t, "set_status_skipped");
    assert_eq!(stopped.len(), 1, "{t:#}");
    let summary = stopped[0]["detail"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("8 times") && summary.contains("pong"),
        "{summary}"
    );
    // The daemon lives on and the ticket still takes commands.
    set_status(&d, id, "closed");
}

// ---- postdesk trigger (SPEC §10) ----

#[test]
fn the_trigger_command_turns_a_trigger_off_and_on_in_a_running_daemon() {
    use crate::support::daemon::run_cli;
    let d = Daemon::start(&config_with("", &[]));
    let trigger = |args: &[&str]| {
        let mut all = vec!["trigger", "-c"];
        let path = d.config_path().to_str().unwrap().to_string();
        all.push(&path);
        all.extend_from_slice(args);
        run_cli(&all, d.dir())
    };
    let out = trigger(&["support", "customer_replied", "--disable"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    assert!(text.contains(TRIGGER_CUSTOMER_REPLIED_OFF), "{text}");

    let first = carol("Triggers off");
    let id = d.send_ok(&first);
    let reply = carol_reply("Triggers off", &first.mid());
    assert_eq!(d.send_ok(&reply), id);
    assert_eq!(d.ticket(id)["status"], "new");

    assert_eq!(
        trigger(&["support", "customer_replied", "--enable"]).code(),
        Some(0)
    );
    let again = carol_reply("Triggers off", &reply.mid());
    assert_eq!(d.send_ok(&again), id);
    assert_eq!(d.ticket(id)["status"], "waiting_on_us");

    // A status the pipeline does not have: refused, the file unchanged.
    let before = std::fs::read_to_string(d.config_path()).unwrap();
    let out = trigger(&["support", "customer_replied", "--status", "nowhere"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("unknown status \"nowhere\""), "{out}");
    assert_eq!(before, std::fs::read_to_string(d.config_path()).unwrap());
    // One change at a time.
    let out = trigger(&["support", "customer_replied", "--enable", "--disable"]);
    assert_eq!(out.code(), Some(2), "{out}");
}
