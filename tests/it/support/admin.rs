//! The admin-socket client (one JSON object per line each way) and readers
//! for the `ticket` object.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

pub struct Admin {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Admin {
    pub fn connect(path: &Path) -> io::Result<Admin> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        Ok(Admin {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `req` as one line; the response object.
    pub fn request(&mut self, req: serde_json::Value) -> Value {
        self.try_request(&req)
            .unwrap_or_else(|e| panic!("admin request {req}: {e}"))
    }

    pub fn try_request(&mut self, req: &Value) -> io::Result<Value> {
        self.request_line(&req.to_string())
    }

    /// Sends `line` (a newline is added) as it is — for bad JSON — and reads
    /// one response line, which must be JSON.
    pub fn request_line(&mut self, line: &str) -> io::Result<Value> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.writer.flush()?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the admin connection",
            ));
        }
        serde_json::from_str(&resp).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response is not JSON ({e}): {resp:?}"),
            )
        })
    }
}

/// The Message-IDs of a ticket's messages, in order.
pub fn message_ids(ticket: &Value) -> Vec<String> {
    ticket["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("ticket without a messages array: {ticket}"))
        .iter()
        .map(|m| m["message_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The kinds of a ticket's timeline entries, in order.
pub fn timeline_kinds(ticket: &Value) -> Vec<String> {
    ticket["timeline"]
        .as_array()
        .unwrap_or_else(|| panic!("ticket without a timeline array: {ticket}"))
        .iter()
        .map(|t| t["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The `message_in` timeline entry for `message_id`, if any.
pub fn message_in<'a>(ticket: &'a Value, message_id: &str) -> Option<&'a Value> {
    ticket["timeline"].as_array()?.iter().find(|t| {
        t["kind"] == "message_in" && t["detail"]["message_id"].as_str() == Some(message_id)
    })
}

/// How the message `message_id` was threaded onto this ticket
/// (`detail.threaded_by` of its `message_in` entry).
pub fn threaded_by(ticket: &Value, message_id: &str) -> Option<String> {
    message_in(ticket, message_id)?["detail"]["threaded_by"]
        .as_str()
        .map(str::to_string)
}
