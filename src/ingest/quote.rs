//! PURE: finds what the sender newly wrote in a reply.
//!
//! Owns one decision: given the decoded text body of a message (as
//! mail-parser's `body_text(0)` yields it), which lines are the sender's new
//! words and which are quoted history (`>` lines, "On … wrote:" attributions,
//! Outlook "-----Original Message-----" / "From:/Sent:/To:/Subject:" blocks),
//! the signature ("-- ") and mobile sign-offs ("Sent from my iPhone").
//! The result feeds agent notifications and the ticket timeline; the raw
//! message is stored elsewhere untouched, so dropping too much only hides
//! text from a summary, while never dropping prose is the priority.
//!
//! Never does I/O, never panics, allocates little beyond the output (a
//! line index, short lower-cased copies of candidate marker lines), and runs in time linear in the input: every look-ahead is either
//! bounded (header blocks, wrapped attributions) or consumes what it scans.

/// Marker lines (attributions, separators, header lines) are short; longer
/// lines are always prose, which also keeps the per-line work bounded.
const MAX_MARKER_LINE: usize = 400;

/// How far below a "From:" line the rest of an Outlook header block may be
/// (a long To:/Cc: list wraps over a few lines).
const HEADER_WINDOW: usize = 8;

/// The new text of `text`: quoted history, signature and trailing mobile
/// sign-off removed, leading and trailing blank lines trimmed, lines joined
/// with LF. Forwarded content (Gmail/Thunderbird/Apple "forwarded message"
/// markers) is kept, since the sender is handing it to us on purpose.
/// If nothing would remain, the whole text trimmed is returned instead, so a
/// non-blank text never yields an empty result.
pub fn new_text(text: &str) -> String {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let kept = strip(&lines);
    let out = join_trimmed(&kept);
    if out.is_empty() {
        // A message that is only a quote (or only a signature): showing the
        // whole text beats showing nothing.
        text.replace("\r\n", "\n").trim().to_string()
    } else {
        out
    }
}

/// What one line means for the reply structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A `>` quoted line.
    Quote,
    /// Start of forwarded content: kept with everything after it.
    Forward,
    /// RFC 3676 signature delimiter.
    Signature,
    /// Start of unquoted history (Outlook separator or header block).
    Cut,
    /// "On … wrote:" over `len` lines. `strong` means it has the shape of a
    /// real attribution (date or address), not just a sentence ending in
    /// "wrote:".
    Attribution {
        len: usize,
        strong: bool,
    },
    Text,
}

fn strip<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut kept: Vec<&'a str> = Vec::new();
    // A quote block was dropped since the last kept non-blank line: used to
    // collapse the blank lines that surrounded it into one.
    let mut dropped = false;
    let mut forwarded = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        match classify(lines, i) {
            Kind::Quote => {
                dropped = true;
                i += 1;
            }
            Kind::Forward => {
                kept.extend_from_slice(&lines[i..]);
                forwarded = true;
                break;
            }
            Kind::Signature => {
                // Gmail puts the signature above a forward: drop the
                // signature but keep the forwarded message.
                if let Some(j) = forward_after(lines, i + 1) {
                    trim_trailing_blank(&mut kept);
                    kept.push("");
                    kept.extend_from_slice(&lines[j..]);
                    forwarded = true;
                }
                break;
            }
            Kind::Cut => {
                // Outlook web puts a line of underscores (other clients a
                // line of dashes) above the header block; it belongs to the
                // history, not to the new text.
                while kept.last().is_some_and(|l| is_blank(l) || is_rule(l)) {
                    kept.pop();
                }
                break;
            }
            Kind::Attribution { len, strong } => {
                if followed_by_quote(lines, i + len) {
                    // Attribution of a `>` block: drop both, but keep going
                    // so bottom-posted and interleaved answers survive.
                    dropped = true;
                    i += len;
                } else if strong {
                    // History pasted without `>` (HTML converted to text).
                    break;
                } else {
                    // Just a sentence ending in "wrote:".
                    kept.push(line);
                    dropped = false;
                    i += 1;
                }
            }
            Kind::Text => {
                let blank = is_blank(line);
                let collapse = blank && dropped && kept.last().is_some_and(|l| is_blank(l));
                if !collapse {
                    kept.push(line);
                }
                if !blank {
                    dropped = false;
                }
                i += 1;
            }
        }
    }
    if !forwarded {
        strip_signoffs(&mut kept);
    }
    kept
}

