//! `postdesk import`: an mbox or Maildir becomes tickets with the same
//! threading, nothing is sent, and a second run changes nothing.

use serde_json::json;

use crate::support::daemon::{migrate, run_cli, temp_dir, with_test_storage};
use crate::support::pg::TestDb;
use crate::support::ACK_NEW;
use crate::support::{default_config, message_ids, render_config, Daemon};

fn mbox() -> String {
    [
        "From bob@example.com Mon Jan  1 10:00:00 2024",
        "From: Bob <bob@example.com>",
        "To: support@acme.example",
        "Subject: Printer on fire",
        "Message-ID: <imp-1@example.com>",
        "Date: Mon, 01 Jan 2024 10:00:00 +0000",
        "",
        "It smokes.",
        ">From the back, mostly.",
        "",
        "From alice@acme.example Mon Jan  1 11:00:00 2024",
        "From: Alice Agent <alice@acme.example>",
        "To: bob@example.com",
        "Subject: Re: Printer on fire",
        "Message-ID: <imp-2@acme.example>",
        "In-Reply-To: <imp-1@example.com>",
        "",
        "Unplug it.",
        "",
        "From bob@example.com Mon Jan  1 12:00:00 2024",
        // The contact: a bare plus address threads only from a participant.
        "From: bob@example.com",
        "To: support+1@acme.example",
        "Subject: another topic",
        "Message-ID: <imp-3@example.com>",
        "",
        "Me too (by plus address).",
        "",
        "From dave@example.com Mon Jan  1 13:00:00 2024",
        "From: dave@example.com",
        "To: support@acme.example",
        "Subject: New thread",
        "Message-ID: <imp-4@example.com>",
        "",
        "Hello.",
        "",
    ]
    .join("\n")
}

/// A scratch folder holding `postdesk.toml` (data under the folder, or in
/// the run's database: keep the [`TestDb`] while it is used).
fn with_config() -> (tempfile::TempDir, std::path::PathBuf, Option<TestDb>) {
    let dir = temp_dir();
    let config = dir.path().join("postdesk.toml");
    let (text, db) = with_test_storage(&default_config("", ACK_NEW), dir.path());
    std::fs::write(&config, render_config(&text, dir.path())).expect("config");
    if db.is_some() {
        migrate(&config, dir.path());
    }
    (dir, config, db)
}

#[test]
fn mbox_import_threads_sends_nothing_and_is_idempotent() {
    let (dir, config, _db) = with_config();
    let mbox_path = dir.path().join("support.mbox");
    std::fs::write(&mbox_path, mbox()).expect("mbox");
    let c = config.to_string_lossy().to_string();
    let m = mbox_path.to_string_lossy().to_string();

    let first = run_cli(&["import", "-c", &c, "--mbox", &m], dir.path());
    assert_eq!(first.code(), Some(0), "{first:?}");
    assert!(
        first
            .stdout
            .contains("4 messages: 2 new tickets, 2 added to existing tickets"),
        "{first:?}"
    );
    let again = run_cli(&["import", "-c", &c, "--mbox", &m], dir.path());
    assert_eq!(again.code(), Some(0), "{again:?}");
    assert!(again.stdout.contains("4 already present"), "{again:?}");

    // Start the daemon on the same data: the tickets are there, nothing was
    // queued or sent for them.
    // The config has absolute paths into `dir`, so the daemon uses the
    // imported data.
    let text = std::fs::read_to_string(&config).expect("read config");
    let mut d = Daemon::start(&text);
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 2, "{tickets:#?}");
    let t1 = d.ticket(1);
    assert_eq!(
        message_ids(&t1),
        vec![
            "<imp-1@example.com>",
            "<imp-2@acme.example>",
            "<imp-3@example.com>"
        ],
        "{t1:#}"
    );
    assert_eq!(t1["status"], "new", "import runs no automation: {t1:#}");
    let raw = d.cmd(json!({"cmd": "message", "message_id": "<imp-1@example.com>"}));
    let text1 = raw["text"].as_str().unwrap_or_default();
    assert!(
        text1.contains("From the back"),
        "mbox >From quoting undone: {text1:?}"
    );
    assert!(d.outbox_all().is_empty(), "import must send nothing");

    // With the daemon running, import goes through its admin socket.
    let maildir = dir.path().join("Maildir");
    std::fs::create_dir_all(maildir.join("cur")).expect("cur");
    std::fs::create_dir_all(maildir.join("new")).expect("new");
    std::fs::write(
        maildir.join("new/1700000000.1.host"),
        "From: erin@example.com\r\nTo: support@acme.example\r\nSubject: Re: New thread\r\nMessage-ID: <imp-5@example.com>\r\nIn-Reply-To: <imp-4@example.com>\r\n\r\nreply\r\n",
    )
    .expect("maildir file");
    let md = maildir.to_string_lossy().to_string();
    let c2 = d.config_path().to_string_lossy().to_string();
    let live = run_cli(&["import", "-c", &c2, "--maildir", &md], dir.path());
    assert_eq!(live.code(), Some(0), "{live:?}");
    assert!(
        live.stdout
            .contains("1 messages: 0 new tickets, 1 added to existing tickets"),
        "{live:?}"
    );
    assert!(message_ids(&d.ticket(2)).contains(&"<imp-5@example.com>".to_string()));
    assert!(d.outbox_all().is_empty(), "import must send nothing");
    d.restart();
}

#[test]
fn an_mbox_that_cannot_be_read_fails_with_its_name() {
    let (dir, config, _db) = with_config();
    // A directory opens like a file but fails at the first read.
    let not_a_file = dir.path().join("a-folder.mbox");
    std::fs::create_dir_all(&not_a_file).expect("dir");
    let c = config.to_string_lossy().to_string();
    let m = not_a_file.to_string_lossy().to_string();
    let out = run_cli(&["import", "-c", &c, "--mbox", &m], dir.path());
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("cannot read {m}")), "{out:?}");
    assert!(!out.stderr.contains("stopped there"), "{out:?}");
}
