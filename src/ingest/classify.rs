//! Loop protection, in one place: is this message automatic or bulk mail
//! that must never get an automatic email back (RFC 3834, SPEC §6)?
//!
//! Such mail is still stored and threaded; the caller records on the
//! timeline which email was suppressed and why. Automatic mail also never
//! moves a ticket's status (an out-of-office is not a customer reply).

use super::ParsedMail;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoReason {
    /// `Auto-Submitted` other than `no`.
    AutoSubmitted(String),
    /// `Precedence: bulk|junk|list|auto_reply`.
    Precedence(String),
    ListId,
    ListUnsubscribe,
    XAutoreply,
    XAutorespond,
    /// Exchange's `X-Auto-Response-Suppress` asking for no auto-replies.
    XAutoResponseSuppress(String),
    /// `MAIL FROM:<>` (bounces, DSNs, most auto-replies).
    NullSender,
    /// `MAILER-DAEMON` or `postmaster` sender.
    MailerDaemon,
    /// The sender is one of our own channel addresses.
    OwnChannel,
    /// Our own `X-Postdesk-Ticket` marker came back.
    OwnLoopMarker,
}

impl AutoReason {
    pub fn describe(&self) -> String {
        match self {
            AutoReason::AutoSubmitted(v) => {
                format!("the message is automatic (Auto-Submitted: {v})")
            }
            AutoReason::Precedence(v) => format!("the message is bulk mail (Precedence: {v})"),
            AutoReason::ListId => "the message came from a mailing list (List-Id)".into(),
            AutoReason::ListUnsubscribe => "the message is bulk mail (List-Unsubscribe)".into(),
            AutoReason::XAutoreply => "the message is an auto-reply (X-Autoreply)".into(),
            AutoReason::XAutorespond => "the message is an auto-reply (X-Autorespond)".into(),
            AutoReason::XAutoResponseSuppress(v) => {
                format!("the sender asked for no auto-replies (X-Auto-Response-Suppress: {v})")
            }
            AutoReason::NullSender => {
                "the envelope sender is empty (a bounce or auto-reply)".into()
            }
            AutoReason::MailerDaemon => "the sender is a mailer daemon or postmaster".into(),
            AutoReason::OwnChannel => "the sender is one of our own channel addresses".into(),
            AutoReason::OwnLoopMarker => {
                "the message carries our own X-Postdesk-Ticket header (a loop)".into()
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AutoReason::AutoSubmitted(_) => "auto_submitted",
            AutoReason::Precedence(_) => "precedence",
            AutoReason::ListId => "list_id",
            AutoReason::ListUnsubscribe => "list_unsubscribe",
            AutoReason::XAutoreply => "x_autoreply",
            AutoReason::XAutorespond => "x_autorespond",
            AutoReason::XAutoResponseSuppress(_) => "x_auto_response_suppress",
            AutoReason::NullSender => "null_sender",
            AutoReason::MailerDaemon => "mailer_daemon",
            AutoReason::OwnChannel => "own_channel",
            AutoReason::OwnLoopMarker => "own_loop_marker",
        }
    }
}

/// `mail_from` is the envelope sender ("" for `<>`); `is_channel` tells
/// whether an address is one of ours.
pub fn classify(
    p: &ParsedMail,
    mail_from: &str,
    is_channel: impl Fn(&str) -> bool,
) -> Option<AutoReason> {
    for (name, value) in &p.markers {
        let v = value.to_ascii_lowercase();
        let reason = match name.as_str() {
            "auto-submitted" if v.split(';').next().is_some_and(|t| t.trim() != "no") => {
                Some(AutoReason::AutoSubmitted(value.clone()))
            }
            "precedence"
                if matches!(
                    v.as_str(),
                    "bulk" | "junk" | "list" | "auto_reply" | "auto-reply"
                ) =>
            {
                Some(AutoReason::Precedence(value.clone()))
            }
            "list-id" => Some(AutoReason::ListId),
            "list-unsubscribe" => Some(AutoReason::ListUnsubscribe),
            "x-autoreply" => Some(AutoReason::XAutoreply),
            "x-autorespond" => Some(AutoReason::XAutorespond),
            // "OOF"/"AutoReply"/"All" ask us not to auto-reply; "DR, RN, NRN"
            // alone are about receipts, which we never send anyway.
            "x-auto-response-suppress"
                if v.split(',')
                    .any(|t| matches!(t.trim(), "all" | "oof" | "autoreply")) =>
            {
                Some(AutoReason::XAutoResponseSuppress(value.clone()))
            }
            "x-postdesk-ticket" => Some(AutoReason::OwnLoopMarker),
            _ => None,
        };
        if reason.is_some() {
            return reason;
        }
    }
    if mail_from.is_empty() {
        return Some(AutoReason::NullSender);
    }
    let sender = p
        .from
        .as_ref()
        .map(|f| f.email.as_str())
        .unwrap_or(mail_from);
    for addr in [mail_from, sender] {
        if super::is_daemon_address(addr) {
            return Some(AutoReason::MailerDaemon);
        }
        if is_channel(addr) {
            return Some(AutoReason::OwnChannel);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse;

    fn check(headers: &str, mail_from: &str, expect: Option<&str>) {
        let raw = format!("From: Bob <bob@example.com>\r\nSubject: hi\r\n{headers}\r\nbody\r\n");
        let p = parse(raw.as_bytes());
        let got = classify(&p, mail_from, |a| {
            a.eq_ignore_ascii_case("support@acme.example")
        });
        assert_eq!(
            got.as_ref().map(AutoReason::code),
            expect,
            "{headers:?} from {mail_from:?}"
        );
    }

    #[test]
    fn rfc3834_and_friends() {
        check("", "bob@example.com", None);
        check("Auto-Submitted: no\r\n", "bob@example.com", None);
        check(
            "Auto-Submitted: auto-replied\r\n",
            "bob@example.com",
            Some("auto_submitted"),
        );
        check(
            "Auto-Submitted: Auto-Generated; owner-email=x@y\r\n",
            "bob@example.com",
            Some("auto_submitted"),
        );
        check(
            "Precedence: bulk\r\n",
            "bob@example.com",
            Some("precedence"),
        );
        check("Precedence: first-class\r\n", "bob@example.com", None);
        check(
            "List-Id: <x.lists.example>\r\n",
            "bob@example.com",
            Some("list_id"),
        );
        check(
            "List-Unsubscribe: <mailto:u@x>\r\n",
            "bob@example.com",
            Some("list_unsubscribe"),
        );
        check(
            "X-Autoreply: yes\r\n",
            "bob@example.com",
            Some("x_autoreply"),
        );
        check(
            "X-Autorespond: yes\r\n",
            "bob@example.com",
            Some("x_autorespond"),
        );
        check(
            "X-Auto-Response-Suppress: All\r\n",
            "bob@example.com",
            Some("x_auto_response_suppress"),
        );
        check(
            "X-Auto-Response-Suppress: DR, RN\r\n",
            "bob@example.com",
            None,
        );
        check(
            "X-Postdesk-Ticket: 4\r\n",
            "bob@example.com",
            Some("own_loop_marker"),
        );
        check("", "", Some("null_sender"));
        check("", "MAILER-DAEMON@mx.example", Some("mailer_daemon"));
        check("", "postmaster@example.com", Some("mailer_daemon"));
        // The same daemon names as the bounce detector's.
        check("", "Mailer_Daemon@mx.example", Some("mailer_daemon"));
        check("", "mail-daemon@mx.example", Some("mailer_daemon"));
        check("", "support@acme.example", Some("own_channel"));
    }
}
