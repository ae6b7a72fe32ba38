//! The template folder, checked at load: it exists, every template the
//! workflows name is there, every `*.hbs` in it compiles, and no template
//! names a variable that does not exist (`mail::render`'s strict check).
//!
//! SHELL: reads the folder. Rendering is `outbound`'s business; this makes
//! sure rendering can never fail for a missing or broken file, and hands the
//! compiled [`Templates`] to the `Config`.

use std::ops::Range;
use std::path::Path;

use super::problem::Ctx;
use crate::mail::render::{TemplateProblem, Templates};
use crate::wording::io_reason;

/// The templates the workflows need, with the config positions that need
/// them (where a missing file is reported).
#[derive(Debug, Default)]
pub(super) struct TemplateUses {
    /// `send_email = NAME`: NAME and the span of the value.
    pub emails: Vec<(String, Range<usize>)>,
    /// The first `notify` action, if any: `notification.*` is then needed.
    pub notify: Option<Range<usize>>,
}

/// The parts every template must have; `NAME.html.hbs` is optional.
const REQUIRED_PARTS: [&str; 2] = ["subject", "text"];

/// The template used for every `notify` action.
pub(super) const NOTIFICATION: &str = "notification";

/// `dir` is absolute; `shown` is the same folder as problems name it (on
/// the path the caller gave for the config). `dir_span` is the position of
/// `server.templates`, if written. Returns the templates that compiled (all
/// of them when no problem was reported).
pub(super) fn check(
    cx: &mut Ctx<'_>,
    dir: &Path,
    shown: &Path,
    dir_span: Option<Range<usize>>,
    uses: &TemplateUses,
) -> Templates {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                "it does not exist".to_owned()
            } else {
                io_reason(&e).to_lowercase()
            };
            cx.at_opt(
                dir_span,
                format!(
                    "cannot read templates folder \"{}\": {reason}",
                    shown.display()
                ),
            );
            return Templates::default();
        }
    };

    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".hbs"))
        .collect();
    names.sort();
    let mut compiled = Vec::new();
    for name in &names {
        let file = shown.join(name);
        let source = match std::fs::read_to_string(dir.join(name)) {
            Ok(source) => source,
            Err(e) => {
                let reason = io_reason(&e).to_lowercase();
                cx.in_file(file, 1, 1, format!("cannot read template: {reason}"));
                continue;
            }
        };
        match handlebars::Template::compile(&source) {
            Ok(_) => compiled.push((name.clone(), source)),
            Err(e) => {
                let (line, col) = e.pos().unwrap_or((1, 1));
                cx.in_file(file, line, col, format!("invalid template: {}", e.reason()));
            }
        }
    }

    // Register what compiled (so this cannot fail in practice), then render
    // every template with sample values in strict mode: an unknown variable
    // is a problem now, not a failed email later.
    let in_shown = |cx: &mut Ctx<'_>, p: TemplateProblem| {
        let file = p.file.strip_prefix(dir).unwrap_or(&p.file);
        cx.in_file(shown.join(file), p.line, p.col, p.message);
    };
    let templates = match Templates::from_sources(dir, compiled) {
        Ok(templates) => templates,
        Err(problems) => {
            for p in problems {
                in_shown(cx, p);
            }
            Templates::default()
        }
    };
    for p in templates.check() {
        in_shown(cx, p);
    }

    let present = |name: &str, part: &str| names.iter().any(|n| *n == format!("{name}.{part}.hbs"));
    let missing = |name: &str| -> Vec<String> {
        REQUIRED_PARTS
            .iter()
            .filter(|part| !present(name, part))
            .map(|part| {
                shown
                    .join(format!("{name}.{part}.hbs"))
                    .display()
                    .to_string()
            })
            .collect()
    };
    for (name, span) in &uses.emails {
        let files = missing(name);
        if !files.is_empty() {
            cx.at(
                span.clone(),
                format!(
                    "missing template for send_email = \"{name}\": {} not found",
                    files.join(" and ")
                ),
            );
        }
    }
    if let Some(span) = &uses.notify {
        let files = missing(NOTIFICATION);
        if !files.is_empty() {
            cx.at(
                span.clone(),
                format!(
                    "missing template for notify: {} not found",
                    files.join(" and ")
                ),
            );
        }
    }
    templates
}
