//! The shape of the code (ARCHITECTURE.md): the `crate::` and `super::`
//! paths between the files of `src/` form no circle, and no room holds
//! more than a fifth of the code. A room is a folder's own files (its
//! sub-folders are rooms of their own: `store/` is the boundary,
//! `store/redb/` and `store/postgres/` the engines), or a file at the top.
//!
//! A file's module is its path (`store/redb/tables.rs` is
//! `store::redb::tables`, a `mod.rs` its folder's). A path between a module
//! and one of its own ancestors is not counted: a parent re-exports its
//! children and a child names its parent's types, which is how Rust
//! modules are built, not a circle between peers. Comments and the tests
//! module at the end of a file are not read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `store::redb::tables` for `src/store/redb/tables.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its trailing tests
/// module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names: `crate::a::b`, `super::c`, and each item of a
/// `use crate::{a, b::c}` group, as absolute module paths.
fn named_paths(module: &str, is_mod_rs: bool, code: &str) -> Vec<String> {
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = module.split("::").collect();
        if !is_mod_rs {
            p.pop();
        }
        p
    };
    let absolute = |base: &str, rest: &str| -> String {
        match base {
            "crate" => rest.to_owned(),
            _ => {
                let mut p = parent.clone();
                // `super` inside a mod.rs is the folder's parent.
                if is_mod_rs {
                    p.pop();
                }
                p.push(rest);
                p.join("::")
            }
        }
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for base in ["crate", "super"] {
        let pat = format!("{base}::");
        let mut at = 0;
        while let Some(i) = code[at..].find(&pat) {
            let start = at + i;
            at = start + pat.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let item: String = item.trim().chars().take_while(|&c| ident(c)).collect();
                    if !item.is_empty() {
                        out.push(absolute(base, &item));
                    }
                }
            } else {
                let path: String = rest.chars().take_while(|&c| ident(c)).collect();
                let path = path.trim_end_matches(':');
                if !path.is_empty() {
                    out.push(absolute(base, path));
                }
            }
        }
    }
    out
}

/// The longest prefix of `path` that is a module.
fn resolve<'a>(modules: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

fn related(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    lines: BTreeMap<String, usize>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut texts = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        if m == "lib" || m == "main" {
            continue;
        }
        let is_mod_rs = f.file_name().is_some_and(|n| n == "mod.rs");
        texts.insert(m, (is_mod_rs, std::fs::read_to_string(f).unwrap()));
    }
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (m, (is_mod_rs, text)) in &texts {
        let room = match m.rsplit_once("::") {
            Some((folder, _)) if !is_mod_rs => folder.to_owned(),
            _ => m.clone(),
        };
        *lines.entry(room).or_insert(0) += text.lines().count();
        for path in named_paths(m, *is_mod_rs, &code(text)) {
            if let Some(target) = resolve(&modules, &path) {
                if !related(m, target) {
                    edges.entry(m.clone()).or_default().insert(target.clone());
                }
            }
        }
    }
    Graph { edges, lines }
}

/// A circle through `start`, if there is one (depth-first).
fn circle(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().cloned().unwrap_or_default();
        for next in edges.get(&here).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(edges, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(edges, start, &mut path, &mut seen).then(|| {
        path.push(start.to_owned());
        path
    })
}

#[test]
fn the_files_of_src_import_each_other_without_a_circle() {
    let g = graph();
    assert!(
        g.edges.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the import graph looks empty: {:?}",
        g.edges
    );
    let circles: Vec<String> = g
        .edges
        .keys()
        .filter_map(|m| circle(&g.edges, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_room_holds_more_than_a_fifth_of_the_code() {
    let g = graph();
    let total: usize = g.lines.values().sum();
    assert!(g.lines.len() > 10, "rooms: {:?}", g.lines);
    for (module, n) in &g.lines {
        assert!(
            n * 5 <= total,
            "{module} holds {n} of {total} lines ({:.0} %)",
            100.0 * *n as f64 / total as f64
        );
    }
}

#[test]
fn the_reader_finds_paths_and_groups() {
    let code = "use super::problem::Ctx;\nuse crate::{desk::Txn, ingest};\nlet x = crate::store::redb::read::ticket();";
    let mut got = named_paths("config::load", false, code);
    got.sort();
    assert_eq!(
        got,
        [
            "config::problem::Ctx",
            "desk::Txn",
            "ingest",
            "store::redb::read::ticket"
        ]
    );
    assert_eq!(
        named_paths("store::redb", true, "use super::StoreError;"),
        ["store::StoreError"]
    );
}
