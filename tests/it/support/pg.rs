//! PostgreSQL for the tests: which engine the suite runs on ([`engine`]),
//! and a throwaway database per test ([`TestDb`]).
//!
//! The server is, in this order:
//! - `POSTDESK_TEST_PG_URL` (a superuser's URL, e.g. from
//!   `eval "$(.ci/pg-start)"`), if set;
//! - otherwise, when not running as root and a
//!   `/usr/lib/postgresql/*/bin/initdb` exists, a private cluster started
//!   once per test process in a temp dir under /tmp (127.0.0.1 on a free
//!   port, its Unix socket in that dir, trust authentication, user
//!   `postgres`). A watchdog process holds the read end of a pipe whose
//!   write end only this process has; when this process exits, however it
//!   exits (even `kill -9`), the watchdog reads EOF, stops the cluster and
//!   removes the dir;
//! - otherwise none: a test that wanted one is skipped with a loud
//!   `SKIPPED` line on stderr, unless `POSTDESK_REQUIRE_PG=1`, which makes
//!   it fail instead.
//!
//! Each [`TestDb`] is `CREATE DATABASE t_<random hex> TEMPLATE template0`
//! on that server, dropped (`WITH (FORCE)`) when the value is dropped. The
//! tests talk to PostgreSQL with the `psql` binary only ([`psql`]), so the
//! test target needs no PostgreSQL crate.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The storage engine the daemons of this test run use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Redb,
    Postgres,
}

/// `POSTDESK_TEST_ENGINE`: `redb` (the default, also when unset or empty)
/// or `postgres`; anything else fails the test saying so.
pub fn engine() -> Engine {
    match std::env::var("POSTDESK_TEST_ENGINE") {
        Err(std::env::VarError::NotPresent) => Engine::Redb,
        Ok(v) => match v.as_str() {
            "" | "redb" => Engine::Redb,
            "postgres" => Engine::Postgres,
            other => panic!(
                "POSTDESK_TEST_ENGINE={other:?} is not an engine: use \"redb\" (the default) \
                 or \"postgres\""
            ),
        },
        Err(std::env::VarError::NotUnicode(v)) => {
            panic!("POSTDESK_TEST_ENGINE={v:?} is not an engine: use \"redb\" or \"postgres\"")
        }
    }
}

/// `POSTDESK_REQUIRE_PG=1`: a test that needs PostgreSQL fails, rather than
/// skips, when there is none (CI sets it).
pub fn pg_required() -> bool {
    match std::env::var("POSTDESK_REQUIRE_PG") {
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) => match v.as_str() {
            "" | "0" => false,
            "1" => true,
            other => panic!("POSTDESK_REQUIRE_PG={other:?}: use 1 (required) or 0 / unset"),
        },
        Err(std::env::VarError::NotUnicode(v)) => {
            panic!("POSTDESK_REQUIRE_PG={v:?}: use 1 (required) or 0 / unset")
        }
    }
}

/// A database of its own for one test, on the test server; dropped with the
/// value.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// A fresh database, or `None` (after a loud `SKIPPED` line on stderr)
    /// when there is no PostgreSQL; with `POSTDESK_REQUIRE_PG=1` no server
    /// fails the test instead.
    pub fn create() -> Option<TestDb> {
        match server() {
            Ok(admin_url) => Some(TestDb::create_on(admin_url)),
            Err(why) => {
                if pg_required() {
                    panic!("POSTDESK_REQUIRE_PG=1, but there is no PostgreSQL: {why}");
                }
                eprintln!(
                    "SKIPPED {}: no PostgreSQL ({why}); set POSTDESK_TEST_PG_URL \
                     (eval \"$(.ci/pg-start)\") or install postgresql",
                    test_name()
                );
                None
            }
        }
    }

    /// A fresh database for a daemon of a `POSTDESK_TEST_ENGINE=postgres`
    /// run: no server fails the test (the run asked for PostgreSQL).
    pub fn for_engine() -> TestDb {
        match server() {
            Ok(admin_url) => TestDb::create_on(admin_url),
            Err(why) => panic!("POSTDESK_TEST_ENGINE=postgres, but there is no PostgreSQL: {why}"),
        }
    }

    pub fn create_on(admin_url: &str) -> TestDb {
        let name = format!("t_{:016x}", random_u64());
        psql(
            admin_url,
            &format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
        );
        TestDb {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
        }
    }

    /// The URL of this test's database (what a daemon's `url_file` holds).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name, `t_<hex>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's superuser URL (its `postgres` database), for looking at
    /// the server from outside this database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = try_psql(&self.admin_url, &sql) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// For a test that needs PostgreSQL whatever `POSTDESK_TEST_ENGINE` says:
