//! Bounces: threaded to the ticket whose email bounced, recorded as a
//! `bounce` event with the failed recipient and status, never a customer
//! reply (no status change), never answered.

use serde_json::json;

use crate::support::ACK_NEW;
use crate::support::{msg, send_mail, timeline_kinds, Daemon};

fn dsn(original_id: &str, ticket: u64, failed: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n\
To: support@acme.example\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <dsn-{ticket}-{failed}@mx.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
\r\n\
--B\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.com\r\n\
\r\n\
Final-Recipient: rfc822; {failed}\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\
\r\n\
--B\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: Acme Support <support@acme.example>\r\n\
To: {failed}\r\n\
Subject: We received your request [#{ticket}]\r\n\
Message-ID: {original_id}\r\n\
X-Postdesk-Ticket: {ticket}\r\n\
\r\n\
--B--\r\n"
    )
}

#[test]
fn a_bounce_of_our_auto_reply_lands_on_its_ticket_and_is_not_answered() {
    let d = Daemon::start(ACK_NEW);
    let first = msg().from("nobody@gone.example").subject("Help");
    let id = d.send_ok(&first);
    d.wait_outbox_idle();
    let sent = d.outbox_all();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let auto_id = sent[0]["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let before = d.ticket(id);

    let reply = send_mail(
        d.smtp_addr(),
        "",
        "support@acme.example",
        dsn(&auto_id, id, "nobody@gone.example").as_bytes(),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(reply.ticket_id(), Some(id), "{reply:?}");

    let t = d.ticket(id);
    assert_eq!(
        t["status"], before["status"],
        "a bounce never moves a ticket: {t:#}"
    );
    let bounce = t["timeline"]
        .as_array()
        .and_then(|tl| tl.iter().find(|e| e["kind"] == "bounce"))
        .cloned()
        .unwrap_or_else(|| panic!("no bounce event: {t:#}"));
    assert_eq!(
        bounce["detail"]["recipients"][0]["address"], "nobody@gone.example",
        "{bounce:#}"
    );
    assert_eq!(
        bounce["detail"]["recipients"][0]["status"], "5.1.1",
        "{bounce:#}"
    );
    assert_eq!(bounce["detail"]["action"], "failed", "{bounce:#}");
    assert_eq!(
        bounce["detail"]["original_message_id"], auto_id,
        "{bounce:#}"
    );
    assert!(
        !timeline_kinds(&t).iter().any(|k| k == "status_changed"),
        "{t:#}"
    );
    // Nothing queued in answer.
    assert_eq!(d.outbox_all().len(), 1, "a bounce is never answered");
    // The email it returns is marked bounced, with recipient and status.
    let bounced = d.outbox("bounced");
    assert_eq!(bounced.len(), 1, "{:#?}", d.outbox_all());
    assert_eq!(bounced[0]["message_id"], auto_id, "{bounced:#?}");
    assert_eq!(
        bounced[0]["bounce"]["recipients"][0], "nobody@gone.example (5.1.1)",
        "{bounced:#?}"
    );
    assert_eq!(bounced[0]["bounce"]["status"], "5.1.1", "{bounced:#?}");
    assert_eq!(bounce["detail"]["outbox"], bounced[0]["id"], "{bounce:#}");
    assert!(d.outbox("sent").is_empty());
    let table = crate::support::daemon::run_cli(
        &["ctl", "-s", &d.admin_path().to_string_lossy(), "outbox"],
        d.dir(),
    );
    assert!(
        table.stdout.contains("bounced") && table.stdout.contains("nobody@gone.example"),
        "ctl outbox shows it: {table:?}"
    );
    let m = d.cmd(json!({"cmd": "message", "message_id": format!("<dsn-{id}-nobody@gone.example@mx.example.com>")}));
    assert_eq!(m["kind"], "bounce", "{m:#}");
}

#[test]
fn a_bounce_of_something_we_never_sent_makes_no_ticket() {
    let d = Daemon::start(ACK_NEW);
    let reply = send_mail(
        d.smtp_addr(),
        "",
        "support@acme.example",
        dsn("<never-sent@elsewhere.example>", 999, "x@y.example").as_bytes(),
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(
        reply.is_kept(),
        "backscatter is kept without a ticket: {reply:?}"
    );
    assert!(d.tickets().is_empty());
    assert!(d.outbox_all().is_empty());
}
