#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::raw::{fields, RawNotify, RawServer};
use super::validate::parse_size;
use super::*;
use crate::ingest::TicketId;

/// A temp dir holding the config (`postdesk.toml`) and a `templates/`
/// folder with the three shipped template names.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        for name in ["ticket_received", "ticket_closed", "notification"] {
            setup.write(
                &format!("templates/{name}.subject.hbs"),
                "{{ticket.subject}}\n",
            );
            setup.write(
                &format!("templates/{name}.text.hbs"),
                "Ticket #{{ticket.id}}: {{ticket.status_name}}\n",
            );
        }
        setup
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("postdesk.toml")
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).unwrap();
    }

    fn load(&self, toml: &str) -> Result<Config, Problems> {
        self.write("postdesk.toml", &dedent(toml));
        load(&self.path())
    }

    fn ok(&self, toml: &str) -> Config {
        match self.load(toml) {
            Ok(config) => config,
            Err(problems) => panic!("expected no problems, got:\n{problems}"),
        }
    }

    /// The problems, with the temp dir prefix removed from each line
    /// (`postdesk.toml:3:1: ...`, `templates/x.text.hbs:1:1: ...`).
    fn problems(&self, toml: &str) -> Vec<String> {
        let problems = match self.load(toml) {
            Ok(_) => panic!("expected problems, config loaded fine"),
            Err(problems) => problems,
        };
        let prefix = format!("{}/", self.dir.path().display());
        problems
            .0
            .iter()
            .map(|p| p.to_string().replace(&prefix, ""))
            .collect()
    }
}

/// Strips the leading newline and the common indentation, so that test
/// configs can be written indented and still start at line 1, column 1.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The smallest config that loads: only outbound.from is required.
const MINIMAL: &str = r#"
    [outbound]
    from = "Acme Support <support@acme.example>"
"#;

/// SPEC §2's example, with paths inside the temp dir.
const FULL: &str = r#"
    [server]
    hostname = "desk.acme.example"
    listen = ["127.0.0.1:2525"]
    max_message_size = "25MiB"
    max_sessions = 256
    data_dir = "data"
    admin_socket = "data/admin.sock"
    templates = "templates"

    [outbound]
    transport = "file"
    dir = "data/sent"
    from = "Acme Support <support@acme.example>"
    subject_tag = "[#{id}]"

    [branding]
    enabled = true

    [limits]
    auto_replies_per_contact_per_hour = 5

    [[user]]
    id = "alice"
    name = "Alice Agent"
    email = "alice@acme.example"

    [[team]]
    id = "tier1"
    members = ["alice"]

    [[channel]]
    id = "support"
    addresses = ["support@acme.example"]
    pipeline = "support"
    source = "email"
    automation = true

    [[pipeline]]
    id = "support"
    name = "Support Pipeline"
    statuses = [
      { id = "new",                name = "New" },
      { id = "waiting_on_contact", name = "Waiting on contact" },
      { id = "waiting_on_us",      name = "Waiting on us" },
      { id = "closed",             name = "Closed", closed = true },
    ]
    initial_status = "new"
    reply_to_closed = "reopen"

    [pipeline.triggers]
    email_sent_to_customer = { enabled = true, set_status = "waiting_on_contact" }
    customer_replied       = { enabled = true, set_status = "waiting_on_us" }

    [[workflow]]
    id = "ack-new"
    pipeline = "support"
    enroll = { status = "new" }
    reenroll = false
    actions = [
      { send_email = "ticket_received", comment = "acknowledge every new ticket" },
      { notify = { team = "tier1" } },
    ]

    [[workflow]]
    id = "closed-mail"
    pipeline = "support"
    enroll = { status = "closed" }
    actions = [ { send_email = "ticket_closed" } ]
"#;

/// MINIMAL plus one pipeline with the four statuses, for reference tests.
const PIPELINE: &str = r#"
    [outbound]
    from = "support@acme.example"

    [[pipeline]]
    id = "support"
    statuses = [{ id = "new" }, { id = "closed", closed = true }]
"#;

// ---- the shipped config ------------------------------------------------

#[test]
fn shipped_config_loads_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = match load(&root.join("config/postdesk.toml")) {
        Ok(config) => config,
        Err(problems) => panic!("shipped config has problems:\n{problems}"),
    };
    let config_dir = root.join("config");
    assert_eq!(config.server.hostname, "localhost");
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:2525".parse::<std::net::SocketAddr>().unwrap()]
    );
    assert_eq!(config.server.data_dir, config_dir.join("../data"));
    assert_eq!(
        config.server.admin_socket,
        config_dir.join("../data/admin.sock")
    );
    assert_eq!(config.server.templates, config_dir.join("../templates"));
    match &config.outbound.transport {
        Transport::File { dir } => assert_eq!(*dir, config_dir.join("../data/sent")),
        other => panic!("expected the file transport, got {other:?}"),
    }
    assert_eq!(
        config.outbound.from.to_string(),
        "Acme Support <support@acme.example>"
    );
    let pipeline = config.pipeline("support").unwrap();
    let names: Vec<&str> = pipeline.statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["New", "Waiting on contact", "Waiting on us", "Closed"]
    );
    assert!(pipeline.status("closed").unwrap().closed);
    assert_eq!(
        pipeline.triggers.customer_replied.set_status.as_deref(),
        Some("waiting_on_us")
    );
    let ids: Vec<&str> = config.workflows.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["ack-new", "closed-mail"]);
    let kinds: Vec<&ActionKind> = config.workflows[0]
        .actions
        .iter()
        .map(|a| &a.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            &ActionKind::SendEmail("ticket_received".into()),
            &ActionKind::Notify(NotifyTarget::Team("tier1".into())),
        ]
    );
}

