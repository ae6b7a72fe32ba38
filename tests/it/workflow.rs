//! SPEC §1 `postdesk workflow`: viewing and editing the workflows of the
//! config file in place — through the real binary, on a temp copy of a
//! config full of the operator's comments; an invalid result leaves the
//! file byte-identical; a running daemon is told to reload.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::daemon::{run_cli, temp_dir, Output};
use crate::support::{edit_config, msg, render_config, timeline_events, Daemon};

/// A whole config (for [`Daemon::start`] too) with comments everywhere.
const CONFIG: &str = r#"# A test config with the operator's comments: they must survive edits.

[server]
hostname = "desk.acme.example"   # HELO name
listen = ["127.0.0.1:0"]
data_dir = "{dir}/data"
admin_socket = "{dir}/admin.sock"
templates = "{templates}"

[outbound]
transport = "file"
dir = "{dir}/sent"
from = "Acme Support <support@acme.example>"

# Agents.
[[user]]
id = "alice"
name = "Alice Agent"
email = "alice@acme.example"

[[team]]
id = "tier1"
members = ["alice"]   # the first line

[[channel]]
id = "support"
addresses = ["support@acme.example"]
pipeline = "support"

[[pipeline]]
id = "support"
name = "Support Pipeline"
statuses = [
  { id = "new",    name = "New" },
  { id = "closed", name = "Closed", closed = true },
]

# "Trigger actions when a ticket reaches a status".
[[workflow]]
id = "ack-new"
pipeline = "support"
enroll = { status = "new" }   # every new email ticket
actions = [
  { send_email = "ticket_received", comment = "acknowledge every new ticket" },
  { notify = { team = "tier1" } },     # or { user = "alice" }
]

[[workflow]]
id = "closed-mail"
pipeline = "support"
enroll = { status = "closed" }
reenroll = true   # each time
actions = [ { send_email = "ticket_closed" } ]

# the end
"#;

/// The workflow `ack-new` as the file has it, without the header comment.
const ACK_NEW_BODY: &str = r#"pipeline = "support"
enroll = { status = "new" }   # every new email ticket
actions = [
  { send_email = "ticket_received", comment = "acknowledge every new ticket" },
  { notify = { team = "tier1" } },     # or { user = "alice" }
]
"#;

const NOT_RUNNING: &str = "daemon not running (no socket): the change applies at next start";

/// A temp dir holding `postdesk.toml` (the [`CONFIG`], rendered for it).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup::with(CONFIG)
    }

    fn with(text: &str) -> Setup {
        let dir = temp_dir();
        std::fs::write(
            dir.path().join("postdesk.toml"),
            render_config(text, dir.path()),
        )
        .unwrap();
        Setup { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("postdesk.toml")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.path()).unwrap()
    }

    /// The config as first written (rendered for this dir).
    fn original(&self, text: &str) -> String {
        render_config(text, self.dir.path())
    }

    /// `postdesk workflow -c FILE ARGS`.
    fn run(&self, args: &[&str]) -> Output {
        workflow(&self.path(), args, self.dir.path())
    }

    /// Files other than the config left in the dir (e.g. temp files).
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "postdesk.toml")
            .collect()
    }
}

fn workflow(config: &Path, args: &[&str], cwd: &Path) -> Output {
    let mut all: Vec<OsString> = vec!["workflow".into(), "-c".into(), config.into()];
    all.extend(args.iter().map(OsString::from));
    run_cli(&all, cwd)
}

fn assert_ok(out: &Output) {
    assert_eq!(out.code(), Some(0), "{out}");
}

fn assert_fails(out: &Output) {
    assert_eq!(out.code(), Some(1), "{out}");
}

// ---- views ----

#[test]
fn list_prints_a_table_of_the_workflows() {
    let s = Setup::new();
    let out = s.run(&["list"]);
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        "ID           PIPELINE  ENROLL         REENROLL  ENABLED  ACTIONS\n\
         ack-new      support   status=new     no        yes      2\n\
         closed-mail  support   status=closed  yes       yes      1\n",
        "{out}"
    );
}

