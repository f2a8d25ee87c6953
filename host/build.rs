//! Builds the reference step plugins in `plugins/` for `wasm32-wasip2` so the
//! daemon can embed them: `stephost serve` works with no other files, and no
//! plugin binary is ever committed.
//!
//! The plugins are their own cargo workspace with their own target
//! directory, so this nested build neither fights the outer build for its
//! lock nor compiles host crates for the wrong target.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    let plugins_dir = root.join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets this"));
    // Outside OUT_DIR so the result survives `cargo clean -p stephost` and is
    // shared by every profile: compiling the plugins twice would be waste.
    let target_dir = env::var_os("STEPHOST_PLUGIN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("wasm-plugins"));

    println!("cargo:rerun-if-env-changed=STEPHOST_PLUGIN_TARGET_DIR");
    // Files, not directories: cargo scans a directory recursively, which
    // would include plugin build outputs and rebuild the host every time.
    // A new plugin or module always edits a listed file (a manifest, a
    // `mod` line), so this catches it.
    println!(
        "cargo:rerun-if-changed={}",
        plugins_dir.join("Cargo.toml").display()
    );
    for dir in ["plugins", "guest-sdk", "wit"] {
        rerun_if_tree_changed(&root.join(dir));
    }

    if !plugins_dir.join("Cargo.toml").exists() {
        // A packaged host crate without the plugin sources: no built-ins.
        println!(
            "cargo:warning=no plugins/ workspace at {}; building without built-in plugins",
            plugins_dir.display()
        );
        std::fs::write(
            out_dir.join("builtin_plugins.rs"),
            "/// No built-in plugins in this build.\npub const BUILTIN_PLUGINS: &[(&str, &[u8])] = &[];\n",
        )
        .expect("write builtin_plugins.rs");
        return;
    }
    build_plugins(&plugins_dir, &target_dir);

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut generated = String::from(
        "/// The reference plugins compiled into this binary: (name, component bytes).\n\
         pub const BUILTIN_PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for name in plugin_members(&plugins_dir) {
        let stem = name.replace('-', "_");
        let wasm = release.join(format!("{stem}.wasm"));
        assert!(wasm.exists(), "plugin build produced no {}", wasm.display());
        // Copy into OUT_DIR so include_bytes! reads a file this build owns.
        let copy = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&wasm, &copy).expect("copy plugin component into OUT_DIR");
        generated.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            copy.display().to_string()
        ));
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated)
        .expect("write builtin_plugins.rs");
}

// Shared with the tests crate's build script, which builds the hostile
// test plugins the same way.
include!("../build-support/wasm_plugins.rs");
