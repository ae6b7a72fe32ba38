//! PURE: is this message a bounce (a delivery status notification), which
//! recipients failed or were delayed, and which of our messages bounced?
//!
//! Two roads lead to a [`Bounce`]:
//!
//! - **Standard** (RFC 3464 / RFC 6533): a `multipart/report` whose
//!   `message/delivery-status` (or `message/global-delivery-status`) part
//!   lists the recipients, usually followed by the returned message
//!   (`message/rfc822`) or its headers (`text/rfc822-headers`). mail-parser
//!   walks the MIME tree; the delivery-status fields are read here.
//! - **Heuristic**: the plain-text notices of qmail, Exim, Postfix, Exchange,
//!   Domino, Gmail, Yahoo and friends. Only considered when the envelope
//!   sender is empty or the sender is a mailer daemon / postmaster, *and* the
//!   subject or text reads like a delivery failure; recipients, status codes
//!   and the original Message-ID are then picked out of the text.
//!
//! Feedback reports (ARF), read receipts (MDN) and auto-replies are not
//! bounces: [`detect`] returns `None` for them (see [`super::classify`]).
//!
//! Never does I/O, never reads the clock; never panics, and looks at no more
//! than [`MAX_SCAN_BYTES`] of decoded text per part.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::header::{self, field, Blank, Line};
use super::{is_daemon_address, normalize_message_id, TicketId, DAEMON_LOCALS};

/// The most decoded text (per delivery-status part, and for all text parts
/// together) the heuristics look at.
pub const MAX_SCAN_BYTES: usize = 256 * 1024;
/// Longest `diagnostic` kept, in characters.
pub const MAX_DIAGNOSTIC_CHARS: usize = 500;
/// More recipients than this in one bounce are ignored.
const MAX_RECIPIENTS: usize = 200;
/// More original Message-IDs than this are ignored.
const MAX_IDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// One per failed/delayed recipient found (may be empty for a
    /// heuristically recognised bounce that names none).
    pub recipients: Vec<BounceRecipient>,
    /// Message-IDs (normalised with [`normalize_message_id`]) of the original
    /// message(s) that bounced, most reliable first: the returned
    /// `message/rfc822` or `text/rfc822-headers` parts, then a header block
    /// quoted in the text after a "copy of the message follows" banner, then
    /// any `Message-ID:` line quoted in the text (only when nothing better was
    /// found), and last the bounce's own `In-Reply-To`.
    pub original_message_ids: Vec<String>,
    /// The value of an `X-Postdesk-Ticket:` header in the returned headers,
    /// if any (our loop/ticket marker).
    pub original_ticket: Option<TicketId>,
    /// "failed" | "delayed" | "relayed" | "delivered" | "expanded": the most
    /// severe per-recipient DSN Action (in the order failed, delayed,
    /// relayed, expanded, delivered); for non-standard bounces "delayed"
    /// when the text says the message is delayed / will be retried, else
    /// "failed".
    pub action: String,
    /// true for an RFC 3464 `multipart/report` with a delivery-status part;
    /// false for heuristically recognised ones.
    pub standard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceRecipient {
    /// Lower-cased, without "rfc822;". When a DSN gives both, this is the
    /// `Original-Recipient` (the address the message was sent to, before any
    /// alias expansion at the remote end), else the `Final-Recipient`.
    pub address: String,
    /// The enhanced status code ("5.1.1"), or for non-standard bounces
    /// without one the SMTP reply code ("550").
    pub status: Option<String>,
    /// The DSN Action, lower-cased ("failed", "delayed", ...).
    pub action: Option<String>,
    /// The Diagnostic-Code (or the error text of a non-standard bounce),
    /// whitespace collapsed, at most [`MAX_DIAGNOSTIC_CHARS`] characters.
    pub diagnostic: Option<String>,
}

/// Recognises a bounce. `raw` is the whole message; `mail_from` the envelope
/// sender ("" for `<>`).
pub fn detect(raw: &[u8], mail_from: &str) -> Option<Bounce> {
    let msg = MessageParser::default().parse(raw)?;
    let report = report_kind(&msg);
    if report == Report::Other {
        return None;
    }
    let parts = Parts::collect(&msg);
    if parts.other_report {
        return None;
    }
    let from_daemon = sent_by_daemon(&msg, mail_from);
    let text_view = TextView::new(&parts.text);

    let mut returned = parts.returned;
    returned.add_quoted(&text_view);
    let own_id = msg.message_id().and_then(normalize_message_id);

    let standard = report == Report::DeliveryStatus && !parts.dsn.is_empty();
    let (recipients, action) = if !parts.dsn.is_empty() && (standard || from_daemon) {
        let recipients = merge_recipients(parts.dsn);
        let action = overall_action(&recipients).unwrap_or("failed").to_string();
        (recipients, action)
    } else {
        if !from_daemon || !looks_like_failure(msg.subject().unwrap_or_default(), &text_view) {
            return None;
        }
        let mut recipients = heuristic_recipients(&msg, &text_view);
        // Quoted DSN fields say it best; otherwise the wording of the notice
        // (a reply code's class does not: qmail gives up after 4xx too).
        let action = match overall_action(&recipients) {
            Some(a) => a.to_string(),
            None if is_delay_notice(msg.subject().unwrap_or_default(), &text_view) => {
                "delayed".to_string()
            }
            None => "failed".to_string(),
        };
        for r in recipients.iter_mut().filter(|r| r.action.is_none()) {
            r.action = Some(action.clone());
        }
        (recipients, action)
    };

    if returned.ids.is_empty() {
        returned.add_loose_lines(&text_view, own_id.as_deref());
    }
    for id in id_values(msg.in_reply_to()) {
        returned.push_id(&id);
    }
    Some(Bounce {
        recipients,
        original_message_ids: returned.ids,
        original_ticket: returned.ticket,
        action,
        standard,
    })
}

// ---------------------------------------------------------------------------
// The MIME tree

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// Not a multipart/report.
    None,
    /// `multipart/report` with `report-type=delivery-status` (or none given).
    DeliveryStatus,
    /// Another report type: feedback-report (ARF), disposition-notification
    /// (MDN), ... never a bounce.
    Other,
}

fn report_kind(msg: &Message<'_>) -> Report {
    let Some(ct) = msg.content_type() else {
        return Report::None;
    };
    let is_report = ct.c_type.eq_ignore_ascii_case("multipart")
        && ct
            .c_subtype
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    if !is_report {
        return Report::None;
    }
    let report_type = ct
        .attributes()
        .unwrap_or_default()
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case("report-type"))
        .map(|a| a.value.trim().to_ascii_lowercase());
    match report_type.as_deref() {
        None | Some("") | Some("delivery-status") | Some("global-delivery-status") => {
            Report::DeliveryStatus
        }
        Some(_) => Report::Other,
    }
}

