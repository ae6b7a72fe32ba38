//! One `postdesk serve` process in its own temp dir (under /tmp, so the admin
//! socket path stays well under the ~100-byte Unix socket limit).
//!
//! The daemon announces itself with one stdout line,
//! `ready smtp=ADDR[,ADDR...] admin=PATH`, once every listener is bound; we
//! read the addresses from it. Its stderr (the logs) is drained continuously
//! into a buffer so the pipe never fills; the buffer is printed when a test
//! panics while the daemon is alive, and put into the harness's own panics.
//!
//! With `POSTDESK_TEST_ENGINE=postgres` (see [`super::pg`]), every daemon
//! gets a database of its own ([`TestDb`]): its URL goes into `{dir}/pg.url`
//! and a `[storage]` table naming it is appended to the config, unless the
//! config has a `[storage]` table already; when the harness appended it, it
//! also runs `postdesk migrate` on the config before the first start. The
//! database is dropped after the daemon has been stopped.

use std::ffi::OsStr;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::admin::Admin;
use super::pg::{engine, Engine, TestDb};
use super::smtp::{send_mail, Msg, Reply};
use super::DEADLINE;

/// A hook run in the child between fork and exec (see
/// [`Daemon::set_pre_exec`]): only async-signal-safe calls (setrlimit,
/// signal), no allocation.
pub type PreExec = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

/// The templates the repository ships.
pub fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// The default test config, with `{server}` (extra lines inside `[server]`)
/// and `{extra}` (appended at the end) still to fill, and `{dir}` /
/// `{templates}` left for [`render_config`].
const DEFAULT_CONFIG: &str = r#"[server]
hostname = "desk.acme.example"
listen = ["127.0.0.1:0"]
data_dir = "{dir}/data"
admin_socket = "{dir}/admin.sock"
templates = "{templates}"
{server}

[outbound]
transport = "file"
dir = "{dir}/sent"
from = "Acme Support <support@acme.example>"

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

[[channel]]
id = "sales"
addresses = ["sales@acme.example"]
pipeline = "support"
source = "email"
automation = false

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
{extra}"#;

/// The default config text: `server` goes inside `[server]` (e.g.
/// `max_sessions = 2`), `extra` is appended (e.g. `[[workflow]]` tables).
/// `{dir}` and `{templates}` are left in; see [`render_config`].
pub fn default_config(server: &str, extra: &str) -> String {
    DEFAULT_CONFIG
        .replace("{server}", server)
        .replace("{extra}", extra)
}

/// The default config with `extra` appended and each `(from, to)` edit
/// applied once, in order — e.g. `("reply_to_closed = \"reopen\"",
/// "reply_to_closed = \"new_ticket\"")`. Panics if an edit's `from` is not
/// in the text, so a config a test meant to change is never silently kept.
/// The result is a whole config (it has `[server]`) for [`Daemon::start`].
pub fn config_with(extra: &str, edits: &[(&str, &str)]) -> String {
    edit_config(&default_config("", extra), edits)
}

/// Applies each `(from, to)` edit once, in order; panics if a `from` is
/// missing.
pub fn edit_config(text: &str, edits: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "config edit: {from:?} is not in the config:\n{text}"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// Fills `{dir}` (the test's temp dir) and `{templates}` (the repository's
/// templates) in a config text.
pub fn render_config(text: &str, dir: &Path) -> String {
    text.replace("{dir}", &dir.display().to_string())
        .replace("{templates}", &templates_dir().display().to_string())
}

/// A fresh temp dir under /tmp (short paths: the admin socket lives there).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pd")
        .tempdir_in("/tmp")
        .expect("create a temp dir under /tmp")
}

/// Splits the `Daemon::start` argument into the lines that belong inside
/// `[server]` (those before the first table header) and the rest.
fn split_setup(setup: &str) -> (String, String) {
    let mut server = String::new();
    let mut extra = String::new();
    let mut in_server = true;
    for line in setup.lines() {
        if line.trim_start().starts_with('[') {
            in_server = false;
        }
        let out = if in_server { &mut server } else { &mut extra };
        out.push_str(line);
        out.push('\n');
    }
    (server, extra)
}

