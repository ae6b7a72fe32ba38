//! `[server]`, `[outbound]`, `[branding]` and `[limits]`: the tables, their
//! defaults, and the checks on their values.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use lettre::message::Mailbox;
use toml::Spanned;

use super::{io_reason, lowercase_first, parse_size, Read, Section, Validator};
use crate::config::raw::{
    RawBranding, RawLimits, RawOutbound, RawSecurity, RawServer, RawSize, RawStorage, Str,
};
use crate::config::{Branding, Limits, Outbound, Postgres, Security, Server, Storage, Transport};
use crate::ingest::thread::SubjectTag;

const DEFAULT_HOSTNAME: &str = "localhost";
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2525));
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
/// redb's page cache. Its own default (1 GiB) would be most of the daemon's
/// memory; hot pages fit in far less, and the OS page cache keeps the rest
/// of the file warm (BENCHMARKS.md: no throughput difference between 8 and
/// 32 MiB, up to a million tickets).
const DEFAULT_STORE_CACHE: u64 = 8 * 1024 * 1024;
const DEFAULT_MAX_SESSIONS: usize = 256;
const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 20;
const DEFAULT_SUBJECT_TAG: &str = "[#{id}]";
const DEFAULT_AUTO_REPLIES_PER_HOUR: u32 = 5;
const DEFAULT_POOL_SIZE: usize = 8;

/// `sun_path` is 108 bytes on Linux, NUL included.
const MAX_SOCKET_PATH: usize = 107;

fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl Validator<'_, '_> {
    fn size(&mut self, value: &Spanned<RawSize>, key: &str) -> Option<u64> {
        let parsed = match value.get_ref() {
            RawSize::Bytes(n) => {
                u64::try_from(*n).map_err(|_| format!("{key} must not be negative"))
            }
            RawSize::Text(text) => parse_size(text),
        };
        match parsed {
            Ok(0) => {
                self.cx
                    .at(value.span(), format!("{key} must be greater than 0"));
                None
            }
            Ok(n) => Some(n),
            Err(message) => {
                self.cx.at(value.span(), message);
                None
            }
        }
    }

    fn positive(&mut self, value: Option<&Spanned<usize>>, key: &str, default: usize) -> usize {
        match value {
            Some(v) if *v.get_ref() == 0 => {
                self.cx.at(v.span(), format!("{key} must be at least 1"));
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    pub(super) fn server(&mut self, section: Section<RawServer>) -> (Server, Option<Str>) {
        let (raw, span) = match section {
            Section::Read(Read { value, span, .. }) => (value, Some(span)),
            Section::Absent | Section::Broken => (RawServer::default(), None),
        };

        let hostname = match &raw.hostname {
            Some(h) if !is_hostname(h.get_ref()) => {
                self.cx.at(
                    h.span(),
                    format!(
                        "invalid hostname \"{}\": expected a domain name like \"desk.acme.example\"",
                        h.get_ref()
                    ),
                );
                h.get_ref().clone()
            }
            Some(h) => h.get_ref().clone(),
            None => DEFAULT_HOSTNAME.to_owned(),
        };

        let mut listen = Vec::new();
        match &raw.listen {
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.cx
                        .at(list.span(), "listen must name at least one address");
                }
                for addr in list.get_ref() {
                    match addr.get_ref().trim().parse::<SocketAddr>() {
                        Ok(a) if listen.contains(&a) => {
                            self.cx.at(
                                addr.span(),
                                format!("listen address \"{}\" is listed twice", addr.get_ref()),
                            );
                        }
                        Ok(a) => listen.push(a),
                        Err(_) => self.cx.at(
                            addr.span(),
                            format!(
                                "invalid listen address \"{}\": expected IP:PORT, e.g. \"127.0.0.1:2525\" or \"[::]:25\"",
                                addr.get_ref()
                            ),
                        ),
                    }
                }
            }
            None => listen.push(DEFAULT_LISTEN),
        }

        let max_message_size = raw
            .max_message_size
            .as_ref()
            .and_then(|s| self.size(s, "max_message_size"))
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        let max_sessions = self.positive(
            raw.max_sessions.as_ref(),
            "max_sessions",
            DEFAULT_MAX_SESSIONS,
        );
        let max_sessions_per_client = self.positive(
            raw.max_sessions_per_client.as_ref(),
            "max_sessions_per_client",
            DEFAULT_MAX_SESSIONS_PER_CLIENT,
        );

        let data_dir = raw
            .data_dir
            .as_ref()
            .and_then(|d| self.path(d, "data_dir"))
            .unwrap_or_else(|| self.resolve("data"));
        let admin_socket = raw
            .admin_socket
            .as_ref()
            .and_then(|s| self.path(s, "admin_socket"))
            .unwrap_or_else(|| data_dir.join("admin.sock"));
        let socket_len = admin_socket.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            let where_ = raw.admin_socket.as_ref().map(|s| s.span()).or(span);
            self.cx.at_opt(
                where_,
                format!(
                    "admin socket path \"{}\" is too long for a unix socket ({socket_len} bytes, \
                     at most {MAX_SOCKET_PATH}): set a shorter admin_socket",
                    admin_socket.display()
                ),
            );
        }
        let templates = raw
            .templates
            .as_ref()
            .and_then(|t| self.path(t, "templates"))
            .unwrap_or_else(|| self.resolve("templates"));

        let store_cache = raw
            .store_cache
            .as_ref()
            .and_then(|s| self.size(s, "store_cache"))
            .unwrap_or(DEFAULT_STORE_CACHE);

        let server = Server {
            hostname,
            listen,
            max_message_size,
            max_sessions,
            max_sessions_per_client,
            data_dir,
            admin_socket,
            templates,
            store_cache,
        };
        (server, raw.templates)
    }

    pub(super) fn outbound(&mut self, section: Section<RawOutbound>, data_dir: &Path) -> Outbound {
        let default_dir = data_dir.join("sent");
        let Read {
            value: raw,
            span,
            broken,
        } = match section {
            Section::Read(read) => read,
            Section::Absent => {
                self.cx.at(
                    0..0,
                    "missing [outbound] section: outbound.from is required (the sender of \
                     automatic emails, e.g. \"Acme Support <support@acme.example>\")",
                );
                return placeholder_outbound(default_dir);
            }
            Section::Broken => return placeholder_outbound(default_dir),
        };

        let from = match &raw.from {
            Some(from) => match from.get_ref().trim().parse::<Mailbox>() {
                Ok(mailbox) => mailbox,
                Err(e) => {
                    self.cx.at(
                        from.span(),
                        format!(
                            "invalid from address \"{}\" ({}): expected \"Name <local@domain>\" \
                             or \"local@domain\"",
                            from.get_ref(),
                            lowercase_first(&e.to_string())
                        ),
                    );
                    placeholder_from()
                }
            },
            None if broken.contains("from") => placeholder_from(),
            None => {
                self.cx.at(
                    span.clone(),
                    "missing key \"from\" in [outbound] (the sender of automatic emails, \
                     e.g. \"Acme Support <support@acme.example>\")",
                );
                placeholder_from()
            }
        };

        let subject_tag = match &raw.subject_tag {
            Some(tag) => {
                if !tag.get_ref().contains("{id}") {
                    self.cx.at(
                        tag.span(),
                        format!(
                            "subject_tag \"{}\" must contain {{id}} (the ticket number), e.g. \"[#{{id}}]\"",
                            tag.get_ref()
                        ),
                    );
                }
                SubjectTag::new(tag.get_ref())
            }
            None => SubjectTag::new(DEFAULT_SUBJECT_TAG),
        };

        let kind = match &raw.transport {
            _ if broken.contains("transport") => None,
            None => Some(TransportKind::File),
            Some(t) => match t.get_ref().as_str() {
                "file" => Some(TransportKind::File),
                "smtp" => Some(TransportKind::Smtp),
                other => {
                    self.cx.at(
                        t.span(),
                        format!("unknown transport \"{other}\" (known: file, smtp)"),
                    );
                    None
                }
            },
        };
        let transport = match kind {
            None => Transport::File { dir: default_dir },
            Some(TransportKind::File) => {
                for (key, value) in [
                    ("url", &raw.url),
                    ("username", &raw.username),
                    ("password_file", &raw.password_file),
                ] {
                    if let Some(value) = value {
                        self.cx.at(
                            value.span(),
                            format!(
                                "{key} is only used by the smtp transport (transport is \"file\")"
                            ),
                        );
                    }
                }
                let dir = raw
                    .dir
                    .as_ref()
                    .and_then(|d| self.path(d, "dir"))
                    .unwrap_or(default_dir);
                Transport::File { dir }
            }
            Some(TransportKind::Smtp) => {
                if let Some(dir) = &raw.dir {
                    self.cx.at(
                        dir.span(),
                        "dir is only used by the file transport (transport is \"smtp\")",
                    );
                }
                let url = match &raw.url {
                    Some(url) => {
                        self.smtp_url(url);
                        url.get_ref().clone()
                    }
                    None if broken.contains("url") => String::new(),
                    None => {
                        let at = raw.transport.as_ref().map_or(span.clone(), |t| t.span());
                        self.cx.at(
                            at,
                            "transport \"smtp\" needs url, e.g. \
                             url = \"smtp://relay.acme.example:587?tls=required\"",
                        );
                        String::new()
                    }
                };
                let password_file = raw.password_file.as_ref().and_then(|p| {
                    let path = self.path(p, "password_file")?;
                    match std::fs::metadata(&path) {
                        Ok(meta) if meta.is_file() => {}
                        Ok(_) => self.cx.at(
                            p.span(),
                            format!("password_file \"{}\" is not a file", p.get_ref()),
                        ),
                        Err(e) => self.cx.at(
                            p.span(),
                            format!(
                                "cannot read password_file \"{}\": {}",
                                p.get_ref(),
                                lowercase_first(&io_reason(&e))
                            ),
                        ),
                    }
                    Some(path)
                });
                match (&raw.username, &raw.password_file) {
                    (Some(user), None) => self.cx.at(
                        user.span(),
                        "username needs password_file (a file holding the password)",
                    ),
                    (None, Some(file)) => self.cx.at(file.span(), "password_file needs username"),
                    _ => {}
                }
                Transport::Smtp {
                    url,
                    username: raw.username.as_ref().map(|u| u.get_ref().clone()),
                    password_file,
                }
            }
        };

        Outbound {
            transport,
            from,
            subject_tag,
        }
    }

    /// lettre URL conventions: `smtp://host[:port][?tls=required]` or
    /// `smtps://host[:port]`. Credentials never go in the URL.
    fn smtp_url(&mut self, url: &Str) {
        let text = url.get_ref();
        let Some(rest) = text
            .strip_prefix("smtp://")
            .or_else(|| text.strip_prefix("smtps://"))
        else {
            self.cx.at(
                url.span(),
                format!(
                    "invalid url \"{text}\": expected smtp://HOST[:PORT][?tls=required] or smtps://HOST[:PORT]"
                ),
            );
            return;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('@') {
            self.cx.at(
                url.span(),
                "credentials must not be written in url: set username and password_file",
            );
        } else if authority.is_empty() || authority.starts_with(':') {
            self.cx
                .at(url.span(), format!("invalid url \"{text}\": no host"));
        }
    }
}

#[derive(Clone, Copy)]
enum TransportKind {
    File,
    Smtp,
}

fn placeholder_outbound(dir: PathBuf) -> Outbound {
    Outbound {
        transport: Transport::File { dir },
        from: placeholder_from(),
        subject_tag: SubjectTag::new(DEFAULT_SUBJECT_TAG),
    }
}

/// The `from` of a config that did not load (a problem was reported: it
/// is never used).
fn placeholder_from() -> Mailbox {
    Mailbox::new(None, lettre::Address::new_dangerous("postdesk", "invalid"))
}

pub(super) fn branding(section: Section<RawBranding>) -> Branding {
    let raw = match section {
        Section::Read(read) => read.value,
        Section::Absent | Section::Broken => RawBranding::default(),
    };
    Branding {
        enabled: raw.enabled.unwrap_or(true),
        text: raw.text,
    }
}

pub(super) fn limits(section: Section<RawLimits>) -> Limits {
    let raw = match section {
        Section::Read(read) => read.value,
        Section::Absent | Section::Broken => RawLimits::default(),
    };
    Limits {
        auto_replies_per_contact_per_hour: raw
            .auto_replies_per_contact_per_hour
            .unwrap_or(DEFAULT_AUTO_REPLIES_PER_HOUR),
    }
}

impl Validator<'_, '_> {
    /// `[security]` (SPEC §12): the authserv-id of the operator's own MTA,
    /// as it writes it in `Authentication-Results`.
    pub(super) fn security(&mut self, section: Section<RawSecurity>) -> Security {
        let raw = match section {
            Section::Read(read) => read.value,
            Section::Absent | Section::Broken => RawSecurity::default(),
        };
        let trusted_authserv_id = raw.trusted_authserv_id.and_then(|id| {
            let value = id.get_ref().trim();
            let token = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b) || b == b'.');
            if token {
                Some(value.to_string())
            } else {
                self.cx.at(
                    id.span(),
                    format!(
                        "trusted_authserv_id \"{value}\" is not an authserv-id: write the name \
                         your MTA puts first in its Authentication-Results header, e.g. \"mx.acme.example\""
                    ),
                );
                None
            }
        });
        let require = raw.require_auth_to_join;
        if let Some(r) = &require {
            if *r.get_ref() && trusted_authserv_id.is_none() {
                self.cx.at(
                    r.span(),
                    "require_auth_to_join needs trusted_authserv_id (whose results to trust)",
                );
            }
        }
        Security {
            trusted_authserv_id,
            require_auth_to_join: require.is_some_and(|r| *r.get_ref()),
        }
    }
}