#[test]
fn spec_example_loads_with_every_value() {
    let s = Setup::new();
    let config = s.ok(FULL);
    let dir = s.dir.path();
    assert_eq!(config.path, s.path());
    assert_eq!(config.server.hostname, "desk.acme.example");
    assert_eq!(config.server.max_message_size, 25 * 1024 * 1024);
    assert_eq!(config.server.store_cache, 8 * 1024 * 1024, "the default");
    assert_eq!(config.server.admin_socket, dir.join("data/admin.sock"));
    assert_eq!(config.users[0].email, "alice@acme.example");
    assert_eq!(config.teams[0].members, ["alice"]);
    let channel = config.channel("support").unwrap();
    assert_eq!(channel.addresses, ["support@acme.example"]);
    assert_eq!(channel.source, Source::Email);
    assert!(channel.automation);
    let pipeline = config.pipeline("support").unwrap();
    assert_eq!(pipeline.initial_status, "new");
    assert_eq!(pipeline.reply_to_closed, ReplyToClosed::Reopen);
    assert!(pipeline.triggers.email_sent_to_customer.enabled);
    let ack = &config.workflows[0];
    assert_eq!(ack.enroll.status.as_deref(), Some("new"));
    assert_eq!(ack.enroll.source, None);
    assert!(!ack.reenroll);
    assert_eq!(
        ack.actions[0].comment.as_deref(),
        Some("acknowledge every new ticket")
    );
    assert_eq!(ack.actions[1].comment, None);
    assert!(config.recipient("Support+7@ACME.example").is_some());
}

// ---- defaults ------------------------------------------------------------

#[test]
fn minimal_config_gets_defaults() {
    let s = Setup::new();
    let config = s.ok(MINIMAL);
    let dir = s.dir.path();
    let server = &config.server;
    assert_eq!(server.hostname, "localhost");
    assert_eq!(
        server.listen,
        vec!["127.0.0.1:2525".parse::<std::net::SocketAddr>().unwrap()]
    );
    assert_eq!(server.max_message_size, 25 * 1024 * 1024);
    assert_eq!(server.max_sessions, 256);
    assert_eq!(server.max_sessions_per_client, 20);
    assert_eq!(server.data_dir, dir.join("data"));
    assert_eq!(server.admin_socket, dir.join("data").join("admin.sock"));
    assert_eq!(server.templates, dir.join("templates"));
    match &config.outbound.transport {
        Transport::File { dir: sent } => assert_eq!(*sent, dir.join("data").join("sent")),
        other => panic!("expected the file transport, got {other:?}"),
    }
    assert_eq!(config.outbound.subject_tag.render(TicketId(42)), "[#42]");
    assert!(config.branding.enabled);
    assert_eq!(config.branding.text, None);
    assert_eq!(config.limits.auto_replies_per_contact_per_hour, 5);
    assert!(config.users.is_empty() && config.channels.is_empty());
}

#[test]
fn item_defaults() {
    let s = Setup::new();
    let config = s.ok(r#"
        [outbound]
        from = "support@acme.example"

        [[user]]
        id = "bob"
        email = "Bob@ACME.example"

        [[channel]]
        id = "chat"
        addresses = ["Chat@Acme.Example"]
        pipeline = "p"
        source = "chat"

        [[pipeline]]
        id = "p"
        statuses = [{ id = "open" }, { id = "done", closed = true }]
        reply_to_closed = "new_ticket"
        [pipeline.triggers]
        customer_replied = { set_status = "open" }

        [[workflow]]
        id = "w"
        pipeline = "p"
        enroll = { source = "chat" }
        reenroll = true
    "#);
    let user = config.user("bob").unwrap();
    assert_eq!(user.name, "bob");
    assert_eq!(user.email, "bob@acme.example");
    let channel = config.channel("chat").unwrap();
    assert_eq!(channel.addresses, ["chat@acme.example"]);
    assert_eq!(channel.source, Source::Chat);
    assert!(channel.automation);
    let pipeline = config.pipeline("p").unwrap();
    assert_eq!(pipeline.name, "p");
    assert_eq!(pipeline.initial_status, "open");
    assert_eq!(pipeline.statuses[0].name, "open");
    assert!(!pipeline.statuses[0].closed);
    assert_eq!(pipeline.reply_to_closed, ReplyToClosed::NewTicket);
    // A trigger written without `enabled` is on; one left out is off.
    assert!(pipeline.triggers.customer_replied.enabled);
    assert!(!pipeline.triggers.email_sent_to_customer.enabled);
    assert_eq!(pipeline.triggers.email_sent_to_customer.set_status, None);
    let workflow = &config.workflows[0];
    assert_eq!(workflow.enroll.source, Some(Source::Chat));
    assert_eq!(workflow.enroll.status, None);
    assert!(workflow.reenroll);
    assert!(workflow.actions.is_empty());
}

// ---- reading and syntax ----------------------------------------------------

#[test]
fn unreadable_file_is_one_problem_at_1_1() {
    let problems = load(Path::new("/nonexistent/postdesk.toml")).unwrap_err();
    assert_eq!(
        problems.to_string(),
        "/nonexistent/postdesk.toml:1:1: cannot read config: No such file or directory"
    );
}

#[test]
fn invalid_utf8_is_reported_where_it_starts() {
    let s = Setup::new();
    std::fs::write(s.path(), b"[server]\nhostname = \"a\xffb\"\n").unwrap();
    let problems = load(&s.path()).unwrap_err();
    assert_eq!(problems.0.len(), 1);
    assert_eq!((problems.0[0].line, problems.0[0].col), (2, 14));
    assert_eq!(problems.0[0].message, "config is not valid UTF-8");
}

#[test]
fn syntax_error_stops_at_its_position() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        unknown_key = 1
        subject_tag = [#{id}]
        "#,
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("postdesk.toml:4:16: invalid TOML: "),
        "{problems:#?}"
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        from = "a@b.example"
        from = "c@d.example"
        "#,
    );
    assert_eq!(problems, ["postdesk.toml:3:1: invalid TOML: duplicate key"]);
}

