//! Integration tests: the real `postdesk` binary, driven over its real
//! sockets (SMTP on 127.0.0.1:0, the admin Unix socket) and its command line.
//!
//! `support/` holds the harness: [`support::Daemon`] (a daemon in a temp dir,
//! its logs, restart and kill -9), a small blocking SMTP client and message
//! builder, and the admin-socket client. Every wait is a poll with a deadline.
//!
//! The modules follow the contract in SPEC.md:
//! - `smtp`: §3/§5 — replies, limits, smuggling, duplicates, conversations;
//! - `threading`: §4 and the `customer_replied` trigger of §3;
//! - `admin`: §7 — the socket protocol and `ctl`;
//! - `lifecycle`: §1/§5 — restart, kill -9, `check`, exit code 78;
//! - `corpus`: every message of `shared/corpus` delivered over SMTP;
//! - `outbound`: §6 — the headers and footer of what we send, HTML
//!   templates, the outbox through an SMTP relay (451, down, 550, restart);
//! - `automation`: §3/§6 — status triggers, workflows, chat channels, loop
//!   protection, reload;
//! - `safety`: §3/§5/§6/§7 when things go wrong — kill -9 under load, the
//!   outbox across a crash, a full store, overload, abusive SMTP and admin
//!   clients, loop protection across a restart, the corpus byte-exact;
//! - `cluster`: §8 — several nodes on one PostgreSQL: the races of one
//!   thread, one ticket, one message at two nodes, the shared outbox, a
//!   killed node's emails, the limit across nodes, `migrate`;
//! - `copy`: §8 `store copy` — a store copied redb → PostgreSQL → redb
//!   (and redb → redb, interrupted and resumed) is the same store and goes
//!   on as one; targets in use or holding other data are refused;
//! - `pg_harness`: the harness's PostgreSQL test databases themselves.
//!
//! `POSTDESK_TEST_ENGINE=postgres` runs every daemon on engine postgres (see
//! `support`'s module doc and `.ci/pg-start`).

// Tests and their harness may panic on anything unexpected: that is how a
// test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod automation;
mod bounce;
mod cluster;
mod copy;
mod corpus;
mod import;
mod lifecycle;
mod ops;
mod outbound;
mod pg_harness;
mod safety;
mod smtp;
mod threading;
mod trust;
mod workflow;
