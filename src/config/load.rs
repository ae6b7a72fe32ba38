//! Loading: read the file, parse it with spans, deserialize each section,
//! validate, compile the templates — and report every problem at once as
//! `FILE:LINE:COL: message`.
//!
//! SHELL: the only place in `config` that reads the config file; `validate`
//! and `templates` read the template folder. A TOML syntax error stops
//! everything after it (nothing else can be trusted); every other problem —
//! unknown keys, wrong types, bad references, broken templates — is
//! collected, and one broken `[[item]]` does not hide problems in the rest.

use std::collections::BTreeSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::problem::{line_col, Ctx, Problem, Problems};
use super::raw::{self, Item, RawConfig, Read, Section};
use super::{validate, Config};
use crate::wording::io_reason;

/// Loads and validates the config at `path`, and compiles every template.
///
/// Relative paths in the file resolve against the file's directory; the
/// returned [`Config`] holds only absolute paths. Problems name `path` as
/// given (so `check` prints what the operator typed).
pub fn load(path: &Path) -> Result<Config, Problems> {
    let file_problem = |message: String| {
        Problems(vec![Problem {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message,
        }])
    };
    let bytes = std::fs::read(path)
        .map_err(|e| file_problem(format!("cannot read config: {}", io_reason(&e))))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let prefix = String::from_utf8_lossy(bytes.get(..valid).unwrap_or_default());
            let (line, col) = line_col(&prefix, prefix.len());
            return Err(Problems(vec![Problem {
                file: path.to_path_buf(),
                line,
                col,
                message: "config is not valid UTF-8".to_owned(),
            }]));
        }
    };
    let absolute = std::path::absolute(path)
        .map_err(|e| file_problem(format!("cannot resolve config path: {}", io_reason(&e))))?;

    let mut cx = Ctx {
        file: path.to_path_buf(),
        text: &text,
        problems: Vec::new(),
    };
    let doc = match DeTable::parse(&text) {
        Ok(doc) => doc,
        Err(e) => {
            cx.at(
                e.span().unwrap_or(0..0),
                format!("invalid TOML: {}", e.message()),
            );
            return Err(Problems(cx.problems));
        }
    };
    for unknown in raw::check_unknown_keys(doc.get_ref()) {
        cx.at(unknown.span, unknown.message);
    }
    let raw = read_sections(doc.into_inner(), &mut cx);
    let config = validate::validate(raw, &absolute, path, &mut cx);

    let mut problems = cx.problems;
    if problems.is_empty() {
        let mut config = config;
        config.fingerprint = fingerprint(&text, &config.server.templates);
        return Ok(config);
    }
    // Config file first, in file order; then templates by path. Stable, so
    // two problems at one position keep the order they were found in.
    problems.sort_by(|a, b| {
        (a.file != path, &a.file, a.line, a.col).cmp(&(b.file != path, &b.file, b.line, b.col))
    });
    Err(Problems(problems))
}

