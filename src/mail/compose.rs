//! Composing: one outbound email as RFC 5322 bytes.
//!
//! PURE: [`compose`] is a function of an [`OutMail`] — the date is a field,
//! the MIME boundary is derived from the Message-ID, so the same input gives
//! the same bytes (which is what the golden tests rely on). lettre is used
//! for its message builder only (header encoding and folding, body transfer
//! encoding), never for sending.
//!
//! [`message_id`] is pure too: it hashes the ticket, a counter and a salt
//! drawn once per store, so ids stay unique across restarts and stores, and
//! replaying the journal re-creates them.

use std::time::{Duration, SystemTime};

use lettre::address::Envelope;
use lettre::message::header::{self, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use sha2::{Digest, Sha256};

use crate::ingest::TicketId;
use crate::wording::lowercase_first;

/// `Auto-Submitted` for template emails to customers (RFC 3834).
pub const AUTO_REPLIED: &str = "auto-replied";
/// `Auto-Submitted` for notifications to agents (RFC 3834).
pub const AUTO_GENERATED: &str = "auto-generated";

/// At most this many ids go into `References`: the first (the thread's
/// root) and the most recent ones, as RFC 5322 §3.6.4 suggests trimming.
pub const MAX_REFERENCES: usize = 20;

/// Everything one outbound email is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMail {
    /// `outbound.from`, parsed at config load.
    pub from: Mailbox,
    /// (display name, address).
    pub to: Vec<(Option<String>, String)>,
    /// (display name, address): the ticket's other participants on an
    /// agent's reply (SPEC §12); empty on every automatic email.
    pub cc: Vec<(Option<String>, String)>,
    /// The channel's plus address, e.g. `support+42@acme.example`.
    pub reply_to: String,
    /// The final subject, subject tag already applied.
    pub subject: String,
    /// Bare (no angle brackets), e.g. from [`message_id`].
    pub message_id: String,
    /// Bare. An id that is not a plausible msg-id is left out.
    pub in_reply_to: Option<String>,
    /// Bare, oldest first. Implausible ids are left out; more than
    /// [`MAX_REFERENCES`] are trimmed to the first and the newest.
    pub references: Vec<String>,
    /// [`AUTO_REPLIED`], [`AUTO_GENERATED`] or `None` (an agent's reply).
    pub auto_submitted: Option<&'static str>,
    pub ticket: TicketId,
    pub text: String,
    /// Makes the email multipart/alternative.
    pub html: Option<String>,
    /// Appended to the text after a `-- ` line, and to the HTML.
    pub footer: Option<String>,
    /// The `Date` header, in milliseconds since the Unix epoch.
    pub date_millis: i64,
}

/// Why an email could not be composed. All of these are permanent: the
/// same input will fail the same way.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("invalid {field} address \"{value}\": {reason}")]
    Address {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("no recipient")]
    NoRecipient,
    #[error("invalid message id \"{0}\": expected left@right without spaces or angle brackets")]
    MessageId(String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
}