/// `let Some(db) = require_pg_or_skip() else { return };` — `None` (the
/// test passes, having said `SKIPPED` on stderr) when there is no server,
/// unless `POSTDESK_REQUIRE_PG=1`, which fails the test instead.
pub fn require_pg_or_skip() -> Option<TestDb> {
    TestDb::create()
}

/// Runs `sql` (one or more statements) in `url`'s database with `psql -At`
/// and returns its stdout; fails the test on any error.
pub fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|e| panic!("psql: {e}\n--- sql ---\n{sql}"))
}

/// [`psql`], with the error (psql's stderr) returned.
pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(psql_bin())
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .arg(url)
        .arg("-c")
        .arg(sql)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {}: {e}", psql_bin().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} ({}): {}",
            redact(url),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---- the server ----

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The test server's superuser URL, found or started once per process.
fn server() -> Result<&'static str, String> {
    SERVER
        .get_or_init(find_server)
        .as_ref()
        .map(|s| s.admin_url.as_str())
        .map_err(Clone::clone)
}

/// The CA certificate of the test cluster's TLS (`DIR/ca.crt`, made by
/// .ci/pg-tls), if it has TLS.
pub fn tls_ca() -> Option<PathBuf> {
    let server = SERVER.get_or_init(find_server).as_ref().ok()?;
    let ca = server.dir.as_ref()?.join("ca.crt");
    ca.is_file().then_some(ca)
}

struct Server {
    admin_url: String,
    /// The cluster's dir, when known (ours, or POSTDESK_TEST_PG_DIR).
    dir: Option<PathBuf>,
    /// The private cluster's watchdog, when we started one: lives as long
    /// as the process (a `static` is never dropped; the pipe closes at exit).
    _cluster: Option<Watchdog>,
}

struct Watchdog {
    _child: Child,
    _pipe: ChildStdin,
}

fn find_server() -> Result<Server, String> {
    if let Some(url) = std::env::var("POSTDESK_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        try_psql(&url, "SELECT 1").map_err(|e| {
            format!("POSTDESK_TEST_PG_URL is set, but the server does not answer: {e}")
        })?;
        return Ok(Server {
            admin_url: url,
            dir: std::env::var_os("POSTDESK_TEST_PG_DIR").map(PathBuf::from),
            _cluster: None,
        });
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Err(
            "POSTDESK_TEST_PG_URL is not set, and as root no private cluster is \
             started (initdb refuses root)"
                .to_string(),
        );
    }
    let Some(bin) = pg_bin_dir() else {
        return Err(
            "POSTDESK_TEST_PG_URL is not set and there is no /usr/lib/postgresql/*/bin/initdb"
                .to_string(),
        );
    };
    start_cluster(&bin)
}

/// The newest `/usr/lib/postgresql/N/bin` holding `initdb`.
fn pg_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// `psql` of the newest local PostgreSQL, else the one on PATH.
pub fn psql_bin() -> &'static Path {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        pg_bin_dir()
            .map(|bin| bin.join("psql"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"))
    })
}

