//! Transports: where finished bytes go.
//!
//! SHELL. [`Transport::File`] writes one `.eml` per email into a folder
//! (the default: nothing leaves the machine); [`Transport::Smtp`] hands the
//! email to a relay with lettre's async SMTP client connection, on a TCP
//! connection of ours (see [`SmtpRelay`]). Both take the bytes
//! exactly as `compose` made them and an explicit envelope; neither retries
//! — the outbox worker does, guided by [`SendError::is_transient`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
// lettre deprecates naming its network stream ("not meant to be made
// public"), but it is the only way to put lettre's TLS on a socket of ours
// for `smtps://` (see `SmtpRelay`).
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, AsyncSmtpTransport, Tokio1Executor};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::config;

use crate::wording::{io_reason, lowercase_first};

/// How long connecting to the relay may take, and the base of the deadline
/// for a whole SMTP transaction (see [`SmtpRelay`]). Past it the attempt
/// counts as failed — and is retried.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The transaction deadline grows by one second per this many bytes, so that
/// a large message on a slow link is not cut off (25 MiB: about 7 minutes).
const BYTES_PER_SECOND: u64 = 64 * 1024;

/// Whether a failed send is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// Connection refused or lost, a timeout, a TLS failure, a 4xx reply,
    /// a full disk: retry with backoff.
    Transient,
    /// A 5xx reply, or an email or configuration that can never be sent:
    /// mark it failed.
    Permanent,
}

/// A send that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub kind: SendErrorKind,
    /// A lowercase phrase, e.g. `sending through relay.acme.example:587:
    /// permanent error (550): 5.1.1 no such user`.
    pub message: String,
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        self.kind == SendErrorKind::Transient
    }

    fn transient(message: String) -> SendError {
        SendError {
            kind: SendErrorKind::Transient,
            message,
        }
    }

    fn permanent(message: String) -> SendError {
        SendError {
            kind: SendErrorKind::Permanent,
            message,
        }
    }
}

/// Installs rustls's *ring* crypto provider as the process default, unless
/// one is installed already. Call it once at start-up, before any TLS: rustls
/// panics when it must pick a default itself and more than one provider is
/// compiled in.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built transport, ready to send; cheap to share (`Arc`) between tasks.
#[derive(Debug)]
pub enum Transport {
    /// One `<Message-ID>.eml` per email in `dir`, written atomically.
    File {
        dir: PathBuf,
    },
    Smtp(SmtpRelay),
}

/// An SMTP relay, spoken to with lettre's SMTP client connection (one per
/// email, or one per [`Link`]).
///
/// The TCP connection is ours (lettre's transport offers no way to set
/// `TCP_NODELAY`): lettre writes a message's data and its final `.` in two
/// writes, and with Nagle's algorithm on, the `.` waited for the relay's
/// delayed ACK — about 40 ms per email, which capped sending near 200
/// emails a second. TLS (`smtps://`, STARTTLS) is still lettre's.
///
/// lettre applies its timeout to connecting only; a relay that accepts and
/// then goes silent would hold a send forever. So each send also runs under
/// a deadline: the timeout plus one second per 64 KiB of message.
pub struct SmtpRelay {
    /// The host to connect to (an IPv6 address without brackets).
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// `host:port` from the URL, for messages (never credentials).
    server: String,
    timeout: Duration,
}

