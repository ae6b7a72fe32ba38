//! PURE: who may speak for a ticket (SPEC §12). The one place trust is
//! decided: what a message's envelope key and the operator's MTA prove
//! ([`Credentials::assess`], before threading), and whether a message from
//! an agent's address acts as that agent ([`Credentials::agent_proof`],
//! after threading).
//!
//! A ticket's reply address is `local+<id>.<key>@domain`; `<key>` is an
//! HMAC-SHA256 of the ticket id (or of the ticket id and a user id, for the
//! notifications an agent gets) under the store's secret, cut to
//! [`KEY_LEN`] base32 characters. A key is never a proof of who *wrote* a
//! message — only that the writer got one of our emails about that ticket.
//! An agent's key goes only to that agent, so mail to it from that agent's
//! address is the agent.
//!
//! Never does I/O, never reads the clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::TicketId;

/// Base32 characters of a key: 50 bits, beyond any online guessing.
pub const KEY_LEN: usize = 10;

/// Lower-case RFC 4648 base32: MTAs and clients may fold an address's case,
/// so keys compare case-insensitively and are written lower-case.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The store's secret (drawn at first start, kept in the store, shared by
/// every node), as the keys of reply addresses.
#[derive(Clone)]
pub struct ReplyKeys {
    secret: [u8; 32],
}

impl std::fmt::Debug for ReplyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug log.
        f.write_str("ReplyKeys(..)")
    }
}

/// Whose key a reply address carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFor<'a> {
    /// The ticket's: on every email to customers.
    Ticket,
    /// One agent's, on the notifications that agent gets (a user id).
    Agent(&'a str),
}

impl ReplyKeys {
    pub fn new(secret: [u8; 32]) -> ReplyKeys {
        ReplyKeys { secret }
    }

    pub fn key(&self, ticket: TicketId, whose: KeyFor<'_>) -> String {
        // The secret is 32 bytes; HMAC takes a key of any length, so this
        // cannot fail — fall back to an impossible key rather than panic.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        // Domain-separated, length-prefixed inputs: a ticket key can never
        // equal an agent key, nor one agent's another's.
        match whose {
            KeyFor::Ticket => {
                mac.update(b"postdesk ticket reply key\0");
                mac.update(&ticket.0.to_be_bytes());
            }
            KeyFor::Agent(user) => {
                mac.update(b"postdesk agent reply key\0");
                mac.update(&ticket.0.to_be_bytes());
                mac.update(&(user.len() as u64).to_be_bytes());
                mac.update(user.as_bytes());
            }
        }
        base32(&mac.finalize().into_bytes(), KEY_LEN)
    }

    /// `local+<id>.<key>@domain` for the channel address `base`.
    pub fn reply_address(&self, base: &str, ticket: TicketId, whose: KeyFor<'_>) -> String {
        match base.rsplit_once('@') {
            Some((local, domain)) => {
                format!("{local}+{ticket}.{}@{domain}", self.key(ticket, whose))
            }
            None => base.to_string(),
        }
    }

    /// Constant-time comparison of a key as received with the expected one.
    fn matches(&self, ticket: TicketId, whose: KeyFor<'_>, got: &str) -> bool {
        let want = self.key(ticket, whose);
        if want.is_empty() || got.len() != want.len() {
            return false;
        }
        let diff = want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()));
        diff == 0
    }
}

fn base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < chars {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        if out.len() == chars {
            break;
        }
        acc &= (1 << bits) - 1;
    }
    if out.len() < chars && bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// What the plus address of the envelope recipient is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlusKind {
    /// `+<id>.<ticket key>`: threads from anyone.
    Signed(TicketId),
    /// `+<id>.<agent key>` of this user: threads from anyone, and proves
    /// that user on that ticket.
    AgentSigned(TicketId, String),
    /// `+<id>` alone (what earlier builds sent): only a participant or an
    /// agent may use it.
    Bare(TicketId),
}

/// An Authentication-Results verdict of the operator's own MTA that proves
/// the From domain (`dmarc=pass`, or an aligned `dkim=pass`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthProof(pub String);

