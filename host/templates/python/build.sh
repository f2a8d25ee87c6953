#!/usr/bin/env bash
# Builds {{name}}.wasm, the component the daemon loads, next to this script,
# with componentize-py. Installs componentize-py into .tools/ (or
# $STEPHOST_TOOLS, to share one install between projects) on first use:
# needs python3 with pip, and network access to PyPI that once.
set -euo pipefail
version=0.25.1
here="$(cd "$(dirname "$0")" && pwd)"
tools="${STEPHOST_TOOLS:-$here/.tools}"
tool="$tools/componentize-py-$version"

mkdir -p "$tools"
# One installer at a time: a second pip writing into the same --target
# would leave a mix of both.
exec 9>"$tools/.componentize-py.lock"
flock 9
if [ ! -f "$tool/.installed" ]; then
    echo "installing componentize-py $version into $tool" >&2
    rm -rf "$tool"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --target "$tool" "componentize-py==$version"
    touch "$tool/.installed"
fi
flock -u 9

PYTHONPATH="$tool" python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' \
    --wit-path "$here/wit" --world step-plugin --quiet \
    componentize app --python-path "$here" --output "$here/{{name}}.wasm"
echo "$here/{{name}}.wasm"
