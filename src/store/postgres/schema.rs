//! The PostgreSQL schema: numbered migrations embedded in the binary, one
//! idempotent statement per step, run by `postdesk migrate` under a lock
//! row (never an advisory lock).
//!
//! Invariants:
//! - [`VERSION`] is the schema this binary needs; `serve` refuses an older
//!   one (run `postdesk migrate`) and a newer one (an older binary).
//! - A step already applied is a no-op when applied again (`IF NOT
//!   EXISTS`), so an interrupted migration is finished by running it again.
//! - Releases expand, then contract: a column or table is dropped only a
//!   release after the code stopped using it, so that nodes of two versions
//!   can run side by side during a rolling upgrade.
//!
//! Records are the desk's ([`crate::desk::records`]) as `jsonb`, with the
//! columns that queries select or sort on beside them. Times written by the
//! ticket logic are milliseconds since the epoch (`bigint`), as in the
//! records; leases and heartbeats use the database's own clock
//! (`timestamptz`).

/// The schema version this binary reads and writes.
pub const VERSION: i32 = 1;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
pub const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE IF NOT EXISTS schema_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS ticket_id_seq",
    "CREATE SEQUENCE IF NOT EXISTS message_seq",
    "CREATE SEQUENCE IF NOT EXISTS timeline_seq",
    "CREATE SEQUENCE IF NOT EXISTS outbox_seq",
    "CREATE SEQUENCE IF NOT EXISTS lease_seq",
    // name → secret bytes, drawn by the first node that opens the store.
    "CREATE TABLE IF NOT EXISTS secrets (name text PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tickets (
        id bigint PRIMARY KEY,
        pipeline text NOT NULL,
        status text NOT NULL,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        rec jsonb NOT NULL)",
    "CREATE INDEX IF NOT EXISTS tickets_status ON tickets (status, id)",
    // One row per stored message (in or out); `ticket_id` NULL: a
    // conversation kept without a ticket.
    "CREATE TABLE IF NOT EXISTS messages (
        seq bigint PRIMARY KEY,
        ticket_id bigint,
        message_id text NOT NULL,
        node_id text NOT NULL,
        batch bigint NOT NULL,
        received_at bigint NOT NULL,
        size bigint NOT NULL,
        rec jsonb NOT NULL)",
    "CREATE INDEX IF NOT EXISTS messages_ticket ON messages (ticket_id, seq)",
    "CREATE INDEX IF NOT EXISTS messages_conversations ON messages (seq) WHERE ticket_id IS NULL",
    // Raw bytes, byte-exact, in chunks of at most 256 KiB.
    "CREATE TABLE IF NOT EXISTS message_chunks (
        seq bigint NOT NULL,
        part int NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (seq, part))",
    // A chunk of a typical message (a few KiB) stays in its row,
    // uncompressed: pglz costs more CPU than the disk it saves at that size.
    "ALTER TABLE message_chunks SET (toast_tuple_target = 8160)",
    // Every Message-ID seen, under one unique key: sha256 of the
    // normalised id (never a prefix), the text beside it. `message` NULL:
    // only named by a ticket's messages (In-Reply-To, References).
    "CREATE TABLE IF NOT EXISTS message_ids (
        key bytea PRIMARY KEY,
        message_id text NOT NULL,
        ticket_id bigint,
        message bigint)",
    "CREATE TABLE IF NOT EXISTS timeline (
        id bigint PRIMARY KEY DEFAULT nextval('timeline_seq'),
        ticket_id bigint NOT NULL,
        at bigint NOT NULL,
        kind text NOT NULL,
        detail jsonb NOT NULL)",
    "CREATE INDEX IF NOT EXISTS timeline_ticket ON timeline (ticket_id, id)",
    // Every email postdesk sends. `next_attempt_at` is set exactly while
    // the email is queued; a lease (owner, until, fencing token) marks
    // the node sending it.
    "CREATE TABLE IF NOT EXISTS outbox (
        id bigint PRIMARY KEY,
        ticket_id bigint,
        state text NOT NULL,
        next_attempt_at bigint,
        rec jsonb NOT NULL,
        lease_owner text,
        lease_until timestamptz,
        lease_token bigint)",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id)",
    // The lock row of a contact's hourly limit, and what was counted.
    "CREATE TABLE IF NOT EXISTS contacts (email text PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS auto_sent (email text NOT NULL, at bigint NOT NULL)",
    "CREATE INDEX IF NOT EXISTS auto_sent_email ON auto_sent (email, at)",
    // One row per write transaction of a node, for the probe after a
    // COMMIT whose outcome is unknown (a lost connection).
    "CREATE TABLE IF NOT EXISTS batches (
        token bigint PRIMARY KEY,
        node_id text NOT NULL,
        at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS nodes (
        node_id text PRIMARY KEY,
        hostname text NOT NULL,
        version text NOT NULL,
        schema_version int NOT NULL,
        config_hash text NOT NULL,
        started_at timestamptz NOT NULL,
        last_seen timestamptz NOT NULL)",
]];
