//! The PostgreSQL engine (SPEC §8): several postdesk nodes on one
//! database. It stores, locks, batches and retries; what a message or
//! command does is the desk's ([`crate::desk`]), run through [`txn::PgTxn`].
//!
//! Invariants:
//! - A caller is answered only after `COMMIT` returned (or, when the
//!   connection broke during it, after the batch's token was found
//!   committed): `Ok` means the database has it, with
//!   `synchronous_commit` on ([`open`] refuses `off`).
//! - Correctness comes from the database — unique keys and row locks —
//!   never from a check made before a write: see [`txn`] for the lock
//!   order and how a lost race is redone.
//! - Ids come from sequences; time in leases and heartbeats from the
//!   database's clock.
//! - The connection URL is read from `url_file` and never logged.

pub(in crate::store) mod export;
pub(in crate::store) mod read;
pub mod schema;
mod tls;
mod txn;
pub(in crate::store) mod writer;

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::config::Postgres;
use crate::desk::StoreError;
use crate::ingest::trust::ReplyKeys;
use crate::ingest::TicketId;

/// What every connection of this node shares: the pool, the node's name and
/// the store's secrets (read once at open).
pub(in crate::store) struct Shared {
    /// For reads (and the outbox claim), on the daemon's runtime.
    pub pool: Pool,
    /// For the writers' own connections ([`Conn`]).
    pub db: Db,
    pub node: String,
    /// This process's name for its outbox leases: the node's name and a
    /// number drawn at start (`n1#3fa9…`). A lease is renewed, re-claimed
    /// and released by the process that holds it, never by another that
    /// was given the same `node_id` by mistake.
    pub owner: String,
    /// When this process registered in `nodes` (as PostgreSQL writes it):
    /// its heartbeat updates that row only while it is still its own.
    pub started: String,
    /// Set by the heartbeat when another process took this node's row: a
    /// second node with the same `node_id`.
    pub duplicate: std::sync::Mutex<Option<String>>,
    pub salt: u64,
    pub keys: ReplyKeys,
    /// This node's config fingerprint, as the heartbeat reports it: the
    /// one the store was opened with, then the live config's.
    pub fingerprint: std::sync::Mutex<String>,
    pub live: std::sync::OnceLock<Arc<crate::config::ConfigCell>>,
}

/// Where the database is and how to speak to it: the parsed URL and the
/// TLS client its `sslmode` asks for ([`tls`]).
#[derive(Clone)]
pub(in crate::store) struct Db {
    pub config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Db {
    /// A connection driven by a task on the current runtime (ended when
    /// the client is dropped; the task's handle for who waits on it).
    pub(in crate::store) async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        Ok(match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, tokio::spawn(drive(connection)))
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, tokio::spawn(drive(connection)))
            }
        })
    }
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "store: a database connection ended");
    }
}

/// Reads the URL from `url_file` (trimmed); the error names the file only.
fn url(pg: &Postgres) -> Result<Db, StoreError> {
    let text = std::fs::read_to_string(&pg.url_file).map_err(|e| {
        StoreError::Refused(format!(
            "cannot read storage.url_file {}: {}",
            pg.url_file.display(),
            crate::wording::lowercase_first(&crate::wording::io_reason(&e))
        ))
    })?;
    let (text, tls) = tls::split(text.trim()).map_err(|e| {
        StoreError::Refused(format!("storage.url_file {}: {e}", pg.url_file.display()))
    })?;
    let connector = tls.connector().map_err(|e| {
        StoreError::Refused(format!("storage.url_file {}: {e}", pg.url_file.display()))
    })?;
    let mut config = tokio_postgres::Config::from_str(&text).map_err(|e| {
        // The parser's message may quote the text: say only what is wrong.
        let kind = e.to_string();
        let kind = kind.split(':').next().unwrap_or("invalid");
        StoreError::Refused(format!(
            "storage.url_file {} does not hold a PostgreSQL URL or key=value string ({kind})",
            pg.url_file.display()
        ))
    })?;
    config.application_name(format!("postdesk {}", pg.node_id));
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    config.ssl_mode(match tls.mode {
        tls::Mode::Off => tokio_postgres::config::SslMode::Disable,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok(Db {
        config,
        tls: connector,
    })
}

fn pool(pg: &Postgres, size: usize) -> Result<Pool, StoreError> {
    let db = url(pg)?;
    let config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match db.tls {
        None => Manager::from_config(db.config, NoTls, config),
        Some(tls) => Manager::from_config(db.config, tls, config),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .map_err(|e| StoreError::Refused(format!("cannot set up the database pool: {e}")))
}

/// A connection from the pool; an error is the database being away
/// (→ `451`), never a refusal to serve.
pub(in crate::store) async fn connection(
    pool: &Pool,
) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::Pg(e),
        other => StoreError::Database(other.to_string()),
    })
}

