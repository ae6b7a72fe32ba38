//! SPEC §7: the admin socket's protocol, and `postdesk ctl`.

use serde_json::{json, Value};

use crate::support::daemon::run_cli;
use crate::support::{msg, Daemon};

/// `resp` is `{"ok": false, "error": {"code": code, "message": "..."}}`.
fn assert_error(resp: &Value, code: &str) {
    assert_eq!(resp["ok"], false, "{resp}");
    assert_eq!(resp["error"]["code"], code, "{resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error says what went wrong: {resp}");
}

#[test]
fn bad_requests_get_error_objects_and_the_connection_lives_on() {
    let d = Daemon::start("");
    let mut admin = d.admin();

    let resp = admin.request_line("{this is not json").unwrap();
    assert_error(&resp, "bad_request");

    let resp = admin.request(json!({"cmd": "frobnicate"}));
    assert_error(&resp, "unknown_command");

    let resp = admin.request(json!({"cmd": "ticket", "id": 999}));
    assert_error(&resp, "not_found");

    // Same connection, a valid request.
    let resp = admin.request(json!({"cmd": "health"}));
    assert_eq!(resp["ok"], true, "{resp}");
    let health = &resp["data"];
    assert!(health["version"].is_string(), "{health}");
    assert!(health["uptime_secs"].is_u64(), "{health}");
    assert_eq!(health["tickets"], 0, "{health}");
    assert_eq!(health["outbox_pending"], 0, "{health}");

    // And the daemon still takes mail.
    let id = d.send_ok(&msg().subject("After bad requests"));
    let resp = admin.request(json!({"cmd": "ticket", "id": id}));
    assert_eq!(resp["ok"], true, "{resp}");
    assert_eq!(resp["data"]["subject"], "After bad requests", "{resp}");
}

#[test]
fn tickets_are_listed_newest_first() {
    let d = Daemon::start("");
    let first = d.send_ok(&msg().subject("First problem"));
    let second = d.send_ok(&msg().subject("Second problem"));
    let ids: Vec<_> = d.tickets().iter().map(|t| t["id"].as_u64()).collect();
    assert_eq!(ids, vec![Some(second), Some(first)]);
    assert_eq!(d.health()["tickets"], 2);
}

#[test]
fn ctl_json_prints_the_raw_response() {
    let d = Daemon::start("");
    let id = d.send_ok(&msg().subject("Seen through ctl"));
    let sock = d
        .admin_path()
        .to_str()
        .expect("a UTF-8 socket path")
        .to_string();

    // Global flags before or after the command.
    let orders = [
        vec!["ctl", "-s", &sock, "--json", "tickets"],
        vec!["ctl", "tickets", "-s", &sock, "--json"],
    ];
    for args in orders {
        let out = run_cli(&args, d.dir());
        assert_eq!(out.code(), Some(0), "postdesk {args:?}\n{out}");
        let resp: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("postdesk {args:?}: stdout is not JSON ({e})\n{out}"));
        assert_eq!(resp["ok"], true, "{resp}");
        let tickets = resp["data"].as_array().expect("data is an array");
        assert_eq!(tickets.len(), 1, "{resp}");
        assert_eq!(tickets[0]["id"], id, "{resp}");
        assert_eq!(tickets[0]["subject"], "Seen through ctl", "{resp}");
    }
}