impl Validator<'_, '_> {
    /// `[storage]` (SPEC §8): the engine, and for PostgreSQL where its URL
    /// is (a file: never inline) and this node's name.
    pub(super) fn storage(&mut self, section: Section<RawStorage>) -> Storage {
        let raw = match section {
            Section::Read(read) => read.value,
            Section::Absent | Section::Broken => RawStorage::default(),
        };
        let engine = raw.engine.as_ref().map_or("redb", |e| e.get_ref().as_str());
        match engine {
            "redb" => {
                for (key, value) in [("url_file", &raw.url_file), ("node_id", &raw.node_id)] {
                    if let Some(v) = value {
                        self.cx
                            .at(v.span(), format!("{key} needs engine = \"postgres\""));
                    }
                }
                for (key, value) in [("pool_size", &raw.pool_size), ("writers", &raw.writers)] {
                    if let Some(v) = value {
                        self.cx
                            .at(v.span(), format!("{key} needs engine = \"postgres\""));
                    }
                }
                Storage::Redb
            }
            "postgres" => {
                let url_file = match &raw.url_file {
                    Some(p) => self.path(p, "url_file").unwrap_or_default(),
                    None => {
                        self.cx.at_opt(
                            raw.engine.as_ref().map(|e| e.span()),
                            "engine \"postgres\" needs url_file (a file holding the connection \
                             URL, e.g. /etc/postdesk/pg.url; never written inline)",
                        );
                        PathBuf::new()
                    }
                };
                let node_id = match &raw.node_id {
                    Some(id) if is_node_id(id.get_ref()) => id.get_ref().clone(),
                    Some(id) => {
                        self.cx.at(
                            id.span(),
                            format!(
                                "node_id \"{}\" is not a node name: 1 to 64 letters, digits, \
                                 '.', '-' or '_', e.g. \"mx1\"",
                                id.get_ref()
                            ),
                        );
                        String::new()
                    }
                    None => crate::config::host_name(),
                };
                let pool_size =
                    self.positive(raw.pool_size.as_ref(), "pool_size", DEFAULT_POOL_SIZE);
                let writers = raw
                    .writers
                    .as_ref()
                    .map(|v| self.positive(Some(v), "writers", 2));
                Storage::Postgres(Postgres {
                    url_file,
                    node_id,
                    pool_size,
                    writers,
                })
            }
            other => {
                if let Some(e) = &raw.engine {
                    self.cx.at(
                        e.span(),
                        format!("unknown engine \"{other}\" (known: redb, postgres)"),
                    );
                }
                Storage::Redb
            }
        }
    }
}

fn is_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
