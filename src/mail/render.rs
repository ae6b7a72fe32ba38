//! Rendering: the template folder, compiled once, and the variables a
//! template sees (SPEC §6).
//!
//! PURE, except that [`Templates::load`] reads the folder. No clock, no
//! network: [`Templates::render`] is a function of the compiled templates
//! and a [`Vars`].
//!
//! Templates are `NAME.subject.hbs`, `NAME.text.hbs` and an optional
//! `NAME.html.hbs`. Subject and text are plain text and are never
//! HTML-escaped (`{{x}}` and `{{{x}}}` mean the same there); the HTML part is
//! escaped as usual. Every registry runs in handlebars' *strict mode*, so a
//! template that names a variable that does not exist fails — and
//! [`Templates::check`] makes that happen at load (`postdesk check`), not
//! when a customer's email is due.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Handlebars, PathSeg, RenderErrorReason, Template};
use serde::Serialize;

use super::{Branding, Source};
use crate::ingest::TicketId;
use crate::wording::{io_reason, lowercase_first};

/// The default footer, used when branding is enabled and `branding.text` is
/// not set.
pub const DEFAULT_FOOTER: &str = "Sent by postdesk — email ticketing";

/// Everything a template sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vars {
    pub ticket: TicketVars,
    pub contact: ContactVars,
    /// The latest inbound message on the ticket; `None` when there is none
    /// (templates guard it with `{{#if message}}`).
    pub message: Option<MessageVars>,
    pub channel: ChannelVars,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketVars {
    pub id: TicketId,
    pub subject: String,
    /// The status id, e.g. `waiting_on_us`.
    pub status: String,
    /// The status' display name, e.g. `Waiting on us`.
    pub status_name: String,
    /// The pipeline id.
    pub pipeline: String,
    /// The owner's user id, if the ticket is assigned.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactVars {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageVars {
    /// The `From` header as received, e.g. `Jane Doe <jane@example.com>`.
    pub from: String,
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The body without quoted history and signature (what the sender
    /// newly wrote; [`crate::ingest::quote`]).
    pub new_text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelVars {
    pub id: String,
    /// The channel address mail came in on (without a plus part).
    pub address: String,
    pub pipeline: String,
    pub source: Source,
}

impl Vars {
    /// A complete example, every optional value present. [`Templates::check`]
    /// renders every template with it (and with [`Vars::sample_minimal`]);
    /// tests use it as a starting point.
    pub fn sample() -> Vars {
        Vars {
            ticket: TicketVars {
                id: TicketId(42),
                subject: "Printer on fire".to_owned(),
                status: "new".to_owned(),
                status_name: "New".to_owned(),
                pipeline: "support".to_owned(),
                owner: Some("alice".to_owned()),
            },
            contact: ContactVars {
                email: "jane@example.com".to_owned(),
                name: Some("Jane Doe".to_owned()),
            },
            message: Some(MessageVars {
                from: "Jane Doe <jane@example.com>".to_owned(),
                subject: "Printer on fire".to_owned(),
                text: "Hello,\n\nthe printer on floor 3 is on fire.\n\nJane\n".to_owned(),
                new_text: "Hello,\n\nthe printer on floor 3 is on fire.\n\nJane".to_owned(),
            }),
            channel: ChannelVars {
                id: "support".to_owned(),
                address: "support@acme.example".to_owned(),
                pipeline: "support".to_owned(),
                source: Source::Email,
            },
        }
    }

    /// [`Vars::sample`] with every optional value absent: no inbound
    /// message, no owner, no contact name.
    pub fn sample_minimal() -> Vars {
        let mut vars = Vars::sample();
        vars.message = None;
        vars.ticket.owner = None;
        vars.contact.name = None;
        vars
    }
}

/// One rendered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, trimmed: line breaks and the blanks around them become one
    /// space. The subject tag is not applied (see `compose::with_subject_tag`).
    pub subject: String,
    pub text: String,
    /// Present when the template has a `NAME.html.hbs`.
    pub html: Option<String>,
}

/// Something wrong with a template file, at a position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// The template's path: the folder given to [`Templates::load`] joined
    /// with the file name.
    pub file: PathBuf,
    /// 1-based; 1 when the position is not known.
    pub line: usize,
    /// 1-based, in characters; 1 when the position is not known.
    pub col: usize,
    /// A lowercase phrase, e.g. `unknown variable "ticket.titel" (known: ...)`.
    pub message: String,
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No complete template (subject and text) of that name was loaded.
    #[error("unknown template \"{0}\"")]
    UnknownTemplate(String),
    /// Rendering failed, e.g. a variable that [`Templates::check`] could not
    /// reach with its sample values.
    #[error("{0}")]
    Failed(TemplateProblem),
}

