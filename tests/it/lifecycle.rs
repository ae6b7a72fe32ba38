//! SPEC §1 and §5: restarts, kill -9, `check`, and `serve` on a bad config.

use std::collections::BTreeSet;
use std::ffi::OsStr;

use crate::support::daemon::{run_cli, temp_dir};
use crate::support::{default_config, message_ids, msg, render_config, threaded_by, Daemon};

#[test]
fn a_ticket_survives_sigterm_and_start() {
    let mut d = Daemon::start("");
    let first = msg().subject("Survives restarts");
    let id = d.send_ok(&first);

    d.restart(); // asserts exit 0 on SIGTERM

    let t = d.ticket(id);
    assert_eq!(t["subject"], "Survives restarts", "{t:#}");
    assert_eq!(message_ids(&t), vec![first.mid()], "{t:#}");

    // Ids go on; the Message-ID index survived too.
    let next = d.send_ok(&msg().subject("After the restart"));
    assert!(
        next > id,
        "ticket ids are given in order: {next} after {id}"
    );
    let again = d.send(&first);
    assert_eq!(again.status(), "250 2.0.0", "{again}");
    assert_eq!(again.ticket_id(), Some(id), "still a duplicate: {again}");
    assert_eq!(d.tickets().len(), 2);
}

#[test]
fn accepted_mail_survives_kill_9() {
    let mut d = Daemon::start("");
    let sent: Vec<_> = (0..3)
        .map(|i| {
            let m = msg().subject(&format!("Accepted {i}"));
            let id = d.send_ok(&m);
            (id, m)
        })
        .collect();

    d.kill9(); // right after the last 250
    d.start_again();

    assert_eq!(d.tickets().len(), 3);
    for (id, m) in &sent {
        let t = d.ticket(*id);
        assert_eq!(message_ids(&t), vec![m.mid()], "{t:#}");
    }

    // Threading still knows the old Message-IDs.
    let (id, first) = &sent[0];
    let reply = msg()
        .subject("Re: after the crash")
        .in_reply_to(&first.mid());
    assert_eq!(d.send_ok(&reply), *id);
    assert_eq!(
        threaded_by(&d.ticket(*id), &reply.mid()).as_deref(),
        Some("in_reply_to")
    );
}

/// `FILE:LINE:COL: message` lines of `out` that name `file` (by its file
/// name); (line, col, message) each.
fn problems(out: &str, file: &str) -> Vec<(usize, usize, String)> {
    let marker = format!("{file}:");
    out.lines()
        .filter_map(|l| {
            let rest = &l[l.rfind(&marker)? + marker.len()..];
            let mut parts = rest.splitn(3, ':');
            let line = parts.next()?.parse().ok()?;
            let col = parts.next()?.parse().ok()?;
            Some((line, col, parts.next()?.trim().to_string()))
        })
        .collect()
}

/// 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
        + 1
}