fn classify(lines: &[&str], i: usize) -> Kind {
    let line = lines[i];
    if is_quote(line) || is_wrapped_quote_tail(lines, i) {
        return Kind::Quote;
    }
    if line.trim_end() == "--" {
        return Kind::Signature;
    }
    let t = line.trim();
    if t.is_empty() || t.len() > MAX_MARKER_LINE {
        return Kind::Text;
    }
    if is_forward_marker(t) {
        return Kind::Forward;
    }
    if is_original_separator(t) || is_header_block(lines, i) {
        return Kind::Cut;
    }
    attribution(lines, i).unwrap_or(Kind::Text)
}

/// First forward marker at or after `from`, unless history starts before it
/// (then any "forward" further down is part of that history).
fn forward_after(lines: &[&str], from: usize) -> Option<usize> {
    let mut j = from;
    while j < lines.len() {
        match classify(lines, j) {
            Kind::Forward => return Some(j),
            Kind::Cut | Kind::Attribution { strong: true, .. } => return None,
            _ => {}
        }
        j += 1;
    }
    None
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_quote(line: &str) -> bool {
    line.trim_start_matches([' ', '\t']).starts_with('>')
}

/// Lines wider than the quoting client's wrap width get hard-wrapped
/// by a later client, leaving the tail of a quoted line unquoted:
/// "> … mcheck handler\nfor in the first place\n> its trying…". A short
/// unquoted line squeezed between a long quote line and another quote line
/// (no blank line around it) is such a tail, not an interleaved answer.
fn is_wrapped_quote_tail(lines: &[&str], i: usize) -> bool {
    let (Some(prev), Some(next)) = (
        i.checked_sub(1).and_then(|p| lines.get(p)),
        lines.get(i + 1),
    ) else {
        return false;
    };
    let t = lines[i].trim();
    !t.is_empty()
        && t.chars().take(41).count() <= 40
        && is_quote(prev)
        && is_quote(next)
        && prev.trim_end().chars().take(60).count() >= 60
}

/// A horizontal rule: five or more of one of `_`, `-`, `=`.
fn is_rule(line: &str) -> bool {
    let t = line.trim().as_bytes();
    match t.first() {
        Some(&c @ (b'_' | b'-' | b'=')) => t.len() >= 5 && t.iter().all(|&b| b == c),
        _ => false,
    }
}

fn followed_by_quote(lines: &[&str], from: usize) -> bool {
    lines
        .get(from..)
        .and_then(|rest| rest.iter().find(|l| !is_blank(l)))
        .is_some_and(|l| is_quote(l))
}

fn trim_trailing_blank(kept: &mut Vec<&str>) {
    while kept.last().is_some_and(|l| is_blank(l)) {
        kept.pop();
    }
}

fn join_trimmed(kept: &[&str]) -> String {
    let start = kept.iter().position(|l| !is_blank(l));
    let end = kept.iter().rposition(|l| !is_blank(l));
    match (start, end) {
        (Some(s), Some(e)) => kept[s..=e].join("\n"),
        _ => String::new(),
    }
}

/// Lower-cases and folds the no-break spaces French typography puts before
/// ':' and curly apostrophes, so marker tables can be plain ASCII-ish text.
/// Only called on lines of at most `MAX_MARKER_LINE` bytes (times two).
fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{a0}' | '\u{202f}' | '\t' => ' ',
            '\u{2019}' => '\'',
            c => c,
        })
        .collect::<String>()
        .to_lowercase()
}

/// The words between the dashes of a "----- Words -----" line, if it has
/// at least two dashes on each side.
fn dashed_inner(t: &str) -> Option<&str> {
    let lead = t.len() - t.trim_start_matches('-').len();
    let trail = t.len() - t.trim_end_matches('-').len();
    if lead < 2 || trail < 2 || lead + trail >= t.len() {
        return None;
    }
    Some(t[lead..t.len() - trail].trim())
}

