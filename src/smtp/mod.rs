//! SHELL: SMTP receive.
//!
//! Owns: the listeners, the session limits (global and per client address),
//! and one tokio task per connection ([`session`]) that drives the `mailin`
//! state machine with a bounded line reader ([`reader`]). The pure parts
//! (command arguments, reply codes) live in [`command`].
//!
//! Never writes to the store itself: it hands a finished message to
//! [`crate::store::Store::ingest`] and answers `250` only when that returns
//! `Ok` (the message is durably committed); any error answers `451`.

pub mod command;
pub mod reader;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

pub use session::Ctx;

/// Counts sessions per client address; a guard gives its slot back on drop.
#[derive(Default)]
pub struct PerClient {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

pub struct ClientSlot {
    owner: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn try_acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    sessions: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = ctx.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            tracker.spawn(refuse(stream, peer, "too many sessions"));
            continue;
        };
        let max_per_client = ctx.config.get().server.max_sessions_per_client;
        let Some(slot) = per_client.try_acquire(peer.ip(), max_per_client) else {
            drop(permit);
            tracker.spawn(refuse(stream, peer, "too many sessions from your address"));
            continue;
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            session::handle(stream, peer, ctx).await;
            drop(slot);
            drop(permit);
        });
    }
}

async fn refuse(mut stream: TcpStream, peer: SocketAddr, why: &str) {
    crate::metrics::inc(&crate::metrics::METRICS.sessions_refused);
    tracing::warn!(peer = %peer, reason = why, "connection refused with 421");
    let msg = format!("421 4.7.0 Error: {why}, try again later\r\n");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
