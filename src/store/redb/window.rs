//! PURE: the per-contact count of automatic emails in the last hour, kept as
//! one small record per address: `(minute, count)` pairs, oldest first, for
//! the minutes of the last hour in which something was sent.
//!
//! Checking and recording cost O(minutes with mail in the last hour) ≤ 60,
//! however many emails that hour held (the first version kept one row per
//! email and counted them, which made a busy address cost O(sent) per
//! message). The window is counted in whole clock minutes: an email sent at
//! 10:00:59 counts until 10:59:59.

/// Minutes a sent email counts against its address.
pub const WINDOW_MINUTES: u32 = 60;

/// The minute (since the epoch) of a millisecond timestamp.
pub fn minute(now_ms: i64) -> u32 {
    u32::try_from(now_ms.max(0) / 60_000).unwrap_or(u32::MAX)
}

/// Decodes a stored record; trailing bytes that do not make a whole pair
/// are ignored (a record is only ever written whole, by [`encode`]).
pub fn decode(bytes: &[u8]) -> Vec<(u32, u32)> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let m = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let n = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            (m, n)
        })
        .collect()
}

pub fn encode(pairs: &[(u32, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 8);
    for (m, n) in pairs {
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

/// Drops the minutes that fell out of the window ending at `now`.
pub fn prune(pairs: &mut Vec<(u32, u32)>, now: u32) {
    let oldest = now.saturating_sub(WINDOW_MINUTES - 1);
    pairs.retain(|&(m, _)| m >= oldest && m <= now);
}

/// Emails counted in the window ending at minute `now`.
pub fn count(pairs: &[(u32, u32)], now: u32) -> u64 {
    let oldest = now.saturating_sub(WINDOW_MINUTES - 1);
    pairs
        .iter()
        .filter(|&&(m, _)| m >= oldest && m <= now)
        .map(|&(_, n)| u64::from(n))
        .sum()
}

/// Counts one more email at minute `now` (after [`prune`]).
pub fn record(pairs: &mut Vec<(u32, u32)>, now: u32) {
    match pairs.last_mut() {
        Some((m, n)) if *m == now => *n = n.saturating_add(1),
        _ => pairs.push((now, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_sixty_minutes_only() {
        let mut w = Vec::new();
        record(&mut w, 1000);
        record(&mut w, 1000);
        record(&mut w, 1030);
        assert_eq!(count(&w, 1030), 3);
        assert_eq!(count(&w, 1059), 3);
        // minute 1000 leaves the window at 1060
        assert_eq!(count(&w, 1060), 1);
        prune(&mut w, 1060);
        assert_eq!(w, vec![(1030, 1)]);
        assert_eq!(count(&w, 1090), 0);
        prune(&mut w, 1090);
        assert!(w.is_empty());
    }

    #[test]
    fn round_trips_and_ignores_a_torn_tail() {
        let w = vec![(1, 2), (u32::MAX, 7)];
        let mut bytes = encode(&w);
        assert_eq!(decode(&bytes), w);
        bytes.push(9);
        assert_eq!(decode(&bytes), w);
        assert!(decode(&[]).is_empty());
    }

    #[test]
    fn a_clock_that_went_back_does_not_count_the_future() {
        let mut w = vec![(2000, 5)];
        assert_eq!(count(&w, 1990), 0);
        prune(&mut w, 1990);
        record(&mut w, 1990);
        assert_eq!(count(&w, 1990), 1);
    }

    #[test]
    fn a_busy_address_stays_one_small_record() {
        let mut w = Vec::new();
        for i in 0..100_000u32 {
            let now = 5000 + i / 1000;
            prune(&mut w, now);
            record(&mut w, now);
        }
        assert_eq!(w.len(), 60);
        assert_eq!(count(&w, 5099), 60_000);
        assert_eq!(minute(-5), 0);
        assert_eq!(minute(120_001), 2);
    }
}
