#!/usr/bin/env bash
# Create .venv and install gpuwarden into it.
#
#   bootstrap.sh            gpuwarden with its test tools (pytest, mypy, ruff, dask, ...):
#                           what scripts/test.sh and development need
#   bootstrap.sh --runtime  gpuwarden, its runtime dependencies and the dashboard's (Textual):
#                           what the demo needs
#
# Safe to run again: it installs only when pyproject.toml changed since the last successful
# install, or when the test tools are asked for and only the runtime is installed. The stamp
# file .venv/.gpuwarden-installed records which of the two was installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
want=test
case "${1:-}" in
    "") ;;
    --runtime) want=runtime ;;
    *)
        echo "usage: $0 [--runtime]" >&2
        exit 2
        ;;
esac
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "bootstrap: gpuwarden needs Python >= 3.11 ($py is $("$py" --version 2>&1))" >&2
    exit 1
fi
if [ "$want" = test ] && ! command -v gcc >/dev/null; then
    echo "bootstrap: installing gcc (the tests compile a fake libnvidia-ml.so.1)" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi
stamp=.venv/.gpuwarden-installed
have=none
if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
    have=$(cat "$stamp")
    have=${have:-test} # an empty stamp was written by the older, test-only bootstrap
fi
if [ "$have" = test ] || [ "$have" = "$want" ]; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
# pip's notes about this machine's package index locations are noise to a user.
quiet() { grep -v "^WARNING: Location" || true; }
if [ "$want" = runtime ]; then
    # The demo's install shows no build-backend warnings (setuptools' notes on editable
    # installs); the test install keeps them, for the developers who can act on them.
    export PYTHONWARNINGS=ignore
fi
if [ "$want" = test ]; then
    echo "bootstrap: installing gpuwarden and its test tools into .venv" >&2
    target=".[test]"
    check="import gpuwarden.cli, grpc, pynvml, distributed, pytest"
else
    echo "bootstrap: installing gpuwarden into .venv (runtime and dashboard only)" >&2
    target=".[tui]"
    check="import gpuwarden.cli, grpc, pynvml, textual"
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
.venv/bin/python -m pip install -q -e "$target" 2>&1 | quiet
.venv/bin/python -c "$check" || {
    echo "bootstrap: installation failed" >&2
    exit 1
}
echo "$want" >"$stamp"
