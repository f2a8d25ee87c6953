//! The SDK sources `plugin new` copies into a project, embedded in the
//! binary so that scaffolding needs no stephost checkout: the Rust crate
//! `stephost-guest` (vendored whole, its own copy of the contract
//! included), the Python package `stephost`, the JavaScript module
//! `stephost.js`, and the C header, sources and build script.
//!
//! The lists are written out by hand, one `include_str!` a file; the test
//! below walks the SDK directories and fails when a file there is missing
//! from its list, so a new SDK module cannot be forgotten.

/// One embedded file: its path inside the SDK (and inside the project's
/// copy of it) and its text.
pub(super) type Embedded = (&'static str, &'static str);

/// `guest-sdk/`, written to `vendor/stephost-guest/` of a Rust project.
pub(super) const RUST: &[Embedded] = &[
    ("Cargo.toml", include_str!("../../../guest-sdk/Cargo.toml")),
    ("README.md", include_str!("../../../guest-sdk/README.md")),
    (
        "wit/stephost.wit",
        include_str!("../../../guest-sdk/wit/stephost.wit"),
    ),
    ("src/lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    (
        "src/bindings.rs",
        include_str!("../../../guest-sdk/src/bindings.rs"),
    ),
    (
        "src/callbacks.rs",
        include_str!("../../../guest-sdk/src/callbacks.rs"),
    ),
    (
        "src/context.rs",
        include_str!("../../../guest-sdk/src/context.rs"),
    ),
    (
        "src/document.rs",
        include_str!("../../../guest-sdk/src/document.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../guest-sdk/src/http.rs"),
    ),
    ("src/log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    (
        "src/outcome.rs",
        include_str!("../../../guest-sdk/src/outcome.rs"),
    ),
    (
        "src/secrets.rs",
        include_str!("../../../guest-sdk/src/secrets.rs"),
    ),
    (
        "src/signing.rs",
        include_str!("../../../guest-sdk/src/signing.rs"),
    ),
];

/// The package of `plugins/python-sdk/`, written next to a Python
/// project's `app.py`, where componentize-py finds it.
pub(super) const PYTHON: &[Embedded] = &[(
    "stephost/__init__.py",
    include_str!("../../../plugins/python-sdk/stephost/__init__.py"),
)];

/// The module of `plugins/js-sdk/`, written next to a JavaScript
/// project's `index.js` (componentize-js resolves relative imports only).
pub(super) const JS: &[Embedded] = &[(
    "stephost.js",
    include_str!("../../../plugins/js-sdk/stephost.js"),
)];

/// `plugins/c-sdk/`, written to `stephost/` of a C project: the project's
/// `build.sh` runs `stephost/build-component.sh`, which compiles the step
/// with the SDK's sources.
pub(super) const C: &[Embedded] = &[
    (
        "stephost.h",
        include_str!("../../../plugins/c-sdk/stephost.h"),
    ),
    (
        "stephost.c",
        include_str!("../../../plugins/c-sdk/stephost.c"),
    ),
    (
        "stephost_json.c",
        include_str!("../../../plugins/c-sdk/stephost_json.c"),
    ),
    (
        "stephost_canonical.c",
        include_str!("../../../plugins/c-sdk/stephost_canonical.c"),
    ),
    (
        "build-component.sh",
        include_str!("../../../plugins/c-sdk/build-component.sh"),
    ),
];

/// The version of the Rust SDK: the `version` of its `[package]`.
pub(super) fn rust_version() -> &'static str {
    let manifest = RUST[0].1;
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("guest-sdk/Cargo.toml states its version as version = \"X.Y.Z\"")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ lives in the repository root")
            .to_owned()
    }

    /// Every file under `dir`, relative to it, skipping what builds and
    /// interpreters leave behind.
    fn files(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![dir.to_owned()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if ["target", "__pycache__", "node_modules"].contains(&name.as_str())
                    || name.starts_with('.')
                    || name.ends_with(".pyc")
                    || name.ends_with(".tgz")
                    || name == "Cargo.lock"
                {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(dir).unwrap();
                    found.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        found
    }

    /// Each file of `dir` (but those in `packaging`, which a project does
    /// not need) is embedded under its own path, with its current text.
    fn assert_embedded(dir: &Path, embedded: &[Embedded], packaging: &[&str]) {
        let on_disk: Vec<String> = files(dir)
            .into_iter()
            .filter(|f| !packaging.contains(&f.as_str()))
            .collect();
        let mut listed: Vec<String> = embedded.iter().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(
            listed,
            on_disk,
            "the SDK files in {} and the ones host/src/scaffold/sdk.rs embeds differ: \
             add an include_str! line for each new file",
            dir.display()
        );
        for (path, text) in embedded {
            assert_eq!(
                std::fs::read_to_string(dir.join(path)).unwrap(),
                *text,
                "{path}"
            );
        }
    }

    #[test]
    fn every_sdk_file_is_embedded() {
        let root = repo();
        assert_embedded(&root.join("guest-sdk"), RUST, &[]);
        assert_embedded(
            &root.join("plugins/python-sdk"),
            PYTHON,
            &["pyproject.toml", "README.md"],
        );
        assert_embedded(
            &root.join("plugins/js-sdk"),
            JS,
            &["package.json", "README.md"],
        );
        assert_embedded(&root.join("plugins/c-sdk"), C, &["README.md"]);
    }

    /// The Rust SDK carries its own copy of the contract (a crate may not
    /// reach outside itself); it must be the contract.
    #[test]
    fn the_rust_sdk_carries_the_contract_itself() {
        let root = repo();
        assert_eq!(
            std::fs::read_to_string(root.join("guest-sdk/wit/stephost.wit")).unwrap(),
            std::fs::read_to_string(root.join("wit/stephost.wit")).unwrap(),
            "guest-sdk/wit/stephost.wit must be a copy of wit/stephost.wit: \
             cp wit/stephost.wit guest-sdk/wit/"
        );
        let bindings = std::fs::read_to_string(root.join("guest-sdk/src/bindings.rs")).unwrap();
        assert!(bindings.contains("path: \"wit\""), "{bindings}");
    }

    /// Vendored into a project, the crate must stand alone: nothing
    /// inherited from a workspace that is not there, no path out of it.
    #[test]
    fn the_rust_sdk_manifest_stands_alone() {
        let manifest = RUST[0].1;
        for line in manifest
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
        {
            assert!(
                !line.contains("workspace") && !line.contains("path"),
                "guest-sdk/Cargo.toml: {line}"
            );
        }
        assert!(!rust_version().is_empty());
    }
}