/// The parts of a template, in the order they are checked and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }

    /// `NAME.subject.hbs` → (`NAME`, Subject).
    fn parse_file_name(file_name: &str) -> Option<(&str, Part)> {
        let stem = file_name.strip_suffix(".hbs")?;
        let (name, part) = stem.rsplit_once('.')?;
        let part = Part::ALL.into_iter().find(|p| p.as_str() == part)?;
        (!name.is_empty()).then_some((name, part))
    }
}

/// The compiled template folder. Cheap to share: put it in an `Arc`
/// (`Config::templates` does).
pub struct Templates {
    dir: PathBuf,
    /// Subject and text parts, registered as `NAME.subject` / `NAME.text`;
    /// strict, no escaping.
    plain: Handlebars<'static>,
    /// HTML parts, registered as `NAME.html`; strict, HTML-escaped.
    html: Handlebars<'static>,
    /// Every template name seen, with the parts it has.
    names: BTreeMap<String, BTreeSet<Part>>,
    /// Templates that may show `message.new_text`: a part names it, or
    /// calls a partial (which might).
    new_text: BTreeSet<String>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The compiled ASTs would drown a `Config` debug print.
        let names: Vec<String> = self
            .names
            .iter()
            .map(|(name, parts)| {
                let parts: Vec<&str> = parts.iter().map(|p| p.as_str()).collect();
                format!("{name}.{{{}}}", parts.join(","))
            })
            .collect();
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field("names", &names)
            .finish()
    }
}

impl Default for Templates {
    /// No templates at all; `has` is false for every name.
    fn default() -> Templates {
        Templates::empty(PathBuf::new())
    }
}

impl Templates {
    fn empty(dir: PathBuf) -> Templates {
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        Templates {
            dir,
            plain,
            html,
            names: BTreeMap::new(),
            new_text: BTreeSet::new(),
        }
    }

