//! Property tests for the config loader: whatever bytes an operator (or a
//! broken merge) puts in a config file, `check_bytes` — the per-file stages
//! of `load_dir` plus `compile` — answers with problems and never panics.
//! Three generators: arbitrary bytes, the example catalog with YAML-level
//! edits spliced in at arbitrary points, and the example catalog's documents
//! with values swapped for hostile ones (valid YAML, so schema and compile
//! see them). Case counts are bounded so the module runs in seconds.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;

use super::check_bytes;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every YAML file of the example catalog (config.d) and a User, as one
/// multi-document text.
fn catalog() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(read_catalog)
}

fn read_catalog() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("config.d")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 5, "the example catalog went missing");
    let mut docs: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // The example catalog has no User; every kind should be in play.
    docs.push(
        "kind: User\nname: admin\nrole: admin\n\
         password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n"
            .into(),
    );
    docs.join("\n---\n")
}

/// The catalog's documents as JSON values.
fn catalog_docs() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(catalog())
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

fn check(bytes: &[u8]) {
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
    let problems = check_bytes(&PathBuf::from("fuzz.yaml"), bytes);
    for p in &problems {
        // A position, when given, is inside the file (one past the last line
        // for "unexpected end of input").
        assert!(
            p.line <= lines + 1,
            "problem points past the end ({} lines): {p}",
            lines
        );
        assert!(!p.message.is_empty());
    }
}

/// Fragments that mean something to a YAML parser or to relay's schema.
const TOKENS: &[&str] = &[
    "\n---\n",
    "\n...\n",
    ": ",
    ":",
    "- ",
    "&a ",
    "*a",
    "*b",
    "<<: *a\n",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "\t",
    "\n  ",
    "\n    - ",
    "!!binary ",
    "!!str ",
    "!custom ",
    "? ",
    "|\n",
    ">-\n",
    "#",
    "\u{feff}",
    "\r\n",
    "\r",
    "~",
    "null",
    "18446744073709551616",
    "-9223372036854775809",
    "1e309",
    ".nan",
    "-.inf",
    "0x10",
    "0o7",
    "99999999999999999999h",
    "kind: Model\n",
    "kind: Host\n",
    "kind: Binding\n",
    "kind: Policy\n",
    "kind: User\n",
    "name: x\n",
    "name: \n",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "\\u0000",
    "\u{0}",
    "é",
    "\u{10FFFF}",
];

fn edit() -> impl Strategy<Value = (usize, usize, String)> {
    (
        any::<usize>(),
        0usize..8,
        prop_oneof![
            4 => prop::sample::select(TOKENS).prop_map(String::from),
            1 => "\\PC{0,12}",
            1 => Just(String::new()),
        ],
    )
}

/// Applies (position, bytes to delete, text to insert) edits at char
/// boundaries.
fn apply(text: &str, edits: &[(usize, usize, String)]) -> String {
    let mut s = text.to_string();
    for (at, del, ins) in edits {
        let mut at = at % (s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + del).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        s.replace_range(at..end, ins);
    }
    s
}

/// Values chosen to break parsers of durations, numbers, globs, names,
/// URLs, secrets and password hashes.
fn hostile_value() -> impl Strategy<Value = Value> {
    let strings = prop::sample::select(vec![
        "",
        " ",
        "0s",
        "0",
        "1ms",
        "18446744073709551615s",
        "99999999999999999999h",
        "1h30m",
        "-5s",
        "1.5s",
        "5 s",
        "*",
        "**",
        "[",
        "[!]",
        "{a,b",
        "gpt-4o",
        "claude-*",
        "openai",
        "anthropic",
        "primary",
        "http://",
        "https://user:pass@example.com/v1",
        "http://169.254.169.254/latest",
        "ftp://x",
        "https://[::1]:99999/",
        "Content-Length",
        "a\r\nb",
        "X-Ok: 1",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2id$",
        "-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n",
        "-----BEGIN AGE ENCRYPTED FILE-----",
        "sk-live-0123456789abcdef0123456789abcdef",
        "PATH",
        "HOME",
        "prioritized",
        "round_robin",
        "admin",
        "viewer",
        "é\u{0}\u{7f}",
    ])
    .prop_map(|s| Value::String(s.to_string()));
    let leaf = prop_oneof![
        6 => strings,
        2 => "\\PC{0,16}".prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => prop_oneof![
            Just(u64::MAX),
            Just(0u64),
            Just(1u64),
            Just(u32::MAX as u64 + 1),
            any::<u64>(),
        ]
        .prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop_oneof![Just(-0.5f64), Just(1e300), Just(f64::MIN_POSITIVE), any::<f64>()]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer to a node of `v` (the root included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                pointers(
                    c,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

proptest! {
    #![proptest_config(cfg(96))]

    #[test]
    fn arbitrary_bytes_give_problems_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_text_gives_problems_not_panics(text in "\\PC{0,300}") {
        check(text.as_bytes());
    }

    #[test]
    fn edited_catalog_gives_problems_not_panics(edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(catalog(), &edits);
        check(text.as_bytes());
    }

    #[test]
    fn hostile_values_give_problems_not_panics(
        doc in any::<prop::sample::Index>(),
        swaps in prop::collection::vec((any::<prop::sample::Index>(), hostile_value()), 1..4),
    ) {
        let mut docs = catalog_docs();
        let d = doc.index(docs.len());
        for (at, value) in swaps {
            let mut ptrs = Vec::new();
            pointers(&docs[d], String::new(), &mut ptrs);
            let p = at.get(&ptrs).clone();
            if p.is_empty() {
                docs[d] = value;
            } else if let Some(slot) = docs[d].pointer_mut(&p) {
                *slot = value;
            }
        }
        let text = docs
            .iter()
            .map(|v| serde_yaml::to_string(v).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        check(text.as_bytes());
    }
}

#[test]
fn the_unedited_catalog_is_clean() {
    // The generators start from a valid catalog: otherwise every case would
    // stop at the first problem and compile would never be exercised.
    let problems = check_bytes(&PathBuf::from("all.yaml"), catalog().as_bytes());
    let errors: Vec<_> = problems.iter().filter(|p| p.is_error()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn alias_bombs_are_refused_without_expanding() {
    // "Billion laughs": nine levels of nine aliases would expand to 9^9
    // strings if anything expanded aliases into values.
    let mut text = String::from("kind: Model\nname: bomb\na0: &a0 [\"lol\"]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let started = std::time::Instant::now();
    let problems = check_bytes(&PathBuf::from("bomb.yaml"), text.as_bytes());
    assert!(problems.iter().any(|p| p.is_error()), "{problems:#?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
