#!/usr/bin/env bash
# Start a real one-node Slurm (munged, slurmctld, slurmd) for tests and demos.
#
#   scripts/slurm-up.sh [--slurm 22.05|25.11] [--proctrack linuxproc|cgroup] [--ctld-only] [STATE_DIR]
#
# --slurm 22.05 (the default) runs Debian's packages (installed when missing) on Slurm's
# default ports; STATE_DIR defaults to <repo>/.run/slurm. --slurm 25.11 runs Slurm 25.11
# built by scripts/slurm-build.sh (built on first use, cached outside the clone) beside it, on
# ports 6917/6918 with cluster name gpuwarden25, job ids from 1000000 and cgroups disabled;
# STATE_DIR defaults to <repo>/.run/slurm25. Both share one munged and the host's name as
# node name. Writes slurm.conf / gres.conf / cgroup.conf (4 fake GPUs as char devices),
# starts the daemons and waits until sinfo shows the node usable. Writes STATE_DIR/env
# (`export SLURM_CONF=...`, and PATH for 25.11).
# Idempotent: when the cluster is already up with the same config, it does nothing; stale
# daemons are stopped (and waited for) first. --ctld-only starts only slurmctld (after a
# `slurm-down.sh --ctld-only`); running jobs survive the controller restart.
# Needs root; works without systemd. The comments below say why each setting is there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
proctrack=linuxproc
slurm=22.05
ctld_only=0
state=""
while (($#)); do
    case "$1" in
        --proctrack) proctrack=${2:?--proctrack needs linuxproc or cgroup}; shift 2 ;;
        --proctrack=*) proctrack=${1#*=}; shift ;;
        --slurm) slurm=${2:?--slurm needs 22.05 or 25.11}; shift 2 ;;
        --slurm=*) slurm=${1#*=}; shift ;;
        --ctld-only) ctld_only=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "slurm-up: unknown option $1" >&2; exit 2 ;;
        *) state=$1; shift ;;
    esac
done
case "$proctrack" in
    linuxproc|cgroup) ;;
    *) echo "slurm-up: --proctrack must be linuxproc or cgroup, not '$proctrack'" >&2; exit 2 ;;
esac
case "$slurm" in
    22.05) default_state=$root/.run/slurm ;;
    25.11)
        default_state=$root/.run/slurm25
        if [[ $proctrack != linuxproc ]]; then
            echo "slurm-up: --slurm 25.11 runs with cgroups disabled: --proctrack linuxproc only" >&2
            exit 2
        fi
        ;;
    *) echo "slurm-up: --slurm must be 22.05 or 25.11, not '$slurm'" >&2; exit 2 ;;
esac
state=${state:-$default_state}
mkdir -p "$state"
state=$(cd "$state" && pwd)
if [[ $slurm == 25.11 ]]; then
    "$here/slurm-build.sh" >/dev/null || { echo "slurm-up: building Slurm 25.11 failed" >&2; exit 1; }
fi
# shellcheck source=scripts/slurm-env.sh
source "$here/slurm-env.sh" --slurm "$slurm" "$state"
sbin=${GW_SLURM_SBIN:-/usr/sbin}

log() { echo "slurm-up: $*" >&2; }
die() {
    log "ERROR: $*"
    for f in "$state/log/slurmctld.log" "$state/log/slurmd.log"; do
        [[ -f $f ]] && { echo "--- tail $f" >&2; tail -n 25 "$f" >&2; }
    done
    exit 1
}

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-up: must run as root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi

# --- install ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge \
        >"$state/apt.log" 2>&1; then
        apt-get update >>"$state/apt.log" 2>&1
        apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge \
            >>"$state/apt.log" 2>&1 || { tail -n 20 "$state/apt.log" >&2; die "apt-get install failed"; }
    fi
fi

# --- munge ------------------------------------------------------------------------------
start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if [[ ! -f /etc/munge/munge.key ]]; then
        mungekey --create >/dev/null
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    local i
    for ((i = 0; i < 50; i++)); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            pidof munged >"$state/munged.started-by-us" || true
            return 0
        fi
        sleep 0.1
    done
    die "munged did not start (munge -n | unmunge fails)"
}

# --- config -----------------------------------------------------------------------------
host=$(hostname -s)
write_config() {
    local dir=$1
    mkdir -p "$state/spool/ctld" "$state/spool/d" "$state/log" "$state/run"
    local i
    for i in 0 1 2 3; do
        # An unused major (195 is nvidia's, absent here): stat works, open gives ENXIO.
        # Never clone /dev/null: a devices cgroup would then deny /dev/null itself.
        [[ -c $state/fakegpu$i ]] || mknod -m 666 "$state/fakegpu$i" c 195 "$i"
    done
    local task=task/none cluster=gpuwarden
    [[ $slurm == 25.11 ]] && cluster=gpuwarden25
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-up.sh: a one-node test cluster with 4 fake GPUs.
ClusterName=$cluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/$proctrack
TaskPlugin=$task
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=16000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ $slurm == 25.11 ]]; then
        # Beside the 22.05 cluster on this host: its own ports, and job ids that cannot be
        # mistaken for the other cluster's. (The 22.05 file stays byte for byte as it was, so
        # a running 22.05 cluster is not restarted for a changed config.)
        cat >>"$dir/slurm.conf" <<EOF
