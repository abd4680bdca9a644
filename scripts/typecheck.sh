#!/usr/bin/env bash
# mypy (strict) over the installed layout: gpuwarden.agent lives in agent/, and so on.
# mypy cannot follow setuptools' package-dir mapping, so build a tree of symlinks that looks
# like the installed package and check that.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
farm=$root/build/typecheck
rm -rf "$farm"
mkdir -p "$farm/gpuwarden"
for entry in "$root"/gpuwarden/*; do ln -s "$entry" "$farm/gpuwarden/"; done
for sub in agent collector proto sim tui; do ln -s "$root/$sub" "$farm/gpuwarden/$sub"; done
cd "$root"
MYPYPATH=$farm "$py" -m mypy --config-file "$root/pyproject.toml" -p gpuwarden "$@"
