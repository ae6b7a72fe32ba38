//! SHELL: the write-ahead journal that makes a `250` cheap.
//!
//! A redb commit with `Durability::Immediate` rewrites the path to the root
//! of every B-tree a message touches and syncs twice; doing that per batch
//! made the commit the cost of a message. Instead, the writer appends each
//! batch's *inputs* (the raw message and its envelope, or a delivery result)
//! to this file and `fdatasync`s it: the batch is durable once its record
//! is, and redb commits it with `Durability::None`. When the writer has
//! been idle for [`IDLE_CHECKPOINT`], at the latest every
//! [`CHECKPOINT_INTERVAL`] under load, when the journal is full, or when a
//! batch holds an admin command, the writer commits redb durably instead —
//! a checkpoint — and the journal starts again at offset 0.
//!
//! Invariants:
//! - A record is answered (`250`) only after its bytes are on disk. (A
//!   record of delivery results only is answered before: see the writer.)
//! - Records carry consecutive sequence numbers; redb's `meta.journal_seq`
//!   names the last one applied, in the same transaction. After a crash (or
//!   a reopen after an I/O error), the records after the durable
//!   `journal_seq` are applied again, in order, and checkpointed.
//! - The file is zero-filled ahead of use and overwritten in place, so that
//!   the sync of a record rarely has file metadata to write. Scanning stops
//!   at the first record that is torn (bad checksum), stale (from before the
//!   last restart at offset 0: its sequence number is not the next one) or
//!   absent (zeros).
//! - A record that is intact but cannot be decoded fails the recovery (the
//!   daemon does not start, or answers 451 after a reopen): the journal is
//!   never restarted over acknowledged mail.

use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal's size: a record that would end past it makes the batch a
/// checkpoint instead. It bounds the work of recovery (a few seconds).
pub const JOURNAL_BYTES: u64 = 64 << 20;
/// Under continuous load, the longest a batch stays durable in the journal
/// only. A checkpoint writes out everything redb changed since the last
/// one and syncs twice: sessions arriving meanwhile wait for it, so under
/// load checkpoints are made rarely (this, or a full journal).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// When no job has arrived for this long, pending batches are checkpointed
/// at once (nobody is waiting then).
pub const IDLE_CHECKPOINT: Duration = Duration::from_millis(50);
/// The journal file is zero-filled ahead of the write position in steps of
/// this many bytes.
const GROW: u64 = 1 << 20;

const MAGIC: [u8; 4] = *b"PDJ1";
/// magic (4) · payload length (4) · sequence number (8) · CRC-32 of the
/// length, sequence number and payload (4) · reserved, zero (4).
pub const HEADER: usize = 24;

/// A record's bytes: header and payload (the writer builds its records
/// with [`record`]).
#[cfg(test)]
pub fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(payload);
    seal(&mut out, seq);
    out
}

/// A batch's record: header and `encode`'s payload, built in one buffer
/// (each raw message is copied once on the commit path, not twice).
pub fn record(seq: u64, now: i64, entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = vec![0; HEADER];
    encode_into(&mut out, now, entries);
    seal(&mut out, seq);
    out
}

/// Fills in the header of `rec` (`HEADER` bytes, then the payload).
fn seal(rec: &mut [u8], seq: u64) {
    let (head, payload) = rec.split_at_mut(HEADER);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    head[0..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&len.to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..20].copy_from_slice(&checksum(len, seq, payload).to_le_bytes());
    head[20..24].copy_from_slice(&[0; 4]);
}

fn checksum(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Walks a journal's records from offset 0 and decides, record by record,
/// what recovery does with it ([`Journal::read_after`] on the file, `scan`
/// on a buffer in tests).
struct Walk {
    /// Offset of the next record.
    at: u64,
    prev: Option<u64>,
    after: u64,
    taken: u64,
}

/// What to do with one record.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Apply it (its number follows redb's durable one).
    Take,
    /// Already in redb durably.
    Skip,
    /// Torn, stale or absent: nothing from here on is applied.
    Stop,
}

