//! `docs/errors.md` against the code, so that the reference cannot drift:
//! every code the host defines (API codes, execution failure codes) is
//! documented, with the same statuses, and every documented code exists;
//! the codes the four plugin SDKs fail a step with are read from their
//! sources, must be documented for exactly the languages that report them,
//! and must be the same in Rust, Python, JavaScript and C.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use stephost::api::ApiCode;
use stephost::model::Failure;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the first table under the heading `## {heading}`, header
/// and separator left out, each as its trimmed cells.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/errors.md has no section `## {heading}`"));
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "`## {heading}` has no table rows");
    rows
}

/// The code in a table's first cell, written as `` `code` ``.
fn code_cell(row: &[String]) -> String {
    let cell = &row[0];
    assert!(
        cell.len() > 2 && cell.starts_with('`') && cell.ends_with('`'),
        "the first cell is a code in backticks: {row:?}"
    );
    cell.trim_matches('`').to_owned()
}

/// A map from code to its row, failing on a code listed twice.
fn by_code(rows: Vec<Vec<String>>) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    for row in rows {
        let code = code_cell(&row);
        assert!(
            map.insert(code.clone(), row).is_none(),
            "{code} listed twice"
        );
    }
    map
}

#[test]
fn every_api_code_is_documented_with_its_statuses_and_nothing_else_is() {
    let doc = read("docs/errors.md");
    let documented: BTreeMap<String, BTreeSet<u16>> = by_code(table(&doc, "API error codes"))
        .into_iter()
        .map(|(code, row)| {
            let statuses = row[1]
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{code}: status {s:?}"))
                })
                .collect();
            (code, statuses)
        })
        .collect();
    let defined: BTreeMap<String, BTreeSet<u16>> = ApiCode::ALL
        .iter()
        .map(|code| {
            let statuses = code.statuses().iter().map(|s| s.as_u16()).collect();
            (code.as_str().to_owned(), statuses)
        })
        .collect();
    assert_eq!(
        documented, defined,
        "docs/errors.md (left) and ApiCode::ALL (right) disagree"
    );
}

#[test]
fn every_host_failure_code_is_documented_and_nothing_else_is() {
    let doc = read("docs/errors.md");
    let documented: BTreeSet<String> =
        by_code(table(&doc, "Execution failure codes set by the host"))
            .into_keys()
            .collect();
    let defined: BTreeSet<String> = Failure::HOST_CODES
        .iter()
        .map(|(code, _)| (*code).to_owned())
        .collect();
    assert_eq!(
        documented, defined,
        "docs/errors.md (left) and Failure::HOST_CODES (right) disagree"
    );
}

/// The SDK languages, in the order of the table's columns.
const LANGUAGES: [&str; 4] = ["Rust", "Python", "JavaScript", "C"];

/// Codes only some SDKs report, and why the others cannot.
const LANGUAGE_ONLY: &[(&str, &[&str], &str)] = &[(
    "plugin-exception",
    &["Python", "JavaScript"],
    "an uncaught exception; a Rust panic traps, which the host reports as `trap`",
)];

/// The code literals given as the first argument of a failure constructor
/// (`Failure::new("…"`, `Outcome::fail("…"`, `Failure('…'`, `fail("…"`) in
/// `source`, whose comment lines have already been removed.
fn failure_codes(source: &str, constructors: &[&str]) -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for constructor in constructors {
        for (at, _) in source.match_indices(constructor) {
            let rest = source[at + constructor.len()..].trim_start();
            let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue; // a variable, not a literal
            };
            let literal = &rest[1..];
            let end = literal
                .find(quote)
                .unwrap_or_else(|| panic!("an unterminated literal after {constructor}"));
            codes.insert(literal[..end].to_owned());
        }
    }
    codes
}

/// The Rust SDK's codes: its sources up to their unit tests, without
/// comments (whose examples are a plugin's codes, not the SDK's).
fn rust_sdk_codes() -> BTreeSet<String> {
    let dir = root().join("guest-sdk/src");
    let mut source = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for line in code.lines() {
                if !line.trim_start().starts_with("//") {
                    source.push_str(line);
                    source.push('\n');
                }
            }
        }
    }
    failure_codes(&source, &["Failure::new(", "Outcome::fail("])
}

