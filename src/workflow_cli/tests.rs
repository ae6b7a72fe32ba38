#![allow(clippy::unwrap_used, clippy::expect_used)]

use expect_test::{expect, Expect};
use toml_edit::DocumentMut;

use super::*;

/// Workflows written as the shipped config writes them: arrays of inline
/// tables, with comments everywhere a comment can be.
const SAMPLE: &str = r#"# postdesk config (a comment at the top)

[server]
hostname = "desk.acme.example"   # HELO name

[[pipeline]]
id = "support"
statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

# Workflows: the documentation of the whole section.
[[workflow]]
id = "ack-new"
pipeline = "support"
# when a ticket arrives
enroll = { status = "new" }
reenroll = false   # once per ticket
actions = [  # in order
  # first, tell the customer
  { send_email = "ticket_received", comment = "acknowledge" },
  { notify = { team = "tier1" } },     # or { user = "alice" }
  { notify = { owner = true }, comment = "the owner" },
]

[[workflow]]
id = "closed-mail"
pipeline = "support"
enroll = { status = "closed" }
actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

# a comment at the end of the file
"#;

/// Workflows with `[workflow.enroll]` and `[[workflow.actions]]` tables.
const TABLES: &str = r#"[[workflow]]
id = "t"
pipeline = "support"

[workflow.enroll]
status = "new"

# the acknowledgement
[[workflow.actions]]
send_email = "ticket_received"
comment = "ack"

# then the team
[[workflow.actions]]
notify = { team = "tier1" }

[[workflow.actions]]
notify = { owner = true }   # the owner

[[workflow]]
id = "after"
pipeline = "support"
enroll = { status = "closed" }
"#;

fn doc(text: &str) -> DocumentMut {
    let doc: DocumentMut = text.parse().unwrap();
    assert_eq!(doc.to_string(), text, "toml_edit round-trips the sample");
    doc
}

/// Applies `edit` to `input`; compares what it said and the resulting
/// document with `expect`, and checks that nothing outside workflow
/// `changed` moved by a byte.
fn check(
    input: &str,
    changed: &str,
    edit: impl FnOnce(&mut DocumentMut) -> Result<String, EditError>,
    expect: Expect,
) {
    let mut d = doc(input);
    let said = edit(&mut d).unwrap_or_else(|e| panic!("edit failed: {e}"));
    let out = d.to_string();
    assert_only_in_workflow(input, &out, changed);
    // The result is still TOML that the config loader's parser reads.
    let _: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    expect.assert_eq(&format!("{said}\n---\n{out}"));
}

/// The byte range of workflow `id` in `text`: from its `[[workflow]]`
/// header to the next `[[workflow]]` header (or the end). Comment lines
/// just above the next header count as the next workflow's.
fn workflow_range(text: &str, id: &str) -> (usize, usize) {
    let headers: Vec<usize> = text.match_indices("[[workflow]]").map(|(i, _)| i).collect();
    let id_line = format!("id = \"{id}\"");
    let at = text.find(&id_line).unwrap();
    let start = headers.iter().copied().filter(|&h| h < at).max().unwrap();
    let end = headers
        .iter()
        .copied()
        .find(|&h| h > at)
        .map_or(text.len(), |next| {
            // back to the line after the last key of this workflow
            let mut end = next;
            while let Some(line_start) = text[..end.saturating_sub(1)].rfind('\n') {
                let line = &text[line_start + 1..end.saturating_sub(1)];
                if line.starts_with('#') || line.trim().is_empty() {
                    end = line_start + 1;
                } else {
                    break;
                }
            }
            end
        });
    (start, end)
}

/// Asserts that `after` differs from `before` only inside workflow `id`'s
/// range: everything before it and everything after it is byte-identical.
fn assert_only_in_workflow(before: &str, after: &str, id: &str) {
    let (start, end) = workflow_range(before, id);
    let tail = &before[end..];
    assert!(
        after.len() >= start + tail.len()
            && after.as_bytes()[..start] == before.as_bytes()[..start]
            && after.ends_with(tail),
        "the edit changed bytes outside workflow {id:?} ({start}..{end})\n\
         --- before ---\n{before}\n--- after ---\n{after}",
    );
}

fn err(input: &str, edit: impl FnOnce(&mut DocumentMut) -> Result<String, EditError>) -> String {
    let mut d = doc(input);
    let e = edit(&mut d).expect_err("the edit should fail");
    assert_eq!(d.to_string(), input, "a failed edit changes nothing");
    e.to_string()
}