/// How the connection to the relay is secured, by lettre's URL conventions:
/// `smtp://` plain, `smtp://…?tls=opportunistic` or `?tls=required`
/// STARTTLS, `smtps://` TLS from the first byte.
enum Security {
    Plain,
    Opportunistic(TlsParameters),
    Required(TlsParameters),
    Implicit(TlsParameters),
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let security = match self.security {
            Security::Plain => "plain",
            Security::Opportunistic(_) => "starttls if offered",
            Security::Required(_) => "starttls",
            Security::Implicit(_) => "tls",
        };
        f.debug_struct("SmtpRelay")
            .field("server", &self.server)
            .field("security", &security)
            .field("hello", &self.hello)
            .field("credentials", &self.credentials.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Transport {
    /// Builds the transport `outbound` describes, greeting an SMTP relay
    /// with lettre's default name (this machine's hostname) unless the URL
    /// names one. See [`Transport::from_config_with_hello`].
    pub fn from_config(outbound: &config::Transport) -> Result<Transport, SendError> {
        Transport::from_config_with_hello(outbound, None)
    }

    /// Builds the transport `outbound` describes. `hello_name` (e.g.
    /// `server.hostname`) is the EHLO name for an SMTP relay. Reads the
    /// `password_file` now: a later change to it needs a reload. Errors are
    /// [`SendErrorKind::Permanent`]: they are configuration problems.
    pub fn from_config_with_hello(
        outbound: &config::Transport,
        hello_name: Option<&str>,
    ) -> Result<Transport, SendError> {
        match outbound {
            config::Transport::File { dir } => Ok(Transport::File { dir: dir.clone() }),
            config::Transport::Smtp {
                url,
                username,
                password_file,
            } => {
                let credentials = match (username, password_file) {
                    (Some(user), Some(file)) => {
                        let password = std::fs::read_to_string(file).map_err(|e| {
                            SendError::permanent(format!(
                                "cannot read password_file \"{}\": {}",
                                file.display(),
                                lowercase_first(&io_reason(&e))
                            ))
                        })?;
                        Some(Credentials::new(user.clone(), password.trim().to_owned()))
                    }
                    _ => None,
                };
                SmtpRelay::new(url, credentials, hello_name, SMTP_TIMEOUT).map(Transport::Smtp)
            }
        }
    }

    /// Sends `raw` (a complete RFC 5322 message) from `mail_from` (empty:
    /// the null sender `<>`) to every address in `rcpt`, on a connection of
    /// its own.
    ///
    /// `Ok` means the relay accepted the message (`250` after the data), or
    /// the file is durably in place.
    #[cfg(test)]
    pub async fn send(
        &self,
        mail_from: &str,
        rcpt: &[String],
        raw: &[u8],
    ) -> Result<(), SendError> {
        let mut link = Link::default();
        let result = self.send_on(&mut link, mail_from, rcpt, raw).await;
        link.close().await;
        result
    }

    /// [`Transport::send`] on `link`: a relay connection it holds from an
    /// earlier send is used again (see [`Link`]).
    pub async fn send_on(
        &self,
        link: &mut Link,
        mail_from: &str,
        rcpt: &[String],
        raw: &[u8],
    ) -> Result<(), SendError> {
        match self {
            Transport::File { dir } => {
                let dir = dir.clone();
                let raw = raw.to_vec();
                tokio::task::spawn_blocking(move || write_eml(&dir, &raw))
                    .await
                    .map_err(|e| SendError::transient(format!("writing the email file: {e}")))?
                    .map(drop)
            }
            Transport::Smtp(relay) => relay.send(link, mail_from, rcpt, raw).await,
        }
    }
}

/// An SMTP connection to the relay kept from one email to the next (the
/// outbox worker keeps its lanes' links while mail keeps coming), so that a
/// burst of emails does not pay connect, greeting, EHLO, (TLS, AUTH) and
/// QUIT for each one.
///
/// A connection is used again only after its last email was accepted, and
/// for at most [`SENDS_PER_CONNECTION`] emails; after any error it is
/// dropped. No NOOP is spent on checking it first (a round trip per email):
/// the next email's MAIL FROM is the check. If the relay closed the
/// connection meanwhile (idle, or served enough) — MAIL gets no answer
/// within [`KEPT_WAIT`], the connection fails, or the answer is `421` —
/// nothing of that email was accepted, so it is sent again, at once, on a
/// new connection. [`Link::close`] says QUIT.
#[derive(Default)]
pub struct Link {
    conn: Option<AsyncSmtpConnection>,
    /// Emails sent on `conn`.
    sent: u32,
}

/// The most emails sent on one relay connection (relays limit it too:
/// Postfix's `smtpd` does not by default, Exim at 1000, others lower).
const SENDS_PER_CONNECTION: u32 = 100;

impl Link {
    /// Says QUIT on the connection, if there is one (without waiting long
    /// for the answer: every email on it was already accepted).
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            quit(conn).await;
        }
        self.sent = 0;
    }

    /// The held connection if it may carry another email.
    async fn take(&mut self) -> Option<AsyncSmtpConnection> {
        let conn = self.conn.take()?;
        if self.sent < SENDS_PER_CONNECTION && !conn.has_broken() {
            return Some(conn);
        }
        quit(conn).await;
        self.sent = 0;
        None
    }
}

/// How long a kept connection may take to answer its first command (its
/// MAIL FROM) before it is taken for dead (at most a third of the relay's
/// timeout), and how long a QUIT is waited for.
const KEPT_WAIT: Duration = Duration::from_secs(5);

/// Says QUIT and closes, without waiting long for the answer (whatever was
/// sent on the connection is settled already).
async fn quit(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(KEPT_WAIT, conn.abort()).await;
}

/// How one email went on one connection.
enum Attempt {
    /// The relay accepted it (`250` after the data).
    Accepted,
    /// It failed: refused by the relay, or the connection broke.
    Failed(SendError),
    /// A kept connection was found closed at its MAIL FROM: nothing was
    /// accepted, the email may go at once on a new connection.
    Stale,
}

