//! SHELL: `postdesk store copy -c FROM --to TO` (SPEC §8): one store into
//! another, of either engine — how a one-node install (redb) grows into
//! several nodes on PostgreSQL, or goes back.
//!
//! What is copied, with every id as the source has it: tickets; every
//! message row with its raw bytes, byte-exact; a ticket's message list and
//! timeline (in the source's order); the outbox, every state, with
//! `next_attempt_at`; the conversations (messages without a ticket); every
//! Message-ID row, also those only named by a ticket's messages; the
//! per-contact count of automatic emails of the last hour (best effort: the
//! engines count in different shapes); the id counters, raised so that new
//! ids continue after the copied ones; and the store's secrets — the
//! reply-key secret (without it the signed reply addresses already sent out
//! stop working) and the Message-ID salt.
//!
//! Invariants:
//! - The target holds no data of its own: it is empty (no tickets,
//!   messages, outbox emails), or it holds a prefix of this very copy.
//!   The copy's [`Progress`] is kept in the target, in the same
//!   transaction as what it describes: re-running an interrupted copy goes
//!   on from there; re-running a finished one does nothing. A target that
//!   holds anything else is refused.
//! - The secrets go first, with the progress record, in one transaction,
//!   and only into a target that holds no data (checked in that
//!   transaction): the target of a copy always has the source's secrets,
//!   and nothing of its own was ever signed with the ones it had.
//! - Then in id order, in chunks of one target transaction each: tickets
//!   (each with its messages, raw bytes, Message-ID rows, timeline and
//!   outbox), then conversations, then the Message-ID rows (the rest of
//!   them: only named), then in the last transaction the hourly counts,
//!   the counters and `done`.
//! - A store that is the target of an unfinished copy refuses to be served
//!   (exit 78) and to be copied from: its counters and Message-ID rows are
//!   not complete yet.
//! - The source does not change during the copy: a redb store is locked by
//!   the copy; a PostgreSQL one is refused while postdesk nodes are
//!   connected to it, read in one snapshot per run, and its counters are
//!   compared with the ones the copy began with at every re-run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::portable::{
    fingerprint, plural, AutoSent, Chunk, Counters, Progress, Secrets, SourceInfo, TargetState,
};
use super::postgres::export as pg;
use super::redb::export as rd;
use crate::clock::Millis;
use crate::config::{Config, Storage};
use crate::desk::StoreError;

/// Why a copy did not happen (or did not finish).
#[derive(Debug)]
pub enum CopyError {
    /// The configuration, or a store as it is, does not allow it (exit 78):
    /// a target with other data, a schema not migrated, a store in use.
    Refused(String),
    /// Something failed on the way (exit 1); running the copy again goes
    /// on from the last chunk that was committed.
    Failed(String),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Refused(s) | CopyError::Failed(s) => f.write_str(s),
        }
    }
}

/// An error of one side (`"the source"`, `"the target"`), worded for the
/// operator.
fn side(what: &str, e: StoreError) -> CopyError {
    match e {
        StoreError::Refused(s) => CopyError::Refused(format!("{what}: {s}")),
        StoreError::Db(::redb::Error::DatabaseAlreadyOpen) => CopyError::Refused(format!(
            "{what} is in use (a redb store is opened by one process at a time): stop the \
             daemon (postdesk serve) on it, and any other postdesk command using it, first"
        )),
        other => CopyError::Failed(format!("{what}: {other}")),
    }
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct Copied {
    pub from: &'static str,
    pub to: &'static str,
    pub tickets: u64,
    /// Message rows, conversations included.
    pub messages: u64,
    pub outbox: u64,
    pub conversations: u64,
    /// The target held the whole copy already: nothing was written.
    pub already: bool,
    /// What the operator should know (the copy itself succeeded).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = format!(
            "{}, {}, {}, {} from {} to {}",
            plural(self.tickets, "ticket"),
            plural(self.messages, "message"),
            plural(self.outbox, "outbox email"),
            plural(self.conversations, "conversation"),
            self.from,
            self.to
        );
        if self.already {
            write!(f, "already copied: {what}; nothing to do")
        } else {
            write!(f, "copied {what}")
        }
    }
}

