// Builds a cargo workspace of plugins for wasm32-wasip2 from a build
// script. `include!`d by host/build.rs and tests/build.rs, so both build
// their plugins exactly the same way.

/// Every member of a plugins workspace, named by its directory (which is also its package name).
fn plugin_members(plugins_dir: &Path) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(plugins_dir.join("Cargo.toml")).expect("read plugins/Cargo.toml");
    let value: toml::Value = manifest.parse().expect("plugins/Cargo.toml is valid TOML");
    value["workspace"]["members"]
        .as_array()
        .expect("plugins/Cargo.toml lists [workspace] members")
        .iter()
        .map(|m| m.as_str().expect("members are strings").to_owned())
        .collect()
}

fn build_plugins(plugins_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's settings are for the host target; passing them on
    // would compile the plugins with host flags.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE"
            || key == "RUSTFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the reference plugins in {} failed.\n\
             If the error above says the target is missing, install it with:\n    \
             rustup target add wasm32-wasip2",
            plugins_dir.display()
        );
    }
}

fn rerun_if_tree_changed(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "node_modules" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rerun_if_tree_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