/// What the parts of the message (not of the messages nested in it) hold.
#[derive(Default)]
struct Parts {
    /// Recipients of every delivery-status part, in order.
    dsn: Vec<BounceRecipient>,
    /// Message-IDs and ticket of returned messages / header parts.
    returned: Returned,
    /// The human-readable text: text/* parts (HTML ones only when there is no
    /// plain text), capped at [`MAX_SCAN_BYTES`].
    text: String,
    /// A feedback-report or disposition-notification part.
    other_report: bool,
}

impl Parts {
    fn collect(msg: &Message<'_>) -> Parts {
        let mut out = Parts::default();
        let mut html = String::new();
        // `msg.parts` is this message's own MIME tree: a nested message keeps
        // its parts inside `PartType::Message`, so nothing here descends into
        // the returned original.
        for part in &msg.parts {
            let (ctype, subtype) = part
                .content_type()
                .map(|ct| {
                    (
                        ct.c_type.to_ascii_lowercase(),
                        ct.c_subtype.as_deref().unwrap_or("").to_ascii_lowercase(),
                    )
                })
                .unwrap_or_default();
            match (ctype.as_str(), subtype.as_str()) {
                ("message", "delivery-status" | "global-delivery-status") => {
                    let text = lossy_capped(part.contents());
                    let room = MAX_RECIPIENTS.saturating_sub(out.dsn.len());
                    out.dsn
                        .extend(parse_delivery_status(&text).into_iter().take(room));
                }
                ("message", "feedback-report" | "disposition-notification") => {
                    out.other_report = true;
                }
                ("text", "rfc822-headers") | ("message", "global-headers" | "rfc822-headers") => {
                    out.returned.add_header_bytes(part.contents());
                }
                _ => match &part.body {
                    PartType::Message(nested) => out.returned.add_message(nested),
                    PartType::Binary(bytes) | PartType::InlineBinary(bytes)
                        if ctype == "message"
                            && matches!(subtype.as_str(), "rfc822" | "global") =>
                    {
                        // A returned message mail-parser did not nest (too
                        // deep, or oddly encoded): read its headers ourselves.
                        out.returned.add_header_bytes(bytes);
                    }
                    PartType::Text(text) => push_capped(&mut out.text, text),
                    PartType::Html(text) => push_capped(&mut html, text),
                    // A multipart mail-parser could not split (a broken
                    // boundary): its raw body is all the text there is.
                    PartType::Binary(bytes) | PartType::InlineBinary(bytes)
                        if ctype == "multipart" =>
                    {
                        push_capped(&mut out.text, &lossy_capped(bytes))
                    }
                    _ => {}
                },
            }
        }
        if out.text.trim().is_empty() && !html.is_empty() {
            out.text = mail_parser::decoders::html::html_to_text(&html);
            truncate_at_boundary(&mut out.text, MAX_SCAN_BYTES);
        }
        out
    }
}

/// Original Message-IDs and ticket marker, most reliable first.
#[derive(Default)]
struct Returned {
    ids: Vec<String>,
    ticket: Option<TicketId>,
}

impl Returned {
    fn push_id(&mut self, raw: &str) {
        if let Some(id) = normalize_message_id(raw) {
            if self.ids.len() < MAX_IDS && !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
    }

    fn push_ticket(&mut self, raw: &str) {
        if self.ticket.is_none() {
            self.ticket = parse_ticket(raw);
        }
    }

    fn add_message(&mut self, msg: &Message<'_>) {
        if let Some(id) = msg.message_id() {
            self.push_id(id);
        }
        for (name, value) in msg.headers_raw() {
            if name.trim().eq_ignore_ascii_case("x-postdesk-ticket") {
                self.push_ticket(value);
            }
        }
    }

    fn add_header_bytes(&mut self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(MAX_SCAN_BYTES)];
        if let Some(headers) = MessageParser::default().parse_headers(bytes) {
            self.add_message(&headers);
        }
    }

    /// Header blocks quoted in the text after a "here is a copy of the
    /// message" banner (qmail, Exim, Gmail, Exchange, ...).
    fn add_quoted(&mut self, text: &TextView<'_>) {
        for start in text.banners() {
            let block = header_block(&text.lines[start + 1..]);
            for (name, value) in &block {
                if name.eq_ignore_ascii_case("message-id") {
                    self.push_id(value);
                } else if name.eq_ignore_ascii_case("x-postdesk-ticket") {
                    self.push_ticket(value);
                }
            }
        }
    }

    /// Last resort for bounces without a recognisable banner: any
    /// `Message-ID:` line quoted anywhere in the text, except the bounce's
    /// own.
    fn add_loose_lines(&mut self, text: &TextView<'_>, own_id: Option<&str>) {
        for (i, line) in text.lines.iter().enumerate() {
            let Some((name, _)) = field(line) else {
                continue;
            };
            if name.eq_ignore_ascii_case("message-id") {
                let value = unfolded_value(&text.lines[i..]);
                if normalize_message_id(&value).as_deref() != own_id {
                    self.push_id(&value);
                }
            } else if name.eq_ignore_ascii_case("x-postdesk-ticket") {
                self.push_ticket(&unfolded_value(&text.lines[i..]));
            }
        }
    }
}

fn parse_ticket(raw: &str) -> Option<TicketId> {
    let digits: String = raw
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&n| n > 0).map(TicketId)
}

