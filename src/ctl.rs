//! `postdesk ctl`: the admin socket's command-line client. Prints tables for
//! people, or the raw response with `--json` for scripts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::admin::proto::{Request, Response};

/// Sends one request and returns the parsed response.
pub fn request(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to admin socket {}: {e} (is `postdesk serve` running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut out = String::new();
    reader.read_line(&mut out)?;
    if out.is_empty() {
        anyhow::bail!("the daemon closed the admin connection without answering");
    }
    Ok(serde_json::from_str(&out)?)
}

/// Renders a successful response for people.
pub fn render(cmd: &str, data: &Value) -> String {
    match cmd {
        "tickets" => tickets_table(data.as_array().map(Vec::as_slice).unwrap_or(&[])),
        "ticket" => ticket_detail(data),
        "message" => message_detail(data),
        "conversations" => messages_table(data.as_array().map(Vec::as_slice).unwrap_or(&[])),
        "outbox" => outbox_table(data.as_array().map(Vec::as_slice).unwrap_or(&[])),
        "set_status" | "assign" | "merge" => tickets_table(std::slice::from_ref(data)),
        "stats" => serde_json::to_string_pretty(data)
            .map(|s| s + "\n")
            .unwrap_or_default(),
        "reply" => outbox_table(std::slice::from_ref(data)),
        _ => key_values(data),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect(), &mut out);
    for row in rows {
        line(row, &mut out);
    }
    out
}

fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn tickets_table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "no tickets\n".into();
    }
    let rows = rows
        .iter()
        .map(|t| {
            vec![
                s(&t["id"]),
                s(&t["status"]),
                s(&t["contact"]["email"]),
                s(&t["owner"]),
                s(&t["updated_at"]),
                truncate(&s(&t["subject"]), 50),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "CONTACT", "OWNER", "UPDATED", "SUBJECT"],
        rows,
    )
}

fn messages_table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "no messages\n".into();
    }
    let rows = rows
        .iter()
        .map(|m| {
            vec![
                s(&m["received_at"]),
                s(&m["direction"]),
                s(&m["from"]),
                truncate(&s(&m["subject"]), 50),
            ]
        })
        .collect();
    table(&["RECEIVED", "DIR", "FROM", "SUBJECT"], rows)
}

fn outbox_table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "outbox is empty\n".into();
    }
    let rows = rows
        .iter()
        .map(|o| {
            vec![
                s(&o["id"]),
                s(&o["ticket"]),
                s(&o["state"]),
                s(&o["kind"]),
                s(&o["attempts"]),
                o["to"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                s(&o["created_at"]),
                // A sent email's last error is a failure it got past (the
                // record and `--json` keep it); here it would read as one.
                if o["state"] == "sent" {
                    String::new()
                } else if o["state"] == "bounced" {
                    let who = o["bounce"]["recipients"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    truncate(&format!("bounced: {who}"), 40)
                } else {
                    truncate(&s(&o["last_error"]), 40)
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TICKET",
            "STATE",
            "KIND",
            "TRIES",
            "TO",
            "CREATED",
            "LAST ERROR",
        ],
        rows,
    )
}

fn ticket_detail(t: &Value) -> String {
    let mut out = format!(
        "Ticket #{}  {}\nStatus:   {} ({})\nContact:  {}\nOwner:    {}\nChannel:  {} ({})\nCreated:  {}\nUpdated:  {}\n",
        s(&t["id"]),
        s(&t["subject"]),
        s(&t["status"]),
        s(&t["pipeline"]),
        s(&t["contact"]["email"]),
        s(&t["owner"]),
        s(&t["channel"]),
        s(&t["source"]),
        s(&t["created_at"]),
        s(&t["updated_at"]),
    );
    out.push_str("\nMessages:\n");
    for m in t["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        out.push_str(&format!(
            "  [{}] {} {} — {}\n",
            s(&m["received_at"]),
            s(&m["direction"]),
            s(&m["from"]),
            s(&m["subject"])
        ));
        // What the message newly says; `ctl message` shows all of it.
        let text = m.get("new_text").unwrap_or(&m["text"]);
        for line in s(text).lines().take(8) {
            out.push_str(&format!("      {line}\n"));
        }
    }
    out.push_str("\nTimeline:\n");
    for e in t["timeline"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let summary = e["detail"]
            .get("summary")
            .map(s)
            .unwrap_or_else(|| s(&e["detail"]));
        out.push_str(&format!(
            "  {}  {:<14} {}\n",
            s(&e["at"]),
            s(&e["kind"]),
            summary
        ));
    }
    out
}

fn message_detail(m: &Value) -> String {
    format!(
        "Message-ID: {}\nTicket:     {}\nDirection:  {} ({})\nFrom:       {}\nTo:         {}\nSubject:    {}\nDate:       {}\nSize:       {} bytes\n\n{}\n",
        s(&m["message_id"]),
        s(&m["ticket"]),
        s(&m["direction"]),
        s(&m["kind"]),
        s(&m["from"]),
        m["to"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        s(&m["subject"]),
        s(&m["date"]),
        s(&m["size"]),
        s(&m["text"]),
    )
}

fn key_values(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", s(v)))
            .collect(),
        None => format!("{}\n", s(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_outbox_table_shows_the_last_error_of_unsent_emails_only() {
        let row = |id: u64, state: &str| {
            json!({"id": id, "ticket": 7, "state": state, "kind": "auto_reply", "attempts": 2,
                   "to": ["a@example.com"], "created_at": "2026-12-06 02:00",
                   "last_error": "sending through relay:25: connection refused"})
        };
        let out = outbox_table(&[row(1, "sent"), row(2, "queued"), row(3, "failed")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(!lines[1].contains("relay:25"), "{out}");
        assert!(lines[2].contains("relay:25"), "{out}");
        assert!(lines[3].contains("relay:25"), "{out}");
    }
}
