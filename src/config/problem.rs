//! Config problems: everything the loader and compiler find, with positions.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::kinds::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the config directory. `Display` gives the
/// `file:line:col: kind/name: field: message` form `relay validate` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// Path relative to the config directory.
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the directory as a whole.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    #[serde(serialize_with = "serialize_kind")]
    pub kind: Option<Kind>,
    pub name: Option<String>,
    /// Dotted field path within the document, e.g. `keys[0].age`.
    pub field: Option<String>,
    pub message: String,
}

fn serialize_kind<S: serde::Serializer>(kind: &Option<Kind>, s: S) -> Result<S::Ok, S::Error> {
    match kind {
        Some(k) => s.serialize_str(k.as_str()),
        None => s.serialize_none(),
    }
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column.max(1))?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, "{k}/{n}: ")?,
            (Some(k), None) => write!(f, "{k}: ")?,
            _ => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Sorts problems into a stable, readable order: by file, then position.
pub fn sort(problems: &mut [Problem]) {
    problems.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
    });
}