// ---- unknown keys ------------------------------------------------------------

#[test]
fn every_unknown_key_is_reported_at_its_own_position() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [server]
        hostname = "desk.acme.example"
        max_sesions = 10

        [outbound]
        from = "support@acme.example"
        subjet_tag = "[#{id}]"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:3:1: unknown key \"max_sesions\" in [server] (known: hostname, listen, \
             max_message_size, max_sessions, max_sessions_per_client, data_dir, admin_socket, \
             templates, store_cache)",
            "postdesk.toml:7:1: unknown key \"subjet_tag\" in [outbound] (known: transport, dir, \
             url, username, password_file, from, subject_tag)",
        ]
    );
}

#[test]
fn unknown_keys_in_nested_tables_and_top_level() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        colour = "blue"
        [outbound]
        from = "support@acme.example"
        [[pipeline]]
        id = "p"
        statuses = [{ id = "new", colour = "red" }]
        [pipeline.triggers]
        customer_replied = { enabled = true, set_status = "new", when = "now" }
        customer_repied = { enabled = true, set_status = "new" }
        [[workflow]]
        id = "w"
        pipeline = "p"
        enroll = { status = "new", staus = "x" }
        actions = [{ notify = { team = "t", everyone = true } }, { send_mail = "x" }]
        "#,
    );
    let keys: Vec<&str> = problems
        .iter()
        .filter(|p| p.contains("unknown key"))
        .map(|p| p.as_str())
        .collect();
    assert_eq!(keys.len(), 7, "{problems:#?}");
    assert!(keys[0].starts_with(
        "postdesk.toml:1:1: unknown key \"colour\" at the top level (known: server, outbound,"
    ));
    assert!(keys[1].starts_with(
        "postdesk.toml:6:27: unknown key \"colour\" in a pipeline status (known: id, name, closed)"
    ));
    assert!(keys[2].starts_with(
        "postdesk.toml:8:58: unknown key \"when\" in [pipeline.triggers.customer_replied]"
    ));
    assert!(keys[3].starts_with("postdesk.toml:9:1: unknown key \"customer_repied\" in [pipeline.triggers] (known: email_sent_to_customer, customer_replied)"));
    assert!(keys[4].starts_with(
        "postdesk.toml:13:28: unknown key \"staus\" in a workflow's enroll (known: status, source)"
    ));
    assert!(keys[5].starts_with(
        "postdesk.toml:14:37: unknown key \"everyone\" in a notify action (known: team, user, owner)"
    ));
    assert!(keys[6].starts_with("postdesk.toml:14:60: unknown key \"send_mail\" in a workflow action (known: send_email, notify, set_status, comment)"));
}

#[test]
fn inline_password_says_to_use_password_file() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        transport = "smtp"
        url = "smtp://relay.acme.example:587?tls=required"
        username = "postdesk"
        password = "hunter2"
        from = "support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:4:12: username needs password_file (a file holding the password)",
            "postdesk.toml:5:1: passwords are never written inline: put the password in a file \
             and set password_file to its path",
        ]
    );
}

#[test]
fn field_lists_come_from_the_structs() {
    assert_eq!(fields::<RawNotify>(), ["team", "user", "owner"]);
    assert!(fields::<RawServer>().contains(&"max_sessions_per_client"));
}

// ---- types ---------------------------------------------------------------

#[test]
fn wrong_types_are_all_reported_and_the_rest_still_checked() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [server]
        max_sessions = "many"
        listen = "127.0.0.1:25"
        data_dir = "data"
        templates = "nowhere"

        [outbound]
        from = 42
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:2:16: invalid value for server.max_sessions: invalid type: string \
             \"many\", expected usize",
            "postdesk.toml:3:10: invalid value for server.listen: invalid type: string \
             \"127.0.0.1:25\", expected a sequence",
            "postdesk.toml:5:13: cannot read templates folder \"nowhere\": it does not exist",
            "postdesk.toml:8:8: invalid value for outbound.from: invalid type: integer `42`, \
             expected a string",
        ]
    );
}

#[test]
fn wrong_type_in_an_item_names_the_nested_key() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        [[pipeline]]
        id = "p"
        statuses = [{ id = "new" }, { id = "closed", closed = "yes" }]
        [[channel]]
        id = "c"
        addresses = ["c@acme.example"]
        pipeline = "p"
        "#,
    );
    // The broken statuses are not followed by "needs at least one status".
    assert_eq!(
        problems,
        [
            "postdesk.toml:5:55: invalid value for pipeline.statuses[1].closed: invalid type: \
          string \"yes\", expected a boolean"
        ]
    );
}

#[test]
fn sections_must_have_the_right_shape() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        server = "localhost"
        [outbound]
        from = "support@acme.example"
        [user]
        id = "alice"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:1:10: server must be a table: write [server]",
            "postdesk.toml:4:1: user must be an array of tables: write [[user]] for each one",
        ]
    );
}

