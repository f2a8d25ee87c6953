#!/usr/bin/env bash
# Builds a stephost step plugin written in C into a WebAssembly component:
#
#     build-component.sh WIT_DIR OUT.wasm SOURCE.c...
#
# Shared by every C plugin (the repository's examples and the projects
# `stephost plugin new --lang c` writes), because the chain is longer than
# one tool: wit-bindgen generates the C bindings of the contract in
# WIT_DIR, clang-15 compiles them with this SDK and the sources to a core
# module for wasm32-wasi, and wasm-tools wraps that in a component, with
# the WASI preview1 adapter translating wasi-libc's imports.
#
# The compiler comes from Debian (clang-15, lld-15, wasi-libc); the rest
# from crates.io, installed on first use into $STEPHOST_TOOLS (default
# .tools/ next to this SDK's parent directory), so a fresh checkout or
# project needs cargo and those three packages, nothing by hand. The
# versions match the wasmtime the daemon embeds: wit-bindgen and
# wasm-tools speak the same component-model encoding as its wasmparser,
# and the adapter's major version must be wasmtime's.
set -euo pipefail

wit_bindgen_version=0.46.0
wasm_tools_version=1.239.0
adapter_version=48.0.8

if [ $# -lt 3 ]; then
    echo "usage: $0 WIT_DIR OUT.wasm SOURCE.c..." >&2
    exit 2
fi
wit="$1"
out="$2"
shift 2
sdk="$(cd "$(dirname "$0")" && pwd)"
tools="${STEPHOST_TOOLS:-$(dirname "$sdk")/.tools}"

missing=()
command -v clang-15 >/dev/null || missing+=(clang-15)
command -v wasm-ld-15 >/dev/null || missing+=(lld-15)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
if [ ${#missing[@]} -gt 0 ]; then
    echo "a C plugin needs the Debian packages ${missing[*]}:" >&2
    echo "    apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

mkdir -p "$tools"
# One installer at a time: builds run in parallel, and a second
# `cargo install` into the same root would leave a mix of both.
# flock(1) comes with Linux (util-linux); where it is missing (macOS), a
# lock directory stands in: mkdir creates one atomically.
lock="$tools/.c-toolchain.lock"
if command -v flock >/dev/null 2>&1; then
    take_lock() { exec 9>"$lock"; flock 9; }
    drop_lock() { flock -u 9; }
else
    take_lock() {
        until mkdir "$lock.d" 2>/dev/null; do
            echo "waiting for $lock.d (remove it if no other build is running)" >&2
            sleep 2
        done
        trap 'rmdir "$lock.d" 2>/dev/null || true' EXIT
    }
    drop_lock() { rmdir "$lock.d"; trap - EXIT; }
fi

# Without CARGO_TARGET_DIR, cargo install builds in a temporary directory
# and removes it afterwards: the tools' build (1 GB) is not worth keeping.
install_crate() { # crate version features
    local dir="$tools/$1-$2"
    if [ ! -f "$dir/.installed" ]; then
        need_cargo
        echo "installing $1 $2 into $dir" >&2
        rm -rf "$dir"
        env -u CARGO_TARGET_DIR cargo install --quiet --locked --no-default-features \
            --features "$3" --root "$dir" "$1@$2"
        touch "$dir/.installed"
    fi
}

need_cargo() {
    command -v cargo >/dev/null || {
        echo "a C plugin needs cargo once, to install wit-bindgen, wasm-tools and the WASI adapter from crates.io into $tools" >&2
        exit 1
    }
}

take_lock
install_crate wit-bindgen-cli "$wit_bindgen_version" c
install_crate wasm-tools "$wasm_tools_version" component
adapter_dir="$tools/wasi-preview1-adapter-$adapter_version"
adapter="$adapter_dir/wasi_snapshot_preview1.reactor.wasm"
if [ ! -f "$adapter_dir/.installed" ]; then
    # The adapter ships only inside a library crate; a program of three
    # lines writes its bytes out.
    need_cargo
    echo "extracting the WASI preview1 adapter $adapter_version into $adapter_dir" >&2
    rm -rf "$adapter_dir"
    mkdir -p "$adapter_dir/src"
    cat >"$adapter_dir/Cargo.toml" <<TOML
[package]
name = "write-wasi-adapter"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$adapter_version"

# Not a member of any workspace around the tools directory.
[workspace]
TOML
    cat >"$adapter_dir/src/main.rs" <<'RUST'
fn main() {
    let out = std::env::args_os().nth(1).expect("usage: write-wasi-adapter OUT");
    std::fs::write(out, wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .expect("write the adapter");
}
RUST
    (cd "$adapter_dir" && CARGO_TARGET_DIR="$adapter_dir/target" cargo run --quiet -- "$adapter")
    rm -rf "$adapter_dir/target"
    touch "$adapter_dir/.installed"
fi
drop_lock

work="$(mktemp -d)"
tmp="$(mktemp "$(dirname "$out")/.$(basename "$out").XXXXXX")"
trap 'rm -rf "$work" "$tmp"' EXIT
# wit-bindgen names every file it writes; say nothing unless it fails.
if ! "$tools/wit-bindgen-cli-$wit_bindgen_version/bin/wit-bindgen" c "$wit" \
    --world step-plugin --out-dir "$work/bindings" >"$work/wit-bindgen.log" 2>&1; then
    cat "$work/wit-bindgen.log" >&2
    exit 1
fi
# A reactor: no main, the component's exports are the entry points, and
# wasm-tools makes _initialize (wasi-libc's constructors) the component's
# start function, run once per instance.
clang-15 --target=wasm32-wasi -std=c11 -O2 -Wall -Wextra -mexec-model=reactor \
    -fuse-ld=lld -Wl,--strip-debug \
    -I "$work/bindings" -I "$sdk" \
    -o "$work/core.wasm" \
    "$@" "$sdk/stephost.c" "$sdk/stephost_json.c" "$sdk/stephost_canonical.c" \
    "$work/bindings/step_plugin.c" \
    "$work/bindings/step_plugin_component_type.o"
"$tools/wasm-tools-$wasm_tools_version/bin/wasm-tools" component new "$work/core.wasm" \
    --adapt "wasi_snapshot_preview1=$adapter" -o "$tmp"
chmod 644 "$tmp"
# Renamed into place, so a reader never sees half a component.
mv -f "$tmp" "$out"
