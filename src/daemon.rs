//! SHELL: the daemon's life. [`bind`] takes a validated config and binds
//! everything (store, SMTP listeners, admin socket) before anything runs, so
//! a bad port or a locked database fails start-up with a clear error;
//! [`Bound::run`] then serves until SIGTERM/SIGINT, reloading on SIGHUP.
//!
//! Shutdown is one `CancellationToken` every task holds: listeners stop
//! accepting, idle sessions are told `421`, messages already at the final dot
//! finish their commit; then the store writer drains and stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::server::{self as admin, AdminCtx};
use crate::config::{Config, ConfigCell};
use crate::smtp::{self, Ctx, PerClient};
use crate::store::{Store, StoreError, WriterHandle};

/// How long shutdown waits for sessions to finish.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] admin::BindError),
}

pub struct Bound {
    pub smtp_addrs: Vec<SocketAddr>,
    pub admin_path: PathBuf,
    listeners: Vec<TcpListener>,
    admin: tokio::net::UnixListener,
    store: Store,
    writer: WriterHandle,
    config: Arc<ConfigCell>,
}

pub async fn bind(config: Config) -> Result<Bound, BindError> {
    let (store, writer) = Store::connect(Arc::new(config.clone())).await?;
    let mut listeners = Vec::new();
    let mut smtp_addrs = Vec::new();
    for addr in &config.server.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Listen {
                addr: *addr,
                source,
            })?;
        smtp_addrs.push(l.local_addr().map_err(|source| BindError::Listen {
            addr: *addr,
            source,
        })?);
        listeners.push(l);
    }
    let admin_path = config.server.admin_socket.clone();
    let admin = admin::bind(&admin_path).await?;
    let config = Arc::new(ConfigCell::new(config));
    store.watch_config(config.clone());
    Ok(Bound {
        smtp_addrs,
        admin_path,
        listeners,
        admin,
        store,
        writer,
        config,
    })
}

impl BindError {
    /// Whether the configuration (or the store it names) is at fault, not
    /// the moment: the service should not be restarted as it is (exit 78).
    pub fn is_config(&self) -> bool {
        matches!(self, BindError::Store(StoreError::Refused(_)))
    }
}

impl Bound {
    /// Serves until SIGTERM/SIGINT.
    pub async fn run(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let cfg = self.config.get();
        let sessions = Arc::new(Semaphore::new(cfg.server.max_sessions.max(1)));
        let per_client = Arc::new(PerClient::default());
        let ctx = Arc::new(Ctx {
            store: self.store.clone(),
            config: self.config.clone(),
            shutdown: shutdown.clone(),
            ingests: tokio::sync::Semaphore::new(smtp::session::INGESTS_IN_FLIGHT),
        });
        for l in self.listeners {
            tracker.spawn(smtp::serve(
                l,
                ctx.clone(),
                sessions.clone(),
                per_client.clone(),
                tracker.clone(),
            ));
        }
        let admin_ctx = Arc::new(AdminCtx {
            store: self.store.clone(),
            config: self.config.clone(),
            started: Instant::now(),
            shutdown: shutdown.clone(),
        });
        tracker.spawn(admin::serve(self.admin, admin_ctx, tracker.clone()));
        tracker.spawn(crate::outbound::worker::spawn(
            self.store.clone(),
            self.config.clone(),
            shutdown.clone(),
        )?);
        tracing::info!(smtp = ?self.smtp_addrs, admin = %self.admin_path.display(), "postdesk ready");
        crate::sdnotify::notify("READY=1\nSTATUS=accepting mail");

        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    crate::sdnotify::notify("RELOADING=1");
                    // Reading and compiling the config and its templates is
                    // blocking work: not on the worker serving the sessions.
                    let cell = self.config.clone();
                    let result = tokio::task::spawn_blocking(move || cell.reload()).await;
                    crate::sdnotify::notify("READY=1");
                    match result {
                        Ok(Ok(_)) => {}
                        Ok(Err(problems)) => {
                            for p in &problems.0 {
                                tracing::error!(problem = %p, "reload refused; the old config stays");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "reload failed; the old config stays"),
                    }
                }
            }
        }
        tracing::info!("shutting down");
        crate::sdnotify::notify("STOPPING=1");
        shutdown.cancel();
        tracker.close();
        let clean = tokio::time::timeout(GRACE, tracker.wait()).await.is_ok();
        if !clean {
            tracing::warn!("sessions still running after the grace period; stopping anyway");
        }
        drop(ctx);
        self.store.shutdown();
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        // Only once the outbox worker has stopped (its sends in flight were
        // dropped, unrecorded): their emails are then free for another node
        // at once — sent again, as after any interrupted delivery.
        if clean {
            match tokio::time::timeout(Duration::from_secs(5), self.store.leave()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "store: could not give up this node's leases")
                }
                Err(_) => tracing::warn!("store: giving up this node's leases timed out"),
            }
        }
        let _ = std::fs::remove_file(&self.admin_path);
        tracing::info!("stopped");
        Ok(())
    }
}
