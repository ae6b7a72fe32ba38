//! The `postdesk` command line: wiring only. Every error reaches the user as
//! one plain line and an exit code (78 = bad config, as sysexits.h).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use postdesk::admin::proto::Request;
use postdesk::ingest::TicketId;
use postdesk::{config, ctl, daemon, telemetry, EX_CONFIG};

#[derive(Parser)]
#[command(name = "postdesk", version, about = "Email-to-ticket gateway daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Config file [default: $POSTDESK_CONFIG, else config/postdesk.toml]
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("POSTDESK_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config/postdesk.toml"))
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format on stderr: text (default; journald-friendly) or json
    #[arg(long, value_parser = ["text", "json"], env = "POSTDESK_LOG_FORMAT")]
    log_format: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false, id = "mailbox")]
struct ImportSource {
    /// An mbox file
    #[arg(long)]
    mbox: Option<PathBuf>,
    /// A Maildir folder (with cur/ and new/)
    #[arg(long)]
    maildir: Option<PathBuf>,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    source: ImportSource,
    /// Channel for messages whose To names none [default: the first channel]
    #[arg(long)]
    channel: Option<String>,
}

#[derive(Args)]
struct StoreArgs {
    #[command(subcommand)]
    cmd: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy this store (-c FROM) into another (--to TO), redb or PostgreSQL
    /// either way: tickets with their ids, raw messages byte-exact, timelines,
    /// outbox, counters, secrets. Re-running finishes an interrupted copy;
    /// a target holding other data is refused. Stop the daemons first.
    Copy {
        #[command(flatten)]
        config: ConfigArg,
        /// The config file of the store to copy into
        #[arg(long = "to", value_name = "TO.toml")]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground
    Serve(ServeArgs),
    /// Validate the config and compile every template
    Check(ConfigArg),
    /// Create or upgrade the PostgreSQL schema (idempotent; safe while nodes run)
    Migrate(ConfigArg),
    /// Talk to a running daemon over its admin socket
    Ctl(CtlArgs),
    /// Load an existing mailbox into tickets (sends nothing; idempotent)
    Import(ImportArgs),
    /// Work on a whole store: `store copy` (one store into another)
    Store(StoreArgs),
    /// View and edit the workflows in the config file (comments and layout kept)
    Workflow(WorkflowArgs),
    /// Edit a pipeline's status trigger in the config file (comments and layout kept)
    Trigger(TriggerArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout
    #[command(hide = true)]
    Man,
}

#[derive(Args)]
struct WorkflowArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    cmd: postdesk::workflow_cli::Cmd,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["status", "enable", "disable"])))]
struct TriggerArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The pipeline's id
    pipeline: String,
    /// email_sent_to_customer or customer_replied
    trigger: String,
    /// The status the trigger moves a ticket to
    #[arg(long, value_name = "ID")]
    status: Option<String>,
    /// Turn the trigger on
    #[arg(long)]
    enable: bool,
    /// Turn the trigger off
    #[arg(long)]
    disable: bool,
}

