//! Configuration: the one TOML file, parsed once into a validated, typed
//! [`Config`] that the rest of the program trusts.
//!
//! SHELL at the edge (reads the file and the template folder), PURE inside:
//! `load` reads and parses the file (with spans) and reads each section;
//! `raw` holds the serde structs that mirror the file and finds every
//! unknown key; `validate` turns them into [`Config`] (defaults, paths,
//! references) and `templates` checks and compiles the template folder — all
//! collecting *every* problem as a [`Problem`] (`FILE:LINE:COL: message`).
//! Nothing outside this module sees a raw struct, an unchecked reference or a
//! relative path.

use std::net::SocketAddr;
use std::path::PathBuf;

mod live;
mod load;
mod problem;
mod raw;
mod templates;
mod validate;
pub use crate::mail::{Branding, Source};
pub use live::{summary, ConfigCell};
pub use load::load;
pub use problem::{Problem, Problems};

/// The validated configuration. Every id referenced anywhere (channel →
/// pipeline, statuses, team members, workflow templates) is known to exist;
/// every path is absolute (resolved against the config file's directory).
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this was loaded from (absolute).
    pub path: PathBuf,
    pub server: Server,
    pub outbound: Outbound,
    pub branding: Branding,
    pub limits: Limits,
    pub security: Security,
    pub storage: Storage,
    /// `[business_hours]`, if the file has it (SPEC §9).
    pub business_hours: Option<crate::business_hours::BusinessHours>,
    pub users: Vec<User>,
    pub teams: Vec<Team>,
    pub channels: Vec<Channel>,
    pub pipelines: Vec<Pipeline>,
    pub workflows: Vec<Workflow>,
    /// The template folder (`server.templates`), compiled and checked: every
    /// template a workflow names renders, and names no unknown variable.
    pub templates: std::sync::Arc<crate::mail::Templates>,
    /// What every node of a cluster must share, hashed (see
    /// `load::fingerprint`): `health` warns when live nodes differ.
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// HELO name and Message-ID domain.
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    /// Bytes; "25MiB" in the file.
    pub max_message_size: u64,
    pub max_sessions: usize,
    /// Concurrent sessions allowed from one client IP (extension; default 20).
    pub max_sessions_per_client: usize,
    pub data_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub templates: PathBuf,
    /// Bytes of database pages kept in memory (extension; default 8MiB).
    pub store_cache: u64,
}

#[derive(Debug, Clone)]
pub struct Outbound {
    pub transport: Transport,
    /// The sender of automatic emails, parsed at load (written e.g.
    /// "Acme Support <support@acme.example>").
    pub from: lettre::message::Mailbox,
    /// `subject_tag`, compiled at load (the pattern has `{id}`, e.g.
    /// "[#{id}]").
    pub subject_tag: crate::ingest::thread::SubjectTag,
}

#[derive(Debug, Clone)]
pub enum Transport {
    File {
        dir: PathBuf,
    },
    Smtp {
        url: String,
        username: Option<String>,
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub auto_replies_per_contact_per_hour: u32,
}

/// `[security]` (SPEC §12).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The authserv-id of the operator's own MTA: only its
    /// `Authentication-Results` are read. `None`: none are.
    pub trusted_authserv_id: Option<String>,
    /// A message whose authentication failed joins an existing ticket only
    /// by a signed reply address or a Message-ID we sent.
    pub require_auth_to_join: bool,
}

/// `[storage]` (SPEC §8): which engine keeps the tickets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Storage {
    /// One node: everything under `server.data_dir`.
    #[default]
    Redb,
    /// Several nodes on one PostgreSQL.
    Postgres(Postgres),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postgres {
    /// The file holding the connection URL (read at start, never logged).
    pub url_file: PathBuf,
    /// This node's name among the nodes on the database.
    pub node_id: String,
    /// Connections for reads, the outbox and the heartbeat.
    pub pool_size: usize,
    /// Writer connections, each committing its own batches; `None`: as
    /// many as this host has CPUs, 2 to 8 (see [`Postgres::writers`]).
    pub writers: Option<usize>,
}

