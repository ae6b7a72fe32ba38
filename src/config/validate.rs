//! Validation: raw sections → the typed [`Config`], collecting *every*
//! problem at the span of the value it is about.
//!
//! PURE except for a few existence checks on disk (`password_file`, and the
//! template folder through `templates`). Defaults live in this module and
//! nowhere else: `sections` for the tables (`[server]`, `[outbound]`, ...),
//! `items` for the arrays (`[[user]]`, ..., `[[workflow]]`) and the
//! references between them. When problems are found the returned `Config`
//! is incomplete and `load` throws it away; it is built anyway so that one
//! bad value never hides the next.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::problem::Ctx;
use super::raw::{Item, RawConfig, Read, Section, Str};
use super::templates::{self, TemplateUses};
use super::Config;
use crate::mail::render::Templates;
use crate::wording::{io_reason, lowercase_first};

mod calendar;
mod items;
mod sections;

/// Validates everything. `config_path` is absolute; `shown_path` is the
/// path as the caller gave it (used to name template files in problems).
pub(super) fn validate(
    raw: RawConfig,
    config_path: &Path,
    shown_path: &Path,
    cx: &mut Ctx<'_>,
) -> Config {
    let dir = config_path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let shown_dir = shown_path
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf);
    let mut v = Validator { cx, dir };

    // A broken [server] or templates key may hide the real templates path;
    // checking the default one would only add noise.
    let check_templates = match &raw.server {
        Section::Broken => false,
        Section::Read(read) => !read.broken("templates"),
        Section::Absent => true,
    };
    let (server, templates_span) = v.server(raw.server);
    // An empty templates value was reported, and names no folder to check.
    let check_templates = check_templates
        && !templates_span
            .as_ref()
            .is_some_and(|t| t.get_ref().trim().is_empty());
    let outbound = v.outbound(raw.outbound, &server.data_dir);
    let branding = sections::branding(raw.branding);
    let limits = sections::limits(raw.limits);
    let security = v.security(raw.security);
    let storage = v.storage(raw.storage);
    let business_hours = v.business_hours(raw.business_hours);

    let users = v.users(raw.users);
    let teams = v.teams(raw.teams, &users.known);
    let pipelines = v.pipelines(raw.pipelines);
    let channels = v.channels(raw.channels, &pipelines, &users.emails);
    let mut uses = TemplateUses::default();
    let workflows = v.workflows(
        raw.workflows,
        &pipelines,
        &users.known,
        &teams.known,
        &mut uses,
    );

    let compiled = if check_templates {
        let shown_templates = shown_dir.join(
            templates_span
                .as_ref()
                .map_or("templates", |t| t.get_ref().as_str()),
        );
        templates::check(
            v.cx,
            &server.templates,
            &shown_templates,
            templates_span.map(|t| t.span()),
            &uses,
        )
    } else {
        Templates::default()
    };

    Config {
        path: config_path.to_path_buf(),
        server,
        outbound,
        branding,
        limits,
        security,
        storage,
        business_hours,
        users: users.list,
        teams: teams.list,
        channels,
        pipelines: pipelines.list,
        workflows,
        templates: Arc::new(compiled),
        fingerprint: String::new(),
    }
}

/// Parses a size: a number of bytes with an optional unit — B, KB, MB, GB
/// (powers of 1000) or KiB, MiB, GiB (powers of 1024), case-insensitive,
/// optionally separated by spaces: "25MiB", "10 MB", "1000".
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size \"{text}\": expected a whole number with an optional unit \
             (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"25MiB\""
        )
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(bad());
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// "a, b, c", or "none" for an empty list.
fn known<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let mut list: Vec<String> = Vec::new();
    for name in names {
        let name = name.as_ref();
        if !list.iter().any(|n| n == name) {
            list.push(name.to_owned());
        }
    }
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

struct Validator<'c, 'a> {
    cx: &'c mut Ctx<'a>,
    /// The config file's directory (absolute): relative paths resolve here.
    dir: PathBuf,
}

impl Validator<'_, '_> {
    fn resolve(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    /// A path value: must not be empty; resolved against the config dir.
    fn path(&mut self, value: &Str, key: &str) -> Option<PathBuf> {
        if value.get_ref().trim().is_empty() {
            self.cx.at(value.span(), format!("{key} must not be empty"));
            return None;
        }
        Some(self.resolve(value.get_ref()))
    }

    /// An item's id: present and well-formed. Returns it even when
    /// malformed, so that references to it do not add noise.
    /// `broken`: the id was written but with the wrong type (reported).
    fn id(
        &mut self,
        kind: &str,
        id: Option<&Str>,
        item: &Range<usize>,
        broken: bool,
    ) -> Option<String> {
        let Some(id) = id else {
            if !broken {
                self.cx.at(item.clone(), format!("{kind} needs an id"));
            }
            return None;
        };
        if !is_id(id.get_ref()) {
            self.cx.at(
                id.span(),
                format!(
                    "invalid {kind} id \"{}\": use letters, digits, '-', '_' and '.'",
                    id.get_ref()
                ),
            );
        }
        Some(id.get_ref().clone())
    }

    /// Reports `id` if `seen` already has it; records it otherwise.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, usize>,
        what: &str,
        id: &str,
        span: Range<usize>,
    ) {
        let line = self.cx.line(&span);
        if let Some(first) = seen.get(id) {
            self.cx.at(
                span,
                format!("duplicate {what} \"{id}\" (first defined on line {first})"),
            );
        } else {
            seen.insert(id.to_owned(), line);
        }
    }
}
