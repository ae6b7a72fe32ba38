//! SPEC §6: what postdesk sends — the headers of every email, the branding
//! footer, HTML templates — and the durable outbox: the file transport, an
//! SMTP relay (the in-test sink) that accepts, defers (451), is down, or
//! refuses (550), and a restart with mail still queued.

use std::time::Duration;

use serde_json::{json, Value};

use crate::smtp::eai_message;
use crate::support::eml::{self, footer, Eml};
use crate::support::sink::{Sink, Transaction};
use crate::support::ACK_NEW;
use crate::support::{
    config_with, msg, timeline_events, timeline_kinds, unique_id, wait_until, Client, Daemon,
    DEADLINE,
};

/// Acknowledge every new ticket to the customer and tell alice about it.
const ACK_AND_NOTIFY: &str = r#"
[[workflow]]
id = "ack-new"
pipeline = "support"
enroll = { status = "new" }
actions = [
  { send_email = "ticket_received" },
  { notify = { user = "alice" } },
]
"#;

/// How long a retry may take: the first retry is due within 30 s.
const RETRY_DEADLINE: Duration = Duration::from_secs(45);

/// A Message-ID without its angle brackets, to compare ids whichever way a
/// JSON field writes them.
fn bare(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// The email to `addr` about ticket `id`, once it is in the sent folder.
fn wait_email(d: &Daemon, id: u64, addr: &str) -> Eml {
    eml::wait_for_one(
        &d.sent_dir(),
        DEADLINE,
        &format!("an email to {addr} about ticket {id}"),
        |e| e.ticket() == Some(id) && e.is_to(addr),
    )
}

/// The headers every outbound email carries (SPEC §6), for ticket `id`.
fn assert_common_headers(e: &Eml, id: u64) {
    let all = &e.raw;
    assert_eq!(e.header_count("Message-ID"), 1, "one Message-ID:\n{all}");
    let mid = e.message_id();
    assert!(
        mid.ends_with("@desk.acme.example>"),
        "Message-ID at server.hostname, got {mid:?}:\n{all}"
    );
    let from = e.header("From").unwrap_or_default();
    assert!(
        from.contains("support@acme.example") && from.contains("Acme Support"),
        "From is outbound.from, got {from:?}:\n{all}"
    );
    let reply_to = e.header("Reply-To").unwrap_or_default();
    let key = reply_to
        .strip_prefix(&format!("support+{id}."))
        .and_then(|r| r.strip_suffix("@acme.example"))
        .unwrap_or_default();
    assert!(
        key.len() == 10
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
        "Reply-To is the channel's signed plus address support+{id}.<key>@acme.example:\n{all}"
    );
    assert_eq!(e.ticket(), Some(id), "X-Postdesk-Ticket:\n{all}");
    let subject = e.subject();
    assert!(
        subject.ends_with(&format!("[#{id}]")),
        "the subject tag is appended, got {subject:?}:\n{all}"
    );
    assert!(e.header("Date").is_some(), "a Date header:\n{all}");
    assert_eq!(
        e.header("MIME-Version").map(str::trim),
        Some("1.0"),
        "MIME-Version:\n{all}"
    );
}

/// Polls ticket `id` until its timeline has an `email_sent` entry; the
/// ticket.
fn wait_email_sent(d: &Daemon, id: u64, n: usize) -> Value {
    wait_until(DEADLINE, &format!("{n} email_sent on ticket {id}"), || {
        let t = d.ticket(id);
        if timeline_events(&t, "email_sent").len() >= n {
            Ok(t)
        } else {
            Err(format!("timeline: {:?}", timeline_kinds(&t)))
        }
    })
}

#[test]
fn a_new_ticket_gets_ticket_received_with_every_header_and_the_footer() {
    let d = Daemon::start(&config_with(ACK_AND_NOTIFY, &[]));
    let first = msg()
        .from("Carol Customer <carol@example.com>")
        .subject("Printer on fire")
        .body("The printer is on fire.\n");
    let id = d.send_ok(&first);

    // To the customer: the template, auto-replied, in the thread.
    let ack = wait_email(&d, id, "carol@example.com");
    let raw = &ack.raw;
    assert_common_headers(&ack, id);
    assert_ne!(ack.message_id(), first.mid(), "a fresh Message-ID:\n{raw}");
    let subject = ack.subject();
    assert!(
        subject.contains("We received your request") && subject.contains("Printer on fire"),
        "the ticket_received subject template, got {subject:?}"
    );
    assert_eq!(
        ack.header("Auto-Submitted"),
        Some("auto-replied"),
        "a template email to a customer:\n{raw}"
    );
    assert_eq!(
        ack.in_reply_to(),
        vec![first.mid()],
        "In-Reply-To is the customer's message:\n{raw}"
    );
    assert!(
        ack.references().contains(&first.mid()),
        "References chain to the thread:\n{raw}"
    );
    let text = ack.text();
    assert!(
        text.contains("Hello Carol Customer") && text.contains(&format!("ticket #{id}")),
        "the ticket_received text template:\n{text}"
    );
    let foot = footer(&text);
    assert!(
        foot.as_deref().is_some_and(|f| !f.is_empty()),
        "branding is on by default: a footer after a `-- ` line:\n{text}"
    );

    // To alice: the notification, auto-generated, footer too.
    let note = wait_email(&d, id, "alice@acme.example");
    assert_common_headers(&note, id);
    assert_eq!(
        note.header("Auto-Submitted"),
        Some("auto-generated"),
        "a notification to an agent:\n{}",
        note.raw
    );
    assert!(
        !note.is_to("carol@example.com"),
        "the notification goes to the agent only:\n{}",
        note.raw
    );
    assert_eq!(
        footer(&note.text()),
        foot,
        "the same footer on every automatic email:\n{}",
        note.raw
    );
    assert_ne!(note.message_id(), ack.message_id());
    assert!(
        note.text().contains("The printer is on fire."),
        "the notification quotes the customer's message (message.text):\n{}",
        note.raw
    );

    // The ticket knows what it sent.
    let t = wait_email_sent(&d, id, 2);
    let out = t["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| bare(m["message_id"].as_str().unwrap_or_default()) == bare(&ack.message_id()))
        .unwrap_or_else(|| panic!("the ack is one of the ticket's messages: {t:#}"));
    assert_eq!(out["direction"], "out", "{out:#}");
    let out_text = out["text"].as_str().unwrap_or_default();
    assert!(
        out_text.contains("Hello Carol Customer") && footer(out_text) == foot,
        "the ticket shows the ack's text as sent, footer included: {out:#}"
    );
    let inbound = &t["messages"][0];
    assert_eq!(
        inbound["text"].as_str().map(str::trim_end),
        Some("The printer is on fire."),
        "{inbound:#}"
    );
    let queued = timeline_events(&t, "email_queued");
    let ack_queued = queued
        .iter()
        .find(|e| {
            bare(e["detail"]["message_id"].as_str().unwrap_or_default()) == bare(&ack.message_id())
        })
        .unwrap_or_else(|| panic!("email_queued with the ack's Message-ID: {t:#}"));
    assert_eq!(ack_queued["detail"]["kind"], "auto_reply", "{ack_queued:#}");
    assert!(
        ack_queued["detail"]["to"]
            .to_string()
            .contains("carol@example.com"),
        "{ack_queued:#}"
    );
    let note_queued = queued
        .iter()
        .find(|e| {
            bare(e["detail"]["message_id"].as_str().unwrap_or_default()) == bare(&note.message_id())
        })
        .unwrap_or_else(|| panic!("email_queued with the notification's Message-ID: {t:#}"));
    assert_eq!(
        note_queued["detail"]["kind"], "notification",
        "{note_queued:#}"
    );
    let ran = timeline_events(&t, "workflow_ran");
    assert!(
        ran.iter().any(|e| e["detail"]["workflow"] == "ack-new"),
        "workflow_ran names the workflow: {t:#}"
    );

    // The outbox says sent, once each.
    let sent = d.outbox("sent");
    let entry = sent
        .iter()
        .find(|o| bare(o["message_id"].as_str().unwrap_or_default()) == bare(&ack.message_id()))
        .unwrap_or_else(|| panic!("the ack in outbox(sent): {sent:#?}"));
    assert_eq!(entry["ticket"], id, "{entry:#}");
    assert_eq!(entry["state"], "sent", "{entry:#}");
    assert!(entry["sent_at"].is_string(), "{entry:#}");
    assert_eq!(sent.len(), 2, "two emails sent: {sent:#?}");
    assert_eq!(d.health()["outbox_pending"], 0);
    let files = eml::read_dir(&d.sent_dir());
    assert_eq!(files.len(), 2, "{}", eml::describe(&files));
}

#[test]
fn branding_disabled_sends_no_footer() {
    let d = Daemon::start(&config_with(
        &format!("{ACK_AND_NOTIFY}\n[branding]\nenabled = false\n"),
        &[],
    ));
    let id = d.send_ok(&msg().subject("No footer please"));
    for addr in ["carol@example.com", "alice@acme.example"] {
        let e = wait_email(&d, id, addr);
        let text = e.text();
        assert_eq!(
            footer(&text),
            None,
            "branding off: no footer on the email to {addr}:\n{}",
            e.raw
        );
        assert!(
            !text.contains("postdesk"),
            "branding off: no postdesk advert to {addr}:\n{text}"
        );
    }
}

#[test]
fn branding_text_replaces_the_default_footer() {
    let d = Daemon::start(&config_with(
        &format!(
            "{ACK_AND_NOTIFY}\n[branding]\nenabled = true\ntext = \"Acme Support - we are here to help.\"\n"
        ),
        &[],
    ));
    let id = d.send_ok(&msg().subject("Custom footer"));
    for addr in ["carol@example.com", "alice@acme.example"] {
        let e = wait_email(&d, id, addr);
        assert_eq!(
            footer(&e.text()).as_deref(),
            Some("Acme Support - we are here to help."),
            "branding.text is the footer of the email to {addr}:\n{}",
            e.raw
        );
    }
}

#[test]
fn an_html_template_makes_multipart_alternative() {
    // The shipped templates plus ticket_received.html.hbs.
    let templates = crate::support::daemon::temp_dir();
    for entry in std::fs::read_dir(crate::support::daemon::templates_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), templates.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(
        templates.path().join("ticket_received.html.hbs"),
        "<html><body>\n<p>Hello {{contact.name}},</p>\n<p>HTML ticket number {{ticket.id}}: {{ticket.subject}}</p>\n</body></html>\n",
    )
    .unwrap();
    let config = config_with(
        &format!("{ACK_NEW}\n[branding]\ntext = \"Acme Support - we are here to help.\"\n"),
        &[(
            r#"templates = "{templates}""#,
            &format!("templates = \"{}\"", templates.path().display()),
        )],
    );
    let d = Daemon::start(&config);
    let id = d.send_ok(&msg().subject("Shiny HTML"));

    let e = wait_email(&d, id, "carol@example.com");
    assert_common_headers(&e, id);
    assert_eq!(e.content_type(), "multipart/alternative", "{}", e.raw);
    let parts = e.parts();
    let types: Vec<_> = parts.iter().map(|p| p.content_type.as_str()).collect();
    assert_eq!(types, vec!["text/plain", "text/html"], "{}", e.raw);

    let text = e.text();
    assert!(
        text.contains("We have received your request"),
        "the text part is the text template:\n{text}"
    );
    assert_eq!(
        footer(&text).as_deref(),
        Some("Acme Support - we are here to help."),
        "{text}"
    );
    let html = e.html().expect("an HTML part");
    assert!(
        html.contains(&format!("HTML ticket number {id}: Shiny HTML")),
        "the html part is the html template:\n{html}"
    );
    assert!(
        html.contains("Acme Support - we are here to help."),
        "the footer is in the HTML too (an HTML reader sees only that part):\n{html}"
    );
}

#[test]
fn agent_replies_chain_to_the_latest_message_and_carry_no_footer() {
    // No workflows: the thread holds only what the test sends.
    let d = Daemon::start(&config_with("", &[]));
    let first = msg().subject("Chain me");
    let id = d.send_ok(&first);

    let queued = d.cmd(
        json!({"cmd": "reply", "id": id, "body": "First answer from Alice.", "user": "alice"}),
    );
    let r1 = eml::wait_for(&d.sent_dir(), DEADLINE, "the first agent reply", |all| {
        all.len() == 1
    })
    .remove(0);
    let raw = &r1.raw;
    assert_common_headers(&r1, id);
    assert!(r1.is_to("carol@example.com"), "to the contact:\n{raw}");
    assert_eq!(
        r1.header("Auto-Submitted"),
        None,
        "an agent's reply is not automatic:\n{raw}"
    );
    let text = r1.text();
    assert!(text.contains("First answer from Alice."), "{text}");
    assert_eq!(footer(&text), None, "no footer on an agent's reply:\n{raw}");
    assert_eq!(r1.in_reply_to(), vec![first.mid()], "{raw}");
    assert!(r1.references().contains(&first.mid()), "{raw}");
    assert!(
        queued.to_string().contains(bare(&r1.message_id())),
        "reply returns the queued email: {queued}"
    );

    // The customer answers the agent; the next reply answers that.
    let second = msg()
        .subject(&format!("Re: {}", r1.subject()))
        .in_reply_to(&r1.message_id())
        .references(&format!("{} {}", first.mid(), r1.message_id()));
    assert_eq!(d.send_ok(&second), id);
    d.cmd(json!({"cmd": "reply", "id": id, "body": "Second answer from Alice.", "user": "alice"}));
    let r2 = eml::wait_for(&d.sent_dir(), DEADLINE, "the second agent reply", |all| {
        all.len() == 2
    })
    .into_iter()
    .find(|e| e.message_id() != r1.message_id())
    .expect("a second email");
    let raw = &r2.raw;
    assert_common_headers(&r2, id);
    assert!(r2.text().contains("Second answer from Alice."), "{raw}");
    assert_eq!(
        r2.in_reply_to(),
        vec![second.mid()],
        "In-Reply-To is the thread's latest message:\n{raw}"
    );
    let refs = r2.references();
    let pos = |id: &str| refs.iter().position(|r| r == id);
    assert!(
        pos(&first.mid()) < pos(&r1.message_id())
            && pos(&r1.message_id()) < pos(&second.mid())
            && pos(&first.mid()).is_some(),
        "References hold the thread, oldest first: {refs:?}\n{raw}"
    );
}

// ---- through an SMTP relay ----

/// The default config relaying through `sink`, with `extra` appended.
fn relay_config(sink: &Sink, extra: &str) -> String {
    config_with(
        extra,
        &[(
            "transport = \"file\"\ndir = \"{dir}/sent\"",
            &format!("transport = \"smtp\"\nurl = \"{}\"", sink.url()),
        )],
    )
}

/// Waits (as long as a retry may take) until `sink` accepted `n` messages;
/// a timeout shows the sink and the outbox.
fn wait_relayed(d: &Daemon, sink: &Sink, n: usize) -> Vec<Transaction> {
    wait_until(
        RETRY_DEADLINE,
        &format!("{n} messages accepted by the relay (the first retry is due within 30 s)"),
        || {
            let got = sink.accepted();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!(
                    "sink: {}\noutbox: {:#}",
                    sink.describe(),
                    Value::Array(d.outbox_all())
                ))
            }
        },
    )
}

