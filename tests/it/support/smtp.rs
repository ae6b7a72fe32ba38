//! A small blocking SMTP client (what a well-behaved MTA sends, plus
//! `raw_send` for hostile tests) and a message builder.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long one read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One SMTP reply: the code and the text of each line (after `NNN-`/`NNN `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 0 when no reply could be read (the connection failed); `lines` then
    /// holds the error.
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    fn transport_error(what: &str, e: &io::Error) -> Reply {
        Reply {
            code: 0,
            lines: vec![format!("<no reply: {what}: {e}>")],
        }
    }

    /// All lines' text, joined with newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code of the first line (`2.0.0`), if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let parts: Vec<_> = first.split('.').collect();
        let ok = parts.len() == 3 && parts.iter().all(|p| p.parse::<u16>().is_ok());
        ok.then_some(first)
    }

    /// `code` and enhanced status (`"550 5.1.1"`), to compare in asserts.
    pub fn status(&self) -> String {
        format!("{} {}", self.code, self.enhanced().unwrap_or("-"))
    }

    /// The id in `250 2.0.0 Ok: ticket <id>` (brackets and `#` tolerated).
    pub fn ticket_id(&self) -> Option<u64> {
        let first = self.lines.first()?;
        let rest = &first[first.find("Ok: ticket ")? + "Ok: ticket ".len()..];
        let digits: String = rest
            .trim_start_matches(['<', '#'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// `250 2.0.0 Ok: kept` (a conversation without a ticket).
    pub fn is_kept(&self) -> bool {
        self.code == 250 && self.lines.first().is_some_and(|l| l.contains("Ok: kept"))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}{sep}{line}", self.code)?;
        }
        if n == 0 {
            write!(f, "{}", self.code)?;
        }
        Ok(())
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The reply read on connect.
    pub greeting: Reply,
}

impl Client {
    /// Connects and reads the greeting, which must be `220`.
    pub fn connect(addr: SocketAddr) -> Client {
        let client = Client::connect_raw(addr);
        assert_eq!(
            client.greeting.code, 220,
            "greeting from {addr}: {}",
            client.greeting
        );
        client
    }

    /// Connects and reads the greeting, whatever it is.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let mut client = Client::over(stream);
        client.greeting = client.read_reply();
        client
    }

    /// Like [`Client::connect_raw`], but a failed connect is an error, not a
    /// panic (for tests where the server may be gone); a greeting that
    /// cannot be read is code 0.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        let mut client = Client::over(stream);
        client.greeting = client
            .try_read_reply()
            .unwrap_or_else(|e| Reply::transport_error("greeting", &e));
        Ok(client)
    }

    /// Connects from the local address `local` (e.g. 127.0.0.2, to be
    /// another client address than 127.0.0.1) and reads the greeting,
    /// whatever it is.
    pub fn connect_raw_from(local: Ipv4Addr, addr: SocketAddr) -> Client {
        let stream = connect_from(local, addr)
            .unwrap_or_else(|e| panic!("connect {addr} from {local}: {e}"));
        let mut client = Client::over(stream);
        client.greeting = client.read_reply();
        client
    }

    /// A client over a connected stream, greeting not read yet.
    fn over(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set_write_timeout");
        let writer = stream.try_clone().expect("clone the stream");
        Client {
            reader: BufReader::new(stream),
            writer,
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
            },
        }
    }

    /// Connects, checks the 220 greeting and says EHLO (which must get 250).
    pub fn ready(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        let ehlo = client.ehlo("client.test.example");
        assert_eq!(ehlo.code, 250, "EHLO: {ehlo}");
        client
    }

    pub fn ehlo(&mut self, name: &str) -> Reply {
        self.cmd(&format!("EHLO {name}"))
    }

    /// `MAIL FROM:<addr>` (`""` is the null sender `<>`).
    pub fn mail_from(&mut self, addr: &str) -> Reply {
        self.cmd(&format!("MAIL FROM:<{addr}>"))
    }

    /// `MAIL FROM:<addr> PARAMS` (e.g. `SIZE=100000`).
    pub fn mail_from_with(&mut self, addr: &str, params: &str) -> Reply {
        self.cmd(&format!("MAIL FROM:<{addr}> {params}"))
    }

    pub fn rcpt_to(&mut self, addr: &str) -> Reply {
        self.cmd(&format!("RCPT TO:<{addr}>"))
    }

    /// `DATA`; on `354` sends `message` as SMTP data (CRLF lines,
    /// dot-stuffed, then `.`) and returns the final reply; else the reply to
    /// `DATA`. A write error (the server hung up mid-message) is not fatal:
    /// the reply, if any, is still read.
    pub fn data(&mut self, message: &[u8]) -> Reply {
        self.data_encoded(&to_smtp_data(message))
    }

    /// Like [`Client::data`] for bytes already in SMTP form (from
    /// [`to_smtp_data`]: CRLF lines, dot-stuffed, ending in `.` CRLF).
    pub fn data_encoded(&mut self, encoded: &[u8]) -> Reply {
        let reply = self.cmd("DATA");
        if reply.code != 354 {
            return reply;
        }
        let _ = self.writer.write_all(encoded);
        let _ = self.writer.flush();
        self.try_read_reply()
            .unwrap_or_else(|e| Reply::transport_error("after end of data", &e))
    }

    pub fn rset(&mut self) -> Reply {
        self.cmd("RSET")
    }

    pub fn quit(&mut self) -> Reply {
        self.cmd("QUIT")
    }

    /// Sends one command line (CRLF added) and reads the reply; a reply the
    /// connection could not deliver is code 0.
    pub fn cmd(&mut self, line: &str) -> Reply {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        if let Err(e) = self.raw_send(&bytes) {
            return Reply::transport_error(&format!("sending {line:?}"), &e);
        }
        self.try_read_reply()
            .unwrap_or_else(|e| Reply::transport_error(&format!("reply to {line:?}"), &e))
    }

    /// Writes bytes as they are.
    pub fn raw_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Reads one (possibly multi-line) reply; panics if there is none.
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading an SMTP reply: {e}"))
    }

    pub fn try_read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let n = self.reader.read_until(b'\n', &mut raw)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed (reply so far: {lines:?})"),
                ));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                )
            };
            if line.len() < 3 || !line.is_char_boundary(3) {
                return Err(bad());
            }
            let code: u16 = line[..3].parse().map_err(|_| bad())?;
            let sep = line.as_bytes().get(3).copied();
            let text = line.get(4..).unwrap_or("").to_string();
            lines.push(text);
            match sep {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok(Reply { code, lines }),
                Some(_) => return Err(bad()),
            }
        }
    }

    /// Waits (up to `timeout`) for the server to close the connection.
    /// True on EOF or reset; false if it stays open or sends more.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_mut();
        stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
        let mut byte = [0u8; 1];
        let closed = match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
        };
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        closed
    }
}

