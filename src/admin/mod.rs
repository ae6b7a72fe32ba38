//! The admin socket: a Unix stream socket speaking JSON lines (SPEC §7).
//!
//! [`proto`] is PURE: request parsing and response shapes, shared with
//! `postdesk ctl`. [`server`] is the SHELL: it accepts connections, one task
//! each, and answers from the store's read views. A bad request gets an error
//! response; neither the connection nor the daemon is harmed by it.

pub mod proto;
pub mod server;