/// The RFC 5322 bytes (CRLF line ends) of `m`.
pub fn compose(m: &OutMail) -> Result<Vec<u8>, ComposeError> {
    if !plausible_id(&m.message_id) {
        return Err(ComposeError::MessageId(m.message_id.clone()));
    }
    if m.to.is_empty() {
        return Err(ComposeError::NoRecipient);
    }
    let mut rcpt = Vec::with_capacity(m.to.len() + m.cc.len());
    let mut builder = Message::builder().from(m.from.clone());
    let to = m.to.iter().map(|r| ("to", r));
    for (field, (name, address)) in to.chain(m.cc.iter().map(|r| ("cc", r))) {
        let address = address
            .trim()
            .parse::<Address>()
            .map_err(|e| address_error(field, address, &e))?;
        let name = name
            .as_deref()
            .map(one_line)
            .filter(|name| !name.is_empty());
        rcpt.push(address.clone());
        let mailbox = Mailbox::new(name, address);
        builder = if field == "to" {
            builder.to(mailbox)
        } else {
            builder.cc(mailbox)
        };
    }
    // Given, so that lettre does not derive it by parsing the From and To
    // headers it has just written (the envelope is not used: the outbox
    // sends with its own MAIL FROM and RCPT TO).
    builder = builder
        .envelope(Envelope::new(Some(m.from.email.clone()), rcpt)?)
        .reply_to(reply_to_mailbox(&m.reply_to)?)
        .subject(one_line(&m.subject))
        .date(system_time(m.date_millis))
        .message_id(Some(format!("<{}>", m.message_id)));
    if let Some(parent) = m.in_reply_to.as_deref().filter(|id| plausible_id(id)) {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    let references = trim_references(&m.references);
    if !references.is_empty() {
        let value: Vec<String> = references.iter().map(|id| format!("<{id}>")).collect();
        builder = builder.references(value.join(" "));
    }
    if let Some(value) = m.auto_submitted {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            value.to_owned(),
        ));
    }
    builder = builder.raw_header(HeaderValue::new(
        HeaderName::new_from_ascii_str("X-Postdesk-Ticket"),
        m.ticket.to_string(),
    ));

    let mut text = with_text_footer(&m.text, m.footer.as_deref());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let message = match &m.html {
        // Not `singlepart`: lettre would add a blank line to the body.
        None => builder
            .header(header::MIME_VERSION_1_0)
            .header(header::ContentType::TEXT_PLAIN)
            .body(text)?,
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .boundary(boundary(&m.message_id))
                .singlepart(SinglePart::plain(text))
                .singlepart(SinglePart::html(with_html_footer(
                    html,
                    m.footer.as_deref(),
                ))),
        )?,
    };
    Ok(message.formatted())
}

/// `subject` with `tag` (e.g. `[#42]`) appended after a space, unless the
/// subject already contains that exact tag. An empty subject gives the tag
/// alone; an empty tag leaves the subject as it is.
pub fn with_subject_tag(subject: &str, tag: &str) -> String {
    let subject = subject.trim();
    if tag.is_empty() || subject.contains(tag) {
        subject.to_owned()
    } else if subject.is_empty() {
        tag.to_owned()
    } else {
        format!("{subject} {tag}")
    }
}

/// A fresh bare Message-ID at `hostname`: `t42.u17.5f0c9a1e33b2d4c8@desk.acme.example`.
///
/// `unique` is a counter the caller never repeats for one store (the outbox
/// sequence number); `salt` is a random number drawn once per store, so that
/// ids stay unique across stores sharing a hostname (a store created anew
/// starts its counter again). The same inputs give the same id: recovering
/// a batch from the store's journal re-creates the ids it had.
pub fn message_id(hostname: &str, ticket: TicketId, unique: u64, salt: u64) -> String {
    let mut h = Sha256::new();
    h.update(salt.to_le_bytes());
    h.update(ticket.0.to_le_bytes());
    h.update(unique.to_le_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let random = u64::from_le_bytes(first);
    let host = if hostname.is_empty() {
        "localhost"
    } else {
        hostname
    };
    format!("t{ticket}.u{unique}.{random:016x}@{host}")
}

fn mailbox(field: &'static str, value: &str) -> Result<Mailbox, ComposeError> {
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| address_error(field, value, &e))
}

/// The Reply-To mailbox: a bare address (the channel's plus address) is
/// taken as one without the mailbox grammar's parser.
fn reply_to_mailbox(value: &str) -> Result<Mailbox, ComposeError> {
    match value.trim().parse::<Address>() {
        Ok(address) => Ok(Mailbox::new(None, address)),
        Err(_) => mailbox("reply-to", value),
    }
}

fn address_error(field: &'static str, value: &str, e: &dyn std::fmt::Display) -> ComposeError {
    ComposeError::Address {
        field,
        value: value.to_owned(),
        reason: lowercase_first(&e.to_string()),
    }
}

/// A msg-id we are willing to put between angle brackets: `left@right`,
/// printable ASCII, no spaces, no brackets. Anything else in a stored
/// header is left out rather than copied into ours.
fn plausible_id(id: &str) -> bool {
    id.len() <= 250
        && id
            .split_once('@')
            .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty())
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
}

