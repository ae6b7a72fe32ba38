//! SHELL: the outbox worker. Delivers queued emails through the configured
//! transport and reports each attempt back to the store writer, which moves
//! the email to `sent`, schedules a retry (30 s, doubling up to 15 min), or
//! marks it `failed` (a 5xx, or 5 days of retries) on the timeline.
//!
//! Delivery is at-least-once: an email is marked sent only after the relay
//! accepted it; a crash between the two sends it again after restart. It is
//! never lost: the outbox row was committed with the decision that queued it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::transport::{Link, SendError, Transport};
use crate::clock;
use crate::config::ConfigCell;
use crate::store::{Delivery, DueMail, Store};

/// Emails taken per pass; their results are handed to the store writer
/// together, after the pass (one commit).
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

/// Longest sleep between passes when nothing is due (a safety net; commits
/// that queue mail wake the worker).
const IDLE: Duration = Duration::from_secs(60);
/// Woken by a commit that queued mail, the worker waits this long before
/// it reads the queue: under a stream of new tickets a pass then takes
/// the emails of many commits (on the same relay connections, with their
/// results recorded together) instead of one email per pass.
const LINGER: Duration = Duration::from_millis(20);

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

pub async fn run(store: Store, config: Arc<ConfigCell>, shutdown: CancellationToken) {
    let mut current: Option<(String, Arc<Transport>)> = None;
    // The lanes' relay connections, kept from one pass to the next while
    // mail keeps coming; closed when the worker goes to sleep.
    let mut links: Vec<Link> = Vec::new();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let now = clock::now_millis();
        let (due, next) = match store.due(now, BATCH).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot read the queue; retrying");
                (Vec::new(), Some(now + 5_000))
            }
        };
        if !due.is_empty() {
            // A blocking wait in debug builds only (tests hold the worker
            // here); nothing else runs on this thread's runtime meanwhile.
            crate::failpoint::hit("outbox.after_claim");
            let cfg = config.get();
            let key = format!("{:?}", cfg.outbound.transport);
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                close_all(&mut links).await;
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
            let full = due.len() >= BATCH;
            let n = due.len().min(IN_FLIGHT);
            let leases: Vec<(u64, u64)> = due
                .iter()
                .filter(|m| m.lease != 0)
                .map(|m| (m.id, m.lease))
                .collect();
            let queue = Arc::new(Mutex::new(VecDeque::from(due)));
            let results = Arc::new(Mutex::new(Vec::new()));
            let mut lanes = tokio::task::JoinSet::new();
            for _ in 0..n {
                let link = links.pop().unwrap_or_default();
                lanes.spawn(lane(
                    transport.clone(),
                    queue.clone(),
                    results.clone(),
                    link,
                ));
            }
            let mut returned = Vec::new();
            let stopping = tokio::select! {
                () = async {
                    while let Some(done) = lanes.join_next().await {
                        returned.extend(done.ok());
                    }
                } => false,
                () = renew(&store, &leases) => false,
                () = shutdown.cancelled() => true,
            };
            links.extend(returned);
            // On shutdown, the sends in flight are abandoned (at-least-once:
            // they are tried again after the restart); what was already
            // sent is still recorded.
            drop(lanes);
            let done = match results.lock() {
                Ok(mut r) => std::mem::take(&mut *r),
                Err(_) => Vec::new(),
            };
            crate::failpoint::hit("outbox.before_finish");
            record(&store, done, &shutdown).await;
            if stopping {
                return;
            }
            // Read the queue again: more may be due, and a deferred email's
            // retry time must count in the next sleep. Unless the pass was
            // full, let more mail gather first.
            if !full && linger(&shutdown).await {
                return;
            }
            continue;
        }
        let sleep = next
            .map(|at| {
                Duration::from_millis(
                    (at - clock::now_millis()).clamp(0, IDLE.as_millis() as i64) as u64
                )
            })
            .unwrap_or(IDLE);
        close_all(&mut links).await;
        if !sleep.is_zero() && wait(&store, &shutdown, sleep).await {
            return;
        }
    }
}

/// Delivers emails from `queue` until it is empty, on `link`'s relay
/// connection where it can; returns the link (its connection still open)
/// for the next pass. Each email's outbox id, lease and result go to `results`.
async fn lane(
    transport: Arc<Transport>,
    queue: Arc<Mutex<VecDeque<DueMail>>>,
    results: Arc<Mutex<Vec<(u64, u64, Delivery)>>>,
    mut link: Link,
) -> Link {
    loop {
        let next = match queue.lock() {
            Ok(mut q) => q.pop_front(),
            Err(_) => None,
        };
        let Some(mail) = next else { break };
        let delivery = deliver(&transport, &mut link, &mail).await;
        if let Ok(mut r) = results.lock() {
            r.push((mail.id, mail.lease, delivery));
        }
    }
    link
}

