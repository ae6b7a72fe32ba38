//! Operations: merge, stats, and the systemd readiness protocol.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{default_config, message_ids, msg, render_config, timeline_kinds, Daemon};

#[test]
fn merge_moves_messages_and_future_replies_land_on_the_target() {
    let d = Daemon::start("");
    let a = msg().from("bob@example.com").subject("Printer broken");
    let b = msg()
        .from("bob@example.com")
        .subject("Printer still broken");
    let source = d.send_ok(&a);
    let target = d.send_ok(&b);
    assert_ne!(source, target);

    let merged = d.cmd(json!({"cmd": "merge", "source": source, "target": target}));
    assert_eq!(merged["id"], target);

    let t = d.ticket(target);
    let ids = message_ids(&t);
    assert!(ids.contains(&a.mid()) && ids.contains(&b.mid()), "{t:#}");
    assert!(timeline_kinds(&t).iter().any(|k| k == "merged"));
    let s = d.ticket(source);
    assert_eq!(s["status"], "closed", "{s:#}");
    assert!(message_ids(&s).is_empty(), "{s:#}");
    assert!(timeline_kinds(&s).iter().any(|k| k == "merged"));

    // A reply to the source's thread, by header and by plus address.
    let reply = msg()
        .from("bob@example.com")
        .subject("Re: Printer broken")
        .in_reply_to(&a.mid());
    assert_eq!(d.send_ok(&reply), target);
    let plus = msg()
        .from("bob@example.com")
        .subject("more")
        .rcpt_to(&format!("support+{source}@acme.example"));
    assert_eq!(d.send_ok(&plus), target);

    // Bad merges are refused without harm.
    for (req, code) in [
        (
            json!({"cmd": "merge", "source": target, "target": target}),
            "bad_request",
        ),
        (
            json!({"cmd": "merge", "source": source, "target": target}),
            "bad_request",
        ),
        (
            json!({"cmd": "merge", "source": 999, "target": target}),
            "not_found",
        ),
    ] {
        let r = d.request(req.clone());
        assert_eq!(r["ok"], false, "{req} → {r}");
        assert_eq!(r["error"]["code"], code, "{req} → {r}");
    }
}

#[test]
fn stats_counters_move() {
    let d = Daemon::start("");
    let before = d.cmd(json!({"cmd": "stats"}));
    assert_eq!(before["received"], 0, "{before:#}");
    let first = msg().from("carol@example.com").subject("Hello");
    d.send_ok(&first);
    d.send_ok(
        &msg()
            .from("carol@example.com")
            .subject("Re: Hello")
            .in_reply_to(&first.mid()),
    );
    d.send_ok(&first); // duplicate
    let after = d.cmd(json!({"cmd": "stats"}));
    assert_eq!(after["received"], 3, "{after:#}");
    assert_eq!(after["duplicates"], 1, "{after:#}");
    assert_eq!(after["tickets_created"], 1, "{after:#}");
    assert_eq!(after["threaded_by"]["new"], 1, "{after:#}");
    assert_eq!(after["threaded_by"]["in_reply_to"], 1, "{after:#}");
    let commits = after["store_commits"].as_u64().unwrap_or(0);
    assert!(commits >= 2, "{after:#}");
    // redb transactions: a batch joins one only while jobs wait behind it.
    let transactions = after["store_transactions"].as_u64().unwrap_or(0);
    let before_txns = before["store_transactions"].as_u64().unwrap_or(0);
    assert!(transactions > before_txns, "{after:#}");
    assert_eq!(after["receive_to_commit_latency"]["count"], 3, "{after:#}");
    assert!(
        after["commit_batch_size"]["count"].as_u64().unwrap_or(0) >= 2,
        "{after:#}"
    );
}

/// `Type=notify`: READY=1 once SMTP and the admin socket listen, RELOADING=1
/// and READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM.
#[test]
fn sd_notify_readiness_reload_and_stopping() {
    let dir = crate::support::daemon::temp_dir();
    let config = dir.path().join("postdesk.toml");
    std::fs::write(&config, render_config(&default_config("", ""), dir.path())).expect("config");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_postdesk"))
        .args(["serve", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means ready: the admin socket answers right away.
    let admin = dir.path().join("admin.sock");
    assert!(
        std::os::unix::net::UnixStream::connect(&admin).is_ok(),
        "admin socket not listening at READY"
    );

    let pid = child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(recv(), "RELOADING=1");
    assert_eq!(recv(), "READY=1");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(recv(), "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
