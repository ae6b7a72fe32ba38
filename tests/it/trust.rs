//! SPEC §12: only the customer and proven agents speak for a ticket. The
//! attack of issue 17 — a stranger writing as an agent to a guessed plus
//! address, or in-thread to the channel address — relays nothing, moves
//! nothing, and the real agent is told.

use serde_json::{json, Value};

use crate::automation::NOTIFY_ALICE;
use crate::support::eml::{self, Eml};
use crate::support::{config_with, msg, timeline_events, Daemon, Msg, ACK_NEW, DEADLINE};

fn emails(d: &Daemon) -> Vec<Eml> {
    eml::read_dir(&d.sent_dir())
}

fn wait_email(d: &Daemon, what: &str, f: impl Fn(&Eml) -> bool) -> Eml {
    eml::wait_for_one(&d.sent_dir(), DEADLINE, what, f)
}

fn carol(subject: &str) -> Msg {
    msg()
        .from("Carol Customer <carol@example.com>")
        .subject(subject)
}

/// A ticket from carol, acknowledged (so carol holds its signed address)
/// and notified to alice (so alice holds hers).
fn ticket(d: &Daemon) -> (u64, Msg, Eml, Eml) {
    let first = carol("Invoice question");
    let id = d.send_ok(&first);
    let ack = wait_email(d, "the acknowledgement", |e| {
        e.ticket() == Some(id) && e.is_to("carol@example.com")
    });
    let note = wait_email(d, "alice's notification", |e| {
        e.ticket() == Some(id) && e.is_to("alice@acme.example")
    });
    (id, first, ack, note)
}

fn reply_to(e: &Eml) -> String {
    e.header("Reply-To").unwrap_or_default().to_string()
}

fn forged(id: u64) -> Msg {
    msg()
        .from("Alice Agent <alice@acme.example>")
        .subject(&format!("Re: Invoice question [#{id}]"))
        .body("Please pay the invoice at http://evil.example/pay\n")
}

/// Nothing reached carol but the acknowledgement; the status did not move;
/// the forged message is on the ticket, unverified, with a `suppressed`
/// entry; alice was told.
fn assert_not_relayed(d: &Daemon, id: u64, forged: &Msg) {
    let t = d.ticket(id);
    assert_eq!(t["status"], "new", "status unchanged: {t:#}");
    assert!(timeline_events(&t, "status_changed").is_empty(), "{t:#}");
    let suppressed: Vec<Value> = timeline_events(&t, "suppressed")
        .into_iter()
        .filter(|e| e["detail"]["reason"] == "unverified_agent")
        .collect();
    assert_eq!(suppressed.len(), 1, "one suppressed entry: {t:#}");
    let m = t["messages"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["message_id"] == forged.mid()))
        .unwrap_or_else(|| panic!("the forged message is kept on the ticket: {t:#}"));
    assert_eq!(m["verified"], false, "{m:#}");
    let told = wait_email(d, "alice told that nothing was relayed", |e| {
        e.ticket() == Some(id)
            && e.is_to("alice@acme.example")
            && e.subject().starts_with("Not relayed")
    });
    assert!(told.text().contains("NOT"), "{}", told.raw);
    d.wait_outbox_idle();
    let to_carol: Vec<Eml> = emails(d)
        .into_iter()
        .filter(|e| e.is_to("carol@example.com"))
        .collect();
    assert_eq!(to_carol.len(), 1, "only the acknowledgement: {to_carol:#?}");
    assert!(
        to_carol.iter().all(|e| !e.raw.contains("evil.example")),
        "the forged text never reaches the customer"
    );
}

#[test]
fn a_forged_agent_to_a_guessed_bare_plus_address_is_not_relayed() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{NOTIFY_ALICE}"), &[]));
    let (id, _, _, _) = ticket(&d);
    let m = forged(id).rcpt_to(&format!("support+{id}@acme.example"));
    assert_eq!(d.send_ok(&m), id, "kept on the ticket");
    assert_not_relayed(&d, id, &m);
}

