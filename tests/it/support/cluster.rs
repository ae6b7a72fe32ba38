//! Several real `postdesk serve` processes on one real PostgreSQL
//! database (SCALE-OUT.md §5): the same config but `node_id` (and each
//! node's own temp dir: port, admin socket, sent mail).
//!
//! Interleavings are made exact with failpoints (debug builds,
//! `POSTDESK_FAILPOINTS`, see `src/failpoint.rs`), which hold one node at a
//! named step; [`Cluster::wait_lock_waiters`] proves another node is
//! blocked on a row the first one holds, from `pg_stat_activity` — never
//! by sleeping.
//!
//! The cluster tests need PostgreSQL whatever the engine switch says; they
//! run in the default (redb) pass of the suite only, not again in the
//! postgres pass, where they would test the same thing twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::daemon::{migrate, temp_dir, Daemon};
use super::eml;
use super::pg::{engine, pg_required, psql, require_pg_or_skip, Engine, PrivateCluster, TestDb};
use super::proxy::Proxy;
use super::{wait_until, DEADLINE};

/// Cluster tests run one at a time (2 cores; each runs two daemons).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Cluster {
    pub nodes: Vec<Daemon>,
    /// Between the nodes and the database, with [`Cluster::start_proxied`].
    proxy: Option<Proxy>,
    db: TestDb,
    /// The PostgreSQL of this cluster's own ([`Cluster::start_private`]),
    /// dropped after the database.
    private: Option<PrivateCluster>,
    dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// What the nodes' `url_file` holds: the test database's URL (through a
/// [`Proxy`] or not, with a query added), or a text of the test's own.
enum NodeUrl<'a> {
    Db { proxied: bool, query: &'a str },
    Text(String),
}

impl NodeUrl<'_> {
    const PLAIN: NodeUrl<'static> = NodeUrl::Db {
        proxied: false,
        query: "",
    };
}

/// `n1`, `n2`, … `nN`.
fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

