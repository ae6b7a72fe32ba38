//! Failpoints: named places where a debug build can be made to wait, so
//! that a test can hold one node at an exact step (a batch applied but not
//! committed, an email claimed but not sent) while another node runs.
//! Release builds compile every [`hit`] to nothing.
//!
//! `POSTDESK_FAILPOINTS="name=pause(FILE);…"`: at `name`, while FILE
//! exists, the caller waits; it first creates `FILE.paused`, so the test
//! knows it got there. Removing FILE lets it go on.
//!
//! Names: `store.before_commit` (a PostgreSQL writer, its batch applied),
//! `outbox.after_claim` (the outbox worker, emails claimed, none sent),
//! `outbox.before_finish` (the worker, emails sent, results not recorded),
//! `copy.after_chunk` (`store copy`, a chunk committed to the target).

/// Waits at failpoint `name` if the environment says so (debug builds).
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    pause(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
fn pause(name: &str) {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    static POINTS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        let spec = std::env::var("POSTDESK_FAILPOINTS").unwrap_or_default();
        spec.split(';')
            .filter_map(|p| {
                let (name, action) = p.split_once('=')?;
                let file = action.strip_prefix("pause(")?.strip_suffix(')')?;
                Some((name.trim().to_string(), PathBuf::from(file)))
            })
            .collect()
    });
    for (point, file) in points {
        if point != name || !file.exists() {
            continue;
        }
        let mut marker = file.clone().into_os_string();
        marker.push(".paused");
        let _ = std::fs::write(&marker, name);
        tracing::info!(failpoint = name, "paused");
        while file.exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&marker);
        tracing::info!(failpoint = name, "released");
    }
}