/// The one outbox entry of ticket `id`, in any state.
fn only_outbox_entry(d: &Daemon, id: u64) -> Value {
    let all: Vec<_> = d
        .outbox_all()
        .into_iter()
        .filter(|o| o["ticket"] == id)
        .collect();
    assert_eq!(all.len(), 1, "one email for ticket {id}: {all:#?}");
    all.into_iter().next().expect("one entry")
}

#[test]
fn mail_goes_through_the_smtp_relay() {
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, ACK_NEW));
    let first = msg().subject("Relayed");
    let id = d.send_ok(&first);

    let got = sink.wait_accepted(1, DEADLINE);
    assert_eq!(got.len(), 1, "{}", sink.describe());
    assert_eq!(got[0].rcpt, vec!["carol@example.com".to_string()]);
    let e = got[0].eml();
    assert_common_headers(&e, id);
    assert_eq!(
        e.header("Auto-Submitted"),
        Some("auto-replied"),
        "{}",
        e.raw
    );
    assert_eq!(e.in_reply_to(), vec![first.mid()], "{}", e.raw);

    let t = wait_email_sent(&d, id, 1);
    assert_eq!(timeline_events(&t, "email_sent").len(), 1, "{t:#}");
    let entry = only_outbox_entry(&d, id);
    assert_eq!(entry["state"], "sent", "{entry:#}");
    assert_eq!(
        bare(entry["message_id"].as_str().unwrap_or_default()),
        bare(&e.message_id())
    );
    assert!(
        eml::read_dir(&d.sent_dir()).is_empty(),
        "the smtp transport writes no .eml files"
    );
    // With nothing more to send, the worker closes its relay connections
    // (the sink would hold an idle one for 60 s).
    sink.wait_no_open_sessions(DEADLINE);
    // Sending runs at a lower CPU priority than taking mail.
    #[cfg(target_os = "linux")]
    {
        let nice = thread_nice(d.pid());
        assert!(
            nice.iter()
                .filter(|(name, _)| name.starts_with("outbox"))
                .all(|(_, n)| *n == 10),
            "{nice:?}"
        );
        assert!(nice.iter().any(|(name, _)| name == "outbox"), "{nice:?}");
        let takers: Vec<_> = nice
            .iter()
            .filter(|(name, _)| name == "tokio-rt-worker" || name == "store-writer")
            .collect();
        assert!(takers.len() >= 2, "{nice:?}");
        assert!(takers.iter().all(|(_, n)| *n == 0), "{nice:?}");
    }
}