#[derive(Args)]
struct CtlArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Admin socket path (instead of reading it from the config)
    #[arg(short = 's', long = "socket", global = true)]
    socket: Option<PathBuf>,
    /// Print the raw JSON response
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Version, uptime, counts
    Health,
    /// List tickets, newest first
    Tickets {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One ticket with its messages and timeline
    Ticket { id: u64 },
    /// Messages kept without a ticket
    Conversations {
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Validate and load the config file again
    Reload,
    /// Move a ticket to a status (runs workflows)
    SetStatus { id: u64, status: String },
    /// Email the ticket's contact as an agent (fires email_sent_to_customer)
    Reply {
        id: u64,
        /// The reply text
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// Read the reply text from a file (- for stdin)
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// The agent (user id) replying; default: the owner, else the first user
        #[arg(long)]
        user: Option<String>,
    },
    /// Set a ticket's owner (a user id)
    Assign { id: u64, owner: String },
    /// Counters and latency histograms
    Stats,
    /// Merge SOURCE into TARGET: messages and thread move, SOURCE is closed
    Merge { source: u64, target: u64 },
    /// One stored message by Message-ID (--json includes the raw bytes, base64)
    Message { message_id: String },
    /// Queued, sent and failed emails, newest first
    Outbox {
        /// queued | sent | failed
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// mimalloc instead of glibc's malloc: about 10 % less daemon CPU per
/// message (BENCHMARKS.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults keep freed memory mapped and committed: 256 sessions
/// finishing 60 KiB messages peaked at 71 MiB with them (glibc: 46 MiB).
/// Committing its arenas on demand and returning freed pages after 2 ms
/// (instead of 10) brings that to 41 MiB for about 4 % of the CPU saved.
///
/// Arenas take the commit option when they are reserved, and the first one
/// is reserved by the first allocation, before `main`: so this runs as an
/// ELF constructor, after mimalloc's own (priority 101) and before the
/// Rust runtime allocates.
extern "C" fn tune_allocator() {
    // Option numbers of mimalloc.h (v2, the version libmimalloc-sys builds).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: plain setters of mimalloc's global options; they take
    // integers, allocate nothing and touch no memory of ours.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 2);
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

fn main() -> ExitCode {
    #[cfg(not(target_os = "linux"))]
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(s) => serve(&s.config.path(), s.log_format.as_deref() == Some("json")),
        Command::Check(c) => check(&c.path()),
        Command::Migrate(c) => migrate(&c.path()),
        Command::Import(args) => import(args),
        Command::Store(StoreArgs {
            cmd: StoreCommand::Copy { config, to },
        }) => store_copy(&config.path(), &to),
        Command::Workflow(w) => postdesk::workflow_cli::run(&w.config.path(), w.cmd),
        Command::Trigger(t) => {
            use postdesk::workflow_cli::trigger::Change;
            let change = match t.status {
                Some(status) => Change::Status(status),
                None => Change::Enabled(t.enable),
            };
            postdesk::workflow_cli::run_trigger(&t.config.path(), &t.pipeline, &t.trigger, change)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "postdesk", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postdesk: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Ctl(args) => match run_ctl(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("postdesk: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} channels, {} pipelines, {} workflows)",
                path.display(),
                c.channels.len(),
                c.pipelines.len(),
                c.workflows.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{problems}");
            ExitCode::from(1)
        }
    }
}

fn migrate(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    let config::Storage::Postgres(pg) = &config.storage else {
        eprintln!(
            "postdesk: {}: [storage] engine is \"redb\", which needs no migration",
            path.display()
        );
        return ExitCode::from(EX_CONFIG as u8);
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    match runtime.block_on(postdesk::store::migrate(pg)) {
        Ok(m) if m.from == m.to => {
            println!("schema is at version {}: nothing to do", m.to);
            ExitCode::SUCCESS
        }
        Ok(m) => {
            println!("schema migrated from version {} to {}", m.from, m.to);
            ExitCode::SUCCESS
        }
        Err(e @ postdesk::store::StoreError::Refused(_)) => {
            eprintln!("postdesk: {e}");
            ExitCode::from(EX_CONFIG as u8)
        }
        Err(e) => {
            eprintln!("postdesk: {e}");
            ExitCode::from(69)
        }
    }
}

fn import(args: ImportArgs) -> ExitCode {
    let path = args.config.path();
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    let source = match (args.source.mbox, args.source.maildir) {
        (Some(m), _) => postdesk::import::Mailbox::Mbox(m),
        (None, Some(d)) => postdesk::import::Mailbox::Maildir(d),
        (None, None) => {
            eprintln!("postdesk: give --mbox FILE or --maildir DIR");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    match runtime.block_on(postdesk::import::run(config, source, args.channel)) {
        Ok(summary) => {
            println!("{summary}");
            if summary.failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("postdesk: import failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `postdesk store copy -c FROM --to TO`: one summary line on stdout;
/// 78 for a config problem or a store the copy refuses, 1 for a failure on
/// the way (running it again goes on from there).
fn store_copy(from: &std::path::Path, to: &std::path::Path) -> ExitCode {
    let load = |path: &std::path::Path| {
        config::load(path).map_err(|problems| {
            eprintln!("{problems}");
            ExitCode::from(EX_CONFIG as u8)
        })
    };
    let (from_config, to_config) = match (load(from), load(to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    match runtime.block_on(postdesk::store::copy(from_config, to_config, to)) {
        Ok(copied) => {
            for w in &copied.warnings {
                eprintln!("postdesk: warning: {w}");
            }
            println!("{copied}");
            ExitCode::SUCCESS
        }
        Err(e @ postdesk::store::CopyError::Refused(_)) => {
            eprintln!("postdesk: store copy: {e}");
            ExitCode::from(EX_CONFIG as u8)
        }
        Err(e) => {
            eprintln!(
                "postdesk: store copy failed: {e} (run the same copy again to go on from the \
                 last chunk it committed)"
            );
            ExitCode::from(1)
        }
    }
}

/// The async runtime: one worker per CPU but one, which the store writer
/// (a thread of its own, the busiest under load) keeps. On two CPUs that is
/// one worker: measured, a second one only added wake-ups between the two
/// (BENCHMARKS.md, "Runtime workers"). `TOKIO_WORKER_THREADS` overrides it.
fn runtime() -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cpus.saturating_sub(1).max(1));
    }
    match builder.enable_all().build() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("postdesk: cannot start the runtime: {e}");
            None
        }
    }
}

fn serve(path: &std::path::Path, json_logs: bool) -> ExitCode {
    telemetry::init(json_logs);
    // Two rustls crypto providers are in the tree; without a process default
    // rustls panics on the first TLS connection.
    postdesk::outbound::transport::install_crypto_provider();
    let config = match config::load(path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("postdesk: invalid config, not starting");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    runtime.block_on(async {
        let bound = match daemon::bind(config).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("postdesk: {e}");
                if e.is_config() {
                    return ExitCode::from(EX_CONFIG as u8);
                }
                // EX_UNAVAILABLE-ish: a port or the database could not be had.
                return ExitCode::from(69);
            }
        };
        let smtp: Vec<String> = bound.smtp_addrs.iter().map(ToString::to_string).collect();
        // One machine-readable line for scripts and tests (ports bound as 0).
        println!(
            "ready smtp={} admin={}",
            smtp.join(","),
            bound.admin_path.display()
        );
        match bound.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postdesk: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn run_ctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let socket = match args.socket {
        Some(s) => s,
        None => {
            let path = args.config.path();
            match config::load(&path) {
                Ok(c) => c.server.admin_socket,
                Err(problems) => {
                    eprintln!("{problems}");
                    anyhow::bail!(
                        "cannot read the admin socket path from {} (use -s SOCKET)",
                        path.display()
                    );
                }
            }
        }
    };
    let req = match args.cmd {
        CtlCommand::Health => Request::Health {},
        CtlCommand::Tickets {
            status,
            pipeline,
            limit,
        } => Request::Tickets {
            status,
            pipeline,
            limit,
        },
        CtlCommand::Ticket { id } => Request::Ticket { id: TicketId(id) },
        CtlCommand::Conversations { limit } => Request::Conversations { limit },
        CtlCommand::Reload => Request::Reload {},
        CtlCommand::SetStatus { id, status } => Request::SetStatus {
            id: TicketId(id),
            status,
        },
        CtlCommand::Reply {
            id,
            body,
            body_file,
            user,
        } => {
            let body = match (body, body_file) {
                (Some(b), _) => b,
                (None, Some(path)) if path.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin())?
                }
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
                (None, None) => {
                    anyhow::bail!("give the reply text with --body TEXT or --body-file FILE")
                }
            };
            Request::Reply {
                id: TicketId(id),
                body,
                user,
            }
        }
        CtlCommand::Assign { id, owner } => Request::Assign {
            id: TicketId(id),
            owner,
        },
        CtlCommand::Stats => Request::Stats {},
        CtlCommand::Merge { source, target } => Request::Merge {
            source: TicketId(source),
            target: TicketId(target),
        },
        CtlCommand::Message { message_id } => Request::Message { message_id },
        CtlCommand::Outbox { state, limit } => Request::Outbox { state, limit },
    };
    let name = req.name();
    let resp = ctl::request(&socket, &req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(if resp.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match (resp.ok, resp.data, resp.error) {
        (true, Some(data), _) => {
            print!("{}", ctl::render(name, &data));
            Ok(ExitCode::SUCCESS)
        }
        (_, _, Some(err)) => {
            eprintln!("postdesk: {} ({})", err.message, err.code);
            for p in err.problems.unwrap_or_default() {
                eprintln!("{p}");
            }
            Ok(ExitCode::from(1))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
