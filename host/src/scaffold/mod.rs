//! `stephost plugin new`: writes a ready-to-build plugin project in Rust,
//! Python, JavaScript or C, so that a first plugin is minutes away: a sample
//! step that passes, a `build.sh` that produces `NAME.wasm`, and a
//! `stephost.toml` that loads it for `stephost run`.
//!
//! Everything is embedded in the binary — the templates under
//! `host/templates/`, the SDKs ([`sdk`]) and `wit/stephost.wit` — so the
//! project a binary writes always matches the contract that binary speaks,
//! and the binary alone is enough: a Rust project gets the SDK crate
//! vendored under `vendor/stephost-guest/` (a path dependency inside the
//! project; the crate's own dependencies come from crates.io as usual),
//! a Python or JavaScript project the SDK module next to its step, a C
//! project the SDK's header, sources and build script under `stephost/`.
//! No file written names a path outside the project.

mod sdk;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context as _;

/// The contract, for the bindings generators of Python, JavaScript and C.
const WIT: &str = include_str!("../../../wit/stephost.wit");

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A `cdylib` crate on `stephost-guest`, built for `wasm32-wasip2`.
    Rust,
    /// A module built with componentize-py.
    #[value(alias = "py")]
    Python,
    /// An ES module built with componentize-js.
    #[value(alias = "javascript")]
    Js,
    /// C compiled by clang-15 against wasi-libc, made a component by
    /// wasm-tools.
    C,
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown language {s:?}: use rust, python, js or c"))
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        })
    }
}

/// One file of a project: path relative to the project, text with
/// `{{name}}`-style placeholders, and whether it is a script to run.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        executable: true,
    }
}

const COMMON: &[File] = &[
    file(
        "stephost.toml",
        include_str!("../../templates/common/stephost.toml"),
    ),
    file(
        "step.json",
        include_str!("../../templates/common/step.json"),
    ),
    file(
        "input.json",
        include_str!("../../templates/common/input.json"),
    ),
    // Not `.gitignore` in the source tree, where git would obey it.
    file(
        ".gitignore",
        include_str!("../../templates/common/gitignore"),
    ),
];

const RUST: &[File] = &[
    file(
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.in"),
    ),
    file(
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    script("build.sh", include_str!("../../templates/rust/build.sh")),
    file("README.md", include_str!("../../templates/rust/README.md")),
];

const PYTHON: &[File] = &[
    file("app.py", include_str!("../../templates/python/app.py")),
    file("wit/stephost.wit", WIT),
    script("build.sh", include_str!("../../templates/python/build.sh")),
    file(
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
];

const JS: &[File] = &[
    file("index.js", include_str!("../../templates/js/index.js")),
    file("wit/stephost.wit", WIT),
    script("build.sh", include_str!("../../templates/js/build.sh")),
    file("README.md", include_str!("../../templates/js/README.md")),
];

const C: &[File] = &[
    file("step.c", include_str!("../../templates/c/step.c")),
    file("wit/stephost.wit", WIT),
    script("build.sh", include_str!("../../templates/c/build.sh")),
    file("README.md", include_str!("../../templates/c/README.md")),
];

/// Where a language's SDK goes in the project, and its files.
fn sdk_files(lang: Lang) -> (&'static str, &'static [sdk::Embedded]) {
    match lang {
        Lang::Rust => ("vendor/stephost-guest", sdk::RUST),
        Lang::Python => ("", sdk::PYTHON),
        Lang::Js => ("", sdk::JS),
        Lang::C => ("stephost", sdk::C),
    }
}

/// A plugin name that is also a valid daemon plugin name, crate name and
/// file name: lower-case letters, digits and `-`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    anyhow::ensure!(
        ok,
        "invalid plugin name {name:?}: use lower-case letters, digits and '-', starting with a letter"
    );
    Ok(())
}