impl SmtpRelay {
    fn new(
        url: &str,
        credentials: Option<Credentials>,
        hello_name: Option<&str>,
        timeout: Duration,
    ) -> Result<SmtpRelay, SendError> {
        let invalid =
            |why: String| SendError::permanent(format!("invalid smtp url \"{url}\": {why}"));
        // lettre's parser judges the URL as it always has (and words the
        // error); the parts are then read off it here.
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| invalid(lowercase_first(&e.to_string())))?;
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let (Some(host), Some(tls_name)) = (parsed.host(), parsed.host_str()) else {
            return Err(invalid("no host".into()));
        };
        let host = match host {
            url::Host::Domain(name) => name.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let tls = || {
            TlsParameters::new(tls_name.to_owned())
                .map_err(|e| invalid(lowercase_first(&e.to_string())))
        };
        let query = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (parsed.scheme(), query.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::Required(tls()?), 587),
            ("smtp", Some("opportunistic")) => (Security::Opportunistic(tls()?), 587),
            ("smtps", _) => (Security::Implicit(tls()?), 465),
            (scheme, tls) => {
                return Err(invalid(format!(
                    "unknown scheme \"{scheme}\" or tls parameter {tls:?}"
                )))
            }
        };
        if parsed.password().is_some() {
            return Err(invalid(
                "credentials must not be written in url: set username and password_file".into(),
            ));
        }
        // A name in the URL's path (lettre's convention) wins.
        let in_path = parsed.path().trim_matches('/');
        let hello = if !in_path.is_empty() {
            ClientId::Domain(in_path.to_owned())
        } else if let Some(name) = hello_name {
            ClientId::Domain(name.to_owned())
        } else {
            ClientId::default()
        };
        Ok(SmtpRelay {
            host,
            port: parsed.port().unwrap_or(default_port),
            security,
            hello,
            credentials,
            server: server_of(url),
            timeout,
        })
    }

    async fn send(
        &self,
        link: &mut Link,
        mail_from: &str,
        rcpt: &[String],
        raw: &[u8],
    ) -> Result<(), SendError> {
        let parse = |addr: &str| {
            addr.trim().parse::<Address>().map_err(|e| {
                SendError::permanent(format!("invalid envelope address \"{addr}\": {e}"))
            })
        };
        let from = match mail_from.trim() {
            "" => None,
            addr => Some(parse(addr)?),
        };
        let to = rcpt
            .iter()
            .map(|addr| parse(addr))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(from, to)
            .map_err(|e| SendError::permanent(format!("invalid envelope: {e}")))?;
        // lettre ends the data with CRLF . CRLF itself: without this, a
        // message that ends in CRLF (as every composed one does) would gain
        // an empty line.
        let data = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        let deadline = self.timeout + Duration::from_secs(raw.len() as u64 / BYTES_PER_SECOND);
        // Past the deadline the connection, taken out of `link`, is dropped.
        match tokio::time::timeout(deadline, self.transaction(link, &envelope, data)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(SendError::transient(format!(
                "sending through {}: no answer within {} s",
                self.server,
                deadline.as_secs_f32()
            ))),
        }
    }

    /// One email on `link`'s connection, or on a new one (connected,
    /// greeted, secured, authenticated). The connection goes back into
    /// `link` only if the relay accepted the email.
    async fn transaction(
        &self,
        link: &mut Link,
        envelope: &Envelope,
        data: &[u8],
    ) -> Result<(), SendError> {
        let mut kept = link.take().await;
        loop {
            let fresh = kept.is_none();
            let mut conn = match kept.take() {
                Some(conn) => conn,
                None => {
                    link.sent = 0;
                    self.open().await?
                }
            };
            match self.mail(&mut conn, envelope, data, fresh).await {
                Attempt::Accepted => {
                    link.conn = Some(conn);
                    link.sent += 1;
                    return Ok(());
                }
                // After any error the connection is not used again.
                Attempt::Failed(e) => {
                    quit(conn).await;
                    link.sent = 0;
                    return Err(e);
                }
                Attempt::Stale => {
                    // Closed without a QUIT: the relay is gone from it.
                    tracing::debug!(relay = %self.server, "kept relay connection was closed; connecting again");
                    drop(conn);
                }
            }
        }
    }

    /// The SMTP transaction of lettre's `AsyncSmtpConnection::send`, one
    /// command at a time, so that the first command on a kept connection
    /// (not `fresh`) tells whether the relay still has it open.
    async fn mail(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        data: &[u8],
        fresh: bool,
    ) -> Attempt {
        let info = conn.server_info();
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a: &Address| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            // RFC 6531 §3.2: such an email cannot go through this relay;
            // trying again would not change that (a bounce, as a relay
            // would write it).
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Attempt::Failed(SendError::permanent(format!(
                    "sending through {}: the envelope has non-ASCII addresses but the relay \
                     does not offer SMTPUTF8",
                    self.server
                )));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !data.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Attempt::Failed(SendError::transient(format!(
                    "sending through {}: the message is 8-bit but the relay does not offer \
                     8BITMIME",
                    self.server
                )));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = conn.command(Mail::new(envelope.from().cloned(), options));
        let answer = if fresh {
            mail.await
        } else {
            // Leaves most of the email's deadline to a new connection.
            match tokio::time::timeout(KEPT_WAIT.min(self.timeout / 3), mail).await {
                Ok(answer) => answer,
                Err(_) => return Attempt::Stale,
            }
        };
        if let Err(e) = answer {
            // No SMTP answer at all (the connection was closed or reset),
            // or 421 ("closing the transmission channel").
            let closed = e.status().is_none_or(|c| c.to_string() == "421");
            if !fresh && closed {
                return Attempt::Stale;
            }
            return Attempt::Failed(self.failed(&e));
        }
        for to in envelope.to() {
            if let Err(e) = conn.command(Rcpt::new(to.clone(), Vec::new())).await {
                return Attempt::Failed(self.failed(&e));
            }
        }
        if let Err(e) = conn.command(Data).await {
            return Attempt::Failed(self.failed(&e));
        }
        match conn.message(data).await {
            Ok(_) => Attempt::Accepted,
            Err(e) => Attempt::Failed(self.failed(&e)),
        }
    }

    /// A new connection, ready for MAIL FROM.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = self.connect().await.map_err(|e| {
            SendError::transient(format!(
                "sending through {}: connection error: {}",
                self.server,
                lowercase_first(&io_reason(&e))
            ))
        })?;
        let mut conn = self.greet(tcp).await.map_err(|e| self.failed(&e))?;
        if let Some(credentials) = &self.credentials {
            if let Err(e) = conn
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
            {
                quit(conn).await;
                return Err(self.failed(&e));
            }
        }
        Ok(conn)
    }

    /// A TCP connection to the relay's first address that answers, with
    /// `TCP_NODELAY` set.
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection timed out",
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address")
        }))
    }

    /// The SMTP session on `tcp`: TLS first for `smtps://`, then the
    /// greeting and EHLO, then STARTTLS if the URL asks for it.
    async fn greet(
        &self,
        tcp: TcpStream,
    ) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let stream: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Implicit(tls) => {
                // lettre's own TLS, put on our socket.
                #[allow(deprecated)]
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream.upgrade_tls(tls.clone()).await?;
                Box::new(TlsStream(stream.compat()))
            }
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        match &self.security {
            Security::Opportunistic(tls) if conn.can_starttls() => {
                conn.starttls(tls.clone(), &self.hello).await?;
            }
            Security::Required(tls) => conn.starttls(tls.clone(), &self.hello).await?,
            _ => {}
        }
        Ok(conn)
    }

    /// A lettre error as a send error: permanent only if the relay said so
    /// (5xx).
    fn failed(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let text = lowercase_first(&e.to_string());
        // lettre nests a failed TLS handshake's error in a second one of
        // the same kind: "Connection error: Connection error: received …".
        let text = match text.strip_prefix("connection error: Connection error: ") {
            Some(rest) => format!("connection error: {rest}"),
            None => text,
        };
        let message = format!("sending through {}: {text}", self.server);
        if e.is_permanent() {
            SendError::permanent(message)
        } else {
            SendError::transient(message)
        }
    }
}

