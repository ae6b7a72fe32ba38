//! SPEC §3 and §5: what the SMTP side answers, and what it stores.

use crate::support::{
    message_ids, msg, threaded_by, timeline_kinds, unique_id, wait_until, Client, Daemon, DEADLINE,
};

#[test]
fn a_new_mail_makes_ticket_1() {
    let d = Daemon::start("");
    let m = msg()
        .from("Carol Customer <carol@example.com>")
        .subject("Printer on fire")
        .body("The printer is on fire.\nPlease send help.\n");

    let reply = d.send(&m);
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert_eq!(reply.ticket_id(), Some(1), "{reply}");

    let t = d.ticket(1);
    assert_eq!(t["id"], 1, "{t:#}");
    assert_eq!(t["subject"], "Printer on fire", "{t:#}");
    assert_eq!(t["status"], "new", "{t:#}");
    assert_eq!(t["pipeline"], "support", "{t:#}");
    assert_eq!(t["channel"], "support", "{t:#}");
    assert_eq!(t["source"], "email", "{t:#}");
    assert_eq!(t["contact"]["email"], "carol@example.com", "{t:#}");
    assert_eq!(t["contact"]["name"], "Carol Customer", "{t:#}");
    assert!(t["owner"].is_null(), "a new ticket has no owner: {t:#}");
    for field in ["created_at", "updated_at"] {
        let at = t[field].as_str().unwrap_or_default();
        assert!(at.contains('T'), "{field} should be RFC 3339: {t:#}");
    }

    assert_eq!(message_ids(&t), vec![m.mid()], "{t:#}");
    let message = &t["messages"][0];
    assert_eq!(message["direction"], "in", "{message:#}");
    assert_eq!(message["subject"], "Printer on fire", "{message:#}");
    assert!(
        message["from"].to_string().contains("carol@example.com"),
        "{message:#}"
    );
    let text = message["text"].as_str().unwrap_or_default();
    assert!(text.contains("The printer is on fire."), "{message:#}");
    assert!(text.contains("Please send help."), "{message:#}");

    let kinds = timeline_kinds(&t);
    assert!(kinds.iter().any(|k| k == "created"), "timeline: {kinds:?}");
    assert_eq!(threaded_by(&t, &m.mid()).as_deref(), Some("new"), "{t:#}");

    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(tickets[0]["id"], 1);
    assert_eq!(d.health()["tickets"], 1);
}

/// Sends one message whose body contains `end_lookalike` (an end-of-data
/// that is not `<CR><LF>.<CR><LF>`) followed by a whole second SMTP
/// transaction; the server must see one message, with that text inside.
fn smuggling_is_content(end_lookalike: &[u8]) {
    let d = Daemon::start("");
    let mut c = Client::ready(d.smtp_addr());
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let go = c.cmd("DATA");
    assert_eq!(go.code, 354, "{go}");

    let mid = unique_id("smuggle");
    let mut data = format!(
        "From: Carol <carol@example.com>\r\nTo: support@acme.example\r\n\
         Subject: Innocent\r\nMessage-ID: {mid}\r\n\r\nhello"
    )
    .into_bytes();
    data.extend_from_slice(end_lookalike);
    data.extend_from_slice(
        b"MAIL FROM:<evil@x>\r\nRCPT TO:<support@acme.example>\r\nDATA\r\n\
          Subject: smuggled\r\n\r\nx\r\n.\r\n",
    );
    c.raw_send(&data).unwrap();

    let reply = c.read_reply();
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert_eq!(reply.ticket_id(), Some(1), "{reply}");
    // Had the server ended the data early, the smuggled MAIL/RCPT/DATA
    // replies would be queued before QUIT's.
    let bye = c.quit();
    assert_eq!(
        bye.code, 221,
        "the reply after the message should be QUIT's: {bye}"
    );

    let tickets = d.tickets();
    assert_eq!(
        tickets.len(),
        1,
        "exactly one message is stored: {tickets:#?}"
    );
    let t = d.ticket(1);
    assert_eq!(message_ids(&t), vec![mid], "{t:#}");
    assert_eq!(t["subject"], "Innocent", "{t:#}");
    let text = t["messages"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("evil@x") && text.contains("smuggled"),
        "the would-be smuggled transaction is message text: {text:?}"
    );
    assert!(d.conversations().is_empty());
}