/// Keeps this node's claims on a pass's emails ([`DueMail::lease`]) from
/// running out while the pass lasts (a slow relay); never returns.
async fn renew(store: &Store, leases: &[(u64, u64)]) {
    if leases.is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(store.renew_every()).await;
        if let Err(e) = store.renew(leases).await {
            tracing::warn!(error = %e, "outbox: cannot renew the claims on the emails being sent; another node may send them too");
        }
    }
}

/// Says QUIT on every kept relay connection.
async fn close_all(links: &mut Vec<Link>) {
    for mut link in links.drain(..) {
        link.close().await;
    }
}

/// Records a pass's results: all handed to the store writer before any
/// answer is awaited, so that they share a commit. (Bursts of 8, meant to
/// shorten the wait of mail arriving meanwhile, measured slower since one
/// runtime worker: BENCHMARKS.md, "Runtime workers".)
///
/// A result the store could not take (the database restarting or away, a
/// disk error) is offered again, the pause doubling from 250 ms, while
/// this node's claim on the email lasts (three renewal periods): once the
/// store is back the email is recorded as it went, not sent again. Past
/// that, or at shutdown, it stays queued and is sent again (at-least-once).
async fn record(
    store: &Store,
    mut results: Vec<(u64, u64, Delivery)>,
    shutdown: &CancellationToken,
) {
    let until = std::time::Instant::now() + store.renew_every() * 3;
    let mut pause = Duration::from_millis(250);
    loop {
        let offered = results.clone();
        let mut again = Vec::new();
        for ((id, result), item) in store.delivered_all(offered).await.into_iter().zip(results) {
            match result {
                Ok(()) => {}
                Err(e) if !e.is_entry_fault() && std::time::Instant::now() + pause < until => {
                    tracing::warn!(outbox = id, error = %e, "outbox: cannot record the delivery result yet; trying again");
                    again.push(item);
                }
                Err(e) => {
                    // The email stays queued and is tried again.
                    tracing::error!(outbox = id, error = %e, "outbox: cannot record the delivery result");
                }
            }
        }
        if again.is_empty() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
        results = again;
    }
}

/// Sends one email; what the outbox should record.
async fn deliver(transport: &Transport, link: &mut Link, mail: &DueMail) -> Delivery {
    match &mail.raw {
        Ok(raw) => {
            let result = transport
                .send_on(link, &mail.mail_from, &mail.rcpt, raw)
                .await;
            outcome(mail, result)
        }
        Err(e) => {
            tracing::error!(ticket = mail.ticket.get(), message_id = %mail.message_id, error = %e, "mail failed permanently: its stored copy cannot be read");
            crate::metrics::inc(&crate::metrics::METRICS.emails_failed);
            Delivery::Permanent(format!("the stored email cannot be read: {e}"))
        }
    }
}

/// What one send attempt means for the outbox (and its log line).
fn outcome(mail: &DueMail, result: Result<(), SendError>) -> Delivery {
    match result {
        Ok(()) => {
            tracing::info!(ticket = mail.ticket.get(), message_id = %mail.message_id, kind = %mail.kind, to = %mail.rcpt.join(","), "mail sent");
            crate::metrics::inc(&crate::metrics::METRICS.emails_sent);
            Delivery::Sent
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(ticket = mail.ticket.get(), message_id = %mail.message_id, error = %e, "mail deferred; will retry");
            crate::metrics::inc(&crate::metrics::METRICS.emails_deferred);
            Delivery::Transient(e.to_string())
        }
        Err(e) => {
            tracing::error!(ticket = mail.ticket.get(), message_id = %mail.message_id, error = %e, "mail failed permanently");
            crate::metrics::inc(&crate::metrics::METRICS.emails_failed);
            Delivery::Permanent(e.to_string())
        }
    }
}

/// Sleeps up to `d`, or until [`LINGER`] after a commit queued mail.
/// Returns true on shutdown.
async fn wait(store: &Store, shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = store.outbox_notified() => linger(shutdown).await,
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}

/// Sleeps [`LINGER`]. Returns true on shutdown.
async fn linger(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(LINGER) => false,
        () = shutdown.cancelled() => true,
    }
}