// ---- clone ----

#[test]
fn clone_inserts_a_copy_right_after_the_original() {
    check(
        SAMPLE,
        "ack-new",
        |d| clone_workflow(d, "ack-new", "ack-copy"),
        expect![[r#"
            cloned workflow "ack-new" as "ack-copy" (3 actions), right after it
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "ack-copy"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn clone_of_the_last_workflow_goes_at_the_end() {
    check(
        SAMPLE,
        "closed-mail",
        |d| clone_workflow(d, "closed-mail", "closed-2"),
        expect![[r#"
            cloned workflow "closed-mail" as "closed-2" (2 actions), right after it
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            [[workflow]]
            id = "closed-2"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn clone_keeps_nested_tables_with_the_copy() {
    check(
        TABLES,
        "t",
        |d| clone_workflow(d, "t", "t2"),
        expect![[r#"
            cloned workflow "t" as "t2" (3 actions), right after it
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow]]
            id = "t2"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
    // And it means what it shows.
    let mut d = doc(TABLES);
    clone_workflow(&mut d, "t", "t2").unwrap();
    let parsed: toml::Table = toml::from_str(&d.to_string()).unwrap();
    let workflows = parsed["workflow"].as_array().unwrap();
    let ids: Vec<&str> = workflows
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t", "t2", "after"]);
    assert_eq!(workflows[1]["enroll"]["status"].as_str(), Some("new"));
    assert_eq!(workflows[1]["actions"].as_array().unwrap().len(), 3);
    assert!(workflows[2].get("actions").is_none());
}

#[test]
fn clone_refuses_a_duplicate_or_unknown_id() {
    expect![[r#"a workflow "closed-mail" already exists"#]].assert_eq(&err(SAMPLE, |d| {
        clone_workflow(d, "ack-new", "closed-mail")
    }));
    expect![[r#"unknown workflow "nope" (known: ack-new, closed-mail)"#]]
        .assert_eq(&err(SAMPLE, |d| clone_workflow(d, "nope", "x")));
}

// ---- comment ----

#[test]
fn comment_is_added_in_the_style_of_the_action() {
    check(
        SAMPLE,
        "ack-new",
        |d| set_comment(d, "ack-new", 1, "tell tier 1"),
        expect![[r#"
            workflow "ack-new", action [1] (notify team tier1): comment set to "tell tier 1"
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" }, comment = "tell tier 1" },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn comment_is_replaced_in_place_and_removed() {
    check(
        SAMPLE,
        "ack-new",
        |d| {
            let a = set_comment(d, "ack-new", 0, "say \"hi\"")?;
            let b = set_comment(d, "ack-new", 2, "")?;
            let c = set_comment(d, "ack-new", 2, "")?;
            Ok(format!("{a}\n{b}\n{c}"))
        },
        expect![[r#"
            workflow "ack-new", action [0] (send email "ticket_received"): comment set to "say \"hi\"" (was "acknowledge")
            workflow "ack-new", action [2] (notify owner): comment removed
            workflow "ack-new", action [2] (notify owner) has no comment
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = 'say "hi"' },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true } },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn comment_on_a_one_line_array_and_a_compact_table() {
    let compact = SAMPLE.replace(
        "{ send_email = \"ticket_closed\" }",
        "{send_email=\"ticket_closed\"}",
    );
    check(
        &compact,
        "closed-mail",
        |d| {
            let a = set_comment(d, "closed-mail", 0, "bye")?;
            let b = set_comment(d, "closed-mail", 1, "owner")?;
            Ok(format!("{a}\n{b}"))
        },
        expect![[r#"
            workflow "closed-mail", action [0] (send email "ticket_closed"): comment set to "bye"
            workflow "closed-mail", action [1] (notify owner): comment set to "owner"
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ {send_email="ticket_closed",comment="bye"}, { notify = { owner = true }, comment = "owner" } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn comment_in_actions_tables() {
    check(
        TABLES,
        "t",
        |d| {
            let a = set_comment(d, "t", 1, "the team")?;
            let b = set_comment(d, "t", 0, "")?;
            let c = set_comment(d, "t", 2, "owner")?;
            Ok(format!("{a}\n{b}\n{c}"))
        },
        expect![[r#"
            workflow "t", action [1] (notify team tier1): comment set to "the team"
            workflow "t", action [0] (send email "ticket_received"): comment removed
            workflow "t", action [2] (notify owner): comment set to "owner"
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }
            comment = "the team"

            [[workflow.actions]]
            notify = { owner = true }   # the owner
            comment = "owner"

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
}

#[test]
fn comment_refuses_bad_input() {
    expect![[r#"a comment is one line of text (no line breaks)"#]]
        .assert_eq(&err(SAMPLE, |d| set_comment(d, "ack-new", 0, "two\nlines")));
    expect![[r#"no action 3 in workflow "ack-new" (it has 3 actions: indexes 0 to 2)"#]]
        .assert_eq(&err(SAMPLE, |d| set_comment(d, "ack-new", 3, "x")));
    expect![[r#"unknown workflow "ack" (known: ack-new, closed-mail)"#]]
        .assert_eq(&err(SAMPLE, |d| set_comment(d, "ack", 0, "x")));
    expect![[r#"no action 0 in workflow "after" (it has no actions)"#]]
        .assert_eq(&err(TABLES, |d| set_comment(d, "after", 0, "x")));
}

// ---- move ----

#[test]
fn move_takes_an_action_with_its_comments() {
    check(
        SAMPLE,
        "ack-new",
        |d| move_action(d, "ack-new", 0, 2),
        expect![[r#"
            workflow "ack-new": moved action [0] (send email "ticket_received") to [2]
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
    check(
        SAMPLE,
        "ack-new",
        |d| move_action(d, "ack-new", 1, 0),
        expect![[r#"
            workflow "ack-new": moved action [1] (notify team tier1) to [0]
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              { notify = { team = "tier1" } },     # or { user = "alice" }
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn move_in_a_one_line_array_and_without_trailing_comma() {
    check(
        SAMPLE,
        "closed-mail",
        |d| move_action(d, "closed-mail", 1, 0),
        expect![[r#"
            workflow "closed-mail": moved action [1] (notify owner) to [0]
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { notify = { owner = true } }, { send_email = "ticket_closed" } ]

            # a comment at the end of the file
        "#]],
    );
    let multi = SAMPLE.replace(
        "  { notify = { owner = true }, comment = \"the owner\" },\n]",
        "  { notify = { owner = true }, comment = \"the owner\" }  # last\n]",
    );
    check(
        &multi,
        "ack-new",
        |d| move_action(d, "ack-new", 2, 0),
        expect![[r#"
            workflow "ack-new": moved action [2] (notify owner) to [0]
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              { notify = { owner = true }, comment = "the owner" },  # last
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } }     # or { user = "alice" }
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn move_actions_tables() {
    check(
        TABLES,
        "t",
        |d| move_action(d, "t", 0, 2),
        expect![[r#"
            workflow "t": moved action [0] (send email "ticket_received") to [2]
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
}

#[test]
fn move_to_the_same_place_changes_nothing() {
    let mut d = doc(SAMPLE);
    let said = move_action(&mut d, "ack-new", 1, 1).unwrap();
    assert_eq!(d.to_string(), SAMPLE);
    expect![[r#"workflow "ack-new", action [1] (notify team tier1) is already at [1]"#]]
        .assert_eq(&said);
}

#[test]
fn move_refuses_bad_indexes() {
    expect![[r#"no action 3 in workflow "ack-new" (it has 3 actions: indexes 0 to 2)"#]]
        .assert_eq(&err(SAMPLE, |d| move_action(d, "ack-new", 3, 0)));
    expect![[r#"no action 7 in workflow "closed-mail" (it has 2 actions: indexes 0 to 1)"#]]
        .assert_eq(&err(SAMPLE, |d| move_action(d, "closed-mail", 0, 7)));
}

// ---- delete ----

#[test]
fn delete_one_action_with_its_comments() {
    check(
        SAMPLE,
        "ack-new",
        |d| delete_actions(d, "ack-new", 0, false),
        expect![[r#"
            workflow "ack-new": deleted action [0] send email "ticket_received"
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn delete_in_a_one_line_array() {
    check(
        SAMPLE,
        "closed-mail",
        |d| delete_actions(d, "closed-mail", 0, false),
        expect![[r#"
            workflow "closed-mail": deleted action [0] send email "ticket_closed"
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn delete_and_following() {
    check(
        SAMPLE,
        "ack-new",
        |d| delete_actions(d, "ack-new", 1, true),
        expect![[r#"
            workflow "ack-new": deleted actions [1] notify team tier1, [2] notify owner
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn delete_every_action() {
    check(
        SAMPLE,
        "closed-mail",
        |d| delete_actions(d, "closed-mail", 0, true),
        expect![[r#"
            workflow "closed-mail": deleted actions [0] send email "ticket_closed", [1] notify owner
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = []

            # a comment at the end of the file
        "#]],
    );
    check(
        SAMPLE,
        "ack-new",
        |d| delete_actions(d, "ack-new", 0, true),
        expect![[r#"
            workflow "ack-new": deleted actions [0] send email "ticket_received", [1] notify team tier1, [2] notify owner
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
}

#[test]
fn delete_actions_tables() {
    check(
        TABLES,
        "t",
        |d| delete_actions(d, "t", 1, false),
        expect![[r#"
            workflow "t": deleted action [1] notify team tier1
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
}

#[test]
fn delete_refuses_bad_indexes() {
    expect![[r#"no action 2 in workflow "closed-mail" (it has 2 actions: indexes 0 to 1)"#]]
        .assert_eq(&err(SAMPLE, |d| delete_actions(d, "closed-mail", 2, true)));
    expect![[r#"unknown workflow "x" (known: t, after)"#]]
        .assert_eq(&err(TABLES, |d| delete_actions(d, "x", 0, false)));
}

// ---- layouts we do not edit ----

#[test]
fn no_workflows_or_an_inline_array_of_them() {
    expect![[r#"the config has no [[workflow]] tables"#]]
        .assert_eq(&err("[server]\n", |d| clone_workflow(d, "a", "b")));
    expect![[r#"the workflows are not written as [[workflow]] tables; this command edits only [[workflow]] tables (edit the file by hand)"#]]
        .assert_eq(&err(
            "workflow = [ { id = \"a\" } ]\n",
            |d| set_comment(d, "a", 0, "x"),
        ));
}

// ---- views ----

/// A config loaded by the real loader, with the repository's templates.
fn config(workflows: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let text = format!(
        r#"[server]
templates = "{}"

[outbound]
from = "Acme Support <support@acme.example>"

[[user]]
id = "alice"
email = "alice@acme.example"

[[team]]
id = "tier1"
members = ["alice"]

[[channel]]
id = "support"
addresses = ["support@acme.example"]
pipeline = "support"

[[pipeline]]
id = "support"
name = "Support Pipeline"
statuses = [ {{ id = "new", name = "New" }}, {{ id = "closed", name = "Closed", closed = true }} ]
{workflows}"#,
        templates.display()
    );
    let path = dir.path().join("postdesk.toml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|p| panic!("{p}"))
}

const VIEW_WORKFLOWS: &str = r#"
[[workflow]]
id = "ack-new"
pipeline = "support"
enroll = { status = "new" }
actions = [
  { send_email = "ticket_received", comment = "acknowledge every new ticket" },
  { notify = { team = "tier1" } },
]

[[workflow]]
id = "chat-in"
pipeline = "support"
enroll = { source = "chat" }
reenroll = true
actions = [ { notify = { user = "alice" }, comment = "a chat came in" } ]

[[workflow]]
id = "closed"
pipeline = "support"
enroll = { status = "closed", source = "email" }
actions = [ { notify = { owner = true } } ]
"#;

#[test]
fn list_is_a_table() {
    expect![[r#"
        ID       PIPELINE  ENROLL                      REENROLL  ENABLED  ACTIONS
        ack-new  support   status=new                  no        yes      2
        chat-in  support   source=chat                 yes       yes      1
        closed   support   status=closed source=email  no        yes      1
    "#]]
    .assert_eq(&list(&config(VIEW_WORKFLOWS)));
    expect![[r#"
        no workflows
    "#]]
    .assert_eq(&list(&config("")));
}

#[test]
fn show_says_enrollment_reenrollment_and_actions() {
    let c = config(VIEW_WORKFLOWS);
    expect![[r#"
        workflow:      ack-new
        pipeline:      support (Support Pipeline)
        enabled:       yes
        enrollment:    when a ticket of source email reaches status new (New)
        re-enrollment: runs once per ticket (reenroll = false)
        actions:
          [0] send email "ticket_received" — acknowledge every new ticket
          [1] notify team tier1
    "#]]
    .assert_eq(&show(&c, "ack-new").unwrap());
    expect![[r#"
        workflow:      chat-in
        pipeline:      support (Support Pipeline)
        enabled:       yes
        enrollment:    when a ticket of source chat is created (at any status)
        re-enrollment: runs each time the condition is met anew (reenroll = true)
        actions:
          [0] notify user alice — a chat came in
    "#]]
    .assert_eq(&show(&c, "chat-in").unwrap());
    expect![[r#"
        workflow:      closed
        pipeline:      support (Support Pipeline)
        enabled:       yes
        enrollment:    when a ticket of source email reaches status closed (Closed)
        re-enrollment: runs once per ticket (reenroll = false)
        actions:
          [0] notify owner
    "#]]
    .assert_eq(&show(&c, "closed").unwrap());
    expect![[r#"unknown workflow "nope" (known: ack-new, chat-in, closed)"#]]
        .assert_eq(&show(&c, "nope").unwrap_err().to_string());
}

#[test]
fn show_of_a_workflow_without_actions() {
    let c = config(
        "[[workflow]]\nid = \"empty\"\npipeline = \"support\"\nenroll = { status = \"new\" }\n",
    );
    expect![[r#"
        workflow:      empty
        pipeline:      support (Support Pipeline)
        enabled:       yes
        enrollment:    when a ticket of source email reaches status new (New)
        re-enrollment: runs once per ticket (reenroll = false)
        actions:
          (none)
    "#]]
    .assert_eq(&show(&c, "empty").unwrap());
}

/// The shipped config: every edit round-trips it byte for byte outside the
/// workflow it touches.
#[test]
fn the_shipped_config_is_edited_in_place() {
    let shipped = include_str!("../../config/postdesk.toml");
    type Edit = Box<dyn Fn(&mut DocumentMut) -> Result<String, EditError>>;
    let edits: Vec<(&str, Edit)> = vec![
        ("ack-new", Box::new(|d| clone_workflow(d, "ack-new", "x"))),
        ("ack-new", Box::new(|d| set_comment(d, "ack-new", 1, "x"))),
        ("ack-new", Box::new(|d| set_comment(d, "ack-new", 0, ""))),
        ("ack-new", Box::new(|d| move_action(d, "ack-new", 1, 0))),
        (
            "closed-mail",
            Box::new(|d| delete_actions(d, "closed-mail", 0, false)),
        ),
        (
            "closed-mail",
            Box::new(|d| delete_actions(d, "closed-mail", 0, true)),
        ),
    ];
    for (id, edit) in edits {
        let mut d = doc(shipped);
        edit(&mut d).unwrap();
        let out = d.to_string();
        assert_ne!(out, shipped);
        assert_only_in_workflow(shipped, &out, id);
    }
}

// ---- enable, disable, delete ----

#[test]
fn disable_writes_enabled_false_and_enable_turns_it_back() {
    check(
        SAMPLE,
        "ack-new",
        |d| set_enabled(d, "ack-new", false),
        expect![[r#"
            workflow "ack-new" disabled (it runs nothing until `postdesk workflow enable`)
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]
            enabled = false

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
    let mut d = doc(SAMPLE);
    set_enabled(&mut d, "ack-new", false).unwrap();
    let disabled = d.to_string();
    check(
        &disabled,
        "ack-new",
        |d| set_enabled(d, "ack-new", true),
        expect![[r#"
            workflow "ack-new" enabled
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]
            enabled = true

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
    // Nothing to do: said so, and the document is unchanged.
    let mut d = doc(SAMPLE);
    let said = set_enabled(&mut d, "closed-mail", true).unwrap();
    assert_eq!(said, "workflow \"closed-mail\" is already enabled");
    assert_eq!(d.to_string(), SAMPLE);
    let mut d = doc(&disabled);
    let said = set_enabled(&mut d, "ack-new", false).unwrap();
    assert_eq!(said, "workflow \"ack-new\" is already disabled");
    assert_eq!(d.to_string(), disabled);
}

#[test]
fn disable_in_a_workflow_of_tables() {
    check(
        TABLES,
        "t",
        |d| set_enabled(d, "t", false),
        expect![[r#"
        workflow "t" disabled (it runs nothing until `postdesk workflow enable`)
        ---
        [[workflow]]
        id = "t"
        pipeline = "support"
        enabled = false

        [workflow.enroll]
        status = "new"

        # the acknowledgement
        [[workflow.actions]]
        send_email = "ticket_received"
        comment = "ack"

        # then the team
        [[workflow.actions]]
        notify = { team = "tier1" }

        [[workflow.actions]]
        notify = { owner = true }   # the owner

        [[workflow]]
        id = "after"
        pipeline = "support"
        enroll = { status = "closed" }
    "#]],
    );
}

#[test]
fn delete_takes_the_workflow_its_tables_and_its_comments() {
    // The whole result is compared (`check`'s byte-range test does not fit
    // a deletion, which joins what was before and after the workflow).
    let deleted = |input: &str, id: &str, expect: Expect| {
        let mut d = doc(input);
        let said = delete_workflow(&mut d, id).unwrap();
        let out = d.to_string();
        let _: toml::Table = toml::from_str(&out).unwrap();
        expect.assert_eq(&format!("{said}\n---\n{out}"));
    };
    deleted(
        SAMPLE,
        "ack-new",
        expect![[r#"
        deleted workflow "ack-new" (3 actions)
        ---
        # postdesk config (a comment at the top)

        [server]
        hostname = "desk.acme.example"   # HELO name

        [[pipeline]]
        id = "support"
        statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

        # Workflows: the documentation of the whole section.
        [[workflow]]
        id = "closed-mail"
        pipeline = "support"
        enroll = { status = "closed" }
        actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

        # a comment at the end of the file
    "#]],
    );
    deleted(
        SAMPLE,
        "closed-mail",
        expect![[r#"
        deleted workflow "closed-mail" (2 actions)
        ---
        # postdesk config (a comment at the top)

        [server]
        hostname = "desk.acme.example"   # HELO name

        [[pipeline]]
        id = "support"
        statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

        # Workflows: the documentation of the whole section.
        [[workflow]]
        id = "ack-new"
        pipeline = "support"
        # when a ticket arrives
        enroll = { status = "new" }
        reenroll = false   # once per ticket
        actions = [  # in order
          # first, tell the customer
          { send_email = "ticket_received", comment = "acknowledge" },
          { notify = { team = "tier1" } },     # or { user = "alice" }
          { notify = { owner = true }, comment = "the owner" },
        ]

        # a comment at the end of the file
    "#]],
    );
    deleted(
        TABLES,
        "t",
        expect![[r#"
        deleted workflow "t" (3 actions)
        ---
        [[workflow]]
        id = "after"
        pipeline = "support"
        enroll = { status = "closed" }
    "#]],
    );
    expect![[r#"unknown workflow "nope" (known: ack-new, closed-mail)"#]]
        .assert_eq(&err(SAMPLE, |d| delete_workflow(d, "nope")));
}

// ---- postdesk trigger ----

const TRIGGERS_SAMPLE: &str = r#"[[pipeline]]
id = "support"
statuses = [ { id = "new" }, { id = "waiting" }, { id = "closed", closed = true } ]

# when does a ticket move by itself
[pipeline.triggers]
email_sent_to_customer = { enabled = true, set_status = "waiting" }   # agent wrote
# customer_replied is off for now

[[pipeline]]
id = "sales"
statuses = [ { id = "open" } ]
triggers = { customer_replied = { enabled = false, set_status = "open" } }

[[pipeline]]
id = "billing"
statuses = [ { id = "open" } ]

[pipeline.triggers.customer_replied]
enabled = true # on
set_status = "open"
"#;

fn trigger_edit(pipeline: &str, name: &str, change: trigger::Change) -> String {
    let mut d = doc(TRIGGERS_SAMPLE);
    let said = trigger::edit_trigger(&mut d, pipeline, name, &change)
        .unwrap_or_else(|e| panic!("edit failed: {e}"));
    format!("{said}\n---\n{d}")
}

#[test]
fn trigger_edits_keep_comments_in_each_layout() {
    use trigger::Change;
    expect![[r#"
        pipeline "support": trigger email_sent_to_customer: enabled = false
        ---
        [[pipeline]]
        id = "support"
        statuses = [ { id = "new" }, { id = "waiting" }, { id = "closed", closed = true } ]

        # when does a ticket move by itself
        [pipeline.triggers]
        email_sent_to_customer = { enabled = false, set_status = "waiting" }   # agent wrote
        # customer_replied is off for now

        [[pipeline]]
        id = "sales"
        statuses = [ { id = "open" } ]
        triggers = { customer_replied = { enabled = false, set_status = "open" } }

        [[pipeline]]
        id = "billing"
        statuses = [ { id = "open" } ]

        [pipeline.triggers.customer_replied]
        enabled = true # on
        set_status = "open"
    "#]]
    .assert_eq(&trigger_edit(
        "support",
        "email_sent_to_customer",
        Change::Enabled(false),
    ));
    expect![[r#"
        pipeline "support": trigger customer_replied: set_status = "new"
        ---
        [[pipeline]]
        id = "support"
        statuses = [ { id = "new" }, { id = "waiting" }, { id = "closed", closed = true } ]

        # when does a ticket move by itself
        [pipeline.triggers]
        email_sent_to_customer = { enabled = true, set_status = "waiting" }   # agent wrote
        customer_replied = { enabled = true, set_status = "new" }
        # customer_replied is off for now

        [[pipeline]]
        id = "sales"
        statuses = [ { id = "open" } ]
        triggers = { customer_replied = { enabled = false, set_status = "open" } }

        [[pipeline]]
        id = "billing"
        statuses = [ { id = "open" } ]

        [pipeline.triggers.customer_replied]
        enabled = true # on
        set_status = "open"
    "#]]
    .assert_eq(&trigger_edit(
        "support",
        "customer_replied",
        Change::Status("new".into()),
    ));
    expect![[r#"
        pipeline "sales": trigger customer_replied: set_status = "open" (the trigger stays disabled: --enable turns it on)
        ---
        [[pipeline]]
        id = "support"
        statuses = [ { id = "new" }, { id = "waiting" }, { id = "closed", closed = true } ]

        # when does a ticket move by itself
        [pipeline.triggers]
        email_sent_to_customer = { enabled = true, set_status = "waiting" }   # agent wrote
        # customer_replied is off for now

        [[pipeline]]
        id = "sales"
        statuses = [ { id = "open" } ]
        triggers = { customer_replied = { enabled = false, set_status = "open" } }

        [[pipeline]]
        id = "billing"
        statuses = [ { id = "open" } ]

        [pipeline.triggers.customer_replied]
        enabled = true # on
        set_status = "open"
    "#]].assert_eq(&trigger_edit(
        "sales",
        "customer_replied",
        Change::Status("open".into()),
    ));
    expect![[r#"
        pipeline "billing": trigger customer_replied: enabled = false
        ---
        [[pipeline]]
        id = "support"
        statuses = [ { id = "new" }, { id = "waiting" }, { id = "closed", closed = true } ]

        # when does a ticket move by itself
        [pipeline.triggers]
        email_sent_to_customer = { enabled = true, set_status = "waiting" }   # agent wrote
        # customer_replied is off for now

        [[pipeline]]
        id = "sales"
        statuses = [ { id = "open" } ]
        triggers = { customer_replied = { enabled = false, set_status = "open" } }

        [[pipeline]]
        id = "billing"
        statuses = [ { id = "open" } ]

        [pipeline.triggers.customer_replied]
        enabled = false # on
        set_status = "open"
    "#]]
    .assert_eq(&trigger_edit(
        "billing",
        "customer_replied",
        Change::Enabled(false),
    ));
    expect![[r#"
        pipeline "billing": trigger email_sent_to_customer: set_status = "open"
        ---
        [[pipeline]]
        id = "support"
        statuses = [ { id = "new" }, { id = "waiting" }, { id = "closed", closed = true } ]

        # when does a ticket move by itself
        [pipeline.triggers]
        email_sent_to_customer = { enabled = true, set_status = "waiting" }   # agent wrote
        # customer_replied is off for now

        [[pipeline]]
        id = "sales"
        statuses = [ { id = "open" } ]
        triggers = { customer_replied = { enabled = false, set_status = "open" } }

        [[pipeline]]
        id = "billing"
        statuses = [ { id = "open" } ]

        [pipeline.triggers]
        email_sent_to_customer = { enabled = true, set_status = "open" }

        [pipeline.triggers.customer_replied]
        enabled = true # on
        set_status = "open"
    "#]]
    .assert_eq(&trigger_edit(
        "billing",
        "email_sent_to_customer",
        Change::Status("open".into()),
    ));
}

#[test]
fn trigger_edits_refuse_unknown_names() {
    use trigger::Change;
    let e = |p: &str, t: &str| {
        err(TRIGGERS_SAMPLE, |d| {
            trigger::edit_trigger(d, p, t, &Change::Enabled(true))
        })
    };
    expect![[
        r#"unknown trigger "customer_wrote" (known: email_sent_to_customer, customer_replied)"#
    ]]
    .assert_eq(&e("support", "customer_wrote"));
    expect![[r#"unknown pipeline "nope" (known: support, sales, billing)"#]]
        .assert_eq(&e("nope", "customer_replied"));
}

// ---- set-action, add-action ----

#[test]
fn set_action_replaces_one_keeping_its_comments() {
    check(
        SAMPLE,
        "ack-new",
        |d| set_action(d, "ack-new", 1, r#"{ set_status = "closed" }"#),
        expect![[r#"
            workflow "ack-new": action [1] was notify team tier1, is now set status closed
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { set_status = "closed" },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
    check(
        TABLES,
        "t",
        |d| set_action(d, "t", 0, r#"{ notify = { user = "alice" } }"#),
        expect![[r#"
            workflow "t": action [0] was send email "ticket_received", is now notify user alice
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            notify = { user = "alice" }

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
}

#[test]
fn add_action_writes_like_the_neighbours() {
    check(
        SAMPLE,
        "ack-new",
        |d| add_action(d, "ack-new", r#"{ set_status = "closed" }"#, None),
        expect![[r#"
            workflow "ack-new": added action [3] set status closed
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
              { set_status = "closed" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
    check(
        SAMPLE,
        "closed-mail",
        |d| add_action(d, "closed-mail", r#"{ set_status = "new" }"#, None),
        expect![[r#"
            workflow "closed-mail": added action [2] set status new
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" }, { notify = { owner = true } }, { set_status = "new" } ]

            # a comment at the end of the file
        "#]],
    );
    check(
        SAMPLE,
        "closed-mail",
        |d| add_action(d, "closed-mail", r#"{ set_status = "new" }"#, Some(0)),
        expect![[r#"
            workflow "closed-mail": added action [0] set status new
            ---
            # postdesk config (a comment at the top)

            [server]
            hostname = "desk.acme.example"   # HELO name

            [[pipeline]]
            id = "support"
            statuses = [ { id = "new", name = "New" }, { id = "closed", name = "Closed", closed = true } ]

            # Workflows: the documentation of the whole section.
            [[workflow]]
            id = "ack-new"
            pipeline = "support"
            # when a ticket arrives
            enroll = { status = "new" }
            reenroll = false   # once per ticket
            actions = [  # in order
              # first, tell the customer
              { send_email = "ticket_received", comment = "acknowledge" },
              { notify = { team = "tier1" } },     # or { user = "alice" }
              { notify = { owner = true }, comment = "the owner" },
            ]

            [[workflow]]
            id = "closed-mail"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { set_status = "new" }, { send_email = "ticket_closed" }, { notify = { owner = true } } ]

            # a comment at the end of the file
        "#]],
    );
    check(
        TABLES,
        "t",
        |d| add_action(d, "t", r#"{ set_status = "closed" }"#, Some(1)),
        expect![[r#"
            workflow "t": added action [1] set status closed
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            [[workflow.actions]]
            set_status = "closed"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
    check(
        TABLES,
        "t",
        |d| add_action(d, "t", r#"{ set_status = "closed" }"#, None),
        expect![[r#"
            workflow "t": added action [3] set status closed
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow.actions]]
            set_status = "closed"

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
        "#]],
    );
    check(
        TABLES,
        "after",
        |d| add_action(d, "after", r#"{ send_email = "ticket_closed" }"#, None),
        expect![[r#"
            workflow "after": added action [0] send email "ticket_closed"
            ---
            [[workflow]]
            id = "t"
            pipeline = "support"

            [workflow.enroll]
            status = "new"

            # the acknowledgement
            [[workflow.actions]]
            send_email = "ticket_received"
            comment = "ack"

            # then the team
            [[workflow.actions]]
            notify = { team = "tier1" }

            [[workflow.actions]]
            notify = { owner = true }   # the owner

            [[workflow]]
            id = "after"
            pipeline = "support"
            enroll = { status = "closed" }
            actions = [ { send_email = "ticket_closed" } ]
        "#]],
    );
}

#[test]
fn set_and_add_action_refuse_what_is_not_one_table() {
    expect![[r#""send_email = \"x\"" is not an action: write one inline table, e.g. '{ set_status = "closed" }' or '{ notify = { team = "tier1" } }'"#]].assert_eq(&err(SAMPLE, |d| set_action(d, "ack-new", 0, "send_email = \"x\"")));
    expect![[r#""{ broken" is not an action: write one inline table, e.g. '{ set_status = "closed" }' or '{ notify = { team = "tier1" } }'"#]].assert_eq(&err(SAMPLE, |d| add_action(d, "ack-new", "{ broken", None)));
    expect![[r#"workflow "ack-new" has 3 actions: --at is 0 to 3"#]].assert_eq(&err(SAMPLE, |d| {
        add_action(d, "ack-new", "{ a = 1 }", Some(9))
    }));
    expect![[r#"no action 7 in workflow "ack-new" (it has 3 actions: indexes 0 to 2)"#]]
        .assert_eq(&err(SAMPLE, |d| set_action(d, "ack-new", 7, "{ a = 1 }")));
}
