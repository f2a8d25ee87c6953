#!/usr/bin/env bash
# Builds js-sign-and-forward into target/other-plugins/ with componentize-js,
# installing componentize-js into the git-ignored .tools/ first if it is
# missing, so a fresh clone needs only node with npm.
#
# Not a member of plugins/Cargo.toml on purpose: the host embeds every
# member of that workspace, and this plugin is loaded from its file.
set -euo pipefail

name=js-sign-and-forward
version=0.23.0
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${STEPHOST_TOOLS:-$root/.tools}"
tool="$tools/componentize-js-$version"
out_dir="$root/target/other-plugins"
out="$out_dir/$name.wasm"

mkdir -p "$tools" "$out_dir"
# One installer at a time: tests build in parallel, and a second npm
# writing into the same prefix would leave a mix of both.
# flock(1) comes with Linux (util-linux); where it is missing (macOS), a
# lock directory stands in: mkdir creates one atomically.
lock="$tools/.componentize-js.lock"
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
take_lock
if [ ! -f "$tool/.installed" ]; then
    echo "installing componentize-js $version into $tool" >&2
    rm -rf "$tool"
    npm install --silent --no-audit --no-fund --prefix "$tool" "@bytecodealliance/componentize-js@$version"
    touch "$tool/.installed"
fi
drop_lock

# Written next to the result and renamed, so a reader never sees half a
# component.
tmp="$(mktemp "$out_dir/.$name.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# componentize-js lets the module import only files under the working
# directory, and the plugin imports the SDK from a sibling directory.
cd "$root/plugins"
# StarlingMonkey's `http` and `fetch-event` features import wasi:http,
# which the host does not link: a plugin's only network is stephost's
# `http.send`. Without them the component imports only wasi:cli, clocks,
# io and random besides the stephost interfaces.
node "$tool/node_modules/@bytecodealliance/componentize-js/src/cli.js" \
    "$name/index.js" --wit "$root/wit" --world-name step-plugin \
    --disable http fetch-event --out "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$out"
echo "$out"