/// The `[storage]` table the harness appends in a postgres run.
const PG_STORAGE: &str = r#"
[storage]
engine = "postgres"
url_file = "{dir}/pg.url"
node_id = "test"
"#;

/// Whether a config text has a `[storage]` table (or a `[storage.*]` one).
fn has_storage_table(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("[storage]") || l.starts_with("[storage.")
    })
}

/// `text` with the storage of this test run: unchanged on engine redb (the
/// default). On engine postgres, a fresh [`TestDb`] whose URL is written to
/// `{dir}/pg.url` (mode 0600), and the `[storage]` table naming it appended
/// unless `text` has one (then the test chose its storage itself; `pg.url`
/// is there for it to use). `{dir}` stays in the text for
/// [`render_config`]. Keep the `TestDb` until the daemons using it are
/// stopped.
pub fn with_test_storage(text: &str, dir: &Path) -> (String, Option<TestDb>) {
    match engine() {
        Engine::Redb => (text.to_string(), None),
        Engine::Postgres => {
            let db = TestDb::for_engine();
            write_url_file(&dir.join("pg.url"), db.url());
            (with_pg_storage(text), Some(db))
        }
    }
}

/// `text` with [`PG_STORAGE`] appended, unless it has a `[storage]` table.
fn with_pg_storage(text: &str) -> String {
    if has_storage_table(text) {
        return text.to_string();
    }
    let mut text = text.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(PG_STORAGE);
    text
}

/// `postdesk migrate -c CONFIG`, which must succeed: the schema for a
/// config on engine postgres (a fresh [`TestDb`] has none).
pub fn migrate(config: &Path, cwd: &Path) {
    let out = run_cli(
        &[OsStr::new("migrate"), OsStr::new("-c"), config.as_os_str()],
        cwd,
    );
    assert_eq!(
        out.code(),
        Some(0),
        "postdesk migrate -c {} should create the schema\n{out}",
        config.display()
    );
}

/// Writes `url` to `path`, readable by its owner only (it is a credential).
fn write_url_file(path: &Path, url: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{url}\n").as_bytes()))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub struct Daemon {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    smtp: Vec<SocketAddr>,
    admin: PathBuf,
    /// stderr of every run (and stdout lines, prefixed), in order.
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    runs: usize,
    /// Run in the child before exec, on every start from now on.
    pre_exec: Option<PreExec>,
    /// Extra environment for every start from now on.
    env: Vec<(String, String)>,
    /// The daemon's database on engine postgres; dropped (explicitly, in
    /// `Drop`) only after the process is gone.
    pg: Option<TestDb>,
}

impl Daemon {
    /// Starts a daemon on 127.0.0.1:0 in a fresh temp dir.
    ///
    /// `setup` is either a whole config (it has a `[server]` line; `{dir}`
    /// and `{templates}` are filled in) or additions to the default config:
    /// lines before the first `[table]` header go inside `[server]`, the rest
    /// is appended. `""` is the default config.
    ///
    /// On engine postgres the daemon gets a database of its own (see the
    /// module doc); no PostgreSQL then fails the test.
    pub fn start(setup: &str) -> Daemon {
        let text = if setup.lines().any(|l| l.trim() == "[server]") {
            setup.to_string()
        } else {
            let (server, extra) = split_setup(setup);
            default_config(&server, &extra)
        };
        let dir = temp_dir();
        let harness_storage = engine() == Engine::Postgres && !has_storage_table(&text);
        let (text, pg) = with_test_storage(&text, dir.path());
        let config = dir.path().join("postdesk.toml");
        std::fs::write(&config, render_config(&text, dir.path())).expect("write the config");
        if harness_storage {
            // A fresh database has no schema; `serve` refuses it (SPEC §8).
            migrate(&config, dir.path());
        }
        let mut d = Daemon {
            dir,
            config,
            child: None,
            smtp: Vec::new(),
            admin: PathBuf::new(),
            log: Arc::new(Mutex::new(String::new())),
            readers: Vec::new(),
            runs: 0,
            pre_exec: None,
            env: Vec::new(),
            pg,
        };
        d.start_again();
        d
    }