/// Each thread of process `pid`: its name and nice value (/proc).
#[cfg(target_os = "linux")]
fn thread_nice(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let Ok(stat) = std::fs::read_to_string(task.expect("task").path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the nice value is field 19.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let nice = stat[close + 1..]
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("nice field");
        out.push((name, nice));
    }
    out
}

#[test]
fn a_shutdown_mid_pass_records_what_was_already_sent() {
    // One new ticket queues two emails (the acknowledgement to carol, the
    // notification to alice): one pass. The relay takes carol's and hangs
    // on alice's; the daemon is stopped meanwhile. Carol's must be recorded
    // as sent (not sent again after the restart); alice's is sent then.
    let sink = Sink::start();
    sink.set_hang_rcpt(Some("alice@acme.example"));
    let mut d = Daemon::start(&relay_config(&sink, ACK_AND_NOTIFY));
    let id = d.send_ok(&msg().subject("Two emails"));
    sink.wait_accepted(1, DEADLINE);
    wait_until(DEADLINE, "alice's notification to hang at RCPT", || {
        if sink.transactions().len() == 1 && sink.accepted()[0].rcpt == ["carol@example.com"] {
            Ok(())
        } else {
            Err(sink.describe())
        }
    });
    // The sink records the message before its 250 reaches the daemon.
    std::thread::sleep(Duration::from_millis(300));
    d.terminate();
    sink.set_hang_rcpt(None);
    d.start_again();
    let t = wait_email_sent(&d, id, 2);
    let accepted = sink.accepted();
    let to = |addr: &str| accepted.iter().filter(|t| t.rcpt == [addr]).count();
    assert_eq!(to("carol@example.com"), 1, "{}", sink.describe());
    assert_eq!(to("alice@acme.example"), 1, "{}", sink.describe());
    assert_eq!(timeline_events(&t, "email_sent").len(), 2, "{t:#}");
}

