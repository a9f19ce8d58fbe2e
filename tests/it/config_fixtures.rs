//! The catalogue of bad configs: every folder under `tests/fixtures/config/`
//! is a config directory plus `expected.txt`, the exact lines `relay
//! validate` must print for it (paths relative to the folder).

use std::path::Path;

use relay::config::{load_dir, SecretMode};

#[test]
fn every_fixture_reports_exactly_its_expected_problems() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "the catalogue shrank: {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let expected = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|_| panic!("{} has no expected.txt", case.display()));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        let loaded = load_dir(case, SecretMode::CheckOnly).unwrap();
        let got: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
        if got != expected {
            failures.push(format!(
                "case {}:\n  expected:\n    {}\n  got:\n    {}",
                case.file_name().unwrap().to_string_lossy(),
                expected.join("\n    "),
                got.join("\n    ")
            ));
        }
        // A case with errors must not yield a snapshot; one with only
        // warnings must.
        let has_errors = loaded.problems.iter().any(|p| p.is_error());
        assert_eq!(loaded.snapshot.is_none(), has_errors, "{}", case.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d");
    let loaded = load_dir(&dir, SecretMode::CheckOnly).unwrap();
    let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let snap = loaded.snapshot.unwrap();
    assert!(snap.models.len() >= 4);
    // Aliases resolve to their model and routes are priority-ordered.
    let m = snap.model("gpt-4o-mini-latest").expect("alias resolves");
    assert_eq!(m.name, "gpt-4o-mini");
    let prios: Vec<i32> = snap.routes(m).map(|b| b.priority).collect();
    assert!(prios.windows(2).all(|w| w[0] <= w[1]), "{prios:?}");
    assert!(snap.routes(m).all(|b| b.enabled));
}
