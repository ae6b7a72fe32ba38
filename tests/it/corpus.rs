//! Every message of `shared/corpus` (real mail from many clients and
//! projects, see its README) delivered over SMTP to one daemon, as an MTA
//! would: CRLF lines, dot-stuffed, MAIL FROM from the Return-Path.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::support::{to_smtp_data, Client, Daemon, Reply};

/// MAIL FROM for a message without a usable Return-Path.
const PLAIN_SENDER: &str = "corpus-sender@test.example";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Every `.eml` under `dir`, sorted (the order decides which of two copies
/// of a Message-ID is the first).
fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "eml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The first `Return-Path:` value of the header block, whatever the file's
/// line endings.
fn return_path(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("return-path")
            .then(|| value.trim().to_string())
    })
}

/// MAIL FROM for a corpus message: its Return-Path address; `""` (the null
/// sender) for `<>`; a plain address when there is none or it is unusable.
fn envelope_sender(raw: &[u8]) -> String {
    let Some(value) = return_path(raw) else {
        return PLAIN_SENDER.into();
    };
    let addr = match (value.find('<'), value.find('>')) {
        (Some(l), Some(r)) if l < r => value[l + 1..r].trim(),
        _ => value.trim(),
    };
    if addr.is_empty() {
        return String::new();
    }
    let odd = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;\"\\".contains(c);
    if !addr.is_ascii() || addr.chars().any(odd) {
        return PLAIN_SENDER.into();
    }
    if !addr.contains('@') {
        // `<MAILER-DAEMON>`: keep the local part, give it a domain.
        return format!("{addr}@corpus.example");
    }
    addr.to_string()
}

/// The longest line of SMTP data, without its CRLF.
fn longest_line(encoded: &[u8]) -> usize {
    encoded
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
        .max()
        .unwrap_or(0)
}

fn deliver(c: &mut Client, from: &str, encoded: &[u8]) -> Reply {
    let reply = c.mail_from(from);
    if reply.code != 250 {
        return reply;
    }
    let reply = c.rcpt_to("support@acme.example");
    if reply.code != 250 {
        return reply;
    }
    c.data_encoded(encoded)
}

#[test]
fn every_corpus_message_is_accepted() {
    let dir = corpus_dir();
    if !dir.is_dir() {
        eprintln!("skipped: no corpus at {}", dir.display());
        return;
    }
    let files = eml_files(&dir);
    assert!(!files.is_empty(), "no .eml files under {}", dir.display());

    let d = Daemon::start("");
    let started = Instant::now();
    let mut client: Option<Client> = None;
    let mut failures = Vec::new();
    let (mut accepted, mut refused_long) = (0, 0);
    for path in &files {
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string();
        let raw = std::fs::read(path).unwrap();
        let encoded = to_smtp_data(&raw);
        let longest = longest_line(&encoded);
        let from = envelope_sender(&raw);

        let c = client.get_or_insert_with(|| Client::ready(d.smtp_addr()));
        let reply = deliver(c, &from, &encoded);
        if reply.code == 250 {
            accepted += 1;
        } else if longest > 998 && reply.status() == "554 5.3.4" {
            refused_long += 1;
        } else {
            failures.push(format!(
                "{name} (MAIL FROM:<{from}>, longest line {longest}): {reply}"
            ));
        }
        if reply.code != 250 {
            // A refusal may end the session: go on in a new one.
            client = None;
        }
    }
    if let Some(mut c) = client {
        let _ = c.quit();
    }
    eprintln!(
        "corpus: {} files, {accepted} accepted, {refused_long} refused for long lines, \
         {} failed, in {:?}",
        files.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus messages were not accepted:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );

    let health = d.health();
    let tickets = health["tickets"].as_u64().unwrap_or(0);
    assert!(tickets > 0, "health after the corpus: {health}");
    assert!(!d.tickets().is_empty());
}