enum Source {
    Redb(rd::Source),
    Postgres(pg::Source),
}

impl Source {
    async fn open(config: Arc<Config>) -> Result<Source, StoreError> {
        match &config.storage {
            Storage::Redb => Ok(Source::Redb(rd::Source::open(config.clone())?)),
            Storage::Postgres(p) => Ok(Source::Postgres(pg::Source::open(p).await?)),
        }
    }

    fn engine(&self) -> &'static str {
        match self {
            Source::Redb(_) => "redb",
            Source::Postgres(_) => "postgres",
        }
    }

    async fn info(&mut self) -> Result<SourceInfo, StoreError> {
        match self {
            Source::Redb(s) => s.info(),
            Source::Postgres(s) => s.info().await,
        }
    }

    async fn tickets_after(&mut self, after: u64) -> Result<Chunk, StoreError> {
        match self {
            Source::Redb(s) => s.tickets_after(after),
            Source::Postgres(s) => s.tickets_after(after).await,
        }
    }

    async fn conversations_after(&mut self, after: u64) -> Result<Chunk, StoreError> {
        match self {
            Source::Redb(s) => s.conversations_after(after),
            Source::Postgres(s) => s.conversations_after(after).await,
        }
    }

    async fn ids_after(&mut self, cursor: Option<&str>) -> Result<Chunk, StoreError> {
        match self {
            Source::Redb(s) => s.ids_after(cursor),
            Source::Postgres(s) => s.ids_after(cursor).await,
        }
    }

    async fn auto_sent(&mut self, now: Millis) -> Result<Vec<AutoSent>, StoreError> {
        match self {
            Source::Redb(s) => s.auto_sent(now),
            Source::Postgres(s) => s.auto_sent(now).await,
        }
    }

    /// The source's counters now, outside the run's snapshot (redb: the
    /// copy holds its lock, nothing else can move them).
    async fn counters_now(&mut self) -> Result<Option<Counters>, StoreError> {
        match self {
            Source::Redb(_) => Ok(None),
            Source::Postgres(s) => s.counters_now().await.map(Some),
        }
    }
}

enum Target {
    Redb(rd::Target),
    Postgres(pg::Target),
}

impl Target {
    async fn open(config: Arc<Config>, path: &Path) -> Result<Target, StoreError> {
        match &config.storage {
            Storage::Redb => Ok(Target::Redb(rd::Target::open(config.clone())?)),
            Storage::Postgres(p) => Ok(Target::Postgres(pg::Target::open(p, path).await?)),
        }
    }

    fn engine(&self) -> &'static str {
        match self {
            Target::Redb(_) => "redb",
            Target::Postgres(_) => "postgres",
        }
    }

    async fn state(&mut self) -> Result<TargetState, StoreError> {
        match self {
            Target::Redb(t) => t.state(),
            Target::Postgres(t) => t.state().await,
        }
    }

    /// Refuses a target that a daemon serves (redb: its lock already did).
    async fn check_idle(&mut self) -> Result<(), StoreError> {
        match self {
            Target::Redb(_) => Ok(()),
            Target::Postgres(t) => t.check_idle().await,
        }
    }

    async fn begin(&mut self, secrets: &Secrets, progress: &Progress) -> Result<(), StoreError> {
        match self {
            Target::Redb(t) => t.begin(secrets, progress),
            Target::Postgres(t) => t.begin(secrets, progress).await,
        }
    }

    async fn write(
        &mut self,
        chunk: &mut Chunk,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        match self {
            Target::Redb(t) => t.write(chunk, before, after),
            Target::Postgres(t) => t.write(chunk, before, after).await,
        }
    }

    async fn finish(
        &mut self,
        auto: &[AutoSent],
        counters: &Counters,
        before: &Progress,
        after: &Progress,
    ) -> Result<(), StoreError> {
        match self {
            Target::Redb(t) => t.finish(auto, counters, before, after),
            Target::Postgres(t) => t.finish(auto, counters, before, after).await,
        }
    }
}

