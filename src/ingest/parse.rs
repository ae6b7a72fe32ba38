//! Raw bytes → [`ParsedMail`]. Never fails: a message mail-parser cannot
//! make sense of still yields a `ParsedMail` (empty fields, a Message-ID
//! derived from its bytes), because bad mail is data, not an error.

use mail_parser::{HeaderValue, MessageParser};
use sha2::{Digest, Sha256};

use super::{header, normalize_message_id};

/// Longest decoded text kept per message (the raw bytes are always kept).
pub const MAX_TEXT_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mailbox {
    /// Lower-cased address.
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMail {
    /// Normalised (see [`normalize_message_id`]). When the message has none
    /// (or an unusable one) it is derived from the SHA-256 of the raw bytes,
    /// so that a retransmission of the same bytes is still a duplicate.
    pub message_id: String,
    /// Whether `message_id` came from the message itself.
    pub has_message_id: bool,
    /// The Message-ID exactly as the header wrote it (trimmed), when that
    /// differs from `<message_id>`: views show it as written (SPEC §12),
    /// lookups use the normalised form.
    pub message_id_written: Option<String>,
    pub in_reply_to: Vec<String>,
    /// In header order (oldest first).
    pub references: Vec<String>,
    pub subject: String,
    pub from: Option<Mailbox>,
    pub to: Vec<String>,
    /// The Cc addresses, lower-cased.
    pub cc: Vec<String>,
    /// Milliseconds since the epoch, from the Date header.
    pub date: Option<i64>,
    /// Decoded text (text/plain, else HTML rendered to text), capped.
    pub text: String,
    /// Whether mail-parser understood the message at all.
    pub well_formed: bool,
    /// Headers that mark automatic or bulk mail, lower-cased name and
    /// trimmed value (see [`super::classify`]).
    pub markers: Vec<(String, String)>,
    /// The top-level Content-Type is multipart/report (a DSN, an ARF
    /// report, a read receipt): worth a look by [`super::bounce::detect`].
    pub report: bool,
}

impl ParsedMail {
    /// The values of every `Authentication-Results` header, topmost first.
    pub fn auth_results(&self) -> Vec<String> {
        self.markers
            .iter()
            .filter(|(name, _)| name == "authentication-results")
            .map(|(_, value)| value.clone())
            .collect()
    }
}

/// The headers [`super::classify`] looks at.
pub const MARKER_HEADERS: &[&str] = &[
    "auto-submitted",
    "precedence",
    "list-id",
    "list-unsubscribe",
    "x-autoreply",
    "x-autorespond",
    "x-auto-response-suppress",
    "x-postdesk-ticket",
    // Not a loop marker: read from the raw header block in order, topmost
    // first, for [`super::authres::verdict`].
    "authentication-results",
];

pub fn parse(raw: &[u8]) -> ParsedMail {
    let parsed = MessageParser::default().parse(raw);
    let Some(msg) = parsed else {
        return ParsedMail {
            message_id: derived_message_id(raw),
            has_message_id: false,
            message_id_written: None,
            in_reply_to: Vec::new(),
            references: Vec::new(),
            subject: String::new(),
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            date: None,
            text: cap(String::from_utf8_lossy(raw).into_owned()),
            well_formed: false,
            markers: raw_markers(raw),
            report: false,
        };
    };
    let own_id = msg.message_id().and_then(normalize_message_id);
    let from = msg.from().and_then(|a| a.first()).and_then(|a| {
        let email = a.address()?.trim().to_ascii_lowercase();
        if email.is_empty() {
            return None;
        }
        let name = a
            .name()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Some(Mailbox { email, name })
    });
    let addresses = |list: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        list.map(|list| {
            list.iter()
                .filter_map(|a| a.address().map(|s| s.trim().to_ascii_lowercase()))
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default()
    };
    let to = addresses(msg.to());
    let cc = addresses(msg.cc());
    let text = msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let report = mail_parser::MimeHeaders::content_type(&msg).is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    // The header is read again from the raw bytes only when mail-parser's
    // id already differs from the normal form (a case-folded domain,
    // spaces): the usual message costs no second scan.
    let message_id_written = match (msg.message_id(), own_id.as_ref()) {
        (Some(parsed), Some(id)) if parsed != id => {
            raw_message_id(raw).filter(|written| *written != super::bracketed(id))
        }
        _ => None,
    };
    ParsedMail {
        message_id_written,
        has_message_id: own_id.is_some(),
        message_id: own_id.unwrap_or_else(|| derived_message_id(raw)),
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        subject: msg
            .subject()
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        from,
        to,
        cc,
        date: msg.date().map(|d| d.to_timestamp().saturating_mul(1000)),
        text: cap(text),
        well_formed: true,
        report,
        markers: raw_markers(raw),
    }
}

/// How far into a message its header block is looked for markers.
const MAX_HEADER_SCAN: usize = 256 * 1024;

/// The [`MARKER_HEADERS`] of the message's own header block (see
/// [`raw_fields`]).
fn raw_markers(raw: &[u8]) -> Vec<(String, String)> {
    raw_fields(raw, MARKER_HEADERS)
}

/// The fields named `names` (lower-case) of the message's own header block
/// (up to the first empty line), unfolded, decoded lossily, in order. Read
/// from the raw bytes rather than from mail-parser, which leaves out a
/// header whose value is not UTF-8: an auto-responder's `Auto-Submitted`
/// must not vanish because of one stray byte (found by tests/fuzz.rs).
fn raw_fields(raw: &[u8], names: &[&str]) -> Vec<(String, String)> {
    let head = &raw[..raw.len().min(MAX_HEADER_SCAN)];
    let text = String::from_utf8_lossy(&head[..header_end(head)]);
    header::message_fields(&text)
        .filter_map(|(name, value)| {
            let known = names.iter().find(|n| n.eq_ignore_ascii_case(name))?;
            Some(((*known).to_owned(), value.into_owned()))
        })
        .collect()
}

/// Where the header block of `raw` ends: its first empty line, or the end.
fn header_end(raw: &[u8]) -> usize {
    let mut at = 0;
    for line in raw.split(|&b| b == b'\n') {
        if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
            return at.min(raw.len());
        }
        at += line.len() + 1;
    }
    raw.len()
}

/// The first `Message-ID` header of the message's own header block, as
/// written (unfolded, trimmed). Only called for messages that have one.
fn raw_message_id(raw: &[u8]) -> Option<String> {
    raw_fields(raw, &["message-id"])
        .into_iter()
        .next()
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

fn id_list(value: &HeaderValue<'_>) -> Vec<String> {
    let ids: Vec<String> = match value {
        HeaderValue::TextList(list) => list
            .iter()
            .filter_map(|s| normalize_message_id(s))
            .collect(),
        HeaderValue::Text(s) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter_map(normalize_message_id)
            .collect(),
        _ => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

fn derived_message_id(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}@postdesk.invalid")
}

fn cap(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_threading_headers() {
        let raw = b"From: Bob <BOB@Example.com>\r\nTo: support@acme.example\r\nSubject: Re: hi\r\nMessage-ID: <m2@x>\r\nIn-Reply-To: <m1@x>\r\nReferences: <m0@x> <m1@x>\r\n\r\nhello\r\n";
        let p = parse(raw);
        assert_eq!(p.message_id, "m2@x");
        assert!(p.has_message_id);
        assert_eq!(p.in_reply_to, vec!["m1@x"]);
        assert_eq!(p.references, vec!["m0@x", "m1@x"]);
        assert_eq!(
            p.from,
            Some(Mailbox {
                email: "bob@example.com".into(),
                name: Some("Bob".into())
            })
        );
        assert_eq!(p.subject, "Re: hi");
        assert_eq!(p.text.trim(), "hello");
    }

    #[test]
    fn a_message_id_is_kept_as_written_beside_its_normal_form() {
        let p = parse(b"Subject: x\r\nMessage-ID:  <Abc.Def@EXAMPLE.com>\r\n\r\nhi\r\n");
        assert_eq!(p.message_id, "Abc.Def@example.com");
        assert_eq!(
            p.message_id_written.as_deref(),
            Some("<Abc.Def@EXAMPLE.com>")
        );
        // Folded onto the next line.
        let p = parse(b"Message-ID:\r\n <x@Y.example>\r\nSubject: s\r\n\r\nhi\r\n");
        assert_eq!(p.message_id_written.as_deref(), Some("<x@Y.example>"));
        // Already in normal form: nothing extra kept.
        assert_eq!(
            parse(b"Message-ID: <a@b.example>\r\n\r\nhi\r\n").message_id_written,
            None
        );
    }

    #[test]
    fn missing_message_id_is_derived_from_bytes() {
        let a = parse(b"Subject: x\r\n\r\nbody\r\n");
        let b = parse(b"Subject: x\r\n\r\nbody\r\n");
        let c = parse(b"Subject: y\r\n\r\nbody\r\n");
        assert!(!a.has_message_id);
        assert_eq!(a.message_id, b.message_id);
        assert_ne!(a.message_id, c.message_id);
    }

    #[test]
    fn markers_survive_bytes_that_are_not_utf8_and_are_unfolded() {
        // A folded Auto-Submitted with a stray byte: mail-parser drops it.
        let p = parse(b"Auto-Submitted: auto-replied\r\n :\x80\r\nFrom: a@b.example\r\n\r\nhi\r\n");
        assert_eq!(
            p.markers,
            vec![(
                "auto-submitted".to_string(),
                "auto-replied :\u{fffd}".to_string()
            )]
        );
        let p = parse(b"PRECEDENCE:\r\n\tbulk\r\nSubject: x\r\n\r\nList-Id: <in@body>\r\n");
        assert_eq!(
            p.markers,
            vec![("precedence".to_string(), "bulk".to_string())]
        );
        // Only the message's own header block counts.
        assert!(parse(b"Subject: x\r\n\r\nAuto-Submitted: auto-replied\r\n")
            .markers
            .is_empty());
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [&b""[..], b"\0\0\0", b"\r\n\r\n", b":::\r\n"] {
            let _ = parse(raw);
        }
    }
}

/// Every message of the shared real-world corpus goes through the parser:
/// no panic, and the text of each message that has a text body comes out
/// decoded. Skips (with a note) when `../shared/corpus` is absent.
#[cfg(test)]
mod corpus {
    use super::*;
    use std::path::{Path, PathBuf};

    fn corpus_dir() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
        dir.is_dir().then_some(dir)
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for folder in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if folder.path().is_dir() {
                for f in std::fs::read_dir(folder.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if f.path().extension().is_some_and(|e| e == "eml") {
                        out.push(f.path());
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_corpus_message_parses() {
        let Some(dir) = corpus_dir() else {
            eprintln!("skipped: ../shared/corpus not found");
            return;
        };
        let files = files(&dir);
        assert!(
            files.len() > 300,
            "corpus looks truncated: {} files",
            files.len()
        );
        let mut with_text = 0;
        for path in &files {
            let Ok(raw) = std::fs::read(path) else {
                continue;
            };
            let parsed = parse(&raw);
            assert!(!parsed.message_id.is_empty(), "{}", path.display());
            // mail-parser found a text or HTML body: we must have its text.
            if let Some(m) = MessageParser::default().parse(&raw) {
                let has_body_text = m.body_text(0).is_some_and(|t| !t.trim().is_empty());
                if has_body_text {
                    with_text += 1;
                    assert!(
                        !parsed.text.trim().is_empty(),
                        "no text extracted from {}",
                        path.display()
                    );
                }
            }
        }
        assert!(with_text > 250, "only {with_text} messages had text");
    }

    #[test]
    fn charsets_are_decoded() {
        let Some(dir) = corpus_dir() else {
            eprintln!("skipped: ../shared/corpus not found");
            return;
        };
        let cases = [
            (
                "charsets/redmine__gmail-iso8859-2.eml",
                "Na štriku se suši šosić.",
            ),
            (
                "charsets/rubymail__multi_charset--japanese_shift_jis.eml",
                "このメールはテスト用のメールです。",
            ),
            (
                "charsets/rt__8859-15-message-series--msg1.eml",
                "test äöüßÄÖÜß€",
            ),
            (
                "charsets/otrs__PostMaster-Test6.box.eml",
                "Mit freundlichen Grüßen",
            ),
            ("charsets/redmine__body_ks_c_5601-1987.eml", "고맙습니다."),
        ];
        for (file, expect) in cases {
            let raw = std::fs::read(dir.join(file)).unwrap_or_default();
            let text = parse(&raw).text;
            assert!(text.contains(expect), "{file}: {text:?} lacks {expect:?}");
        }
    }
}
