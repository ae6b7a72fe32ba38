//! One SMTP connection: a tokio task that reads bounded lines, drives the
//! `mailin` state machine for commands, reads DATA itself (only
//! `<CR><LF>.<CR><LF>` ends it), and answers the final dot only after the
//! store has durably committed the message.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::command::{parse_path, verb, with_enhanced_code};
use super::reader::{is_crlf, read_line, Read};
use crate::clock;
use crate::config::Config;
use crate::metrics::{self, METRICS};
use crate::store::{self, Inbound, Outcome, Store};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with CRLF.
pub const MAX_TEXT_LINE: usize = 1000;
/// RFC 5321 §4.5.3.1.8 asks for room for 100 recipients.
const MAX_RECIPIENTS: usize = 100;
/// Replies with a 4xx/5xx code before the session is closed (as Postfix's
/// `smtpd_hard_error_limit`).
const MAX_ERRORS: usize = 20;
/// Idle time allowed while waiting for a command or a DATA line
/// (RFC 5321 §4.5.3.2 suggests 5 minutes for commands).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The SMTP transaction in progress, as the engine's callbacks record it
/// for the connection task.
#[derive(Default)]
struct Transaction {
    /// Set by the task from its own MAIL parse (the engine cannot take `<>`).
    pending_from: String,
    /// `SMTPUTF8` at the MAIL FROM being handed to the engine.
    pending_utf8: bool,
    from: String,
    /// The transaction said `SMTPUTF8` (RFC 6531): UTF-8 addresses allowed.
    utf8: bool,
    rcpts: Vec<String>,
    channel: Option<String>,
    plus: Option<crate::ingest::TicketId>,
    data_done: bool,
}

struct EngineHandler {
    env: Arc<Mutex<Transaction>>,
    config: Arc<Config>,
}

