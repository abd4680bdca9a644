#!/usr/bin/env bash
# Create .venv and install gpuwarden with its test tools. Safe to run again: it only
# reinstalls when pyproject.toml changed since the last successful install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "bootstrap: gpuwarden needs Python >= 3.11 ($py is $("$py" --version 2>&1))" >&2
    exit 1
fi
if ! command -v gcc >/dev/null; then
    echo "bootstrap: installing gcc (the tests compile a fake libnvidia-ml.so.1)" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.gpuwarden-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import gpuwarden.cli, grpc, pynvml, distributed" || {
        echo "bootstrap: installation failed" >&2
        exit 1
    }
    touch "$stamp"
fi
