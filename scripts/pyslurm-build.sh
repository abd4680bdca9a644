#!/usr/bin/env bash
# Build pyslurm 25.11.2 against the Slurm 25.11 of scripts/slurm-build.sh, once, and install
# it into a Python environment.
#
#   scripts/pyslurm-build.sh [PYTHON]
#
# PYTHON defaults to <repo>/.venv/bin/python. The wheel is cached in <slurm prefix>/wheels
# (next to the Slurm build it was compiled against, so a new Slurm build gets a new wheel);
# an installed pyslurm of that version is left alone. pyslurm links libslurmfull with an
# rpath to the build's lib/slurm, so no LD_LIBRARY_PATH is needed at import. Log:
# <slurm prefix>/wheels/build.log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
version=25.11.2
python=${1:-$root/.venv/bin/python}

log() { echo "pyslurm-build: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x $python ]] || die "no Python at $python (run scripts/bootstrap.sh first)"
installed() {
    "$python" - "$version" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
sys.exit(0 if md.version("pyslurm") == sys.argv[1] else 1)
EOF
}
if installed; then
    exit 0
fi

prefix=$("$here/slurm-build.sh")
wheels=$prefix/wheels
mkdir -p "$wheels"
exec 9>"$wheels/.lock"
flock 9
pyver=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if ! compgen -G "$wheels/pyslurm-$version-$pyver-*.whl" >/dev/null; then
    log "building pyslurm $version against $prefix (log: $wheels/build.log)"
    t0=$SECONDS
    SLURM_INCLUDE_DIR=$prefix/include SLURM_LIB_DIR=$prefix/lib PYSLURM_BUILD_JOBS=2 \
        nice -n 19 "$python" -m pip wheel --no-deps --no-binary pyslurm -w "$wheels" \
        "pyslurm==$version" >"$wheels/build.log" 2>&1 \
        || { tail -n 30 "$wheels/build.log" >&2; die "pip wheel pyslurm==$version failed"; }
    log "built in $((SECONDS - t0)) s"
fi
"$python" -m pip install --no-deps --no-index --find-links "$wheels" "pyslurm==$version" \
    >>"$wheels/build.log" 2>&1 \
    || { tail -n 20 "$wheels/build.log" >&2; die "pip install of the cached pyslurm wheel failed"; }
log "pyslurm $version installed into $python"