/// What the target's state makes of this run.
enum Plan {
    Fresh,
    Resume(Progress),
    Done(Progress),
}

fn plan(
    state: &TargetState,
    fingerprint: &str,
    engine: &str,
    info: &SourceInfo,
) -> Result<Plan, CopyError> {
    if let Some(p) = &state.progress {
        if p.source == fingerprint && p.engine == engine {
            if p.counters == info.counters {
                return Ok(if p.done {
                    Plan::Done(p.clone())
                } else {
                    Plan::Resume(p.clone())
                });
            }
            if state.has_data() {
                return Err(CopyError::Refused(format!(
                    "the source has changed since this copy {} (it took mail or sent email: \
                     its ids moved on from {:?} to {:?}): the {} in the target may be stale; \
                     refusing. Stop everything that writes to the source, and copy into a \
                     fresh target",
                    if p.done { "was made" } else { "began" },
                    p.counters,
                    info.counters,
                    state.holds()
                )));
            }
        }
    }
    if state.has_data() {
        let same_secret = state.reply_key.as_deref() == Some(&info.secrets.reply_key[..]);
        return Err(CopyError::Refused(if same_secret {
            format!(
                "the target store already holds {}, not written by this copy, of a store with \
                 the same secrets as the source (the store it was copied from, or another copy \
                 of it?); refusing",
                state.holds()
            )
        } else {
            format!(
                "the target store already holds {} that did not come from this source; refusing",
                state.holds()
            )
        }));
    }
    Ok(Plan::Fresh)
}

