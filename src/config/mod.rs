//! Configuration as code: a directory of YAML documents → a validated,
//! immutable [`Snapshot`].
//!
//! Stages: `source` (files → documents with positions) → `schema` (shape, per
//! kind) → typed `kinds` → `compile` (references, semantics, secrets) →
//! `Snapshot`. `reload` publishes snapshots; `watch` decides when to reload.

pub mod compile;
pub mod duration;
pub mod kinds;
pub mod problem;
pub mod reload;
pub mod revision;
pub mod schema;
pub mod snapshot;
pub mod source;
pub mod watch;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use compile::SecretMode;
pub use kinds::Kind;
pub use problem::{Problem, Severity};
pub use reload::{ConfigHandle, ReloadOutcome, ReloadStatus};
pub use revision::Revision;
pub use snapshot::Snapshot;

use compile::{field_path, Documents, Located};
use source::{Document, Pos};

/// The directory itself could not be read: nothing to validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config directory {dir}: {err}; set RELAY_CONFIG_DIR (or --config-dir) to a directory of YAML files")]
    Dir { dir: PathBuf, err: std::io::Error },
}

/// Result of loading a directory: the snapshot when there were no errors,
/// and every problem (errors and warnings), sorted.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Option<Snapshot>,
    pub problems: Vec<Problem>,
    pub revision: Revision,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }
}

/// Loads and checks a config directory exactly as `serve` and `validate` do.
pub fn load_dir(dir: &Path, secrets: SecretMode) -> Result<Loaded, ConfigError> {
    let dir_err = |err| ConfigError::Dir {
        dir: dir.to_path_buf(),
        err,
    };
    let files = source::discover(dir).map_err(dir_err)?;

    // Files are independent until compile: read, parse and schema-check them
    // on every core, then merge in file order so output stays deterministic.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let parts: Vec<FilePart> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|c| scope.spawn(move || read_files(dir, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });

    let mut problems = Vec::new();
    let mut hasher = revision::ContentHasher::default();
    let mut docs = Documents::default();
    for part in parts {
        for (rel, bytes) in &part.contents {
            hasher.file(rel, bytes);
        }
        problems.extend(part.problems);
        docs.append(part.docs);
    }

    let revision = hasher.finish(revision::git_commit(dir));
    if files.is_empty() {
        problems.push(Problem {
            severity: Severity::Warning,
            file: PathBuf::from("."),
            line: 0,
            column: 0,
            kind: None,
            name: None,
            field: None,
            message: format!(
                "no *.yaml or *.yml files in {}; relay will route nothing",
                dir.display()
            ),
        });
    }

    let mut snapshot = compile::compile(docs, revision.clone(), secrets, &mut problems);
    problem::sort(&mut problems);
    let ok = !problems.iter().any(Problem::is_error);
    let snapshot = ok.then(|| {
        snapshot.warnings = problems.clone();
        snapshot
    });
    Ok(Loaded {
        snapshot,
        problems,
        revision,
    })
}

/// What one thread made of a run of files.
struct FilePart {
    contents: Vec<(PathBuf, Vec<u8>)>,
    docs: Documents,
    problems: Vec<Problem>,
}

fn read_files(dir: &Path, files: &[PathBuf]) -> FilePart {
    let mut part = FilePart {
        contents: Vec::with_capacity(files.len()),
        docs: Documents::default(),
        problems: Vec::new(),
    };
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(path).to_path_buf();
        let bytes = match source::read_file(path) {
            Ok(b) => b,
            // Deleted between listing and reading: a reload raced an edit; the
            // watcher fires again for it.
            Err(source::ReadError::Gone) => continue,
            Err(source::ReadError::Refused(message)) => {
                part.problems
                    .push(file_problem(&rel, Pos::default(), message));
                continue;
            }
        };
        match std::str::from_utf8(&bytes) {
            Ok(text) => match source::parse_file(&rel, text) {
                Ok(parsed) => parsed
                    .into_iter()
                    .for_each(|d| classify(d, &mut part.docs, &mut part.problems)),
                Err(e) => part.problems.push(file_problem(&e.file, e.pos, e.message)),
            },
            Err(_) => part.problems.push(file_problem(
                &rel,
                Pos::default(),
                "file is not UTF-8 text".into(),
            )),
        }
        part.contents.push((rel, bytes));
    }
    part
}

fn file_problem(file: &Path, pos: Pos, message: String) -> Problem {
    Problem {
        severity: Severity::Error,
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        kind: None,
        name: None,
        field: None,
        message,
    }
}

