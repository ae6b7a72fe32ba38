//! An in-test SMTP relay: a small threaded SMTP server on 127.0.0.1 that
//! records every transaction (envelope, data, and what it answered).
//!
//! Its answers to `RCPT TO` and to the end of `DATA` can be switched at run
//! time (`250`, `451 4.3.0`, `550 5.7.1`, ...), and it can be stopped (the
//! port refuses connections; open sessions are cut) and started again on the
//! same port — a relay that is down, then back.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::eml::Eml;
use super::{wait_until, DEADLINE};

/// One SMTP transaction the sink saw: it reached `RCPT TO` at least.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The reverse path, without brackets (`""` for `<>`).
    pub mail_from: String,
    /// The ESMTP parameters after the reverse path, upper-cased
    /// (`["BODY=8BITMIME", "SMTPUTF8"]`).
    pub mail_params: Vec<String>,
    /// The recipients the sink accepted.
    pub rcpt: Vec<String>,
    /// The message, dot-unstuffed, CRLF line ends (empty if DATA never
    /// finished).
    pub data: Vec<u8>,
    /// The sink's final answer: to the end of DATA, or to the (last) RCPT
    /// it refused.
    pub reply: u16,
}

impl Transaction {
    /// Whether the sink took the message (`250` after the data).
    pub fn accepted(&self) -> bool {
        self.reply == 250 && !self.data.is_empty()
    }

    pub fn eml(&self) -> Eml {
        Eml::parse("smtp sink", &self.data)
    }
}

#[derive(Default)]
struct Shared {
    transactions: Mutex<Vec<Transaction>>,
    /// Open sessions, to cut them on stop.
    sessions: Mutex<Vec<TcpStream>>,
    rcpt_reply: AtomicU16,
    data_reply: AtomicU16,
    stopped: AtomicBool,
    /// `RCPT TO` this address gets no answer while it is set.
    hang_rcpt: Mutex<Option<String>>,
    /// Sessions open now.
    open: AtomicUsize,
    /// EHLO does not offer SMTPUTF8 (RFC 6531) while this is set.
    no_smtputf8: AtomicBool,
}

/// Counts a session as open while it lives.
struct OpenSession<'a>(&'a AtomicUsize);

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// The reply line for a code.
fn reply_line(code: u16) -> String {
    match code {
        250 => "250 2.0.0 Ok".to_string(),
        421 => "421 4.3.0 sink: try again later".to_string(),
        450..=499 => format!("{code} 4.3.0 sink: temporary failure, try again later"),
        550 => "550 5.7.1 sink: message refused".to_string(),
        _ => format!("{code} sink: reply {code}"),
    }
}

