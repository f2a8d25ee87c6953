#!/usr/bin/env bash
# Builds python-sign-and-forward into target/other-plugins/ with
# componentize-py, installing componentize-py into the git-ignored .tools/
# first if it is missing, so a fresh clone needs only python3 with pip.
#
# Not a member of plugins/Cargo.toml on purpose: the host embeds every
# member of that workspace, and this plugin is loaded from its file.
set -euo pipefail

name=python-sign-and-forward
version=0.25.1
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${STEPHOST_TOOLS:-$root/.tools}"
tool="$tools/componentize-py-$version"
out_dir="$root/target/other-plugins"
out="$out_dir/$name.wasm"

mkdir -p "$tools" "$out_dir"
# One installer at a time: tests build in parallel, and a second pip
# writing into the same --target would leave a mix of both.
# flock(1) comes with Linux (util-linux); where it is missing (macOS), a
# lock directory stands in: mkdir creates one atomically.
lock="$tools/.componentize-py.lock"
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
    echo "installing componentize-py $version into $tool" >&2
    rm -rf "$tool"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --target "$tool" "componentize-py==$version"
    touch "$tool/.installed"
fi
drop_lock

# Written next to the result and renamed, so a reader never sees half a
# component.
tmp="$(mktemp "$out_dir/.$name.XXXXXX")"
# The sources are built from a copy: the interpreter componentize-py runs
# to snapshot the plugin writes __pycache__ next to what it imports, and
# the host's build script watches plugins/ for changes.
src="$(mktemp -d)"
trap 'rm -rf "$tmp" "$src"' EXIT
mkdir "$src/stephost"
cp "$here/sign_and_forward.py" "$src/"
cp "$root/plugins/python-sdk/stephost/"*.py "$src/stephost/"
PYTHONPATH="$tool" python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' \
    --wit-path "$root/wit" --world step-plugin --quiet \
    componentize sign_and_forward --python-path "$src" --output "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$out"
echo "$out"
