//! Reading the emails postdesk sent: the `.eml` files of the file transport
//! (or the DATA an SMTP sink recorded), parsed just enough to check them.
//!
//! Headers are unfolded; bodies are decoded from quoted-printable or base64
//! (minimally: enough for the ASCII texts the tests use) and their line ends
//! made `\n`. Multipart bodies are split on their boundary, one level deep
//! (enough for multipart/alternative).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wait_until;

/// One email: its headers (unfolded, in order) and its body.
#[derive(Debug, Clone)]
pub struct Eml {
    /// The file name (or a label for mail that was not a file).
    pub name: String,
    /// The whole message, as text (lossy UTF-8).
    pub raw: String,
    headers: Vec<(String, String)>,
    /// The body as sent (still transfer-encoded), CRLF line ends kept.
    body: String,
}

/// One leaf part of an email: its content type (lowercase, no parameters)
/// and its decoded text.
#[derive(Debug, Clone)]
pub struct Part {
    pub content_type: String,
    pub text: String,
}

impl Eml {
    /// Parses `bytes` (an RFC 5322 message).
    pub fn parse(name: &str, bytes: &[u8]) -> Eml {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let (headers, body) = split_message(&raw);
        Eml {
            name: name.to_string(),
            raw: raw.clone(),
            headers,
            body,
        }
    }

    /// Every header, unfolded, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first header called `name` (any case), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many headers are called `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The `Message-ID`, with its angle brackets (`""` if none).
    pub fn message_id(&self) -> String {
        self.header("Message-ID")
            .and_then(|v| msg_ids(v).into_iter().next())
            .unwrap_or_default()
    }

    /// The ids in `In-Reply-To`.
    pub fn in_reply_to(&self) -> Vec<String> {
        self.header("In-Reply-To").map(msg_ids).unwrap_or_default()
    }

    /// The ids in `References`, oldest first.
    pub fn references(&self) -> Vec<String> {
        self.header("References").map(msg_ids).unwrap_or_default()
    }

    /// `X-Postdesk-Ticket`, as a number.
    pub fn ticket(&self) -> Option<u64> {
        self.header("X-Postdesk-Ticket")?.trim().parse().ok()
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default().to_string()
    }

    /// Whether `addr` (a bare address) is in the `To` header.
    pub fn is_to(&self, addr: &str) -> bool {
        self.header("To")
            .is_some_and(|to| to.to_ascii_lowercase().contains(&addr.to_ascii_lowercase()))
    }

    /// The top-level content type, lowercase, without parameters.
    pub fn content_type(&self) -> String {
        media_type(self.header("Content-Type"))
    }

    /// The leaf parts, decoded. A single-part email is one part.
    pub fn parts(&self) -> Vec<Part> {
        leaf_parts(&self.headers, &self.body)
    }

    /// The decoded text/plain part (or the whole body of a single-part
    /// email), with `\n` line ends. Panics if there is none.
    pub fn text(&self) -> String {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == "text/plain")
            .map(|p| p.text)
            .unwrap_or_else(|| panic!("no text/plain part in {}:\n{}", self.name, self.raw))
    }

    /// The decoded text/html part, if any.
    pub fn html(&self) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == "text/html")
            .map(|p| p.text)
    }
}

/// The text after the signature separator (the last line that is exactly
/// `-- `), trimmed; `None` when there is no separator.
pub fn footer(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().rposition(|l| *l == "-- ")?;
    Some(lines[at + 1..].join("\n").trim().to_string())
}

/// The `<...>` tokens of a header value, in order.
pub fn msg_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(l) = rest.find('<') {
        let Some(r) = rest[l..].find('>') else { break };
        out.push(rest[l..l + r + 1].to_string());
        rest = &rest[l + r + 1..];
    }
    out
}

/// The `.eml` files in `dir` (no hidden or temporary files), parsed, in
/// file-name order. A missing folder has none.
pub fn read_dir(dir: &Path) -> Vec<Eml> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".eml") && !name.starts_with('.')
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| {
            // A file may be renamed into place between listing and reading.
            let bytes = std::fs::read(p).ok()?;
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some(Eml::parse(&name, &bytes))
        })
        .collect()
}

