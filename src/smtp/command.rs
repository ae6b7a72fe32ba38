//! PURE: the pieces of SMTP that `mailin`'s parser does not handle the way a
//! mail gateway must — `MAIL FROM` and `RCPT TO` with ESMTP parameters
//! (`SIZE=`, `BODY=`, `NOTIFY=`…), the null sender `<>`, a space after the
//! colon — and the enhanced status codes (RFC 2034) on the engine's replies.
//! The connection task normalises these commands before handing them to the
//! engine.

/// A parsed `MAIL FROM` / `RCPT TO` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    /// The address inside `<>`; empty for the null path.
    pub address: String,
    /// ESMTP parameters, keyword upper-cased: (`SIZE`, Some("1000")).
    pub params: Vec<(String, Option<String>)>,
}

impl PathArg {
    pub fn param(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref())
    }
}

/// The command verb, upper-cased (`MAIL`, `EHLO`, …).
pub fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end.min(16)]).to_ascii_uppercase()
}

/// Parses the argument of `MAIL FROM:` (`prefix` = "MAIL FROM:") or
/// `RCPT TO:`. `None` means a syntax error.
pub fn parse_path(line: &[u8], prefix: &str) -> Option<PathArg> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.trim_end_matches(['\r', '\n']);
    // `get`, not indexing: the prefix length may fall inside a multi-byte
    // character of a hostile line.
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line.get(prefix.len()..)?.trim_start();
    let rest = rest.strip_prefix('<')?;
    let close = rest.find('>')?;
    let mut address = rest[..close].trim().to_string();
    // Source routes (@a,@b:user@c) are obsolete; keep the mailbox.
    if address.starts_with('@') {
        address = address.rsplit_once(':').map(|(_, a)| a.to_string())?;
    }
    if address
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return None;
    }
    let mut params = Vec::new();
    for word in rest[close + 1..].split_whitespace() {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (word, None),
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        params.push((k.to_ascii_uppercase(), v));
    }
    Some(PathArg { address, params })
}

/// Adds an enhanced status code (RFC 2034) to a single-line reply written by
/// the engine, if it has none. Greeting-class and 354 replies are left alone.
pub fn with_enhanced_code(reply: Vec<u8>) -> Vec<u8> {
    if reply.len() < 5 || reply[3] != b' ' {
        return reply;
    }
    let code = match std::str::from_utf8(&reply[..3])
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(c) => c,
        None => return reply,
    };
    let text = &reply[4..];
    let has_code = text.len() > 5 && text[0].is_ascii_digit() && text[1] == b'.';
    let enhanced = match code {
        221 | 250 | 251 | 252 => "2.0.0",
        421 | 451 => "4.3.0",
        452 => "4.3.1",
        454 => "4.7.0",
        500 => "5.5.2",
        501 | 504 => "5.5.4",
        502 | 503 => "5.5.1",
        530 => "5.7.0",
        535 => "5.7.8",
        550 => "5.7.1",
        552 => "5.3.4",
        553 => "5.1.3",
        554 => "5.0.0",
        _ => return reply,
    };
    if has_code {
        return reply;
    }
    let mut out = Vec::with_capacity(reply.len() + 6);
    out.extend_from_slice(&reply[..4]);
    out.extend_from_slice(enhanced.as_bytes());
    out.push(b' ');
    out.extend_from_slice(text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Params = Vec<(String, Option<String>)>;

    fn path(line: &str) -> Option<(String, Params)> {
        parse_path(line.as_bytes(), "MAIL FROM:").map(|p| (p.address, p.params))
    }

    #[test]
    fn mail_from_forms() {
        assert_eq!(path("MAIL FROM:<a@b>\r\n"), Some(("a@b".into(), vec![])));
        assert_eq!(path("mail from: <a@b>\r\n"), Some(("a@b".into(), vec![])));
        assert_eq!(path("MAIL FROM:<>\r\n"), Some(("".into(), vec![])));
        assert_eq!(
            path("MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME\r\n"),
            Some((
                "a@b".into(),
                vec![
                    ("SIZE".into(), Some("1000".into())),
                    ("BODY".into(), Some("8BITMIME".into()))
                ]
            ))
        );
        assert_eq!(
            path("MAIL FROM:<@r1,@r2:a@b>\r\n"),
            Some(("a@b".into(), vec![]))
        );
        assert_eq!(path("MAIL FROM:a@b\r\n"), None);
        assert_eq!(path("MAIL FROM:<a@b\r\n"), None);
        assert_eq!(path("MAIL TO:<a@b>\r\n"), None);
        assert_eq!(path("MAIL FROM:<a b@c>\r\n"), None);
        // Found by tests/fuzz.rs: a multi-byte character across the prefix end.
        assert_eq!(path("ma AA\u{110d0}\u{0f49}"), None);
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(
            with_enhanced_code(b"503 Bad sequence of commands\r\n".to_vec()),
            b"503 5.5.1 Bad sequence of commands\r\n"
        );
        assert_eq!(
            with_enhanced_code(b"250 2.1.0 Ok\r\n".to_vec()),
            b"250 2.1.0 Ok\r\n"
        );
        assert_eq!(with_enhanced_code(b"354 go\r\n".to_vec()), b"354 go\r\n");
        assert_eq!(verb(b"ehlo x\r\n"), "EHLO");
        assert_eq!(verb(b"QUIT\r\n"), "QUIT");
    }
}
