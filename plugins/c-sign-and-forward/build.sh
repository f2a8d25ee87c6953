#!/usr/bin/env bash
# Builds c-sign-and-forward into target/other-plugins/ with the C SDK's
# build-component.sh, which installs wit-bindgen, wasm-tools and the WASI
# adapter into the git-ignored .tools/ first if they are missing, so a
# fresh clone needs only cargo and the Debian packages clang-15, lld-15
# and wasi-libc.
#
# Not a member of plugins/Cargo.toml on purpose: the host embeds every
# member of that workspace, and this plugin is loaded from its file.
set -euo pipefail

name=c-sign-and-forward
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/other-plugins/$name.wasm"

mkdir -p "$(dirname "$out")"
STEPHOST_TOOLS="${STEPHOST_TOOLS:-$root/.tools}" \
    "$root/plugins/c-sdk/build-component.sh" "$root/wit" "$out" "$here/sign_and_forward.c"
echo "$out"
