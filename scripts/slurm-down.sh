#!/usr/bin/env bash
# Stop the local test Slurm started by slurm-up.sh, waiting for each daemon to exit.
#
#   scripts/slurm-down.sh [--slurm 22.05|25.11] [--ctld-only] [--keep-munge] [STATE_DIR]
#
# --slurm picks the default STATE_DIR as slurm-up.sh does (<repo>/.run/slurm for 22.05,
# <repo>/.run/slurm25 for 25.11); the daemons are found by their pid files either way.
# --ctld-only stops only slurmctld (jobs and slurmd keep running; `slurm-up.sh --ctld-only`
# brings it back). munged is stopped only when slurm-up.sh started it for this STATE_DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
ctld_only=0
keep_munge=0
slurm=22.05
state=""
while (($#)); do
    case "$1" in
        --ctld-only) ctld_only=1; shift ;;
        --keep-munge) keep_munge=1; shift ;;
        --slurm) slurm=${2:?--slurm needs 22.05 or 25.11}; shift 2 ;;
        --slurm=*) slurm=${1#*=}; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        -*) echo "slurm-down: unknown option $1" >&2; exit 2 ;;
        *) state=$1; shift ;;
    esac
done
case "$slurm" in
    22.05) state=${state:-$root/.run/slurm} ;;
    25.11) state=${state:-$root/.run/slurm25} ;;
    *) echo "slurm-down: --slurm must be 22.05 or 25.11, not '$slurm'" >&2; exit 2 ;;
esac
[[ -d $state ]] || { echo "slurm-down: no state dir $state: nothing to stop" >&2; exit 0; }

# Stop the process whose pid is in $1 (a pid file) and wait up to 20 s for it to exit.
stop_pidfile() {
    local file=$1 name=$2 pid i
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $name ($pid) still alive after 20 s, sending KILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        echo "slurm-down: stopped $name ($pid)" >&2
    fi
    rm -f "$file"
}

if ((ctld_only)); then
    stop_pidfile "$state/run/slurmctld.pid" slurmctld
    exit 0
fi
stop_pidfile "$state/run/slurmd.pid" slurmd
stop_pidfile "$state/run/slurmctld.pid" slurmctld
if ((!keep_munge)) && [[ -f $state/munged.started-by-us ]]; then
    for pid in $(cat "$state/munged.started-by-us"); do
        echo "$pid" >"$state/run/munged.pid"
        stop_pidfile "$state/run/munged.pid" munged
    done
    rm -f "$state/munged.started-by-us"
fi