    /// Like [`Daemon::start`], with `env` set for this and every later run.
    pub fn start_with_env(setup: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::start(setup);
        d.terminate();
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.start_again();
        d
    }

    /// Starts the process (again) on the same config and data dir; waits for
    /// its `ready` line. The SMTP port may change.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: the daemon is still running"
        );
        self.runs += 1;
        self.push_log(&format!("----- postdesk serve, run {} -----\n", self.runs));
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("-c")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env_remove("POSTDESK_CONFIG")
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(hook) = self.pre_exec.clone() {
            // SAFETY: the hook promises to make only async-signal-safe calls
            // (see `PreExec`), as required between fork and exec.
            unsafe {
                command.pre_exec(move || hook());
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::clone(&self.log);
        self.readers.push(std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(stderr.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        }));
        let (tx, rx) = mpsc::channel();
        self.readers
            .push(forward_stdout(stdout, tx, Arc::clone(&self.log)));
        self.child = Some(child);

        let start = Instant::now();
        let ready = loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("ready ") => break line,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill_quietly();
                    self.fail(format!("no `ready` line on stdout within {DEADLINE:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    self.child = None;
                    self.fail(format!(
                        "the daemon closed stdout before its `ready` line (exit: {status:?})"
                    ));
                }
            }
        };
        let (smtp, admin) =
            parse_ready(&ready).unwrap_or_else(|e| self.fail(format!("{e}: {ready:?}")));
        self.smtp = smtp;
        self.admin = admin;
    }

    /// Sets (or clears) a hook that runs in the child between fork and exec
    /// on every later start — e.g. `setrlimit` for resource limits, which
    /// the daemon then inherits. Takes effect at the next
    /// [`Daemon::start_again`].
    pub fn set_pre_exec(&mut self, hook: Option<PreExec>) {
        self.pre_exec = hook;
    }

    /// SIGTERM, then waits for the exit; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid();
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {pid}");
        let status = self.wait_exit(DEADLINE).unwrap_or_else(|| {
            self.kill_quietly();
            self.fail(format!("no exit within {DEADLINE:?} after SIGTERM"))
        });
        self.child = None;
        status
    }

    /// SIGTERM (asserting a clean exit 0), then start again on the same data.
    pub fn restart(&mut self) {
        let status = self.terminate();
        if status.code() != Some(0) {
            self.fail(format!("SIGTERM should exit 0, got {status:?}"));
        }
        self.start_again();
    }

    /// SIGKILL and reap; the daemon stays down until [`Daemon::start_again`].
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9: the daemon is not running");
        child.kill().expect("kill -9");
        child.wait().expect("reap after kill -9");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is not running").id()
    }

    /// The first SMTP address from the `ready` line.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp[0]
    }

    pub fn smtp_addrs(&self) -> &[SocketAddr] {
        &self.smtp
    }

    pub fn admin_path(&self) -> &Path {
        &self.admin
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The URL of the daemon's database on engine postgres; `None` on redb.
    pub fn pg_url(&self) -> Option<&str> {
        self.pg.as_ref().map(TestDb::url)
    }

    /// Where the file transport of the default config writes (`{dir}/sent`).
    pub fn sent_dir(&self) -> PathBuf {
        self.dir().join("sent")
    }

    /// Replaces the config file with `text` (`{dir}` and `{templates}`
    /// filled in); the daemon sees it on its next reload. On engine
    /// postgres the `[storage]` table is appended as at the start (unless
    /// `text` has one), so the reload keeps the daemon's database.
    pub fn rewrite_config(&self, text: &str) {
        let text = match self.pg {
            Some(_) => with_pg_storage(text),
            None => text.to_string(),
        };
        std::fs::write(&self.config, render_config(&text, self.dir()))
            .unwrap_or_else(|e| self.fail(format!("rewrite the config: {e}")));
    }

    /// Sends SIGHUP (reload config and templates).
    pub fn sighup(&self) {
        let pid = self.pid();
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP {pid}");
    }

    /// Everything the daemon wrote to stderr so far (all runs).
    pub fn logs(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Panics with `what` and the daemon's logs.
    pub fn fail(&self, what: impl Display) -> ! {
        panic!(
            "{what}\n----- postdesk logs -----\n{}\n----- end of logs -----",
            self.logs()
        )
    }

    // ---- admin ----

    /// A new admin-socket connection.
    pub fn admin(&self) -> Admin {
        Admin::connect(&self.admin).unwrap_or_else(|e| {
            self.fail(format!(
                "connect to admin socket {}: {e}",
                self.admin.display()
            ))
        })
    }

    /// One request on a fresh connection; the whole response.
    pub fn request(&self, req: Value) -> Value {
        let mut admin = self.admin();
        admin
            .try_request(&req)
            .unwrap_or_else(|e| self.fail(format!("admin request {req}: {e}")))
    }

    /// One request that must succeed; its `data`.
    pub fn cmd(&self, req: Value) -> Value {
        let resp = self.request(req.clone());
        if resp["ok"] != json!(true) {
            self.fail(format!("admin request {req} failed: {resp}"));
        }
        resp.get("data")
            .cloned()
            .unwrap_or_else(|| self.fail(format!("admin response without data: {resp}")))
    }

    /// The `ticket` object (with messages and timeline).
    pub fn ticket(&self, id: u64) -> Value {
        self.cmd(json!({"cmd": "ticket", "id": id}))
    }

    /// `tickets`, newest first.
    pub fn tickets(&self) -> Vec<Value> {
        self.array(json!({"cmd": "tickets"}))
    }

    /// Every ticket (`tickets` with a limit high enough for any test),
    /// newest first.
    pub fn all_tickets(&self) -> Vec<Value> {
        self.array(json!({"cmd": "tickets", "limit": 10_000}))
    }

    /// `message` by Message-ID: its data (`ticket`, `raw_base64`, the message
    /// fields) if stored, `None` on `not_found`; any other answer fails the
    /// test.
    pub fn message(&self, message_id: &str) -> Option<Value> {
        let req = json!({"cmd": "message", "message_id": message_id});
        let resp = self.request(req.clone());
        if resp["ok"] == json!(true) {
            return Some(resp["data"].clone());
        }
        if resp["error"]["code"] == "not_found" {
            return None;
        }
        self.fail(format!("admin request {req} failed: {resp}"))
    }

    /// The raw bytes stored for `message_id`, if it is stored.
    pub fn raw(&self, message_id: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let stored = self.message(message_id)?;
        let b64 = stored["raw_base64"]
            .as_str()
            .unwrap_or_else(|| self.fail(format!("`message` without raw_base64: {stored}")));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| {
                self.fail(format!("raw_base64 of {message_id} is not base64: {e}"))
            });
        Some(raw)
    }

    pub fn conversations(&self) -> Vec<Value> {
        self.array(json!({"cmd": "conversations"}))
    }

    pub fn health(&self) -> Value {
        self.cmd(json!({"cmd": "health"}))
    }

    /// `outbox` in one state (`"queued"`, `"sent"`, `"failed"`).
    pub fn outbox(&self, state: &str) -> Vec<Value> {
        self.array(json!({"cmd": "outbox", "state": state}))
    }

    /// Every outbox entry, whatever its state (`outbox` without `state`:
    /// one consistent read, so an email moving from queued to sent is seen
    /// once).
    pub fn outbox_all(&self) -> Vec<Value> {
        self.array(json!({"cmd": "outbox"}))
    }

    /// Waits until nothing is pending in the outbox (`health.outbox_pending`
    /// is 0).
    pub fn wait_outbox_idle(&self) {
        super::wait_until(DEADLINE, "an empty outbox queue", || {
            let h = self.health();
            if h["outbox_pending"] == 0 {
                Ok(())
            } else {
                Err(format!("health: {h}; queued: {:?}", self.outbox("queued")))
            }
        });
    }

    fn array(&self, req: Value) -> Vec<Value> {
        match self.cmd(req.clone()) {
            Value::Array(items) => items,
            other => self.fail(format!("{req}: expected an array, got {other}")),
        }
    }

    // ---- SMTP ----

    /// Delivers `m` over SMTP with its own envelope (MAIL FROM its From
    /// address, RCPT TO its To address, unless the message overrides them).
    pub fn send(&self, m: &Msg) -> Reply {
        send_mail(self.smtp_addr(), &m.env_from(), &m.rcpt(), &m.build())
    }

    /// Delivers `m`, which must be accepted onto a ticket; its id.
    pub fn send_ok(&self, m: &Msg) -> u64 {
        let reply = self.send(m);
        match reply.ticket_id() {
            Some(id) if reply.code == 250 => id,
            _ => self.fail(format!(
                "delivery of {} should get `250 2.0.0 Ok: ticket <id>`, got: {reply}",
                m.mid()
            )),
        }
    }

    // ---- process plumbing ----

    fn push_log(&self, s: &str) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(s);
    }

    /// Polls for the child's exit for at most `deadline`.
    fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let running = self.child.is_some();
        self.kill_quietly();
        // The readers end when the pipes close; joining them makes the
        // last log lines part of what we print.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if std::thread::panicking() && running {
            eprintln!(
                "----- postdesk logs ({}) -----\n{}\n----- end of logs -----",
                self.dir.path().display(),
                self.logs()
            );
        }
        // The process is gone: its database can go (a field's own drop
        // would come after this anyway; explicit, so no reordering of the
        // fields can change it).
        drop(self.pg.take());
    }
}