    /// Reads `dir` and compiles every `NAME.subject.hbs`, `NAME.text.hbs`
    /// and `NAME.html.hbs` in it (other files are ignored). Any unreadable
    /// or invalid template is a problem; all are reported at once.
    ///
    /// This does not run [`Templates::check`]: call it too (config loading
    /// does both).
    pub fn load(dir: &Path) -> Result<Templates, Vec<TemplateProblem>> {
        let problem = |file: PathBuf, message: String| TemplateProblem {
            file,
            line: 1,
            col: 1,
            message,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![problem(
                dir.to_path_buf(),
                format!(
                    "cannot read templates folder: {}",
                    lowercase_first(&io_reason(&e))
                ),
            )]
        })?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| Part::parse_file_name(name).is_some())
            .collect();
        names.sort();
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for name in names {
            match std::fs::read_to_string(dir.join(&name)) {
                Ok(source) => sources.push((name, source)),
                Err(e) => problems.push(problem(
                    dir.join(&name),
                    format!("cannot read template: {}", lowercase_first(&io_reason(&e))),
                )),
            }
        }
        match Templates::from_sources(dir, sources) {
            Ok(templates) if problems.is_empty() => Ok(templates),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                problems.sort_by(|a, b| a.file.cmp(&b.file));
                Err(problems)
            }
        }
    }

    /// Compiles templates already read: `(file name, source)` pairs, e.g.
    /// `("ticket_received.text.hbs", "...")`. Files that are not
    /// `NAME.{subject,text,html}.hbs` are ignored. `dir` only names the files
    /// in problems.
    pub fn from_sources(
        dir: &Path,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Templates, Vec<TemplateProblem>> {
        let mut templates = Templates::empty(dir.to_path_buf());
        let mut problems = Vec::new();
        for (file_name, source) in files {
            let Some((name, part)) = Part::parse_file_name(&file_name) else {
                continue;
            };
            let key = format!("{name}.{}", part.as_str());
            let registry = match part {
                Part::Html => &mut templates.html,
                Part::Subject | Part::Text => &mut templates.plain,
            };
            match registry.register_template_string(&key, &source) {
                Ok(()) => {
                    if may_show_new_text(&source) {
                        templates.new_text.insert(name.to_owned());
                    }
                    templates
                        .names
                        .entry(name.to_owned())
                        .or_default()
                        .insert(part);
                }
                Err(e) => {
                    let (line, col) = e.pos().unwrap_or((1, 1));
                    problems.push(TemplateProblem {
                        file: dir.join(&file_name),
                        line,
                        col,
                        message: format!("invalid template: {}", e.reason()),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(templates)
        } else {
            Err(problems)
        }
    }

    /// The folder the templates were loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `name` has both a subject and a text part.
    pub fn has(&self, name: &str) -> bool {
        self.names
            .get(name)
            .is_some_and(|parts| parts.contains(&Part::Subject) && parts.contains(&Part::Text))
    }

    /// Whether template `name` may show `message.new_text` — when it does
    /// not, the caller need not work it out ([`crate::ingest::quote`] is
    /// the costliest variable).
    pub fn uses_new_text(&self, name: &str) -> bool {
        self.new_text.contains(name)
    }

    /// The names that [`Templates::has`], sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names
            .keys()
            .map(String::as_str)
            .filter(|name| self.has(name))
    }

    /// Renders template `name` with `vars`.
    ///
    /// After a clean [`Templates::check`] this fails only for a name that
    /// [`Templates::has`] not, or for a variable that no sample could reach
    /// (inside `#each`/`#with`, or behind a condition on a value neither
    /// sample has).
    pub fn render(&self, name: &str, vars: &Vars) -> Result<Rendered, RenderError> {
        if !self.has(name) {
            return Err(RenderError::UnknownTemplate(name.to_owned()));
        }
        let context = context(vars).map_err(|e| {
            RenderError::Failed(self.problem(name, Part::Subject, &e, vars.message.is_some()))
        })?;
        let part = |part: Part| {
            self.registry(part)
                .render_with_context(&self.key(name, part), &context)
                .map_err(|e| {
                    RenderError::Failed(self.problem(name, part, &e, vars.message.is_some()))
                })
        };
        let subject = one_line(&part(Part::Subject)?);
        let text = part(Part::Text)?;
        let html = if self.has_part(name, Part::Html) {
            Some(part(Part::Html)?)
        } else {
            None
        };
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    /// Finds now what rendering could run into later. Each part of each
    /// template is rendered with [`Vars::sample`] and with
    /// [`Vars::sample_minimal`] (no message, no owner, no contact name), and
    /// every variable a template names must exist — also in branches neither
    /// sample takes, unless inside `#each`/`#with` (whose context is not
    /// known before rendering).
    ///
    /// Also reports a `NAME.html.hbs` without the subject and text to go
    /// with it. Sorted by file, then position; no duplicates.
    pub fn check(&self) -> Vec<TemplateProblem> {
        let known = Known::from_vars(&Vars::sample());
        let samples = [Vars::sample(), Vars::sample_minimal()];
        let mut problems: Vec<TemplateProblem> = Vec::new();
        for (name, parts) in &self.names {
            if parts.contains(&Part::Html) && !self.has(name) {
                let missing: Vec<String> = [Part::Subject, Part::Text]
                    .into_iter()
                    .filter(|p| !parts.contains(p))
                    .map(|p| format!("{name}.{}.hbs", p.as_str()))
                    .collect();
                problems.push(TemplateProblem {
                    file: self.file(name, Part::Html),
                    line: 1,
                    col: 1,
                    message: format!(
                        "html template without its plain-text parts: {} not found",
                        missing.join(" and ")
                    ),
                });
            }
            for &part in parts {
                let key = self.key(name, part);
                let file = self.file(name, part);
                if let Some(template) = self.registry(part).get_template(&key) {
                    Walk {
                        known: &known,
                        file: &file,
                        problems: &mut problems,
                    }
                    .template(template, true);
                }
                for vars in &samples {
                    let rendered = context(vars)
                        .and_then(|c| self.registry(part).render_with_context(&key, &c));
                    let Err(e) = rendered else { continue };
                    let problem = self.problem(name, part, &e, vars.message.is_some());
                    // The static pass knows the context and says it better.
                    let seen = problems.iter().any(|p| {
                        (&p.file, p.line, p.col) == (&problem.file, problem.line, problem.col)
                    });
                    if !seen {
                        problems.push(problem);
                    }
                }
            }
        }
        problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        problems.dedup();
        problems
    }

    fn has_part(&self, name: &str, part: Part) -> bool {
        self.names.get(name).is_some_and(|p| p.contains(&part))
    }

    fn registry(&self, part: Part) -> &Handlebars<'static> {
        match part {
            Part::Html => &self.html,
            Part::Subject | Part::Text => &self.plain,
        }
    }

    fn key(&self, name: &str, part: Part) -> String {
        format!("{name}.{}", part.as_str())
    }

    fn file(&self, name: &str, part: Part) -> PathBuf {
        self.dir.join(format!("{name}.{}.hbs", part.as_str()))
    }

    /// A handlebars render error as a problem in the template's file.
    fn problem(
        &self,
        name: &str,
        part: Part,
        e: &handlebars::RenderError,
        has_message: bool,
    ) -> TemplateProblem {
        let message = match e.reason() {
            RenderErrorReason::MissingVariable(Some(path)) => {
                Known::from_vars(&Vars::sample()).missing(path, has_message)
            }
            RenderErrorReason::MissingVariable(None) => "unknown variable".to_owned(),
            other => format!(
                "cannot render template: {}",
                lowercase_first(&other.to_string())
            ),
        };
        TemplateProblem {
            file: self.file(name, part),
            line: e.line_no.unwrap_or(1),
            col: e.column_no.unwrap_or(1),
            message,
        }
    }
}

fn context(vars: &Vars) -> Result<handlebars::Context, handlebars::RenderError> {
    handlebars::Context::wraps(vars)
}

/// The footer appended to automatic emails: `None` when branding is
/// disabled (or its text is blank), the operator's `branding.text` when set,
/// else [`DEFAULT_FOOTER`].
pub fn footer(branding: &Branding) -> Option<String> {
    if !branding.enabled {
        return None;
    }
    match &branding.text {
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(text.trim_end().to_owned()),
        None => Some(DEFAULT_FOOTER.to_owned()),
    }
}

/// A subject on one line: each line trimmed, blank lines dropped, the rest
/// joined with one space; any other control character becomes a space.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The variables that exist: each root (`ticket`, ...) and its fields, read
/// off a serialized [`Vars::sample`] so that they can never drift from the
/// structs.
struct Known {
    roots: BTreeMap<String, Vec<String>>,
}

impl Known {
    fn from_vars(vars: &Vars) -> Known {
        let mut roots = BTreeMap::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(vars) {
            for (root, value) in map {
                let fields = match value {
                    serde_json::Value::Object(fields) => fields.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                roots.insert(root, fields);
            }
        }
        Known { roots }
    }

    /// Why the variable `segs` (e.g. `["ticket", "titel"]`) does not exist,
    /// or `None` if it does.
    fn unknown(&self, segs: &[&str]) -> Option<String> {
        let path = segs.join(".");
        let (root, rest) = segs.split_first()?;
        let Some(fields) = self.roots.get(*root) else {
            let known: Vec<&str> = self.roots.keys().map(String::as_str).collect();
            return Some(format!(
                "unknown variable \"{path}\" (known: {})",
                known.join(", ")
            ));
        };
        match rest {
            [] => None,
            [field] if fields.iter().any(|f| f == field) => None,
            [field, ..] if fields.iter().any(|f| f == field) => Some(format!(
                "unknown variable \"{path}\": {root}.{field} has no fields"
            )),
            _ => {
                let known: Vec<String> = fields.iter().map(|f| format!("{root}.{f}")).collect();
                Some(format!(
                    "unknown variable \"{path}\" (known: {})",
                    known.join(", ")
                ))
            }
        }
    }

    /// The message for a variable that strict mode found missing while
    /// rendering. `path` is as written (`ticket.titel`, `this.x`, `../y`).
    fn missing(&self, path: &str, has_message: bool) -> String {
        let plain = path
            .strip_prefix("@root.")
            .or_else(|| path.strip_prefix("this."))
            .unwrap_or(path);
        if plain.starts_with("..") || plain.starts_with('@') {
            return format!("unknown variable \"{path}\"");
        }
        let segs: Vec<&str> = plain
            .split(['.', '/'])
            .map(|s| s.trim_matches(['[', ']']))
            .collect();
        if let Some(message) = self.unknown(&segs) {
            return message;
        }
        if segs.first() == Some(&"message") && !has_message {
            return format!(
                "\"{path}\" is not set when the ticket has no inbound message: \
                 put it inside {{{{#if message}}}}...{{{{/if}}}}"
            );
        }
        format!("\"{path}\" is not set or cannot be used here")
    }
}

/// Built-in helpers that `{{name}}` would call rather than look up.
const BUILTIN_HELPERS: [&str; 17] = [
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// A static pass over a compiled template: every variable named where the
/// context is the [`Vars`] root (outside `#each`/`#with`) must exist, in
/// every branch — rendering alone never enters the branch a sample skips.
struct Walk<'a> {
    known: &'a Known,
    file: &'a Path,
    problems: &'a mut Vec<TemplateProblem>,
}

impl Walk<'_> {
    /// `at_root`: the context is the `Vars` root here.
    fn template(&mut self, template: &Template, at_root: bool) {
        for (i, element) in template.elements.iter().enumerate() {
            let pos = template.mapping.get(i).map_or((1, 1), |m| (m.0, m.1));
            match element {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.helper(h, pos, at_root);
                }
                TemplateElement::HelperBlock(h) => {
                    self.helper(h, pos, at_root);
                    // `if`/`unless` keep the context; every other block
                    // (`each`, `with`, `{{#ticket}}`) changes it.
                    let keeps = matches!(&h.name, Parameter::Name(n) if n == "if" || n == "unless");
                    if let Some(inner) = &h.template {
                        self.template(inner, at_root && keeps);
                    }
                    // An `{{else}}` renders in the outer context.
                    if let Some(inverse) = &h.inverse {
                        self.template(inverse, at_root);
                    }
                }
                _ => {}
            }
        }
    }

    /// The helper's name when it is a variable (`{{ticket.id}}`), its
    /// parameters and its hash values.
    fn helper(&mut self, h: &HelperTemplate, pos: (usize, usize), at_root: bool) {
        if let Parameter::Path(path) = &h.name {
            let is_helper_call = h.params.is_empty()
                && matches!(path, handlebars::Path::Relative((segs, _))
                    if matches!(segs.as_slice(), [PathSeg::Named(n)] if BUILTIN_HELPERS.contains(&n.as_str())));
            if !is_helper_call {
                self.path(path, pos, at_root);
            }
        }
        for param in h.params.iter().chain(h.hash.values()) {
            self.param(param, pos, at_root);
        }
    }

    fn param(&mut self, param: &Parameter, pos: (usize, usize), at_root: bool) {
        match param {
            Parameter::Path(path) => self.path(path, pos, at_root),
            Parameter::Subexpression(sub) => {
                if let TemplateElement::Expression(h) | TemplateElement::HelperBlock(h) =
                    sub.as_element()
                {
                    self.helper(h, pos, at_root);
                }
            }
            _ => {}
        }
    }

    fn path(&mut self, path: &handlebars::Path, pos: (usize, usize), at_root: bool) {
        let handlebars::Path::Relative((segs, raw)) = path else {
            return; // a local like @index
        };
        let mut names = Vec::new();
        let mut ruled = 0;
        for seg in segs {
            match seg {
                PathSeg::Named(name) => names.push(name.as_str()),
                _ => ruled += 1,
            }
        }
        // `@root.x` is checkable anywhere; `../x` and friends nowhere.
        let checkable = match ruled {
            0 => at_root,
            1 => raw.starts_with("@root"),
            _ => false,
        };
        if !checkable || names.is_empty() {
            return;
        }
        if let Some(message) = self.known.unknown(&names) {
            self.problems.push(TemplateProblem {
                file: self.file.to_path_buf(),
                line: pos.0,
                col: pos.1,
                message,
            });
        }
    }
}

/// Whether a template's source may show `message.new_text`: it names
/// it, or calls a partial (`{{> x}}`, `{{#> x}}`, with `~` or not), which
/// might. An over-approximation: a comment naming it counts too.
fn may_show_new_text(source: &str) -> bool {
    source.contains("new_text")
        || source.match_indices("{{").any(|(at, _)| {
            source[at + 2..]
                .trim_start_matches(['~', '#'])
                .starts_with('>')
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/t")
    }

    /// Templates from `(file name, source)` pairs; panics on compile errors.
    fn templates(files: &[(&str, &str)]) -> Templates {
        let files = files
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()));
        Templates::from_sources(&dir(), files).unwrap()
    }

    /// `check()` as `FILE:LINE:COL: message` lines, the folder left out.
    fn check(files: &[(&str, &str)]) -> Vec<String> {
        templates(files)
            .check()
            .iter()
            .map(|p| p.to_string().replace("/t/", ""))
            .collect()
    }

    fn shipped() -> Templates {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        Templates::load(&dir).unwrap()
    }

    #[test]
    fn shipped_templates_are_complete_and_check_clean() {
        let t = shipped();
        let names: Vec<&str> = t.names().collect();
        assert_eq!(names, ["notification", "ticket_closed", "ticket_received"]);
        assert_eq!(t.check(), []);
    }

    #[test]
    fn shipped_ticket_received_renders() {
        let r = shipped()
            .render("ticket_received", &Vars::sample())
            .unwrap();
        assert_eq!(r.subject, "We received your request: Printer on fire");
        assert!(r.text.starts_with("Hello Jane Doe,\n"), "{}", r.text);
        assert!(r.text.contains("ticket #42:\n\n    Printer on fire\n"));
        assert_eq!(r.html, None);
        let r = shipped()
            .render("ticket_received", &Vars::sample_minimal())
            .unwrap();
        assert!(r.text.starts_with("Hello,\n"), "{}", r.text);
    }

    #[test]
    fn shipped_notification_renders_with_and_without_message() {
        let t = shipped();
        let full = t.render("notification", &Vars::sample()).unwrap();
        assert!(full.text.contains("Owner:   alice\n"), "{}", full.text);
        assert!(full.text.contains("the printer on floor 3 is on fire."));
        let minimal = t.render("notification", &Vars::sample_minimal()).unwrap();
        assert!(minimal.text.contains("Owner:   unassigned\n"));
        assert!(!minimal.text.contains("Latest message"));
    }

    #[test]
    fn subject_and_text_are_not_escaped_html_is() {
        let t = templates(&[
            ("x.subject.hbs", "{{ticket.subject}}"),
            ("x.text.hbs", "{{ticket.subject}} {{{ticket.subject}}}"),
            ("x.html.hbs", "<p>{{ticket.subject}}</p>"),
        ]);
        let mut vars = Vars::sample();
        vars.ticket.subject = "<b>Tom & \"Jerry\"</b>".to_owned();
        let r = t.render("x", &vars).unwrap();
        assert_eq!(r.subject, "<b>Tom & \"Jerry\"</b>");
        assert_eq!(r.text, "<b>Tom & \"Jerry\"</b> <b>Tom & \"Jerry\"</b>");
        assert_eq!(
            r.html.as_deref(),
            Some("<p>&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;</p>")
        );
    }

    #[test]
    fn subject_is_one_trimmed_line() {
        let t = templates(&[
            (
                "x.subject.hbs",
                "  Re:\r\n  {{ticket.subject}}  \n\n\tdone\n",
            ),
            ("x.text.hbs", ""),
        ]);
        let mut vars = Vars::sample();
        vars.ticket.subject = "two\nlines".to_owned();
        assert_eq!(t.render("x", &vars).unwrap().subject, "Re: two lines done");
    }

    #[test]
    fn unknown_variable_is_reported_with_its_position() {
        assert_eq!(
            check(&[
                ("x.subject.hbs", "{{ticket.subject}}"),
                ("x.text.hbs", "Hello,\n  see {{ticket.titel}}\n"),
            ]),
            [
                "x.text.hbs:2:7: unknown variable \"ticket.titel\" (known: ticket.id, \
                 ticket.owner, ticket.pipeline, ticket.status, ticket.status_name, ticket.subject)"
            ]
        );
    }

    #[test]
    fn unknown_roots_and_fields_of_scalars() {
        assert_eq!(
            check(&[
                ("x.subject.hbs", "{{tiket.id}}"),
                ("x.text.hbs", "{{ticket.id.x}} {{nope}}"),
            ]),
            [
                "x.subject.hbs:1:1: unknown variable \"tiket.id\" (known: channel, contact, \
                 message, ticket)",
                "x.text.hbs:1:1: unknown variable \"ticket.id.x\": ticket.id has no fields",
                "x.text.hbs:1:17: unknown variable \"nope\" (known: channel, contact, message, \
                 ticket)",
            ]
        );
    }

    #[test]
    fn branches_no_sample_takes_are_checked_too() {
        let problems = check(&[
            ("x.subject.hbs", "{{#if ticket.ownr}}mine{{/if}}"),
            (
                "x.text.hbs",
                "{{#if (eq ticket.status \"closed\")}}\n{{contact.nmae}}\n{{else if message}}ok{{/if}}",
            ),
        ]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("x.subject.hbs:1:1: unknown variable \"ticket.ownr\""));
        assert!(problems[1].starts_with("x.text.hbs:2:1: unknown variable \"contact.nmae\""));
    }

    #[test]
    fn message_must_be_guarded() {
        assert_eq!(
            check(&[
                ("x.subject.hbs", "{{message.subject}}"),
                ("x.text.hbs", "{{#if message}}{{message.text}}{{/if}}"),
            ]),
            [
                "x.subject.hbs:1:1: \"message.subject\" is not set when the ticket has no \
                 inbound message: put it inside {{#if message}}...{{/if}}"
            ]
        );
    }

    #[test]
    fn blocks_that_change_the_context_are_left_to_rendering() {
        // Inside #with the context is `ticket`: no false alarm...
        assert_eq!(
            check(&[
                (
                    "x.subject.hbs",
                    "{{#with ticket}}{{subject}} {{@root.channel.id}}{{/with}}"
                ),
                ("x.text.hbs", "{{#each ticket}}{{@key}}{{/each}}"),
            ]),
            Vec::<String>::new()
        );
        // ...and rendering still catches what is wrong there.
        let problems = check(&[
            ("x.subject.hbs", "{{#with ticket}}{{titel}}{{/with}}"),
            (
                "x.text.hbs",
                "{{#with ticket}}{{@root.ticket.titel}}{{/with}}",
            ),
        ]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("x.subject.hbs:1:17: unknown variable \"titel\""));
        assert!(problems[1].starts_with("x.text.hbs:1:17: unknown variable \"ticket.titel\""));
    }

    #[test]
    fn unknown_helpers_and_partials_are_problems() {
        let problems = check(&[
            ("x.subject.hbs", "{{shout ticket.subject}}"),
            ("x.text.hbs", "{{> footer}}"),
        ]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("x.subject.hbs:1:1: cannot render template: helper not found"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("x.text.hbs:1:1: cannot render template: partial not found"),
            "{problems:#?}"
        );
    }

    #[test]
    fn html_needs_its_plain_parts() {
        let t = templates(&[("x.html.hbs", "<p>{{ticket.id}}</p>")]);
        assert!(!t.has("x"));
        assert_eq!(
            t.render("x", &Vars::sample()),
            Err(RenderError::UnknownTemplate("x".into()))
        );
        assert_eq!(
            check(&[("x.html.hbs", "<p>{{ticket.id}}</p>")]),
            [
                "x.html.hbs:1:1: html template without its plain-text parts: x.subject.hbs and \
              x.text.hbs not found"
            ]
        );
    }

    #[test]
    fn render_errors_name_the_file() {
        let t = templates(&[
            ("x.subject.hbs", "ok"),
            ("x.text.hbs", "Hi {{message.text}}"),
        ]);
        let err = t.render("x", &Vars::sample_minimal()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/t/x.text.hbs:1:4: \"message.text\" is not set when the ticket has no inbound \
             message: put it inside {{#if message}}...{{/if}}"
        );
        assert_eq!(
            t.render("y", &Vars::sample()),
            Err(RenderError::UnknownTemplate("y".into()))
        );
    }

    #[test]
    fn compile_errors_are_problems_with_positions() {
        let files = [
            ("a.text.hbs".to_owned(), "ok\n{{#if x}}\n".to_owned()),
            ("b.subject.hbs".to_owned(), "{{ticket.id".to_owned()),
            ("README.hbs".to_owned(), "{{".to_owned()),
        ];
        let problems = Templates::from_sources(&dir(), files).unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].starts_with("/t/a.text.hbs:"), "{lines:#?}");
        assert!(lines[0].contains(": invalid template: "), "{lines:#?}");
        assert!(lines[1].starts_with("/t/b.subject.hbs:1:"), "{lines:#?}");
    }

    #[test]
    fn load_reads_the_parts_and_ignores_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.subject.hbs"), "S {{ticket.id}}").unwrap();
        std::fs::write(tmp.path().join("a.text.hbs"), "T").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "{{").unwrap();
        std::fs::write(tmp.path().join("partial.hbs"), "{{").unwrap();
        std::fs::create_dir(tmp.path().join("b.text.hbs")).unwrap();
        let t = Templates::load(tmp.path()).unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["a"]);
        assert_eq!(t.render("a", &Vars::sample()).unwrap().subject, "S 42");

        let missing = tmp.path().join("nowhere");
        let problems = Templates::load(&missing).unwrap_err();
        assert_eq!(problems[0].file, missing);
        assert!(problems[0]
            .message
            .starts_with("cannot read templates folder: no such file"));
    }

    #[test]
    fn footer_follows_branding() {
        let branding = |enabled, text: Option<&str>| Branding {
            enabled,
            text: text.map(str::to_owned),
        };
        assert_eq!(footer(&branding(false, Some("x"))), None);
        assert_eq!(
            footer(&branding(true, None)).as_deref(),
            Some(DEFAULT_FOOTER)
        );
        assert_eq!(
            footer(&branding(true, Some("Acme — here to help.\n"))).as_deref(),
            Some("Acme — here to help.")
        );
        assert_eq!(footer(&branding(true, Some("  "))), None);
    }

    #[test]
    fn templates_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Templates>();
    }

    #[test]
    fn debug_is_short() {
        let text = format!("{:?}", shipped());
        assert!(
            text.contains("\"ticket_received.{subject,text}\""),
            "{text}"
        );
        assert!(text.len() < 400, "{text}");
    }

    #[test]
    fn only_templates_that_may_show_new_text_get_it_worked_out() {
        let t = shipped();
        assert!(t.uses_new_text("notification"), "the shipped one shows it");
        assert!(!t.uses_new_text("ticket_received"));
        for (source, may) in [
            ("{{message.text}}", false),
            ("{{{message.new_text}}}", true),
            ("{{#with message}}{{new_text}}{{/with}}", true),
            ("{{> footer}}", true),
            ("{{~> footer}}", true),
            ("{{#> layout}}x{{/layout}}", true),
            ("a > b {{ticket.id}}", false),
        ] {
            assert_eq!(may_show_new_text(source), may, "{source}");
        }
    }
}
