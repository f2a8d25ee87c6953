#!/usr/bin/env bash
# Builds {{name}}.wasm, the component the daemon loads, next to this script.
# Needs the Rust target once: rustup target add wasm32-wasip2
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
cargo build --release --target wasm32-wasip2
target_dir="${CARGO_TARGET_DIR:-$here/target}"
cp "$target_dir/wasm32-wasip2/release/{{crate}}.wasm" "$here/{{name}}.wasm"
echo "$here/{{name}}.wasm"