#[test]
fn show_prints_enrollment_reenrollment_and_each_action() {
    let s = Setup::new();
    // -c after the subcommand works too.
    let path = s.path();
    let out = run_cli(
        &[
            OsString::from("workflow"),
            "show".into(),
            "ack-new".into(),
            "-c".into(),
            path.into(),
        ],
        s.dir.path(),
    );
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        "workflow:      ack-new\n\
         pipeline:      support (Support Pipeline)\n\
         enabled:       yes\n\
         enrollment:    when a ticket of source email reaches status new (New)\n\
         re-enrollment: runs once per ticket (reenroll = false)\n\
         actions:\n  \
           [0] send email \"ticket_received\" — acknowledge every new ticket\n  \
           [1] notify team tier1\n",
        "{out}"
    );
    let out = s.run(&["show", "closed-mail"]);
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("re-enrollment: runs each time the condition is met anew"),
        "{out}"
    );

    let out = s.run(&["show", "nope"]);
    assert_fails(&out);
    assert!(
        out.stderr
            .contains(r#"unknown workflow "nope" (known: ack-new, closed-mail)"#),
        "{out}"
    );
}

#[test]
fn the_config_defaults_to_config_postdesk_toml_in_the_working_directory() {
    let dir = temp_dir();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/postdesk.toml"),
        render_config(CONFIG, dir.path()),
    )
    .unwrap();
    let out = run_cli(&["workflow", "list"], dir.path());
    assert_ok(&out);
    assert!(out.stdout.starts_with("ID "), "{out}");
    assert!(out.stdout.contains("closed-mail"), "{out}");
}

// ---- edits ----

#[test]
fn clone_inserts_a_copy_right_after_the_original() {
    let s = Setup::new();
    let before = s.text();
    let out = s.run(&["clone", "ack-new", "ack-copy"]);
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        format!(
            "cloned workflow \"ack-new\" as \"ack-copy\" (2 actions), right after it\n\
             note: \"ack-copy\" applies only to future status changes (when a ticket of source \
             email reaches status new (New)); tickets already there are not enrolled now\n\
             wrote {}\n{NOT_RUNNING}\n",
            s.path().display()
        ),
        "{out}"
    );
    let copy = format!("\n[[workflow]]\nid = \"ack-copy\"\n{ACK_NEW_BODY}");
    let expected = edit_config(
        &before,
        &[(
            "\n[[workflow]]\nid = \"closed-mail\"",
            &format!("{copy}\n[[workflow]]\nid = \"closed-mail\""),
        )],
    );
    assert_eq!(s.text(), expected);
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());

    let list = s.run(&["list"]);
    assert!(
        list.stdout.contains("ack-copy     support   status=new"),
        "{list}"
    );
}

#[test]
fn comment_sets_replaces_and_removes_an_action_comment() {
    let s = Setup::new();
    let original = s.original(CONFIG);

    let out = s.run(&["comment", "ack-new", "1", "tell the first line"]);
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        format!(
            "workflow \"ack-new\", action [1] (notify team tier1): comment set to \
             \"tell the first line\"\nwrote {}\n{NOT_RUNNING}\n",
            s.path().display()
        ),
        "{out}"
    );
    let with_comment = edit_config(
        &original,
        &[(
            "{ notify = { team = \"tier1\" } },",
            "{ notify = { team = \"tier1\" }, comment = \"tell the first line\" },",
        )],
    );
    assert_eq!(s.text(), with_comment);

    let out = s.run(&["comment", "ack-new", "0", "thank them"]);
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("comment set to \"thank them\" (was \"acknowledge every new ticket\")"),
        "{out}"
    );
    let replaced = edit_config(
        &with_comment,
        &[(
            "comment = \"acknowledge every new ticket\"",
            "comment = \"thank them\"",
        )],
    );
    assert_eq!(s.text(), replaced);

    let out = s.run(&["comment", "ack-new", "1", ""]);
    assert_ok(&out);
    assert!(out.stdout.contains("comment removed"), "{out}");
    let removed = edit_config(
        &original,
        &[(
            "comment = \"acknowledge every new ticket\"",
            "comment = \"thank them\"",
        )],
    );
    assert_eq!(s.text(), removed);

    // Removing a comment that is not there writes nothing.
    let out = s.run(&["comment", "closed-mail", "0", ""]);
    assert_ok(&out);
    assert!(out.stdout.contains("has no comment"), "{out}");
    assert!(out.stdout.contains("nothing changed"), "{out}");
    assert_eq!(s.text(), removed);
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
}