#[test]
fn closed_sets_name_the_known_values() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        transport = "carrier-pigeon"
        from = "support@acme.example"
        [[channel]]
        id = "c"
        addresses = ["c@acme.example"]
        pipeline = "p"
        source = "sms"
        [[pipeline]]
        id = "p"
        statuses = [{ id = "new" }]
        reply_to_closed = "ignore"
        [[workflow]]
        id = "w"
        pipeline = "p"
        enroll = { source = "fax" }
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:2:13: unknown transport \"carrier-pigeon\" (known: file, smtp)",
            "postdesk.toml:8:10: unknown source \"sms\" (known: email, chat, messenger)",
            "postdesk.toml:12:19: unknown reply_to_closed \"ignore\" (known: reopen, new_ticket)",
            "postdesk.toml:16:21: unknown source \"fax\" (known: email, chat, messenger)",
        ]
    );
}

// ---- sizes and server values --------------------------------------------------

#[test]
fn size_parsing() {
    let table: &[(&str, Option<u64>)] = &[
        ("1000", Some(1000)),
        ("0", Some(0)),
        ("512B", Some(512)),
        ("512KiB", Some(512 * 1024)),
        ("10KB", Some(10_000)),
        ("10MB", Some(10_000_000)),
        ("25MiB", Some(25 * 1024 * 1024)),
        ("25 MiB", Some(25 * 1024 * 1024)),
        ("25mib", Some(25 * 1024 * 1024)),
        ("2GB", Some(2_000_000_000)),
        ("1GiB", Some(1 << 30)),
        (" 7 ", Some(7)),
        ("", None),
        ("MiB", None),
        ("25M", None),
        ("2.5MiB", None),
        ("-1", None),
        ("25 MiB extra", None),
        ("99999999999999999999GiB", None),
        ("99999999999GiB", None),
    ];
    for (text, want) in table {
        assert_eq!(parse_size(text).ok(), *want, "parse_size({text:?})");
    }
}

#[test]
fn server_values_are_checked() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [server]
        hostname = "desk acme"
        listen = ["localhost:2525", "127.0.0.1:25", "127.0.0.1:25"]
        max_message_size = "25 megs"
        max_sessions = 0
        [outbound]
        from = "support@acme.example"
        subject_tag = "[ticket]"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:2:12: invalid hostname \"desk acme\": expected a domain name like \
             \"desk.acme.example\"",
            "postdesk.toml:3:11: invalid listen address \"localhost:2525\": expected IP:PORT, \
             e.g. \"127.0.0.1:2525\" or \"[::]:25\"",
            "postdesk.toml:3:45: listen address \"127.0.0.1:25\" is listed twice",
            "postdesk.toml:4:20: invalid size \"25 megs\": expected a whole number with an \
             optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"25MiB\"",
            "postdesk.toml:5:16: max_sessions must be at least 1",
            "postdesk.toml:8:15: subject_tag \"[ticket]\" must contain {id} (the ticket number), \
             e.g. \"[#{id}]\"",
        ]
    );
}

#[test]
fn sizes_may_be_plain_byte_counts() {
    let s = Setup::new();
    let config = s.ok(r#"
        [server]
        max_message_size = 1000
        [outbound]
        from = "support@acme.example"
    "#);
    assert_eq!(config.server.max_message_size, 1000);
    let problems = s.problems(
        r#"
        [server]
        max_message_size = 0
        [outbound]
        from = "support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        ["postdesk.toml:2:20: max_message_size must be greater than 0"]
    );
}

#[test]
fn admin_socket_path_must_fit_a_unix_socket() {
    let s = Setup::new();
    let long = "x".repeat(120);
    let problems = s.problems(&format!(
        "[server]\nadmin_socket = \"/tmp/{long}\"\n[outbound]\nfrom = \"a@b.example\"\n"
    ));
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("postdesk.toml:2:16: admin socket path \"/tmp/xxx"),
        "{problems:#?}"
    );
    assert!(problems[0].contains("(125 bytes, at most 107)"));
}

// ---- paths -----------------------------------------------------------------

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let s = Setup::new();
    s.write("secrets/smtp-password", "hunter2\n");
    s.write("etc/tpl/ticket_received.subject.hbs", "hi\n");
    s.write("etc/tpl/ticket_received.text.hbs", "hi\n");
    let config_text = r#"
        [server]
        data_dir = "../var"
        admin_socket = "/run/postdesk.sock"
        templates = "tpl"
        [outbound]
        transport = "smtp"
        url = "smtps://relay.acme.example"
        username = "postdesk"
        password_file = "../secrets/smtp-password"
        from = "support@acme.example"
    "#;
    s.write("etc/postdesk.toml", &dedent(config_text));
    let etc = s.dir.path().join("etc");
    let config = load(&etc.join("postdesk.toml")).unwrap();
    assert_eq!(config.path, etc.join("postdesk.toml"));
    assert_eq!(config.server.data_dir, etc.join("../var"));
    assert_eq!(config.server.admin_socket, Path::new("/run/postdesk.sock"));
    assert_eq!(config.server.templates, etc.join("tpl"));
    match &config.outbound.transport {
        Transport::Smtp {
            url,
            username,
            password_file,
        } => {
            assert_eq!(url, "smtps://relay.acme.example");
            assert_eq!(username.as_deref(), Some("postdesk"));
            assert_eq!(
                password_file.as_deref(),
                Some(etc.join("../secrets/smtp-password").as_path())
            );
        }
        other => panic!("expected smtp, got {other:?}"),
    }
}

