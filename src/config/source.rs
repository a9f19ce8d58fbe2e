//! Reading a config directory into YAML documents that remember where every
//! field came from.
//!
//! serde_yaml gives us values but no positions, so each file is scanned once
//! with yaml-rust2's event parser to (a) split it into documents and (b) index
//! every node's line and column by JSON pointer. Each document's text is then
//! parsed by serde_yaml on its own, so the two parsers can never disagree
//! about which document is which.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_marker(m: Marker, line_offset: usize) -> Pos {
        Pos {
            line: m.line() + line_offset,
            column: m.col() + 1,
        }
    }
}

/// Where the nodes of one document sit in its file.
#[derive(Debug, Default)]
pub struct Positions {
    /// Start of the document.
    pub start: Pos,
    /// Keys repeated within one mapping, which YAML parsers resolve silently
    /// by keeping the last: (pointer, position, position of the first).
    pub duplicate_keys: Vec<(String, Pos, Pos)>,
    /// Position of each mapping key, by the JSON pointer of its value.
    keys: HashMap<String, Pos>,
    /// Position of each node, by JSON pointer.
    nodes: HashMap<String, Pos>,
}

impl Positions {
    /// Best position for a JSON pointer: the key that names it, else the node,
    /// else its closest ancestor.
    pub fn of(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.keys.get(p).or_else(|| self.nodes.get(p)) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.start,
            }
        }
    }

    /// Position of the value itself (not its key), for "wrong value" errors.
    pub fn value_of(&self, pointer: &str) -> Pos {
        self.nodes
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.of(pointer))
    }
}

/// One YAML document of one file.
#[derive(Debug)]
pub struct Document {
    /// Path relative to the config directory.
    pub file: PathBuf,
    pub value: serde_json::Value,
    pub positions: Positions,
}

/// A file that could not be read or parsed at all.
#[derive(Debug)]
pub struct SourceError {
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
}

/// Every `*.yaml` / `*.yml` file under `dir`, recursively, sorted. Hidden
/// entries (names starting with `.`) are skipped: that keeps `.git` out, and
/// with a Kubernetes ConfigMap volume it reads the visible symlinks only, not
/// the `..data` / `..<timestamp>` directories they point into.
pub fn discover(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks, as a ConfigMap mount needs.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            // A dangling symlink mid-swap: the next reload sees the new target.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            walk(&path, out)?;
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Largest config file read (a whole catalog of thousands of objects is a
/// few MiB); anything bigger is a mistake or an attack, not config.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a discovered file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Vanished between listing and reading (an edit raced the reload).
    Gone,
    /// The problem to report, naming what the file is.
    Refused(String),
}

/// A config file's bytes. Symlinks are followed (a ConfigMap mount is all
/// symlinks), then the target must be a regular file of at most
/// [`MAX_FILE_BYTES`]: checked before opening, so a FIFO, a device such as
/// `/dev/zero` or a socket never blocks or grows a reload, and checked again
/// on the opened file, whose read is bounded as well.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::Gone,
        _ => ReadError::Refused(format!("cannot read file: {e}")),
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(ReadError::Refused(format!(
                "not a regular file (it is {}); config files must be regular files or symlinks to them",
                file_type_name(meta)
            )));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(too_big(meta.len()));
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(io)?)?;
    let file = std::fs::File::open(path).map_err(io)?;
    // Swapped for something else between the check and the open?
    let meta = file.metadata().map_err(io)?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

fn too_big(len: u64) -> ReadError {
    ReadError::Refused(format!(
        "file is {:.1} MiB; config files are limited to {} MiB (split it, or remove what is not config)",
        len as f64 / f64::from(1 << 20),
        MAX_FILE_BYTES >> 20
    ))
}