/// One message on a fresh connection: EHLO, MAIL FROM, RCPT TO, DATA, QUIT.
/// Returns the first reply that is not a success (MAIL/RCPT), else the
/// final reply to the data.
pub fn send_mail(addr: SocketAddr, from: &str, to: &str, message: &[u8]) -> Reply {
    let mut client = Client::ready(addr);
    let reply = client.mail_from(from);
    if reply.code != 250 {
        return reply;
    }
    let reply = client.rcpt_to(to);
    if reply.code != 250 && reply.code != 251 {
        return reply;
    }
    let reply = client.data(message);
    if reply.code != 0 {
        let _ = client.quit();
    }
    reply
}

/// A TCP connection to `addr` (IPv4) from the local address `local`:
/// `std::net::TcpStream` cannot bind before connecting, so this goes through
/// libc (socket, bind, connect).
pub fn connect_from(local: Ipv4Addr, addr: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(remote) = addr else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("connect_from: {addr} is not IPv4"),
        ));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let from = sockaddr(local, 0);
    // SAFETY: `from` is a valid sockaddr_in of `len` bytes for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(from).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let to = sockaddr(*remote.ip(), remote.port());
    // SAFETY: as above; a blocking connect on our own socket.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(to).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// A message as SMTP DATA: every line ending (CRLF, a lone LF, a lone CR)
/// becomes CRLF, a line starting with `.` gets another `.`, and the
/// terminating `.` line is appended.
pub fn to_smtp_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 16 + 8);
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                // CRLF is one line ending.
                if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The message content a server receives for SMTP data made by