#[test]
fn smuggling_with_bare_lf_dot_is_content() {
    smuggling_is_content(b"\n.\r\n");
}

#[test]
fn smuggling_with_bare_cr_dot_is_content() {
    smuggling_is_content(b"\r.\r\n");
}

#[test]
fn an_overlong_command_line_is_refused_and_the_session_ends() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.smtp_addr());
    // RFC 5321: a command line is at most 512 octets with its CRLF.
    let line = format!("EHLO {}\r\n", "a".repeat(600));
    c.raw_send(line.as_bytes()).unwrap();
    let reply = c.try_read_reply().expect("a reply to the overlong line");
    assert_eq!(reply.status(), "500 5.5.2", "{reply}");
    assert!(c.is_closed(DEADLINE), "the server should close the session");
}

#[test]
fn an_overlong_data_line_is_refused_and_nothing_is_stored() {
    let d = Daemon::start("");

    // 998 octets + CRLF is the longest legal line: accepted.
    let longest = msg().subject("Longest line").body(&"y".repeat(998));
    let reply = d.send(&longest);
    assert_eq!(
        reply.status(),
        "250 2.0.0",
        "a 998-octet line is legal: {reply}"
    );

    let mut c = Client::ready(d.smtp_addr());
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let go = c.cmd("DATA");
    assert_eq!(go.code, 354, "{go}");
    let mid = unique_id("overlong");
    // Everything in one write, end of data included, so the test holds
    // whether the server answers at the long line or at the end.
    let data = format!(
        "From: Carol <carol@example.com>\r\nSubject: Too long\r\nMessage-ID: {mid}\r\n\r\n\
         {}\r\nafter\r\n.\r\n",
        "x".repeat(1100)
    );
    let _ = c.raw_send(data.as_bytes());
    let reply = c
        .try_read_reply()
        .expect("a reply to the overlong data line");
    assert_eq!(reply.status(), "554 5.3.4", "{reply}");
    assert!(c.is_closed(DEADLINE), "the server should close the session");

    let tickets = d.tickets();
    assert_eq!(
        tickets.len(),
        1,
        "only the legal message is stored: {tickets:#?}"
    );
    assert_eq!(tickets[0]["subject"], "Longest line");
    assert!(d.conversations().is_empty());
}

#[test]
fn past_max_sessions_the_greeting_is_421() {
    let d = Daemon::start("max_sessions = 2");
    let addr = d.smtp_addr();
    let first = Client::connect(addr);
    let _second = Client::connect(addr);

    let mut third = Client::connect_raw(addr);
    assert_eq!(third.greeting.status(), "421 4.7.0", "{}", third.greeting);
    assert!(
        third.is_closed(DEADLINE),
        "a 421 greeting is followed by close"
    );

    // A slot frees up once a session ends.
    drop(first);
    let mut again = wait_until(DEADLINE, "a session slot after one closed", || {
        let c = Client::connect_raw(addr);
        if c.greeting.code == 220 {
            Ok(c)
        } else {
            Err(c.greeting.to_string())
        }
    });
    let ehlo = again.ehlo("client.test.example");
    assert_eq!(ehlo.code, 250, "{ehlo}");
}

#[test]
fn a_duplicate_message_id_is_accepted_and_stores_nothing() {
    let d = Daemon::start("");
    let m = msg().subject("Only once").body("first copy\n");
    let id = d.send_ok(&m);

    let again = d.send(&m);
    assert_eq!(again.status(), "250 2.0.0", "{again}");
    assert_eq!(again.ticket_id(), Some(id), "{again}");

    // Same Message-ID, other content: still the first copy that counts.
    let other = m.clone().subject("Changed").body("second copy\n");
    let reply = d.send(&other);
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert_eq!(reply.ticket_id(), Some(id), "{reply}");

    assert_eq!(d.tickets().len(), 1);
    let t = d.ticket(id);
    assert_eq!(message_ids(&t), vec![m.mid()], "{t:#}");
    assert_eq!(t["subject"], "Only once");
    let text = t["messages"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("first copy"), "{t:#}");
    let ins = timeline_kinds(&t)
        .iter()
        .filter(|k| *k == "message_in")
        .count();
    assert_eq!(ins, 1, "{t:#}");
}