#[test]
fn a_deferred_email_survives_a_restart_and_is_delivered_once() {
    let sink = Sink::start();
    sink.set_data_reply(451);
    let mut d = Daemon::start(&relay_config(&sink, ACK_NEW));
    let id = d.send_ok(&msg().subject("Deferred"));

    // The relay says 451: the email stays queued, with the attempt counted.
    sink.wait_transactions(1, DEADLINE);
    let entry = wait_until(DEADLINE, "an attempt recorded in the outbox", || {
        let q = d.outbox("queued");
        match q.iter().find(|o| o["ticket"] == id) {
            Some(o) if o["attempts"].as_u64().unwrap_or(0) >= 1 => Ok(o.clone()),
            _ => Err(format!("queued: {q:#?}; all: {:#?}", d.outbox_all())),
        }
    });
    assert_eq!(entry["state"], "queued", "{entry:#}");
    assert!(
        entry["last_error"].to_string().contains("451"),
        "last_error says what the relay answered: {entry:#}"
    );
    assert!(entry["next_attempt_at"].is_string(), "{entry:#}");
    assert!(d.outbox("sent").is_empty() && d.outbox("failed").is_empty());
    assert_eq!(d.health()["outbox_pending"], 1);
    assert!(sink.accepted().is_empty());

    // Restart with the relay accepting: delivered, once.
    sink.set_data_reply(250);
    d.restart();
    let got = wait_relayed(&d, &sink, 1);
    let e = got[0].eml();
    assert_common_headers(&e, id);
    let sent = wait_until(DEADLINE, "the email marked sent", || {
        let s = d.outbox("sent");
        if s.iter().any(|o| o["ticket"] == id) {
            Ok(s)
        } else {
            Err(format!("all: {:#?}", d.outbox_all()))
        }
    });
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0]["attempts"].as_u64().unwrap_or(0) >= 2, "{sent:#?}");
    assert!(d.outbox("queued").is_empty());
    assert_eq!(d.health()["outbox_pending"], 0);
    assert_eq!(
        sink.accepted().len(),
        1,
        "delivered exactly once:\n{}",
        sink.describe()
    );
    let t = wait_email_sent(&d, id, 1);
    assert_eq!(timeline_events(&t, "email_sent").len(), 1, "{t:#}");
    assert_eq!(timeline_events(&t, "email_queued").len(), 1, "{t:#}");
    assert!(timeline_events(&t, "email_failed").is_empty(), "{t:#}");
}

