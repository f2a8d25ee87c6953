//! Builds plugins written in other languages by running their build
//! scripts, exactly as an author would. Shared by `other_languages` and
//! `sdk_codes`; a module of each test binary rather than harness code,
//! because only these two need it.
//!
//! The scripts install their toolchain (componentize-py, componentize-js;
//! wit-bindgen, wasm-tools and the WASI adapter for C) into the git-ignored
//! `.tools/` on first use, so the first run needs python3 with pip, node
//! with npm, cargo, and network access to PyPI, npm and crates.io; C also
//! needs the Debian packages clang-15, lld-15 and wasi-libc. A failure says
//! so instead of skipping, since a skipped test would hide a broken
//! language.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_owned()
}

/// Where the build scripts install their toolchains; shared by every build
/// so each tool is installed once per checkout.
pub fn tools_dir() -> PathBuf {
    repo_root().join(".tools")
}

/// Runs `command`, a prepared run of the build script `script`, with
/// `STEPHOST_TOOLS` set, and returns the component path the script prints
/// on its last line of standard output. Panics with the script's output if
/// it fails.
pub fn run_build(command: &mut Command, script: &Path) -> PathBuf {
    let output = command
        .env("STEPHOST_TOOLS", tools_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}). A Python build needs python3 with pip, a JavaScript build node \
         with npm, a C build the Debian packages clang-15, lld-15 and wasi-libc (`apt-get \
         install --no-install-recommends clang-15 lld-15 wasi-libc`) and cargo, and on first \
         use network access to PyPI, npm or crates.io to install its tools into {}; a Rust \
         build needs `rustup target add wasm32-wasip2`.\n--- stdout\n{stdout}\n\
         --- stderr\n{stderr}",
        script.display(),
        output.status,
        tools_dir().display(),
    );
    let wasm = PathBuf::from(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{} printed no component path", script.display())),
    );
    assert!(
        wasm.is_file(),
        "{} reported {}, which does not exist",
        script.display(),
        wasm.display()
    );
    wasm
}