fn file_type_name(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Splits a file's text into documents with positions. `file` is only used to
/// label the results.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Document>, SourceError> {
    let mut indexer = Indexer::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut indexer, true) {
        return Err(syntax_error(
            file,
            text,
            Pos::from_marker(*e.marker(), 0),
            e.info(),
        ));
    }

    let offsets = CharOffsets::new(text);
    let starts: Vec<usize> = indexer.docs.iter().map(|d| d.start_char).collect();
    let mut docs = Vec::with_capacity(indexer.docs.len());
    for (i, raw) in indexer.docs.into_iter().enumerate() {
        // The first document owns the file's head (comments), so its line
        // numbers need no offset; later ones begin at their `---`.
        let from = if i == 0 { 0 } else { offsets.byte(starts[i]) };
        let to = starts.get(i + 1).map_or(text.len(), |&c| offsets.byte(c));
        let slice = &text[from..to];
        let line_offset = if i == 0 {
            0
        } else {
            raw.positions.start.line.saturating_sub(1)
        };
        let value: serde_json::Value = serde_yaml::from_str(slice).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            SourceError {
                file: file.to_path_buf(),
                pos: Pos {
                    line: line + line_offset,
                    column,
                },
                message: format!("YAML error: {}", strip_location(&e.to_string())),
            }
        })?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        docs.push(Document {
            file: file.to_path_buf(),
            value,
            positions: raw.positions,
        });
    }
    Ok(docs)
}

/// libyaml (inside serde_yaml) explains syntax errors with context ("while
/// parsing a flow sequence at line 3 column 9"), so prefer its message and
/// position; yaml-rust2's is the fallback.
fn syntax_error(file: &Path, text: &str, pos: Pos, info: &str) -> SourceError {
    for doc in serde_yaml::Deserializer::from_str(text) {
        if let Err(e) = serde_yaml::Value::deserialize(doc) {
            if let Some(l) = e.location() {
                let full = e.to_string();
                // Drop the first " at line L column C" (we print positions
                // ourselves) but keep the context that follows it.
                let message = match full.find(" at line ") {
                    Some(i) => {
                        let rest = &full[i + 9..];
                        let tail = rest.find(", ").map_or("", |j| &rest[j..]);
                        format!("{}{tail}", &full[..i])
                    }
                    None => full,
                };
                return SourceError {
                    file: file.to_path_buf(),
                    pos: Pos {
                        line: l.line(),
                        column: l.column(),
                    },
                    message: format!("YAML syntax error: {message}"),
                };
            }
        }
    }
    SourceError {
        file: file.to_path_buf(),
        pos,
        message: format!("YAML syntax error: {info}"),
    }
}