fn id_values(value: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    match value {
        mail_parser::HeaderValue::TextList(list) => list.iter().map(|s| s.to_string()).collect(),
        mail_parser::HeaderValue::Text(s) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// The delivery-status fields (RFC 3464 §2.2, §2.3)

#[derive(Default)]
struct RecipientFields {
    final_recipient: Option<String>,
    original_recipient: Option<String>,
    action: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
}

#[derive(Clone, Copy)]
enum DsnField {
    Final,
    Original,
    Action,
    Status,
    Diagnostic,
}

impl RecipientFields {
    fn slot(&mut self, field: DsnField) -> &mut Option<String> {
        match field {
            DsnField::Final => &mut self.final_recipient,
            DsnField::Original => &mut self.original_recipient,
            DsnField::Action => &mut self.action,
            DsnField::Status => &mut self.status,
            DsnField::Diagnostic => &mut self.diagnostic,
        }
    }

    /// Ends this block: a recipient if it names one.
    fn flush(&mut self, out: &mut Vec<BounceRecipient>) {
        let fields = std::mem::take(self);
        let address = fields
            .original_recipient
            .as_deref()
            .and_then(dsn_address)
            .or_else(|| fields.final_recipient.as_deref().and_then(dsn_address));
        let Some(address) = address else {
            return;
        };
        let diagnostic = fields.diagnostic.as_deref().and_then(clip_diagnostic);
        let status = fields
            .status
            .as_deref()
            .and_then(|s| enhanced_status(s, b"245"))
            .or_else(|| {
                fields
                    .diagnostic
                    .as_deref()
                    .and_then(|d| enhanced_status(d, b"245"))
            });
        let action = fields
            .action
            .as_deref()
            .and_then(|a| a.split_whitespace().next())
            .map(str::to_ascii_lowercase)
            .filter(|a| ACTIONS.contains(&a.as_str()))
            .or_else(|| status.as_deref().and_then(action_for_status));
        out.push(BounceRecipient {
            address,
            status,
            action,
            diagnostic,
        });
    }
}

/// By severity: the overall action is the first one any recipient has.
const ACTIONS: &[&str] = &["failed", "delayed", "relayed", "expanded", "delivered"];

fn action_for_status(status: &str) -> Option<String> {
    match status.as_bytes().first() {
        Some(b'5') => Some("failed".into()),
        Some(b'4') => Some("delayed".into()),
        Some(b'2') => Some("delivered".into()),
        _ => None,
    }
}

fn overall_action(recipients: &[BounceRecipient]) -> Option<&'static str> {
    ACTIONS
        .iter()
        .find(|a| recipients.iter().any(|r| r.action.as_deref() == Some(**a)))
        .copied()
}

/// Per-recipient field blocks. Blocks are separated by blank lines, but
/// some MTAs leave them out (or add several): a field seen twice also
/// starts a new block.
fn parse_delivery_status(text: &str) -> Vec<BounceRecipient> {
    let mut out = Vec::new();
    let mut current = RecipientFields::default();
    for line in header::unfold(header::lines(text), Blank::WhiteSpace) {
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
        let (name, value) = match line {
            Line::Field { name, value } => (name, value),
            Line::Blank => {
                current.flush(&mut out);
                continue;
            }
            Line::Other(_) => continue,
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "final-recipient" => DsnField::Final,
            "original-recipient" => DsnField::Original,
            "action" => DsnField::Action,
            "status" => DsnField::Status,
            "diagnostic-code" => DsnField::Diagnostic,
            _ => continue,
        };
        if current.slot(kind).is_some() {
            current.flush(&mut out);
        }
        *current.slot(kind) = Some(value.into_owned());
    }
    current.flush(&mut out);
    out
}

/// `rfc822; <User@Example.COM>` → `user@example.com`; `utf-8;` addresses
/// may carry `\x{HEX}` escapes (RFC 6533).
fn dsn_address(value: &str) -> Option<String> {
    let (kind, addr) = match value.split_once(';') {
        Some((kind, addr)) if !kind.contains('@') => (kind.trim().to_ascii_lowercase(), addr),
        _ => (String::new(), value),
    };
    if kind == "utf-8" && addr.contains("\\x{") {
        clean_address(&decode_utf8_escapes(addr))
    } else {
        clean_address(addr)
    }
}

fn decode_utf8_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("\\x{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let decoded = after.find('}').and_then(|end| {
            let c = u32::from_str_radix(&after[..end], 16)
                .ok()
                .and_then(char::from_u32)?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("\\x{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Merges recipients named twice (a qmail notice and its DSN, a summary and
/// a detail section): the first keeps its place, gaps are filled in.
fn merge_recipients(list: Vec<BounceRecipient>) -> Vec<BounceRecipient> {
    let mut out: Vec<BounceRecipient> = Vec::new();
    for r in list {
        let Some(o) = out.iter_mut().find(|o| o.address == r.address) else {
            if out.len() < MAX_RECIPIENTS {
                out.push(r);
            }
            continue;
        };
        // A later mention with a status code tells more about the error.
        let better = o.status.is_none() && r.status.is_some();
        if better || o.diagnostic.is_none() {
            o.diagnostic = r.diagnostic.or(o.diagnostic.take());
        }
        if o.status.is_none() {
            o.status = r.status;
        }
        if o.action.is_none() {
            o.action = r.action;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Non-standard bounces

/// The envelope sender is empty (as RFC 5321 requires of bounces), or the
/// envelope or header sender is a mailer daemon / postmaster.
fn sent_by_daemon(msg: &Message<'_>, mail_from: &str) -> bool {
    let mail_from = mail_from
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    if mail_from.trim().is_empty() || is_daemon_address(mail_from) {
        return true;
    }
    let Some(from) = msg.from().and_then(|a| a.first()) else {
        return false;
    };
    if from.address().is_some_and(is_daemon_address) {
        return true;
    }
    from.name().is_some_and(|name| {
        let name = name.to_ascii_lowercase();
        name.contains("mail delivery") || DAEMON_LOCALS.iter().any(|d| name.contains(d))
    })
}

/// Subjects of delivery failure (and delay) notices, lower-cased.
const FAILURE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered mail",
    "returned mail",
    "returning message",
    "returned to sender",
    "mail delivery failed",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "delivery status notification",
    "delivery notification",
    "delivery error",
    "delivery problem",
    "delivery delayed",
    "delayed mail",
    "failure notice",
    "mail failure",
    "mail system error",
    "non-delivery",
    "nondelivery",
    "not delivered",
    "could not be delivered",
    "could not send message",
    "warning: message",
    "non remis",
    "unzustellbar",
    "nicht zugestellt",
    "no entregado",
    "non recapitabile",
    "недоставлен",
    "не доставлен",
    "配信できません",
    "配送エラー",
];

/// Sentences of delivery failure (and delay) notices, lower-cased.
const FAILURE_PHRASES: &[&str] = &[
    "this is the qmail-send program",
    "created automatically by mail delivery software",
    "this is the mail system at host",
    "this is the postfix program",
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "wasn't able to deliver",
    "unable to deliver",
    "delivery to the following recipient",
    "delivery has failed",
    "delivery failed",
    "error has occurred while attempting to deliver",
    "error occurred while trying to deliver",
    "has not yet been delivered",
    "permanent fatal errors",
    "the following addresses had",
    "your message was rejected",
    "an email you sent was rejected",
    "не может быть доставлено",
];

fn looks_like_failure(subject: &str, text: &TextView<'_>) -> bool {
    let subject = subject.to_lowercase();
    if FAILURE_SUBJECTS.iter().any(|s| subject.contains(s)) {
        return true;
    }
    let notice = text.notice_lower();
    FAILURE_PHRASES.iter().any(|p| notice.contains(p))
}

/// Whether a non-standard notice says the message is delayed, not lost.
fn is_delay_notice(subject: &str, text: &TextView<'_>) -> bool {
    const PERMANENT: &[&str] = &[
        "permanent error",
        "permanent failure",
        "failed permanently",
        "permanently",
        "given up",
        "giving up",
        "gave up",
    ];
    const DELAY: &[&str] = &[
        "delayed",
        "(delay",
        "delay)",
        "will be retried",
        "still being retried",
        "has not yet been delivered",
        "not yet been delivered",
        "warning only",
        "could not send message for past",
        "delivery attempts will continue",
        "will keep trying",
        "will continue trying",
    ];
    let subject = subject.to_lowercase();
    let notice = text.notice_lower();
    if PERMANENT
        .iter()
        .any(|p| notice.contains(p) || subject.contains(p))
    {
        return false;
    }
    DELAY
        .iter()
        .any(|p| subject.contains(p) || notice.contains(p))
}

/// Recipients of a non-standard bounce: delivery-status fields quoted in
/// the text if any (a forwarded DSN, Amazon WorkMail), else the addresses
/// the notice lists, plus `X-Failed-Recipients`.
fn heuristic_recipients(msg: &Message<'_>, text: &TextView<'_>) -> Vec<BounceRecipient> {
    let mut found = parse_delivery_status(text.all);
    if found.is_empty() {
        found = listed_recipients(text, &excluded_addresses(msg));
    }
    for (name, value) in msg.headers_raw() {
        if name.trim().eq_ignore_ascii_case("x-failed-recipients") {
            for address in find_addresses(value) {
                found.push(BounceRecipient {
                    address,
                    status: None,
                    action: None,
                    diagnostic: None,
                });
            }
        }
    }
    let mut recipients = merge_recipients(found);
    if recipients.iter().any(|r| r.status.is_none()) {
        // A notice that gives one error for all (Gmail) or puts it away from
        // the address: the first enhanced code of the notice.
        if let Some(status) = enhanced_status(text.notice, b"45") {
            for r in recipients.iter_mut().filter(|r| r.status.is_none()) {
                r.status = Some(status.clone());
            }
        }
    }
    recipients
}

/// The bounce's own From (the daemon) is never a failed recipient. (Its To,
/// the original sender, is not excluded: a message to oneself can bounce.)
fn excluded_addresses(msg: &Message<'_>) -> Vec<String> {
    [msg.from()]
        .into_iter()
        .flatten()
        .flat_map(|list| list.iter())
        .filter_map(|a| a.address().map(str::to_ascii_lowercase))
        .collect()
}

/// Lines that introduce the list of failed addresses.
const LIST_INTROS: &[&str] = &[
    "following address",
    "following recipient",
    "following list of recipients",
    "recipients or groups",
    "could not be delivered",
    "was not delivered",
    "wasn't able to deliver",
    "unable to deliver",
    "failed permanently",
    "address(es) failed",
    "delivery failed",
    "not yet been delivered",
    "не может быть доставлено",
];

/// Lines that name one failed address after a label.
const RECIPIENT_LABELS: &[&str] = &[
    "recipient:",
    "recipient address:",
    "failed recipient:",
    "target address:",
    "target mail address:",
];

fn listed_recipients(text: &TextView<'_>, excluded: &[String]) -> Vec<BounceRecipient> {
    let lines = text.notice_lines();
    let mut out = Vec::new();
    let mut after_intro = false;
    let mut i = 0;
    while i < lines.len() && out.len() < MAX_RECIPIENTS {
        let line = lines[i];
        i += 1;
        let lower = line.to_lowercase();
        let intro = LIST_INTROS.iter().any(|p| lower.contains(p));
        let labelled = RECIPIENT_LABELS
            .iter()
            .any(|l| lower.trim_start().starts_with(l));
        let Some((address, rest)) = recipient_line(line, after_intro) else {
            if intro || labelled {
                after_intro |= intro;
                // "Delivery failed 10 attempts: info@example.net",
                // "target mail address: info@example.net"
                if let Some((_, tail)) = line.rsplit_once(':') {
                    if let [address] = find_addresses(tail).as_slice() {
                        if !excluded.contains(address) {
                            out.push(BounceRecipient {
                                address: address.clone(),
                                status: None,
                                action: None,
                                diagnostic: None,
                            });
                        }
                    }
                }
            }
            continue;
        };
        // The error text: the rest of the line, then the lines below it up
        // to a blank line or the next address.
        let mut diagnostic = rest.trim().trim_start_matches(':').trim().to_string();
        while i < lines.len()
            && !lines[i].trim().is_empty()
            && recipient_line(lines[i], after_intro).is_none()
        {
            if diagnostic.len() < 4 * MAX_DIAGNOSTIC_CHARS {
                diagnostic.push(' ');
                diagnostic.push_str(lines[i].trim());
            }
            i += 1;
        }
        if excluded.contains(&address) {
            continue;
        }
        let status = enhanced_status(&diagnostic, b"45").or_else(|| basic_reply_code(&diagnostic));
        out.push(BounceRecipient {
            address,
            status,
            action: None,
            diagnostic: clip_diagnostic(&diagnostic),
        });
    }
    if out.is_empty() {
        out = rcpt_transcript(&lines, excluded);
    }
    out
}

/// A line that names a failed recipient: `<addr>`, `<addr>: error`,
/// `addr: error` (qmail, Yahoo, OpenSMTPD, Postfix), or — once a "the
/// following addresses failed" line was seen — a bare `addr` (Exim, Gmail,
/// Domino, Exchange). Postfix's `<a> (expanded from <b>)` gives `b`.
fn recipient_line(line: &str, after_intro: bool) -> Option<(String, &str)> {
    let trimmed = line.trim_start();
    let trimmed = ["-- ", "- ", "* ", "• "]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p))
        .unwrap_or(trimmed)
        .trim_start();
    let bracketed = trimmed.starts_with('<');
    let (address, rest) = leading_address(trimmed)?;
    let tail = rest.trim_start();
    if let Some(expanded) = tail.strip_prefix("(expanded from") {
        let (original, after) = leading_address(expanded.trim_start())?;
        let after = after.trim_start().strip_prefix(')').unwrap_or(after);
        return Some((original, after));
    }
    let accepted = tail.starts_with(':')
        || (tail.is_empty() && (bracketed || after_intro))
        || ((bracketed || after_intro) && tail.starts_with('('))
        || (after_intro && tail.starts_with("<mailto:"));
    accepted.then_some((address, tail))
}

/// Last resort: an SMTP transcript (`RCPT TO:<addr>` answered by a 4xx/5xx
/// reply), as Trend Micro and some appliances quote it.
fn rcpt_transcript(lines: &[&str], excluded: &[String]) -> Vec<BounceRecipient> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let upper = line.to_ascii_uppercase();
        let Some(at) = upper.find("RCPT TO:") else {
            continue;
        };
        let Some((address, _)) = leading_address(line[at + 8..].trim_start()) else {
            continue;
        };
        let reply = lines
            .get(i + 1)
            .map(|next| format!("{} {}", line, next.trim()))
            .unwrap_or_else(|| line.to_string());
        let status = enhanced_status(&reply, b"45").or_else(|| basic_reply_code(&reply));
        if status.is_none() || excluded.contains(&address) || out.len() >= MAX_RECIPIENTS {
            continue;
        }
        out.push(BounceRecipient {
            address,
            status,
            action: None,
            diagnostic: clip_diagnostic(&reply),
        });
    }
    out
}

// ---------------------------------------------------------------------------
// The text of the notice

/// The human-readable text, split into lines, with the "notice" (the text
/// before the returned copy of the message) told apart.
struct TextView<'a> {
    all: &'a str,
    lines: Vec<&'a str>,
    /// The text up to the first "copy of the message" banner.
    notice: &'a str,
    /// Number of lines in `notice`.
    notice_len: usize,
}