/// initdb + pg_ctl start in a fresh dir under /tmp, watched as described in
/// the module doc.
fn start_cluster(bin: &Path) -> Result<Server, String> {
    let dir = tempfile::Builder::new()
        .prefix("pdpg")
        .tempdir_in("/tmp")
        .map_err(|e| format!("create a temp dir for the cluster: {e}"))?
        .keep();
    let data = dir.join("data");
    let pg_ctl = bin.join("pg_ctl");

    // The watchdog first: from here on, the dir goes when we go.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(
            r#"trap '' INT HUP; read _ignored
            [ -f "$2/postmaster.pid" ] && "$1" -D "$2" stop -m fast -s
            rm -rf -- "$3""#,
        )
        .arg("pg-watchdog")
        .arg(&pg_ctl)
        .arg(&data)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C at the terminal must not kill it
        // before it has stopped the cluster.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn the cluster's watchdog: {e}"))?;
    let pipe = child.stdin.take().ok_or("the watchdog has no stdin pipe")?;
    let watchdog = Watchdog {
        _child: child,
        _pipe: pipe,
    };

    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["--no-sync", "-A", "trust", "-U", "postgres"])
            .args(["-E", "UTF8", "--locale=C"]),
        "initdb",
    )?;
    let conf = data.join("postgresql.conf");
    append(
        &conf,
        &format!(
            "\n# the postdesk test harness: a throwaway cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n",
            dir.display()
        ),
    )?;
    // TLS with a CA of its own, as .ci/pg-start's cluster has ([`tls_ca`]);
    // without openssl none (the TLS tests say so).
    if let Err(e) = run(
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg-tls"))
            .arg(&data)
            .arg(dir.join("ca.crt")),
        "pg-tls",
    ) {
        eprintln!("note: the private cluster has no TLS: {e}");
    }
    let log = dir.join("postgres.log");
    let mut last = String::new();
    for _attempt in 0..5 {
        // Another process may take the port before the postmaster binds it:
        // then the start fails and we try another one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        // The last `port` line wins.
        append(&conf, &format!("port = {port}\n"))?;
        let started = run(
            Command::new(&pg_ctl)
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-s", "-l"])
                .arg(&log)
                .arg("start"),
            "pg_ctl start",
        );
        match started {
            Ok(()) => {
                let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                try_psql(&admin_url, "SELECT 1")?;
                eprintln!(
                    "note: started a private PostgreSQL for this test run at {admin_url} \
                     (dir {})",
                    dir.display()
                );
                return Ok(Server {
                    admin_url,
                    dir: Some(dir.clone()),
                    _cluster: Some(watchdog),
                });
            }
            Err(e) => {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                last = format!("{e}\n--- postgres.log ---\n{tail}");
            }
        }
    }
    Err(format!("could not start a private cluster: {last}"))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("append to {}: {e}", path.display()))
}

// ---- small helpers ----

/// `url` with its database replaced by `name`: the path of a
/// `postgres://` URL, or a `dbname=` added to a key=value string (the last
/// one wins).
fn with_database(url: &str, name: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url)
            .unwrap_or_else(|e| panic!("the PostgreSQL URL {} does not parse: {e}", redact(url)));
        parsed.set_path(&format!("/{name}"));
        parsed.to_string()
    } else {
        format!("{url} dbname={name}")
    }
}

/// A URL for messages: a password in it is replaced by `***`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) if url.contains("password") => "(a key=value string with a password)".to_string(),
        Err(_) => url.to_string(),
    }
}

/// 64 random bits, without a dev-dependency: std's per-process random
/// hasher keys, the pid, the time and a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string()
}

/// For a test of the redb engine's own files (journal, blob file, data
/// dir): on another engine it has nothing to test; says so and returns
/// true (the caller returns).
pub fn skip_unless_redb(test: &str) -> bool {
    if engine() == Engine::Redb {
        return false;
    }
    eprintln!(
        "{test}: not run on engine {:?}: it tests the redb engine's own files",
        engine()
    );
    true
}

/// A PostgreSQL cluster of one test's own (`.ci/pg-start`: a temp dir, a
/// free port, TLS, run as `postgres` under root), to be restarted or
/// stopped without touching the other tests' server. Stopped and removed
/// when dropped.
pub struct PrivateCluster {
    /// Its superuser URL.
    pub url: String,
    dir: PathBuf,
}

impl PrivateCluster {
    pub fn start() -> Result<PrivateCluster, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg-start");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            stdout.lines().find_map(|l| {
                l.strip_prefix(&format!("export {key}="))
                    .map(|v| v.trim_matches('\'').to_string())
            })
        };
        match (
            out.status.success(),
            value("POSTDESK_TEST_PG_URL"),
            value("POSTDESK_TEST_PG_DIR"),
        ) {
            (true, Some(url), Some(dir)) => Ok(PrivateCluster {
                url,
                dir: PathBuf::from(dir),
            }),
            _ => Err(format!(
                ".ci/pg-start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    /// `pg_ctl restart -m fast`: every session is ended at once, in
    /// whatever it was doing (the server comes back within a few seconds).
    pub fn restart(&self) {
        let bin = std::fs::read_to_string(self.dir.join("postdesk-test-cluster"))
            .expect("the cluster's marker");
        let pg_ctl = Path::new(bin.trim()).join("pg_ctl");
        let data = self.dir.join("data");
        let log = self.dir.join("postgres.log");
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let out = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", "60", "-s", "-l"])
            .arg(&log)
            .arg("restart")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl restart");
        assert!(
            out.status.success(),
            "pg_ctl restart: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg-start");
        let _ = Command::new("bash")
            .arg(script)
            .arg("--stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}