/// lettre's TLS stream (futures-io) as the tokio stream its connection
/// takes.
#[derive(Debug)]
#[allow(deprecated)]
struct TlsStream(Compat<AsyncNetworkStream>);

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

/// `host:port` (or `host`) of an smtp URL, without scheme, query or path.
fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    // Credentials are refused by config validation; never print them anyway.
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

/// Writes `raw` to `dir/<Message-ID>.eml` so that a reader never sees half
/// a file: a hidden temporary file in the same folder, fsynced, renamed over
/// the final name, and the folder fsynced so that the rename survives a
/// crash. Sending the same email again replaces the file. Returns its path.
fn write_eml(dir: &Path, raw: &[u8]) -> Result<PathBuf, SendError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let failed = |what: &str, path: &Path, e: std::io::Error| {
        SendError::transient(format!(
            "{what} \"{}\": {}",
            path.display(),
            lowercase_first(&io_reason(&e))
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed("cannot create folder", dir, e))?;
    let name = format!("{}.eml", file_stem(raw));
    let path = dir.join(&name);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(raw)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed("cannot write", &tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed("cannot rename to", &path, e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed("cannot sync folder", dir, e))?;
    Ok(path)
}

/// A file-name-safe form of the message's Message-ID (`t42.u1.ab@host`),
/// or `sha256-<hex>` of the bytes when it has none.
fn file_stem(raw: &[u8]) -> String {
    let safe: String = header_message_id(raw)
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '=' | '@') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    let safe = safe.trim_start_matches('.');
    if safe.is_empty() {
        let digest = Sha256::digest(raw);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256-{hex}")
    } else {
        safe.to_owned()
    }
}

/// The value of the first `Message-ID` header (unfolded, brackets removed).
fn header_message_id(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let (_, value) = crate::ingest::header::message_fields(&text)
        .find(|(name, _)| name.eq_ignore_ascii_case("message-id"))?;
    let value = value.trim();
    let value = value.strip_prefix('<').unwrap_or(value);
    Some(value.split('>').next().unwrap_or_default().to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::ingest::TicketId;

    const RAW: &[u8] = b"From: support@acme.example\r\nTo: jane@example.com\r\n\
        Message-ID: <t42.u7.0123456789abcdef@desk.acme.example>\r\nSubject: hi\r\n\r\n\
        Hello,\r\n.leading dot\r\n..two\r\n.\r\nbye\r\n";

    // ---- file ----------------------------------------------------------

    fn eml_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn file_transport_writes_exactly_the_bytes_under_the_message_id() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/sent");
        let t = Transport::from_config(&config::Transport::File { dir: dir.clone() }).unwrap();
        t.send("support@acme.example", &["jane@example.com".into()], RAW)
            .await
            .unwrap();
        // Again: the same email replaces its file, nothing else is left.
        t.send("support@acme.example", &["jane@example.com".into()], RAW)
            .await
            .unwrap();
        let name = "t42.u7.0123456789abcdef@desk.acme.example.eml";
        assert_eq!(eml_files(&dir), [name]);
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), RAW);
    }

    #[test]
    fn file_names_are_safe() {
        let stem = |raw: &[u8]| file_stem(raw);
        assert_eq!(
            stem(b"Subject: x\r\nmessage-id:\r\n  <../a/b\\c d@x>\r\n\r\nbody"),
            "_a_b_c_d@x"
        );
        assert_eq!(stem(b"MESSAGE-ID: <x@y>\n\nbody"), "x@y");
        let derived = stem(b"Subject: none\r\n\r\nMessage-ID: <in@body>\r\n");
        assert!(derived.starts_with("sha256-"), "{derived}");
        assert_eq!(derived.len(), "sha256-".len() + 64);
        assert_eq!(stem(&[b'M'; 10]), derived_for(&[b'M'; 10]));
    }

    fn derived_for(raw: &[u8]) -> String {
        let hex: String = Sha256::digest(raw)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256-{hex}")
    }

    #[tokio::test]
    async fn file_transport_failure_is_transient() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("sent");
        std::fs::write(&blocker, "a file, not a folder").unwrap();
        let t = Transport::File { dir: blocker };
        let e = t.send("", &[], RAW).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.message.starts_with("cannot create folder"), "{e}");
    }

    // ---- from_config ---------------------------------------------------

    #[test]
    fn smtp_config_reads_the_password_file_now() {
        let tmp = tempfile::tempdir().unwrap();
        let smtp = |url: &str, file: &str| config::Transport::Smtp {
            url: url.into(),
            username: Some("postdesk".into()),
            password_file: Some(tmp.path().join(file)),
        };
        std::fs::write(tmp.path().join("pw"), "s3cret\n").unwrap();
        let t = Transport::from_config(&smtp("smtp://relay.acme.example:2525", "pw")).unwrap();
        let Transport::Smtp(relay) = &t else {
            panic!("expected smtp, got {t:?}")
        };
        assert_eq!(relay.server, "relay.acme.example:2525");
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");

        let e = Transport::from_config(&smtp("smtp://relay.acme.example", "nope")).unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Permanent);
        assert!(e.message.starts_with("cannot read password_file"), "{e}");

        let e = Transport::from_config(&smtp("smtpx://relay", "pw")).unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Permanent);
        assert!(e.message.starts_with("invalid smtp url"), "{e}");
    }

    #[test]
    fn url_helpers() {
        assert_eq!(server_of("smtps://relay.example:465"), "relay.example:465");
        assert_eq!(
            server_of("smtp://u:p@relay.example?tls=required"),
            "relay.example"
        );
    }

    #[test]
    fn relay_urls_follow_lettres_conventions() {
        let relay =
            |url: &str| SmtpRelay::new(url, None, Some("desk.acme.example"), SMTP_TIMEOUT).unwrap();
        let desk = ClientId::Domain("desk.acme.example".into());
        let r = relay("smtp://relay.example");
        assert_eq!((r.host.as_str(), r.port), ("relay.example", 25));
        assert!(matches!(r.security, Security::Plain));
        assert_eq!(r.hello, desk);
        let r = relay("smtp://relay.example/mx.acme.example?tls=required");
        assert_eq!(r.port, 587);
        assert!(matches!(r.security, Security::Required(_)));
        assert_eq!(r.hello, ClientId::Domain("mx.acme.example".into()));
        let r = relay("smtp://relay.example:2525/?tls=opportunistic");
        assert_eq!(r.port, 2525);
        assert!(matches!(r.security, Security::Opportunistic(_)));
        assert_eq!(r.hello, desk);
        let r = relay("smtps://[::1]");
        assert_eq!((r.host.as_str(), r.port), ("::1", 465));
        assert!(matches!(r.security, Security::Implicit(_)));
        assert_eq!(r.server, "[::1]");
        for bad in [
            "smtp://user:secret@relay.example",
            "smtp://relay.example?tls=sometimes",
            "http://relay.example",
        ] {
            let e = SmtpRelay::new(bad, None, None, SMTP_TIMEOUT).unwrap_err();
            assert_eq!(e.kind, SendErrorKind::Permanent, "{bad}: {e}");
            assert!(e.message.starts_with("invalid smtp url"), "{bad}: {e}");
            assert!(!e.message.contains("secret") || bad.contains("secret"));
        }
    }

    // ---- smtp against an in-test sink ----------------------------------

    /// Where the sink answers with something other than success.
    #[derive(Clone, Copy)]
    enum Fail {
        Never,
        /// Closes the connection after accepting each message.
        CloseAfterData,
        /// After accepting a message, answers the next command with 421
        /// (an idle timeout) and closes.
        IdleTimeoutAfterData,
        /// After accepting a message, never answers on that connection
        /// again (a peer gone without closing).
        SilentAfterData,
        Mail(u16),
        Rcpt(u16),
        Data(u16),
        DataEnd(u16),
    }

    #[derive(Debug, Default)]
    struct Received {
        /// Which connection it came on (1, 2, …).
        connection: usize,
        ehlo: String,
        mail_from: String,
        rcpt: Vec<String>,
        data: Vec<u8>,
        /// NOOPs seen on the connection before this message.
        noops: usize,
    }

    /// A tiny SMTP server on 127.0.0.1:0 that records what it is sent.
    /// Serves connections until the test ends.
    async fn sink(fail: Fail) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                connection += 1;
                tokio::spawn(async move {
                    let _ = session(stream, connection, fail, &log).await;
                });
            }
        });
        (addr, received)
    }

    async fn session(
        stream: TcpStream,
        connection: usize,
        fail: Fail,
        log: &Mutex<Vec<Received>>,
    ) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut got = Received {
            connection,
            ..Received::default()
        };
        write.write_all(b"220 sink ESMTP\r\n").await?;
        let mut line = String::new();
        let mut served = false;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_owned();
            if served {
                match fail {
                    Fail::IdleTimeoutAfterData => {
                        write.write_all(b"421 4.4.2 idle timeout\r\n").await?;
                        return Ok(());
                    }
                    Fail::SilentAfterData => continue,
                    _ => {}
                }
            }
            let verb = command.get(..4).unwrap_or(&command).to_ascii_uppercase();
            let reply: String = match verb.as_str() {
                "EHLO" | "HELO" => {
                    got.ehlo = command[4..].trim().to_owned();
                    "250-sink\r\n250 8BITMIME\r\n".into()
                }
                "MAIL" => match fail {
                    Fail::Mail(code) => format!("{code} 4.7.0 not now\r\n"),
                    _ => {
                        got.mail_from = command.clone();
                        "250 2.1.0 ok\r\n".into()
                    }
                },
                "RCPT" => match fail {
                    Fail::Rcpt(code) => format!("{code} 5.1.1 no such user\r\n"),
                    _ => {
                        got.rcpt.push(command.clone());
                        "250 2.1.5 ok\r\n".into()
                    }
                },
                "DATA" => {
                    if let Fail::Data(code) = fail {
                        format!("{code} 4.3.0 not now\r\n")
                    } else {
                        write.write_all(b"354 go ahead\r\n").await?;
                        let mut data = Vec::new();
                        loop {
                            let mut text = Vec::new();
                            if read.read_until(b'\n', &mut text).await? == 0 {
                                return Ok(());
                            }
                            if text == b".\r\n" {
                                break;
                            }
                            let text = text.strip_prefix(b".").unwrap_or(&text);
                            data.extend_from_slice(text);
                        }
                        got.data = std::mem::take(&mut data);
                        match fail {
                            Fail::DataEnd(code) => format!("{code} 4.3.0 try later\r\n"),
                            Fail::CloseAfterData => {
                                log.lock().unwrap().push(std::mem::take(&mut got));
                                write.write_all(b"250 2.0.0 queued\r\n").await?;
                                return Ok(());
                            }
                            _ => {
                                let ehlo = got.ehlo.clone();
                                let noops = got.noops;
                                log.lock().unwrap().push(std::mem::replace(
                                    &mut got,
                                    Received {
                                        connection,
                                        ehlo,
                                        noops,
                                        ..Received::default()
                                    },
                                ));
                                served = true;
                                "250 2.0.0 queued\r\n".into()
                            }
                        }
                    }
                }
                "NOOP" => {
                    got.noops += 1;
                    "250 ok\r\n".into()
                }
                "RSET" => "250 ok\r\n".into(),
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                _ => "500 5.5.2 what?\r\n".into(),
            };
            write.write_all(reply.as_bytes()).await?;
        }
    }

    fn relay(addr: SocketAddr, timeout: Duration) -> Transport {
        let url = format!("smtp://{addr}");
        Transport::Smtp(SmtpRelay::new(&url, None, Some("desk.acme.example"), timeout).unwrap())
    }

    async fn send(t: &Transport) -> Result<(), SendError> {
        t.send(
            "support@acme.example",
            &["jane@example.com".into(), "bob@example.com".into()],
            RAW,
        )
        .await
    }

    #[tokio::test]
    async fn smtp_delivers_exactly_the_bytes() {
        let (addr, received) = sink(Fail::Never).await;
        send(&relay(addr, SMTP_TIMEOUT)).await.unwrap();
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let got = &received[0];
        assert_eq!(got.ehlo, "desk.acme.example");
        assert!(
            got.mail_from
                .starts_with("MAIL FROM:<support@acme.example>"),
            "{got:?}"
        );
        assert_eq!(
            got.rcpt,
            ["RCPT TO:<jane@example.com>", "RCPT TO:<bob@example.com>"]
        );
        assert_eq!(
            String::from_utf8_lossy(&got.data),
            String::from_utf8_lossy(RAW)
        );
    }

    #[tokio::test]
    async fn a_composed_email_arrives_byte_for_byte() {
        use crate::mail::compose::{compose, OutMail};
        let raw = compose(&OutMail {
            cc: Vec::new(),
            from: "Acme Support <support@acme.example>".parse().unwrap(),
            to: vec![(Some("Zoë".into()), "zoe@example.com".into())],
            reply_to: "support+7@acme.example".into(),
            subject: "Größe [#7]".into(),
            message_id: "t7.u1.00ff00ff00ff00ff@desk.acme.example".into(),
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: Some("auto-replied"),
            ticket: TicketId(7),
            text: "Hi,\n.\n..\n.dot first\n".into(),
            html: Some("<p>.</p>\n.\n".into()),
            footer: Some("—".into()),
            date_millis: 0,
        })
        .unwrap();
        let (addr, received) = sink(Fail::Never).await;
        relay(addr, SMTP_TIMEOUT)
            .send("support@acme.example", &["zoe@example.com".into()], &raw)
            .await
            .unwrap();
        assert_eq!(received.lock().unwrap()[0].data, raw);
    }

    #[tokio::test]
    async fn the_connection_to_the_relay_does_not_wait_for_acks() {
        // Without TCP_NODELAY the data's final "." waited ~40 ms for the
        // relay's delayed ACK on every email.
        let (addr, _) = sink(Fail::Never).await;
        let Transport::Smtp(relay) = relay(addr, SMTP_TIMEOUT) else {
            unreachable!()
        };
        assert!(relay.connect().await.unwrap().nodelay().unwrap());
    }

    /// Sends one email to each of `to` on `link`; then what the relay got,
    /// in order: the connection each came on and its RCPT commands.
    async fn send_each(
        t: &Transport,
        link: &mut Link,
        to: &[&str],
        received: &Mutex<Vec<Received>>,
    ) -> Vec<(usize, Vec<String>)> {
        for to in to {
            t.send_on(link, "support@acme.example", &[(*to).into()], RAW)
                .await
                .unwrap();
        }
        received
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.connection, r.rcpt.clone()))
            .collect()
    }

    fn rcpt(to: &str) -> Vec<String> {
        vec![format!("RCPT TO:<{to}>")]
    }

    #[tokio::test]
    async fn a_link_sends_one_email_after_another_on_one_connection() {
        let (addr, received) = sink(Fail::Never).await;
        let t = relay(addr, SMTP_TIMEOUT);
        let mut link = Link::default();
        let abc = ["a@example.com", "b@example.com", "c@example.com"];
        let seen = send_each(&t, &mut link, &abc, &received).await;
        link.close().await;
        assert_eq!(seen, abc.map(|to| (1, rcpt(to))));
        let received = received.lock().unwrap();
        assert!(received
            .iter()
            .all(|r| r.data == RAW && r.ehlo == "desk.acme.example"));
        // The next MAIL FROM checks a kept connection, not a NOOP.
        assert!(received.iter().all(|r| r.noops == 0));
    }

    #[tokio::test]
    async fn a_link_whose_relay_hung_up_connects_again() {
        let (addr, received) = sink(Fail::CloseAfterData).await;
        let t = relay(addr, SMTP_TIMEOUT);
        let ab = ["a@example.com", "b@example.com"];
        let seen = send_each(&t, &mut Link::default(), &ab, &received).await;
        assert_eq!(seen, [(1, rcpt(ab[0])), (2, rcpt(ab[1]))]);
    }

    /// A kept connection the relay closed (421 at the next command, or no
    /// answer at all): the email goes at once on a new connection, once.
    async fn a_link_survives(fail: Fail) {
        let (addr, received) = sink(fail).await;
        let t = relay(addr, Duration::from_millis(300));
        let abc = ["a@example.com", "b@example.com", "c@example.com"];
        let seen = send_each(&t, &mut Link::default(), &abc, &received).await;
        assert_eq!(
            seen,
            [(1, rcpt(abc[0])), (2, rcpt(abc[1])), (3, rcpt(abc[2]))]
        );
    }

    #[tokio::test]
    async fn a_kept_connection_closed_with_421_is_replaced() {
        a_link_survives(Fail::IdleTimeoutAfterData).await;
    }

    #[tokio::test]
    async fn a_kept_connection_that_stopped_answering_is_replaced() {
        a_link_survives(Fail::SilentAfterData).await;
    }

    /// One email on `link` to a relay that refuses it: its error, once it
    /// is checked that the link kept no connection and nothing arrived.
    async fn refused(t: &Transport, link: &mut Link, received: &Mutex<Vec<Received>>) -> SendError {
        let e = t
            .send_on(link, "support@acme.example", &["a@example.com".into()], RAW)
            .await
            .unwrap_err();
        assert!(link.conn.is_none());
        assert!(received.lock().unwrap().is_empty());
        e
    }

    /// A fresh connection's 421 at MAIL FROM is the relay's answer, not a
    /// stale connection: the email fails (transient), no retry loop.
    #[tokio::test]
    async fn a_fresh_connection_refused_with_421_fails_transient() {
        let (addr, received) = sink(Fail::Mail(421)).await;
        let e = refused(&relay(addr, SMTP_TIMEOUT), &mut Link::default(), &received).await;
        assert_eq!(e.kind, SendErrorKind::Transient, "{e}");
        assert!(e.message.contains("421"), "{e}");
    }

    #[tokio::test]
    async fn a_link_drops_its_connection_after_a_refusal() {
        let (addr, received) = sink(Fail::Rcpt(550)).await;
        let t = relay(addr, SMTP_TIMEOUT);
        let mut link = Link::default();
        for _ in 0..2 {
            let e = refused(&t, &mut link, &received).await;
            assert_eq!(e.kind, SendErrorKind::Permanent, "{e}");
        }
    }

    #[tokio::test]
    async fn opportunistic_tls_sends_in_plain_to_a_relay_without_starttls() {
        let (addr, received) = sink(Fail::Never).await;
        let url = format!("smtp://{addr}/?tls=opportunistic");
        let t = Transport::Smtp(SmtpRelay::new(&url, None, None, SMTP_TIMEOUT).unwrap());
        send(&t).await.unwrap();
        assert_eq!(received.lock().unwrap()[0].data, RAW);
    }

    #[tokio::test]
    async fn required_tls_refuses_a_relay_without_starttls() {
        let (addr, received) = sink(Fail::Never).await;
        let url = format!("smtp://{addr}/?tls=required");
        let t = Transport::Smtp(SmtpRelay::new(&url, None, None, SMTP_TIMEOUT).unwrap());
        let e = send(&t).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.message.to_lowercase().contains("starttls"), "{e}");
        assert!(received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn implicit_tls_to_a_plain_server_fails_as_transient() {
        let (addr, received) = sink(Fail::Never).await;
        let url = format!("smtps://{addr}");
        let t = Transport::Smtp(SmtpRelay::new(&url, None, None, Duration::from_secs(5)).unwrap());
        let e = send(&t).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(
            e.message.starts_with(&format!("sending through {addr}: ")),
            "{e}"
        );
        assert!(!e.message.contains("error: Connection error"), "{e}");
        assert!(received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn smtp_null_sender() {
        let (addr, received) = sink(Fail::Never).await;
        relay(addr, SMTP_TIMEOUT)
            .send("", &["jane@example.com".into()], RAW)
            .await
            .unwrap();
        assert!(received.lock().unwrap()[0]
            .mail_from
            .starts_with("MAIL FROM:<>"));
    }

    #[tokio::test]
    async fn smtp_4xx_after_data_is_transient() {
        let (addr, received) = sink(Fail::DataEnd(451)).await;
        let e = send(&relay(addr, SMTP_TIMEOUT)).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.message.contains("451"), "{e}");
        assert!(
            e.message.starts_with(&format!("sending through {addr}: ")),
            "{e}"
        );
        assert!(received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn smtp_4xx_at_data_is_transient() {
        let (addr, _) = sink(Fail::Data(451)).await;
        let e = send(&relay(addr, SMTP_TIMEOUT)).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }

    #[tokio::test]
    async fn smtp_5xx_is_permanent() {
        let (addr, _) = sink(Fail::Rcpt(550)).await;
        let e = send(&relay(addr, SMTP_TIMEOUT)).await.unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Permanent, "{e}");
        assert!(!e.is_transient());
        assert!(e.message.contains("550"), "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_is_transient() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let e = send(&relay(addr, SMTP_TIMEOUT)).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_as_transient() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept, then say nothing.
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let e = send(&relay(addr, Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.message.ends_with("no answer within 0.3 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn bad_envelope_is_permanent() {
        let (addr, _) = sink(Fail::Never).await;
        let t = relay(addr, SMTP_TIMEOUT);
        let e = t
            .send("not an address", &["a@b".into()], RAW)
            .await
            .unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Permanent, "{e}");
        let e = t.send("a@b", &[], RAW).await.unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Permanent, "{e}");
    }

    #[test]
    fn crypto_provider_installs_once_and_again_quietly() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