#[test]
fn a_relative_config_path_is_made_absolute() {
    // Relative to the working directory, which tests cannot change safely:
    // use a path that goes up from it and down into the temp dir.
    let s = Setup::new();
    s.write("postdesk.toml", &dedent(MINIMAL));
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let relative: PathBuf = std::iter::repeat_n("..", ups)
        .collect::<PathBuf>()
        .join(s.path().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let config = load(&relative).unwrap();
    assert!(config.path.is_absolute());
    assert!(config.server.data_dir.is_absolute());
    assert!(config.server.data_dir.ends_with("data"));
}

// ---- outbound ------------------------------------------------------------

#[test]
fn outbound_transport_rules() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        transport = "smtp"
        dir = "sent"
        password_file = "missing-file"
        from = "Acme Support <support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:2:13: transport \"smtp\" needs url, e.g. url = \
             \"smtp://relay.acme.example:587?tls=required\"",
            "postdesk.toml:3:7: dir is only used by the file transport (transport is \"smtp\")",
            "postdesk.toml:4:17: cannot read password_file \"missing-file\": no such file or \
             directory",
            "postdesk.toml:4:17: password_file needs username",
            "postdesk.toml:5:8: invalid from address \"Acme Support <support@acme.example\" \
             (invalid input): expected \"Name <local@domain>\" or \"local@domain\"",
        ]
    );

    let problems = s.problems(
        r#"
        [outbound]
        url = "smtp://relay.acme.example"
        from = "support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        ["postdesk.toml:2:7: url is only used by the smtp transport (transport is \"file\")"]
    );

    let problems = s.problems(
        r#"
        [outbound]
        transport = "smtp"
        url = "smtp://bob:secret@relay.acme.example"
        from = "support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:3:7: credentials must not be written in url: set username and \
          password_file"
        ]
    );

    let problems = s.problems(
        r#"
        [outbound]
        transport = "smtp"
        url = "http://relay.acme.example"
        from = "support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:3:7: invalid url \"http://relay.acme.example\": expected \
          smtp://HOST[:PORT][?tls=required] or smtps://HOST[:PORT]"
        ]
    );
}

#[test]
fn outbound_section_and_from_are_required() {
    let s = Setup::new();
    assert_eq!(
        s.problems("[server]\n"),
        [
            "postdesk.toml:1:1: missing [outbound] section: outbound.from is required (the sender \
          of automatic emails, e.g. \"Acme Support <support@acme.example>\")"
        ]
    );
    assert_eq!(
        s.problems("[server]\n[outbound]\ntransport = \"file\"\n"),
        [
            "postdesk.toml:2:1: missing key \"from\" in [outbound] (the sender of automatic \
          emails, e.g. \"Acme Support <support@acme.example>\")"
        ]
    );
}

// ---- references ------------------------------------------------------------

#[test]
fn unknown_pipeline_names_the_known_ones() {
    let s = Setup::new();
    let problems = s.problems(&format!(
        "{}{}",
        dedent(PIPELINE),
        dedent(
            r#"
            [[channel]]
            id = "support"
            addresses = ["support@acme.example"]
            pipeline = "suport"
            "#
        )
    ));
    assert_eq!(
        problems,
        ["postdesk.toml:10:12: unknown pipeline \"suport\" (known: support)"]
    );
}

#[test]
fn pipeline_rules() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        [[pipeline]]
        id = "support"
        statuses = [{ id = "new" }, { id = "closed" }, { id = "new" }]
        initial_status = "open"
        [pipeline.triggers]
        email_sent_to_customer = { enabled = true }
        customer_replied = { enabled = false, set_status = "waiting" }
        [[pipeline]]
        id = "empty"
        statuses = []
        [[pipeline]]
        id = "support"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:5:55: duplicate status id \"new\" in pipeline \"support\" (first \
             defined on line 5)",
            "postdesk.toml:6:18: unknown status \"open\" in pipeline \"support\" (known: new, \
             closed)",
            "postdesk.toml:8:26: trigger email_sent_to_customer is enabled but has no set_status",
            "postdesk.toml:9:52: unknown status \"waiting\" in pipeline \"support\" (known: new, \
             closed)",
            "postdesk.toml:12:12: pipeline \"empty\" needs at least one status",
            "postdesk.toml:13:1: pipeline \"support\" needs at least one status (statuses = [ ... ])",
            "postdesk.toml:14:6: duplicate pipeline id \"support\" (first defined on line 4)",
        ]
    );
}

