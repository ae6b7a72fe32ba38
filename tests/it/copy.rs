//! SPEC §8 `postdesk store copy -c FROM --to TO`: a store copied into
//! another of either engine is the same store — every ticket, message
//! (raw bytes byte-exact), timeline, outbox entry and conversation, as the
//! admin socket shows them, timestamps included — and goes on as one: the
//! next ticket gets the next id, and a signed reply address sent out before
//! the copy still threads (the secrets came along). A target holding other
//! data is refused; an interrupted copy finishes when run again, and a
//! finished one is not done twice.
//!
//! These tests choose their engines themselves (whatever
//! `POSTDESK_TEST_ENGINE` says): the daemons' configs carry their own
//! `[storage]` table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::daemon::{migrate, render_config, run_cli, temp_dir, Output, BIN};
use crate::support::eml;
use crate::support::sink::Sink;
use crate::support::{
    config_with, edit_config, msg, require_pg_or_skip, wait_until, Client, Daemon, Msg, ACK_NEW,
    DEADLINE,
};

/// The storage table of every source in these tests.
const REDB: &str = "\n[storage]\nengine = \"redb\"\n";

/// The default config with the ACK_NEW workflow on redb.
fn redb_config() -> String {
    format!("{}{REDB}", config_with(ACK_NEW, &[]))
}

/// [`redb_config`] with the outbox going to `sink`.
fn relay_config(sink: &Sink) -> String {
    edit_config(
        &redb_config(),
        &[(
            "transport = \"file\"\ndir = \"{dir}/sent\"",
            &format!("transport = \"smtp\"\nurl = \"{}\"", sink.url()),
        )],
    )
}

/// `text` with its redb store moved to `data_dir` (an absolute path, so
/// that a daemon started on the text later finds the copy there).
fn on_redb_at(text: &str, data_dir: &Path) -> String {
    edit_config(
        text,
        &[(
            "data_dir = \"{dir}/data\"",
            &format!("data_dir = \"{}\"", data_dir.display()),
        )],
    )
}

/// `text` on PostgreSQL: the database whose URL `url_file` holds.
fn on_postgres(text: &str, url_file: &Path) -> String {
    edit_config(
        text,
        &[(
            REDB,
            &format!(
                "\n[storage]\nengine = \"postgres\"\nurl_file = \"{}\"\nnode_id = \"copy\"\n",
                url_file.display()
            ),
        )],
    )
}

/// Writes `text` as a config file `name` in `dir`; its path.
fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, render_config(text, dir)).unwrap();
    path
}

fn store_copy(from: &Path, to: &Path, cwd: &Path) -> Output {
    run_cli(
        &[
            "store".as_ref(),
            "copy".as_ref(),
            "-c".as_ref(),
            from.as_os_str(),
            "--to".as_ref(),
            to.as_os_str(),
        ],
        cwd,
    )
}

/// A copy that must succeed; its stdout (the summary line).
fn copy_ok(from: &Path, to: &Path, cwd: &Path) -> String {
    let out = store_copy(from, to, cwd);
    assert_eq!(out.code(), Some(0), "store copy should succeed\n{out}");
    assert!(out.stderr.is_empty(), "nothing to warn about\n{out}");
    out.stdout.trim().to_string()
}

/// A copy that must be refused (exit 78); its stderr.
fn copy_refused(from: &Path, to: &Path, cwd: &Path) -> String {
    let out = store_copy(from, to, cwd);
    assert_eq!(out.code(), Some(78), "store copy should be refused\n{out}");
    assert!(out.stdout.is_empty(), "{out}");
    out.stderr
}

/// Everything the admin socket shows of a store.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tickets: Vec<Value>,
    details: Vec<Value>,
    outbox: Vec<Value>,
    conversations: Vec<Value>,
    /// Message-ID → the `message` answer (its fields, ticket, raw bytes).
    messages: BTreeMap<String, Value>,
    counts: (Value, Value),
}

fn snapshot(d: &Daemon) -> Snapshot {
    let tickets = d.all_tickets();
    let details: Vec<Value> = tickets
        .iter()
        .map(|t| d.ticket(t["id"].as_u64().unwrap()))
        .collect();
    let conversations = d.conversations();
    let mut messages = BTreeMap::new();
    for m in details
        .iter()
        .flat_map(|t| t["messages"].as_array().unwrap().iter())
        .chain(conversations.iter())
    {
        let id = m["message_id"].as_str().unwrap().to_string();
        let stored = d
            .message(&id)
            .unwrap_or_else(|| d.fail(format!("message {id} is listed but not stored")));
        messages.insert(id, stored);
    }
    let health = d.health();
    Snapshot {
        tickets,
        details,
        outbox: d.outbox_all(),
        conversations,
        messages,
        counts: (health["tickets"].clone(), health["outbox_pending"].clone()),
    }
}

