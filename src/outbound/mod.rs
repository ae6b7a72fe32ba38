//! Outbound mail on the wire: the transport and the outbox worker. What an
//! email says and its bytes are [`crate::mail`]'s.
//!
//! - [`transport`] — SHELL. Hands finished bytes to the relay (lettre's
//!   async SMTP transport) or writes them as `.eml` files, and says whether
//!   a failure is worth retrying ([`SendError::is_transient`]).
//! - [`worker`] — SHELL. The outbox worker: takes due emails from the store,
//!   sends them through the transport, reports each attempt back.
//!
//! The transport never decides *whether* or *when* to send (the automation
//! engine and loop protection do), keeps no state between sends but its
//! relay connections, and never retries on its own (the outbox does).

pub mod transport;
pub mod worker;

pub use transport::{install_crypto_provider, SendError, SendErrorKind, Transport};
