#!/usr/bin/env bash
# Builds {{name}}.wasm, the component the daemon loads, next to this script,
# with stephost/build-component.sh. Needs the Debian packages clang-15,
# lld-15 and wasi-libc (apt-get install --no-install-recommends clang-15
# lld-15 wasi-libc) and cargo: on first use it installs wit-bindgen,
# wasm-tools and the WASI adapter from crates.io into .tools/ (or
# $STEPHOST_TOOLS, to share one install between projects).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
STEPHOST_TOOLS="${STEPHOST_TOOLS:-$here/.tools}" \
    bash "$here/stephost/build-component.sh" "$here/wit" "$here/{{name}}.wasm" "$here/step.c"
echo "$here/{{name}}.wasm"
