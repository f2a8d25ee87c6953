//! Builds the test-only plugins in `tests/plugins/` (hostile and malformed
//! components) for wasm32-wasip2, and tells the tests where they are.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("../build-support/wasm_plugins.rs");

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace root");
    let plugins_dir = manifest_dir.join("plugins");
    let target_dir = root.join("target").join("wasm-test-plugins");
    // The compiled-component cache the test daemons share (tests/src/lib.rs).
    println!(
        "cargo:rustc-env=STEPHOST_TEST_COMPILED_CACHE={}",
        root.join("target").join("test-compiled-cache").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins_dir.join("Cargo.toml").display()
    );
    rerun_if_tree_changed(&plugins_dir);
    rerun_if_tree_changed(&root.join("guest-sdk"));
    rerun_if_tree_changed(&root.join("wit"));
    build_plugins(&plugins_dir, &target_dir);
    let release = target_dir.join("wasm32-wasip2").join("release");
    for name in plugin_members(&plugins_dir) {
        let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            wasm.exists(),
            "test plugin build produced no {}",
            wasm.display()
        );
    }
    println!("cargo:rustc-env=TEST_PLUGIN_DIR={}", release.display());
}