#[test]
fn a_forged_agent_in_thread_to_the_channel_address_is_not_relayed() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{NOTIFY_ALICE}"), &[]));
    let (id, first, ack, _) = ticket(&d);
    // The stranger even knows the thread's Message-IDs.
    let m = forged(id)
        .in_reply_to(&ack.message_id())
        .references(&format!("{} {}", first.mid(), ack.message_id()));
    assert_eq!(d.send_ok(&m), id);
    assert_not_relayed(&d, id, &m);
}

#[test]
fn the_customers_signed_address_does_not_prove_an_agent() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{NOTIFY_ALICE}"), &[]));
    let (id, _, ack, _) = ticket(&d);
    let m = forged(id).rcpt_to(&reply_to(&ack));
    assert_eq!(d.send_ok(&m), id);
    assert_not_relayed(&d, id, &m);
}

#[test]
fn a_tampered_key_is_the_plain_channel_address() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{NOTIFY_ALICE}"), &[]));
    let (id, _, ack, _) = ticket(&d);
    let signed = reply_to(&ack);
    let (local, domain) = signed.split_once('@').unwrap_or_default();
    let last = local.chars().last().unwrap_or('a');
    let flipped = if last == 'a' { 'b' } else { 'a' };
    let tampered = format!("{}{flipped}@{domain}", &local[..local.len() - 1]);
    let m = msg()
        .from("Mallory <mallory@evil.example>")
        .subject("Different words")
        .rcpt_to(&tampered);
    let reply = d.send(&m);
    assert_eq!(reply.code, 250, "never refused: {reply}");
    let other = reply.ticket_id().unwrap_or_default();
    assert_ne!(other, id, "a wrong key threads nowhere: a new ticket");
    // The real key threads from anyone, even a stranger (a forwarded ack).
    let m = msg()
        .from("Dave <dave@example.org>")
        .subject("Carol asked me to write")
        .rcpt_to(&signed);
    assert_eq!(d.send_ok(&m), id);
    let t = d.ticket(id);
    assert_eq!(
        t["status"], "waiting_on_us",
        "customer_replied fired: {t:#}"
    );
}

#[test]
fn a_stranger_to_a_bare_plus_address_opens_a_new_ticket() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));
    let id = d.send_ok(&carol("Login"));
    let m = msg()
        .from("Mallory <mallory@evil.example>")
        .subject("hello")
        .rcpt_to(&format!("support+{id}@acme.example"));
    assert_ne!(d.send_ok(&m), id);
    // The contact's own bare plus address (sent by earlier builds) still works.
    let m = carol("more").rcpt_to(&format!("support+{id}@acme.example"));
    assert_eq!(d.send_ok(&m), id);
}

#[test]
fn an_agent_replying_to_the_notification_is_relayed_and_moves_the_ticket() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{NOTIFY_ALICE}"), &[]));
    let (id, _, _, note) = ticket(&d);
    let signed = reply_to(&note);
    let m = msg()
        .from("Alice Agent <alice@acme.example>")
        .subject("Re: Invoice question")
        .rcpt_to(&signed)
        .in_reply_to(&note.message_id())
        .body("Your invoice is fixed.\n");
    assert_eq!(d.send_ok(&m), id);
    let relayed = wait_email(&d, "the relayed reply", |e| {
        e.ticket() == Some(id)
            && e.is_to("carol@example.com")
            && e.text().contains("invoice is fixed")
    });
    assert!(
        !reply_to(&relayed).eq_ignore_ascii_case(&signed),
        "{}",
        relayed.raw
    );
    let t = d.ticket(id);
    assert_eq!(t["status"], "waiting_on_contact", "{t:#}");
    assert!(timeline_events(&t, "suppressed").is_empty(), "{t:#}");
}