SlurmctldPort=6917
SlurmdPort=6918
FirstJobId=1000000
EOF
    fi
    cat >"$dir/gres.conf" <<EOF
AutoDetect=off
NodeName=$host Name=gpu File=$state/fakegpu[0-3]
EOF
    if [[ $slurm == 25.11 ]]; then
        # proctrack/linuxproc and task/none need no cgroup; 25.11 would otherwise insist on
        # a cgroup hierarchy it can use.
        echo "CgroupPlugin=disabled" >"$dir/cgroup.conf"
    else
        cat >"$dir/cgroup.conf" <<EOF
CgroupPlugin=autodetect
CgroupAutomount=yes
ConstrainDevices=no
ConstrainCores=no
ConstrainRAMSpace=no
EOF
    fi
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# 25.11: the build's default config path names the running cluster, so its commands and
# pyslurm work without SLURM_CONF too.
link_default_conf() {
    [[ $slurm == 25.11 ]] || return 0
    mkdir -p "$GW_SLURM_BIN/../etc"
    ln -sfn "$state/slurm.conf" "$GW_SLURM_BIN/../etc/slurm.conf"
}

if [[ $slurm == 25.11 ]]; then ctld_port=6917 d_port=6918; else ctld_port=6817 d_port=6818; fi

# Fail clearly when a daemon of another state dir (another checkout's cluster) holds our port.
refuse_busy_port() {
    local port=$1 line pid conf
    line=$(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1) || return 0
    [[ -n $line ]] || return 0
    pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -n 1 | cut -d= -f2)
    conf=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^SLURM_CONF=//p' || true)
    die "port $port is taken by pid ${pid:-?}${conf:+ (SLURM_CONF=$conf)}: another Slurm $slurm test cluster runs; use its state dir (GPUWARDEN_SLURM_STATE / GPUWARDEN_SLURM25_STATE for the tests) or stop it with scripts/slurm-down.sh --slurm $slurm ITS_STATE_DIR"
}

node_state() { sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1; }

wait_node_usable() {
    local deadline=$((SECONDS + 60)) st=""
    while ((SECONDS < deadline)); do
        st=$(node_state || true)
        [[ $st =~ ^(idle|mixed|allocated|completing)$ ]] && return 0
        sleep 0.3
    done
    die "node $host not usable after 60 s (sinfo state: '${st:-no answer}')"
}

start_ctld() {
    pid_alive "$state/run/slurmctld.pid" && return 0
    refuse_busy_port "$ctld_port"
    "$sbin/slurmctld" || die "slurmctld failed to start"
    local i
    for ((i = 0; i < 100; i++)); do
        scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
        pid_alive "$state/run/slurmctld.pid" || { ((i > 5)) && die "slurmctld exited"; }
        sleep 0.2
    done
    die "slurmctld does not answer scontrol ping after 20 s"
}

# --- main -------------------------------------------------------------------------------
start_munge

if ((ctld_only)); then
    [[ -f $state/slurm.conf ]] || die "--ctld-only: no $state/slurm.conf; run slurm-up.sh first"
    start_ctld
    wait_node_usable
    log "slurmctld up"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
write_config "$tmp"
same_config=1
for f in slurm.conf gres.conf cgroup.conf; do
    cmp -s "$tmp/$f" "$state/$f" || same_config=0
done

if ((same_config)) && pid_alive "$state/run/slurmctld.pid" && pid_alive "$state/run/slurmd.pid" \
    && [[ $(node_state || true) =~ ^(idle|mixed|allocated|completing)$ ]]; then
    link_default_conf
    log "already up ($state)"
    exit 0
fi

# Stale or different: stop what runs and wait for it to exit, else an old slurmd
# re-registers with the new controller.
"$here/slurm-down.sh" --keep-munge "$state" >/dev/null 2>&1 || true
for f in slurm.conf gres.conf cgroup.conf; do cp "$tmp/$f" "$state/$f"; done
{
    printf 'export SLURM_CONF=%q\n' "$state/slurm.conf"
    if [[ $slurm == 25.11 ]]; then printf 'export PATH=%q:"$PATH"\n' "$GW_SLURM_BIN"; fi
} >"$state/env"

t0=$SECONDS
start_ctld
refuse_busy_port "$d_port"
"$sbin/slurmd" || die "slurmd failed to start"
wait_node_usable
link_default_conf
log "Slurm $slurm up in $((SECONDS - t0)) s: node $host $(node_state), proctrack/$proctrack; source $state/env"