/// Writes a new plugin project named `name` in `lang` into `dir`, which
/// must not exist or be empty: an author's files are never overwritten.
///
/// `./build.sh` in the project writes `NAME.wasm`, and `stephost.toml`
/// there loads it: `stephost run --plugin NAME --config
/// stephost.toml --step-config step.json --input input.json` runs the sample
/// step. A Rust project depends on its vendored `stephost-guest` by path
/// and version (drop the path to take the crate from a registry instead).
pub fn new_plugin(dir: &Path, name: &str, lang: Lang) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("{} exists and is not a directory", dir.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty; choose a new directory for the plugin",
            dir.display()
        );
    }
    let vars = [
        ("{{name}}", name.to_owned()),
        ("{{crate}}", name.replace('-', "_")),
        ("{{sdk_version}}", sdk::rust_version().to_owned()),
    ];
    let templates = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
        Lang::C => C,
    };
    for file in COMMON.iter().chain(templates) {
        let text = vars
            .iter()
            .fold(file.text.to_owned(), |text, (key, value)| {
                text.replace(key, value)
            });
        write(&dir.join(file.path), &text, file.executable)?;
    }
    // The SDK is copied as it is: its files are code, not templates.
    let (under, files) = sdk_files(lang);
    for (path, text) in files {
        write(&dir.join(under).join(path), text, false)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    if executable {
        make_executable(path)?;
    }
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    // Without a mode bit, the script runs as `bash build.sh`.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_case_insensitively_with_aliases() {
        assert_eq!("rust".parse::<Lang>(), Ok(Lang::Rust));
        assert_eq!("Python".parse::<Lang>(), Ok(Lang::Python));
        assert_eq!("py".parse::<Lang>(), Ok(Lang::Python));
        assert_eq!("javascript".parse::<Lang>(), Ok(Lang::Js));
        assert!(
            "cobol"
                .parse::<Lang>()
                .unwrap_err()
                .contains("rust, python, js or c")
        );
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            assert_eq!(lang.to_string().parse::<Lang>(), Ok(lang));
        }
    }

    #[test]
    fn names_must_suit_daemon_crate_and_file() {
        check_name("my-step2").unwrap();
        for bad in ["", "My", "2fast", "a_b", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_every_file_with_placeholders_filled_and_never_overwrites() {
        let root = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            let dir = root.path().join(lang.to_string());
            new_plugin(&dir, "my-step", lang).unwrap();
            let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
            assert!(build.contains("my-step.wasm"), "{lang}: {build}");
            for entry in walk(&dir) {
                let text = std::fs::read_to_string(&entry).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    entry.display()
                );
            }
            let toml = std::fs::read_to_string(dir.join("stephost.toml")).unwrap();
            assert!(toml.contains("[plugins.my-step]"), "{toml}");
            let err = new_plugin(&dir, "my-step", lang).unwrap_err();
            assert!(err.to_string().contains("not empty"), "{err}");
        }
        let cargo = std::fs::read_to_string(root.path().join("rust/Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-step\""), "{cargo}");
        assert!(
            cargo.contains(&format!(
                "stephost-guest = {{ path = \"vendor/stephost-guest\", version = \"{}\" }}",
                sdk::rust_version()
            )),
            "{cargo}"
        );
        let vendored = root.path().join("rust/vendor/stephost-guest");
        for (path, text) in sdk::RUST {
            assert_eq!(&std::fs::read_to_string(vendored.join(path)).unwrap(), text);
        }
        let py = root.path().join("python");
        assert!(py.join("stephost/__init__.py").is_file());
        assert_eq!(
            std::fs::read_to_string(py.join("wit/stephost.wit")).unwrap(),
            WIT
        );
        assert!(root.path().join("js/stephost.js").is_file());
        let c = root.path().join("c");
        for (path, text) in sdk::C {
            assert_eq!(
                &std::fs::read_to_string(c.join("stephost").join(path)).unwrap(),
                text
            );
        }
        assert!(c.join("wit/stephost.wit").is_file());
    }

    /// The binary alone makes the project: nothing written points back
    /// at the checkout the binary was built from.
    #[test]
    fn no_file_names_the_checkout() {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let checkout = checkout.to_str().unwrap();
        let root = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            let dir = root.path().join(lang.to_string());
            new_plugin(&dir, "my-step", lang).unwrap();
            for entry in walk(&dir) {
                let text = std::fs::read_to_string(&entry).unwrap();
                assert!(!text.contains(checkout), "{}", entry.display());
            }
        }
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
