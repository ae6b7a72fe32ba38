//! Admin protocol types: one JSON object per line each way.
//!
//! Request: `{"cmd": "...", ...args}`. Response: `{"ok": true, "data": ...}`
//! or `{"ok": false, "error": {"code": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desk::Outcome;
use crate::ingest::TicketId;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 1 << 20;

/// Default and maximum `limit` of list commands.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 10_000;

/// A request; `ctl`, `import` and `workflow` send these, the server
/// parses them ([`parse_request`]). An absent optional argument is left
/// out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Struct variants (not unit) so that unknown arguments are refused.
    Health {},
    Tickets {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipeline: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Ticket {
        id: TicketId,
    },
    Conversations {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Reload {},
    SetStatus {
        id: TicketId,
        status: String,
    },
    Reply {
        id: TicketId,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    Assign {
        id: TicketId,
        owner: String,
    },
    Outbox {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Stats {},
    /// One message for `postdesk import` (daemon running): stored and
    /// threaded, no automation, nothing sent.
    Import {
        raw_base64: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Merge {
        source: TicketId,
        target: TicketId,
    },
    /// One stored message by Message-ID, with its raw bytes (base64).
    Message {
        message_id: String,
    },
}

impl Request {
    /// The request's `cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Health {} => "health",
            Request::Tickets { .. } => "tickets",
            Request::Ticket { .. } => "ticket",
            Request::Conversations { .. } => "conversations",
            Request::Reload {} => "reload",
            Request::SetStatus { .. } => "set_status",
            Request::Reply { .. } => "reply",
            Request::Assign { .. } => "assign",
            Request::Outbox { .. } => "outbox",
            Request::Stats {} => "stats",
            Request::Import { .. } => "import",
            Request::Merge { .. } => "merge",
            Request::Message { .. } => "message",
        }
    }
}

pub const COMMANDS: &[&str] = &[
    "health",
    "tickets",
    "ticket",
    "conversations",
    "reload",
    "set_status",
    "reply",
    "assign",
    "outbox",
    "message",
    "stats",
    "import",
    "merge",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub problems: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(data: Value) -> Self {
        Response {
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    pub fn err(code: &str, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(ErrorBody {
                code: code.into(),
                message: message.into(),
                problems: None,
            }),
        }
    }

    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(
                r#"{"ok":false,"error":{"code":"internal","message":"cannot encode response"}}"#,
            )
        });
        s.push('\n');
        s
    }
}

/// Parses one request line. Errors are ready-made responses: `bad_request`
/// for anything that is not a JSON object with a string `cmd` or has bad
/// arguments, `unknown_command` for a `cmd` we do not have.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| Response::err("bad_request", format!("invalid JSON: {e}")))?;
    let Some(cmd) = value.get("cmd").and_then(Value::as_str) else {
        return Err(Response::err(
            "bad_request",
            "a request is a JSON object with a string \"cmd\"",
        ));
    };
    if !COMMANDS.contains(&cmd) {
        return Err(Response::err(
            "unknown_command",
            format!("unknown command \"{cmd}\" (known: {})", COMMANDS.join(", ")),
        ));
    }
    serde_json::from_value(value.clone())
        .map_err(|e| Response::err("bad_request", format!("bad arguments for \"{cmd}\": {e}")))
}

/// The outcome of one imported message as the admin `import` command
/// answers it.
pub fn import_outcome_json(o: &Outcome) -> serde_json::Value {
    match o {
        Outcome::Ticket {
            id,
            created,
            duplicate,
            by,
        } => serde_json::json!({
            "ticket": id, "created": created, "duplicate": duplicate, "threaded_by": by.as_str(),
        }),
        Outcome::Kept { duplicate } => {
            serde_json::json!({ "ticket": null, "kept": true, "duplicate": duplicate })
        }
    }
}

pub fn import_outcome_from_json(v: &serde_json::Value) -> Option<Outcome> {
    let duplicate = v["duplicate"].as_bool()?;
    match v["ticket"].as_u64() {
        Some(id) => Some(Outcome::Ticket {
            id: TicketId(id),
            created: v["created"].as_bool().unwrap_or(false),
            duplicate,
            by: crate::ingest::ThreadedBy::New,
        }),
        None => Some(Outcome::Kept { duplicate }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> String {
        match parse_request(line.as_bytes()) {
            Ok(r) => format!("{r:?}"),
            Err(resp) => resp.error.map(|e| e.code).unwrap_or_default(),
        }
    }

    /// What the clients send is what the server parses, field for field;
    /// absent arguments stay out of the line; `name` is the `cmd` (and a
    /// known one).
    #[test]
    fn typed_requests_round_trip() {
        let all = [
            Request::Health {},
            Request::Tickets {
                status: Some("new".into()),
                pipeline: None,
                limit: Some(5),
            },
            Request::Ticket { id: TicketId(7) },
            Request::Conversations { limit: None },
            Request::Reload {},
            Request::SetStatus {
                id: TicketId(1),
                status: "closed".into(),
            },
            Request::Reply {
                id: TicketId(1),
                body: "Hi".into(),
                user: None,
            },
            Request::Assign {
                id: TicketId(1),
                owner: "alice".into(),
            },
            Request::Outbox {
                state: None,
                limit: Some(3),
            },
            Request::Stats {},
            Request::Import {
                raw_base64: "AA==".into(),
                channel: Some("support".into()),
            },
            Request::Merge {
                source: TicketId(2),
                target: TicketId(1),
            },
            Request::Message {
                message_id: "<a@b>".into(),
            },
        ];
        assert_eq!(all.len(), COMMANDS.len());
        for req in all {
            let line = serde_json::to_string(&req).unwrap_or_default();
            assert!(!line.contains("null"), "{line}");
            assert!(
                line.starts_with(&format!("{{\"cmd\":\"{}\"", req.name())),
                "{line}"
            );
            assert!(COMMANDS.contains(&req.name()));
            assert_eq!(parse_request(line.as_bytes()), Ok(req), "{line}");
        }
    }

    #[test]
    fn requests() {
        assert_eq!(code(r#"{"cmd":"health"}"#), "Health");
        assert_eq!(code(r#"{"cmd":"tickets","limt":5}"#), "bad_request");
        assert_eq!(
            code(r#"{"cmd":"ticket","id":3}"#),
            "Ticket { id: TicketId(3) }"
        );
        assert_eq!(
            code(r#"{"cmd":"tickets","status":"new"}"#),
            r#"Tickets { status: Some("new"), pipeline: None, limit: None }"#
        );
        assert_eq!(code("not json"), "bad_request");
        assert_eq!(code("[1,2]"), "bad_request");
        assert_eq!(code(r#"{"cmd":"explode"}"#), "unknown_command");
        assert_eq!(code(r#"{"cmd":"ticket"}"#), "bad_request");
        assert_eq!(code(r#"{"cmd":"ticket","id":"x"}"#), "bad_request");
        assert_eq!(code(r#"{"cmd":"health","extra":1}"#), "bad_request");
    }
}