#[test]
fn an_agents_key_is_bound_to_the_agent_and_the_ticket() {
    let d = Daemon::start(&config_with(
        &format!("{ACK_NEW}{NOTIFY_ALICE}"),
        &[(
            "email = \"alice@acme.example\"\n",
            "email = \"alice@acme.example\"\n\n[[user]]\nid = \"bob\"\nname = \"Bob Agent\"\nemail = \"bob@acme.example\"\n",
        )],
    ));
    let (id, _, _, note) = ticket(&d);
    let m = msg()
        .from("Bob Agent <bob@acme.example>")
        .subject("Re: Invoice question")
        .rcpt_to(&reply_to(&note))
        .body("Please pay the invoice at http://evil.example/pay\n");
    assert_eq!(d.send_ok(&m), id);
    let t = d.ticket(id);
    assert_eq!(t["status"], "new", "{t:#}");
    assert_eq!(timeline_events(&t, "suppressed").len(), 1, "{t:#}");

    // Alice's key for this ticket does not open another one.
    let other = d.send_ok(&carol("Second ticket"));
    let m = msg()
        .from("Alice Agent <alice@acme.example>")
        .subject(&format!("Re: [#{other}]"))
        .rcpt_to(&reply_to(&note).replace(&format!("+{id}."), &format!("+{other}.")))
        .body("x\n");
    assert_eq!(d.send_ok(&m), other, "threads by its tag, as an agent");
    let t = d.ticket(other);
    assert_eq!(t["status"], "new", "but not proven: {t:#}");
}

#[test]
fn a_cc_participant_replies_like_the_contact_and_is_copied_on_agent_replies() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));
    let first = carol("Shared account").header(
        "Cc",
        "Dave Colleague <dave@example.org>, Alice Agent <alice@acme.example>, support@acme.example",
    );
    let id = d.send_ok(&first);
    let t = d.ticket(id);
    let emails: Vec<&str> = t["participants"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["email"].as_str()).collect())
        .unwrap_or_default();
    // Not the agent, not our own channel address.
    assert_eq!(emails, ["carol@example.com", "dave@example.org"], "{t:#}");
    assert_eq!(t["participants"][0]["name"], "Carol Customer", "{t:#}");

    // Automatic emails go to the contact only.
    let ack = wait_email(&d, "the acknowledgement", |e| e.ticket() == Some(id));
    assert!(
        ack.header("Cc").is_none() && !ack.is_to("dave@example.org"),
        "{}",
        ack.raw
    );

    // Dave's reply by the bare plus address threads (a participant) and
    // counts as the customer's.
    let m = msg()
        .from("Dave Colleague <dave@example.org>")
        .subject("Also me")
        .rcpt_to(&format!("support+{id}@acme.example"));
    assert_eq!(d.send_ok(&m), id);
    assert_eq!(d.ticket(id)["status"], "waiting_on_us");

    // An agent's reply goes To the contact, Cc the other participants.
    d.cmd(json!({"cmd": "reply", "id": id, "body": "Both fixed.", "user": "alice"}));
    let reply = wait_email(&d, "the agent's reply", |e| {
        e.ticket() == Some(id) && e.text().contains("Both fixed.")
    });
    assert!(reply.is_to("carol@example.com"), "{}", reply.raw);
    assert!(!reply.is_to("dave@example.org"), "{}", reply.raw);
    let cc = reply.header("Cc").unwrap_or_default().to_ascii_lowercase();
    assert!(
        cc.contains("dave@example.org") && !cc.contains("alice"),
        "{}",
        reply.raw
    );
}

#[test]
fn a_forged_agent_cannot_add_participants() {
    let d = Daemon::start(&config_with(ACK_NEW, &[]));
    let id = d.send_ok(&carol("Invoice question"));
    let m = forged(id)
        .rcpt_to(&format!("support+{id}@acme.example"))
        .header("Cc", "mallory@evil.example");
    assert_eq!(d.send_ok(&m), id);
    let t = d.ticket(id);
    assert_eq!(t["participants"].as_array().map(Vec::len), Some(1), "{t:#}");
}

#[test]
fn a_message_id_is_shown_exactly_as_written_and_found_in_any_case() {
    let d = Daemon::start(&config_with("", &[]));
    let first = carol("Case").message_id("<Mixed.Case@EXAMPLE.Test>");
    let id = d.send_ok(&first);
    let t = d.ticket(id);
    assert_eq!(
        t["messages"][0]["message_id"], "<Mixed.Case@EXAMPLE.Test>",
        "{t:#}"
    );
    // A client that lower-cased the domain still threads.
    let reply = carol("Re: Case").in_reply_to("<Mixed.Case@example.test>");
    assert_eq!(d.send_ok(&reply), id);
}

