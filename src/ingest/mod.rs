//! PURE: what a message *is* and where it belongs.
//!
//! [`parse`] turns raw bytes into a [`ParsedMail`] (never fails: malformed
//! mail yields what its headers allow); [`thread`] decides which ticket a
//! message joins, given a read-only view of what the store knows.
//!
//! Never does I/O, never reads the clock, never names tokio or redb.

pub mod authres;
pub mod bounce;
pub mod classify;
pub mod header;
pub mod parse;
pub mod quote;
pub mod thread;
pub mod trust;

pub use classify::{classify, AutoReason};
pub use parse::{parse, Mailbox, ParsedMail};
pub use thread::{ThreadMatch, ThreadView, ThreadedBy};

/// Whether a message is worth the (full-parse) bounce check: a report, or
/// from the null sender or a mailer daemon. Keeps ordinary mail off it.
pub fn maybe_bounce(parsed: &ParsedMail, mail_from: &str) -> bool {
    parsed.report
        || mail_from.is_empty()
        || is_daemon_address(mail_from)
        || parsed
            .from
            .as_ref()
            .is_some_and(|f| is_daemon_address(&f.email))
}

/// Local parts (and display-name words) of mailer daemons.
pub const DAEMON_LOCALS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "postmaster",
];

/// Whether `addr` (brackets allowed) is a mailer daemon's or a
/// postmaster's: never a customer, never answered automatically.
pub fn is_daemon_address(addr: &str) -> bool {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let local = addr.split('@').next().unwrap_or_default().trim();
    DAEMON_LOCALS.iter().any(|d| local.eq_ignore_ascii_case(d))
}

/// A ticket's number: a positive integer given in order, the same in
/// every engine, in the admin socket's JSON (a plain number) and in
/// subjects (`[#N]`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TicketId(pub u64);

impl TicketId {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<TicketId> for u64 {
    fn from(id: TicketId) -> u64 {
        id.0
    }
}

impl std::fmt::Display for TicketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Normalises a Message-ID for lookups and storage: surrounding whitespace
/// and angle brackets removed. The local part stays case-sensitive (RFC 5322
/// says so), but the domain is lower-cased, as clients vary there.
pub fn normalize_message_id(raw: &str) -> Option<String> {
    let id = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if id.is_empty() || id.len() > 998 || id.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    Some(match id.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => id.to_string(),
    })
}

/// The display form of a normalised Message-ID: `<id>`.
pub fn bracketed(id: &str) -> String {
    format!("<{id}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_normalise() {
        assert_eq!(
            normalize_message_id(" <Abc@EXAMPLE.com> ").as_deref(),
            Some("Abc@example.com")
        );
        assert_eq!(normalize_message_id("abc@x").as_deref(), Some("abc@x"));
        assert_eq!(normalize_message_id("<>"), None);
        assert_eq!(normalize_message_id("a b@c"), None);
    }
}
