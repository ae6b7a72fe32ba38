//! A bounded line reader. Never buffers more than `max` bytes of one line,
//! whatever the client sends.
//!
//! Lines end at LF. [`Line::crlf`] says whether that LF was preceded by CR:
//! the DATA reader uses it so that only `<CR><LF>.<CR><LF>` ends a message
//! (a bare `<LF>.<CR><LF>` is content — no SMTP smuggling).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Debug)]
pub enum Read {
    /// A whole line, terminator included.
    Line(Vec<u8>),
    /// The line exceeded `max` bytes; what was read of it is discarded and
    /// the session must end (the rest of the line is still unread).
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one LF-terminated line of at most `max` bytes (terminator
/// included).
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Read> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Read::Eof);
        }
        let (take, done) = match memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            r.consume(take);
            return Ok(Read::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(Read::Line(line));
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// Whether a line ends with CRLF.
pub fn is_crlf(line: &[u8]) -> bool {
    line.ends_with(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_lines() {
        let data: &[u8] = b"HELO a\r\nxxxxxxxxxxxxxxxxxxxx\r\nbare\nend";
        let mut r = tokio::io::BufReader::with_capacity(4, data);
        assert!(
            matches!(read_line(&mut r, 10).await.ok(), Some(Read::Line(l)) if l == b"HELO a\r\n")
        );
        assert!(matches!(
            read_line(&mut r, 10).await.ok(),
            Some(Read::TooLong)
        ));
        // The session ends after TooLong; here we just read on past the tail.
        assert!(matches!(
            read_line(&mut r, 100).await.ok(),
            Some(Read::Line(_))
        ));
        assert!(matches!(read_line(&mut r, 10).await.ok(), Some(Read::Line(l)) if l == b"bare\n"));
        assert!(matches!(read_line(&mut r, 10).await.ok(), Some(Read::Eof)));
    }
}
