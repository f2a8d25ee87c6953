//! The SDKs are packages of their language's registry, at the version of
//! the contract they speak: `stephost-guest` (crates.io), `stephost-plugin`
//! for Python (`pip install plugins/python-sdk`) and for JavaScript (`npm
//! pack` of `plugins/js-sdk`). C has no registry; its SDK states the
//! version in `stephost.h`. The Rust crate's
//! packaging (`cargo package -p stephost-guest`) is not run here: it
//! compiles the crate again in a target dir of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// The first `KEY = "VALUE"` line's value.
fn assignment(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} = \"...\" in:\n{text}"))
}

/// `X.Y.Z` of `package stephost:plugin@X.Y.Z;`.
fn contract_version() -> String {
    let wit = read("wit/stephost.wit");
    wit.lines()
        .find_map(|line| line.strip_prefix("package stephost:plugin@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("wit/stephost.wit declares package stephost:plugin@X.Y.Z;")
        .to_owned()
}

#[test]
fn every_sdk_has_the_version_of_the_contract() {
    let contract = contract_version();
    let package: Value = serde_json::from_str(&read("plugins/js-sdk/package.json")).unwrap();
    for (what, version) in [
        (
            "guest-sdk/Cargo.toml",
            assignment(&read("guest-sdk/Cargo.toml"), "version"),
        ),
        (
            "plugins/python-sdk/pyproject.toml",
            assignment(&read("plugins/python-sdk/pyproject.toml"), "version"),
        ),
        (
            "plugins/python-sdk/stephost/__init__.py",
            assignment(
                &read("plugins/python-sdk/stephost/__init__.py"),
                "__version__",
            ),
        ),
        (
            "plugins/js-sdk/package.json",
            package["version"].as_str().unwrap().to_owned(),
        ),
        (
            "plugins/c-sdk/stephost.h",
            assignment(
                &read("plugins/c-sdk/stephost.h")
                    .replace("#define STEPHOST_SDK_VERSION ", "STEPHOST_SDK_VERSION = "),
                "STEPHOST_SDK_VERSION",
            ),
        ),
    ] {
        assert_eq!(
            version, contract,
            "{what} must be at the contract's version"
        );
    }
}

/// A copy of `dir` of the repository in a temporary directory, so that
/// packaging writes nothing into the checkout.
fn copy_of(dir: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-R")
        .arg(repo().join(dir).join("."))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

#[test]
fn the_js_sdk_packs_with_npm() {
    let copy = copy_of("plugins/js-sdk");
    let out = Command::new("npm")
        .args(["pack", "--dry-run", "--json"])
        .current_dir(copy.path())
        .output()
        .expect("npm runs (node with npm is needed for the JavaScript SDK)");
    assert!(out.status.success(), "{out:?}");
    let packed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packed = &packed[0];
    assert_eq!(packed["name"], "stephost-plugin");
    assert_eq!(packed["version"], contract_version().as_str());
    let mut files: Vec<&str> = packed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["README.md", "package.json", "stephost.js"]);
}

#[test]
fn the_python_sdk_installs_with_pip() {
    let copy = copy_of("plugins/python-sdk");
    let target = tempfile::tempdir().unwrap();
    // pip builds the package with flit_core, which it fetches from PyPI
    // the first time (as the build scripts fetch componentize-py).
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
        ])
        .args(["--no-deps", "--target"])
        .arg(target.path())
        .arg(copy.path())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(target.path().join("stephost/__init__.py")).unwrap(),
        read("plugins/python-sdk/stephost/__init__.py")
    );
    let dist_info = target
        .path()
        .join(format!("stephost_plugin-{}.dist-info", contract_version()));
    assert!(dist_info.is_dir(), "{}", dist_info.display());
}
