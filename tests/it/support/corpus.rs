//! The mail corpus of `shared/corpus` (see its README): finding the files,
//! and delivering them as an MTA would (CRLF lines, dot-stuffed, MAIL FROM
//! from the Return-Path).

use std::path::{Path, PathBuf};

use super::smtp::{Client, Reply};

/// MAIL FROM for a message without a usable Return-Path.
pub const PLAIN_SENDER: &str = "corpus-sender@test.example";

/// `shared/corpus`, next to the crate (it may be absent: tests skip then).
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Every `.eml` under `dir`, sorted (the order decides which of two copies
/// of a Message-ID is the first).
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
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

/// The unfolded values of the header `name` (any case) in the header block
/// of `raw`, whatever its line endings.
pub fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut fields: Vec<String> = Vec::new();
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .iter()
        .filter_map(|f| {
            let (n, v) = f.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// MAIL FROM for a corpus message: its Return-Path address; `""` (the null
/// sender) for `<>`; a plain address when there is none or it is unusable.
pub fn envelope_sender(raw: &[u8]) -> String {
    let Some(value) = header_values(raw, "return-path").into_iter().next() else {
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
pub fn longest_line(encoded: &[u8]) -> usize {
    encoded
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
        .max()
        .unwrap_or(0)
}

/// One transaction on an open session: MAIL FROM `from`, RCPT TO the
/// support channel, DATA `encoded` (already SMTP data). The first reply that
/// is not a success, else the reply to the data.
pub fn deliver(c: &mut Client, from: &str, encoded: &[u8]) -> Reply {
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