#[test]
fn move_action_reorders_actions_with_their_comments() {
    let s = Setup::new();
    let original = s.original(CONFIG);
    let out = s.run(&["move-action", "ack-new", "1", "0"]);
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        format!(
            "workflow \"ack-new\": moved action [1] (notify team tier1) to [0]\n\
             actions now:\n  \
               [0] notify team tier1\n  \
               [1] send email \"ticket_received\" — acknowledge every new ticket\n\
             wrote {}\n{NOT_RUNNING}\n",
            s.path().display()
        ),
        "{out}"
    );
    let expected = edit_config(
        &original,
        &[(
            "actions = [\n  \
               { send_email = \"ticket_received\", comment = \"acknowledge every new ticket\" },\n  \
               { notify = { team = \"tier1\" } },     # or { user = \"alice\" }\n]",
            "actions = [\n  \
               { notify = { team = \"tier1\" } },     # or { user = \"alice\" }\n  \
               { send_email = \"ticket_received\", comment = \"acknowledge every new ticket\" },\n]",
        )],
    );
    assert_eq!(s.text(), expected);

    // And back: the file is the original again.
    assert_ok(&s.run(&["move-action", "ack-new", "0", "1"]));
    assert_eq!(s.text(), original);
}

#[test]
fn delete_action_removes_one_or_it_and_the_following() {
    let s = Setup::new();
    let original = s.original(CONFIG);
    let out = s.run(&["delete-action", "ack-new", "0"]);
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        format!(
            "workflow \"ack-new\": deleted action [0] send email \"ticket_received\"\n\
             actions now:\n  [0] notify team tier1\n\
             wrote {}\n{NOT_RUNNING}\n",
            s.path().display()
        ),
        "{out}"
    );
    let one_gone = edit_config(
        &original,
        &[(
            "  { send_email = \"ticket_received\", comment = \"acknowledge every new ticket\" },\n",
            "",
        )],
    );
    assert_eq!(s.text(), one_gone);

    // Every action of a workflow may go: the result still validates.
    let out = s.run(&["delete-action", "closed-mail", "0", "--and-following"]);
    assert_ok(&out);
    assert!(out.stdout.contains("actions now:\n  (none)\n"), "{out}");
    let all_gone = edit_config(
        &one_gone,
        &[(
            "actions = [ { send_email = \"ticket_closed\" } ]",
            "actions = []",
        )],
    );
    assert_eq!(s.text(), all_gone);
    let check = run_cli(
        &[OsString::from("check"), "-c".into(), s.path().into()],
        s.dir.path(),
    );
    assert_ok(&check);
}

#[test]
fn the_file_keeps_its_permissions() {
    let s = Setup::new();
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_ok(&s.run(&["comment", "ack-new", "0", "x"]));
    let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "mode {mode:o}");
}

// ---- refusals ----