impl Cluster {
    /// `n` nodes on one fresh database, `setup` as for [`Daemon::start`]
    /// (lines for `[server]` first, then tables), `env(i)` the extra
    /// environment of node `i`. `None`: no PostgreSQL here (skipped
    /// loudly; a failure where `POSTDESK_REQUIRE_PG=1`), or the postgres
    /// pass of the suite (see the module doc).
    pub fn start(
        test: &str,
        n: usize,
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Option<Cluster> {
        Cluster::start_with(test, n, setup, env, false, "")
    }

    /// [`Cluster::start`] on a PostgreSQL of the cluster's own
    /// ([`PrivateCluster`], [`Cluster::restart_database`]), not the suite's
    /// shared server.
    pub fn start_private(
        test: &str,
        n: usize,
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Option<Cluster> {
        if engine() == Engine::Postgres {
            eprintln!("{test}: runs in the default pass of the suite only");
            return None;
        }
        let private = match PrivateCluster::start() {
            Ok(p) => p,
            Err(e) if pg_required() => panic!("{test}: no private PostgreSQL: {e}"),
            Err(e) => {
                eprintln!("{test}: SKIPPED, no private PostgreSQL here: {e}");
                return None;
            }
        };
        let db = TestDb::create_on(&private.url);
        let mut c = Cluster::start_on(test, &names(n), setup, env, db, NodeUrl::PLAIN)?;
        c.private = Some(private);
        Some(c)
    }

    /// Restarts the PostgreSQL of [`Cluster::start_private`] (fast: every
    /// session ended in whatever it was doing).
    pub fn restart_database(&self) {
        self.private
            .as_ref()
            .expect("a cluster started with start_private")
            .restart();
    }

    /// [`Cluster::start`] with `query` (`key=value&…`) added to the URL
    /// the nodes are given (e.g. `sslmode=verify-full&sslrootcert=…`).
    pub fn start_with_url_query(
        test: &str,
        n: usize,
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
        query: &str,
    ) -> Option<Cluster> {
        Cluster::start_with(test, n, setup, env, false, query)
    }

    /// [`Cluster::start`] with the nodes reaching the database through a
    /// [`Proxy`] ([`Cluster::proxy`]), to take it away from them.
    pub fn start_proxied(
        test: &str,
        n: usize,
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Option<Cluster> {
        Cluster::start_with(test, n, setup, env, true, "")
    }

    /// [`Cluster::start`] with the nodes' `node_id`s given (`n1`, `n2`, …
    /// otherwise): a misconfigured cluster, e.g. two nodes of one name.
    pub fn start_named(
        test: &str,
        node_ids: &[&str],
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Option<Cluster> {
        if engine() == Engine::Postgres {
            eprintln!("{test}: runs in the default pass of the suite only");
            return None;
        }
        let db = require_pg_or_skip()?;
        let names: Vec<String> = node_ids.iter().map(|s| s.to_string()).collect();
        Cluster::start_on(test, &names, setup, env, db, NodeUrl::PLAIN)
    }

    /// [`Cluster::start`] with the nodes' URL written by `url` from the
    /// test's database (e.g. several hosts).
    pub fn start_with_url(
        test: &str,
        n: usize,
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
        url: impl FnOnce(&TestDb) -> String,
    ) -> Option<Cluster> {
        if engine() == Engine::Postgres {
            eprintln!("{test}: runs in the default pass of the suite only");
            return None;
        }
        let db = require_pg_or_skip()?;
        let text = url(&db);
        Cluster::start_on(test, &names(n), setup, env, db, NodeUrl::Text(text))
    }

    fn start_with(
        test: &str,
        n: usize,
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
        proxied: bool,
        query: &str,
    ) -> Option<Cluster> {
        if engine() == Engine::Postgres {
            eprintln!("{test}: runs in the default pass of the suite only");
            return None;
        }
        let db = require_pg_or_skip()?;
        Cluster::start_on(
            test,
            &names(n),
            setup,
            env,
            db,
            NodeUrl::Db { proxied, query },
        )
    }

    fn start_on(
        _test: &str,
        node_ids: &[String],
        setup: &str,
        env: impl Fn(usize) -> Vec<(String, String)>,
        db: TestDb,
        url: NodeUrl<'_>,
    ) -> Option<Cluster> {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = temp_dir();
        let url_file = dir.path().join("pg.url");
        let (proxied, query, url_text) = match url {
            NodeUrl::Db { proxied, query } => (proxied, query, None),
            NodeUrl::Text(text) => (false, "", Some(text)),
        };
        let mut url = url::Url::parse(db.url()).expect("the test database's URL");
        let proxy = proxied.then(|| {
            let target = (
                url.host_str().unwrap_or("127.0.0.1").to_string(),
                url.port().unwrap_or(5432),
            );
            let target = std::net::ToSocketAddrs::to_socket_addrs(&target)
                .ok()
                .and_then(|mut a| a.next())
                .expect("the database's address (a TCP URL)");
            let proxy = Proxy::start(target);
            url.set_host(Some("127.0.0.1")).expect("set the host");
            url.set_port(Some(proxy.addr().port()))
                .expect("set the port");
            proxy
        });
        if !query.is_empty() {
            url.set_query(Some(query));
        }
        let url = url_text.unwrap_or_else(|| url.to_string());
        std::fs::write(&url_file, format!("{url}\n")).expect("write pg.url");
        let (server, tables) = split(setup);
        let config_for = |i: usize| {
            format!(
                "{server}\n[storage]\nengine = \"postgres\"\nurl_file = \"{}\"\nnode_id = \"{}\"\npool_size = 4\n{tables}",
                url_file.display(),
                node_ids[i]
            )
        };
        // The schema, once, with the first node's config.
        let first = dir.path().join("migrate.toml");
        let text = super::daemon::render_config(
            &super::daemon::default_config(
                "",
                &format!(
                    "[storage]\nengine = \"postgres\"\nurl_file = \"{}\"\nnode_id = \"m\"\n",
                    url_file.display()
                ),
            ),
            dir.path(),
        );
        std::fs::write(&first, text).expect("write the migrate config");
        migrate(&first, dir.path());
        let nodes = (0..node_ids.len())
            .map(|i| {
                let env = env(i);
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Daemon::start_with_env(&config_for(i), &env)
            })
            .collect();
        Some(Cluster {
            nodes,
            proxy,
            db,
            private: None,
            dir,
            _serial: serial,
        })
    }

    /// The proxy between the nodes and the database
    /// ([`Cluster::start_proxied`]).
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("a cluster started with start_proxied")
    }

    pub fn node(&self, i: usize) -> &Daemon {
        &self.nodes[i]
    }

    /// `sql` on the cluster's database (psql `-At`: one row a line).
    pub fn sql(&self, sql: &str) -> String {
        psql(self.db.url(), sql)
    }

    /// Waits until at least `n` sessions of the database wait for a lock
    /// (another node holds the row).
    pub fn wait_lock_waiters(&self, n: usize) {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
            self.db.name()
        );
        wait_until(
            DEADLINE,
            &format!("{n} session(s) waiting for a lock"),
            || {
                let got: usize = psql(self.db.admin_url(), &sql).trim().parse().unwrap_or(0);
                if got >= n {
                    Ok(())
                } else {
                    Err(format!("{got} waiting"))
                }
            },
        );
    }

    /// Every email the nodes wrote (file transport), by Message-ID: how
    /// many times each was sent, cluster-wide.
    pub fn sent_by_message_id(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in &self.nodes {
            for e in eml::read_dir(&d.sent_dir()) {
                let id = e.header("Message-ID").unwrap_or_default().to_string();
                *out.entry(id).or_insert(0) += 1;
            }
        }
        out
    }

    /// The emails of kind `kind` ("auto_reply", "notification", ...) in the
    /// shared outbox (read at the last node: tests kill the first).
    pub fn outbox_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.nodes[self.nodes.len() - 1]
            .cmd(serde_json::json!({"cmd": "outbox", "limit": 1000}))
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o["kind"] == kind)
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The daemons first, then the database (TestDb's own Drop).
        self.nodes.clear();
    }
}

/// Splits a setup into `[server]` lines and tables, as `Daemon::start`
/// does.
fn split(setup: &str) -> (String, String) {
    let mut server = String::new();
    let mut tables = String::new();
    let mut in_server = true;
    for line in setup.lines() {
        if line.trim_start().starts_with('[') {
            in_server = false;
        }
        let out = if in_server { &mut server } else { &mut tables };
        out.push_str(line);
        out.push('\n');
    }
    (server, tables)
}