impl EngineHandler {
    fn env(&self) -> std::sync::MutexGuard<'_, Transaction> {
        // The mutex is only ever held briefly by this task; a poisoned lock
        // still holds valid data.
        self.env.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Handler for EngineHandler {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        let mut env = self.env();
        env.from = std::mem::take(&mut env.pending_from);
        env.utf8 = std::mem::take(&mut env.pending_utf8);
        env.rcpts.clear();
        env.channel = None;
        env.plus = None;
        env.data_done = false;
        Response::custom(250, "2.1.0 Ok".into())
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let mut env = self.env();
        if env.rcpts.len() >= MAX_RECIPIENTS {
            return Response::custom(452, "4.5.3 Error: too many recipients".into());
        }
        match self.config.recipient(to) {
            Some(r) => {
                if env.channel.is_none() {
                    env.channel = Some(r.channel.id.clone());
                    env.plus = r.plus;
                }
                env.rcpts.push(to.to_ascii_lowercase());
                Response::custom(250, "2.1.5 Ok".into())
            }
            None => Response::custom(
                550,
                format!("5.1.1 <{to}>: Recipient address rejected: not a channel address here"),
            ),
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        Response::custom(354, "End data with <CR><LF>.<CR><LF>".into())
    }

    fn data_end(&mut self) -> Response {
        // The decision is made here: the message is complete. The task
        // commits it and writes the real reply (250 only after fsync).
        self.env().data_done = true;
        Response::custom(250, "2.0.0 Ok".into())
    }
}

/// Shared by every connection.
pub struct Ctx {
    pub store: Store,
    pub config: Arc<crate::config::ConfigCell>,
    pub shutdown: CancellationToken,
    /// Messages being parsed or waiting for their commit, at most
    /// [`INGESTS_IN_FLIGHT`]: a parsed message holds its decoded text
    /// besides its raw bytes, and the store writer takes at most
    /// `MAX_BATCH` at a time anyway, so more in flight only costs memory
    /// (256 sessions ending their DATA together).
    pub ingests: tokio::sync::Semaphore,
}

/// See [`Ctx::ingests`].
pub const INGESTS_IN_FLIGHT: usize = 64;

/// A message of at least this many bytes is parsed off the runtime's
/// workers. Measured here, a plain-text parse takes 0.13 ms at 256 KiB and
/// 27 ms at 25 MiB; below this size the hand-off would cost more than it
/// spares the other sessions.
const PARSE_ASIDE: usize = 256 << 10;

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = BufWriter<tokio::net::tcp::OwnedWriteHalf>;

pub async fn handle(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) {
    let _ = stream.set_nodelay(true);
    let config = ctx.config.get();
    let (r, w) = stream.into_split();
    let mut reader = BufReader::with_capacity(16 * 1024, r);
    let mut writer = BufWriter::with_capacity(4 * 1024, w);
    match run(&mut reader, &mut writer, peer, &ctx, config).await {
        Ok(()) => {}
        Err(e) => tracing::debug!(peer = %peer, error = %e, "smtp session ended with an i/o error"),
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

enum Next {
    Continue,
    Close,
}

async fn run(
    reader: &mut Reader,
    writer: &mut Writer,
    peer: SocketAddr,
    ctx: &Ctx,
    config: Arc<Config>,
) -> std::io::Result<()> {
    let env = Arc::new(Mutex::new(Transaction::default()));
    let handler = EngineHandler {
        env: env.clone(),
        config: config.clone(),
    };
    let hostname = config.server.hostname.clone();
    let mut session = SessionBuilder::new(hostname.clone()).build(peer.ip(), handler);
    writer
        .write_all(format!("220 {hostname} ESMTP postdesk\r\n").as_bytes())
        .await?;
    writer.flush().await?;
    let mut errors = 0usize;

    loop {
        let line = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, read_line(reader, MAX_COMMAND_LINE)) => match r {
                Ok(r) => r?,
                Err(_) => {
                    writer.write_all(b"421 4.4.2 Error: timeout exceeded\r\n").await?;
                    return Ok(());
                }
            },
            () = ctx.shutdown.cancelled() => {
                writer.write_all(b"421 4.3.0 Service shutting down, try again later\r\n").await?;
                return Ok(());
            }
        };
        let mut line = match line {
            Read::Line(l) => l,
            Read::TooLong => {
                writer
                    .write_all(b"500 5.5.2 Error: command line too long\r\n")
                    .await?;
                return Ok(());
            }
            Read::Eof => return Ok(()),
        };
        if !is_crlf(&line) {
            // Accept a bare-LF command (many scripts send them), as CRLF.
            line.pop();
            line.extend_from_slice(b"\r\n");
        }
        let (reply, next) = command(&mut session, &env, &config, &line, peer);
        let reply = match reply {
            Reply::Bytes(b) => b,
            Reply::StartData(b) => {
                writer.write_all(&b).await?;
                writer.flush().await?;
                match data(reader, writer, &mut session, &env, &config, ctx, peer).await? {
                    Some(reply) => reply,
                    None => return Ok(()),
                }
            }
        };
        if reply.first().is_some_and(|c| *c == b'4' || *c == b'5') {
            errors += 1;
        }
        writer.write_all(&reply).await?;
        if matches!(next, Next::Close) {
            return Ok(());
        }
        if errors >= MAX_ERRORS {
            writer
                .write_all(b"421 4.7.0 Error: too many errors\r\n")
                .await?;
            return Ok(());
        }
        // PIPELINING: flush only when the client has nothing more queued.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// RFC 6531 §3.5: a UTF-8 address in a transaction that did not say
/// `SMTPUTF8` at its MAIL FROM.
const NEEDS_SMTPUTF8: &[u8] =
    b"553 5.6.7 Error: a non-ASCII address needs SMTPUTF8 at MAIL FROM\r\n";

enum Reply {
    Bytes(Vec<u8>),
    /// The engine said 354: write this, then read the message.
    StartData(Vec<u8>),
}

fn render(resp: &Response) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = resp.write_to(&mut buf);
    with_enhanced_code(buf)
}

fn next_of(resp: &Response) -> Next {
    if resp.action == Action::Close {
        Next::Close
    } else {
        Next::Continue
    }
}

fn command(
    session: &mut mailin::Session<EngineHandler>,
    env: &Mutex<Transaction>,
    config: &Config,
    line: &[u8],
    peer: SocketAddr,
) -> (Reply, Next) {
    let simple = |b: &[u8]| (Reply::Bytes(b.to_vec()), Next::Continue);
    match verb(line).as_str() {
        "EHLO" => {
            let resp = session.process(line);
            if resp.code != 250 {
                return (Reply::Bytes(render(&resp)), next_of(&resp));
            }
            let s = &config.server;
            let text = format!(
                "250-{}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                s.hostname, s.max_message_size
            );
            (Reply::Bytes(text.into_bytes()), Next::Continue)
        }
        "HELO" => {
            let resp = session.process(line);
            if resp.code == 250 {
                return (
                    Reply::Bytes(format!("250 {}\r\n", config.server.hostname).into_bytes()),
                    Next::Continue,
                );
            }
            (Reply::Bytes(render(&resp)), next_of(&resp))
        }
        "MAIL" => {
            let Some(arg) = parse_path(line, "MAIL FROM:") else {
                return simple(b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
            };
            if let Some(size) = arg.param("SIZE") {
                match size.and_then(|s| s.parse::<u64>().ok()) {
                    Some(n) if n > config.server.max_message_size => {
                        return simple(b"552 5.3.4 Error: message size exceeds fixed limit\r\n");
                    }
                    Some(_) => {}
                    None => return simple(b"501 5.5.4 Error: bad SIZE parameter\r\n"),
                }
            }
            // RFC 6531 §3.4: SMTPUTF8 takes no value.
            let utf8 = match arg.param("SMTPUTF8") {
                None => false,
                Some(None) => true,
                Some(Some(_)) => return simple(b"501 5.5.4 Error: SMTPUTF8 takes no value\r\n"),
            };
            if !utf8 && !arg.address.is_ascii() {
                return simple(NEEDS_SMTPUTF8);
            }
            let engine_path = if arg.address.is_empty() {
                "null-sender@postdesk.invalid"
            } else {
                &arg.address
            };
            if let Ok(mut e) = env.lock() {
                e.pending_from = arg.address.clone();
                e.pending_utf8 = utf8;
            }
            let normalized = format!("MAIL FROM:<{engine_path}>\r\n");
            let resp = session.process(normalized.as_bytes());
            tracing::trace!(peer = %peer, code = resp.code, "MAIL");
            (Reply::Bytes(render(&resp)), next_of(&resp))
        }
        "RCPT" => {
            let Some(arg) = parse_path(line, "RCPT TO:") else {
                return simple(b"501 5.5.4 Syntax: RCPT TO:<address>\r\n");
            };
            if arg.address.is_empty() {
                return simple(b"501 5.1.3 Error: empty recipient address\r\n");
            }
            let utf8 = env.lock().unwrap_or_else(|p| p.into_inner()).utf8;
            if !utf8 && !arg.address.is_ascii() {
                return simple(NEEDS_SMTPUTF8);
            }
            let normalized = format!("RCPT TO:<{}>\r\n", arg.address);
            let resp = session.process(normalized.as_bytes());
            (Reply::Bytes(render(&resp)), next_of(&resp))
        }
        "DATA" => {
            let resp = session.process(line);
            if resp.code == 354 {
                return (Reply::StartData(render(&resp)), Next::Continue);
            }
            (Reply::Bytes(render(&resp)), next_of(&resp))
        }
        "NOOP" => simple(b"250 2.0.0 Ok\r\n"),
        "HELP" => simple(b"214 2.0.0 See RFC 5321\r\n"),
        "BDAT" | "STARTTLS" | "AUTH" | "ETRN" | "TURN" | "EXPN" => {
            simple(b"502 5.5.1 Error: command not implemented\r\n")
        }
        _ => {
            let resp = session.process(line);
            (Reply::Bytes(render(&resp)), next_of(&resp))
        }
    }
}

/// Reads the message after 354. Returns the reply for the final dot, or
/// `None` when the session must end without one (client gone).
#[allow(clippy::too_many_arguments)]
async fn data(
    reader: &mut Reader,
    writer: &mut Writer,
    session: &mut mailin::Session<EngineHandler>,
    env: &Mutex<Transaction>,
    config: &Arc<Config>,
    ctx: &Ctx,
    peer: SocketAddr,
) -> std::io::Result<Option<Vec<u8>>> {
    let max = config.server.max_message_size;
    let mut body: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut size: u64 = 0;
    let mut too_big = false;
    // The DATA command line ended with CRLF (we normalised it).
    let mut after_crlf = true;
    loop {
        let read = tokio::time::timeout(IDLE_TIMEOUT, read_line(reader, MAX_TEXT_LINE)).await;
        let line = match read {
            Ok(r) => r?,
            Err(_) => {
                writer
                    .write_all(b"421 4.4.2 Error: timeout exceeded\r\n")
                    .await?;
                return Ok(None);
            }
        };
        let line = match line {
            Read::Line(l) => l,
            Read::TooLong => {
                writer
                    .write_all(b"554 5.3.4 Error: message line too long (over 1000 octets)\r\n")
                    .await?;
                return Ok(None);
            }
            // A client that leaves mid-DATA stores nothing.
            Read::Eof => return Ok(None),
        };
        if after_crlf && line == b".\r\n" {
            break;
        }
        let content = if after_crlf && line.first() == Some(&b'.') {
            &line[1..]
        } else {
            &line[..]
        };
        size += content.len() as u64;
        if size > max {
            if !too_big {
                too_big = true;
                body = Vec::new();
            }
        } else {
            body.extend_from_slice(content);
        }
        after_crlf = is_crlf(&line);
    }
    let started = Instant::now();
    // Let the engine see the end of data (state back to "after HELO").
    let _ = session.process(b".\r\n");
    let (mail_from, rcpts, channel, plus) = {
        let mut e = env.lock().unwrap_or_else(|p| p.into_inner());
        let done = std::mem::take(&mut e.data_done);
        if !done {
            return Ok(Some(
                b"451 4.3.0 Error: transaction state lost\r\n".to_vec(),
            ));
        }
        (
            e.from.clone(),
            std::mem::take(&mut e.rcpts),
            e.channel.take(),
            e.plus.take(),
        )
    };
    if too_big {
        tracing::info!(peer = %peer, size, limit = max, "message refused: too large");
        return Ok(Some(
            b"552 5.3.4 Error: message size exceeds fixed limit\r\n".to_vec(),
        ));
    }
    let Some(channel) = channel else {
        return Ok(Some(b"554 5.5.1 Error: no valid recipients\r\n".to_vec()));
    };
    // Nothing closes the semaphore; if something did, end like a shutdown.
    let Ok(_permit) = ctx.ingests.acquire().await else {
        return Ok(Some(
            b"421 4.3.0 Service shutting down, try again later\r\n".to_vec(),
        ));
    };
    let aside = body.len() >= PARSE_ASIDE;
    let parse = {
        let config = config.clone();
        let envelope = store::Envelope {
            mail_from,
            rcpt: rcpts,
            channel: channel.clone(),
            plus,
            received_at: clock::now_millis(),
            imported: false,
        };
        move || Inbound::new(config, body, envelope)
    };
    let inbound = if aside {
        // A big message is parsed on a blocking thread: the runtime may
        // have a single worker, and the other sessions must not wait for
        // a 25 MiB parse.
        match tokio::task::spawn_blocking(parse).await {
            Ok(inbound) => inbound,
            Err(e) => {
                tracing::error!(peer = %peer, size, error = %e, "parsing a message failed");
                return Ok(Some(
                    b"451 4.3.0 Error: local error in processing\r\n".to_vec(),
                ));
            }
        }
    } else {
        parse()
    };
    let message_id = inbound.parsed.message_id.clone();
    let result = ctx.store.ingest(inbound).await;
    let ms = started.elapsed().as_millis() as u64;
    let m = &METRICS;
    if result.is_ok() {
        metrics::inc(&m.received);
        m.receive_to_commit_ms.observe(ms);
    }
    Ok(Some(match result {
        Ok(Outcome::Ticket {
            id,
            created,
            duplicate,
            by,
        }) => {
            if duplicate {
                metrics::inc(&m.duplicates);
            } else {
                metrics::inc_key(&m.threaded_by, by.as_str());
            }
            if created {
                metrics::inc(&m.tickets_created);
            }
            tracing::info!(ticket = id.get(), message_id = %message_id, channel = %channel, threaded_by = by.as_str(), created, duplicate, size, ms, peer = %peer, "mail received");
            format!("250 2.0.0 Ok: ticket {id}\r\n").into_bytes()
        }
        Ok(Outcome::Kept { duplicate }) => {
            if duplicate {
                metrics::inc(&m.duplicates);
            } else {
                metrics::inc(&m.kept);
            }
            tracing::info!(message_id = %message_id, channel = %channel, duplicate, size, ms, peer = %peer, "mail received (kept without ticket)");
            b"250 2.0.0 Ok: kept\r\n".to_vec()
        }
        Err(e) => {
            metrics::inc(&m.refused_451);
            tracing::error!(message_id = %message_id, error = %e, peer = %peer, "mail not committed; answered 451");
            b"451 4.3.0 Error: local storage failure, try again later\r\n".to_vec()
        }
    }))
}
