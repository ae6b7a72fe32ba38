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