const TRUSTED: &str = "\n[security]\ntrusted_authserv_id = \"mx.acme.example\"\n";
const SECURITY: &str =
    "\n[security]\ntrusted_authserv_id = \"mx.acme.example\"\nrequire_auth_to_join = true\n";

fn with_ar(m: Msg, values: &[&str]) -> Msg {
    values
        .iter()
        .fold(m, |m, v| m.header("Authentication-Results", v))
}

#[test]
fn the_trusted_mtas_dmarc_pass_proves_an_agent_and_nothing_else_does() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{TRUSTED}"), &[]));
    let first = carol("Invoice question");
    let id = d.send_ok(&first);
    let pass =
        "mx.acme.example; dkim=pass header.d=acme.example; dmarc=pass header.from=acme.example";
    let fail = "mx.acme.example; dmarc=fail header.from=acme.example";
    // A forged pass below the MTA's own fail, and one of another id: ignored.
    for (n, headers) in [
        vec![fail, pass],
        vec!["evil.example; dmarc=pass header.from=acme.example"],
    ]
    .into_iter()
    .enumerate()
    {
        let m = with_ar(
            forged(id)
                .in_reply_to(&first.mid())
                .subject(&format!("forged {n}")),
            &headers,
        );
        assert_eq!(d.send_ok(&m), id);
        let t = d.ticket(id);
        assert_eq!(t["status"], "new", "{t:#}");
        let view = t["messages"]
            .as_array()
            .and_then(|ms| ms.iter().find(|v| v["message_id"] == m.mid()).cloned())
            .unwrap_or_default();
        assert_eq!(view["verified"], false, "{view:#}");
        let want = if n == 0 { "fail" } else { "none" };
        assert_eq!(view["auth"]["status"], want, "{view:#}");
    }
    // The MTA's own pass, on top: Alice is proven, in-thread to the channel.
    let m = with_ar(
        msg()
            .from("Alice Agent <alice@acme.example>")
            .subject("Re: Invoice question")
            .in_reply_to(&first.mid())
            .body("Proven reply.\n"),
        &[pass, fail],
    );
    assert_eq!(d.send_ok(&m), id);
    wait_email(&d, "the relayed reply", |e| {
        e.is_to("carol@example.com") && e.text().contains("Proven reply.")
    });
    let t = d.ticket(id);
    assert_eq!(t["status"], "waiting_on_contact", "{t:#}");
    let view = t["messages"]
        .as_array()
        .and_then(|ms| ms.iter().find(|v| v["message_id"] == m.mid()).cloned())
        .unwrap_or_default();
    assert_eq!(view["auth"]["status"], "pass", "{view:#}");
    assert_eq!(view["verified"], true, "{view:#}");
}

#[test]
fn require_auth_to_join_keeps_failed_mail_off_tickets_unless_it_names_our_email() {
    let d = Daemon::start(&config_with(&format!("{ACK_NEW}{SECURITY}"), &[]));
    let first = carol("Login");
    let id = d.send_ok(&first);
    let ack = wait_email(&d, "the acknowledgement", |e| e.ticket() == Some(id));
    let fail =
        "mx.acme.example; spf=fail smtp.mailfrom=example.com; dmarc=fail header.from=example.com";
    // Naming the customer's own Message-ID, or by the bare plus address: a new ticket.
    let m = with_ar(carol("Re: Login").in_reply_to(&first.mid()), &[fail]);
    assert_ne!(d.send_ok(&m), id);
    let m = with_ar(
        carol("x").rcpt_to(&format!("support+{id}@acme.example")),
        &[fail],
    );
    assert_ne!(d.send_ok(&m), id);
    // Naming our acknowledgement, or by the signed address: joins.
    let m = with_ar(carol("Re: Login").in_reply_to(&ack.message_id()), &[fail]);
    assert_eq!(d.send_ok(&m), id);
    let m = with_ar(carol("y").rcpt_to(&reply_to(&ack)), &[fail]);
    assert_eq!(d.send_ok(&m), id);
}

