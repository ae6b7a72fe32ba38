//! Header fields read from text, without a MIME parser: `Name: value`
//! lines with their folded continuations (RFC 5322 §2.2.3), unfolded the
//! one way postdesk does it everywhere — a message's own header block read
//! from its raw bytes ([`super::parse`]), the returned headers and report
//! fields inside a bounce ([`super::bounce`]), the Message-ID of an email
//! about to be sent.
//!
//! PURE. Linear in the text: every line is looked at once.

use std::borrow::Cow;
use std::iter::Peekable;

/// One line of a header block, its continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A field: its name as written (trimmed) and its value, trimmed, each
    /// continuation line trimmed and joined to it with one space.
    Field { name: &'a str, value: Cow<'a, str> },
    /// A line that ends a block (see [`Blank`]).
    Blank,
    /// Anything else: not a field, and not a continuation of one.
    Other(&'a str),
}

impl Line<'_> {
    /// The value, when this is a field named `name` (any case).
    pub fn value_of(&self, name: &str) -> Option<&str> {
        match self {
            Line::Field { name: n, value } if n.eq_ignore_ascii_case(name) => Some(value),
            _ => None,
        }
    }
}

/// Which lines are [`Line::Blank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blank {
    /// Only an empty line: a message's own header block, where a line of
    /// blanks is folding white space (it continues the field above).
    Empty,
    /// Any line of only white space: text quoted inside a message body.
    WhiteSpace,
}

/// The lines of `lines` (each without its line ending), fields unfolded.
pub fn unfold<'a, I>(lines: I, blank: Blank) -> Unfold<'a, I::IntoIter>
where
    I: IntoIterator<Item = &'a str>,
{
    Unfold {
        lines: lines.into_iter().peekable(),
        blank,
    }
}

/// `text`'s lines (`\n` or `\r\n`), as [`unfold`] takes them.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

pub struct Unfold<'a, I: Iterator<Item = &'a str>> {
    lines: Peekable<I>,
    blank: Blank,
}

fn is_blank(blank: Blank, line: &str) -> bool {
    match blank {
        Blank::Empty => line.is_empty(),
        Blank::WhiteSpace => line.trim().is_empty(),
    }
}

fn is_continuation(line: &str) -> bool {
    line.starts_with([' ', '\t'])
}

impl<'a, I: Iterator<Item = &'a str>> Iterator for Unfold<'a, I> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let line = self.lines.next()?;
        if is_blank(self.blank, line) {
            return Some(Line::Blank);
        }
        let Some((name, value)) = field(line).filter(|_| !is_continuation(line)) else {
            return Some(Line::Other(line));
        };
        let mut value = Cow::Borrowed(value.trim());
        let blank = self.blank;
        while let Some(next) = self.lines.peek() {
            if !is_continuation(next) || is_blank(blank, next) {
                break;
            }
            let more = next.trim();
            if !more.is_empty() {
                let v = value.to_mut();
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(more);
            }
            self.lines.next();
        }
        Some(Line::Field { name, value })
    }
}

/// `Name: value` with a plausible field name (printable ASCII without a
/// colon, at most 76 characters; white space before the colon allowed, as
/// RFC 5322's obsolete syntax does).
pub fn field(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim_end();
    let plausible = !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    plausible.then_some((name, value))
}

/// The fields of the header block at the start of a message (up to its
/// first empty line), unfolded.
pub fn message_fields(text: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    unfold(lines(text), Blank::Empty)
        .take_while(|l| *l != Line::Blank)
        .filter_map(|l| match l {
            Line::Field { name, value } => Some((name, value)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<(String, String)> {
        message_fields(text)
            .map(|(n, v)| (n.to_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn continuations_join_with_one_space_and_the_block_ends_at_an_empty_line() {
        let text =
            "Subject: a\r\n  folded\r\n\tsubject\r\nX-A :  1 \r\n \r\nX-B: 2\r\n\r\nBody: no\r\n";
        assert_eq!(
            fields(text),
            [
                ("Subject".into(), "a folded subject".into()),
                ("X-A".into(), "1".into()),
                ("X-B".into(), "2".into()),
            ]
        );
    }

    #[test]
    fn a_line_that_is_no_field_is_other_and_a_blank_one_ends_quoted_text() {
        let got: Vec<Line<'_>> = unfold(
            ["Message-ID:", "  <a@b>", "not a field", "   ", "X: y"],
            Blank::WhiteSpace,
        )
        .collect();
        assert_eq!(
            got,
            [
                Line::Field {
                    name: "Message-ID",
                    value: "<a@b>".into()
                },
                Line::Other("not a field"),
                Line::Blank,
                Line::Field {
                    name: "X",
                    value: "y".into()
                },
            ]
        );
        assert_eq!(got[0].value_of("message-id"), Some("<a@b>"));
        assert_eq!(got[0].value_of("subject"), None);
    }

    #[test]
    fn names_must_be_plausible() {
        assert_eq!(field("Subject: x"), Some(("Subject", " x")));
        assert_eq!(field("Subject : x"), Some(("Subject", " x")));
        assert_eq!(field("two words: x"), None);
        assert_eq!(field(": x"), None);
        assert_eq!(field(&format!("{}: x", "a".repeat(77))), None);
        // A continuation line is never a field of its own.
        assert_eq!(
            unfold([" Subject: x"], Blank::Empty).next(),
            Some(Line::Other(" Subject: x"))
        );
    }
}