/// serde_yaml appends " at line L column C"; we print positions ourselves.
fn strip_location(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Char index → byte offset (yaml-rust2 marks count chars).
struct CharOffsets(Option<Vec<usize>>);

impl CharOffsets {
    fn new(text: &str) -> Self {
        if text.is_ascii() {
            CharOffsets(None)
        } else {
            let mut v: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
            v.push(text.len());
            CharOffsets(Some(v))
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.0 {
            None => char_index,
            Some(v) => v
                .get(char_index)
                .copied()
                .unwrap_or_else(|| v.last().copied().unwrap_or(0)),
        }
    }
}

struct RawDoc {
    start_char: usize,
    positions: Positions,
}

enum Frame {
    /// `start` is the mark where the mapping began; yaml-rust2 places it after
    /// the first key of a block mapping, so the first key's position is used
    /// for the mapping instead, and `start` only for an empty mapping.
    Map {
        pointer: String,
        key: Option<String>,
        start: Option<Pos>,
    },
    Seq {
        pointer: String,
        index: usize,
    },
    /// A complex (non-scalar) mapping key: ignored for positions.
    Skip,
}

#[derive(Default)]
struct Indexer {
    docs: Vec<RawDoc>,
    stack: Vec<Frame>,
}

impl Indexer {
    fn current(&mut self) -> Option<&mut Positions> {
        self.docs.last_mut().map(|d| &mut d.positions)
    }

    /// Pointer for the node that starts now, or `None` when it is a mapping key.
    fn next_node(&mut self, event: &Event, mark: Marker) -> Option<String> {
        let pos = Pos::from_marker(mark, 0);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Skip) => None,
            Some(Frame::Seq { pointer, index }) => {
                let p = format!("{pointer}/{index}");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map {
                pointer,
                key,
                start,
            }) => match key.take() {
                Some(k) => Some(format!("{pointer}/{}", escape(&k))),
                None => {
                    if let Event::Scalar(text, ..) = event {
                        let p = format!("{pointer}/{}", escape(text));
                        *key = Some(text.clone());
                        if let Some(d) = self.docs.last_mut() {
                            if start.take().is_some() {
                                d.positions.nodes.insert(pointer.clone(), pos);
                            }
                            if let Some(first) = d.positions.keys.insert(p.clone(), pos) {
                                d.positions.duplicate_keys.push((p, pos, first));
                            }
                        }
                    } else if !matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                        // Complex key: consume it without indexing.
                        *key = Some(String::from("?"));
                        if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                            self.stack.push(Frame::Skip);
                        }
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.stack.clear();
                self.docs.push(RawDoc {
                    start_char: mark.index(),
                    positions: Positions {
                        start: Pos::from_marker(mark, 0),
                        ..Default::default()
                    },
                });
            }
            Event::Scalar(..) | Event::Alias(..) => {
                if let Some(p) = self.next_node(&ev, mark) {
                    let pos = Pos::from_marker(mark, 0);
                    if let Some(d) = self.current() {
                        d.nodes.insert(p, pos);
                    }
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                match self.next_node(&ev, mark) {
                    Some(pointer) => {
                        let pos = Pos::from_marker(mark, 0);
                        if is_map {
                            self.stack.push(Frame::Map {
                                pointer,
                                key: None,
                                start: Some(pos),
                            });
                        } else {
                            if let Some(d) = self.current() {
                                d.nodes.insert(pointer.clone(), pos);
                            }
                            self.stack.push(Frame::Seq { pointer, index: 0 });
                        }
                    }
                    None => {
                        if matches!(self.stack.last(), Some(Frame::Skip)) {
                            self.stack.push(Frame::Skip);
                        }
                    }
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Map {
                    pointer,
                    start: Some(pos),
                    ..
                }) = self.stack.pop()
                {
                    if let Some(d) = self.current() {
                        d.nodes.insert(pointer, pos);
                    }
                }
            }
            _ => {}
        }
    }
}

/// JSON pointer escaping (RFC 6901).
fn escape(key: &str) -> String {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1")
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_items_per_document() {
        let text = "# head\nkind: Host\nname: a\nkeys:\n  - name: k1\n    env: X\n---\nkind: Model\nname: m\naliases: [x, y]\n";
        let docs = parse_file(Path::new("f.yaml"), text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["name"], "a");
        assert_eq!(docs[0].positions.of("/name"), Pos { line: 3, column: 1 });
        assert_eq!(
            docs[0].positions.of("/keys/0/env"),
            Pos { line: 6, column: 5 }
        );
        assert_eq!(
            docs[0].positions.value_of("/keys/0"),
            Pos { line: 5, column: 5 }
        );
        assert_eq!(docs[1].value["kind"], "Model");
        assert_eq!(
            docs[1].positions.of("/aliases/1"),
            Pos {
                line: 10,
                column: 14
            }
        );
        // Unknown pointers fall back to the closest ancestor.
        assert_eq!(
            docs[1].positions.of("/aliases/9"),
            Pos {
                line: 10,
                column: 1
            }
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_file(Path::new("bad.yaml"), "kind: Host\nname: [a\n").unwrap_err();
        assert!(
            err.message.starts_with("YAML syntax error"),
            "{}",
            err.message
        );
        assert!(err.pos.line >= 2, "{:?}", err.pos);
    }

    #[test]
    fn empty_documents_are_skipped_and_non_ascii_is_sliced_safely() {
        let text = "---\nkind: Model\nname: ü\n---\n# only a comment\n---\nkind: Model\nname: é\n";
        let docs = parse_file(Path::new("f.yaml"), text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["name"], "é");
        assert_eq!(docs[1].positions.of("/name").line, 8);
    }
}