impl Walk {
    fn new(after: u64) -> Walk {
        Walk {
            at: 0,
            prev: None,
            after,
            taken: 0,
        }
    }

    /// The header at the current offset: payload length, sequence number
    /// and checksum, or `None` if no record starts there.
    fn header(head: &[u8]) -> Option<(u32, u64, u32)> {
        if head.len() < HEADER || head[0..4] != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let seq = u64::from_le_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ]);
        let crc = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
        Some((len, seq, crc))
    }

    /// Decides on the whole record at the current offset and moves past it.
    fn step(&mut self, len: u32, seq: u64, crc: u32, payload: &[u8]) -> Step {
        if checksum(len, seq, payload) != crc || self.prev.is_some_and(|p| seq != p + 1) {
            return Step::Stop;
        }
        self.prev = Some(seq);
        self.at += (HEADER + len as usize) as u64;
        if seq <= self.after {
            return Step::Skip;
        }
        if seq != self.after + 1 + self.taken {
            // A gap after what redb holds: what follows cannot be applied
            // in order (only a stale record looks like this).
            return Step::Stop;
        }
        self.taken += 1;
        Step::Take
    }
}

/// The records of `buf` (a journal's bytes from offset 0) with sequence
/// numbers `after + 1`, `after + 2`, … in order, up to the first that is
/// missing, torn or out of sequence. Records at or below `after` are already
/// durable in redb and are skipped, as long as the sequence is unbroken.
/// (The in-memory form of [`Journal::read_after`], for tests.)
#[cfg(test)]
pub fn scan(buf: &[u8], after: u64) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut walk = Walk::new(after);
    loop {
        let at = walk.at as usize;
        let Some((len, seq, crc)) = buf.get(at..).and_then(Walk::header) else {
            break;
        };
        let Some(payload) = buf.get(at + HEADER..at + HEADER + len as usize) else {
            break;
        };
        match walk.step(len, seq, crc, payload) {
            Step::Take => out.push((seq, payload)),
            Step::Skip => {}
            Step::Stop => break,
        }
    }
    out
}

