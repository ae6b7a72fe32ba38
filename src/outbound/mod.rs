//! Outbound mail: from a template name and a ticket to bytes on the wire.
//!
//! The journey, one file per step:
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
//! - [`transport`] — SHELL. Hands finished bytes to the relay (lettre's
//!   async SMTP transport) or writes them as `.eml` files, and says whether
//!   a failure is worth retrying ([`SendError::is_transient`]).
//! - [`worker`] — SHELL. The outbox worker: takes due emails from the store,
//!   sends them through the transport, reports each attempt back.
//!
//! Render, compose and transport never decide *whether* or *when* to send
//! (the automation engine and loop protection do), keep state between sends,
//! retry, or touch the store (the outbox and its worker do).

pub mod compose;
pub mod render;
pub mod transport;
pub mod worker;

pub use compose::{compose, message_id, with_subject_tag, ComposeError, OutMail};
pub use render::{
    footer, ChannelVars, ContactVars, MessageVars, RenderError, Rendered, TemplateProblem,
    Templates, TicketVars, Vars,
};
pub use transport::{install_crypto_provider, SendError, SendErrorKind, Transport};