impl<'a> TextView<'a> {
    fn new(all: &'a str) -> TextView<'a> {
        let lines: Vec<&str> = all.lines().collect();
        let notice_len = lines
            .iter()
            .position(|l| is_banner(l))
            .unwrap_or(lines.len());
        let notice = match lines.get(notice_len) {
            // `line` is a subslice of `all`: its offset is where it starts.
            Some(line) => {
                let offset = (line.as_ptr() as usize).saturating_sub(all.as_ptr() as usize);
                all.get(..offset).unwrap_or(all)
            }
            None => all,
        };
        TextView {
            all,
            lines,
            notice,
            notice_len,
        }
    }

    fn notice_lines(&self) -> Vec<&'a str> {
        self.lines[..self.notice_len].to_vec()
    }

    fn notice_lower(&self) -> String {
        self.notice.to_lowercase()
    }

    /// Indices of the lines that announce a returned copy of the message.
    fn banners(&self) -> impl Iterator<Item = usize> + '_ {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| is_banner(l))
            .map(|(i, _)| i)
    }
}

/// "--- Below this line is a copy of the message.", "------ This is a copy
/// of the message, including all the headers. ------", "----- Original
/// message -----", "Original message headers:", a quoted
/// `Content-Type: message/rfc822`, ...
fn is_banner(line: &str) -> bool {
    const BANNERS: &[&str] = &[
        "copy of the message",
        "copy of your message",
        "copy of the original message",
        "original message follows",
        "original message headers",
        "header of the original message",
        "headers of the original message",
        "original message header",
        "unsent message below",
        "message text follows",
        "message header follows",
        "returned message follows",
        "content-type: message/rfc822",
        "content-type: text/rfc822-headers",
        "content-type: message/global",
        "bounced e-mail:",
    ];
    let lower = line.trim().to_ascii_lowercase();
    if BANNERS.iter().any(|b| lower.contains(b)) {
        return true;
    }
    // "----- Original message -----", "=== Original Message ==="
    lower.contains("original message") && lower.starts_with(['-', '=', '*', '|'])
}

