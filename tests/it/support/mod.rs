//! The test harness. Nothing here knows a test's expectations; it starts
//! things, talks to them and waits for them.
//!
//! - [`daemon`]: `Daemon::start(toml)` — the real binary in a temp dir under
//!   /tmp, its `ready` line, its stderr, restart / kill -9 / drop;
//! - [`smtp`]: a blocking SMTP client (`Client`, `Reply`, `send_mail`) and a
//!   message builder (`msg()`);
//! - [`admin`]: the admin-socket client (`Admin`) and helpers that read the
//!   `ticket` object;
//! - [`sink`]: an in-test SMTP relay that records what postdesk sends, with
//!   answers switchable at run time (250 / 451 / 550), stoppable;
//! - [`eml`]: reading sent emails (`.eml` files, or the sink's data);
//! - [`corpus`]: the files of `shared/corpus` and their delivery as an MTA
//!   would;
//! - [`pg`]: the engine switch and PostgreSQL test databases (`TestDb`,
//!   `psql`);
//! - [`wait_until`]: the one way a test waits.
//!
//! ## The storage engine: `POSTDESK_TEST_ENGINE`
//!
//! The daemons of a run use engine redb (the default: unset, empty or
//! `redb`) or, with `POSTDESK_TEST_ENGINE=postgres`, engine postgres:
//! [`Daemon::start`] then gives each daemon a database of its own
//! (`CREATE DATABASE t_<hex> TEMPLATE template0`, dropped after the daemon
//! is stopped), writes its URL to `{dir}/pg.url` (0600) and appends
//!
//! ```toml
//! [storage]
//! engine = "postgres"
//! url_file = "{dir}/pg.url"
//! node_id = "test"
//! ```
//!
//! unless the config has a `[storage]` table already ([`Daemon::pg_url`]
//! gives the URL); then it runs `postdesk migrate -c` on that config before
//! the first start (a fresh database has no schema). Any other value of
//! `POSTDESK_TEST_ENGINE` fails every test that starts a daemon. The
//! server is
//! `POSTDESK_TEST_PG_URL` (a superuser URL, e.g.
//! `eval "$(.ci/pg-start)"`, which starts a throwaway cluster and exports
//! it), else, when not root, a private cluster the harness starts once per
//! test process from `/usr/lib/postgresql/*/bin` and stops when it exits.
//! On engine postgres no server fails every daemon test.
//!
//! Tests that need PostgreSQL whatever the engine use
//! [`pg::require_pg_or_skip`]: without a server they pass after a loud
//! `SKIPPED` line on stderr, unless `POSTDESK_REQUIRE_PG=1` (CI sets it),
//! which makes them fail instead.
//!
//! ```sh
//! cargo test --test it                                   # engine redb
//! eval "$(.ci/pg-start)"                                 # a throwaway PostgreSQL
//! POSTDESK_TEST_ENGINE=postgres cargo test --test it     # engine postgres
//! .ci/pg-start --stop                                    # stop it again
//! ```
//!
//! Only daemons started through [`Daemon::start`] (and the commands run on
//! their `config_path()`) follow the switch: a test that writes a config
//! file of its own and runs `postdesk import` / `check` / `serve` on it
//! directly stays on redb unless it adds the storage itself
//! ([`daemon::with_test_storage`]).

#![allow(dead_code)] // each test module uses a different part of the harness

pub mod admin;
pub mod cluster;
pub mod corpus;
pub mod daemon;
pub mod eml;
pub mod pg;
pub mod proxy;
pub mod sink;
pub mod smtp;

use std::time::{Duration, Instant};

#[allow(unused_imports)] // the whole harness API, whichever tests use it
pub use admin::{message_ids, message_in, threaded_by, timeline_kinds, Admin};
#[allow(unused_imports)]
pub use daemon::{config_with, default_config, edit_config, render_config, Daemon};
#[allow(unused_imports)]
pub use pg::{engine, psql, require_pg_or_skip, Engine, TestDb};
#[allow(unused_imports)]
pub use smtp::{msg, send_mail, smtp_data_content, to_smtp_data, unique_id, Client, Msg, Reply};

/// How long any single wait in the harness may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A workflow that acknowledges every new ticket (`ticket_received`), to
/// pass to [`Daemon::start`].
pub const ACK_NEW: &str = r#"
[[workflow]]
id = "ack-new"
pipeline = "support"
enroll = { status = "new" }
actions = [ { send_email = "ticket_received" } ]
"#;

/// Polls `f` until it returns `Some`, for at most `deadline`; panics with
/// `what` (and whatever the last attempt said) when time runs out. The pause
/// between attempts is short and grows, so a fast answer is seen fast.
pub fn wait_until<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > deadline {
                    panic!("timed out after {deadline:?} waiting for {what}; last: {last}");
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The timeline entries of `ticket` of kind `kind`, in order.
pub fn timeline_events(ticket: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    ticket["timeline"]
        .as_array()
        .unwrap_or_else(|| panic!("ticket without a timeline array: {ticket}"))
        .iter()
        .filter(|t| t["kind"] == kind)
        .cloned()
        .collect()
}