/// The Python SDK's codes, without comments and docstrings.
fn python_sdk_codes() -> BTreeSet<String> {
    let text = read("plugins/python-sdk/stephost/__init__.py");
    let mut source = String::new();
    let mut in_docstring = false;
    for line in text.lines() {
        let quotes = line.matches("\"\"\"").count();
        let skip = in_docstring || quotes > 0 || line.trim_start().starts_with('#');
        in_docstring ^= quotes % 2 == 1;
        if !skip {
            source.push_str(line);
            source.push('\n');
        }
    }
    failure_codes(&source, &["Failure(", "fail("])
}

/// The JavaScript SDK's codes, without comments.
fn js_sdk_codes() -> BTreeSet<String> {
    let text = read("plugins/js-sdk/stephost.js");
    let source: String = text
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("//") || line.starts_with("/*") || line.starts_with('*'))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    failure_codes(&source, &["Failure(", "fail("])
}

/// The C SDK's codes, without comments. Its helpers record a failure
/// (`stephost_set_failure`) that the step hands on, or return one
/// (`stephost_fail`).
fn c_sdk_codes() -> BTreeSet<String> {
    let mut source = String::new();
    for file in ["stephost.c", "stephost_json.c", "stephost_canonical.c"] {
        let text = read(&format!("plugins/c-sdk/{file}"));
        for line in text.lines() {
            let code = line.trim_start();
            if !(code.starts_with("/*") || code.starts_with('*') || code.starts_with("//")) {
                source.push_str(line);
                source.push('\n');
            }
        }
    }
    failure_codes(&source, &["stephost_fail(", "stephost_set_failure("])
}

fn sdk_codes() -> BTreeMap<&'static str, BTreeSet<String>> {
    BTreeMap::from([
        ("Rust", rust_sdk_codes()),
        ("Python", python_sdk_codes()),
        ("JavaScript", js_sdk_codes()),
        ("C", c_sdk_codes()),
    ])
}

#[test]
fn the_sdks_report_the_documented_codes_for_exactly_the_documented_languages() {
    let doc = read("docs/errors.md");
    let rows = by_code(table(&doc, "Codes the plugin SDKs report"));
    let sdks = sdk_codes();
    for (column, language) in LANGUAGES.iter().enumerate() {
        let documented: BTreeSet<String> = rows
            .iter()
            .filter(|(_, row)| row[column + 1].starts_with('✓'))
            .map(|(code, _)| code.clone())
            .collect();
        assert_eq!(
            &documented, &sdks[language],
            "{language}: docs/errors.md (left) and the SDK's source (right) disagree"
        );
    }
}

#[test]
fn the_four_sdks_report_the_same_codes() {
    let sdks = sdk_codes();
    // Sanity of the scan: the codes of the condition that once differed.
    for (language, codes) in &sdks {
        for code in ["egress-denied", "body-too-large", "http-error"] {
            assert!(codes.contains(code), "{language} reports {code}: {codes:?}");
        }
    }
    for (code, languages, why) in LANGUAGE_ONLY {
        for language in LANGUAGES {
            assert_eq!(
                sdks[language].contains(*code),
                languages.contains(&language),
                "{code} in {language}? Only in {languages:?}: {why}"
            );
        }
    }
    let shared = |language: &str| -> BTreeSet<String> {
        sdks[language]
            .iter()
            .filter(|code| !LANGUAGE_ONLY.iter().any(|(c, _, _)| c == code))
            .cloned()
            .collect()
    };
    assert_eq!(shared("Rust"), shared("Python"), "Rust (left) and Python");
    assert_eq!(
        shared("Rust"),
        shared("JavaScript"),
        "Rust (left) and JavaScript"
    );
    assert_eq!(shared("Rust"), shared("C"), "Rust (left) and C");
}
