#!/usr/bin/env bash
# Builds {{name}}.wasm, the component the daemon loads, next to this script,
# with componentize-js. Installs componentize-js into .tools/ (or
# $STEPHOST_TOOLS, to share one install between projects) on first use:
# needs node with npm, and network access to npm that once.
set -euo pipefail
version=0.23.0
here="$(cd "$(dirname "$0")" && pwd)"
tools="${STEPHOST_TOOLS:-$here/.tools}"
tool="$tools/componentize-js-$version"

mkdir -p "$tools"
# One installer at a time: a second npm writing into the same prefix would
# leave a mix of both.
exec 9>"$tools/.componentize-js.lock"
flock 9
if [ ! -f "$tool/.installed" ]; then
    echo "installing componentize-js $version into $tool" >&2
    rm -rf "$tool"
    npm install --silent --no-audit --no-fund --prefix "$tool" "@bytecodealliance/componentize-js@$version"
    touch "$tool/.installed"
fi
flock -u 9

# componentize-js lets the module import only files under the working
# directory.
cd "$here"
# StarlingMonkey's `http` and `fetch-event` features import wasi:http, which
# the daemon does not provide: a plugin's only network is stephost's
# `http.send`.
node "$tool/node_modules/@bytecodealliance/componentize-js/src/cli.js" \
    index.js --wit wit --world-name step-plugin \
    --disable http fetch-event --out "{{name}}.wasm"
echo "$here/{{name}}.wasm"