#[test]
fn check_validates_the_security_keys() {
    let dir = crate::support::daemon::temp_dir();
    let config = dir.path().join("postdesk.toml");
    let text = crate::support::render_config(
        &config_with("\n[security]\ntrusted_authserv_id = \"mx; evil\"\nrequire_auth_to_join = true\nbogus = 1\n", &[]),
        dir.path(),
    );
    std::fs::write(&config, text).unwrap_or_default();
    let out =
        crate::support::daemon::run_cli(&["check", "-c", &config.to_string_lossy()], dir.path());
    assert_eq!(out.code(), Some(1), "{out:?}");
    for needle in ["trusted_authserv_id", "require_auth_to_join needs", "bogus"] {
        assert!(
            out.stdout.contains(needle) || out.stderr.contains(needle),
            "{needle}: {out:?}"
        );
    }
}

#[test]
fn views_and_notifications_show_the_new_text_without_the_quoted_history() {
    let d = Daemon::start(&config_with(
        "\n[[workflow]]\nid = \"notify-replies\"\npipeline = \"support\"\nenroll = { status = \"waiting_on_us\" }\nactions = [ { notify = { user = \"alice\" } } ]\n",
        &[],
    ));
    let first = carol("Printer");
    let id = d.send_ok(&first);
    let body = "It is still broken.\n\nOn Mon, 7 Dec 2026 at 10:00, Acme Support <support@acme.example> wrote:\n> We received your request.\n> Secret quoted history.\n\n-- \nCarol\n";
    let reply = carol("Re: Printer").in_reply_to(&first.mid()).body(body);
    assert_eq!(d.send_ok(&reply), id);
    let t = d.ticket(id);
    let view = t["messages"]
        .as_array()
        .and_then(|ms| ms.iter().find(|v| v["message_id"] == reply.mid()).cloned())
        .unwrap_or_default();
    assert_eq!(view["new_text"], "It is still broken.", "{view:#}");
    assert!(
        view["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Secret quoted history"),
        "raw text kept: {view:#}"
    );
    let entry = t["timeline"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["kind"] == "message_in" && e["detail"]["message_id"] == reply.mid())
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(
        entry["detail"]["new_text"], "It is still broken.",
        "the timeline shows the new text: {entry:#}"
    );
    let note = wait_email(&d, "alice's notification of the reply", |e| {
        e.ticket() == Some(id) && e.is_to("alice@acme.example")
    });
    assert!(note.text().contains("It is still broken."), "{}", note.raw);
    assert!(
        !note.text().contains("Secret quoted history"),
        "{}",
        note.raw
    );
}

#[test]
fn signed_addresses_survive_a_restart_and_a_reload() {
    let mut d = Daemon::start(&config_with(ACK_NEW, &[]));
    let id = d.send_ok(&carol("Keys"));
    let ack = wait_email(&d, "the acknowledgement", |e| e.ticket() == Some(id));
    let signed = reply_to(&ack);
    let from_anyone = |n: u32| {
        msg()
            .from("Dave <dave@example.org>")
            .subject(&format!("forwarded {n}"))
            .rcpt_to(&signed)
    };
    d.restart();
    assert_eq!(d.send_ok(&from_anyone(1)), id, "same key after a restart");
    d.sighup();
    assert_eq!(d.send_ok(&from_anyone(2)), id, "same key after a reload");
    // And the emails written after the restart carry the same address.
    let second = d.send_ok(&carol("Other"));
    let ack2 = wait_email(&d, "the second acknowledgement", |e| {
        e.ticket() == Some(second)
    });
    assert_ne!(reply_to(&ack2), signed, "another ticket, another key");
    d.cmd(json!({"cmd": "reply", "id": id, "body": "After restart.", "user": "alice"}));
    let reply = wait_email(&d, "the reply after the restart", |e| {
        e.ticket() == Some(id) && e.text().contains("After restart.")
    });
    assert_eq!(reply_to(&reply), signed, "{}", reply.raw);
}
