//! The template folder, checked at load: it exists, every template the
//! workflows name is there, and every `*.hbs` in it compiles.
//!
//! SHELL: reads the folder. Rendering is `outbound`'s business; this only
//! makes sure rendering can never fail for a missing or broken file.

use std::ops::Range;
use std::path::Path;

use super::load::{io_reason, Ctx};

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
/// `server.templates`, if written.
pub(super) fn check(
    cx: &mut Ctx<'_>,
    dir: &Path,
    shown: &Path,
    dir_span: Option<Range<usize>>,
    uses: &TemplateUses,
) {
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
            return;
        }
    };

    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".hbs"))
        .collect();
    names.sort();
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
        if let Err(e) = handlebars::Template::compile(&source) {
            let (line, col) = e.pos().unwrap_or((1, 1));
            cx.in_file(file, line, col, format!("invalid template: {}", e.reason()));
        }
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
}
