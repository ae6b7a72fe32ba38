//! `postdesk import`: load an existing mailbox (mbox or Maildir) into
//! tickets with the same threading as live mail. Nothing is sent and no
//! automation runs; a message already stored (same Message-ID, or the same
//! bytes when it has none) is skipped, so importing twice is harmless.
//!
//! With the daemon running, messages go through its admin socket (`import`
//! command), since the database is locked by the daemon; otherwise the
//! store is opened directly. Either way each message is committed by the
//! store writer like an SMTP delivery.
//!
//! The mailbox readers ([`split_mbox`], [`maildir_files`]) are plain
//! functions (the mapping of a message to an [`Inbound`] is
//! [`Inbound::imported`], shared with the admin `import` command); the
//! runner is the shell.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admin::proto::import_outcome_from_json;
use crate::clock;
use crate::config::Config;
use crate::store::{Inbound, Outcome};

/// Splits an mbox (mboxo/mboxrd) into messages: a message starts at a line
/// beginning with `From ` at the start of the file or after a blank line;
/// the `From ` line itself is dropped and `>From ` quoting is undone one
/// level. Line endings are kept as they are in the file.
#[cfg(test)]
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    MboxReader::new(data)
        .collect::<std::io::Result<Vec<_>>>()
        .unwrap_or_default()
}

/// Reads an mbox one message at a time, by [`split_mbox`]'s rules, so that
/// a mailbox larger than memory imports in the memory of its largest
/// message.
pub struct MboxReader<R> {
    r: R,
    /// The message being read (`None` before the first `From ` line).
    current: Option<Vec<u8>>,
    prev_blank: bool,
    line: Vec<u8>,
    /// Bytes consumed so far.
    pos: u64,
    done: bool,
}

impl<R: BufRead> MboxReader<R> {
    pub fn new(r: R) -> MboxReader<R> {
        MboxReader {
            r,
            current: None,
            prev_blank: true,
            line: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    /// Bytes of the mbox read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next message, blank ones skipped; `None` at the end.
    fn next_message(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if self.done {
                return Ok(None);
            }
            self.line.clear();
            let n = self.r.read_until(b'\n', &mut self.line)?;
            self.pos += n as u64;
            let finished = if n == 0 {
                self.done = true;
                self.current.take()
            } else {
                self.take_line()
            };
            if let Some(mut m) = finished {
                trim_separator_blank(&mut m);
                if !m.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Some(m));
                }
            }
        }
    }

    /// Adds `self.line` to the current message; returns the previous
    /// message if the line starts a new one.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let line = &self.line;
        let is_separator = self.prev_blank && line.starts_with(b"From ");
        self.prev_blank = line == b"\n" || line == b"\r\n";
        if is_separator {
            return self.current.replace(Vec::new());
        }
        if let Some(m) = self.current.as_mut() {
            let quoted = line.iter().take_while(|b| **b == b'>').count();
            if quoted > 0 && line[quoted..].starts_with(b"From ") {
                m.extend_from_slice(&line[1..]);
            } else {
                m.extend_from_slice(line);
            }
        }
        None
    }
}

impl<R: BufRead> Iterator for MboxReader<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_message() {
            Ok(m) => m.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The blank line before the next `From ` belongs to the mbox format.
fn trim_separator_blank(m: &mut Vec<u8>) {
    if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    } else if m.ends_with(b"\n\n") {
        m.truncate(m.len() - 1);
    }
}

/// The message files of a Maildir (`cur/` and `new/`), in name order (which
/// is delivery order for the usual `time.pid.host` names).
pub fn maildir_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut found_any = false;
    for sub in ["cur", "new"] {
        let path = dir.join(sub);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found_any = true;
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() && !entry.file_name().to_string_lossy().starts_with('.')
            {
                files.push(entry.path());
            }
        }
    }
    if !found_any {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a Maildir (no cur/ or new/)", dir.display()),
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub messages: u64,
    pub tickets_created: u64,
    pub threaded: u64,
    pub kept_without_ticket: u64,
    pub already_present: u64,
    pub failed: u64,
}

impl Summary {
    pub fn count(&mut self, outcome: &Outcome) {
        self.messages += 1;
        match outcome {
            Outcome::Ticket {
                duplicate: true, ..
            }
            | Outcome::Kept { duplicate: true } => self.already_present += 1,
            Outcome::Ticket { created: true, .. } => self.tickets_created += 1,
            Outcome::Ticket { .. } => self.threaded += 1,
            Outcome::Kept { .. } => self.kept_without_ticket += 1,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages: {} new tickets, {} added to existing tickets, {} kept without a ticket, {} already present, {} failed",
            self.messages, self.tickets_created, self.threaded, self.kept_without_ticket, self.already_present, self.failed
        )
    }
}