#[test]
fn workflow_rules() {
    let s = Setup::new();
    let problems = s.problems(&format!(
        "{}{}",
        dedent(PIPELINE),
        dedent(
            r#"
            [[user]]
            id = "alice"
            email = "alice@acme.example"
            [[team]]
            id = "tier1"
            members = ["alice", "bob"]
            [[workflow]]
            id = "w"
            pipeline = "support"
            enroll = { status = "neww" }
            actions = [
              { notify = { team = "tier2" } },
              { notify = { user = "carol" } },
              { notify = { owner = false } },
              { notify = { team = "tier1", user = "alice" } },
              { send_email = "ticket_received", notify = { owner = true } },
              { comment = "does nothing" },
              { send_email = "../../etc/passwd" },
              { set_status = "done" },
            ]
            [[workflow]]
            id = "w"
            pipeline = "sales"
            enroll = {}
            [[workflow]]
            id = "x"
            pipeline = "support"
            "#
        )
    ));
    assert_eq!(
        problems,
        [
            "postdesk.toml:12:21: unknown user \"bob\" (known: alice)",
            "postdesk.toml:16:21: unknown status \"neww\" in pipeline \"support\" (known: new, \
             closed)",
            "postdesk.toml:18:23: unknown team \"tier2\" (known: tier1)",
            "postdesk.toml:19:23: unknown user \"carol\" (known: alice)",
            "postdesk.toml:20:24: owner = false notifies nobody: write owner = true, or remove \
             the action",
            "postdesk.toml:21:14: notify needs exactly one of team, user or owner, e.g. notify = \
             { team = \"tier1\" }",
            "postdesk.toml:22:3: an action is one of send_email, notify or set_status: split it \
             in two",
            "postdesk.toml:23:3: an action needs send_email = \"TEMPLATE\", notify = { ... } or \
             set_status = \"STATUS\"",
            "postdesk.toml:24:18: invalid template name \"../../etc/passwd\": use letters, \
             digits, '-' and '_' (the files are NAME.subject.hbs and NAME.text.hbs)",
            "postdesk.toml:25:18: unknown status \"done\" in pipeline \"support\" (known: new, \
             closed)",
            "postdesk.toml:28:6: duplicate workflow id \"w\" (first defined on line 14)",
            "postdesk.toml:29:12: unknown pipeline \"sales\" (known: support)",
            "postdesk.toml:30:10: enroll needs a status, a source, or both, e.g. { status = \
             \"new\" }",
            "postdesk.toml:31:1: workflow \"x\" needs enroll, e.g. enroll = { status = \"new\" }",
        ]
    );
}

#[test]
fn duplicate_ids_point_at_the_first() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        [[user]]
        id = "alice"
        email = "alice@acme.example"
        [[user]]
        id = "alice"
        email = "ALICE@acme.example"
        [[team]]
        id = "t"
        [[team]]
        id = "t"
        [[user]]
        name = "No Id"
        email = "x@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:7:6: duplicate user id \"alice\" (first defined on line 4)",
            "postdesk.toml:8:9: user email \"alice@acme.example\" is already used by user \"alice\"",
            "postdesk.toml:12:6: duplicate team id \"t\" (first defined on line 10)",
            "postdesk.toml:13:1: user needs an id",
        ]
    );
}

#[test]
fn channel_address_rules() {
    let s = Setup::new();
    let problems = s.problems(&format!(
        "{}{}",
        dedent(PIPELINE),
        dedent(
            r#"
            [[user]]
            id = "alice"
            email = "alice@acme.example"
            [[channel]]
            id = "a"
            addresses = ["Support@Acme.example", "help+desk@acme.example", "nobody", "support@acme.example"]
            pipeline = "support"
            [[channel]]
            id = "b"
            addresses = ["SUPPORT@acme.example", "alice@acme.example"]
            pipeline = "support"
            [[channel]]
            id = "a"
            addresses = []
            pipeline = "support"
            [[channel]]
            id = "d"
            "#
        )
    ));
    assert_eq!(
        problems,
        [
            "postdesk.toml:12:38: channel address \"help+desk@acme.example\" must not contain \
             '+' before the '@' (plus forms like support+42@acme.example are accepted \
             automatically)",
            "postdesk.toml:12:64: invalid channel address \"nobody\": expected local@domain, \
             e.g. \"support@acme.example\"",
            "postdesk.toml:12:74: address \"support@acme.example\" is listed twice in channel \"a\"",
            "postdesk.toml:16:14: address \"support@acme.example\" is already used by channel \"a\"",
            "postdesk.toml:16:38: channel address \"alice@acme.example\" is also the email of user \
             \"alice\"",
            "postdesk.toml:19:6: duplicate channel id \"a\" (first defined on line 11)",
            "postdesk.toml:20:13: channel \"a\" needs at least one address",
            "postdesk.toml:22:1: channel \"d\" needs addresses, e.g. addresses = \
             [\"support@acme.example\"]",
            "postdesk.toml:22:1: channel \"d\" needs a pipeline (known: support)",
        ]
    );
}

#[test]
fn channel_addresses_are_lower_cased() {
    let s = Setup::new();
    let config = s.ok(&format!(
        "{}{}",
        dedent(PIPELINE),
        "[[channel]]\nid = \"c\"\naddresses = [\" Help@ACME.Example \"]\npipeline = \"support\"\n"
    ));
    assert_eq!(config.channels[0].addresses, ["help@acme.example"]);
}

// ---- templates ---------------------------------------------------------------

#[test]
fn missing_template_is_reported_at_send_email() {
    let s = Setup::new();
    s.remove("templates/ticket_closed.text.hbs");
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        [[pipeline]]
        id = "p"
        statuses = [{ id = "new" }]
        [[workflow]]
        id = "w"
        pipeline = "p"
        enroll = { status = "new" }
        actions = [
          { send_email = "ticket_closed" },
          { send_email = "welcome", comment = "no such template" },
        ]
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:11:18: missing template for send_email = \"ticket_closed\": \
             templates/ticket_closed.text.hbs not found",
            "postdesk.toml:12:18: missing template for send_email = \"welcome\": \
             templates/welcome.subject.hbs and templates/welcome.text.hbs not found",
        ]
    );
}

#[test]
fn notify_needs_the_notification_template() {
    let s = Setup::new();
    s.remove("templates/notification.subject.hbs");
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        [[pipeline]]
        id = "p"
        statuses = [{ id = "new" }]
        [[workflow]]
        id = "w"
        pipeline = "p"
        enroll = { status = "new" }
        actions = [{ notify = { owner = true } }]
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:10:23: missing template for notify: templates/notification.subject.hbs \
          not found"
        ]
    );
}