/// Routes one document to its kind after checking `kind`, `name` and the schema.
fn classify(doc: Document, out: &mut Documents, problems: &mut Vec<Problem>) {
    let mut problem = |pos: Pos,
                       kind: Option<Kind>,
                       name: Option<&str>,
                       field: Option<String>,
                       message: String| {
        problems.push(Problem {
            severity: Severity::Error,
            file: doc.file.clone(),
            line: pos.line,
            column: pos.column,
            kind,
            name: name.map(String::from),
            field,
            message,
        })
    };
    let Value::Object(map) = &doc.value else {
        let msg = format!(
            "a document must be a mapping with `kind` and `name`, found {}",
            schema::describe(&doc.value)
        );
        return problem(doc.positions.value_of(""), None, None, None, msg);
    };
    let name: Option<String> = map.get("name").and_then(Value::as_str).map(String::from);
    let name = name.as_deref();
    let kind = match map.get("kind") {
        None => {
            let msg = format!(
                "missing `kind`; every document needs `kind: <{}>` and a `name`",
                kind_list(" | ")
            );
            return problem(doc.positions.value_of(""), None, name, None, msg);
        }
        Some(Value::String(k)) => match Kind::parse(k) {
            Some(kind) => kind,
            None => {
                let hint = schema::closest(k, Kind::ALL.iter().map(|k| k.as_str()))
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                let msg = format!(
                    "unknown kind `{k}`; expected one of: {}{hint}",
                    kind_list(", ")
                );
                return problem(
                    doc.positions.value_of("/kind"),
                    None,
                    name,
                    Some("kind".into()),
                    msg,
                );
            }
        },
        Some(other) => {
            let msg = format!("`kind` must be a string, found {}", schema::describe(other));
            return problem(
                doc.positions.value_of("/kind"),
                None,
                name,
                Some("kind".into()),
                msg,
            );
        }
    };

    let mut violations = Vec::new();
    for (pointer, pos, first) in &doc.positions.duplicate_keys {
        let key = pointer.rsplit('/').next().unwrap_or_default();
        let msg = format!(
            "duplicate key `{key}` (already set on line {}); a field may appear only once",
            first.line
        );
        problem(*pos, Some(kind), name, field_path(pointer), msg);
    }
    let duplicates = !doc.positions.duplicate_keys.is_empty();
    violations.extend(schema::check(kind, &doc.value));
    let binding_model = (kind == Kind::Binding)
        .then(|| map.get("model").and_then(Value::as_str))
        .flatten();
    let binding_model = binding_model.map(String::from);
    let reject = |out: &mut Documents| {
        if let Some(n) = name {
            out.rejected.names.insert((kind, n.to_string()));
        }
        if let Some(m) = &binding_model {
            out.rejected.binding_models.insert(m.clone());
        }
    };
    if duplicates || !violations.is_empty() {
        reject(out);
        for v in violations {
            let pos = if v.at_value {
                doc.positions.value_of(&v.pointer)
            } else {
                doc.positions.of(&v.pointer)
            };
            // A missing field is reported on its parent: name the field itself.
            problem(pos, Some(kind), name, field_path(&v.pointer), v.message);
        }
        return;
    }

    let mut value = doc.value;
    if let Value::Object(m) = &mut value {
        m.remove("kind");
    }
    macro_rules! push {
        ($vec:expr) => {
            match serde_path_to_error::deserialize(value) {
                Ok(spec) => $vec.push(Located {
                    spec,
                    file: doc.file.clone(),
                    positions: doc.positions,
                }),
                Err(e) => {
                    // The schema admitted it but the types did not (e.g. a
                    // duration too large to represent).
                    let pointer = path_pointer(e.path());
                    let pos = doc.positions.value_of(&pointer);
                    let message = e.into_inner().to_string();
                    reject(out);
                    problem(pos, Some(kind), name, field_path(&pointer), message);
                }
            }
        };
    }
    match kind {
        Kind::Host => push!(out.hosts),
        Kind::Model => push!(out.models),
        Kind::Binding => push!(out.bindings),
        Kind::Policy => push!(out.policies),
        Kind::User => push!(out.users),
    }
}

/// serde_path_to_error's path (`keys[0].age`) → JSON pointer (`/keys/0/age`).
fn path_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1")))
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn kind_list(sep: &str) -> String {
    Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(sep)
}