/// Where the messages come from.
pub enum Mailbox {
    Mbox(PathBuf),
    Maildir(PathBuf),
}

/// Runs an import; prints progress to stderr when it is a terminal.
pub async fn run(
    config: Config,
    source: Mailbox,
    channel: Option<String>,
) -> Result<Summary, String> {
    let config = Arc::new(config);
    let channel = match channel {
        Some(c) if config.channel(&c).is_some() => c,
        Some(c) => {
            let known: Vec<&str> = config.channels.iter().map(|c| c.id.as_str()).collect();
            return Err(format!(
                "unknown channel \"{c}\" (known: {})",
                known.join(", ")
            ));
        }
        None => config
            .channels
            .first()
            .map(|c| c.id.clone())
            .ok_or_else(|| "the config has no channel".to_string())?,
    };
    // Messages are read one at a time, from an mbox as from a Maildir.
    let mut source = match &source {
        Mailbox::Mbox(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            Source::Mbox {
                path: path.clone(),
                reader: MboxReader::new(std::io::BufReader::with_capacity(1 << 16, file)),
                len,
            }
        }
        Mailbox::Maildir(dir) => Source::Maildir {
            files: maildir_files(dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .into_iter(),
            read: 0,
        },
    };
    let bar = source.progress_bar();
    let socket = config.server.admin_socket.clone();
    let daemon_running = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    let mut summary = Summary::default();
    // The mbox read error that ended the import ([`Source::next_raw`]).
    let mut fatal = None;
    if daemon_running {
        bar.println(format!(
            "daemon running: importing through {}",
            socket.display()
        ));
        loop {
            let raw = match source.next_raw(&bar, &mut summary) {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            };
            use base64::Engine as _;
            let req = crate::admin::proto::Request::Import {
                raw_base64: base64::engine::general_purpose::STANDARD.encode(&raw),
                channel: Some(channel.clone()),
            };
            let path = socket.clone();
            let resp = tokio::task::spawn_blocking(move || crate::ctl::request(&path, &req)).await;
            match resp {
                Ok(Ok(r)) if r.ok => match r.data.as_ref().and_then(import_outcome_from_json) {
                    Some(o) => summary.count(&o),
                    None => summary.failed += 1,
                },
                Ok(Ok(r)) => {
                    bar.println(format!(
                        "refused: {}",
                        r.error.map(|e| e.message).unwrap_or_default()
                    ));
                    summary.failed += 1;
                }
                Ok(Err(e)) => return Err(format!("admin socket: {e}")),
                Err(e) => return Err(e.to_string()),
            }
        }
    } else {
        let (store, writer) = crate::store::Store::connect(config.clone())
            .await
            .map_err(|e| {
                format!(
                    "{e} (if the daemon is running, its admin socket {} did not answer)",
                    socket.display()
                )
            })?;
        // Keep up to 64 messages in flight so the writer can group-commit.
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            while in_flight.len() >= 64 {
                if let Some(done) = in_flight.join_next().await {
                    tally(&mut summary, done, &bar);
                }
            }
            let raw = match source.next_raw(&bar, &mut summary) {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            };
            let inb = Inbound::imported(&config, raw, &channel, clock::now_millis());
            // Submitted here, in mailbox order, so a thread is built in the
            // order it was written; only the waiting is concurrent.
            let done = store.submit(inb);
            in_flight.spawn(async move { done.await.map_err(|e| e.to_string()) });
        }
        while let Some(done) = in_flight.join_next().await {
            tally(&mut summary, done, &bar);
        }
        store.shutdown();
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
    bar.finish_and_clear();
    match fatal {
        Some(e) if summary.messages + summary.failed == 0 => Err(e),
        Some(e) => Err(format!(
            "{e} (stopped there; the messages before it were imported: {summary})"
        )),
        None => Ok(summary),
    }
}

type Joined = Result<Result<Outcome, String>, tokio::task::JoinError>;

fn tally(summary: &mut Summary, done: Joined, bar: &indicatif::ProgressBar) {
    match done {
        Ok(Ok(o)) => summary.count(&o),
        Ok(Err(e)) => {
            bar.println(format!("not imported: {e}"));
            summary.failed += 1;
        }
        Err(e) => {
            bar.println(format!("not imported: {e}"));
            summary.failed += 1;
        }
    }
}

/// Where the messages come from, one at a time.
enum Source {
    Mbox {
        path: PathBuf,
        reader: MboxReader<std::io::BufReader<std::fs::File>>,
        /// The file's size, for the progress bar.
        len: u64,
    },
    Maildir {
        files: std::vec::IntoIter<PathBuf>,
        read: u64,
    },
}

impl Source {
    /// The next message's bytes, or why it cannot be read. An mbox that
    /// fails to read ends the import there (after this error).
    fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        match self {
            Source::Mbox { path, reader, .. } => reader
                .next()
                .map(|r| r.map_err(|e| format!("cannot read {}: {e}", path.display()))),
            Source::Maildir { files, read } => {
                let p = files.next()?;
                *read += 1;
                Some(std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display())))
            }
        }
    }

    /// The next message to import, the progress bar moved on. An
    /// unreadable Maildir file is reported, counted as failed and skipped;
    /// an mbox read error is returned (what follows cannot be split
    /// reliably).
    fn next_raw(
        &mut self,
        bar: &indicatif::ProgressBar,
        summary: &mut Summary,
    ) -> Result<Option<Vec<u8>>, String> {
        while let Some(item) = self.next() {
            bar.set_position(self.position());
            match item {
                Ok(raw) => return Ok(Some(raw)),
                Err(e) if matches!(self, Source::Mbox { .. }) => return Err(e),
                Err(e) => {
                    bar.println(e);
                    summary.failed += 1;
                }
            }
        }
        Ok(None)
    }

    /// Bytes read (mbox) or messages read (Maildir).
    fn position(&self) -> u64 {
        match self {
            Source::Mbox { reader, .. } => reader.position(),
            Source::Maildir { read, .. } => *read,
        }
    }

    /// A progress bar on stderr when it is a terminal (hidden otherwise):
    /// by bytes for an mbox, by messages for a Maildir.
    fn progress_bar(&self) -> indicatif::ProgressBar {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return indicatif::ProgressBar::hidden();
        }
        let (len, template) = match self {
            Source::Mbox { len, .. } => (
                *len,
                "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            ),
            Source::Maildir { files, .. } => (
                files.len() as u64,
                "{bar:40} {pos}/{len} messages ({per_sec}, eta {eta})",
            ),
        };
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn mbox_split_and_unquote() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nhello\n>From the start\n>>From deeper\n\nFrom b@x Mon Jan  1 00:00:01 2024\nSubject: two\n\nbye\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0],
            b"Subject: one\n\nhello\nFrom the start\n>From deeper\n".to_vec()
        );
        assert_eq!(msgs[1], b"Subject: two\n\nbye\n".to_vec());
    }

    #[test]
    fn from_inside_a_paragraph_is_not_a_separator() {
        let mbox =
            b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nline\nFrom here on it is text\n";
        assert_eq!(split_mbox(mbox).len(), 1);
        assert!(split_mbox(b"").is_empty());
        assert!(split_mbox(b"no separator at all\n").is_empty());
    }

    #[test]
    fn the_mbox_reader_streams_with_any_buffer_size() {
        let mbox: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\r\nSubject: one\r\n\r\nhello\r\n>From quoted\r\n\r\nFrom b@x Mon Jan  1 00:00:01 2024\r\nSubject: two\r\n\r\nno newline at the end";
        for cap in [1, 3, 7, 64, 1 << 16] {
            let mut reader = MboxReader::new(std::io::BufReader::with_capacity(cap, mbox));
            let msgs: Vec<Vec<u8>> = reader.by_ref().map(Result::unwrap).collect();
            assert_eq!(
                msgs,
                vec![
                    b"Subject: one\r\n\r\nhello\r\nFrom quoted\r\n".to_vec(),
                    b"Subject: two\r\n\r\nno newline at the end".to_vec(),
                ],
                "buffer of {cap}"
            );
            assert_eq!(reader.position(), mbox.len() as u64);
        }
    }

    /// Reads `data`, then fails.
    struct ThenFail<'a>(&'a [u8]);

    impl std::io::Read for ThenFail<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk gone"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_mbox_reader_yields_each_message_before_reading_on_and_stops_at_an_error() {
        // The second message is cut off by a read error: the first comes
        // out whole (so nothing needs the whole file), then the error, then
        // nothing.
        let data = b"From a@x\nSubject: one\n\nbody\n\nFrom b@x\nSubject: tw";
        let mut reader = MboxReader::new(std::io::BufReader::with_capacity(8, ThenFail(data)));
        assert_eq!(
            reader.next().unwrap().unwrap(),
            b"Subject: one\n\nbody\n".to_vec()
        );
        assert_eq!(reader.next().unwrap().unwrap_err().to_string(), "disk gone");
        assert!(reader.next().is_none());
    }

    #[test]
    fn maildir_needs_cur_or_new() {
        let dir = std::env::temp_dir().join(format!("pd-maildir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(dir.join("new"));
        let _ = std::fs::create_dir_all(dir.join("cur"));
        let _ = std::fs::write(dir.join("new/2.b"), b"x");
        let _ = std::fs::write(dir.join("cur/1.a:2,S"), b"y");
        let _ = std::fs::write(dir.join("cur/.hidden"), b"z");
        let files = maildir_files(&dir).unwrap_or_default();
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["1.a:2,S", "2.b"]);
        assert!(maildir_files(&dir.join("nope")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
