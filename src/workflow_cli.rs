//! `postdesk workflow`: view and edit the `[[workflow]]` tables of the config
//! file in place — the operator's comments, order and layout are kept.
//!
//! SHELL at the edge: [`run`] reads the config file, writes the edited text
//! to a temp file next to it (`.NAME.tmp-PID`, same directory, so relative
//! paths resolve the same), validates that with the real loader
//! ([`config::load`]), and only then fsyncs and renames it over the original
//! (permissions and, where allowed, ownership kept). A running daemon is then
//! asked to `reload` over the admin socket, and the command says whether it
//! did. An invalid result leaves the file byte-identical.
//!
//! PURE inside: the edits ([`clone_workflow`], [`set_comment`],
//! [`move_action`], [`delete_actions`]) are functions over a
//! [`toml_edit::DocumentMut`] that touch only the workflow they name, so
//! everything else renders back byte for byte; the views ([`list`],
//! [`show`]) are functions of the validated [`Config`].
//!
//! It never decides what a valid config is (an id's syntax included): that
//! is `config::load`'s alone. Workflows may be written as `[[workflow]]`
//! tables whose `actions` is an array of inline tables, or as
//! `[[workflow.actions]]` tables; `workflow = [ ... ]` (an inline array of
//! workflows) is refused with a message.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::config::{self, ActionKind, Config, NotifyTarget, Problems, Workflow};
use crate::wording::io_reason;

/// The `postdesk workflow` subcommands. Action indexes start at 0.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// The workflows: id, pipeline, enrollment, re-enrollment, action count
    List,
    /// One workflow: its enrollment, re-enrollment, and each action with its
    /// index and comment
    Show {
        /// The workflow's id
        id: String,
    },
    /// Copy workflow ID as NEW_ID, right after it (it enrolls tickets only on
    /// future status changes)
    Clone {
        /// The workflow to copy
        id: String,
        /// The copy's id (unique; letters, digits, '-', '_' and '.')
        new_id: String,
    },
    /// Set the comment of action INDEX (an empty TEXT removes it)
    Comment {
        /// The workflow's id
        id: String,
        /// The action's index (from 0, as `show` prints it)
        index: usize,
        /// The comment; "" removes it
        text: String,
    },
    /// Move action FROM to position TO
    MoveAction {
        /// The workflow's id
        id: String,
        /// The action's index now (from 0)
        from: usize,
        /// Its index afterwards
        to: usize,
    },
    /// Replace action INDEX with TOML, e.g. '{ set_status = "closed" }'
    SetAction {
        /// The workflow's id
        id: String,
        /// The action's index (from 0)
        index: usize,
        /// The new action, an inline table
        toml: String,
    },
    /// Add the action TOML, e.g. '{ notify = { team = "tier1" } }', at the
    /// end (or at --at INDEX)
    AddAction {
        /// The workflow's id
        id: String,
        /// The new action, an inline table
        toml: String,
        /// Its index afterwards (from 0; default: after the last)
        #[arg(long, value_name = "INDEX")]
        at: Option<usize>,
    },
    /// Turn workflow ID on again
    Enable {
        /// The workflow's id
        id: String,
    },
    /// Turn workflow ID off (`enabled = false`): it runs nothing, and stays
    /// in the file
    Disable {
        /// The workflow's id
        id: String,
    },
    /// Delete workflow ID, with the comment lines above it (above the first
    /// workflow they document the section, and stay)
    Delete {
        /// The workflow's id
        id: String,
    },
    /// Delete action INDEX (with --and-following: it and every action after
    /// it)
    DeleteAction {
        /// The workflow's id
        id: String,
        /// The action's index (from 0)
        index: usize,
        /// Also delete every action after INDEX
        #[arg(long)]
        and_following: bool,
    },
}

/// Why an edit cannot be made on the document (before any validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the config has no [[workflow]] tables")]
    NoWorkflows,
    #[error("unknown workflow \"{id}\" (known: {known})")]
    UnknownWorkflow { id: String, known: String },
    #[error("a workflow \"{0}\" already exists")]
    DuplicateId(String),
    #[error("no action {index} in workflow \"{id}\" ({})", indexes(*.len))]
    BadIndex {
        id: String,
        index: usize,
        len: usize,
    },
    #[error("a comment is one line of text (no line breaks)")]
    MultiLineComment,
    /// A layout this command does not edit; the message says what to do.
    #[error("{0}")]
    Unsupported(String),
}

fn indexes(len: usize) -> String {
    match len {
        0 => "it has no actions".to_owned(),
        1 => "it has 1 action: index 0".to_owned(),
        n => format!("it has {n} actions: indexes 0 to {}", n - 1),
    }
}

// ---------------------------------------------------------------------------
// The shell.