/// The header fields right after a banner (blank lines and an mbox `From `
/// line skipped), unfolded, up to the first line that is not a header.
fn header_block(lines: &[&str]) -> Vec<(String, String)> {
    let start = lines
        .iter()
        .take(500)
        .position(|l| !l.trim().is_empty() && !l.starts_with("From "))
        .unwrap_or(lines.len());
    let end = lines.len().min(start + 500);
    header::unfold(lines[start..end].iter().copied(), Blank::WhiteSpace)
        .map_while(|l| match l {
            Line::Field { name, value } => Some((name.to_owned(), value.into_owned())),
            _ => None,
        })
        .collect()
}

/// The value of the field on `lines[0]`, with its continuation lines.
fn unfolded_value(lines: &[&str]) -> String {
    match header::unfold(lines.iter().copied(), Blank::WhiteSpace).next() {
        Some(Line::Field { value, .. }) => value.into_owned(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Small parsers

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c)
}

/// A plausible mailbox: one local part, a dotted domain; lower-cased.
fn clean_address(s: &str) -> Option<String> {
    let s = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let s = match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => &s[7..],
        _ => s,
    };
    let (local, domain) = s.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    let valid = !local.is_empty()
        && local.len() <= 256
        && local.chars().all(is_local_char)
        && domain.len() <= 255
        && domain.contains('.')
        && !domain.starts_with(['.', '-'])
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    valid.then(|| format!("{local}@{domain}").to_lowercase())
}

/// An address at the start of `s` (`<addr>` or a bare `addr`) and the rest
/// of `s` after it.
fn leading_address(s: &str) -> Option<(String, &str)> {
    if let Some(inner) = s.strip_prefix('<') {
        let end = inner.find('>')?;
        return Some((clean_address(&inner[..end])?, &inner[end + 1..]));
    }
    let end = s
        .find(|c: char| !(is_local_char(c) || c == '@'))
        .unwrap_or(s.len());
    let token = s[..end].trim_end_matches('.');
    Some((clean_address(token)?, &s[token.len()..]))
}

/// Every address in a free-text list ("a@x, <b@y>; c@z").
fn find_addresses(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in s.split(|c: char| c.is_whitespace() || c == ',' || c == ';') {
        let token = token.trim_matches(|c: char| "<>()[]\"':.".contains(c));
        if let Some(address) = clean_address(token) {
            if !out.contains(&address) && out.len() < MAX_RECIPIENTS {
                out.push(address);
            }
        }
    }
    out
}