#[test]
fn a_relay_that_is_down_gets_the_email_when_it_is_back() {
    let mut sink = Sink::start();
    sink.stop();
    let d = Daemon::start(&relay_config(&sink, ACK_NEW));
    let id = d.send_ok(&msg().subject("Relay down"));

    let entry = wait_until(DEADLINE, "a failed connection recorded", || {
        let q = d.outbox("queued");
        match q.iter().find(|o| o["ticket"] == id) {
            Some(o) if o["attempts"].as_u64().unwrap_or(0) >= 1 => Ok(o.clone()),
            _ => Err(format!("queued: {q:#?}; all: {:#?}", d.outbox_all())),
        }
    });
    assert!(
        !entry["last_error"].is_null() && entry["last_error"] != "",
        "{entry:#}"
    );

    sink.start_again();
    let got = wait_relayed(&d, &sink, 1);
    assert_eq!(got[0].eml().ticket(), Some(id));
    wait_email_sent(&d, id, 1);
    let entry = only_outbox_entry(&d, id);
    assert_eq!(entry["state"], "sent", "{entry:#}");
    assert_eq!(sink.accepted().len(), 1, "{}", sink.describe());
}

#[test]
fn a_relay_refusing_with_550_marks_the_email_failed() {
    let sink = Sink::start();
    sink.set_data_reply(550);
    let d = Daemon::start(&relay_config(&sink, ACK_NEW));
    let id = d.send_ok(&msg().subject("Refused"));

    let failed = wait_until(DEADLINE, "the email marked failed", || {
        let f = d.outbox("failed");
        if f.iter().any(|o| o["ticket"] == id) {
            Ok(f)
        } else {
            Err(format!("all: {:#?}", d.outbox_all()))
        }
    });
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let entry = &failed[0];
    assert_eq!(entry["state"], "failed", "{entry:#}");
    assert_eq!(entry["attempts"], 1, "a 5xx is not retried: {entry:#}");
    assert!(
        entry["last_error"].to_string().contains("550"),
        "last_error says what the relay answered: {entry:#}"
    );
    assert!(d.outbox("queued").is_empty());
    assert_eq!(d.health()["outbox_pending"], 0);

    let t = wait_until(DEADLINE, "email_failed on the timeline", || {
        let t = d.ticket(id);
        if timeline_events(&t, "email_failed").is_empty() {
            Err(format!("timeline: {:?}", timeline_kinds(&t)))
        } else {
            Ok(t)
        }
    });
    assert_eq!(timeline_events(&t, "email_failed").len(), 1, "{t:#}");
    assert!(timeline_events(&t, "email_sent").is_empty(), "{t:#}");
    assert_eq!(sink.transactions().len(), 1, "{}", sink.describe());
}