/// Runs one `postdesk workflow` command on the config file at `path`.
/// Exit 0 when the view was printed or the file was written; 1 otherwise.
pub fn run(path: &Path, cmd: Cmd) -> ExitCode {
    let result = match cmd {
        Cmd::List => view(path, |c| Ok(list(c))),
        Cmd::Show { id } => view(path, |c| show(c, &id)),
        Cmd::Clone { id, new_id } => edit_file(
            path,
            |doc| clone_workflow(doc, &id, &new_id),
            |c| future_only_note(c, &new_id),
        ),
        Cmd::Comment { id, index, text } => edit_file(
            path,
            |doc| set_comment(doc, &id, index, &text),
            |_| String::new(),
        ),
        Cmd::MoveAction { id, from, to } => edit_file(
            path,
            |doc| move_action(doc, &id, from, to),
            |c| actions_now(c, &id),
        ),
        Cmd::SetAction { id, index, toml } => edit_file(
            path,
            |doc| set_action(doc, &id, index, &toml),
            |c| actions_now(c, &id),
        ),
        Cmd::AddAction { id, toml, at } => edit_file(
            path,
            |doc| add_action(doc, &id, &toml, at),
            |c| actions_now(c, &id),
        ),
        Cmd::Enable { id } => edit_file(path, |doc| set_enabled(doc, &id, true), |_| String::new()),
        Cmd::Disable { id } => {
            edit_file(path, |doc| set_enabled(doc, &id, false), |_| String::new())
        }
        Cmd::Delete { id } => edit_file(path, |doc| delete_workflow(doc, &id), |_| String::new()),
        Cmd::DeleteAction {
            id,
            index,
            and_following,
        } => edit_file(
            path,
            |doc| delete_actions(doc, &id, index, and_following),
            |c| actions_now(c, &id),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("postdesk: {message}");
            }
            ExitCode::from(1)
        }
    }
}

/// Runs `postdesk trigger` on the config file at `path`: exit 0 when the
/// file was written (or nothing needed to change), 1 otherwise.
pub fn run_trigger(path: &Path, pipeline: &str, name: &str, change: trigger::Change) -> ExitCode {
    let result = edit_file(
        path,
        |doc| trigger::edit_trigger(doc, pipeline, name, &change),
        |_| String::new(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("postdesk: {message}");
            ExitCode::from(1)
        }
    }
}

/// Loads and validates the config, then prints `render` of it.
fn view(
    path: &Path,
    render: impl FnOnce(&Config) -> Result<String, EditError>,
) -> Result<(), String> {
    let config = config::load(path).map_err(|problems| {
        eprintln!("{problems}");
        format!(
            "{} has problems (listed above); fix them first (`postdesk check`)",
            path.display()
        )
    })?;
    let text = render(&config).map_err(|e| e.to_string())?;
    print!("{text}");
    Ok(())
}