#[test]
fn check_passes_the_default_config() {
    let dir = temp_dir();
    let path = dir.path().join("good.toml");
    std::fs::write(&path, render_config(&default_config("", ""), dir.path())).unwrap();
    let out = run_cli(
        &[OsStr::new("check"), OsStr::new("-c"), path.as_os_str()],
        dir.path(),
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(problems(&out.stdout, "good.toml").is_empty(), "{out}");
}

#[test]
fn check_lists_every_problem_and_serve_exits_78() {
    let dir = temp_dir();
    let text = render_config(&default_config("bogus_key = 1", ""), dir.path()).replacen(
        r#"pipeline = "support""#,
        r#"pipeline = "suport""#,
        1,
    );
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, &text).unwrap();
    let unknown_key = line_of(&text, "bogus_key");
    let unknown_pipeline = line_of(&text, r#"pipeline = "suport""#);

    let out = run_cli(
        &[OsStr::new("check"), OsStr::new("-c"), path.as_os_str()],
        dir.path(),
    );
    assert_eq!(out.code(), Some(1), "{out}");
    let found = problems(&out.stdout, "bad.toml");
    assert_eq!(found.len(), 2, "two `FILE:LINE:COL: message` lines:\n{out}");
    let lines: BTreeSet<_> = found.iter().map(|p| p.0).collect();
    assert_eq!(
        lines,
        BTreeSet::from([unknown_key, unknown_pipeline]),
        "each problem at its line:\n{out}"
    );
    for (line, col, message) in &found {
        assert!(*col >= 1, "{out}");
        let names = if *line == unknown_key {
            "bogus_key"
        } else {
            "suport"
        };
        assert!(
            message.contains(names),
            "line {line} should name {names:?}:\n{out}"
        );
    }

    let out = run_cli(
        &[OsStr::new("serve"), OsStr::new("-c"), path.as_os_str()],
        dir.path(),
    );
    assert_eq!(out.code(), Some(78), "{out}");
    assert!(!out.stdout.contains("ready"), "nothing is bound: {out}");
    let printed = format!("{}{}", out.stdout, out.stderr);
    assert!(
        printed.contains("bogus_key") && printed.contains("suport"),
        "serve prints every problem as check does:\n{out}"
    );
}

/// ARCHITECTURE.md, store journal: a `250` is durable once its batch is in
/// the journal; redb holds it durably only from the next checkpoint. With
/// checkpoints held off, kill -9 lands between the two, and the restart
/// applies the journal again. What it rebuilds must be exactly what was
/// answered and seen before the crash: the same tickets with the same
/// numbers, threading and timelines, the same outbox with the same
/// Message-IDs (customers may already be replying to those emails), and no
/// email sent twice (its delivery result was journaled too).
#[test]
fn a_kill_9_between_checkpoints_is_recovered_exactly_from_the_journal() {
    if crate::support::pg::skip_unless_redb(
        "a_kill_9_between_checkpoints_is_recovered_exactly_from_the_journal",
    ) {
        return;
    }
    let mut d = Daemon::start_with_env(
        crate::support::ACK_NEW,
        &[("POSTDESK_CHECKPOINT_MS", "3600000")],
    );
    let mut sent = Vec::new();
    for (i, who) in [
        "Ann <ann@example.com>",
        "Bob <bob@example.net>",
        "Cy <cy@example.org>",
    ]
    .iter()
    .enumerate()
    {
        let m = msg().from(who).subject(&format!("Journal {i}"));
        sent.push((d.send_ok(&m), m));
    }
    let (first_id, first) = &sent[0];
    let reply = msg()
        .from("Ann <ann@example.com>")
        .subject("Re: Journal 0")
        .in_reply_to(&first.mid());
    assert_eq!(d.send_ok(&reply), *first_id);
    d.wait_outbox_idle();
    let sent_dir = d.sent_dir();
    let emails = || std::fs::read_dir(&sent_dir).map(|r| r.count()).unwrap_or(0);
    let emails_before = emails();
    assert_eq!(emails_before, 3, "one acknowledgement per new ticket");
    let tickets_before = d.all_tickets();
    let outbox_before = d.outbox_all();
    // Every message, inbound and outbound, with its raw bytes: replay
    // writes them to the blob file again.
    let mut mids: Vec<String> = sent.iter().map(|(_, m)| m.mid()).collect();
    mids.push(reply.mid());
    mids.extend(
        outbox_before
            .iter()
            .filter_map(|o| o["message_id"].as_str().map(String::from)),
    );
    assert_eq!(mids.len(), 7, "{outbox_before:?}");
    let messages = |d: &Daemon| -> Vec<serde_json::Value> {
        mids.iter()
            .map(|mid| {
                d.message(mid)
                    .unwrap_or_else(|| d.fail(format!("{mid} is not stored")))
            })
            .collect()
    };
    let messages_before = messages(&d);
    for m in &messages_before {
        assert!(
            m["raw_base64"].as_str().is_some_and(|r| r.len() > 100),
            "{m}"
        );
    }
    assert!(
        !d.logs().contains("store recovered from the journal"),
        "{}",
        d.logs()
    );

    d.kill9();
    // What a power loss may leave of the blob file: nothing written since
    // the last checkpoint (the start's) was synced. The journal was, and
    // replay must write every message's bytes again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.dir().join("data/postdesk.blobs"))
        .unwrap()
        .set_len(0)
        .unwrap();
    d.start_again();

    // stderr is read by its own thread: the line may trail `ready`.
    crate::support::wait_until(
        crate::support::DEADLINE,
        "the restart replayed the journal",
        || {
            let logs = d.logs();
            if logs.contains("store recovered from the journal") {
                Ok(())
            } else {
                Err(logs)
            }
        },
    );
    assert_eq!(d.all_tickets(), tickets_before, "tickets after recovery");
    assert_eq!(d.outbox_all(), outbox_before, "outbox after recovery");
    assert_eq!(messages(&d), messages_before, "messages after recovery");
    for (id, m) in &sent {
        assert_eq!(
            d.message(&m.mid()).map(|v| v["ticket"].clone()),
            Some((*id).into())
        );
    }
    // Give a (wrong) resend the time to happen, then count.
    d.wait_outbox_idle();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(emails(), emails_before, "no acknowledgement sent twice");

    // The store goes on from there: ids continue, threading works.
    let next = d.send_ok(&msg().from("Dee <dee@example.com>").subject("After"));
    assert!(next > sent[2].0, "{next}");
    let again = msg()
        .from("Bob <bob@example.net>")
        .subject("Re: Journal 1")
        .in_reply_to(&sent[1].1.mid());
    assert_eq!(d.send_ok(&again), sent[1].0);
}

#[test]
fn an_intact_journal_record_that_cannot_be_decoded_stops_the_start_and_is_kept() {
    if crate::support::pg::skip_unless_redb(
        "an_intact_journal_record_that_cannot_be_decoded_stops_the_start_and_is_kept",
    ) {
        return;
    }
    let mut d = Daemon::start_with_env("", &[("POSTDESK_CHECKPOINT_MS", "3600000")]);
    d.send_ok(&msg().subject("Only in the journal"));
    d.kill9();

    // Replace the first record's payload with bytes that are no record
    // payload, and seal it again: intact on disk, undecodable.
    let path = d.dir().join("data/postdesk.journal");
    let mut journal = std::fs::read(&path).unwrap();
    assert_eq!(&journal[..4], b"PDJ1", "a record at offset 0");
    let len = u32::from_le_bytes(journal[4..8].try_into().unwrap());
    let payload = 24..24 + len as usize;
    journal[payload.clone()].fill(0xff);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&journal[4..16]);
    crc.update(&journal[payload]);
    journal[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
    std::fs::write(&path, &journal).unwrap();

    let out = run_cli(
        &[
            OsStr::new("serve"),
            OsStr::new("-c"),
            d.config_path().as_os_str(),
        ],
        d.dir(),
    );
    let stderr = &out.stderr;
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("postdesk.journal")
            && stderr.contains("record 1 is intact but cannot be decoded"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        journal,
        "the journal is left as it is"
    );
}

/// The raw messages live in `postdesk.blobs`, named by the database; a
/// database whose blob file lacks bytes it names (a backup or restore that
/// left the file out) must not start as if nothing were missing.
#[test]
fn a_blob_file_shorter_than_the_database_names_stops_the_start() {
    if crate::support::pg::skip_unless_redb(
        "a_blob_file_shorter_than_the_database_names_stops_the_start",
    ) {
        return;
    }
    let mut d = Daemon::start("");
    let m = msg().subject("Bytes in the blob file");
    d.send_ok(&m);
    let raw = d.message(&m.mid()).expect("stored")["raw_base64"].clone();
    assert!(raw.as_str().is_some_and(|r| !r.is_empty()), "{raw}");
    assert!(d.terminate().success());

    let path = d.dir().join("data/postdesk.blobs");
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 0, "the message's bytes are in {}", path.display());
    let serve = |d: &Daemon| {
        run_cli(
            &[
                OsStr::new("serve"),
                OsStr::new("-c"),
                d.config_path().as_os_str(),
            ],
            d.dir(),
        )
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let out = serve(&d);
    let stderr = &out.stderr;
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("postdesk.blobs")
            && stderr.contains(&format!(
                "holds {} bytes but the database names {len}",
                len - 1
            )),
        "{stderr}"
    );
    std::fs::remove_file(&path).unwrap();
    let out = serve(&d);
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(out.stderr.contains("holds 0 bytes"), "{}", out.stderr);
}