/// What a message proves, before threading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `None`: no plus address, or one with a wrong key (then it is the
    /// plain channel address, never a refusal).
    pub plus: Option<PlusKind>,
    /// The plus address carried a key that matched nothing.
    pub bad_key: bool,
    /// The trusted MTA's pass for the From domain, if any.
    pub auth: Option<AuthProof>,
}

/// Why an agent's message does not act as the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unproven {
    pub reason: String,
}

/// How an agent's message proved the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProof {
    /// Sent to this agent's own signed address for the ticket.
    Key,
    /// The trusted MTA's Authentication-Results.
    Auth(String),
}

impl AgentProof {
    pub fn describe(&self) -> String {
        match self {
            AgentProof::Key => "sent to the agent's signed reply address".into(),
            AgentProof::Auth(why) => format!("authenticated by the trusted MTA ({why})"),
        }
    }
}

impl Credentials {
    /// `plus`/`key` come from the envelope recipient (`+<id>[.<key>]`);
    /// `users` are the configured user ids (an agent key may be any
    /// user's).
    pub fn assess<'u>(
        keys: &ReplyKeys,
        plus: Option<TicketId>,
        key: Option<&str>,
        users: impl IntoIterator<Item = &'u str>,
        auth: Option<AuthProof>,
    ) -> Credentials {
        let (plus, bad_key) = match (plus, key) {
            (None, _) => (None, false),
            (Some(t), None) => (Some(PlusKind::Bare(t)), false),
            (Some(t), Some(k)) => {
                if keys.matches(t, KeyFor::Ticket, k) {
                    (Some(PlusKind::Signed(t)), false)
                } else {
                    match users
                        .into_iter()
                        .find(|u| keys.matches(t, KeyFor::Agent(u), k))
                    {
                        Some(u) => (Some(PlusKind::AgentSigned(t, u.to_string())), false),
                        None => (None, true),
                    }
                }
            }
        };
        Credentials {
            plus,
            bad_key,
            auth,
        }
    }

    /// The plus address as threading may use it: (ticket, signed).
    pub fn plus_for_threading(&self) -> Option<(TicketId, bool)> {
        match &self.plus {
            Some(PlusKind::Signed(t)) | Some(PlusKind::AgentSigned(t, _)) => Some((*t, true)),
            Some(PlusKind::Bare(t)) => Some((*t, false)),
            None => None,
        }
    }

    /// Whether a message from the configured user `user` (its From) that
    /// threaded onto `ticket` acts as that agent.
    pub fn agent_proof(&self, user: &str, ticket: TicketId) -> Result<AgentProof, Unproven> {
        if let Some(PlusKind::AgentSigned(t, u)) = &self.plus {
            if *t == ticket && u == user {
                return Ok(AgentProof::Key);
            }
        }
        if let Some(AuthProof(why)) = &self.auth {
            return Ok(AgentProof::Auth(why.clone()));
        }
        let to = match &self.plus {
            Some(PlusKind::AgentSigned(t, u)) if u != user => {
                format!("it was sent to another agent's reply address (ticket {t})")
            }
            Some(PlusKind::AgentSigned(t, _)) => {
                format!("it was sent to the reply address of ticket {t}, not this one")
            }
            Some(PlusKind::Signed(_)) => "it was sent to the customer's reply address".into(),
            Some(PlusKind::Bare(_)) => "it was sent to an unsigned plus address".into(),
            None if self.bad_key => "it was sent to a reply address with a wrong key".into(),
            None => "it was sent to the channel address".into(),
        };
        Err(Unproven {
            reason: format!(
                "the sender is not proven: {to}, not to the agent's own signed reply address, \
                 and no trusted Authentication-Results passed it"
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> ReplyKeys {
        ReplyKeys::new([7; 32])
    }

    #[test]
    fn keys_are_stable_short_base32_and_differ_per_ticket_and_agent() {
        let k = keys();
        let t1 = k.key(TicketId(1), KeyFor::Ticket);
        assert_eq!(t1.len(), KEY_LEN);
        assert!(t1.bytes().all(|b| ALPHABET.contains(&b)), "{t1}");
        // Same secret, same key: a restart or a reload changes nothing.
        assert_eq!(t1, ReplyKeys::new([7; 32]).key(TicketId(1), KeyFor::Ticket));
        let all = [
            t1.clone(),
            k.key(TicketId(2), KeyFor::Ticket),
            k.key(TicketId(1), KeyFor::Agent("alice")),
            k.key(TicketId(1), KeyFor::Agent("bob")),
            k.key(TicketId(2), KeyFor::Agent("alice")),
            ReplyKeys::new([8; 32]).key(TicketId(1), KeyFor::Ticket),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            k.reply_address("support@acme.example", TicketId(1), KeyFor::Ticket),
            format!("support+1.{t1}@acme.example")
        );
    }

    #[test]
    fn base32_encodes_known_vectors() {
        // RFC 4648 §10, lower-cased: "foobar" → "mzxw6ytboi".
        assert_eq!(base32(b"foobar", 10), "mzxw6ytboi");
        assert_eq!(base32(b"f", 2), "my");
    }

    fn assess(plus: Option<u64>, key: Option<&str>) -> Credentials {
        Credentials::assess(&keys(), plus.map(TicketId), key, ["alice", "bob"], None)
    }

    #[test]
    fn what_a_plus_address_is_worth() {
        let k = keys();
        let tk = k.key(TicketId(5), KeyFor::Ticket);
        let ak = k.key(TicketId(5), KeyFor::Agent("alice"));
        assert_eq!(assess(None, None).plus, None);
        assert_eq!(
            assess(Some(5), None).plus,
            Some(PlusKind::Bare(TicketId(5)))
        );
        assert_eq!(
            assess(Some(5), Some(&tk)).plus,
            Some(PlusKind::Signed(TicketId(5)))
        );
        // Case folded by some MTA: still the key.
        let upper = tk.to_ascii_uppercase();
        assert_eq!(
            assess(Some(5), Some(&upper)).plus,
            Some(PlusKind::Signed(TicketId(5)))
        );
        assert_eq!(
            assess(Some(5), Some(&ak)).plus,
            Some(PlusKind::AgentSigned(TicketId(5), "alice".into()))
        );
        // Another ticket's key, a tampered key, a truncated one: nothing.
        for bad in [
            k.key(TicketId(6), KeyFor::Ticket),
            format!("{}a", &tk[..KEY_LEN - 1]),
            tk[..4].to_string(),
            String::new(),
        ] {
            let c = assess(Some(5), Some(&bad));
            if bad == tk {
                continue;
            }
            assert_eq!((c.plus, c.bad_key), (None, true), "{bad}");
        }
    }

    #[test]
    fn an_agent_is_proven_only_by_their_own_key_for_that_ticket_or_by_auth() {
        let k = keys();
        let ak = k.key(TicketId(5), KeyFor::Agent("alice"));
        let c = assess(Some(5), Some(&ak));
        assert_eq!(c.agent_proof("alice", TicketId(5)), Ok(AgentProof::Key));
        // Bob writing to Alice's address, or the key used on another ticket.
        assert!(c.agent_proof("bob", TicketId(5)).is_err());
        assert!(c.agent_proof("alice", TicketId(6)).is_err());
        // The customer's signed address, a bare plus address, the channel.
        for c in [
            assess(Some(5), Some(&k.key(TicketId(5), KeyFor::Ticket))),
            assess(Some(5), None),
            assess(None, None),
            assess(Some(5), Some("zzzzzzzzzz")),
        ] {
            let err = c.agent_proof("alice", TicketId(5)).unwrap_err();
            assert!(err.reason.contains("not proven"), "{err:?}");
        }
        // The trusted MTA's pass proves the agent anywhere.
        let c = Credentials::assess(
            &k,
            None,
            None,
            ["alice"],
            Some(AuthProof("dmarc=pass".into())),
        );
        assert_eq!(
            c.agent_proof("alice", TicketId(9)),
            Ok(AgentProof::Auth("dmarc=pass".into()))
        );
    }
}
