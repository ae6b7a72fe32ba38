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
//! - [`wait_until`]: the one way a test waits.

#![allow(dead_code)] // each test module uses a different part of the harness

pub mod admin;
pub mod corpus;
pub mod daemon;
pub mod eml;
pub mod sink;
pub mod smtp;

use std::time::{Duration, Instant};

#[allow(unused_imports)] // the whole harness API, whichever tests use it
pub use admin::{message_ids, message_in, threaded_by, timeline_kinds, Admin};
#[allow(unused_imports)]
pub use daemon::{config_with, default_config, edit_config, render_config, Daemon};
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