/// Forwards stdout lines to `tx` (until the receiver goes away) and into the
/// log, until EOF.
fn forward_stdout(
    stdout: ChildStdout,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        while matches!(stdout.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&format!("[stdout] {text}\n"));
            let _ = tx.send(text);
            line.clear();
        }
    })
}

/// `ready smtp=127.0.0.1:PORT[,ADDR...] admin=/abs/path`.
fn parse_ready(line: &str) -> Result<(Vec<SocketAddr>, PathBuf), String> {
    let mut smtp = None;
    let mut admin = None;
    for token in line.split_whitespace().skip(1) {
        if let Some(list) = token.strip_prefix("smtp=") {
            let addrs = list
                .split(',')
                .map(|a| {
                    a.parse::<SocketAddr>()
                        .map_err(|e| format!("smtp address {a:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            smtp = Some(addrs);
        } else if let Some(path) = token.strip_prefix("admin=") {
            admin = Some(PathBuf::from(path));
        }
    }
    let smtp = smtp
        .filter(|a| !a.is_empty())
        .ok_or("no smtp= in the ready line")?;
    let admin = admin.ok_or("no admin= in the ready line")?;
    if !admin.is_absolute() {
        return Err(format!(
            "admin= is not an absolute path: {}",
            admin.display()
        ));
    }
    Ok((smtp, admin))
}

/// What a finished command-line run printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `postdesk ARGS` in `cwd` and waits (with a deadline: a `serve` that
/// should have refused to start is killed, and the test fails).
pub fn run_cli<S: AsRef<OsStr>>(args: &[S], cwd: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("POSTDESK_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let Some(status) = status else {
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        panic!(
            "`postdesk {}` did not exit within {DEADLINE:?} (killed)\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            shown.join(" ")
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}