/// The first enhanced status code (RFC 3463: `class.subject.detail`, class
/// one of `classes`) standing on its own in `s`.
fn enhanced_status(s: &str, classes: &[u8]) -> Option<String> {
    let b = s.as_bytes();
    let digits = |from: usize| {
        b[from.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    for i in 0..b.len() {
        if !classes.contains(&b[i])
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            continue;
        }
        if b.get(i + 1) != Some(&b'.') {
            continue;
        }
        let d1 = digits(i + 2);
        if !(1..=3).contains(&d1) || b.get(i + 2 + d1) != Some(&b'.') {
            continue;
        }
        let d2 = digits(i + 3 + d1);
        let end = i + 3 + d1 + d2;
        if !(1..=3).contains(&d2) {
            continue;
        }
        let continues = match b.get(end) {
            Some(c) if c.is_ascii_alphanumeric() => true,
            Some(b'.') => b.get(end + 1).is_some_and(u8::is_ascii_digit),
            _ => false,
        };
        if !continues {
            return s.get(i..end).map(str::to_string);
        }
    }
    None
}

/// The first 4xx/5xx SMTP reply code standing on its own in `s`.
fn basic_reply_code(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for i in 0..b.len().saturating_sub(2) {
        let code = &b[i..i + 3];
        if !matches!(code[0], b'4' | b'5') || !code[1].is_ascii_digit() || !code[2].is_ascii_digit()
        {
            continue;
        }
        let before_ok =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.' || b[i - 1] == b'#');
        let after_ok = match b.get(i + 3) {
            None => true,
            Some(c) => c.is_ascii_whitespace() || *c == b'-',
        };
        if before_ok && after_ok {
            return s.get(i..i + 3).map(str::to_string);
        }
    }
    None
}

fn clip_diagnostic(s: &str) -> Option<String> {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let clipped: String = collapsed.chars().take(MAX_DIAGNOSTIC_CHARS).collect();
    (!clipped.is_empty()).then_some(clipped)
}

fn lossy_capped(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_SCAN_BYTES)]).into_owned();
    truncate_at_boundary(&mut text, MAX_SCAN_BYTES);
    text
}

fn push_capped(out: &mut String, text: &str) {
    let room = MAX_SCAN_BYTES.saturating_sub(out.len());
    if room == 0 {
        return;
    }
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
    out.push('\n');
}