/// Both configs name the same store.
fn same_store(from: &Config, to: &Config) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match (&from.storage, &to.storage) {
        (Storage::Redb, Storage::Redb) => {
            canonical(&from.server.data_dir) == canonical(&to.server.data_dir)
        }
        (Storage::Postgres(a), Storage::Postgres(b)) => {
            let url = |p: &PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_string());
            matches!((url(&a.url_file), url(&b.url_file)), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn progress_bar(len: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tickets and conversations ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Copies the store of `from` into the store of `to` (`to_path`: its
/// config file, for what the operator is told to run).
pub async fn copy(from: Config, to: Config, to_path: &Path) -> Result<Copied, CopyError> {
    if same_store(&from, &to) {
        return Err(CopyError::Refused(
            "FROM and TO name the same store: nothing to copy".into(),
        ));
    }
    let mut source = Source::open(Arc::new(from))
        .await
        .map_err(|e| side("the source", e))?;
    let info = source.info().await.map_err(|e| side("the source", e))?;
    let mut target = Target::open(Arc::new(to), to_path)
        .await
        .map_err(|e| side("the target", e))?;
    let (from_engine, to_engine) = (source.engine(), target.engine());
    let state = target.state().await.map_err(|e| side("the target", e))?;
    let fp = fingerprint(&info.secrets);
    let copied = |p: &Progress, already: bool| Copied {
        from: from_engine,
        to: to_engine,
        tickets: p.tickets,
        messages: p.messages,
        outbox: p.outbox,
        conversations: p.conversations,
        already,
        warnings: Vec::new(),
    };
    let mut progress = match plan(&state, &fp, from_engine, &info)? {
        Plan::Done(p) => return Ok(copied(&p, true)),
        Plan::Resume(p) => {
            target
                .check_idle()
                .await
                .map_err(|e| side("the target", e))?;
            p
        }
        Plan::Fresh => {
            target
                .check_idle()
                .await
                .map_err(|e| side("the target", e))?;
            let p = Progress {
                source: fp,
                engine: from_engine.to_string(),
                counters: info.counters,
                ..Progress::default()
            };
            target
                .begin(&info.secrets, &p)
                .await
                .map_err(|e| side("the target", e))?;
            p
        }
    };

    let bar = progress_bar(info.tickets + info.conversations);
    bar.set_position(progress.tickets + progress.conversations);
    // Tickets, then conversations, then the Message-ID rows: each a chunk
    // per target transaction, its progress with it.
    for phase in 0..3 {
        loop {
            let read = match phase {
                0 => source.tickets_after(progress.ticket).await,
                1 => source.conversations_after(progress.conversation).await,
                _ => source.ids_after(progress.message_id.as_deref()).await,
            };
            let mut chunk = read.map_err(|e| side("the source", e))?;
            if chunk.is_empty() {
                break;
            }
            let next = progress.after(&chunk);
            let cursor = |p: &Progress| (p.ticket, p.conversation, p.message_id.clone());
            if cursor(&next) == cursor(&progress) {
                // Only a damaged source could: never loop on it.
                return Err(CopyError::Failed(format!(
                    "the source's rows did not move the copy on from {:?}: is the source damaged?",
                    cursor(&progress)
                )));
            }
            target
                .write(&mut chunk, &progress, &next)
                .await
                .map_err(|e| side("the target", e))?;
            progress = next;
            bar.set_position(progress.tickets + progress.conversations);
            crate::failpoint::hit("copy.after_chunk");
        }
    }
    // A node that started on the source during the run wrote what this
    // snapshot does not hold: not `done`, then (a re-run refuses the stale
    // target).
    if let Some(now) = source
        .counters_now()
        .await
        .map_err(|e| side("the source", e))?
    {
        if now != info.counters {
            return Err(CopyError::Refused(format!(
                "the source changed during the copy (its ids moved on from {:?} to {now:?}: \
                 a postdesk node wrote to it): the copy is not finished; stop every node on \
                 the source and copy into a fresh target",
                info.counters
            )));
        }
    }
    let auto = source
        .auto_sent(crate::clock::now_millis())
        .await
        .map_err(|e| side("the source", e))?;
    let mut counters = info.counters;
    counters.raise(&progress.seen);
    let mut done = progress.clone();
    done.done = true;
    target
        .finish(&auto, &counters, &progress, &done)
        .await
        .map_err(|e| side("the target", e))?;
    bar.finish_and_clear();

    let mut result = copied(&done, false);
    for (what, source_has, copied) in [
        ("tickets", info.tickets, done.tickets),
        ("messages", info.messages, done.messages),
        ("outbox emails", info.outbox, done.outbox),
    ] {
        if source_has != copied {
            result.warnings.push(format!(
                "the source holds {source_has} {what} but {copied} were copied: the others \
                 are on no ticket's list (nor the conversations') in the source"
            ));
        }
    }
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::desk::records::{MessageRec, TicketRec};
    use crate::ingest::TicketId;
    use crate::store::portable::{group_auto_sent, hex, unhex, MessageCopy, TicketCopy};

    fn info(reply_key: u8, next_ticket: u64) -> SourceInfo {
        SourceInfo {
            secrets: Secrets {
                reply_key: [reply_key; 32],
                salt: 7,
            },
            counters: Counters {
                ticket: next_ticket,
                message: 1,
                event: 1,
                outbox: 1,
            },
            tickets: 0,
            messages: 0,
            outbox: 0,
            conversations: 0,
        }
    }

    fn state(progress: Option<Progress>, tickets: u64, reply_key: Option<u8>) -> TargetState {
        TargetState {
            progress,
            tickets,
            messages: 0,
            outbox: 0,
            reply_key: reply_key.map(|k| vec![k; 32]),
        }
    }

    fn progress_of(info: &SourceInfo, done: bool) -> Progress {
        Progress {
            source: fingerprint(&info.secrets),
            engine: "redb".into(),
            counters: info.counters,
            done,
            tickets: 3,
            ..Progress::default()
        }
    }

    fn refusal(r: Result<Plan, CopyError>) -> String {
        match r {
            Err(CopyError::Refused(s)) => s,
            Err(CopyError::Failed(s)) => panic!("failed, not refused: {s}"),
            Ok(_) => panic!("not refused"),
        }
    }

    #[test]
    fn an_empty_target_is_copied_into_and_one_with_other_data_is_refused() {
        let src = info(1, 4);
        let fp = fingerprint(&src.secrets);
        assert!(matches!(
            plan(&state(None, 0, Some(9)), &fp, "redb", &src),
            Ok(Plan::Fresh)
        ));
        let e = refusal(plan(&state(None, 12, Some(9)), &fp, "redb", &src));
        assert_eq!(
            e,
            "the target store already holds 12 tickets that did not come from this source; refusing"
        );
        // Another copy's target, of another store.
        let other = progress_of(&info(2, 4), false);
        let e = refusal(plan(
            &state(Some(other.clone()), 1, Some(2)),
            &fp,
            "redb",
            &src,
        ));
        assert!(e.contains("holds 1 ticket that did not come"), "{e}");
        // ... which holds nothing yet: taken over.
        assert!(matches!(
            plan(&state(Some(other), 0, Some(2)), &fp, "redb", &src),
            Ok(Plan::Fresh)
        ));
        // The source's own data, not copied by this: refused, and said so.
        let e = refusal(plan(&state(None, 3, Some(1)), &fp, "redb", &src));
        assert!(e.contains("the same secrets as the source"), "{e}");
    }

    #[test]
    fn a_prefix_of_this_copy_is_resumed_and_a_finished_one_left_alone_unless_the_source_changed() {
        let src = info(1, 4);
        let fp = fingerprint(&src.secrets);
        let started = progress_of(&src, false);
        assert!(matches!(
            plan(&state(Some(started.clone()), 3, Some(1)), &fp, "redb", &src),
            Ok(Plan::Resume(p)) if p == started
        ));
        let done = progress_of(&src, true);
        assert!(matches!(
            plan(&state(Some(done.clone()), 5, Some(1)), &fp, "redb", &src),
            Ok(Plan::Done(_))
        ));
        // The same store read from another engine: its cursors differ.
        let e = refusal(plan(
            &state(Some(started.clone()), 3, Some(1)),
            &fp,
            "postgres",
            &src,
        ));
        assert!(e.contains("the same secrets as the source"), "{e}");
        // The source took mail since.
        let moved = info(1, 5);
        let e = refusal(plan(&state(Some(started), 3, Some(1)), &fp, "redb", &moved));
        assert!(
            e.contains("the source has changed since this copy began"),
            "{e}"
        );
        let e = refusal(plan(&state(Some(done), 5, Some(1)), &fp, "redb", &moved));
        assert!(e.contains("since this copy was made"), "{e}");
    }

    #[test]
    fn progress_counts_what_a_chunk_holds_and_the_ids_it_needs() {
        let mut m = MessageRec::for_test(41, "a@example.com");
        m.ticket = Some(TicketId(9));
        let ticket: TicketRec = serde_json::from_value(serde_json::json!({
            "id": 9, "pipeline": "support", "status": "new", "subject": "s",
            "contact": {"email": "c@example.com", "name": null}, "owner": null,
            "channel": "support", "source": "email", "created_at": 0, "updated_at": 0
        }))
        .unwrap();
        let chunk = Chunk {
            tickets: vec![TicketCopy {
                ticket,
                messages: vec![MessageCopy {
                    rec: m,
                    raw: Some(b"x".to_vec()),
                }],
                events: vec![(
                    70,
                    serde_json::from_value(
                        serde_json::json!({"at": 0, "kind": "created", "detail": {}}),
                    )
                    .unwrap(),
                )],
                outbox: vec![],
            }],
            ..Chunk::default()
        };
        let p = Progress::default().after(&chunk);
        assert_eq!((p.ticket, p.tickets, p.messages), (9, 1, 1));
        assert_eq!(
            p.seen,
            Counters {
                ticket: 10,
                message: 42,
                event: 71,
                outbox: 0
            }
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00ab10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn hourly_counts_are_grouped_per_minute_within_the_hour() {
        let now = 100 * 60_000;
        let rows = vec![
            ("a@x".to_string(), now - 10),
            ("a@x".to_string(), now - 20),
            ("a@x".to_string(), now - 61 * 60_000),
            ("b@x".to_string(), now - 30 * 60_000),
        ];
        let g = group_auto_sent(rows, now);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].address, "a@x");
        assert_eq!(g[0].minutes, vec![(99, 2)]);
        assert_eq!(g[1].minutes, vec![(70, 1)]);
    }
}