/// The open journal file and the writer's position in it.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    pos: u64,
    /// Bytes of the file known to be zero-filled or written (its length).
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`. The position is 0: call
    /// [`Journal::read_all`] first to recover what it holds.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let file = super::open_store_file(path)?;
        let len = file.metadata()?.len();
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            pos: 0,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, for [`scan`] (tests).
    #[cfg(test)]
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; usize::try_from(self.len).unwrap_or(0)];
        self.file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Calls `f` with each record [`scan`] would return, in order, reading
    /// the file one record at a time (a journal is up to
    /// [`JOURNAL_BYTES`]; recovery should not hold it all). Stops early if
    /// `f` says so (returns `false`).
    pub fn read_after(&self, after: u64, mut f: impl FnMut(u64, &[u8]) -> bool) -> io::Result<()> {
        let mut walk = Walk::new(after);
        let mut head = [0u8; HEADER];
        let mut payload = Vec::new();
        loop {
            if walk.at + HEADER as u64 > self.len {
                return Ok(());
            }
            self.file.read_exact_at(&mut head, walk.at)?;
            let Some((len, seq, crc)) = Walk::header(&head) else {
                return Ok(());
            };
            let start = walk.at + HEADER as u64;
            if start + u64::from(len) > self.len {
                return Ok(());
            }
            payload.resize(len as usize, 0);
            self.file.read_exact_at(&mut payload, start)?;
            match walk.step(len, seq, crc, &payload) {
                Step::Take => {
                    if !f(seq, &payload) {
                        return Ok(());
                    }
                }
                Step::Skip => {}
                Step::Stop => return Ok(()),
            }
        }
    }

    /// Whether a record of `len` bytes (header included) fits after the
    /// current position.
    pub fn fits(&self, len: usize) -> bool {
        self.pos + len as u64 <= JOURNAL_BYTES
    }

    /// Writes one record at the current position and syncs it. On success
    /// the record is durable and its start offset is returned; on failure
    /// the position is unchanged (the next record overwrites whatever part
    /// of this one reached the file).
    #[cfg(test)]
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<u64> {
        let start = self.write(&frame(seq, payload))?;
        if let Err(e) = self.file.sync_data() {
            self.pos = start;
            return Err(e);
        }
        Ok(start)
    }

    /// Writes one record ([`record`]) at the current position and starts
    /// writing it back to the disk without waiting ([`Journal::sync`]
    /// waits): the writer applies the batch while the disk writes. Returns
    /// its start offset; on failure the position is unchanged.
    pub fn write(&mut self, rec: &[u8]) -> io::Result<u64> {
        let start = self.pos;
        let end = start + rec.len() as u64;
        if end > self.len {
            self.grow(end)?;
        }
        self.file.write_all_at(rec, start)?;
        self.start_writeback(start, rec.len() as u64)?;
        self.pos = end;
        Ok(start)
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: submits the range's dirty
    /// pages for writing and returns. Only a hint — durability is the
    /// `fdatasync` of [`Journal::sync`] — but it lets the write overlap
    /// the batch's apply, leaving the sync little more than the disk's
    /// cache flush.
    #[cfg(target_os = "linux")]
    fn start_writeback(&self, at: u64, len: u64) -> io::Result<()> {
        let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: sync_file_range(2) on a file descriptor this journal owns;
        // it reads no memory of ours.
        let rc = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Elsewhere the sync does all the work.
    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&self, _at: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// Makes every record written so far durable (`fdatasync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Undoes the record appended at `start` (its redb commit failed): its
    /// header is zeroed and synced, so recovery will not apply it.
    pub fn retract(&mut self, start: u64) -> io::Result<()> {
        self.pos = start;
        self.file.write_all_at(&[0; HEADER], start)?;
        self.file.sync_data()
    }

    /// After a checkpoint: every record is in redb durably; the next one
    /// goes to offset 0.
    pub fn restart(&mut self) {
        self.pos = 0;
    }

    /// Zero-fills the file up to `end` rounded up to [`GROW`], and syncs
    /// the new length.
    fn grow(&mut self, end: u64) -> io::Result<()> {
        let target = end.div_ceil(GROW) * GROW;
        let zeros = vec![0u8; GROW as usize];
        let mut at = self.len;
        while at < target {
            let n = (target - at).min(GROW) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.len = target;
        Ok(())
    }
}

/// One journaled store command, borrowed from the job (when writing) or
/// from the journal's bytes (when recovering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Ingest {
        raw: &'a [u8],
        mail_from: &'a str,
        rcpt: Vec<&'a str>,
        channel: &'a str,
        plus: Option<u64>,
        received_at: i64,
        imported: bool,
    },
    /// A delivery attempt's result: 0 sent, 1 transient, 2 permanent.
    Delivered { id: u64, kind: u8, detail: &'a str },
}

const TAG_INGEST: u8 = 1;
const TAG_DELIVERED: u8 = 2;

/// A batch's payload: the commit time it was applied with, then its
/// entries. Integers little-endian; strings and bytes length-prefixed (u32).
#[cfg(test)]
pub fn encode(now: i64, entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, now, entries);
    out
}

