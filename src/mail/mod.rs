//! PURE: what an email says, and its bytes — from a template name and a
//! ticket's variables to RFC 5322. No clock, no socket, no store (the
//! template folder is read once, when the config loads).
//!
//! - [`render`] — PURE. The template folder compiled once ([`Templates`],
//!   held by `Config`), the variables a template sees ([`Vars`]), strict
//!   rendering, and [`Templates::check`], which makes every unknown variable
//!   a load-time problem (`postdesk check`) instead of a send-time failure.
//!   Also the branding [`footer`].
//! - [`compose`] — PURE. One email as RFC 5322 bytes ([`compose()`] of an
//!   [`OutMail`]): the headers SPEC §6 requires (Message-ID, In-Reply-To,
//!   References, Reply-To, Auto-Submitted, X-Postdesk-Ticket), the footer,
//!   text or multipart/alternative. Uses lettre's message *builder* only;
//!   the date comes from the caller, never the clock. [`message_id`] is the
//!   one non-deterministic function (random bits, so ids stay unique across
//!   restarts).
//!
//! Also the plain types the config hands them ([`Branding`], [`Source`]):
//! here, so that `config` and `mail` do not import each other.

pub mod compose;
pub mod render;

pub use compose::{compose, message_id, with_subject_tag, ComposeError, OutMail};
pub use render::{
    footer, ChannelVars, ContactVars, MessageVars, RenderError, Rendered, TemplateProblem,
    Templates, TicketVars, Vars,
};

/// `[branding]`: the footer of customer emails.
#[derive(Debug, Clone)]
pub struct Branding {
    pub enabled: bool,
    pub text: Option<String>,
}

/// Where a channel's messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Email,
    Chat,
    Messenger,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Email => "email",
            Source::Chat => "chat",
            Source::Messenger => "messenger",
        }
    }
}