/// SPEC §5: a contact with a UTF-8 address is answered, through a relay
/// that offers SMTPUTF8, with the address as written (envelope and
/// header); a relay without SMTPUTF8 fails that email at once, with the
/// reason on the timeline and in the outbox.
#[test]
fn a_utf8_contact_is_answered_with_smtputf8_or_the_email_fails_saying_why() {
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, ACK_NEW));
    let deliver = |from: &str| {
        let mut c = Client::ready(d.smtp_addr());
        assert_eq!(c.mail_from_with(from, "SMTPUTF8").code, 250);
        assert_eq!(c.rcpt_to("support@acme.example").code, 250);
        let mid = unique_id("eai").replace("@test.example>", "@exämple.com>");
        let reply = c.data(&eai_message(from, &mid));
        reply
            .ticket_id()
            .unwrap_or_else(|| d.fail(format!("the EAI message was not taken: {reply}")))
    };

    let id = deliver("jöran@exämple.com");
    let got = sink.wait_accepted(1, DEADLINE);
    assert_eq!(got[0].rcpt, vec!["jöran@exämple.com".to_string()]);
    assert!(
        got[0].mail_params.iter().any(|p| p == "SMTPUTF8"),
        "MAIL FROM says SMTPUTF8: {:?}",
        got[0].mail_params
    );
    let e = got[0].eml();
    assert!(
        e.header("To")
            .is_some_and(|to| to.contains("jöran@exämple.com")),
        "the To header holds the address as written: {}",
        e.raw
    );
    wait_email_sent(&d, id, 1);

    // The next email comes on a new connection, to a relay without it.
    sink.wait_no_open_sessions(DEADLINE);
    sink.set_smtputf8(false);
    let id = deliver("zoë@exämple.com");
    let failed = wait_until(DEADLINE, "the email marked failed", || {
        match d.outbox("failed").into_iter().find(|o| o["ticket"] == id) {
            Some(o) => Ok(o),
            None => Err(format!("all: {:#?}", d.outbox_all())),
        }
    });
    assert_eq!(failed["attempts"], 1, "not retried: {failed:#}");
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("SMTPUTF8"), "{failed:#}");
    let t = d.ticket(id);
    let events = timeline_events(&t, "email_failed");
    assert_eq!(events.len(), 1, "{t:#}");
    assert!(events[0].to_string().contains("SMTPUTF8"), "{t:#}");
    assert_eq!(sink.accepted().len(), 1, "{}", sink.describe());
}
