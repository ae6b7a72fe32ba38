//! Logging set-up. Logs go to stderr (journald-friendly), filtered by
//! `RUST_LOG` (default `info`); `serve --log-format json` (or
//! `POSTDESK_LOG_FORMAT=json`) switches to JSON lines. Message bodies are
//! never logged above debug level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only for a person at a terminal, never into the journal.
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second call (tests) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