fn truncate_at_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// One line per bounce: `action[ (heuristic)] [addr status action, ...]
    /// ids=... ticket=...`, so that expectations stay short and survive new
    /// fields.
    fn summary(b: &Bounce) -> String {
        let recipients: Vec<String> = b
            .recipients
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.address,
                    r.status.as_deref().unwrap_or("-"),
                    r.action.as_deref().unwrap_or("-")
                )
            })
            .collect();
        format!(
            "{}{} [{}] ids={} ticket={}",
            b.action,
            if b.standard { "" } else { " (heuristic)" },
            recipients.join(", "),
            b.original_message_ids.join(" "),
            b.original_ticket
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
        )
    }

    fn check(raw: &str, mail_from: &str, expect: Option<&str>) {
        let got = detect(raw.as_bytes(), mail_from);
        assert_eq!(got.as_ref().map(summary).as_deref(), expect, "{raw}");
    }

    /// A DSN for one of our own messages, the way Postfix writes it.
    fn own_dsn(status_fields: &str) -> String {
        format!(
            "Return-Path: <>\r\n\
             From: MAILER-DAEMON@mx.customer.example (Mail Delivery System)\r\n\
             To: support@desk.example\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             Message-ID: <20240101.ABC@mx.customer.example>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"B1\"\r\n\
             \r\n\
             --B1\r\n\
             Content-Type: text/plain\r\n\
             \r\n\
             I'm sorry to have to inform you that your message could not be delivered.\r\n\
             \r\n\
             --B1\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; mx.customer.example\r\n\
             \r\n\
             {status_fields}\
             \r\n\
             --B1\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n\
             From: Support <support@desk.example>\r\n\
             To: bob@customer.example\r\n\
             Subject: [#7] Your printer\r\n\
             Message-ID: <t7.u3.abc@desk.example>\r\n\
             X-Postdesk-Ticket: 7\r\n\
             Auto-Submitted: auto-replied\r\n\
             \r\n\
             --B1--\r\n"
        )
    }

    #[test]
    fn dsn_for_one_of_our_messages() {
        let raw = own_dsn(
            "Final-Recipient: rfc822; Bob@Customer.example\r\n\
             Action: failed\r\n\
             Status: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <bob@customer.example>:\r\n\
             \x20   Recipient address rejected: User unknown\r\n",
        );
        let b = detect(raw.as_bytes(), "").expect("a bounce");
        assert_eq!(b.original_message_ids, vec!["t7.u3.abc@desk.example"]);
        assert_eq!(b.original_ticket, Some(TicketId(7)));
        assert_eq!(b.action, "failed");
        assert!(b.standard);
        assert_eq!(
            b.recipients,
            vec![BounceRecipient {
                address: "bob@customer.example".into(),
                status: Some("5.1.1".into()),
                action: Some("failed".into()),
                diagnostic: Some(
                    "smtp; 550 5.1.1 <bob@customer.example>: Recipient address rejected: \
                     User unknown"
                        .into()
                ),
            }]
        );
        // A standard DSN is a DSN whoever the envelope sender claims to be.
        assert_eq!(detect(raw.as_bytes(), "relay@customer.example"), Some(b));
    }

    #[test]
    fn delivery_status_blocks() {
        // Several recipients, no blank line between them, Original-Recipient
        // preferred, Action derived from Status when missing, a delay wins
        // over nothing but loses to a failure.
        let raw = own_dsn(
            "Original-Recipient: rfc822;alias@customer.example\r\n\
             Final-Recipient: rfc822; <real@mail.customer.example>\r\n\
             Action: delayed\r\n\
             Status: 4.2.2 (mailbox full)\r\n\
             Final-Recipient: RFC822; b@customer.example\r\n\
             Status: 5.7.1\r\n\
             \r\n\
             \r\n\
             \r\n\
             Final-Recipient: utf-8; j\\x{00F6}rg@customer.example\r\n\
             Action: Delivered\r\n\
             Status: 2.0.0\r\n",
        );
        check(
            &raw,
            "",
            Some(
                "failed [alias@customer.example 4.2.2 delayed, b@customer.example 5.7.1 failed, \
                 jörg@customer.example 2.0.0 delivered] ids=t7.u3.abc@desk.example ticket=7",
            ),
        );
        let delayed = own_dsn(
            "Final-Recipient: rfc822; bob@customer.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n",
        );
        check(
            &delayed,
            "",
            Some(
                "delayed [bob@customer.example 4.4.1 delayed] ids=t7.u3.abc@desk.example ticket=7",
            ),
        );
    }

    #[test]
    fn other_reports_are_not_bounces() {
        for report in ["feedback-report", "disposition-notification"] {
            let raw = format!(
                "From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\
                 Content-Type: multipart/report; report-type={report}; boundary=B\r\n\r\n\
                 --B\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
                 --B\r\nContent-Type: message/{report}\r\n\r\nFeedback-Type: abuse\r\n\
                 Final-Recipient: rfc822; bob@customer.example\r\n\r\n--B--\r\n"
            );
            check(&raw, "", None);
        }
    }

    #[test]
    fn heuristics_need_a_daemon_and_a_failure() {
        let notice = "Subject: Undelivered Mail Returned to Sender\r\n\r\n\
                      This is the mail system at host mx.example.\r\n\r\n\
                      <bob@customer.example>: host mx.customer.example said: 550 5.1.1\r\n\
                      \x20   User unknown (in reply to RCPT TO command)\r\n\r\n\
                      --- Below this line is a copy of the message.\r\n\r\n\
                      From: support@desk.example\r\n\
                      Message-ID: <t7.u3.abc@desk.example>\r\n\
                      X-Postdesk-Ticket: 7\r\n\r\nHello\r\n";
        let expect = "failed (heuristic) [bob@customer.example 5.1.1 failed] \
                      ids=t7.u3.abc@desk.example ticket=7";
        check(notice, "", Some(expect));
        check(
            &format!("From: MAILER-DAEMON@mx.example\r\n{notice}"),
            "relay@mx.example",
            Some(expect),
        );
        // A customer quoting a bounce in an ordinary message is a customer.
        check(
            &format!("From: Bob <bob@customer.example>\r\n{notice}"),
            "bob@customer.example",
            None,
        );
        // A daemon's mail that does not read like a failure.
        check(
            "From: MAILER-DAEMON@mx.example\r\nSubject: Daily report\r\n\r\nAll is well.\r\n",
            "",
            None,
        );
        // An out-of-office with a null envelope sender.
        check(
            "From: Bob <bob@customer.example>\r\nSubject: Automatic reply: Your printer\r\n\
             Auto-Submitted: auto-replied\r\n\r\nI am out of the office until Monday.\r\n",
            "",
            None,
        );
    }

    #[test]
    fn small_parsers() {
        assert_eq!(
            enhanced_status("said: 550 5.1.1 <x@y>", b"45").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(enhanced_status("(#5.5.0)", b"45").as_deref(), Some("5.5.0"));
        assert_eq!(
            enhanced_status("DSN 5.1.10 Errors", b"45").as_deref(),
            Some("5.1.10")
        );
        assert_eq!(
            enhanced_status("host [192.0.2.153] Exim 4.72", b"245"),
            None
        );
        assert_eq!(enhanced_status("id 15.1.112.19; 2.0.2.232", b"245"), None);
        assert_eq!(
            basic_reply_code("remote host said: 550 Unknown").as_deref(),
            Some("550")
        );
        assert_eq!(basic_reply_code("port 10024, [192.0.2.232]"), None);
        assert_eq!(
            dsn_address("RFC822; <A@B.example>").as_deref(),
            Some("a@b.example")
        );
        assert_eq!(dsn_address("rfc822;/O=EXCHANGE/CN=x"), None);
        assert_eq!(parse_ticket(" 42 (postdesk)"), Some(TicketId(42)));
        assert_eq!(parse_ticket("0"), None);
        let long = format!("smtp; 550 {}", "x".repeat(2000));
        assert_eq!(clip_diagnostic(&long).map(|d| d.chars().count()), Some(500));
    }

    #[test]
    fn garbage_and_huge_input_do_not_panic() {
        for raw in [
            &b""[..],
            b"\0\0",
            b"\r\n\r\n",
            b"Content-Type: multipart/report\r\n\r\n--",
        ] {
            let _ = detect(raw, "");
        }
        let mut huge =
            String::from("From: MAILER-DAEMON@mx.example\r\nSubject: failure notice\r\n\r\n");
        for i in 0..100_000 {
            huge.push_str(&format!("<user{i}@customer.example>: 550 5.1.1 no\r\n"));
        }
        let b = detect(huge.as_bytes(), "").expect("a bounce");
        assert_eq!(b.recipients.len(), MAX_RECIPIENTS);
    }

    /// The shared real-world corpus (skipped, with a note, when absent).
    mod corpus {
        use super::*;
        use std::path::{Path, PathBuf};

        fn corpus_dir() -> Option<PathBuf> {
            let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus"));
            if dir.is_dir() {
                Some(dir.to_path_buf())
            } else {
                eprintln!("skipped: ../shared/corpus not found");
                None
            }
        }

        fn eml_files(dir: &Path) -> Vec<PathBuf> {
            let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect();
            out.sort();
            out
        }

        fn name(path: &Path) -> String {
            path.file_name().unwrap().to_string_lossy().into_owned()
        }

        /// The envelope sender a real delivery would have had: the
        /// Return-Path (`<>` → ""), or "" when there is none, as RFC 5321
        /// requires of bounces.
        fn envelope_sender(raw: &[u8]) -> String {
            MessageParser::default()
                .parse_headers(raw)
                .and_then(|m| m.return_address().map(str::to_string))
                .unwrap_or_default()
        }

        #[test]
        fn bounces_are_recognised() {
            let Some(dir) = corpus_dir() else { return };
            let files = eml_files(&dir.join("bounces"));
            assert_eq!(files.len(), 58, "corpus/bounces changed");
            let (mut detected, mut with_recipient, mut with_id) = (0, 0, 0);
            let mut missed = Vec::new();
            for path in &files {
                let raw = std::fs::read(path).unwrap();
                match detect(&raw, &envelope_sender(&raw)) {
                    Some(b) => {
                        detected += 1;
                        with_recipient += usize::from(!b.recipients.is_empty());
                        with_id += usize::from(!b.original_message_ids.is_empty());
                    }
                    None => missed.push(name(path)),
                }
            }
            assert!(missed.is_empty(), "not recognised: {missed:?}");
            assert_eq!(detected, 58);
            // zammad__mail052 ("some test" from MAILER-DAEMON) names nobody.
            assert_eq!(with_recipient, 57);
            // 14 return no Message-ID, because there is none to find: the
            // returned copy lacks one (courier, exchange2007-01, discourse x3,
            // flanker broken-mime and delayed, domino's quoted subject,
            // opensmtpd), or nothing is returned (exim-38, mimecast,
            // delivery-status-multiple-blank-lines, postfix-01's empty
            // message/rfc822 part, zammad__mail052).
            assert_eq!(with_id, 44);
        }

        #[test]
        fn bounce_details() {
            let Some(dir) = corpus_dir() else { return };
            let cases = [
                // Standard RFC 3464.
                (
                    "sisimai__bsd--lhost-sendmail-01.eml",
                    "failed [userunknown@bouncehammer.jp 5.1.1 failed] \
                     ids=E1C50F1B-1C83-4820-BC36-AC6FBFBE8568@example.org ticket=-",
                ),
                (
                    "rubymail__multipart_report_emails--multipart_report_multiple_status.eml",
                    "failed [u@ci.com 5.3.0 failed] \
                     ids=4c2a146147ac8_61ff157c4ec1652df@s.h.c.mail ticket=-",
                ),
                (
                    "mimekit__messages--delivery-status-multiple-blank-lines.txt.eml",
                    "failed [orig_recip@customer.com 5.5.0 failed] ids= ticket=-",
                ),
                (
                    "mimekit__messages--delivery-status.txt.eml",
                    "failed [newsletter-request@imusic.com - failed] \
                     ids=31FC7EB4.41C6@netscape.com ticket=-",
                ),
                (
                    "sisimai__bsd--rfc3464-07.eml",
                    "delayed [kijitora@example.net 4.4.0 delayed] \
                     ids=000000000000000@list.example.jp ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-office365-04.eml",
                    "failed [otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp 5.1.351 failed] \
                     ids=SLXP216MB0381A8F03A83505296890D11A9950@slxp216mb0381.korp216.prod.outlook.com \
                     ticket=-",
                ),
                // A delivery-status part in multipart/mixed: Original-Recipient.
                (
                    "sisimai__bsd--rfc3464-09.eml",
                    "delayed (heuristic) [kijitora-nyaaaaaan@example.co.jp 4.3.0 delayed] \
                     ids=00000000000000000000000000000000000000000@example.org ticket=-",
                ),
                // Plain-text notices.
                (
                    "sisimai__bsd--lhost-qmail-01.eml",
                    "failed (heuristic) [kijitora@example.ne.jp 5.5.0 failed] \
                     ids=000000000.9999999999999.JavaMail.postmaster@mailhub ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-exim-01.eml",
                    "failed (heuristic) [kijitora@example.ed.jp 5.7.0 failed] \
                     ids=E1P1ce6-000Egt-GZ@e1.example.org ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-exim-38.eml",
                    "delayed (heuristic) [kijitora@example.co.jp 450 delayed] ids= ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-gmail-01.eml",
                    "failed (heuristic) [userunknown@example.jp 5.1.1 failed] \
                     ids=D992C2C3-F175-4C4D-97E2-53A90E4E5BF5@gmail.com ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-office365-01.eml",
                    "failed (heuristic) [kijitora@example.com 5.1.10 failed] \
                     ids=FFFFFFFF.EEEEEEEE@example.ed.jp ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-postfix-49.eml",
                    "failed (heuristic) [toraneko@neko.example.co.jp 4.0.0 failed] \
                     ids=1409050600.12984636501178305590.JavaMail.root@mz-cb000p.noc-kyoto2jo.ocn.ad.jp \
                     ticket=-",
                ),
                (
                    "sisimai__bsd--lhost-trendmicro-01.eml",
                    "failed (heuristic) [kijitora@example.co.jp 5.1.1 failed] \
                     ids=00000000000.000000000000@e3.example.co.jp ticket=-",
                ),
                (
                    "flanker__bounce--broken-mime.eml",
                    "failed (heuristic) [info@example.net - failed] ids= ticket=-",
                ),
                (
                    "zammad__mail052.box.eml",
                    "failed (heuristic) [] ids= ticket=-",
                ),
            ];
            for (file, expect) in cases {
                let raw = std::fs::read(dir.join("bounces").join(file)).unwrap();
                let got = detect(&raw, &envelope_sender(&raw));
                assert_eq!(got.as_ref().map(summary).as_deref(), Some(expect), "{file}");
            }
        }

        /// Auto-replies, replies and charset samples are never bounces, with
        /// an ordinary envelope sender — and auto-replies not even with an
        /// empty one, which is how most of them arrive.
        ///
        /// One exception, a bounce in all but name: sisimai's
        /// `not--rb-issue-368-bug` ("email bounce notification" from
        /// postmaster: "an email you sent was rejected ... reject reason:
        /// Mailbox full, target mail address: ...", with the bounced mail
        /// quoted). sisimai files it under "not a bounce" because it is no
        /// DSN, but for us it says exactly what a bounce says.
        #[test]
        fn other_mail_is_not_a_bounce() {
            let Some(dir) = corpus_dir() else { return };
            let mut wrong = Vec::new();
            for (folder, senders) in [
                ("auto-replies", &["sender@example.com", ""][..]),
                ("replies", &["sender@example.com"][..]),
                ("charsets", &["sender@example.com"][..]),
            ] {
                for path in eml_files(&dir.join(folder)) {
                    let raw = std::fs::read(&path).unwrap();
                    for sender in senders {
                        if detect(&raw, sender).is_some() {
                            wrong.push(format!("{folder}/{} ({sender:?})", name(&path)));
                        }
                    }
                }
            }
            assert_eq!(
                wrong,
                vec![
                    "auto-replies/sisimai__not--rb-issue-368-bug.eml (\"sender@example.com\")",
                    "auto-replies/sisimai__not--rb-issue-368-bug.eml (\"\")",
                ]
            );
        }

        /// Every message of every folder, whole and cut short at a few
        /// places (a cut multipart, a header without its value): no panic.
        #[test]
        fn no_message_panics() {
            let Some(dir) = corpus_dir() else { return };
            let mut count = 0;
            for folder in std::fs::read_dir(&dir).unwrap().flatten() {
                for path in eml_files(&folder.path()) {
                    let raw = std::fs::read(&path).unwrap();
                    for cut in [raw.len(), raw.len() / 2, raw.len() / 3, 200.min(raw.len())] {
                        for sender in ["", "sender@example.com"] {
                            let _ = detect(&raw[..cut], sender);
                        }
                    }
                    count += 1;
                }
            }
            assert!(count > 300, "corpus looks truncated: {count} files");
        }
    }
}