/// The plausible references, the first and the newest kept when there are
/// more than [`MAX_REFERENCES`].
fn trim_references(ids: &[String]) -> Vec<&str> {
    let ids: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| plausible_id(id))
        .collect();
    if ids.len() <= MAX_REFERENCES {
        return ids;
    }
    let mut kept = vec![ids[0]];
    kept.extend_from_slice(&ids[ids.len() - (MAX_REFERENCES - 1)..]);
    kept
}

/// A header value on one line: line breaks and other control characters
/// become spaces (lettre would encode them; a subject has no business
/// holding them).
fn one_line(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    text.trim().to_owned()
}

fn system_time(millis: i64) -> SystemTime {
    let offset = Duration::from_millis(millis.unsigned_abs());
    let time = if millis >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    };
    time.unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The multipart boundary: derived from the Message-ID so that output is
/// reproducible, and starting with `=_`, which can never occur in a
/// quoted-printable or base64 body.
fn boundary(message_id: &str) -> String {
    let digest = Sha256::digest(message_id.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("=_postdesk_{hex}")
}

/// The text with the footer after a signature separator (`-- `) and one
/// blank line, however many the template ended with.
fn with_text_footer(text: &str, footer: Option<&str>) -> String {
    let Some(footer) = footer else {
        return text.to_owned();
    };
    let mut out = text.trim_end().to_owned();
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("\n-- \n");
    out.push_str(footer.trim_end());
    out.push('\n');
    out
}

/// The HTML with the footer as a small paragraph before `</body>`, or at
/// the end when there is none.
fn with_html_footer(html: &str, footer: Option<&str>) -> String {
    let Some(footer) = footer else {
        return html.to_owned();
    };
    let escaped = escape_html(footer.trim_end()).replace('\n', "<br>\n");
    let paragraph =
        format!("<p style=\"color:#888888;font-size:small;margin-top:2em\">{escaped}</p>\n");
    match html.to_ascii_lowercase().rfind("</body>") {
        // An index into the lower-cased copy is one into `html`: ASCII
        // lower-casing keeps every byte where it is.
        Some(at) => format!("{}{paragraph}{}", &html[..at], &html[at..]),
        None => {
            let mut out = html.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&paragraph);
            out
        }
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use expect_test::{expect_file, ExpectFile};
    use mail_parser::MessageParser;

    use super::*;
    use crate::ingest::thread::SubjectTag;
    use crate::mail::render::{footer, Templates, Vars};
    use crate::mail::Branding;

    /// 2023-11-14T22:13:20.123Z
    const DATE: i64 = 1_700_000_000_123;
    const ID: &str = "t42.u7.0123456789abcdef@desk.acme.example";

    fn shipped() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    fn branding(enabled: bool, text: Option<&str>) -> Branding {
        Branding {
            enabled,
            text: text.map(str::to_owned),
        }
    }

    /// Template `name` rendered and addressed the way the outbox worker
    /// does it: to the contact, replies to the ticket's plus address.
    fn mail(templates: &Templates, name: &str, vars: &Vars, branding: &Branding) -> OutMail {
        let r = templates.render(name, vars).unwrap();
        OutMail {
            cc: Vec::new(),
            from: "Acme Support <support@acme.example>".parse().unwrap(),
            to: vec![(vars.contact.name.clone(), vars.contact.email.clone())],
            reply_to: format!("support+{}@acme.example", vars.ticket.id),
            subject: with_subject_tag(
                &r.subject,
                &SubjectTag::new("[#{id}]").render(vars.ticket.id),
            ),
            message_id: ID.into(),
            in_reply_to: Some("CAF=abc123@mail.example.com".into()),
            references: vec!["CAF=abc123@mail.example.com".into()],
            auto_submitted: Some(AUTO_REPLIED),
            ticket: vars.ticket.id,
            text: r.text,
            html: r.html,
            footer: footer(branding),
            date_millis: DATE,
        }
    }

    /// Composes `m`, checks that the bytes are a well-formed wire message
    /// (CRLF line ends only, ASCII, lines within 998 characters), compares
    /// them with the golden file (written with LF line ends;
    /// `UPDATE_EXPECT=1` rewrites it) and returns them.
    fn check(m: &OutMail, golden: ExpectFile) -> Vec<u8> {
        let raw = compose(m).unwrap();
        let text = String::from_utf8(raw.clone()).expect("lettre encodes to ASCII");
        assert!(text.is_ascii(), "{text}");
        assert!(text.ends_with("\r\n"), "{text}");
        for line in text.split_inclusive('\n') {
            assert!(line.ends_with("\r\n"), "bare LF in {line:?}");
            assert!(
                !line[..line.len() - 2].contains('\r'),
                "bare CR in {line:?}"
            );
            assert!(line.len() <= 1000, "line too long: {line:?}");
        }
        golden.assert_eq(&text.replace("\r\n", "\n"));
        raw
    }

    #[test]
    fn ticket_received_with_branding() {
        let vars = Vars::sample();
        let m = mail(&shipped(), "ticket_received", &vars, &branding(true, None));
        let raw = check(&m, expect_file!["golden/ticket_received.eml"]);

        let msg = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            msg.subject(),
            Some("We received your request: Printer on fire [#42]")
        );
        assert_eq!(msg.message_id(), Some(ID));
        let text = msg.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(text.starts_with("Hello Jane Doe,\n"), "{text}");
        assert!(
            text.ends_with("your ticket.\n\n-- \nSent by postdesk — email ticketing\n"),
            "{text:?}"
        );
        let header = |name: &'static str| msg.header_raw(name).map(str::trim);
        assert_eq!(header("X-Postdesk-Ticket"), Some("42"));
        assert_eq!(header("Auto-Submitted"), Some("auto-replied"));
        assert_eq!(header("In-Reply-To"), Some("<CAF=abc123@mail.example.com>"));
        assert_eq!(header("Reply-To"), Some("support+42@acme.example"));
    }

    #[test]
    fn ticket_received_without_branding() {
        let vars = Vars::sample_minimal();
        let mut m = mail(
            &shipped(),
            "ticket_received",
            &vars,
            &branding(false, Some("x")),
        );
        m.in_reply_to = None;
        m.references = Vec::new();
        let raw = check(&m, expect_file!["golden/ticket_received_no_branding.eml"]);
        let text = String::from_utf8(raw).unwrap();
        assert!(!text.contains("In-Reply-To"));
        assert!(!text.contains("References"));
        assert!(!text.contains("\n-- "));
        assert!(!text.to_lowercase().contains("postdesk —"));
    }

    #[test]
    fn notification_with_custom_footer() {
        let vars = Vars::sample();
        let branding = branding(
            true,
            Some("Acme Support — we're here to help.\nMon–Fri 9–17"),
        );
        let mut m = mail(&shipped(), "notification", &vars, &branding);
        m.to = vec![(Some("Alice Agent".into()), "alice@acme.example".into())];
        m.auto_submitted = Some(AUTO_GENERATED);
        m.references = vec![
            "root@mail.example.com".into(),
            "t42.u1.00000000000000aa@desk.acme.example".into(),
            "CAF=abc123@mail.example.com".into(),
        ];
        let raw = check(&m, expect_file!["golden/notification_custom_footer.eml"]);
        let msg = MessageParser::default().parse(&raw).unwrap();
        let text = msg.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(
            text.ends_with("\n\n-- \nAcme Support — we're here to help.\nMon–Fri 9–17\n"),
            "{text:?}"
        );
    }

    #[test]
    fn html_template_makes_multipart_alternative() {
        let files = [
            ("welcome.subject.hbs", "Welcome, {{contact.name}}"),
            (
                "welcome.text.hbs",
                "Hello {{contact.name}},\n\nticket #{{ticket.id}} is open.\n",
            ),
            (
                "welcome.html.hbs",
                "<html><body>\n<p>Hello {{contact.name}},</p>\n<p>ticket #{{ticket.id}} \
                 &mdash; {{ticket.subject}}</p>\n</BODY></html>\n",
            ),
        ];
        let files = files.map(|(n, s)| (n.to_owned(), s.to_owned()));
        let templates = Templates::from_sources(Path::new("/t"), files).unwrap();
        let mut vars = Vars::sample();
        vars.ticket.subject = "<script>alert(1)</script>".into();
        let m = mail(
            &templates,
            "welcome",
            &vars,
            &branding(true, Some("Acme <Support> & co")),
        );
        let raw = check(&m, expect_file!["golden/html_alternative.eml"]);

        let msg = MessageParser::default().parse(&raw).unwrap();
        let html = msg.body_html(0).unwrap().replace("\r\n", "\n");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("Acme &lt;Support&gt; &amp; co</p>\n</BODY></html>"),
            "{html}"
        );
        let text = msg.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(
            text.ends_with("is open.\n\n-- \nAcme <Support> & co\n"),
            "{text:?}"
        );
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains(&boundary(ID)));
    }

    #[test]
    fn non_ascii_subject_and_name() {
        let mut vars = Vars::sample();
        vars.ticket.subject = "Drucker brennt — Hilfe! 🔥 Größe „A4“".into();
        vars.contact.name = Some("Zoë Ünïcode, \"the\" Admin".into());
        let m = mail(&shipped(), "ticket_received", &vars, &branding(true, None));
        let raw = check(&m, expect_file!["golden/non_ascii.eml"]);

        let msg = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            msg.subject(),
            Some("We received your request: Drucker brennt — Hilfe! 🔥 Größe „A4“ [#42]")
        );
        let to = msg.to().and_then(|a| a.first()).unwrap();
        assert_eq!(to.name(), Some("Zoë Ünïcode, \"the\" Admin"));
        assert_eq!(to.address(), Some("jane@example.com"));
        assert!(msg
            .body_text(0)
            .unwrap()
            .replace("\r\n", "\n")
            .starts_with("Hello Zoë Ünïcode, \"the\" Admin,\n"));
    }

    #[test]
    fn header_values_stay_on_their_line() {
        let mut m = mail(
            &shipped(),
            "ticket_received",
            &Vars::sample(),
            &branding(false, None),
        );
        m.subject = "evil\r\nBcc: victim@example.com".into();
        m.to = vec![(Some("Jane\r\nBcc: x@y".into()), "jane@example.com".into())];
        m.in_reply_to = Some("bad id>\r\nX-Evil: 1".into());
        m.references = vec!["<also@bad>".into(), "ok@example.com".into(), String::new()];
        let raw = String::from_utf8(compose(&m).unwrap()).unwrap();
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(!headers.contains("\r\nBcc:"), "{headers}");
        assert!(!headers.contains("\r\nX-Evil:"), "{headers}");
        assert!(
            headers.contains("\r\nSubject: evil  Bcc: victim@example.com\r\n"),
            "{headers}"
        );
        assert!(!headers.contains("In-Reply-To"), "{headers}");
        assert!(
            headers.contains("\r\nReferences: <ok@example.com>\r\n"),
            "{headers}"
        );
    }

    #[test]
    fn long_reference_chains_keep_the_root_and_the_newest() {
        let ids: Vec<String> = (0..30).map(|i| format!("m{i}@example.com")).collect();
        let kept = trim_references(&ids);
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept[0], "m0@example.com");
        assert_eq!(kept[1], "m11@example.com");
        assert_eq!(kept[MAX_REFERENCES - 1], "m29@example.com");

        let mut m = mail(
            &shipped(),
            "ticket_received",
            &Vars::sample(),
            &branding(false, None),
        );
        m.references = ids;
        let raw = compose(&m).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();
        let refs = msg.references().as_text_list().unwrap();
        assert_eq!(refs.len(), MAX_REFERENCES);
        assert_eq!(refs[0], "m0@example.com");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let good = mail(
            &shipped(),
            "ticket_received",
            &Vars::sample(),
            &branding(false, None),
        );
        let error = |f: &dyn Fn(&mut OutMail)| {
            let mut m = good.clone();
            f(&mut m);
            compose(&m).unwrap_err().to_string()
        };
        assert!(error(&|m| m.to = vec![(None, "jane@".into())]).starts_with("invalid to address"));
        assert!(error(&|m| m.reply_to = String::new()).starts_with("invalid reply-to address"));
        assert_eq!(error(&|m| m.to.clear()), "no recipient");
        assert!(error(&|m| m.message_id = "<x@y>".into()).starts_with("invalid message id"));
        assert!(error(&|m| m.message_id = "no-at".into()).starts_with("invalid message id"));
    }

    #[test]
    fn each_email_has_its_own_from_and_reply_to() {
        let base = mail(
            &shipped(),
            "ticket_received",
            &Vars::sample(),
            &branding(false, None),
        );
        let header = |m: &OutMail, name: &str| {
            let raw = compose(m).unwrap();
            let msg = MessageParser::default().parse(&raw).unwrap();
            msg.header_raw(name).unwrap().trim().to_owned()
        };
        assert_eq!(
            header(&base, "From"),
            "\"Acme Support\" <support@acme.example>"
        );
        let mut other = base.clone();
        other.from = "Beta Desk <help@beta.example>".parse().unwrap();
        assert_eq!(header(&other, "From"), "\"Beta Desk\" <help@beta.example>");
        assert_eq!(
            header(&base, "From"),
            "\"Acme Support\" <support@acme.example>"
        );
        // A Reply-To with a display name is still a mailbox.
        other.reply_to = "Beta Desk <help+42@beta.example>".into();
        assert_eq!(
            header(&other, "Reply-To"),
            "\"Beta Desk\" <help+42@beta.example>"
        );
    }

    #[test]
    fn subject_tags() {
        assert_eq!(
            with_subject_tag("Printer on fire", "[#42]"),
            "Printer on fire [#42]"
        );
        assert_eq!(
            with_subject_tag("Re: Printer [#42] on fire", "[#42]"),
            "Re: Printer [#42] on fire"
        );
        assert_eq!(with_subject_tag("About [#4]", "[#42]"), "About [#4] [#42]");
        assert_eq!(with_subject_tag("  ", "[#42]"), "[#42]");
        assert_eq!(with_subject_tag("", "[#42]"), "[#42]");
        assert_eq!(with_subject_tag("Hi ", ""), "Hi");
        assert_eq!(SubjectTag::new("[#{id}]").render(TicketId(42)), "[#42]");
        assert_eq!(
            SubjectTag::new("(ticket {id})").render(TicketId(7)),
            "(ticket 7)"
        );
    }

    #[test]
    fn message_ids_are_fresh_and_well_formed() {
        let a = message_id("desk.acme.example", TicketId(42), 17, 1);
        let b = message_id("desk.acme.example", TicketId(42), 17, 2);
        assert_ne!(a, b, "another store's salt gives another id");
        assert_eq!(
            a,
            message_id("desk.acme.example", TicketId(42), 17, 1),
            "deterministic"
        );
        assert_ne!(a, message_id("desk.acme.example", TicketId(42), 18, 1));
        let (left, host) = a.split_once('@').unwrap();
        assert_eq!(host, "desk.acme.example");
        let parts: Vec<&str> = left.split('.').collect();
        assert_eq!(parts[..2], ["t42", "u17"]);
        assert_eq!(parts[2].len(), 16);
        assert!(parts[2].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(plausible_id(&a));
        assert!(message_id("", TicketId(1), 1, 0).ends_with("@localhost"));
    }

    #[test]
    fn footers_are_placed_and_escaped() {
        assert_eq!(with_text_footer("Hi", Some("F")), "Hi\n\n-- \nF\n");
        assert_eq!(with_text_footer("Hi\n\n\n", Some("F\n")), "Hi\n\n-- \nF\n");
        assert_eq!(with_text_footer("", Some("F")), "\n-- \nF\n");
        assert_eq!(with_text_footer("Hi\n", None), "Hi\n");
        let p = "<p style=\"color:#888888;font-size:small;margin-top:2em\">";
        assert_eq!(
            with_html_footer("<b>Hi</b>", Some("a<b>\nc")),
            format!("<b>Hi</b>\n{p}a&lt;b&gt;<br>\nc</p>\n")
        );
        assert_eq!(
            with_html_footer("<body>Hi</body></body>", Some("'")),
            format!("<body>Hi</body>{p}&#39;</p>\n</body>")
        );
        assert_eq!(with_html_footer("<p>x</p>", None), "<p>x</p>");
    }

    #[test]
    fn dates_come_from_the_input() {
        let mut m = mail(
            &shipped(),
            "ticket_received",
            &Vars::sample(),
            &branding(false, None),
        );
        m.date_millis = 0;
        let raw = String::from_utf8(compose(&m).unwrap()).unwrap();
        assert!(
            raw.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
            "{raw}"
        );
        assert_eq!(compose(&m).unwrap(), compose(&m).unwrap());
    }
}