/// Reads the file, applies `edit`, validates and writes the result, prints
/// what was done (and `after` of the new config), and tells the daemon.
fn edit_file(
    path: &Path,
    edit: impl FnOnce(&mut DocumentMut) -> Result<String, EditError>,
    after: impl FnOnce(&Config) -> String,
) -> Result<(), String> {
    let original = fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), io_reason(&e)))?;
    let mut doc: DocumentMut = original.parse().map_err(|e: toml_edit::TomlError| {
        format!(
            "cannot edit {}: invalid TOML: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    if doc.to_string() != original {
        // toml_edit keeps layout for every file we know of; if one day it
        // cannot, refuse rather than reformat the operator's file.
        return Err(format!(
            "cannot edit {} without changing its layout elsewhere; edit it by hand",
            path.display()
        ));
    }
    let done = edit(&mut doc).map_err(|e| e.to_string())?;
    let text = doc.to_string();
    if text == original {
        println!("{done}");
        println!("nothing changed: {} was not written", path.display());
        return Ok(());
    }
    let config = match write_validated(path, &original, &text) {
        Ok(config) => config,
        Err(WriteError::Invalid(problems)) => {
            eprintln!("{problems}");
            return Err(format!(
                "the edit would make {} invalid (problems above); nothing was written",
                path.display()
            ));
        }
        Err(WriteError::Io(message)) => return Err(message),
    };
    println!("{done}");
    print!("{}", after(&config));
    println!("wrote {}", path.display());
    tell_daemon(&config, path);
    Ok(())
}

/// The note printed after `clone`: enrollment is about status changes, so
/// the new workflow enrolls no ticket now.
fn future_only_note(config: &Config, id: &str) -> String {
    match config.workflows.iter().find(|w| w.id == id) {
        Some(w) => format!(
            "note: \"{id}\" applies only to future status changes ({}); tickets already \
             there are not enrolled now\n",
            enrollment_words(config, w)
        ),
        None => String::new(),
    }
}

/// The actions of workflow `id` after a move or delete.
fn actions_now(config: &Config, id: &str) -> String {
    let Some(w) = config.workflows.iter().find(|w| w.id == id) else {
        return String::new();
    };
    let mut out = String::from("actions now:\n");
    out.push_str(&action_lines(w));
    out
}

enum WriteError {
    /// The edited text does not validate; its problems name the config path.
    Invalid(Problems),
    Io(String),
}

/// A temp file removed on drop unless it was renamed into place.
struct Temp {
    path: PathBuf,
    keep: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `text` over the config at `path` if it validates: temp file next
/// to the file, fsync, validate with the real loader, re-check that nobody
/// changed the file meanwhile, rename, fsync the directory. Returns the new
/// config.
fn write_validated(path: &Path, original: &str, text: &str) -> Result<Config, WriteError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        WriteError::Io(format!("cannot {what} {}: {}", p.display(), io_reason(&e)))
    };
    // Through a symlink the real file is replaced (the link stays), but the
    // text is validated where the link is: relative paths resolve from there.
    let target = fs::canonicalize(path).map_err(|e| io("resolve", path, e))?;
    let meta = fs::metadata(&target).map_err(|e| io("read the metadata of", &target, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postdesk.toml".to_owned());
    let tmp_name = format!(".{name}.tmp-{}", std::process::id());
    let write_dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    let check_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let tmp = write_temp(&write_dir.join(&tmp_name), text, &meta)
        .map_err(|e| io("write", &write_dir.join(&tmp_name), e))?;
    let same_dir = fs::canonicalize(&check_dir).is_ok_and(|d| d == write_dir);
    let check = if same_dir {
        None
    } else {
        let p = check_dir.join(&tmp_name);
        Some(write_temp(&p, text, &meta).map_err(|e| io("write", &p, e))?)
    };
    let checked = check.as_ref().unwrap_or(&tmp);
    let config = config::load(&checked.path).map_err(|Problems(problems)| {
        WriteError::Invalid(Problems(
            problems
                .into_iter()
                .map(|mut p| {
                    if p.file == checked.path {
                        p.file = path.to_path_buf();
                    }
                    p
                })
                .collect(),
        ))
    })?;
    drop(check);

    let now = fs::read_to_string(&target).map_err(|e| io("read", &target, e))?;
    if now != original {
        return Err(WriteError::Io(format!(
            "{} changed while it was being edited; nothing was written (run the command again)",
            path.display()
        )));
    }
    let mut tmp = tmp;
    fs::rename(&tmp.path, &target).map_err(|e| io("replace", &target, e))?;
    tmp.keep = true;
    // The rename is durable once the directory is; a failure here leaves
    // the new file in place, so it is not reported as a failed edit.
    if let Ok(dir) = File::open(&write_dir) {
        let _ = dir.sync_all();
    }
    Ok(config)
}

/// Creates `path` with `text`, the mode (and, if allowed, owner) of `like`,
/// and fsyncs it.
fn write_temp(path: &Path, text: &str, like: &fs::Metadata) -> std::io::Result<Temp> {
    let _ = fs::remove_file(path); // a leftover of a killed run with our pid
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let temp = Temp {
        path: path.to_path_buf(),
        keep: false,
    };
    file.set_permissions(like.permissions())?;
    // Only root may give a file away; anyone else keeps their own.
    let _ = std::os::unix::fs::fchown(&file, Some(like.uid()), Some(like.gid()));
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(temp)
}

/// Asks the daemon of the new config to reload; prints what happened.
fn tell_daemon(config: &Config, path: &Path) {
    let socket = &config.server.admin_socket;
    if let Err(e) = UnixStream::connect(socket) {
        use std::io::ErrorKind::{ConnectionRefused, NotFound};
        if matches!(e.kind(), NotFound | ConnectionRefused) {
            println!("daemon not running (no socket): the change applies at next start");
        } else {
            println!(
                "could not reach the daemon at {}: {}; the change applies at its next \
                 reload or start",
                socket.display(),
                io_reason(&e)
            );
        }
        return;
    }
    let req = crate::admin::proto::Request::Reload {};
    match crate::ctl::request(socket, &req) {
        Ok(resp) if resp.ok => {
            println!("daemon reloaded");
            let theirs = resp
                .data
                .as_ref()
                .and_then(|d| d["config"].as_str())
                .map(PathBuf::from);
            if let Some(theirs) = theirs {
                let same = match (fs::canonicalize(&theirs), fs::canonicalize(path)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => true,
                };
                if !same {
                    println!(
                        "note: that daemon runs with {}, not {}: it reloaded its own file",
                        theirs.display(),
                        path.display()
                    );
                }
            }
        }
        Ok(resp) => {
            let (message, problems) = match resp.error {
                Some(e) => (e.message, e.problems.unwrap_or_default()),
                None => ("no reason given".to_owned(), Vec::new()),
            };
            println!("daemon refused the reload: {message}");
            for p in problems {
                println!("{p}");
            }
        }
        Err(e) => println!(
            "could not reach the daemon: {e:#}; the change applies at its next reload or start"
        ),
    }
}

// ---------------------------------------------------------------------------
// Views of the validated config (pure).

/// The `list` table: ID, PIPELINE, ENROLL, REENROLL, ENABLED, ACTIONS.
pub fn list(config: &Config) -> String {
    if config.workflows.is_empty() {
        return "no workflows\n".to_owned();
    }
    let rows = config
        .workflows
        .iter()
        .map(|w| {
            let mut enroll = Vec::new();
            if let Some(status) = &w.enroll.status {
                enroll.push(format!("status={status}"));
            }
            if let Some(source) = w.enroll.source {
                enroll.push(format!("source={}", source.as_str()));
            }
            vec![
                w.id.clone(),
                w.pipeline.clone(),
                enroll.join(" "),
                if w.reenroll { "yes" } else { "no" }.to_owned(),
                if w.enabled { "yes" } else { "no" }.to_owned(),
                w.actions.len().to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "PIPELINE", "ENROLL", "REENROLL", "ENABLED", "ACTIONS"],
        rows,
    )
}

/// The `show` view of workflow `id`: pipeline, enrollment in words,
/// re-enrollment, and each action with its index and comment.
pub fn show(config: &Config, id: &str) -> Result<String, EditError> {
    let w = config
        .workflows
        .iter()
        .find(|w| w.id == id)
        .ok_or_else(|| EditError::UnknownWorkflow {
            id: id.to_owned(),
            known: known(config.workflows.iter().map(|w| w.id.as_str())),
        })?;
    let pipeline = match config.pipeline(&w.pipeline) {
        Some(p) if p.name != p.id => format!("{} ({})", p.id, p.name),
        _ => w.pipeline.clone(),
    };
    let reenroll = if w.reenroll {
        "runs each time the condition is met anew (reenroll = true)"
    } else {
        "runs once per ticket (reenroll = false)"
    };
    let enabled = if w.enabled {
        "yes"
    } else {
        "no: runs nothing (enabled = false; `postdesk workflow enable` turns it on)"
    };
    Ok(format!(
        "workflow:      {}\npipeline:      {pipeline}\nenabled:       {enabled}\n\
         enrollment:    {}\nre-enrollment: {reenroll}\nactions:\n{}",
        w.id,
        enrollment_words(config, w),
        action_lines(w)
    ))
}

/// "when a ticket of source email reaches status new (New)".
fn enrollment_words(config: &Config, w: &Workflow) -> String {
    // No source: email tickets only (SPEC §3.4).
    let source = w.enroll.source.map_or("email", |s| s.as_str());
    match &w.enroll.status {
        Some(status) => {
            let name = config
                .pipeline(&w.pipeline)
                .and_then(|p| p.status(status))
                .map(|s| s.name.as_str())
                .unwrap_or(status);
            format!("when a ticket of source {source} reaches status {status} ({name})")
        }
        None => format!("when a ticket of source {source} is created (at any status)"),
    }
}

/// `  [i] send email "NAME" — comment`, one line per action.
fn action_lines(w: &Workflow) -> String {
    if w.actions.is_empty() {
        return "  (none)\n".to_owned();
    }
    let mut out = String::new();
    for (i, action) in w.actions.iter().enumerate() {
        let what = match &action.kind {
            ActionKind::SendEmail(name) => format!("send email \"{name}\""),
            ActionKind::Notify(NotifyTarget::Team(t)) => format!("notify team {t}"),
            ActionKind::Notify(NotifyTarget::User(u)) => format!("notify user {u}"),
            ActionKind::Notify(NotifyTarget::Owner) => "notify owner".to_owned(),
            ActionKind::SetStatus(status) => format!("set status {status}"),
        };
        match &action.comment {
            Some(c) if !c.is_empty() => out.push_str(&format!("  [{i}] {what} — {c}\n")),
            _ => out.push_str(&format!("  [{i}] {what}\n")),
        }
    }
    out
}

fn known<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.collect();
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(headers).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------
// Edits of the document (pure). Each returns one line saying what it did.

/// Inserts a copy of workflow `id` right after it, with `id = new_id`.
///
/// The copy keeps the original's keys, values, comments and layout, except
/// the comment block above the original's `[[workflow]]` header (often the
/// documentation of the whole section), which becomes one blank line.
/// Whether `new_id` is a well-formed id is the loader's to say.
pub fn clone_workflow(doc: &mut DocumentMut, id: &str, new_id: &str) -> Result<String, EditError> {
    let workflows = workflows(doc)?;
    let i = find(workflows, id)?;
    if workflows
        .iter()
        .any(|t| t.get("id").and_then(Item::as_str) == Some(new_id))
    {
        return Err(EditError::DuplicateId(new_id.to_owned()));
    }
    let mut copy = workflows
        .get(i)
        .cloned()
        .ok_or_else(|| unknown(id, workflows))?;
    let count = action_count(&copy);
    if let Some(Item::Value(v)) = copy.get_mut("id") {
        replace_keeping_decor(v, Value::from(new_id));
    }
    copy.decor_mut().set_prefix("\n");

    // Tables render in `position` order: give the copy (and its nested
    // tables, e.g. [[workflow.actions]]) the positions right after the
    // original's, and move every later table along.
    let mut positions = Vec::new();
    visit_tables(&mut copy, &mut |t| {
        if let Some(p) = header_position(t) {
            positions.push(p);
        }
    });
    positions.sort_unstable();
    if let Some(&last) = positions.last() {
        let shift = positions.len() as isize;
        visit_tables(doc.as_table_mut(), &mut |t| {
            if let Some(p) = header_position(t).filter(|p| *p > last) {
                t.set_position(Some(p + shift));
            }
        });
        let new: Vec<isize> = (1..=shift).map(|k| last + k).collect();
        assign_positions(&mut copy, &positions, &new);
    }
    workflows_mut(doc)?.insert(i + 1, copy);
    Ok(format!(
        "cloned workflow \"{id}\" as \"{new_id}\" ({count}), right after it"
    ))
}

/// Sets the `comment` of action `index` of workflow `id` (an empty `text`
/// removes it), keeping the layout of the action.
pub fn set_comment(
    doc: &mut DocumentMut,
    id: &str,
    index: usize,
    text: &str,
) -> Result<String, EditError> {
    if text.contains(['\n', '\r']) {
        return Err(EditError::MultiLineComment);
    }
    let workflow = workflow_mut(doc, id)?;
    let (what, old) = match actions_mut(workflow, id)? {
        Actions::Inline(a) => {
            check_index(id, index, a.len())?;
            let action = a
                .get_mut(index)
                .and_then(Value::as_inline_table_mut)
                .ok_or_else(|| not_a_table(id, index))?;
            let what = describe(action);
            (what, set_inline_comment(action, text))
        }
        Actions::Tables(a) => {
            check_index(id, index, a.len())?;
            let action = a.get_mut(index).ok_or_else(|| not_a_table(id, index))?;
            let what = describe(action);
            (what, set_table_comment(action, text))
        }
        Actions::None => return Err(bad_index(id, index, 0)),
    };
    let at = format!("workflow \"{id}\", action [{index}] ({what})");
    Ok(match (old, text.is_empty()) {
        (None, true) => format!("{at} has no comment"),
        (Some(_), true) => format!("{at}: comment removed"),
        (None, false) => format!("{at}: comment set to {text:?}"),
        (Some(old), false) => format!("{at}: comment set to {text:?} (was {old:?})"),
    })
}

/// Moves action `from` of workflow `id` to position `to` (the others keep
/// their order). An end-of-line comment moves with its action.
pub fn move_action(
    doc: &mut DocumentMut,
    id: &str,
    from: usize,
    to: usize,
) -> Result<String, EditError> {
    let workflow = workflow_mut(doc, id)?;
    let mut actions = actions_mut(workflow, id)?;
    let len = actions.len();
    check_index(id, from, len)?;
    check_index(id, to, len)?;
    let what = actions.describe(from);
    if from == to {
        return Ok(format!(
            "workflow \"{id}\", action [{from}] ({what}) is already at [{to}]"
        ));
    }
    let mut order: Vec<usize> = (0..len).collect();
    let moved = order.remove(from);
    order.insert(to, moved);
    actions.reorder(&order);
    Ok(format!(
        "workflow \"{id}\": moved action [{from}] ({what}) to [{to}]"
    ))
}

/// An action as the operator typed it: one inline table,
/// `{ send_email = "ticket_received" }`. What it holds is the loader's to
/// check.
fn parse_action(text: &str) -> Result<InlineTable, EditError> {
    let bad = || {
        EditError::Unsupported(format!(
            "{text:?} is not an action: write one inline table, e.g. \
             '{{ set_status = \"closed\" }}' or '{{ notify = {{ team = \"tier1\" }} }}'"
        ))
    };
    let doc: DocumentMut = format!("action = {}\n", text.trim())
        .parse()
        .map_err(|_| bad())?;
    let mut table = doc
        .get("action")
        .and_then(Item::as_value)
        .and_then(Value::as_inline_table)
        .cloned()
        .ok_or_else(bad)?;
    if doc.len() != 1 {
        return Err(bad());
    }
    table.decor_mut().clear();
    Ok(table)
}

/// Replaces action `index` of workflow `id` with `text` (an inline
/// table), keeping the comments around it and, for `[[workflow.actions]]`,
/// its place among the tables.
pub fn set_action(
    doc: &mut DocumentMut,
    id: &str,
    index: usize,
    text: &str,
) -> Result<String, EditError> {
    let new = parse_action(text)?;
    let workflow = workflow_mut(doc, id)?;
    let mut actions = actions_mut(workflow, id)?;
    check_index(id, index, actions.len())?;
    let old = actions.describe(index);
    match &mut actions {
        Actions::Inline(a) => {
            if let Some(v) = a.get_mut(index) {
                replace_keeping_decor(v, Value::InlineTable(new));
            }
        }
        Actions::Tables(a) => {
            if let Some(t) = a.get_mut(index) {
                let mut table = new.into_table();
                *table.decor_mut() = t.decor().clone();
                table.set_position(t.position());
                *t = table;
            }
        }
        Actions::None => {}
    }
    let now = actions.describe(index);
    Ok(format!(
        "workflow \"{id}\": action [{index}] was {old}, is now {now}"
    ))
}

/// Adds the action `text` (an inline table) to workflow `id`, at index `at`
/// (default: after the last), written like its neighbours.
pub fn add_action(
    doc: &mut DocumentMut,
    id: &str,
    text: &str,
    at: Option<usize>,
) -> Result<String, EditError> {
    let new = parse_action(text)?;
    let workflow = workflow_mut(doc, id)?;
    let len = actions_mut(workflow, id)?.len();
    let at = at.unwrap_or(len);
    if at > len {
        return Err(EditError::Unsupported(format!(
            "workflow \"{id}\" has {len} actions: --at is 0 to {len}"
        )));
    }
    let mut tables_at = None;
    match actions_mut(workflow, id)? {
        Actions::None => {
            let mut v = Value::InlineTable(new);
            v.decor_mut().set_prefix(" ");
            v.decor_mut().set_suffix(" ");
            let list = Value::Array(Array::from_iter([v]));
            workflow.insert("actions", toml_edit::value(list));
        }
        Actions::Inline(a) => {
            // The indentation of a neighbour, without its comment lines.
            let neighbour = a.get(at.min(len.saturating_sub(1)));
            let prefix = neighbour.map_or_else(String::new, |v| prefix_of(v, ""));
            let indent = match prefix.rsplit_once('\n') {
                Some((_, indent)) => format!("\n{indent}"),
                None if len == 0 => String::new(),
                None => " ".to_owned(),
            };
            let mut v = Value::InlineTable(new);
            v.decor_mut().set_prefix(indent);
            if at == len && len > 0 {
                // The space before `]` of a one-line array is the last
                // value's suffix: it moves to the new last value.
                if let Some(last) = a.get_mut(len - 1) {
                    let suffix = suffix_of(last, "");
                    last.decor_mut().set_suffix("");
                    v.decor_mut().set_suffix(suffix);
                }
            }
            a.insert_formatted(at, v);
        }
        Actions::Tables(a) => {
            // The place of the table it goes before (or right after the
            // last one).
            tables_at = match a.get(at) {
                Some(t) => header_position(t),
                None => a
                    .get(at.wrapping_sub(1))
                    .and_then(header_position)
                    .map(|p| p + 1),
            };
            let mut table = new.into_table();
            table.decor_mut().set_prefix("\n");
            a.insert(at, table);
        }
    }
    if let Some(target) = tables_at {
        // Move every table from there along, then give the new one the
        // place.
        visit_tables(doc.as_table_mut(), &mut |t| {
            if let Some(p) = header_position(t).filter(|p| *p >= target) {
                t.set_position(Some(p + 1));
            }
        });
        if let Ok(Actions::Tables(a)) = actions_mut(workflow_mut(doc, id)?, id) {
            if let Some(t) = a.get_mut(at) {
                t.set_position(Some(target));
            }
        }
    }
    let workflow = workflow_mut(doc, id)?;
    let what = actions_mut(workflow, id)?.describe(at);
    Ok(format!("workflow \"{id}\": added action [{at}] {what}"))
}

/// Turns workflow `id` on or off. Off writes `enabled = false` (after the
/// workflow's last key); on sets an `enabled` key that is there to `true`
/// and writes nothing when there is none (a workflow is on by default).
pub fn set_enabled(doc: &mut DocumentMut, id: &str, on: bool) -> Result<String, EditError> {
    let workflow = workflow_mut(doc, id)?;
    let now = workflow.get("enabled").and_then(Item::as_bool);
    let word = if on { "enabled" } else { "disabled" };
    if now.unwrap_or(true) == on {
        return Ok(format!("workflow \"{id}\" is already {word}"));
    }
    match workflow.get_mut("enabled") {
        Some(Item::Value(v)) => replace_keeping_decor(v, Value::from(on)),
        _ => {
            workflow.insert("enabled", toml_edit::value(on));
        }
    }
    let note = if on {
        ""
    } else {
        " (it runs nothing until `postdesk workflow enable`)"
    };
    Ok(format!("workflow \"{id}\" {word}{note}"))
}

/// Deletes workflow `id`: its table, the tables nested in it and the
/// comment lines above its header — except above the first workflow,
/// where they are the documentation of the whole section and pass to the
/// workflow that is first now.
pub fn delete_workflow(doc: &mut DocumentMut, id: &str) -> Result<String, EditError> {
    let workflows = workflows_mut(doc)?;
    let i = find(workflows, id)?;
    let count = workflows.get(i).map(action_count).unwrap_or_default();
    let section_doc = match workflows.get(i).and_then(|t| t.decor().prefix()) {
        Some(prefix) if i == 0 => prefix.as_str().map(str::to_owned),
        _ => None,
    };
    workflows.remove(i);
    if let (Some(prefix), Some(next)) = (section_doc, workflows.get_mut(0)) {
        next.decor_mut().set_prefix(prefix);
    }
    if workflows.is_empty() {
        doc.remove("workflow");
    }
    Ok(format!("deleted workflow \"{id}\" ({count})"))
}

/// Deletes action `index` of workflow `id` — and, with `and_following`,
/// every action after it. The comment lines above a deleted action and its
/// end-of-line comment go with it.
pub fn delete_actions(
    doc: &mut DocumentMut,
    id: &str,
    index: usize,
    and_following: bool,
) -> Result<String, EditError> {
    let workflow = workflow_mut(doc, id)?;
    let mut actions = actions_mut(workflow, id)?;
    let len = actions.len();
    check_index(id, index, len)?;
    let end = if and_following { len } else { index + 1 };
    let gone: Vec<String> = (index..end)
        .map(|i| format!("[{i}] {}", actions.describe(i)))
        .collect();
    let order: Vec<usize> = (0..len).filter(|i| !(index..end).contains(i)).collect();
    actions.reorder(&order);
    let noun = if gone.len() == 1 { "action" } else { "actions" };
    Ok(format!(
        "workflow \"{id}\": deleted {noun} {}",
        gone.join(", ")
    ))
}

// ---- finding things ----

fn workflows(doc: &DocumentMut) -> Result<&ArrayOfTables, EditError> {
    match doc.get("workflow") {
        None => Err(EditError::NoWorkflows),
        Some(Item::ArrayOfTables(a)) => Ok(a),
        Some(_) => Err(inline_workflows()),
    }
}

fn workflows_mut(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, EditError> {
    match doc.get_mut("workflow") {
        None => Err(EditError::NoWorkflows),
        Some(Item::ArrayOfTables(a)) => Ok(a),
        Some(_) => Err(inline_workflows()),
    }
}

fn inline_workflows() -> EditError {
    EditError::Unsupported(
        "the workflows are not written as [[workflow]] tables; this command edits only \
         [[workflow]] tables (edit the file by hand)"
            .to_owned(),
    )
}

fn find(workflows: &ArrayOfTables, id: &str) -> Result<usize, EditError> {
    workflows
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(id))
        .ok_or_else(|| unknown(id, workflows))
}

fn unknown(id: &str, workflows: &ArrayOfTables) -> EditError {
    EditError::UnknownWorkflow {
        id: id.to_owned(),
        known: known(
            workflows
                .iter()
                .filter_map(|t| t.get("id").and_then(Item::as_str)),
        ),
    }
}

fn workflow_mut<'a>(doc: &'a mut DocumentMut, id: &str) -> Result<&'a mut Table, EditError> {
    let workflows = workflows_mut(doc)?;
    let i = find(workflows, id)?;
    // `find` just found it.
    workflows.get_mut(i).ok_or(EditError::NoWorkflows)
}

fn check_index(id: &str, index: usize, len: usize) -> Result<(), EditError> {
    if index < len {
        Ok(())
    } else {
        Err(bad_index(id, index, len))
    }
}

fn bad_index(id: &str, index: usize, len: usize) -> EditError {
    EditError::BadIndex {
        id: id.to_owned(),
        index,
        len,
    }
}

fn not_a_table(id: &str, index: usize) -> EditError {
    EditError::Unsupported(format!(
        "action [{index}] of workflow \"{id}\" is not a table like {{ send_email = \"NAME\" }}"
    ))
}

/// The actions of one workflow, in either way of writing them.
enum Actions<'a> {
    /// `actions = [ { ... }, ... ]`
    Inline(&'a mut Array),
    /// `[[workflow.actions]]`
    Tables(&'a mut ArrayOfTables),
    /// No `actions` key.
    None,
}

fn actions_mut<'a>(workflow: &'a mut Table, id: &str) -> Result<Actions<'a>, EditError> {
    match workflow.get_mut("actions") {
        None | Some(Item::None) => Ok(Actions::None),
        Some(Item::Value(Value::Array(a))) => Ok(Actions::Inline(a)),
        Some(Item::ArrayOfTables(a)) => Ok(Actions::Tables(a)),
        Some(_) => Err(EditError::Unsupported(format!(
            "the actions of workflow \"{id}\" are neither an array nor [[workflow.actions]] \
             tables"
        ))),
    }
}