/// `encode`, appended to `out`.
fn encode_into(out: &mut Vec<u8>, now: i64, entries: &[Entry<'_>]) {
    let size: usize = entries
        .iter()
        .map(|e| match e {
            Entry::Ingest { raw, rcpt, .. } => {
                raw.len() + 64 + rcpt.iter().map(|r| r.len() + 4).sum::<usize>()
            }
            Entry::Delivered { detail, .. } => detail.len() + 16,
        })
        .sum();
    out.reserve(12 + size);
    out.extend_from_slice(&now.to_le_bytes());
    put_u32(out, entries.len());
    for e in entries {
        match e {
            Entry::Ingest {
                raw,
                mail_from,
                rcpt,
                channel,
                plus,
                received_at,
                imported,
            } => {
                out.push(TAG_INGEST);
                put_bytes(out, raw);
                put_bytes(out, mail_from.as_bytes());
                put_u32(out, rcpt.len());
                for r in rcpt {
                    put_bytes(out, r.as_bytes());
                }
                put_bytes(out, channel.as_bytes());
                out.push(u8::from(plus.is_some()));
                out.extend_from_slice(&plus.unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&received_at.to_le_bytes());
                out.push(u8::from(*imported));
            }
            Entry::Delivered { id, kind, detail } => {
                out.push(TAG_DELIVERED);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(*kind);
                put_bytes(out, detail.as_bytes());
            }
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

/// The inverse of `encode`; `None` if the payload is not one (a record's
/// checksum matched, so this means a bug or a journal from another version).
pub fn decode(payload: &[u8]) -> Option<(i64, Vec<Entry<'_>>)> {
    let mut r = Reader(payload);
    let now = i64::from_le_bytes(r.array()?);
    let n = r.u32()?;
    let mut entries = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        let e = match r.u8()? {
            TAG_INGEST => {
                let raw = r.bytes()?;
                let mail_from = r.str()?;
                let k = r.u32()?;
                let mut rcpt = Vec::with_capacity(k.min(1024) as usize);
                for _ in 0..k {
                    rcpt.push(r.str()?);
                }
                let channel = r.str()?;
                let has_plus = r.u8()? != 0;
                let plus = u64::from_le_bytes(r.array()?);
                let received_at = i64::from_le_bytes(r.array()?);
                let imported = r.u8()? != 0;
                Entry::Ingest {
                    raw,
                    mail_from,
                    rcpt,
                    channel,
                    plus: has_plus.then_some(plus),
                    received_at,
                    imported,
                }
            }
            TAG_DELIVERED => {
                let id = u64::from_le_bytes(r.array()?);
                let kind = r.u8()?;
                let detail = r.str()?;
                Entry::Delivered { id, kind, detail }
            }
            _ => return None,
        };
        entries.push(e);
    }
    r.0.is_empty().then_some((now, entries))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn journal(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, p) in records {
            out.extend(frame(*seq, p));
        }
        out
    }

    #[test]
    fn reads_back_what_follows_the_durable_sequence_number() {
        let buf = journal(&[(5, b"a"), (6, b"bb"), (7, b"")]);
        let all = scan(&buf, 4);
        assert_eq!(all, vec![(5, &b"a"[..]), (6, &b"bb"[..]), (7, &b""[..])]);
        assert_eq!(scan(&buf, 6), vec![(7, &b""[..])]);
        assert!(scan(&buf, 7).is_empty());
        // zeros after the records end the scan
        let mut padded = buf.clone();
        padded.extend(vec![0; 100]);
        assert_eq!(scan(&padded, 4).len(), 3);
    }

    #[test]
    fn a_torn_record_ends_the_scan() {
        let mut buf = journal(&[(1, b"first"), (2, b"second")]);
        let n = buf.len();
        buf[n - 1] ^= 0xff;
        assert_eq!(scan(&buf, 0), vec![(1, &b"first"[..])]);
        // cut short
        let buf = journal(&[(1, b"first"), (2, b"second")]);
        assert_eq!(scan(&buf[..buf.len() - 3], 0).len(), 1);
        assert_eq!(scan(&buf[..10], 0).len(), 0);
    }

    #[test]
    fn stale_records_behind_a_restart_are_not_applied() {
        // Before the last checkpoint the journal held 1..=3; after it
        // (durable seq 3) record 4 was written at offset 0, shorter than
        // what it overwrote, and left record 2 and 3 intact behind it.
        let old = journal(&[(1, b"xxxxxxxxxxxxxxxxxxxxxxxx"), (2, b"y"), (3, b"z")]);
        let new = frame(4, b"n");
        let mut buf = old.clone();
        buf[..new.len()].copy_from_slice(&new);
        assert_eq!(scan(&buf, 3), vec![(4, &b"n"[..])]);
        // The checkpoint at 3 happened but nothing was written since: the
        // old records are all at or below the durable number.
        assert!(scan(&old, 3).is_empty());
        // Only records that continue the durable number are applied.
        assert!(scan(&journal(&[(9, b"later")]), 3).is_empty());
    }

    #[test]
    fn a_retracted_record_is_not_read_and_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let mut j = Journal::open(&path).expect("open");
        j.append(1, b"one").expect("append");
        let at = j.append(2, b"two").expect("append");
        j.retract(at).expect("retract");
        assert_eq!(
            scan(&j.read_all().expect("read"), 0),
            vec![(1, &b"one"[..])]
        );
        j.append(2, b"TWO").expect("append");
        assert_eq!(
            scan(&j.read_all().expect("read"), 0),
            vec![(1, &b"one"[..]), (2, &b"TWO"[..])]
        );
        // grown in whole steps, zero-filled
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), GROW);
        j.restart();
        j.append(3, b"three").expect("append");
        assert_eq!(
            scan(&j.read_all().expect("read"), 2),
            vec![(3, &b"three"[..])]
        );
        // reopened, the same
        drop(j);
        let j = Journal::open(&path).expect("reopen");
        assert_eq!(
            scan(&j.read_all().expect("read"), 2),
            vec![(3, &b"three"[..])]
        );
    }

    #[test]
    fn reading_the_file_record_by_record_agrees_with_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        // stale records 1..=3, then a restart: 4 and 5 at offset 0
        let mut j = Journal::open(&path).expect("open");
        for (seq, p) in [
            (1, &b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"[..]),
            (2, b"y"),
            (3, b"z"),
        ] {
            j.append(seq, p).expect("append");
        }
        j.restart();
        j.append(4, b"four").expect("append");
        j.append(5, b"five").expect("append");
        let all = j.read_all().expect("read");
        for after in 0..7 {
            let want: Vec<(u64, Vec<u8>)> = scan(&all, after)
                .into_iter()
                .map(|(s, p)| (s, p.to_vec()))
                .collect();
            let mut got = Vec::new();
            j.read_after(after, |seq, p| {
                got.push((seq, p.to_vec()));
                true
            })
            .expect("read_after");
            assert_eq!(got, want, "after {after}");
        }
        assert_eq!(scan(&all, 3).len(), 2);
        // f can stop the walk
        let mut n = 0;
        j.read_after(3, |_, _| {
            n += 1;
            false
        })
        .expect("read_after");
        assert_eq!(n, 1);
    }

    #[test]
    fn fits_respects_the_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(&dir.path().join("j")).expect("open");
        assert!(j.fits(1000));
        // a record's length includes its header
        assert!(j.fits(JOURNAL_BYTES as usize));
        assert!(!j.fits(JOURNAL_BYTES as usize + 1));
    }

    #[test]
    fn batches_round_trip() {
        let entries = vec![
            Entry::Ingest {
                raw: b"Subject: hi\r\n\r\nbody\r\n",
                mail_from: "",
                rcpt: vec!["support@acme.example", "support+7@acme.example"],
                channel: "support",
                plus: Some(7),
                received_at: -3,
                imported: true,
            },
            Entry::Delivered {
                id: 42,
                kind: 1,
                detail: "451 try later",
            },
            Entry::Ingest {
                raw: b"",
                mail_from: "a@b.example",
                rcpt: vec![],
                channel: "c",
                plus: None,
                received_at: 1_700_000_000_000,
                imported: false,
            },
        ];
        let bytes = encode(99, &entries);
        assert_eq!(
            record(7, 99, &entries),
            frame(7, &bytes),
            "built in one buffer, the same"
        );
        assert_eq!(decode(&bytes), Some((99, entries)));
        assert_eq!(decode(&encode(1, &[])), Some((1, vec![])));
        // truncated or extended payloads are refused, never misread
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }
}
