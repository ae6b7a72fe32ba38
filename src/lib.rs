//! postdesk — an email-to-ticket gateway daemon.
//!
//! The major components, in the order a message meets them:
//!
//! - [`smtp`]: SHELL. Accepts connections, reads bounded CRLF lines, drives
//!   the `mailin` SMTP state machine, buffers DATA and hands the finished
//!   message to the store writer; answers `250` only when the writer says the
//!   message is durably committed.
//! - [`ingest`]: PURE. Turns raw bytes into a [`ingest::ParsedMail`] and
//!   decides which ticket a message threads onto ([`ingest::thread`]).
//! - [`desk`]: the ticket logic (threading's outcome, automation's effects,
//!   operator commands), written once against a transaction interface.
//! - [`store`]: SHELL. The storage boundary and its two engines: redb (one
//!   node; one writer thread, journal, group commit) and PostgreSQL
//!   (several nodes; writer connections, savepoints, leases); the only
//!   place where durability is decided.
//! - [`admin`]: the JSON-lines protocol ([`admin::proto`]) and its Unix
//!   socket server; [`ctl`] is the command-line client for it.
//! - [`config`]: the TOML file, validated once into a typed [`config::Config`].
//! - [`daemon`]: SHELL. Binds everything, runs it, handles signals, reload and
//!   shutdown.
//! - [`clock`]: the only caller of the system clock.
//! - [`telemetry`]: tracing set-up.
//! - [`workflow_cli`]: `postdesk workflow`, viewing and editing the
//!   `[[workflow]]` tables of the config file in place.

pub mod admin;
pub mod automation;
pub mod business_hours;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod desk;
pub mod failpoint;
pub mod import;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod outbound;
pub mod sdnotify;
pub mod smtp;
pub mod store;
pub mod telemetry;
pub mod wording;
pub mod workflow_cli;

/// Exit code for an invalid configuration (sysexits.h EX_CONFIG).
pub const EX_CONFIG: i32 = 78;