#[test]
fn template_compile_error_names_the_template_file() {
    let s = Setup::new();
    s.write(
        "templates/ticket_received.text.hbs",
        "Hello {{contact.name}},\n{{#if ticket.owner}}\nowned\n{{/each}}\n",
    );
    s.write("templates/extra.html.hbs", "<p>{{ticket.id</p>\n");
    s.write("templates/README.txt", "not a template {{\n");
    let problems = s.problems(MINIMAL);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("templates/extra.html.hbs:1:"),
        "{problems:#?}"
    );
    assert_eq!(
        problems[1],
        "templates/ticket_received.text.hbs:4:1: invalid template: helper \"if\" was opened, \
         but \"each\" is closing"
    );
}

#[test]
fn template_naming_an_unknown_variable_fails_load() {
    let s = Setup::new();
    s.write(
        "templates/ticket_received.text.hbs",
        "Hello {{contact.name}},\n\nabout {{ticket.nope}}\n",
    );
    let problems = s.problems(MINIMAL);
    assert_eq!(
        problems,
        [
            "templates/ticket_received.text.hbs:3:7: unknown variable \"ticket.nope\" (known: \
             ticket.id, ticket.owner, ticket.pipeline, ticket.status, ticket.status_name, \
             ticket.subject)"
        ]
    );
}

#[test]
fn unknown_variables_are_found_in_every_branch_and_every_template() {
    let s = Setup::new();
    // Not used by any workflow, and the typo sits in a branch that the
    // sample values never enter: still a problem.
    s.write("templates/spare.subject.hbs", "{{ticket.subject}}\n");
    s.write(
        "templates/spare.text.hbs",
        "{{#if (eq ticket.status \"closed\")}}\n  {{contact.emial}}\n{{/if}}\n",
    );
    s.write("templates/spare.html.hbs", "<p>{{message.text}}</p>\n");
    let problems = s.problems(MINIMAL);
    assert_eq!(
        problems,
        [
            "templates/spare.html.hbs:1:4: \"message.text\" is not set when the ticket has no \
             inbound message: put it inside {{#if message}}...{{/if}}",
            "templates/spare.text.hbs:2:3: unknown variable \"contact.emial\" (known: \
             contact.email, contact.name)",
        ]
    );
}

#[test]
fn loaded_config_holds_the_compiled_templates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = load(&root.join("config/postdesk.toml")).unwrap();
    let names: Vec<&str> = config.templates.names().collect();
    assert_eq!(names, ["notification", "ticket_closed", "ticket_received"]);
    let vars = crate::mail::render::Vars::sample();
    let rendered = config.templates.render("ticket_closed", &vars).unwrap();
    assert_eq!(
        rendered.subject,
        "Your request has been closed: Printer on fire"
    );
}

#[test]
fn templates_folder_must_exist() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [server]
        templates = "templatez"
        [outbound]
        from = "support@acme.example"
        "#,
    );
    assert_eq!(
        problems,
        ["postdesk.toml:2:13: cannot read templates folder \"templatez\": it does not exist"]
    );
}

#[test]
fn shipped_templates_compile_and_are_complete() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for name in ["ticket_received", "ticket_closed", "notification"] {
        for part in ["subject", "text"] {
            let path = dir.join(format!("{name}.{part}.hbs"));
            let source = std::fs::read_to_string(&path).unwrap();
            handlebars::Template::compile(&source).unwrap();
            assert!(
                !source.to_lowercase().contains("postdesk"),
                "{}: no branding in templates (the code appends the footer)",
                path.display()
            );
        }
    }
}

// ---- rendering of problems --------------------------------------------------

#[test]
fn problems_render_one_per_line() {
    let problems = Problems(vec![
        Problem {
            file: PathBuf::from("config/postdesk.toml"),
            line: 41,
            col: 12,
            message: "unknown pipeline \"suport\" (known: support)".into(),
        },
        Problem {
            file: PathBuf::from("templates/x.text.hbs"),
            line: 1,
            col: 1,
            message: "invalid template: oops".into(),
        },
    ]);
    assert_eq!(
        problems.to_string(),
        "config/postdesk.toml:41:12: unknown pipeline \"suport\" (known: support)\n\
         templates/x.text.hbs:1:1: invalid template: oops"
    );
    let error: &dyn std::error::Error = &problems;
    assert!(error.source().is_none());
}

#[test]
fn problems_are_sorted_config_first_then_templates() {
    let s = Setup::new();
    s.write("templates/broken.text.hbs", "{{/if}}\n");
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        zzz = 1
        [server]
        aaa = 1
        "#,
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("postdesk.toml:3:1: unknown key \"zzz\""));
    assert!(problems[1].starts_with("postdesk.toml:5:1: unknown key \"aaa\""));
    assert!(problems[2].starts_with("templates/broken.text.hbs:1:"));
}

#[test]
fn columns_count_characters_not_bytes() {
    let s = Setup::new();
    let problems = s.problems(
        r#"
        [outbound]
        from = "support@acme.example"
        [[user]]
        id = "ünïcode"
        email = "u@acme.example"
        [[team]]
        members = ["é", "ünïcode", "zoë"]
        "#,
    );
    assert_eq!(
        problems,
        [
            "postdesk.toml:4:6: invalid user id \"ünïcode\": use letters, digits, '-', '_' and '.'",
            "postdesk.toml:6:1: team needs an id",
            "postdesk.toml:7:12: unknown user \"é\" (known: ünïcode)",
            "postdesk.toml:7:28: unknown user \"zoë\" (known: ünïcode)",
        ]
    );
}