/// Waits until the emails in `dir` satisfy `ok`; returns them all.
pub fn wait_for(
    dir: &Path,
    deadline: Duration,
    what: &str,
    ok: impl Fn(&[Eml]) -> bool,
) -> Vec<Eml> {
    wait_until(deadline, what, || {
        let all = read_dir(dir);
        if ok(&all) {
            Ok(all)
        } else {
            Err(describe(&all))
        }
    })
}

/// Waits until an email in `dir` matches `ok`; returns it.
pub fn wait_for_one(dir: &Path, deadline: Duration, what: &str, ok: impl Fn(&Eml) -> bool) -> Eml {
    wait_until(deadline, what, || {
        let all = read_dir(dir);
        all.iter()
            .find(|e| ok(e))
            .cloned()
            .ok_or_else(|| describe(&all))
    })
}

/// One line per email: file, To, Subject — for failure messages.
pub fn describe(all: &[Eml]) -> String {
    if all.is_empty() {
        return "no emails".to_string();
    }
    let lines: Vec<String> = all
        .iter()
        .map(|e| {
            format!(
                "{} To: {} Subject: {}",
                e.name,
                e.header("To").unwrap_or("-"),
                e.subject()
            )
        })
        .collect();
    format!("{} emails:\n{}", all.len(), lines.join("\n"))
}

// ---- parsing ----

/// Splits a message (or a MIME part) into unfolded headers and the body.
fn split_message(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (&raw[..b], &raw[b + 2..]),
        (Some(a), _) => (&raw[..a], &raw[a + 4..]),
        (None, Some(b)) => (&raw[..b], &raw[b + 2..]),
        (None, None) => (raw, ""),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    (headers, body.to_string())
}

/// `text/plain; charset=utf-8` → `text/plain`; none → `text/plain`.
fn media_type(value: Option<&str>) -> String {
    value
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "text/plain".to_string())
}

/// A parameter of a header value, e.g. `boundary`, unquoted.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn leaf_parts(headers: &[(String, String)], body: &str) -> Vec<Part> {
    let content_type = media_type(header(headers, "Content-Type"));
    if content_type.starts_with("multipart/") {
        let Some(boundary) = header(headers, "Content-Type").and_then(|v| param(v, "boundary"))
        else {
            return Vec::new();
        };
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        // Skip the preamble; stop at the closing delimiter.
        for chunk in body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.strip_prefix("\r\n").unwrap_or(chunk);
            let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
            // The line end before the next delimiter belongs to it.
            let chunk = chunk
                .strip_suffix("\r\n")
                .or_else(|| chunk.strip_suffix('\n'))
                .unwrap_or(chunk);
            let (h, b) = split_message(chunk);
            parts.extend(leaf_parts(&h, &b));
        }
        return parts;
    }
    let encoding = header(headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => decode_base64(body),
        _ => body.as_bytes().to_vec(),
    };
    let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
    vec![Part { content_type, text }]
}

/// Quoted-printable: `=XX` is a byte, `=` at a line end is a soft break.
fn decode_qp(body: &str) -> Vec<u8> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        if bytes[i + 1..].starts_with(b"\r\n") {
            i += 3;
        } else if bytes[i + 1..].starts_with(b"\n") {
            i += 2;
        } else if let Some(b) = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

/// Base64, ignoring whitespace and anything outside the alphabet.
fn decode_base64(body: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for v in body.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded_headers_and_a_qp_body() {
        let e = Eml::parse(
            "x",
            b"Subject: a\r\n b\r\nReferences: <a@x>\r\n <b@x>\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhi=\r\n there\r\n--=20\r\nfoot =E2=80=94\r\n",
        );
        assert_eq!(e.subject(), "a b");
        assert_eq!(e.references(), vec!["<a@x>", "<b@x>"]);
        assert_eq!(e.text(), "hi there\n-- \nfoot \u{2014}\n");
        assert_eq!(footer(&e.text()).as_deref(), Some("foot \u{2014}"));
    }

    #[test]
    fn splits_multipart_alternative() {
        let e = Eml::parse(
            "x",
            b"Content-Type: multipart/alternative;\r\n boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nplain\r\n--BB\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--BB--\r\n",
        );
        assert_eq!(e.content_type(), "multipart/alternative");
        assert_eq!(e.text(), "plain");
        assert_eq!(e.html().as_deref(), Some("<b>hi</b>"));
    }
}
