#!/usr/bin/env bash
# The main job on a fresh machine: install gpuwarden (runtime only) into .venv, then run the
# simulated-cluster demo.
# Arguments go to `gpuwarden demo` (e.g. --duration 60s, --nodes 8).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh" --runtime
exec "$root/.venv/bin/gpuwarden" demo "$@"