#[test]
fn an_edit_that_would_make_the_config_invalid_writes_nothing() {
    let s = Setup::new();
    let before = s.text();
    // An id the loader refuses: the loader says so, at the line the clone
    // would have had, in the config's name (not the temp file's).
    let out = s.run(&["clone", "ack-new", "bad id!"]);
    assert_fails(&out);
    // The copy's `id` line is where `closed-mail`'s is now.
    let line = before[..before.find("id = \"closed-mail\"").unwrap()]
        .lines()
        .count()
        + 1;
    assert!(
        out.stderr.contains(&format!(
            "{}:{line}:6: invalid workflow id \"bad id!\"",
            s.path().display()
        )),
        "{out}"
    );
    assert!(out.stderr.contains("nothing was written"), "{out}");
    assert!(!out.stderr.contains(".tmp-"), "{out}");
    assert_eq!(s.text(), before, "the file is byte-identical");
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
}

#[test]
fn an_edit_of_an_already_broken_config_writes_nothing() {
    let broken = edit_config(
        CONFIG,
        &[(
            "hostname = \"desk.acme.example\"",
            "hostnme = \"desk.acme.example\"",
        )],
    );
    let s = Setup::with(&broken);
    let before = s.text();
    let out = s.run(&["delete-action", "ack-new", "1"]);
    assert_fails(&out);
    assert!(
        out.stderr
            .contains(&format!("{}:4:1: unknown key", s.path().display())),
        "{out}"
    );
    assert_eq!(s.text(), before);
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());

    // Viewing a broken config lists its problems and fails too.
    let out = s.run(&["list"]);
    assert_fails(&out);
    assert!(out.stderr.contains("unknown key"), "{out}");
}

#[test]
fn bad_ids_and_indexes_are_refused() {
    let s = Setup::new();
    let before = s.text();
    let cases: &[(&[&str], &str)] = &[
        (
            &["clone", "nope", "x"],
            r#"unknown workflow "nope" (known: ack-new, closed-mail)"#,
        ),
        (
            &["clone", "ack-new", "closed-mail"],
            r#"a workflow "closed-mail" already exists"#,
        ),
        (
            &["comment", "ack-new", "2", "x"],
            r#"no action 2 in workflow "ack-new" (it has 2 actions: indexes 0 to 1)"#,
        ),
        (
            &["move-action", "closed-mail", "0", "1"],
            r#"no action 1 in workflow "closed-mail" (it has 1 action: index 0)"#,
        ),
        (
            &["delete-action", "ack-new", "5", "--and-following"],
            r#"no action 5 in workflow "ack-new""#,
        ),
    ];
    for (args, message) in cases {
        let out = s.run(args);
        assert_fails(&out);
        assert!(out.stderr.contains(message), "{args:?}: {out}");
        assert_eq!(s.text(), before, "{args:?}");
    }
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
}

// ---- a running daemon ----