/// What must be the same on every node of a cluster (SPEC §8): the config's
/// values — in a canonical form, comments and layout aside — without the
/// keys that are each node's own (`server.listen`, `server.data_dir`,
/// `server.admin_socket`, `storage.node_id`, `outbound.dir`), and every
/// template file.
/// Hex SHA-256, shortened; only compared, never trusted.
fn fingerprint(text: &str, templates: &Path) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    if let Ok(mut table) = text.parse::<toml::Table>() {
        if let Some(toml::Value::Table(server)) = table.get_mut("server") {
            for key in ["listen", "data_dir", "admin_socket"] {
                server.remove(key);
            }
        }
        if let Some(toml::Value::Table(storage)) = table.get_mut("storage") {
            storage.remove("node_id");
        }
        // The file transport's folder is each node's own too.
        if let Some(toml::Value::Table(outbound)) = table.get_mut("outbound") {
            outbound.remove("dir");
        }
        // serde_json's maps are sorted: one text for equal values.
        if let Ok(value) = serde_json::to_value(&table) {
            hash.update(value.to_string().as_bytes());
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(templates)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        if f.extension().is_some_and(|e| e == "hbs") {
            if let (Some(name), Ok(bytes)) = (f.file_name(), std::fs::read(&f)) {
                hash.update(name.as_encoded_bytes());
                hash.update([0]);
                hash.update(&bytes);
                hash.update([0]);
            }
        }
    }
    let digest = hash.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn read_sections(mut root: DeTable<'_>, cx: &mut Ctx<'_>) -> RawConfig {
    let mut take = |name: &str| root.remove(name);
    let server = take("server");
    let outbound = take("outbound");
    let branding = take("branding");
    let limits = take("limits");
    let security = take("security");
    let storage = take("storage");
    let business_hours = take("business_hours");
    let users = take("user");
    let teams = take("team");
    let channels = take("channel");
    let pipelines = take("pipeline");
    let workflows = take("workflow");
    RawConfig {
        server: section(server, "server", cx),
        outbound: section(outbound, "outbound", cx),
        branding: section(branding, "branding", cx),
        limits: section(limits, "limits", cx),
        security: section(security, "security", cx),
        storage: section(storage, "storage", cx),
        business_hours: section(business_hours, "business_hours", cx),
        users: items(users, "user", cx),
        teams: items(teams, "team", cx),
        channels: items(channels, "channel", cx),
        pipelines: items(pipelines, "pipeline", cx),
        workflows: items(workflows, "workflow", cx),
    }
}

fn section<T: DeserializeOwned>(
    value: Option<Spanned<DeValue<'_>>>,
    name: &str,
    cx: &mut Ctx<'_>,
) -> Section<T> {
    let Some(value) = value else {
        return Section::Absent;
    };
    let span = value.span();
    if !value.get_ref().is_table() {
        cx.at(span, format!("{name} must be a table: write [{name}]"));
        return Section::Broken;
    }
    match deserialize(value, name, cx) {
        (Some(value), broken) => Section::Read(Read {
            value,
            span,
            broken,
        }),
        (None, _) => Section::Broken,
    }
}

fn items<T: DeserializeOwned>(
    value: Option<Spanned<DeValue<'_>>>,
    name: &str,
    cx: &mut Ctx<'_>,
) -> Vec<Item<T>> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    let DeValue::Array(elements) = value.into_inner() else {
        cx.at(
            span,
            format!("{name} must be an array of tables: write [[{name}]] for each one"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for element in elements {
        let span = element.span();
        let DeValue::Table(table) = element.get_ref() else {
            cx.at(span, format!("each {name} must be a table"));
            continue;
        };
        let id = match table.get("id").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) => Some(s.to_string()),
            _ => None,
        };
        let (value, broken) = deserialize(element, name, cx);
        out.push(Item {
            span,
            id,
            value,
            broken,
        });
    }
    out
}

/// Deserializes one section or item. A serde error becomes a problem at its
/// span, naming the key it is about; that key is then dropped and the rest
/// read again, so every wrongly typed key is reported, not just the first.
/// Returns the value (`None` if even that fails) and the dropped keys.
fn deserialize<T: DeserializeOwned>(
    mut value: Spanned<DeValue<'_>>,
    name: &str,
    cx: &mut Ctx<'_>,
) -> (Option<T>, BTreeSet<String>) {
    let whole = value.span();
    let mut broken = BTreeSet::new();
    loop {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => return (Some(v), broken),
            Err(e) => e,
        };
        let span = error.span().unwrap_or_else(|| whole.clone());
        let path = raw::path_at(value.get_ref(), &span);
        let message = match &path {
            Some(path) => {
                let sep = if path.starts_with('[') { "" } else { "." };
                format!("invalid value for {name}{sep}{path}: {}", error.message())
            }
            None => format!("invalid {name}: {}", error.message()),
        };
        cx.at(span, message);
        // Each round drops one key, so this ends.
        let key = path.and_then(|p| p.split(['.', '[']).next().map(str::to_owned));
        let dropped = match (key, value.get_mut()) {
            (Some(key), DeValue::Table(table)) if !key.is_empty() => {
                table.remove(key.as_str()).is_some() && broken.insert(key)
            }
            _ => false,
        };
        if !dropped {
            return (None, broken);
        }
    }
}