fn action_count(workflow: &Table) -> String {
    let n = match workflow.get("actions") {
        Some(Item::Value(Value::Array(a))) => a.len(),
        Some(Item::ArrayOfTables(a)) => a.len(),
        _ => 0,
    };
    if n == 1 {
        "1 action".to_owned()
    } else {
        format!("{n} actions")
    }
}

impl Actions<'_> {
    fn len(&self) -> usize {
        match self {
            Actions::Inline(a) => a.len(),
            Actions::Tables(a) => a.len(),
            Actions::None => 0,
        }
    }

    fn describe(&self, index: usize) -> String {
        let action: Option<&dyn TableLike> = match self {
            Actions::Inline(a) => a
                .get(index)
                .and_then(Value::as_inline_table)
                .map(|t| t as &dyn TableLike),
            Actions::Tables(a) => a.get(index).map(|t| t as &dyn TableLike),
            Actions::None => None,
        };
        action.map_or_else(|| "not a table".to_owned(), describe)
    }

    /// Keeps the actions at the old indexes `order`, in that order.
    fn reorder(&mut self, order: &[usize]) {
        match self {
            Actions::Inline(a) => reorder_array(a, order),
            Actions::Tables(a) => reorder_tables(a, order),
            Actions::None => {}
        }
    }
}