impl Sink {
    /// Starts a sink on 127.0.0.1 (a free port) that accepts everything.
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("the sink's address");
        let shared = Arc::new(Shared::default());
        shared.rcpt_reply.store(250, Ordering::SeqCst);
        shared.data_reply.store(250, Ordering::SeqCst);
        let mut sink = Sink {
            addr,
            shared,
            acceptor: None,
        };
        sink.serve(listener);
        sink
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, as lettre reads it).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The answer to `RCPT TO` from now on (250 accepts).
    pub fn set_rcpt_reply(&self, code: u16) {
        self.shared.rcpt_reply.store(code, Ordering::SeqCst);
    }

    /// The answer to the end of `DATA` from now on (250 accepts).
    pub fn set_data_reply(&self, code: u16) {
        self.shared.data_reply.store(code, Ordering::SeqCst);
    }

    /// Whether EHLO offers SMTPUTF8 from now on (it does by default).
    pub fn set_smtputf8(&self, offer: bool) {
        self.shared.no_smtputf8.store(!offer, Ordering::SeqCst);
    }

    /// From now on `RCPT TO:<addr>` gets no answer (a relay that hangs
    /// mid-transaction) until this is called with `None` or the sink stops.
    pub fn set_hang_rcpt(&self, addr: Option<&str>) {
        *self
            .shared
            .hang_rcpt
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addr.map(String::from);
    }

    /// Waits until no session is open (the client said QUIT or hung up).
    pub fn wait_no_open_sessions(&self, deadline: Duration) {
        wait_until(deadline, "the relay's sessions to close", || {
            match self.shared.open.load(Ordering::SeqCst) {
                0 => Ok(()),
                n => Err(format!("{n} open")),
            }
        });
    }

    /// Every transaction so far.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.shared
            .transactions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The messages the sink accepted.
    pub fn accepted(&self) -> Vec<Transaction> {
        self.transactions()
            .into_iter()
            .filter(Transaction::accepted)
            .collect()
    }

    /// Waits until the sink has accepted at least `n` messages (for at most
    /// `deadline`); returns them all.
    pub fn wait_accepted(&self, n: usize, deadline: Duration) -> Vec<Transaction> {
        wait_until(deadline, &format!("{n} messages at the SMTP sink"), || {
            let got = self.accepted();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(self.describe())
            }
        })
    }

    /// Waits until the sink has seen at least `n` transactions, whatever it
    /// answered.
    pub fn wait_transactions(&self, n: usize, deadline: Duration) -> Vec<Transaction> {
        wait_until(
            deadline,
            &format!("{n} transactions at the SMTP sink"),
            || {
                let got = self.transactions();
                if got.len() >= n {
                    Ok(got)
                } else {
                    Err(self.describe())
                }
            },
        )
    }

    /// One line per transaction, for failure messages.
    pub fn describe(&self) -> String {
        let all = self.transactions();
        if all.is_empty() {
            return "the sink saw no transaction".to_string();
        }
        all.iter()
            .map(|t| {
                format!(
                    "MAIL FROM:<{}> RCPT {:?} -> {} ({} bytes; Subject: {})",
                    t.mail_from,
                    t.rcpt,
                    t.reply,
                    t.data.len(),
                    t.eml().subject()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops listening and cuts every open session: the relay is down.
    pub fn stop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let sessions = std::mem::take(
            &mut *self
                .shared
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for s in sessions {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port (after [`Sink::stop`]).
    pub fn start_again(&mut self) {
        assert!(self.acceptor.is_none(), "the sink is still running");
        let listener = wait_until(DEADLINE, "rebinding the SMTP sink's port", || {
            TcpListener::bind(self.addr).map_err(|e| format!("bind {}: {e}", self.addr))
        });
        self.shared.stopped.store(false, Ordering::SeqCst);
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let shared = Arc::clone(&self.shared);
        self.acceptor = Some(std::thread::spawn(move || {
            // Polls accept so that `stop` can end it; the listener is
            // dropped (the port closed) when this returns.
            while !shared.stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || {
                            let _ = session(stream, &shared);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `MAIL FROM:<a@b> SIZE=1` → `a@b`.
fn path_arg(line: &str) -> String {
    match (line.find('<'), line.find('>')) {
        (Some(l), Some(r)) if l < r => line[l + 1..r].to_string(),
        _ => line
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Writes one reply line.
fn say(w: &mut TcpStream, line: &str) -> io::Result<()> {
    w.write_all(line.as_bytes())?;
    w.write_all(b"\r\n")?;
    w.flush()
}

/// One SMTP session, until QUIT or the connection ends.
fn session(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenSession(&shared.open);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(stream.try_clone()?);
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    say(&mut writer, "220 sink.test.example ESMTP test sink")?;

    let mut current: Option<Transaction> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        let verb = cmd
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                say(&mut writer, "250-sink.test.example")?;
                say(&mut writer, "250-8BITMIME")?;
                if !shared.no_smtputf8.load(Ordering::SeqCst) {
                    say(&mut writer, "250-SMTPUTF8")?;
                }
                say(&mut writer, "250 SIZE 52428800")?;
            }
            "HELO" => say(&mut writer, "250 sink.test.example")?,
            "MAIL" => {
                let params = cmd
                    .rsplit_once('>')
                    .map(|(_, p)| p.split_whitespace().map(str::to_ascii_uppercase).collect())
                    .unwrap_or_default();
                current = Some(Transaction {
                    mail_from: path_arg(&cmd),
                    mail_params: params,
                    rcpt: Vec::new(),
                    data: Vec::new(),
                    reply: 0,
                });
                say(&mut writer, "250 2.1.0 Ok")?;
            }
            "RCPT" => {
                let hung = |shared: &Shared| {
                    let hang = shared.hang_rcpt.lock().unwrap_or_else(|e| e.into_inner());
                    hang.as_deref() == Some(path_arg(&cmd).as_str())
                };
                while hung(shared) && !shared.stopped.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let Some(t) = current.as_mut() else {
                    say(&mut writer, "503 5.5.1 MAIL first")?;
                    continue;
                };
                let code = shared.rcpt_reply.load(Ordering::SeqCst);
                if code == 250 {
                    t.rcpt.push(path_arg(&cmd));
                    say(&mut writer, "250 2.1.5 Ok")?;
                } else {
                    t.reply = code;
                    let refused = t.clone();
                    shared
                        .transactions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(refused);
                    say(&mut writer, &reply_line(code))?;
                }
            }
            "DATA" => {
                let Some(mut t) = current.take().filter(|t| !t.rcpt.is_empty()) else {
                    say(&mut writer, "554 5.5.1 no valid recipients")?;
                    continue;
                };
                say(&mut writer, "354 End data with <CR><LF>.<CR><LF>")?;
                let mut data = Vec::new();
                loop {
                    let mut raw = Vec::new();
                    if reader.read_until(b'\n', &mut raw)? == 0 {
                        return Ok(()); // cut mid-data: nothing recorded
                    }
                    if raw == b".\r\n" {
                        break;
                    }
                    let unstuffed = if raw.starts_with(b".") {
                        &raw[1..]
                    } else {
                        &raw[..]
                    };
                    data.extend_from_slice(unstuffed);
                }
                let code = shared.data_reply.load(Ordering::SeqCst);
                t.data = data;
                t.reply = code;
                shared
                    .transactions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t);
                say(&mut writer, &reply_line(code))?;
            }
            "RSET" => {
                current = None;
                say(&mut writer, "250 2.0.0 Ok")?;
            }
            "NOOP" => say(&mut writer, "250 2.0.0 Ok")?,
            "QUIT" => {
                say(&mut writer, "221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => say(&mut writer, "502 5.5.2 command not implemented")?,
        }
    }
}