/// How long a writer's statement waits for a row lock before its job is
/// retried.
const LOCK_TIMEOUT: &str = "5s";

/// A writer's own connection, driven by the writer's own runtime on its own
/// thread (no pool: a pooled connection's I/O would run on whichever
/// runtime created it), with its prepared statements cached.
pub(in crate::store) struct Conn {
    client: tokio_postgres::Client,
    statements: std::cell::RefCell<std::collections::HashMap<String, tokio_postgres::Statement>>,
}

impl Conn {
    /// Connects on the current runtime (the caller's thread drives it) and
    /// checks the session's durability settings.
    pub(in crate::store) async fn open(shared: &Shared) -> Result<Conn, StoreError> {
        let (client, _) = shared.db.connect().await?;
        client
            .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        check_durability(&client).await?;
        Ok(Conn {
            client,
            statements: std::cell::RefCell::new(std::collections::HashMap::new()),
        })
    }

    pub(in crate::store) async fn prepare_cached(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(st) = self.statements.borrow().get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

impl std::ops::Deref for Conn {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

/// The version the database's schema is at (0: none).
async fn schema_version(c: &impl tokio_postgres::GenericClient) -> Result<i32, StoreError> {
    let exists = c
        .query_one("SELECT to_regclass('schema_meta') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    let row = c
        .query_opt("SELECT value FROM schema_meta WHERE key = 'version'", &[])
        .await?;
    Ok(match row {
        Some(r) => r.get::<_, String>(0).parse().unwrap_or(0),
        None => 0,
    })
}

/// What `postdesk migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Creates or upgrades the schema: idempotent, safe while nodes run. The
/// migration runs in one transaction that holds the `migration_lock` row
/// of `schema_meta`: a second `migrate` at the same moment waits for the
/// first, then finds nothing to do.
pub async fn migrate(pg: &Postgres) -> Result<Migrated, StoreError> {
    let (mut client, conn) = url(pg)?.connect().await?;
    let result = async {
        // Two nodes creating the table at once may collide in the catalog
        // (a unique violation): the second one then finds it made.
        for _ in 0..3 {
            match client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_meta (key text PRIMARY KEY, value text NOT NULL);
                     INSERT INTO schema_meta (key, value) VALUES ('migration_lock', '') ON CONFLICT DO NOTHING",
                )
                .await
            {
                Ok(()) => break,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
                Err(e) => return Err(StoreError::Pg(e)),
            }
        }
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT value FROM schema_meta WHERE key = 'migration_lock' FOR UPDATE",
            &[],
        )
        .await?;
        let from = schema_version(&tx).await?;
        if from > schema::VERSION {
            return Err(StoreError::Refused(format!(
                "the database's schema is version {from}, newer than this postdesk ({}): upgrade postdesk",
                schema::VERSION
            )));
        }
        for (i, steps) in schema::MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
            for step in *steps {
                tx.batch_execute(step).await?;
            }
            tx.execute(
                "INSERT INTO schema_meta (key, value) VALUES ('version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&(i + 1).to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Migrated {
            from,
            to: schema::VERSION,
        })
    }
    .await;
    drop(client);
    let _ = conn.await;
    result
}

/// Opens the engine: checks the schema and the durability settings, draws
/// or reads the store's secrets, registers this node.
pub(in crate::store) async fn open(
    pg: &Postgres,
    fingerprint: &str,
) -> Result<Arc<Shared>, StoreError> {
    // Reads, the outbox claim and the heartbeat; the writers have their own.
    let pool = pool(pg, pg.pool_size.max(1))?;
    let c = connection(&pool).await?;
    let version = schema_version(&**c).await?;
    if version < schema::VERSION {
        return Err(StoreError::Refused(if version == 0 {
            "the database has no postdesk schema: run `postdesk migrate` first".to_string()
        } else {
            format!(
                "the database's schema is version {version}, older than this postdesk needs ({}): run `postdesk migrate`",
                schema::VERSION
            )
        }));
    }
    if version > schema::VERSION {
        return Err(StoreError::Refused(format!(
            "the database's schema is version {version}, newer than this postdesk ({}): upgrade postdesk",
            schema::VERSION
        )));
    }
    if let Some(p) = export::unfinished_copy(&**c).await? {
        return Err(crate::store::portable::unfinished(&p));
    }
    check_durability(&c).await?;
    // Claims of this node's earlier runs are left to run out, as any dead
    // node's: nothing here can tell an earlier run from another live
    // process given the same node_id by mistake, still sending. A clean
    // stop gives its claims up itself (`leave`).
    let started = register(&c, pg, fingerprint).await?;
    let mut instance = [0u8; 8];
    getrandom::getrandom(&mut instance)
        .map_err(|e| StoreError::Corrupt(format!("drawing this process's lease name: {e}")))?;
    let keys = secret(&c, "reply_key", 32).await?;
    let salt = secret(&c, "message_id_salt", 8).await?;
    let keys: [u8; 32] = keys
        .try_into()
        .map_err(|_| StoreError::Corrupt("the reply-key secret is damaged".into()))?;
    let salt: [u8; 8] = salt
        .try_into()
        .map_err(|_| StoreError::Corrupt("the Message-ID salt is damaged".into()))?;
    drop(c);
    Ok(Arc::new(Shared {
        pool,
        db: url(pg)?,
        node: pg.node_id.clone(),
        owner: format!("{}#{:016x}", pg.node_id, u64::from_le_bytes(instance)),
        started,
        duplicate: std::sync::Mutex::new(None),
        salt: u64::from_le_bytes(salt),
        keys: ReplyKeys::new(keys),
        fingerprint: std::sync::Mutex::new(fingerprint.to_string()),
        live: std::sync::OnceLock::new(),
    }))
}

/// `250` must mean committed: a session whose commits return before the
/// WAL is flushed (`synchronous_commit = off`) could lose acknowledged
/// mail in a crash.
pub(in crate::store) async fn check_durability(
    c: &tokio_postgres::Client,
) -> Result<(), StoreError> {
    let value: String = c.query_one("SHOW synchronous_commit", &[]).await?.get(0);
    match value.as_str() {
        "off" => Err(StoreError::Refused(
            "PostgreSQL's synchronous_commit is off for postdesk's role: a crash could lose mail \
             that was acknowledged; set it to on (ALTER ROLE ... SET synchronous_commit = on)"
                .into(),
        )),
        "local" | "remote_write" => {
            tracing::warn!(synchronous_commit = %value, "PostgreSQL commits may not have reached a standby when postdesk says 250");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Every 10 s: this node's `last_seen` (what `health` lists nodes by);
/// now and then: batch tokens older than an hour (nothing probes for them
/// any more). Stops when the store is gone.
pub(in crate::store) async fn heartbeat(shared: std::sync::Weak<Shared>) {
    let mut beats: u64 = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let Some(s) = shared.upgrade() else { return };
        let result = async {
            let c = connection(&s.pool).await?;
            if let Some(cell) = s.live.get() {
                let now = cell.get().fingerprint.clone();
                *s.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = now;
            }
            let fingerprint = s
                .fingerprint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let ours = c
                .execute(
                    "UPDATE nodes SET last_seen = now(), config_hash = $2
                     WHERE node_id = $1 AND started_at::text = $3",
                    &[&s.node, &fingerprint, &s.started],
                )
                .await?;
            if ours == 0 {
                let other = c
                    .query_opt(
                        "SELECT hostname, started_at::text FROM nodes WHERE node_id = $1",
                        &[&s.node],
                    )
                    .await?;
                let (host, at): (String, String) = match &other {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => ("?".into(), "?".into()),
                };
                let warning = format!(
                    "another postdesk process (host {host}, started {at}) registered with this \
                     node's storage.node_id \"{}\": give every node a node_id of its own",
                    s.node
                );
                tracing::error!(node = %s.node, other_host = %host, "store: {warning}");
                *s.duplicate.lock().unwrap_or_else(|p| p.into_inner()) = Some(warning);
            }
            if beats % 60 == 0 {
                c.execute(
                    "DELETE FROM batches WHERE node_id = $1 AND at < now() - interval '1 hour'",
                    &[&s.node],
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "store: heartbeat failed");
        }
        beats += 1;
    }
}

/// See [`crate::store::Store::leave`].
pub(in crate::store) async fn leave(s: &Shared) -> Result<(), StoreError> {
    let c = connection(&s.pool).await?;
    c.execute(
        "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
         WHERE lease_owner = $1",
        &[&s.owner],
    )
    .await?;
    c.execute(
        "UPDATE nodes SET last_seen = now() - interval '1 hour'
         WHERE node_id = $1 AND started_at::text = $2",
        &[&s.node, &s.started],
    )
    .await?;
    Ok(())
}

/// Records this node in `nodes` (its heartbeat row); returns when it
/// registered, as PostgreSQL writes it. A row of this node_id seen in the
/// last 30 s is said in the log: this node's own run that just died, or
/// another node given the same name.
async fn register(
    c: &tokio_postgres::Client,
    pg: &Postgres,
    fingerprint: &str,
) -> Result<String, StoreError> {
    if let Some(r) = c
        .query_opt(
            "SELECT hostname, (extract(epoch FROM now() - last_seen))::float8 FROM nodes
             WHERE node_id = $1 AND last_seen > now() - interval '30 seconds'",
            &[&pg.node_id],
        )
        .await?
    {
        let host: String = r.try_get(0)?;
        let ago: f64 = r.try_get(1)?;
        tracing::warn!(node = %pg.node_id, other_host = %host, seen_secs_ago = ago, "store: a node with this storage.node_id was alive moments ago; if that was not this node's previous run, two nodes share a node_id (each needs its own)");
    }
    let row = c.query_one(
        "INSERT INTO nodes (node_id, hostname, version, schema_version, config_hash, started_at, last_seen)
         VALUES ($1, $2, $3, $4, $5, now(), now())
         ON CONFLICT (node_id) DO UPDATE SET hostname = EXCLUDED.hostname,
           version = EXCLUDED.version, schema_version = EXCLUDED.schema_version,
           config_hash = EXCLUDED.config_hash, started_at = now(), last_seen = now()
         RETURNING started_at::text",
        &[
            &pg.node_id,
            &crate::config::host_name(),
            &env!("CARGO_PKG_VERSION"),
            &schema::VERSION,
            &fingerprint,
        ],
    )
    .await?;
    Ok(row.try_get(0)?)
}

/// The secret `name`, drawn from the operating system's CSPRNG by the first
/// node that asks for it; every node then reads the same.
async fn secret(c: &tokio_postgres::Client, name: &str, len: usize) -> Result<Vec<u8>, StoreError> {
    let mut fresh = vec![0u8; len];
    getrandom::getrandom(&mut fresh)
        .map_err(|e| StoreError::Corrupt(format!("drawing the {name} secret: {e}")))?;
    c.execute(
        "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&name, &fresh],
    )
    .await?;
    let row = c
        .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
        .await?;
    Ok(row.get(0))
}

/// The key of a Message-ID: sha256 of the normalised id (never a prefix).
pub(in crate::store) fn id_key(message_id: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(message_id.as_bytes()).to_vec()
}

/// An id of the ticket logic as the database keeps it.
pub(in crate::store) fn db_id(id: impl Into<u64>) -> i64 {
    i64::try_from(id.into()).unwrap_or(i64::MAX)
}

pub(in crate::store) fn from_db_id(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

pub(in crate::store) fn ticket_from_db(id: i64) -> TicketId {
    TicketId(from_db_id(id))
}