impl Postgres {
    /// The number of writer connections. More writers commit more, smaller
    /// batches: past the database's cores that only costs CPU (on one
    /// 2-core box with PostgreSQL beside it, 2 writers take 20 % more mail
    /// than 8: BENCHMARKS.md); a database across a network, whose round
    /// trips a writer waits for, wants more.
    pub fn writers(&self) -> usize {
        self.writers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, std::num::NonZeroUsize::get)
                .clamp(2, 8)
        })
    }
}

impl Storage {
    pub fn engine(&self) -> &'static str {
        match self {
            Storage::Redb => "redb",
            Storage::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    /// Lower-cased.
    pub email: String,
}

#[derive(Debug, Clone)]
pub struct Team {
    pub id: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    /// Lower-cased, as written (`support@acme.example`).
    pub addresses: Vec<String>,
    pub pipeline: String,
    pub source: Source,
    pub automation: bool,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub id: String,
    pub name: String,
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyToClosed {
    Reopen,
    NewTicket,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub enabled: bool,
    /// A status id of the pipeline; `None` only when the trigger is disabled
    /// and the file gave none.
    pub set_status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Triggers {
    pub email_sent_to_customer: Trigger,
    pub customer_replied: Trigger,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub statuses: Vec<Status>,
    pub initial_status: String,
    pub reply_to_closed: ReplyToClosed,
    pub triggers: Triggers,
}

#[derive(Debug, Clone)]
pub struct Enroll {
    pub status: Option<String>,
    pub source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    User(String),
    Team(String),
    Owner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// A template name (templates/NAME.subject.hbs, NAME.text.hbs).
    SendEmail(String),
    Notify(NotifyTarget),
    /// A status id of the workflow's pipeline: moves the ticket like the
    /// admin command, after every workflow of the status it entered has
    /// run (SPEC §9).
    SetStatus(String),
}

#[derive(Debug, Clone)]
pub struct Action {
    pub kind: ActionKind,
    pub comment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub id: String,
    pub pipeline: String,
    pub enroll: Enroll,
    pub reenroll: bool,
    /// `enabled = false`: runs nothing (SPEC §10); kept in the file.
    pub enabled: bool,
    pub actions: Vec<Action>,
}

/// Where a recipient address points: a channel, and the ticket id of a plus
/// address (`support+42@acme.example`) if it had one.
#[derive(Debug, Clone)]
pub struct Recipient<'a> {
    pub channel: &'a Channel,
    pub plus: Option<crate::ingest::TicketId>,
    /// The key of a signed plus address (`support+42.<key>@…`), as
    /// written; checked by [`crate::ingest::trust`], not here.
    pub key: Option<String>,
}

impl Config {
    pub fn pipeline(&self, id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// The configured user (agent) whose address this is, if any.
    pub fn agent_by_email(&self, email: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    /// Whether `addr` is one of our channel addresses (plus forms included).
    pub fn is_channel_address(&self, addr: &str) -> bool {
        self.recipient(addr).is_some()
    }

    /// Resolves an envelope recipient to a channel. Accepts the exact address
    /// and `local+<anything>@domain`; only `<id>` or `<id>.<key>` (a positive
    /// number, then an optional key) yields `plus`. Comparison is
    /// case-insensitive.
    pub fn recipient(&self, addr: &str) -> Option<Recipient<'_>> {
        let addr = addr.trim().to_ascii_lowercase();
        let (local, domain) = addr.rsplit_once('@')?;
        let (base_local, tag) = match local.split_once('+') {
            Some((base, tag)) => (base, Some(tag)),
            None => (local, None),
        };
        let base = format!("{base_local}@{domain}");
        let channel = self.channels.iter().find(|c| c.addresses.contains(&base))?;
        let (id, key) = match tag {
            Some(t) => match t.split_once('.') {
                Some((id, key)) => (Some(id), Some(key)),
                None => (Some(t), None),
            },
            None => (None, None),
        };
        let plus = id
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|id| *id > 0)
            .map(crate::ingest::TicketId);
        let key = plus.and(key).map(str::to_string);
        Some(Recipient { channel, plus, key })
    }
}

impl Pipeline {
    pub fn status(&self, id: &str) -> Option<&Status> {
        self.statuses.iter().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests;

/// This machine's name, the default `node_id`, with anything a node name
/// cannot hold replaced by `-`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let name: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "node".to_string()
    } else {
        name
    }
}