const ORIGINAL_SEPARATORS: &[&str] = &[
    "original message",
    "ursprüngliche nachricht",
    "original-nachricht",
    "message d'origine",
    "mensaje original",
    "messaggio originale",
    "oorspronkelijk bericht",
    "mensagem original",
];

/// Outlook desktop, Yahoo, Zimbra and Thunderbird (in a reply) separators.
fn is_original_separator(t: &str) -> bool {
    t.len() <= 100
        && dashed_inner(t).is_some_and(|w| ORIGINAL_SEPARATORS.contains(&fold(w).as_str()))
}

const FORWARD_DASHED: &[&str] = &[
    "forwarded message",
    "weitergeleitete nachricht",
    "message transféré",
    "mensaje reenviado",
    "messaggio inoltrato",
    "doorgestuurd bericht",
    "mensagem encaminhada",
];

/// Apple Mail's forward headers, one per language.
const FORWARD_LINES: &[&str] = &[
    "begin forwarded message:",
    "anfang der weitergeleiteten nachricht:",
    "début du message réexpédié :",
    "début du message réexpédié:",
    "inicio del mensaje reenviado:",
    "inizio messaggio inoltrato:",
    "begin doorgestuurd bericht:",
    "início da mensagem reencaminhada:",
];

fn is_forward_marker(t: &str) -> bool {
    if t.len() > 100 {
        return false;
    }
    if let Some(w) = dashed_inner(t) {
        return FORWARD_DASHED.contains(&fold(w).as_str());
    }
    FORWARD_LINES.contains(&fold(t).as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    From,
    Sent,
    To,
    Subject,
    Other,
}

/// The Outlook header field a line starts with ("From:", "*Von:*", "De :").
fn header_key(line: &str) -> Option<Header> {
    let t = line.trim_start().trim_start_matches('*');
    // Keys are short; never look further than this into a long line.
    let (colon, _) = t.char_indices().take(24).find(|&(_, c)| c == ':')?;
    let key = fold(t[..colon].trim_end_matches('*').trim());
    let h = match key.as_str() {
        "from" | "von" | "de" | "da" | "van" | "från" | "fra" | "od" => Header::From,
        "sent" | "date" | "gesendet" | "datum" | "envoyé" | "enviado" | "enviada" | "fecha"
        | "inviato" | "data" | "verzonden" | "verstuurd" | "skickat" | "sendt" => Header::Sent,
        "to" | "an" | "à" | "a" | "para" | "aan" | "till" | "til" | "do" => Header::To,
        "subject" | "betreff" | "objet" | "asunto" | "oggetto" | "onderwerp" | "assunto"
        | "ämne" | "emne" | "temat" => Header::Subject,
        "cc" | "bcc" | "kopie" | "reply-to" | "importance" | "wichtigkeit" | "priorität" => {
            Header::Other
        }
        _ => return None,
    };
    Some(h)
}

/// An Outlook-style header block starting at line `i`: a From line, then
/// within a few lines (no blank line between) a Subject line and a Sent/Date
/// or To line. A lone "From:" sentence in prose does not qualify.
fn is_header_block(lines: &[&str], i: usize) -> bool {
    if header_key(lines[i]) != Some(Header::From) {
        return false;
    }
    let (mut subject, mut sent_or_to) = (false, false);
    for l in lines.iter().skip(i + 1).take(HEADER_WINDOW) {
        if is_blank(l) {
            break;
        }
        match header_key(l) {
            Some(Header::Subject) => subject = true,
            Some(Header::Sent | Header::To) => sent_or_to = true,
            _ => {}
        }
        if subject && sent_or_to {
            return true;
        }
    }
    false
}

/// Verbs an attribution ends with (before the colon).
const END_VERBS: &[&str] = &[
    "wrote",
    "writes",
    "a écrit",
    "a ecrit",
    "escribió",
    "escribio",
    "ha scritto",
    "schreef",
    "schrieb",
    "escreveu",
    "skrev",
    "kirjoitti",
    "napisał",
    "napisała",
    "napsal",
    "написал",
    "написала",
    "írta",
];

/// Verbs that German/Dutch/Danish attributions put before the name:
/// "Am 2. Apr. 2012 um 18:26 schrieb Megan <m@x>:".
const MID_VERBS: &[&str] = &[" schrieb ", " schreef ", " skrev "];

/// Words an attribution starts with: "On", "Am", "Le", "El", "Il", "Op",
/// "Em", "Den", "W dniu".
const PREFIXES: &[&str] = &[
    "on ", "am ", "le ", "el ", "il ", "op ", "em ", "den ", "w dniu ",
];

fn ends_with_word(s: &str, word: &str) -> bool {
    s.strip_suffix(word)
        .is_some_and(|head| head.is_empty() || head.ends_with([' ', '"', '>', ')', ',']))
}

/// `Some(strong)` if `s` (one trimmed line, or two joined) reads as an
/// attribution; strong when it also carries a date or an address.
fn attribution_strength(s: &str) -> Option<bool> {
    if !s.ends_with(':') {
        return None;
    }
    let lower = fold(s);
    let body = lower.strip_suffix(':').unwrap_or(&lower).trim_end();
    let verb = END_VERBS.iter().any(|v| ends_with_word(body, v))
        || MID_VERBS.iter().any(|v| body.contains(v));
    if !verb {
        return None;
    }
    let has_digit = body.bytes().any(|b| b.is_ascii_digit());
    let prefixed = PREFIXES.iter().any(|p| body.starts_with(p));
    let starts_digit = body.bytes().next().is_some_and(|b| b.is_ascii_digit());
    Some(body.contains('@') || (has_digit && (prefixed || starts_digit)))
}

fn attribution(lines: &[&str], i: usize) -> Option<Kind> {
    let a = lines[i].trim();
    if let Some(strong) = attribution_strength(a) {
        return Some(Kind::Attribution { len: 1, strong });
    }
    // Gmail wraps a long attribution, usually inside the address:
    // "On Mon, … Megan One <\nmegan@example.com> wrote:".
    let next = lines.get(i + 1)?;
    let b = next.trim();
    if b.is_empty() || b.len() > MAX_MARKER_LINE || !b.ends_with(':') || is_quote(next) {
        return None;
    }
    let joined = format!("{a} {b}");
    (joined.contains('@') && attribution_strength(&joined) == Some(true)).then_some(
        Kind::Attribution {
            len: 2,
            strong: true,
        },
    )
}

/// Client-added sign-offs, lower-cased prefixes. Only ever removed from the
/// very end of the new text.
const SIGNOFFS: &[&str] = &[
    "sent from my ",
    "sent from mail for windows",
    "sent from outlook",
    "sent from yahoo mail",
    "sent from samsung mobile",
    "get outlook for ",
    "envoyé de mon ",
    "envoyé depuis mon ",
    "obtenir outlook pour ",
    "enviado desde mi ",
    "obtener outlook para ",
    "inviato da ",
    "inviato dal mio ",
    "verzonden vanaf mijn ",
    "verstuurd vanaf mijn ",
    "enviado do meu ",
    "enviado de meu ",
    "gesendet von meinem ",
    "holen sie sich outlook für ",
];

fn is_signoff(line: &str) -> bool {
    let t = line.trim();
    if t.len() > 80 {
        return false;
    }
    let l = fold(t);
    // "Von meinem iPhone gesendet" has the verb last.
    SIGNOFFS.iter().any(|p| l.starts_with(p))
        || (l.starts_with("von meinem ") && l.ends_with("gesendet"))
}

fn strip_signoffs(kept: &mut Vec<&str>) {
    trim_trailing_blank(kept);
    while kept.last().is_some_and(|l| is_signoff(l)) {
        kept.pop();
        trim_trailing_blank(kept);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::new_text;
    use std::path::{Path, PathBuf};

    fn check(input: &str, expect: &str) {
        assert_eq!(new_text(input), expect, "input:\n{input}");
    }

    #[test]
    fn client_styles() {
        let cases: &[(&str, &str)] = &[
            // Gmail, English.
            (
                "Thanks, that fixed it.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <megan@example.com> wrote:\n\n> Hi\n> Try restarting.\n",
                "Thanks, that fixed it.",
            ),
            // Gmail, attribution wrapped over two lines inside the address.
            (
                "Thanks.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One Longname-Doublebarrel <\nmegan.longname@example.com> wrote:\n\n> Hi\n",
                "Thanks.",
            ),
            // Gmail, German.
            (
                "Danke!\n\nAm Mo., 2. Apr. 2012 um 18:26 Uhr schrieb Megan One <megan@example.com>:\n\n> Hallo\n",
                "Danke!",
            ),
            // Gmail, French (no-break space before the colon).
            (
                "Merci.\n\nLe lun. 2 avr. 2012 à 18:26, Megan One <megan@example.com> a\u{a0}écrit\u{a0}:\n\n> Bonjour\n",
                "Merci.",
            ),
            // Gmail, Spanish.
            (
                "Gracias.\n\nEl lun, 2 abr 2012 a las 18:26, Megan One (<megan@example.com>) escribió:\n\n> Hola\n",
                "Gracias.",
            ),
            // Gmail, Italian.
            (
                "Grazie.\n\nIl giorno lun 2 apr 2012 alle ore 18:26 Megan One <megan@example.com> ha scritto:\n\n> Ciao\n",
                "Grazie.",
            ),
            // Gmail, Dutch.
            (
                "Bedankt.\n\nOp ma 2 apr. 2012 om 18:26 schreef Megan One <megan@example.com>:\n\n> Hallo\n",
                "Bedankt.",
            ),
            // Gmail, Portuguese.
            (
                "Obrigado.\n\nEm seg., 2 de abr. de 2012 às 18:26, Megan One <megan@example.com> escreveu:\n\n> Olá\n",
                "Obrigado.",
            ),
            // Outlook desktop, English, with the separator line.
            (
                "Works now.\r\n\r\n-----Original Message-----\r\nFrom: Support <support@example.com>\r\nSent: Monday, April 2, 2012 5:49 PM\r\nTo: Bob\r\nSubject: Test\r\n\r\nHi\r\n",
                "Works now.",
            ),
            // Outlook desktop, English, header block only (Cc, wrapped To).
            (
                "Works now.\n\nBob\n\nFrom: Support <support@example.com>\nSent: Monday, April 2, 2012 5:49 PM\nTo: Bob; Alice; Carol;\n Dave\nCc: Eve\nSubject: RE: Test\n\nHi\n",
                "Works now.\n\nBob",
            ),
            // Outlook desktop, German.
            (
                "Passt so.\n\n-----Ursprüngliche Nachricht-----\nVon: Support [mailto:support@example.com]\nGesendet: Montag, 2. April 2012 17:49\nAn: Bob\nBetreff: Test\n\nHallo\n",
                "Passt so.",
            ),
            (
                "Passt so.\n\nVon: Support <support@example.com>\nGesendet: Montag, 2. April 2012 17:49\nAn: Bob\nBetreff: AW: Test\n\nHallo\n",
                "Passt so.",
            ),
            // Outlook web: underscore rule, then the header block.
            (
                "Done.\n\n________________________________\nFrom: Support <support@example.com>\nSent: Monday, April 2, 2012 5:49 PM\nTo: Bob\nSubject: Test\n\nHi\n",
                "Done.",
            ),
            // Outlook, French header block.
            (
                "C'est bon.\n\nDe : Support <support@example.com>\nEnvoyé : lundi 2 avril 2012 17:49\nÀ : Bob\nObjet : Test\n",
                "C'est bon.",
            ),
            // Apple Mail.
            (
                "Hello\n\nOn Apr 3, 2012, at 4:19 PM, bob <bob@example.com> wrote:\n\n> Hi\n",
                "Hello",
            ),
            // Apple Mail quoting its own attribution.
            (
                "Hello\n> On 22 Aug 2015, at 19:21, Adam <adam@example.com> wrote:\n>\n> Hi there!\n",
                "Hello",
            ),
            // Thunderbird, top-posted.
            (
                "Yes.\n\nOn 01/02/2024 10:00, Megan One wrote:\n> Can you?\n",
                "Yes.",
            ),
            // Thunderbird, bottom-posted.
            (
                "On 01/02/2024 10:00, Megan One wrote:\n> Can you?\n\nYes.\n",
                "Yes.",
            ),
            // Thunderbird's separator in a reply is history.
            (
                "Yes.\n\n-------- Original Message --------\nSubject: Test\nDate: Mon, 1 Feb 2024\nFrom: Megan\n\nCan you?\n",
                "Yes.",
            ),
            // `>` quotes, top-posted, nested.
            (
                "Agreed.\n\n> I think so.\n> > Is it?\n",
                "Agreed.",
            ),
            // Interleaved: the answers between quote blocks stay.
            (
                "Megan wrote:\n> First question?\n\nFirst answer.\n\n> Second question?\n\nSecond answer.\n\n> trailing quote\n",
                "First answer.\n\nSecond answer.",
            ),
            // A quoted line hard-wrapped by a later client.
            (
                "> I'm looking at this now and wondering what we added the mcheck handler\nfor in the first place\n> and what it does.\n\nIt protects the system.\n",
                "It protects the system.",
            ),
            // Signature delimiter "-- " and bare "--".
            (
                "See you.\n\n-- \nBob Example\nACME Corp\n",
                "See you.",
            ),
            ("See you.\n-Bob\n\n--\nOld programmers never die.\n", "See you.\n-Bob"),
            // Mobile sign-offs.
            (
                "Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob <bob@example.com> wrote:\n\n> Hi\n",
                "Hello",
            ),
            ("Ja.\n\nVon meinem iPhone gesendet\n", "Ja."),
            ("Oui.\n\nEnvoyé de mon iPhone", "Oui."),
            ("Sure.\n\nGet Outlook for iOS\n", "Sure."),
            // Forwards are kept, headers and all.
            (
                "FYI\n\n---------- Forwarded message ---------\nFrom: Megan <megan@example.com>\nDate: Mon, Apr 2, 2012 at 6:26 PM\nSubject: Test\nTo: <bob@example.com>\n\nHi\n",
                "FYI\n\n---------- Forwarded message ---------\nFrom: Megan <megan@example.com>\nDate: Mon, Apr 2, 2012 at 6:26 PM\nSubject: Test\nTo: <bob@example.com>\n\nHi",
            ),
            (
                "See below.\n\nBegin forwarded message:\n\nFrom: Megan <megan@example.com>\nSubject: Test\nDate: 2 April 2012 18:26:00 CEST\nTo: bob@example.com\n\n> quoted inside the forward\n",
                "See below.\n\nBegin forwarded message:\n\nFrom: Megan <megan@example.com>\nSubject: Test\nDate: 2 April 2012 18:26:00 CEST\nTo: bob@example.com\n\n> quoted inside the forward",
            ),
            // A signature above a forward: the forward survives.
            (
                "FYI\n-- \nBob\n\n---------- Forwarded message ---------\nFrom: Megan\n\nHi\n",
                "FYI\n\n---------- Forwarded message ---------\nFrom: Megan\n\nHi",
            ),
            // Only a quote: fall back to the whole text, trimmed.
            ("\n> just a quote\n> nothing else\n\n", "> just a quote\n> nothing else"),
            ("-- \nonly a signature\n", "-- \nonly a signature"),
            // Prose that merely looks like markers stays.
            (
                "Hi,\n\nFrom: the logs I can see it failed.\nWe restarted it.\n\nBob",
                "Hi,\n\nFrom: the logs I can see it failed.\nWe restarted it.\n\nBob",
            ),
            (
                "On Monday we wrote:\nthe draft is ready.\n",
                "On Monday we wrote:\nthe draft is ready.",
            ),
            (
                "Status: done\n--Geoff\nACME\n",
                "Status: done\n--Geoff\nACME",
            ),
            // Blank lines inside are kept; outer ones trimmed.
            ("\n\nA\n\n\nB\n\n\n", "A\n\n\nB"),
        ];
        for (input, expect) in cases {
            check(input, expect);
        }
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let long_line = "x".repeat(1 << 20);
        assert_eq!(new_text(&long_line), long_line);
        let many_quotes = "> q\n".repeat(200_000);
        assert_eq!(new_text(&many_quotes).len(), many_quotes.trim().len());
        let many_attr = "On 1 Jan 2024, a@b wrote:\n".repeat(40_000);
        assert!(!new_text(&many_attr).is_empty());
        let many_from = "From: a\nSent: b\n".repeat(60_000);
        assert!(!new_text(&many_from).is_empty());
        let blanks = format!("On 1 Jan 2024, a@b wrote:{}", "\n".repeat(500_000));
        assert!(!new_text(&blanks).is_empty());
        for s in [
            "", "\n", "\r\n", ">", "--", "-- \n", "é:", "\u{a0}:", "----", "-", "De :", "*From:*",
        ] {
            let out = new_text(s);
            assert!(out.len() <= s.len());
        }
        let cr_only = "Hello\r\rOn 1 Jan 2024, a@b wrote:\r> x\r";
        assert!(!new_text(cr_only).is_empty());
    }

    fn corpus_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
    }

    fn eml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                eml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(path);
            }
        }
    }

    fn body_text(path: &Path) -> Option<String> {
        let raw = std::fs::read(path).unwrap();
        let msg = mail_parser::MessageParser::default().parse(&raw)?;
        msg.body_text(0).map(|t| t.into_owned())
    }

    #[test]
    fn corpus_pass() {
        let dir = corpus_dir();
        if !dir.is_dir() {
            eprintln!("skipping corpus pass: {} is absent", dir.display());
            return;
        }
        let mut files = Vec::new();
        eml_files(&dir, &mut files);
        files.sort();
        assert!(!files.is_empty());
        for path in &files {
            let Some(text) = body_text(path) else {
                continue;
            };
            let out = new_text(&text);
            if !text.trim().is_empty() {
                assert!(!out.is_empty(), "empty new_text for {}", path.display());
            }
            assert!(out.len() <= text.len(), "longer for {}", path.display());
        }
    }

    /// Real replies from different clients; each golden file
    /// (`golden/new_text/<stem>.txt`, the expected new_text plus a final LF)
    /// was checked by hand against its source message.
    const GOLDEN: &[&str] = &[
        "talon__gmail",
        "talon__android",
        "talon__outlook",
        "talon__aol",
        "talon__yahoo",
        "talon__hotmail",
        "talon__apple_mail",
        "talon__apple_mail_2",
        "talon__iphone",
        "talon__thunderbird",
        "talon__sparrow",
        "phpmime__issue84",
        "phpmime__m0013",
        "zammad__mail003.box",
        "zammad__mail012.box",
        "zammad__mail014.box",
        "rubymail__plain_emails--raw_email8",
        "redmine__issue_update_with_quoted_reply_above",
        "notmuch__lkml--cur--1382298775.004374_2_",
    ];

    #[test]
    fn golden_replies() {
        let dir = corpus_dir().join("replies");
        if !dir.is_dir() {
            eprintln!("skipping golden test: {} is absent", dir.display());
            return;
        }
        let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ingest/golden/new_text");
        let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
        let mut failures = Vec::new();
        for stem in GOLDEN {
            let text = body_text(&dir.join(format!("{stem}.eml"))).unwrap();
            let got = format!("{}\n", new_text(&text));
            let golden = golden_dir.join(format!("{stem}.txt"));
            if update {
                std::fs::create_dir_all(&golden_dir).unwrap();
                std::fs::write(&golden, &got).unwrap();
            } else if std::fs::read_to_string(&golden).unwrap_or_default() != got {
                failures.push(format!("{stem}: got\n{got}"));
            }
        }
        assert!(
            failures.is_empty(),
            "golden mismatch:\n{}",
            failures.join("\n")
        );
    }
}