/// `copy` shows what `original` showed; the first difference otherwise.
fn assert_same(original: &Snapshot, copy: &Snapshot, what: &str) {
    if original == copy {
        return;
    }
    let pairs: [(&str, Value, Value); 6] = [
        ("tickets", json!(original.tickets), json!(copy.tickets)),
        (
            "ticket details",
            json!(original.details),
            json!(copy.details),
        ),
        ("outbox", json!(original.outbox), json!(copy.outbox)),
        (
            "conversations",
            json!(original.conversations),
            json!(copy.conversations),
        ),
        ("messages", json!(original.messages), json!(copy.messages)),
        (
            "health counts",
            json!([original.counts.0, original.counts.1]),
            json!([copy.counts.0, copy.counts.1]),
        ),
    ];
    for (name, a, b) in pairs {
        assert_eq!(
            serde_json::to_string_pretty(&a).unwrap(),
            serde_json::to_string_pretty(&b).unwrap(),
            "{what}: the {name} differ from the original's"
        );
    }
}

fn carol(subject: &str) -> Msg {
    msg()
        .from("Carol Customer <carol@example.com>")
        .subject(subject)
}

/// A message of 8-bit bytes (not UTF-8) with a bare LF, a bare CR,
/// trailing blanks and a dot-stuffed line, as SMTP DATA: delivered as it
/// is. Its ticket id, and its Message-ID.
fn send_8bit(d: &Daemon) -> (u64, String) {
    let mid = crate::support::unique_id("8bit");
    let mut data = format!(
        "From: Eve <eve@example.com>\r\nTo: support@acme.example\r\n\
         Subject: Caf\u{e9} order\r\nMessage-ID: {mid}\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=iso-8859-1\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    .into_bytes();
    data.extend_from_slice(
        b"Caf\xe9 cr\xe8me \xff\xfe\r\nbare LF here\nthen a bare CR\rthen trailing blanks  \t\r\n\
          ..a line that began with a dot\r\n\r\n.\r\n",
    );
    let mut c = Client::ready(d.smtp_addr());
    assert_eq!(
        c.mail_from_with("eve@example.com", "BODY=8BITMIME").code,
        250
    );
    assert_eq!(c.rcpt_to("support@acme.example").code, 250);
    let reply = c.data_encoded(&data);
    let id = reply
        .ticket_id()
        .unwrap_or_else(|| d.fail(format!("the 8-bit message should make a ticket: {reply}")));
    let _ = c.quit();
    let raw = d.raw(&mid).unwrap();
    assert!(
        raw.ends_with(
            b"Caf\xe9 cr\xe8me \xff\xfe\r\nbare LF here\nthen a bare CR\rthen trailing blanks  \t\r\n\
              .a line that began with a dot\r\n\r\n"
        ),
        "stored byte-exact: {:?}",
        String::from_utf8_lossy(&raw)
    );
    (id, mid)
}

/// After a copy, the copy's daemon goes on: a stranger writing to the
/// signed reply address of an email sent before the copy threads onto its
/// ticket (the key's secret came along), and a new message gets the next
/// ticket id.
fn assert_goes_on(d: &Daemon, signed: &str, ticket: u64, next_id: u64) {
    let forwarded = msg()
        .from("Dave <dave@example.org>")
        .subject("forwarded")
        .rcpt_to(signed);
    assert_eq!(
        d.send_ok(&forwarded),
        ticket,
        "the signed address {signed} threads after the copy"
    );
    assert_eq!(
        d.send_ok(&carol("After the copy")),
        next_id,
        "the next ticket id continues after the copied ones"
    );
}

fn reply_to(e: &eml::Eml) -> String {
    e.header("Reply-To").unwrap_or_default().to_string()
}

#[test]
fn a_store_copied_to_postgres_and_back_is_the_same_store() {
    let Some(db) = require_pg_or_skip() else {
        return;
    };
    let work = temp_dir();
    let sink = Sink::start();
    let text = relay_config(&sink);
    let mut original = Daemon::start(&text);

    // A new ticket, acknowledged; a reply threaded by In-Reply-To.
    let first = carol("Printer on fire");
    let t1 = original.send_ok(&first);
    let ack = sink.wait_accepted(1, DEADLINE)[0].eml();
    let signed = reply_to(&ack);
    assert!(
        signed.contains('+'),
        "the acknowledgement's Reply-To: {signed:?}"
    );
    let reply = carol("Re: Printer on fire")
        .in_reply_to(&first.mid())
        .body("Still burning.\n");
    assert_eq!(original.send_ok(&reply), t1);
    // An agent's reply, which the relay refuses for good: failed.
    sink.set_data_reply(550);
    original.cmd(json!({"cmd": "reply", "id": t1, "body": "We are on it.", "user": "alice"}));
    wait_until(DEADLINE, "the agent's reply failed", || {
        let failed = original.outbox("failed");
        if failed.len() == 1 {
            Ok(())
        } else {
            Err(format!("{:#?}", original.outbox_all()))
        }
    });
    // A message kept without a ticket, bigger than PostgreSQL's chunk
    // rows of raw bytes (256 KiB).
    let big = format!("{}\n", "0123456789abcdef ".repeat(50)).repeat(360);
    assert!(original
        .send(
            &carol("Quote for 40 printers")
                .to("sales@acme.example")
                .body(&big)
        )
        .is_kept());
    // An 8-bit message, whose acknowledgement the relay defers: queued,
    // with its next attempt.
    sink.set_data_reply(451);
    let (t2, _) = send_8bit(&original);
    wait_until(DEADLINE, "the deferred acknowledgement", || {
        let queued = original.outbox("queued");
        match queued.iter().find(|o| o["ticket"] == t2) {
            Some(o) if o["attempts"].as_u64().unwrap_or(0) >= 1 => Ok(()),
            _ => Err(format!("{:#?}", original.outbox_all())),
        }
    });
    let before = snapshot(&original);
    assert_eq!(before.tickets.len(), 2);
    assert_eq!(before.outbox.len(), 3, "{:#?}", before.outbox);
    assert_eq!(before.conversations.len(), 1);
    assert!(original.terminate().success());

    // redb → PostgreSQL, on a migrated database.
    let url_file = work.path().join("pg.url");
    std::fs::write(&url_file, format!("{}\n", db.url())).unwrap();
    let pg_text = on_postgres(&text, &url_file);
    let pg_config = write_config(work.path(), "pg.toml", &pg_text);
    let out = store_copy(original.config_path(), &pg_config, work.path());
    assert_eq!(out.code(), Some(78), "a database without the schema\n{out}");
    assert!(
        out.stderr.contains("run `postdesk migrate -c"),
        "says to migrate first\n{out}"
    );
    migrate(&pg_config, work.path());
    let summary = copy_ok(original.config_path(), &pg_config, work.path());
    assert_eq!(
        summary,
        "copied 2 tickets, 7 messages, 3 outbox emails, 1 conversation from redb to postgres"
    );

    // PostgreSQL → a fresh redb store.
    let back_text = on_redb_at(&text, &work.path().join("back"));
    let back_config = write_config(work.path(), "back.toml", &back_text);
    let summary = copy_ok(&pg_config, &back_config, work.path());
    assert_eq!(
        summary,
        "copied 2 tickets, 7 messages, 3 outbox emails, 1 conversation from postgres to redb"
    );

    // Both copies are the original, and go on from it.
    let mut on_pg = Daemon::start(&pg_text);
    assert_same(&before, &snapshot(&on_pg), "the copy on PostgreSQL");
    assert_goes_on(&on_pg, &signed, t1, 3);
    assert!(on_pg.terminate().success());
    let mut back = Daemon::start(&back_text);
    assert_same(&before, &snapshot(&back), "the copy back on redb");
    assert_goes_on(&back, &signed, t1, 3);
    assert!(back.terminate().success());

    // Done once: running it again does nothing (the copy has taken mail
    // of its own since).
    let again = copy_ok(original.config_path(), &pg_config, work.path());
    assert_eq!(
        again,
        "already copied: 2 tickets, 7 messages, 3 outbox emails, 1 conversation from redb to \
         postgres; nothing to do"
    );

    // Another store into it: refused.
    let mut other = Daemon::start(&redb_config());
    other.send_ok(&carol("Another store"));
    assert!(other.terminate().success());
    let e = copy_refused(other.config_path(), &pg_config, work.path());
    assert!(
        e.contains(
            "the target store already holds 3 tickets that did not come from this source; refusing"
        ),
        "{e}"
    );
}

#[test]
fn a_store_copy_refuses_a_store_in_use_or_holding_other_data() {
    let work = temp_dir();
    let mut a = Daemon::start(&redb_config());
    let id = a.send_ok(&carol("One"));
    let target_text = on_redb_at(&redb_config(), &work.path().join("target"));
    let target = write_config(work.path(), "target.toml", &target_text);
    // The daemon holds the store.
    let e = copy_refused(a.config_path(), &target, work.path());
    assert!(
        e.contains("the source is in use") && e.contains("stop the daemon"),
        "{e}"
    );
    assert!(a.terminate().success());
    // Into itself.
    let e = copy_refused(a.config_path(), a.config_path(), work.path());
    assert!(e.contains("the same store"), "{e}");

    // A target with data of its own (and the same store copied the other
    // way does not count as this copy).
    let mut b = Daemon::start(&target_text);
    b.send_ok(&carol("Two"));
    b.send_ok(&carol("Three"));
    assert!(b.terminate().success());
    let e = copy_refused(a.config_path(), &target, work.path());
    assert!(
        e.contains(
            "the target store already holds 2 tickets that did not come from this source; refusing"
        ),
        "{e}"
    );
    // Nothing changed in either.
    a.start_again();
    assert_eq!(a.all_tickets().len(), 1);
    assert_eq!(a.ticket(id)["subject"], "One");
}

#[test]
fn an_interrupted_copy_refuses_to_be_served_and_finishes_when_run_again() {
    let work = temp_dir();
    let text = redb_config();
    let mut original = Daemon::start(&text);
    let first = carol("First");
    let t1 = original.send_ok(&first);
    original.send_ok(&carol("Re: First").in_reply_to(&first.mid()));
    // A message naming one we never saw: a Message-ID row only named.
    original.send_ok(&carol("Second").references("<never-seen@elsewhere.example>"));
    original.send_ok(&carol("Third"));
    assert!(original
        .send(&carol("Kept").to("sales@acme.example"))
        .is_kept());
    original.wait_outbox_idle();
    let ack = eml::wait_for_one(&original.sent_dir(), DEADLINE, "the first ack", |e| {
        e.ticket() == Some(t1)
    });
    let signed = reply_to(&ack);
    let before = snapshot(&original);
    assert!(original.terminate().success());

    // One ticket per chunk; the copy is killed after its first chunk.
    let copy_text = on_redb_at(&text, &work.path().join("copy"));
    let copy_config = write_config(work.path(), "copy.toml", &copy_text);
    let hold = work.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let mut child = Command::new(BIN)
        .args(["store", "copy", "-c"])
        .arg(original.config_path())
        .arg("--to")
        .arg(&copy_config)
        .env("POSTDESK_COPY_CHUNK", "1")
        .env(
            "POSTDESK_FAILPOINTS",
            format!("copy.after_chunk=pause({})", hold.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let paused = work.path().join("hold.paused");
    wait_until(DEADLINE, "the copy paused after its first chunk", || {
        if paused.exists() {
            Ok(())
        } else {
            Err(format!("{:?}", child.try_wait()))
        }
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // Half a copy is not served.
    let serve = run_cli(
        &["serve".as_ref(), "-c".as_ref(), copy_config.as_os_str()],
        work.path(),
    );
    assert_eq!(serve.code(), Some(78), "{serve}");
    assert!(
        serve
            .stderr
            .contains("the target of an unfinished `postdesk store copy` (from redb, 1 ticket"),
        "{serve}"
    );

    // Run again, in chunks of one still: it goes on from there.
    let out = Command::new(BIN)
        .args(["store", "copy", "-c"])
        .arg(original.config_path())
        .arg("--to")
        .arg(&copy_config)
        .env("POSTDESK_COPY_CHUNK", "1")
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "copied 3 tickets, 8 messages, 3 outbox emails, 1 conversation from redb to redb"
    );

    let mut copy = Daemon::start(&copy_text);
    assert_same(&before, &snapshot(&copy), "the resumed copy");
    // The Message-ID only named came along: a reply naming it threads.
    assert_eq!(
        copy.send_ok(&carol("Re: elsewhere").in_reply_to("<never-seen@elsewhere.example>")),
        2
    );
    assert_goes_on(&copy, &signed, t1, 4);
    assert!(copy.terminate().success());
    let again = copy_ok(original.config_path(), &copy_config, work.path());
    assert!(
        again.ends_with("from redb to redb; nothing to do"),
        "{again}"
    );
}
