//! SHELL: the outbox worker. Delivers queued emails through the configured
//! transport and reports each attempt back to the store writer, which moves
//! the email to `sent`, schedules a retry (30 s, doubling up to 15 min), or
//! marks it `failed` (a 5xx, or 5 days of retries) on the timeline.
//!
//! Delivery is at-least-once: an email is marked sent only after the relay
//! accepted it; a crash between the two sends it again after restart. It is
//! never lost: the outbox row was committed with the decision that queued it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::transport::{Link, SendError, Transport};
use crate::clock;
use crate::daemon::ConfigCell;
use crate::store::{read, Delivery, Store};

/// Emails taken per pass.
const BATCH: usize = 32;
/// Deliveries in flight at once: each email costs the relay's round trips
/// (connect, greeting, EHLO, MAIL, RCPT, DATA, the data's answer), so one
/// at a time would leave the link idle most of the time.
const IN_FLIGHT: usize = 8;
/// The worker thread's nice value (Linux): under a CPU shortage, taking
/// mail — where a client waits for the `250` — goes before sending the
/// acknowledgements, which can wait a little; on an idle CPU the worker
/// gets all of it.
const NICE: i32 = 10;

/// Starts the worker on a thread of its own, with its own (single-thread)
/// runtime and a lower CPU priority ([`NICE`]). The returned future
/// resolves once the worker has stopped (after `shutdown`).
pub fn spawn(
    store: Store,
    config: Arc<ConfigCell>,
    shutdown: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("outbox-blocking")
        .build()?;
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("outbox".into())
        .spawn(move || {
            lower_priority();
            runtime.block_on(run(store, config, shutdown));
            // Waits for blocking work in flight (a file transport's write).
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(async move {
        let _ = stopped.await;
    })
}

/// Sets this thread's nice value to [`NICE`] (threads it starts inherit it).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid(2) and setpriority(2) take and return integers only;
    // on Linux the nice value is per thread, so this one alone changes.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "outbox: cannot lower the worker's CPU priority; it competes with taking mail");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
/// Longest sleep between passes when nothing is due (a safety net; commits
/// that queue mail wake the worker at once).
const IDLE: Duration = Duration::from_secs(60);

pub async fn run(store: Store, config: Arc<ConfigCell>, shutdown: CancellationToken) {
    let mut current: Option<(String, Arc<Transport>)> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let now = clock::now_millis();
        let (due, next) = match store.read(move |txn| read::due(txn, now, BATCH)).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot read the queue; retrying");
                (Vec::new(), Some(now + 5_000))
            }
        };
        if !due.is_empty() {
            let cfg = config.get();
            let key = format!("{:?}", cfg.outbound.transport);
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                match Transport::from_config_with_hello(
                    &cfg.outbound.transport,
                    Some(&cfg.server.hostname),
                ) {
                    Ok(t) => current = Some((key, Arc::new(t))),
                    Err(e) => {
                        tracing::error!(error = %e, "outbox: cannot set up the transport; retrying in 30 s");
                        current = None;
                    }
                }
            }
            let Some((_, transport)) = current.as_ref() else {
                if wait(&store, &shutdown, Duration::from_secs(30)).await {
                    return;
                }
                continue;
            };
            // IN_FLIGHT lanes take the pass's emails in order, each keeping
            // its relay connection from one email to the next.
            let n = due.len().min(IN_FLIGHT);
            let queue = Arc::new(std::sync::Mutex::new(VecDeque::from(due)));
            let mut lanes = tokio::task::JoinSet::new();
            for _ in 0..n {
                lanes.spawn(lane(store.clone(), transport.clone(), queue.clone()));
            }
            tokio::select! {
                () = async { while lanes.join_next().await.is_some() {} } => {}
                // Dropping the lanes aborts the sends in flight: at-least-once.
                () = shutdown.cancelled() => return,
            }
            // Read the queue again: more may be due, and a deferred email's
            // retry time must count in the next sleep.
            continue;
        }
        let sleep = next
            .map(|at| {
                Duration::from_millis(
                    (at - clock::now_millis()).clamp(0, IDLE.as_millis() as i64) as u64
                )
            })
            .unwrap_or(IDLE);
        if !sleep.is_zero() && wait(&store, &shutdown, sleep).await {
            return;
        }
    }
}

/// Delivers emails from `queue` until it is empty, on one relay
/// connection where it can ([`Link`]), then closes it.
async fn lane(
    store: Store,
    transport: Arc<Transport>,
    queue: Arc<std::sync::Mutex<VecDeque<read::DueMail>>>,
) {
    let mut link = Link::default();
    loop {
        let next = match queue.lock() {
            Ok(mut q) => q.pop_front(),
            Err(_) => None,
        };
        let Some(mail) = next else { break };
        deliver(&store, &transport, &mut link, mail).await;
    }
    link.close().await;
}

/// Sends one email and records the result with the store writer.
async fn deliver(store: &Store, transport: &Transport, link: &mut Link, mail: read::DueMail) {
    let delivery = match &mail.raw {
        Ok(raw) => {
            let result = transport
                .send_on(link, &mail.mail_from, &mail.rcpt, raw)
                .await;
            outcome(&mail, result)
        }
        Err(e) => {
            tracing::error!(ticket = mail.ticket, message_id = %mail.message_id, error = %e, "mail failed permanently: its stored copy cannot be read");
            crate::metrics::inc(&crate::metrics::METRICS.emails_failed);
            Delivery::Permanent(format!("the stored email cannot be read: {e}"))
        }
    };
    if let Err(e) = store.delivered(mail.id, delivery).await {
        // The email stays queued and is tried again: at-least-once.
        tracing::error!(outbox = mail.id, error = %e, "outbox: cannot record the delivery result");
    }
}

/// What one send attempt means for the outbox (and its log line).
fn outcome(mail: &read::DueMail, result: Result<(), SendError>) -> Delivery {
    match result {
        Ok(()) => {
            tracing::info!(ticket = mail.ticket, message_id = %mail.message_id, kind = %mail.kind, to = %mail.rcpt.join(","), "mail sent");
            crate::metrics::inc(&crate::metrics::METRICS.emails_sent);
            Delivery::Sent
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(ticket = mail.ticket, message_id = %mail.message_id, error = %e, "mail deferred; will retry");
            crate::metrics::inc(&crate::metrics::METRICS.emails_deferred);
            Delivery::Transient(e.to_string())
        }
        Err(e) => {
            tracing::error!(ticket = mail.ticket, message_id = %mail.message_id, error = %e, "mail failed permanently");
            crate::metrics::inc(&crate::metrics::METRICS.emails_failed);
            Delivery::Permanent(e.to_string())
        }
    }
}

/// Sleeps up to `d`, waking early when a commit queues mail. Returns true on
/// shutdown.
async fn wait(store: &Store, shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = store.outbox_notified() => false,
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}