/// `send email "NAME"`, `notify team tier1`, as in `show`.
fn describe(action: &dyn TableLike) -> String {
    if let Some(name) = action.get("send_email").and_then(Item::as_str) {
        return format!("send email \"{name}\"");
    }
    if let Some(notify) = action.get("notify").and_then(Item::as_table_like) {
        if let Some(team) = notify.get("team").and_then(Item::as_str) {
            return format!("notify team {team}");
        }
        if let Some(user) = notify.get("user").and_then(Item::as_str) {
            return format!("notify user {user}");
        }
        if notify.get("owner").is_some() {
            return "notify owner".to_owned();
        }
    }
    if let Some(status) = action.get("set_status").and_then(Item::as_str) {
        return format!("set status {status}");
    }
    "an action".to_owned()
}

// ---- layout-keeping primitives ----

/// Replaces `v` by `new`, keeping the spaces and comments around it.
fn replace_keeping_decor(v: &mut Value, mut new: Value) {
    *new.decor_mut() = v.decor().clone();
    *v = new;
}

fn prefix_of(v: &Value, default: &str) -> String {
    v.decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or(default)
        .to_owned()
}

fn suffix_of(v: &Value, default: &str) -> String {
    v.decor()
        .suffix()
        .and_then(|p| p.as_str())
        .unwrap_or(default)
        .to_owned()
}

