//! Which ticket does a message belong to? SPEC §4, in order, first match
//! wins:
//!
//! 1. `In-Reply-To`, then `References` newest first, against every
//!    Message-ID the store links to a ticket (stored, sent, or named in a
//!    ticket message's threading headers) — and before them the message's
//!    own Message-ID, which a ticket's message may have named already: a
//!    parent that arrives after its reply joins the reply's ticket;
//! 2. the plus address of a channel address, when that ticket exists: the
//!    signed `local+<id>.<key>@domain` from anyone, the bare
//!    `local+<id>@domain` only from a participant or an agent (what the key
//!    is worth is [`super::trust`]'s to say);
//! 3. the subject tag (`[#<id>]`), only when the sender is already a
//!    participant of that ticket or an agent.
//!
//! This is the one place header threading is decided. The store supplies a
//! [`ThreadView`]; tests supply a map.

use super::TicketId;

/// How a message found its ticket; shown on the timeline and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadedBy {
    /// Its own Message-ID was named by a ticket's message (a late parent).
    MessageId,
    InReplyTo,
    References,
    PlusAddress,
    SubjectTag,
    /// Nothing matched: a new ticket (or a conversation).
    New,
}

impl ThreadedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadedBy::MessageId => "message_id",
            ThreadedBy::InReplyTo => "in_reply_to",
            ThreadedBy::References => "references",
            ThreadedBy::PlusAddress => "plus_address",
            ThreadedBy::SubjectTag => "subject_tag",
            ThreadedBy::New => "new",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMatch {
    pub ticket: Option<TicketId>,
    pub by: ThreadedBy,
    /// What matched: the Message-ID, the plus address or the tag.
    pub via: Option<String>,
}

impl ThreadMatch {
    fn new_thread() -> Self {
        ThreadMatch {
            ticket: None,
            by: ThreadedBy::New,
            via: None,
        }
    }
}

/// What threading needs to know from the store.
pub trait ThreadView {
    type Error;
    fn ticket_for_message_id(&self, message_id: &str) -> Result<Option<TicketId>, Self::Error>;
    fn ticket_exists(&self, ticket: TicketId) -> Result<bool, Self::Error>;
    fn is_participant(&self, ticket: TicketId, email: &str) -> Result<bool, Self::Error>;
}

/// The subject tag pattern of `outbound.subject_tag`, e.g. `[#{id}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTag {
    prefix: String,
    suffix: String,
}

impl SubjectTag {
    /// `pattern` must contain `{id}`; without it, tags never match.
    pub fn new(pattern: &str) -> Self {
        match pattern.split_once("{id}") {
            Some((p, s)) => SubjectTag {
                prefix: p.to_string(),
                suffix: s.to_string(),
            },
            None => SubjectTag {
                prefix: String::new(),
                suffix: String::new(),
            },
        }
    }

    pub fn render(&self, id: TicketId) -> String {
        format!("{}{id}{}", self.prefix, self.suffix)
    }

    /// The first tag in `subject` naming a ticket id.
    pub fn find(&self, subject: &str) -> Option<TicketId> {
        if self.prefix.is_empty() && self.suffix.is_empty() {
            return None;
        }
        let mut rest = subject;
        while let Some(pos) = rest.find(self.prefix.as_str()) {
            let after = &rest[pos + self.prefix.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && digits <= 18 && after[digits..].starts_with(self.suffix.as_str()) {
                if let Ok(id) = after[..digits].parse::<u64>() {
                    if id > 0 {
                        return Some(TicketId(id));
                    }
                }
            }
            // Advance past this match (one character when the prefix is
            // empty); `get` so that an empty subject cannot slice past its end.
            let step = if self.prefix.is_empty() {
                rest.chars().next().map_or(1, char::len_utf8)
            } else {
                pos + self.prefix.len()
            };
            match rest.get(step..) {
                Some(r) if !r.is_empty() => rest = r,
                _ => break,
            }
        }
        None
    }
}

/// The facts about one inbound message that threading looks at.
#[derive(Debug, Clone)]
pub struct ThreadInput<'a> {
    /// The message's own (normalised) Message-ID.
    pub message_id: &'a str,
    pub in_reply_to: &'a [String],
    /// Header order, oldest first (as written).
    pub references: &'a [String],
    /// The ticket id of a plus recipient (`support+42@…`), if any, and
    /// whether it was signed with a valid key (see [`super::trust`]).
    pub plus: Option<(TicketId, bool)>,
    pub subject: &'a str,
    /// Sender address, lower-cased.
    pub sender: Option<&'a str>,
    pub sender_is_agent: bool,
}