#[test]
fn storage_defaults_to_redb_and_names_the_postgres_keys() {
    let s = Setup::new();
    let base = "[outbound]\nfrom = \"support@acme.example\"\n";
    assert_eq!(s.ok(base).storage, Storage::Redb);
    let pg = s.ok(&format!(
        "{base}[storage]\nengine = \"postgres\"\nurl_file = \"pg.url\"\nnode_id = \"mx1\"\npool_size = 3\nwriters = 2\n"
    ));
    assert_eq!(
        pg.storage,
        Storage::Postgres(Postgres {
            url_file: s.dir.path().join("pg.url"),
            node_id: "mx1".into(),
            pool_size: 3,
            writers: Some(2),
        })
    );
    // The node name defaults to the host's, made a valid node name.
    let Storage::Postgres(p) = s
        .ok(&format!(
            "{base}[storage]\nengine = \"postgres\"\nurl_file = \"/etc/pg.url\"\n"
        ))
        .storage
    else {
        panic!("not postgres");
    };
    assert!(!p.node_id.is_empty() && p.node_id.len() <= 64, "{p:?}");
    assert_eq!(p.pool_size, 8);

    let problems = s.problems(&format!(
        "{base}[storage]\nengine = \"sqlite\"\nurl = \"postgres://u:secret@db/x\"\n"
    ));
    assert_eq!(
        problems,
        [
            "postdesk.toml:4:10: unknown engine \"sqlite\" (known: redb, postgres)",
            "postdesk.toml:5:1: unknown key \"url\" in [storage] (known: engine, url_file, \
             node_id, pool_size, writers)",
        ]
    );
    let problems = s.problems(&format!(
        "{base}[storage]\nengine = \"postgres\"\nnode_id = \"mx 1\"\npool_size = 0\n"
    ));
    assert_eq!(
        problems,
        [
            "postdesk.toml:4:10: engine \"postgres\" needs url_file (a file holding the \
             connection URL, e.g. /etc/postdesk/pg.url; never written inline)",
            "postdesk.toml:5:11: node_id \"mx 1\" is not a node name: 1 to 64 letters, digits, \
             '.', '-' or '_', e.g. \"mx1\"",
            "postdesk.toml:6:13: pool_size must be at least 1",
        ]
    );
    let problems = s.problems(&format!("{base}[storage]\nurl_file = \"pg.url\"\n"));
    assert_eq!(
        problems,
        ["postdesk.toml:4:12: url_file needs engine = \"postgres\""]
    );
    let problems = s.problems(&format!("{base}[storage]\nwriters = 2\n"));
    assert_eq!(
        problems,
        ["postdesk.toml:4:11: writers needs engine = \"postgres\""]
    );
    // Without `writers`, one a CPU, 2 to 8.
    let auto = p.writers();
    assert!((2..=8).contains(&auto), "{auto}");
}

#[test]
fn business_hours_are_read() {
    let s = Setup::new();
    let config = s.ok(&format!(
        "{MINIMAL}\n[business_hours]\ntimezone = \"Europe/Rome\"\ndays = [\"mon\", \"Tue\", \"sat\"]\n\
         hours = \"09:00-17:30\"\nholidays = [\"2027-01-01\", \"2026-12-25\"]\n"
    ));
    let bh = config.business_hours.expect("[business_hours] read");
    assert_eq!(bh.zone_name, "Europe/Rome");
    assert_eq!(bh.days, [true, true, false, false, false, true, false]);
    assert_eq!(bh.open, jiff::civil::time(9, 0, 0, 0));
    assert_eq!(bh.close, Some(jiff::civil::time(17, 30, 0, 0)));
    let holidays: Vec<String> = bh.holidays.iter().map(|d| d.to_string()).collect();
    assert_eq!(holidays, ["2026-12-25", "2027-01-01"]);
    // Without days: Monday to Friday. Without the section: none.
    let config = s.ok(&format!(
        "{MINIMAL}\n[business_hours]\ntimezone = \"UTC\"\nhours = \"00:00-24:00\"\n"
    ));
    let bh = config.business_hours.expect("[business_hours] read");
    assert_eq!(bh.days, [true, true, true, true, true, false, false]);
    assert_eq!(bh.close, None);
    assert!(s.ok(MINIMAL).business_hours.is_none());
}

#[test]
fn bad_business_hours_are_each_reported_at_their_value() {
    let s = Setup::new();
    let problems = s.problems(&format!(
        "{MINIMAL}\n[business_hours]\ntimezone = \"Europe/Roma\"\ndays = [\"mon\", \"friday\"]\n\
         hours = \"17:30-09:00\"\nholidays = [\"2026-12-25\", \"25/12/2026\"]\nweekends = true\n"
    ));
    let expected = [
        "postdesk.toml:5:12: unknown time zone \"Europe/Roma\"",
        "postdesk.toml:6:16: unknown day \"friday\" (known: mon, tue, wed, thu, fri, sat, sun)",
        "postdesk.toml:7:9: hours \"17:30-09:00\" close before they open",
        "postdesk.toml:8:27: holiday \"25/12/2026\" is not a date: write it as \"2026-12-25\"",
        "postdesk.toml:9:1: unknown key \"weekends\" in [business_hours] (known: timezone, days, hours, holidays)",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (got, want) in problems.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
    let problems = s.problems(&format!("{MINIMAL}\n[business_hours]\ndays = []\n"));
    assert_eq!(
        problems,
        [
            "postdesk.toml:4:1: [business_hours] needs timezone, e.g. timezone = \"Europe/Rome\"",
            "postdesk.toml:4:1: [business_hours] needs hours, e.g. hours = \"09:00-17:30\"",
            "postdesk.toml:5:8: days names no working day, e.g. days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
        ]
    );
}
