//! Counters and latency histograms for the admin `stats` command.
//!
//! Process-wide atomics: cheap to bump on the hot path (one relaxed add),
//! read as a consistent-enough snapshot by `stats`. They count since the
//! daemon started; the store holds the durable truth.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde_json::{json, Value};

pub struct Histogram {
    bounds: &'static [u64],
    counts: [AtomicU64; 16],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    const fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; 16],
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i.min(15)].fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn snapshot(&self, unit: &str) -> Value {
        let mut buckets: Vec<Value> = self
            .bounds
            .iter()
            .enumerate()
            .map(|(i, b)| json!({ "le": b, "count": self.counts[i].load(Relaxed) }))
            .collect();
        buckets.push(
            json!({ "le": "+Inf", "count": self.counts[self.bounds.len().min(15)].load(Relaxed) }),
        );
        json!({ "unit": unit, "count": self.count.load(Relaxed), "sum": self.sum.load(Relaxed), "buckets": buckets })
    }
}

const MS_BOUNDS: &[u64] = &[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

pub struct Metrics {
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub kept: AtomicU64,
    pub tickets_created: AtomicU64,
    pub refused_451: AtomicU64,
    pub threaded_by: Mutex<BTreeMap<&'static str, u64>>,
    pub suppressed: Mutex<BTreeMap<&'static str, u64>>,
    pub emails_queued: AtomicU64,
    pub emails_sent: AtomicU64,
    pub emails_deferred: AtomicU64,
    pub emails_failed: AtomicU64,
    pub bounces: AtomicU64,
    /// Group commits: batches made durable (one journal sync, or a
    /// checkpoint, each).
    pub store_commits: AtomicU64,
    /// redb transactions committed: one takes every batch that joined it
    /// while more jobs waited (the checkpoints included).
    pub store_transactions: AtomicU64,
    /// Durable redb commits (journal checkpoints), a subset of the commits
    /// plus the idle ones.
    pub store_checkpoints: AtomicU64,
    pub sessions_refused: AtomicU64,
    /// End of DATA → 250 (parse, thread, commit), milliseconds.
    pub receive_to_commit_ms: Histogram,
    /// Jobs per group commit.
    pub commit_batch: Histogram,
    /// fsync'd commit duration, milliseconds.
    pub commit_ms: Histogram,
    /// Durable redb commits (journal checkpoints): their own latency.
    pub checkpoint_ms: Histogram,
}

pub static METRICS: Metrics = Metrics {
    received: AtomicU64::new(0),
    duplicates: AtomicU64::new(0),
    kept: AtomicU64::new(0),
    tickets_created: AtomicU64::new(0),
    refused_451: AtomicU64::new(0),
    threaded_by: Mutex::new(BTreeMap::new()),
    suppressed: Mutex::new(BTreeMap::new()),
    emails_queued: AtomicU64::new(0),
    emails_sent: AtomicU64::new(0),
    emails_deferred: AtomicU64::new(0),
    emails_failed: AtomicU64::new(0),
    bounces: AtomicU64::new(0),
    store_commits: AtomicU64::new(0),
    store_transactions: AtomicU64::new(0),
    store_checkpoints: AtomicU64::new(0),
    sessions_refused: AtomicU64::new(0),
    receive_to_commit_ms: Histogram::new(MS_BOUNDS),
    commit_batch: Histogram::new(BATCH_BOUNDS),
    commit_ms: Histogram::new(MS_BOUNDS),
    checkpoint_ms: Histogram::new(MS_BOUNDS),
};

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub fn inc_key(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key).or_insert(0) += 1;
}

fn map(m: &Mutex<BTreeMap<&'static str, u64>>) -> Value {
    let m = m.lock().unwrap_or_else(|p| p.into_inner());
    json!(*m)
}

pub fn snapshot() -> Value {
    let m = &METRICS;
    json!({
        "received": m.received.load(Relaxed),
        "duplicates": m.duplicates.load(Relaxed),
        "kept_without_ticket": m.kept.load(Relaxed),
        "tickets_created": m.tickets_created.load(Relaxed),
        "refused_451": m.refused_451.load(Relaxed),
        "sessions_refused_421": m.sessions_refused.load(Relaxed),
        "threaded_by": map(&m.threaded_by),
        "suppressed": map(&m.suppressed),
        "emails": {
            "queued": m.emails_queued.load(Relaxed),
            "sent": m.emails_sent.load(Relaxed),
            "deferred": m.emails_deferred.load(Relaxed),
            "failed": m.emails_failed.load(Relaxed),
        },
        "bounces": m.bounces.load(Relaxed),
        "store_commits": m.store_commits.load(Relaxed),
        "store_transactions": m.store_transactions.load(Relaxed),
        "store_checkpoints": m.store_checkpoints.load(Relaxed),
        "commit_batch_size": m.commit_batch.snapshot("messages"),
        "commit_latency": m.commit_ms.snapshot("ms"),
        "checkpoint_latency": m.checkpoint_ms.snapshot("ms"),
        "receive_to_commit_latency": m.receive_to_commit_ms.snapshot("ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        static H: Histogram = Histogram::new(&[1, 10]);
        for v in [0, 1, 5, 10, 11, 1000] {
            H.observe(v);
        }
        let s = H.snapshot("ms");
        assert_eq!(s["count"], 6);
        assert_eq!(s["buckets"][0]["count"], 2);
        assert_eq!(s["buckets"][1]["count"], 2);
        assert_eq!(s["buckets"][2]["count"], 2);
        assert_eq!(s["sum"], 1027);
    }
}