/// Sets or removes `comment` in an inline-table action; returns the old one.
fn set_inline_comment(action: &mut InlineTable, text: &str) -> Option<String> {
    let old = action
        .get("comment")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let is_last = |t: &InlineTable| t.iter().last().is_some_and(|(k, _)| k == "comment");
    if text.is_empty() {
        if action.contains_key("comment") {
            let was_last = is_last(action);
            if let Some(removed) = action.remove("comment") {
                // The spaces before `}` were the comment's: give them to the
                // new last value.
                if was_last && !action.trailing_comma() {
                    if let Some((_, last)) = action.iter_mut().last() {
                        last.decor_mut().set_suffix(suffix_of(&removed, " "));
                    }
                }
            }
        }
    } else if let Some(v) = action.get_mut("comment") {
        replace_keeping_decor(v, Value::from(text));
    } else {
        // Appended after the last key, in that key's style; the spaces
        // before `}` move to the new last value.
        let style = action.iter().last().map(|(k, v)| {
            let key = action.key(k).map(|k| k.leaf_decor().clone());
            (key, prefix_of(v, " "), suffix_of(v, " "))
        });
        let trailing_comma = action.trailing_comma();
        if !trailing_comma {
            if let Some((_, last)) = action.iter_mut().last() {
                last.decor_mut().set_suffix("");
            }
        }
        let mut value = Value::from(text);
        let mut key_decor = None;
        if let Some((key, prefix, suffix)) = style {
            value.decor_mut().set_prefix(prefix);
            value.decor_mut().set_suffix(if trailing_comma {
                String::new()
            } else {
                suffix
            });
            key_decor = key;
        }
        action.insert("comment", value);
        if let (Some(decor), Some(mut key)) = (key_decor, action.key_mut("comment")) {
            *key.leaf_decor_mut() = decor;
        }
    }
    old
}

