#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, lint, type-check, start the real services
# the tests need (a one-node Slurm), run every test, stop the services.
# Arguments go to pytest (e.g. -k slurm, -x).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/bootstrap.sh
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && ./scripts/typecheck.sh
echo "== mosquitto" && ./scripts/mosquitto-install.sh
echo "== slurm" && ./scripts/slurm-up.sh
trap './scripts/slurm-down.sh || true' EXIT
echo "== pytest"
.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