pub fn decide<V: ThreadView>(
    input: &ThreadInput<'_>,
    tag: &SubjectTag,
    view: &V,
) -> Result<ThreadMatch, V::Error> {
    if let Some(ticket) = view.ticket_for_message_id(input.message_id)? {
        return Ok(ThreadMatch {
            ticket: Some(ticket),
            by: ThreadedBy::MessageId,
            via: Some(input.message_id.to_string()),
        });
    }
    for id in input.in_reply_to {
        if let Some(ticket) = view.ticket_for_message_id(id)? {
            return Ok(ThreadMatch {
                ticket: Some(ticket),
                by: ThreadedBy::InReplyTo,
                via: Some(id.clone()),
            });
        }
    }
    for id in input.references.iter().rev() {
        if let Some(ticket) = view.ticket_for_message_id(id)? {
            return Ok(ThreadMatch {
                ticket: Some(ticket),
                by: ThreadedBy::References,
                via: Some(id.clone()),
            });
        }
    }
    let known_sender = |ticket| -> Result<bool, V::Error> {
        Ok(input.sender_is_agent
            || match input.sender {
                Some(sender) => view.is_participant(ticket, sender)?,
                None => false,
            })
    };
    if let Some((ticket, signed)) = input.plus {
        if view.ticket_exists(ticket)? && (signed || known_sender(ticket)?) {
            return Ok(ThreadMatch {
                ticket: Some(ticket),
                by: ThreadedBy::PlusAddress,
                via: Some(ticket.to_string()),
            });
        }
    }
    if let Some(ticket) = tag.find(input.subject) {
        if view.ticket_exists(ticket)? && known_sender(ticket)? {
            return Ok(ThreadMatch {
                ticket: Some(ticket),
                by: ThreadedBy::SubjectTag,
                via: Some(tag.render(ticket)),
            });
        }
    }
    Ok(ThreadMatch::new_thread())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::convert::Infallible;

    #[derive(Default)]
    struct Map {
        ids: HashMap<String, TicketId>,
        tickets: HashSet<TicketId>,
        participants: HashSet<(TicketId, String)>,
    }

    impl ThreadView for Map {
        type Error = Infallible;
        fn ticket_for_message_id(&self, id: &str) -> Result<Option<TicketId>, Infallible> {
            Ok(self.ids.get(id).copied())
        }
        fn ticket_exists(&self, t: TicketId) -> Result<bool, Infallible> {
            Ok(self.tickets.contains(&t))
        }
        fn is_participant(&self, t: TicketId, email: &str) -> Result<bool, Infallible> {
            Ok(self.participants.contains(&(t, email.to_string())))
        }
    }

    fn world() -> Map {
        let mut m = Map::default();
        m.tickets.extend([1, 2, 3].map(TicketId));
        m.ids.insert("a@x".into(), TicketId(1));
        m.ids.insert("b@x".into(), TicketId(2));
        m.participants
            .insert((TicketId(3), "bob@example.com".into()));
        m
    }

    fn check(
        irt: &[&str],
        refs: &[&str],
        plus: Option<(u64, bool)>,
        subject: &str,
        sender: &str,
        agent: bool,
        expect: (Option<u64>, ThreadedBy),
    ) {
        let irt: Vec<String> = irt.iter().map(|s| s.to_string()).collect();
        let refs: Vec<String> = refs.iter().map(|s| s.to_string()).collect();
        let input = ThreadInput {
            message_id: "own@x",
            in_reply_to: &irt,
            references: &refs,
            plus: plus.map(|(t, proven)| (TicketId(t), proven)),
            subject,
            sender: Some(sender),
            sender_is_agent: agent,
        };
        let Ok(got) = decide(&input, &SubjectTag::new("[#{id}]"), &world());
        assert_eq!((got.ticket.map(TicketId::get), got.by), expect, "{input:?}");
    }

    #[test]
    fn order_of_methods() {
        use ThreadedBy::*;
        let bob = "bob@example.com";
        check(
            &["a@x"],
            &["b@x"],
            Some((3, true)),
            "[#3]",
            bob,
            false,
            (Some(1), InReplyTo),
        );
        // References newest (last) first.
        check(
            &[],
            &["a@x", "b@x"],
            None,
            "",
            bob,
            false,
            (Some(2), References),
        );
        check(
            &[],
            &["b@x", "zz@x", "a@x", "unknown@y"],
            None,
            "",
            bob,
            false,
            (Some(1), References),
        );
        check(
            &["nope@x"],
            &["b@x"],
            None,
            "",
            bob,
            false,
            (Some(2), References),
        );
        check(
            &["nope@x"],
            &[],
            Some((3, false)),
            "[#1]",
            bob,
            false,
            (Some(3), PlusAddress),
        );
        // A plus address naming no ticket is the plain channel address.
        check(&[], &[], Some((99, true)), "", bob, false, (None, New));
        check(
            &[],
            &[],
            None,
            "Re: help [#3]",
            bob,
            false,
            (Some(3), SubjectTag),
        );
    }

    #[test]
    fn a_late_parent_joins_the_ticket_that_named_it() {
        let mut m = world();
        m.ids.insert("own@x".into(), TicketId(2));
        let input = ThreadInput {
            message_id: "own@x",
            in_reply_to: &[],
            references: &[],
            plus: Some((TicketId(3), true)),
            subject: "",
            sender: None,
            sender_is_agent: false,
        };
        let Ok(got) = decide(&input, &SubjectTag::new("[#{id}]"), &m);
        assert_eq!(
            (got.ticket, got.by),
            (Some(TicketId(2)), ThreadedBy::MessageId)
        );
    }

    #[test]
    fn a_bare_plus_address_needs_a_participant_or_agent_and_a_signed_one_does_not() {
        use ThreadedBy::*;
        let stranger = "stranger@evil.example";
        check(&[], &[], Some((3, false)), "", stranger, false, (None, New));
        check(
            &[],
            &[],
            Some((3, true)),
            "",
            stranger,
            false,
            (Some(3), PlusAddress),
        );
        check(
            &[],
            &[],
            Some((3, false)),
            "",
            "bob@example.com",
            false,
            (Some(3), PlusAddress),
        );
        check(
            &[],
            &[],
            Some((3, false)),
            "",
            "alice@acme.example",
            true,
            (Some(3), PlusAddress),
        );
    }

    #[test]
    fn subject_tag_needs_a_participant_or_agent() {
        use ThreadedBy::*;
        check(
            &[],
            &[],
            None,
            "Re: [#3] help",
            "stranger@evil.example",
            false,
            (None, New),
        );
        check(
            &[],
            &[],
            None,
            "Re: [#3] help",
            "alice@acme.example",
            true,
            (Some(3), SubjectTag),
        );
        check(
            &[],
            &[],
            None,
            "Re: [#42] help",
            "bob@example.com",
            false,
            (None, New),
        );
    }

    #[test]
    fn subject_tag_parsing() {
        let tag = SubjectTag::new("[#{id}]");
        assert_eq!(tag.find("Re: x [#12]"), Some(TicketId(12)));
        assert_eq!(tag.find("[#] [#x] [#7]"), Some(TicketId(7)));
        assert_eq!(tag.find("[#0]"), None);
        assert_eq!(tag.find("[#12"), None);
        assert_eq!(tag.find("Ünïcödé [#5]"), Some(TicketId(5)));
        assert_eq!(tag.render(TicketId(9)), "[#9]");
        let odd = SubjectTag::new("(Ticket {id})");
        assert_eq!(odd.find("Re: (Ticket 44) x"), Some(TicketId(44)));
        assert_eq!(SubjectTag::new("none").find("[#1]"), None);
        // Found by tests/fuzz.rs: a pattern starting with {id} and an empty subject.
        assert_eq!(SubjectTag::new("{id}]").find(""), None);
        assert_eq!(SubjectTag::new("{id}]").find("7]"), Some(TicketId(7)));
    }
}