/// Sets or removes `comment` in a `[[workflow.actions]]` table; returns the
/// old one.
fn set_table_comment(action: &mut Table, text: &str) -> Option<String> {
    let old = action
        .get("comment")
        .and_then(Item::as_str)
        .map(str::to_owned);
    if text.is_empty() {
        action.remove("comment");
    } else if let Some(Item::Value(v)) = action.get_mut("comment") {
        replace_keeping_decor(v, Value::from(text));
    } else {
        action.insert("comment", toml_edit::value(text));
    }
    old
}

/// Splits the whitespace between two array elements (or the brackets) into
/// the part that ends the line before (up to and including the first line
/// break: the previous element's end-of-line comment) and the part that
/// leads into the next element (its own comment lines and indentation).
fn split_gap(gap: &str) -> (String, String) {
    match gap.find('\n') {
        Some(i) => (gap[..=i].to_owned(), gap[i + 1..].to_owned()),
        None => (gap.to_owned(), String::new()),
    }
}

/// Rebuilds array `a` with the old elements at `order`, in that order. Each
/// element travels with the comment lines above it and its end-of-line
/// comment; the text after `[` and before `]` stays where it is.
fn reorder_array(a: &mut Array, order: &[usize]) {
    let n = a.len();
    let comma = a.trailing_comma();
    let mut values: Vec<Value> = Vec::with_capacity(n);
    while !a.is_empty() {
        values.push(a.remove(0));
    }
    // gaps[k]: before element k; gaps[n]: after the last one, up to `]`.
    let mut gaps: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(k, v)| prefix_of(v, if k == 0 { "" } else { " " }))
        .collect();
    let mut closing_gap = String::new();
    if !comma {
        if let Some(last) = values.last_mut() {
            // Without a trailing comma the space before `]` is the last
            // value's suffix: it belongs to the array's end.
            closing_gap.push_str(&suffix_of(last, ""));
            last.decor_mut().set_suffix("");
        }
    }
    closing_gap.push_str(a.trailing().as_str().unwrap_or(""));
    gaps.push(closing_gap);

    let split: Vec<(String, String)> = gaps.iter().map(|g| split_gap(g)).collect();
    let opening = split.first().map(|s| s.0.clone()).unwrap_or_default();
    let closing = split.last().map(|s| s.1.clone()).unwrap_or_default();
    let lead = |k: usize| split.get(k).map(|s| s.1.clone()).unwrap_or_default();
    let eol = |k: usize| split.get(k + 1).map(|s| s.0.clone()).unwrap_or_default();

    let mut before = opening.clone();
    for &k in order {
        let Some(v) = values.get(k) else { continue };
        let mut v = v.clone();
        v.decor_mut().set_prefix(format!("{before}{}", lead(k)));
        a.push_formatted(v);
        before = eol(k);
    }
    let end = if order.is_empty() {
        format!("{opening}{closing}")
    } else {
        format!("{before}{closing}")
    };
    if a.is_empty() {
        a.set_trailing_comma(false);
        a.set_trailing(if end.contains('#') {
            end
        } else {
            String::new()
        });
    } else if comma {
        a.set_trailing(end);
    } else {
        a.set_trailing("");
        if let Some(last) = a.get_mut(a.len() - 1) {
            last.decor_mut().set_suffix(end);
        }
    }
}