#[test]
fn a_running_daemon_reloads_the_edited_config() {
    let d = Daemon::start(CONFIG);
    let run = |args: &[&str]| workflow(d.config_path(), args, d.dir());
    let received = |id: u64| {
        d.outbox_all()
            .iter()
            .filter(|o| o["ticket"] == id)
            .filter(|o| {
                o["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("We received your request")
            })
            .count()
    };
    let ran = |id: u64| -> Vec<String> {
        timeline_events(&d.ticket(id), "workflow_ran")
            .iter()
            .map(|e| {
                e["detail"]["workflow"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };

    let first = d.send_ok(&msg().from("a@example.com").subject("Before"));
    assert_eq!(ran(first), ["ack-new"]);
    assert_eq!(received(first), 1);

    let out = run(&["comment", "ack-new", "1", "tell the team"]);
    assert_ok(&out);
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");

    // A clone runs for the next new ticket, besides the original.
    let out = run(&["clone", "ack-new", "ack-copy"]);
    assert_ok(&out);
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");
    let second = d.send_ok(&msg().from("b@example.com").subject("After the clone"));
    assert_eq!(ran(second), ["ack-new", "ack-copy"]);
    assert_eq!(received(second), 2);
    // ... and enrolled no ticket that was already there.
    assert_eq!(ran(first), ["ack-new"]);

    // Without their send_email actions, a new ticket gets no auto-reply.
    assert_ok(&run(&["delete-action", "ack-copy", "0"]));
    let out = run(&["delete-action", "ack-new", "0"]);
    assert_ok(&out);
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");
    let third = d.send_ok(&msg().from("c@example.com").subject("After the delete"));
    assert_eq!(ran(third), ["ack-new", "ack-copy"]);
    assert_eq!(received(third), 0, "{:#?}", d.outbox_all());
}

#[test]
fn disable_enable_and_delete_reach_a_running_daemon() {
    let d = Daemon::start(CONFIG);
    let run = |args: &[&str]| workflow(d.config_path(), args, d.dir());
    let ran = |id: u64| -> Vec<String> {
        timeline_events(&d.ticket(id), "workflow_ran")
            .iter()
            .filter_map(|e| e["detail"]["workflow"].as_str().map(str::to_owned))
            .collect()
    };
    let original = std::fs::read_to_string(d.config_path()).unwrap();

    let out = run(&["disable", "ack-new"]);
    assert_ok(&out);
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    assert!(text.contains("enabled = false"), "{text}");
    assert!(
        text.contains("# A test config with the operator's comments"),
        "{text}"
    );
    let show = run(&["show", "ack-new"]);
    assert!(
        show.stdout.contains("enabled:       no: runs nothing"),
        "{show}"
    );
    let off = d.send_ok(&msg().from("a@example.com").subject("While disabled"));
    assert!(ran(off).is_empty(), "{:#}", d.ticket(off));
    assert!(
        d.outbox_all().iter().all(|o| o["ticket"] != off),
        "{:#?}",
        d.outbox_all()
    );

    assert_ok(&run(&["enable", "ack-new"]));
    let on = d.send_ok(&msg().from("b@example.com").subject("Enabled again"));
    assert_eq!(ran(on), ["ack-new"]);

    let out = run(&["delete", "ack-new"]);
    assert_ok(&out);
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");
    assert!(!std::fs::read_to_string(d.config_path())
        .unwrap()
        .contains("id = \"ack-new\""));
    let gone = d.send_ok(&msg().from("c@example.com").subject("Deleted"));
    assert!(ran(gone).is_empty(), "{:#}", d.ticket(gone));
    let out = run(&["delete", "ack-new"]);
    assert_fails(&out);
    assert!(out.stderr.contains("unknown workflow \"ack-new\""), "{out}");
    assert_ne!(original, std::fs::read_to_string(d.config_path()).unwrap());
}

#[test]
fn set_action_and_add_action_reach_a_running_daemon() {
    let d = Daemon::start(CONFIG);
    let run = |args: &[&str]| workflow(d.config_path(), args, d.dir());
    let out = run(&["add-action", "ack-new", r#"{ set_status = "closed" }"#]);
    assert_ok(&out);
    assert!(
        out.stdout.contains("added action [2] set status closed"),
        "{out}"
    );
    assert!(out.stdout.ends_with("daemon reloaded\n"), "{out}");
    let id = d.send_ok(&msg().from("a@example.com").subject("Closed at once"));
    let t = d.ticket(id);
    assert_eq!(t["status"], "closed", "{t:#}");
    let ran: Vec<String> = timeline_events(&t, "workflow_ran")
        .iter()
        .filter_map(|e| e["detail"]["workflow"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ran, ["ack-new", "closed-mail"], "{t:#}");

    let before = std::fs::read_to_string(d.config_path()).unwrap();
    let out = run(&[
        "set-action",
        "ack-new",
        "2",
        r#"{ set_status = "nowhere" }"#,
    ]);
    assert_fails(&out);
    assert!(out.stderr.contains("unknown status \"nowhere\""), "{out}");
    assert_eq!(before, std::fs::read_to_string(d.config_path()).unwrap());

    let out = run(&[
        "set-action",
        "ack-new",
        "2",
        r#"{ notify = { owner = true } }"#,
    ]);
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("was set status closed, is now notify owner"),
        "{out}"
    );
    let id = d.send_ok(&msg().from("b@example.com").subject("Stays new"));
    assert_eq!(d.ticket(id)["status"], "new");
}