#[test]
fn an_unknown_recipient_is_refused_at_rcpt() {
    let d = Daemon::start("");
    let mut c = Client::ready(d.smtp_addr());
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    for nobody in ["nobody@acme.example", "support@elsewhere.example"] {
        let reply = c.rcpt_to(nobody);
        assert_eq!(reply.status(), "550 5.1.1", "RCPT TO:<{nobody}>: {reply}");
    }
    // The session goes on; a channel address is still welcome.
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let m = msg().subject("After a refusal");
    let reply = c.data(&m.build());
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert_eq!(reply.ticket_id(), Some(1), "{reply}");
}

#[test]
fn message_size_limits_give_552_and_the_session_survives() {
    let d = Daemon::start(r#"max_message_size = "64KiB""#);
    let mut c = Client::connect(d.smtp_addr());

    let ehlo = c.ehlo("client.test.example");
    assert_eq!(ehlo.code, 250, "{ehlo}");
    let has = |kw: &str| {
        ehlo.lines
            .iter()
            .skip(1)
            .any(|l| l.eq_ignore_ascii_case(kw))
    };
    for kw in [
        "SIZE 65536",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(has(kw), "EHLO should advertise {kw}: {ehlo}");
    }

    let reply = c.mail_from_with("carol@example.com", "SIZE=100000");
    assert_eq!(reply.status(), "552 5.3.4", "{reply}");

    // The declared size was fine but the message is not.
    assert_eq!(c.mail_from_with("carol@example.com", "SIZE=1000").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let line = "z".repeat(76);
    let big_body: String = (0..1000).map(|_| format!("{line}\n")).collect();
    let big = msg().subject("Too big").body(&big_body);
    let reply = c.data(&big.build());
    assert_eq!(reply.status(), "552 5.3.4", "{reply}");

    // The same session can still deliver a normal message.
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let small = msg().subject("Small enough");
    let reply = c.data(&small.build());
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    let id = reply.ticket_id().expect("a ticket id");

    let tickets = d.tickets();
    assert_eq!(
        tickets.len(),
        1,
        "the oversize message is not stored: {tickets:#?}"
    );
    assert_eq!(d.ticket(id)["subject"], "Small enough");
    assert!(d.conversations().is_empty());
}

/// A message of 256 KiB or more is parsed on a blocking thread rather than
/// on the runtime's worker (there may be only one): it is stored, threaded
/// and read back like any other, in a session that goes on afterwards.
#[test]
fn a_big_message_is_parsed_aside_and_threaded_like_any_other() {
    let d = Daemon::start("");
    let first = msg()
        .from("Carol Customer <carol@example.com>")
        .subject("Crash on start")
        .body("It crashes; logs follow.\n");
    let id = d.send_ok(&first);

    let line = "y".repeat(76);
    let log: String = (0..(600 << 10) / 77).map(|_| format!("{line}\n")).collect();
    let big = msg()
        .from("Carol Customer <carol@example.com>")
        .subject("Re: Crash on start")
        .in_reply_to(&first.mid())
        .body(&format!("Here is the log.\n{log}End of the log.\n"));
    let raw = big.build();
    assert!(
        raw.len() > 512 << 10,
        "the test message is {} bytes",
        raw.len()
    );
    let mut c = Client::connect(d.smtp_addr());
    assert_eq!(c.ehlo("client.test.example").code, 250);
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let reply = c.data(&raw);
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert_eq!(reply.ticket_id(), Some(id), "{reply}");

    // The session goes on with a small message.
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let small = msg().subject("Another thing");
    let reply = c.data(&small.build());
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert_ne!(reply.ticket_id(), Some(id), "{reply}");

    let t = d.ticket(id);
    assert_eq!(
        threaded_by(&t, &big.mid()).as_deref(),
        Some("in_reply_to"),
        "{t:#}"
    );
    let stored = d
        .message(&big.mid())
        .unwrap_or_else(|| d.fail("the big message is not stored"));
    let text = stored["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Here is the log."),
        "{}",
        text.chars().take(80).collect::<String>()
    );
    assert!(
        text.trim_end().ends_with("End of the log."),
        "the text is cut short"
    );
}

#[test]
fn mail_to_a_channel_without_automation_is_kept_without_a_ticket() {
    let d = Daemon::start("");
    let m = msg()
        .to("sales@acme.example")
        .subject("Quote for 40 printers");
    let reply = d.send(&m);
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    assert!(reply.is_kept(), "expected `250 2.0.0 Ok: kept`: {reply}");

    assert!(
        d.tickets().is_empty(),
        "no ticket for an automation-off channel"
    );
    let kept = d.conversations();
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0]["message_id"], m.mid().as_str(), "{kept:#?}");
    assert_eq!(kept[0]["subject"], "Quote for 40 printers", "{kept:#?}");
    assert_eq!(kept[0]["direction"], "in", "{kept:#?}");
    assert_eq!(d.health()["tickets"], 0);
}