/// [`to_smtp_data`]: the CRLF lines without the dot-stuffing and without the
/// terminating `.` line (the last line keeps its CRLF, RFC 5321 §4.1.1.4).
pub fn smtp_data_content(encoded: &[u8]) -> Vec<u8> {
    let body = encoded
        .strip_suffix(b".\r\n")
        .expect("SMTP data ends with the `.` line");
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// A Message-ID (with angle brackets) unique in this test run.
pub fn unique_id(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("<{tag}.{n}.{}@test.example>", std::process::id())
}

/// A message to build: `msg().from(..).subject(..).build()`.
pub fn msg() -> Msg {
    Msg {
        from: "Carol Customer <carol@example.com>".into(),
        to: "support@acme.example".into(),
        subject: Some("Printer on fire".into()),
        message_id: Some(unique_id("msg")),
        in_reply_to: None,
        references: None,
        headers: Vec::new(),
        body: "Hello,\nthe printer is on fire again.\n\nCarol\n".into(),
        env_from: None,
        rcpt: None,
    }
}

#[derive(Debug, Clone)]
pub struct Msg {
    from: String,
    to: String,
    subject: Option<String>,
    message_id: Option<String>,
    in_reply_to: Option<String>,
    references: Option<String>,
    headers: Vec<(String, String)>,
    body: String,
    env_from: Option<String>,
    rcpt: Option<String>,
}

impl Msg {
    /// The From header, e.g. `"Dave <dave@example.org>"`.
    pub fn from(mut self, from: &str) -> Msg {
        self.from = from.into();
        self
    }

    /// The To header; also the envelope recipient unless [`Msg::rcpt_to`].
    pub fn to(mut self, to: &str) -> Msg {
        self.to = to.into();
        self
    }

    pub fn subject(mut self, subject: &str) -> Msg {
        self.subject = Some(subject.into());
        self
    }

    pub fn no_subject(mut self) -> Msg {
        self.subject = None;
        self
    }

    /// With angle brackets, e.g. `"<p@x>"`.
    pub fn message_id(mut self, id: &str) -> Msg {
        self.message_id = Some(id.into());
        self
    }

    pub fn no_message_id(mut self) -> Msg {
        self.message_id = None;
        self
    }

    pub fn in_reply_to(mut self, id: &str) -> Msg {
        self.in_reply_to = Some(id.into());
        self
    }

    /// The References header value, e.g. `"<a@x> <b@x>"`.
    pub fn references(mut self, ids: &str) -> Msg {
        self.references = Some(ids.into());
        self
    }

    /// Any other header.
    pub fn header(mut self, name: &str, value: &str) -> Msg {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Msg {
        self.body = body.into();
        self
    }

    /// The envelope sender (default: the From address).
    pub fn mail_from(mut self, addr: &str) -> Msg {
        self.env_from = Some(addr.into());
        self
    }

    /// The envelope recipient (default: the To address).
    pub fn rcpt_to(mut self, addr: &str) -> Msg {
        self.rcpt = Some(addr.into());
        self
    }

    /// The Message-ID, as in the header (`""` if none).
    pub fn mid(&self) -> String {
        self.message_id.clone().unwrap_or_default()
    }

    pub fn env_from(&self) -> String {
        self.env_from
            .clone()
            .unwrap_or_else(|| bare_address(&self.from))
    }

    pub fn rcpt(&self) -> String {
        self.rcpt.clone().unwrap_or_else(|| bare_address(&self.to))
    }

    /// The message bytes, CRLF line endings.
    pub fn build(&self) -> Vec<u8> {
        let mut h = vec![
            format!("From: {}", self.from),
            format!("To: {}", self.to),
            "Date: Tue, 24 Nov 2026 10:00:00 +0000".to_string(),
        ];
        if let Some(s) = &self.subject {
            h.push(format!("Subject: {s}"));
        }
        if let Some(id) = &self.message_id {
            h.push(format!("Message-ID: {id}"));
        }
        if let Some(id) = &self.in_reply_to {
            h.push(format!("In-Reply-To: {id}"));
        }
        if let Some(ids) = &self.references {
            h.push(format!("References: {ids}"));
        }
        h.push("MIME-Version: 1.0".into());
        h.push("Content-Type: text/plain; charset=utf-8".into());
        for (name, value) in &self.headers {
            h.push(format!("{name}: {value}"));
        }
        let mut out = h.join("\r\n");
        out.push_str("\r\n\r\n");
        out.push_str(&self.body.replace("\r\n", "\n").replace('\n', "\r\n"));
        out.into_bytes()
    }
}

/// `"Name <a@b>"` → `"a@b"`; a bare address stays as it is.
pub fn bare_address(s: &str) -> String {
    match (s.rfind('<'), s.rfind('>')) {
        (Some(l), Some(r)) if l < r => s[l + 1..r].trim().to_string(),
        _ => s.trim().to_string(),
    }
}
