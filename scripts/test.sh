#!/usr/bin/env bash
# The whole test suite, as CI runs it: install, lint, type-check, start the real services
# the tests need (one-node Slurm 22.05 and 25.11 clusters; victoria-metrics and prometheus
# installed), run every test, stop the services.
# Arguments go to pytest (e.g. -k slurm, -x).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/bootstrap.sh
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && ./scripts/typecheck.sh
echo "== export servers" && ./scripts/exports-install.sh
echo "== mosquitto" && ./scripts/mosquitto-install.sh
if ! command -v tmux >/dev/null; then  # a real terminal for the dashboard's test
    echo "== tmux" && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends tmux >/dev/null
fi
# Both test clusters: Debian's 22.05 and 25.11 beside it (built once into a cache outside
# the clone: minutes the first time, nothing after), and pyslurm 25.11 built against it.
trap './scripts/slurm-down.sh --slurm 25.11 || true; ./scripts/slurm-down.sh || true' EXIT
echo "== slurm 22.05" && ./scripts/slurm-up.sh
echo "== slurm 25.11" && ./scripts/slurm-up.sh --slurm 25.11
echo "== pyslurm" && ./scripts/pyslurm-build.sh
echo "== pytest"
.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