#[test]
fn a_client_that_disconnects_mid_data_stores_nothing() {
    let d = Daemon::start("");
    let mut c = Client::ready(d.smtp_addr());
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.raw_send(b"From: carol@example.com\r\nSubject: Cut off\r\n\r\nhalf a mess")
        .unwrap();
    drop(c);

    // The daemon is still there, and a cut-off message is not a ticket.
    let next = msg().subject("Complete");
    let id = d.send_ok(&next);
    assert_eq!(d.ticket(id)["subject"], "Complete");
    assert_eq!(d.tickets().len(), 1);
}

/// A hand-written internationalised message (RFC 6532): UTF-8 in the
/// addresses of the envelope and the headers, 8-bit body.
pub fn eai_message(from: &str, mid: &str) -> Vec<u8> {
    format!(
        "From: Jöran Øberg <{from}>\r\n\
         To: support@acme.example\r\n\
         Subject: Größe der Lieferung\r\n\
         Message-ID: {mid}\r\n\
         Date: Mon, 7 Dec 2026 09:00:00 +0100\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Grüß Gott, wo bleibt meine Lieferung?\r\n"
    )
    .into_bytes()
}

/// SPEC §5, RFC 6531: SMTPUTF8 is offered; a UTF-8 address is taken only
/// in a transaction that said SMTPUTF8 (else 553 5.6.7), and the contact
/// is kept as written.
#[test]
fn smtputf8_takes_utf8_addresses_and_nothing_else_does() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.smtp_addr());
    let ehlo = c.ehlo("client.test.example");
    assert!(
        ehlo.lines.iter().skip(1).any(|l| l == "SMTPUTF8"),
        "EHLO should advertise SMTPUTF8: {ehlo}"
    );

    let reply = c.mail_from("jöran@exämple.com");
    assert_eq!(reply.status(), "553 5.6.7", "{reply}");
    let reply = c.mail_from_with("jöran@exämple.com", "SMTPUTF8=yes");
    assert_eq!(
        reply.status(),
        "501 5.5.4",
        "SMTPUTF8 takes no value: {reply}"
    );
    // An ASCII sender without SMTPUTF8: a UTF-8 recipient is refused too.
    assert_eq!(c.mail_from("carol@example.com").code, 250);
    let reply = c.rcpt_to("süpport@acme.example");
    assert_eq!(reply.status(), "553 5.6.7", "{reply}");
    assert_eq!(c.rset().code, 250);

    let mid = unique_id("eai").replace("@test.example>", "@exämple.com>");
    let reply = c.mail_from_with("jöran@exämple.com", "SMTPUTF8 BODY=8BITMIME");
    assert_eq!(reply.code, 250, "{reply}");
    // With SMTPUTF8 a UTF-8 recipient is judged like any other.
    let reply = c.rcpt_to("süpport@acme.example");
    assert_eq!(reply.status(), "550 5.1.1", "{reply}");
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let reply = c.data(&eai_message("jöran@exämple.com", &mid));
    assert_eq!(reply.status(), "250 2.0.0", "{reply}");
    let id = reply.ticket_id().expect("a ticket id");

    let t = d.ticket(id);
    assert_eq!(t["contact"]["email"], "jöran@exämple.com", "{t:#}");
    assert_eq!(t["contact"]["name"], "Jöran Øberg", "{t:#}");
    assert_eq!(t["subject"], "Größe der Lieferung", "{t:#}");
    assert_eq!(message_ids(&t), vec![mid.clone()], "{t:#}");
    let text = t["messages"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("Grüß Gott"), "{t:#}");
    let raw = d.raw(&mid).expect("stored");
    assert_eq!(
        raw,
        eai_message("jöran@exämple.com", &mid),
        "raw bytes kept"
    );
}