/// Rebuilds `[[workflow.actions]]` tables with the old tables at `order`.
/// Tables render in `position` order, so the kept tables are given the
/// kept positions, in the new order.
fn reorder_tables(a: &mut ArrayOfTables, order: &[usize]) {
    let mut tables: Vec<Table> = Vec::with_capacity(a.len());
    while !a.is_empty() {
        tables.push(a.remove(0));
    }
    let mut kept: Vec<Table> = order
        .iter()
        .filter_map(|&k| tables.get(k).cloned())
        .collect();
    let mut slots = Vec::new();
    let mut olds = Vec::new();
    for t in &mut kept {
        let mut mine = Vec::new();
        visit_tables(t, &mut |t| {
            if let Some(p) = header_position(t) {
                mine.push(p);
            }
        });
        mine.sort_unstable();
        slots.extend(mine.iter().copied());
        olds.push(mine);
    }
    slots.sort_unstable();
    let mut next = slots.into_iter();
    for (t, old) in kept.iter_mut().zip(&olds) {
        let new: Vec<isize> = next.by_ref().take(old.len()).collect();
        assign_positions(t, old, &new);
    }
    for t in kept {
        a.push(t);
    }
}

/// The position of a table that renders with a header of its own.
fn header_position(t: &Table) -> Option<isize> {
    if t.is_dotted() {
        None
    } else {
        t.position()
    }
}

/// Gives the tables of `t` (itself and nested) whose position is `old[i]`
/// the position `new[i]`.
fn assign_positions(t: &mut Table, old: &[isize], new: &[isize]) {
    visit_tables(t, &mut |t| {
        if let Some(p) = header_position(t) {
            if let Some(i) = old.iter().position(|o| *o == p) {
                if let Some(&n) = new.get(i) {
                    t.set_position(Some(n));
                }
            }
        }
    });
}

/// Calls `f` on `t` and every table nested in it (arrays of tables
/// included), in document order of the keys.
fn visit_tables(t: &mut Table, f: &mut dyn FnMut(&mut Table)) {
    f(t);
    for (_, item) in t.iter_mut() {
        match item {
            Item::Table(child) => visit_tables(child, f),
            Item::ArrayOfTables(a) => {
                for child in a.iter_mut() {
                    visit_tables(child, f);
                }
            }
            _ => {}
        }
    }
}

pub mod trigger;

#[cfg(test)]
mod tests;
