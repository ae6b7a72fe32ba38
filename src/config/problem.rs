//! Problems found while loading a config, and where they are collected:
//! a leaf that `load`, `validate` and `templates` share.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One thing wrong with the configuration, at a position in a file (the
/// config file, or a template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config path as the caller gave it, or a template's path.
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// A lowercase phrase, e.g. `unknown pipeline "suport" (known: support)`.
    pub message: String,
}

impl fmt::Display for Problem {
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

/// Every problem found, config file first (in file order), then templates.
/// Never empty when returned by [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Where problems are collected while loading.
pub(super) struct Ctx<'a> {
    /// The config path as given by the caller.
    pub file: PathBuf,
    pub text: &'a str,
    pub problems: Vec<Problem>,
}

impl Ctx<'_> {
    /// A problem in the config file at the start of `span`.
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    /// A problem in the config file at `span`, or at 1:1 without one.
    pub fn at_opt(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.at(span.unwrap_or(0..0), message);
    }

    /// A problem in another file (a template).
    pub fn in_file(&mut self, file: PathBuf, line: usize, col: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            file,
            line,
            col,
            message: message.into(),
        });
    }

    /// The 1-based line of `span` in the config file.
    pub fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }
}
