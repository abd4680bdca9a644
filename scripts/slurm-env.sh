# Sourced by slurm-up.sh / slurm-down.sh, or by a shell:
#   source scripts/slurm-env.sh [--slurm 22.05|25.11] [STATE_DIR]
# Exports SLURM_CONF for the local test cluster (clients without it try DNS SRV and fail).
# For 25.11 it also puts that build's bin/ first on PATH and sets GW_SLURM_BIN / GW_SLURM_SBIN
# (the build's folders; scripts/slurm-build.sh --print-prefix says where it lives).
_gw_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_gw_slurm=22.05
if [[ ${1:-} == --slurm ]]; then
    _gw_slurm=${2:-}
    shift 2
fi
case "$_gw_slurm" in
    22.05)
        _gw_state=${1:-$_gw_root/.run/slurm}
        unset GW_SLURM_BIN GW_SLURM_SBIN
        ;;
    25.11)
        _gw_state=${1:-$_gw_root/.run/slurm25}
        _gw_prefix=$("$_gw_root/scripts/slurm-build.sh" --print-prefix)
        export GW_SLURM_BIN=$_gw_prefix/bin GW_SLURM_SBIN=$_gw_prefix/sbin
        case ":$PATH:" in
            *":$GW_SLURM_BIN:"*) ;;
            *) export PATH=$GW_SLURM_BIN:$PATH ;;
        esac
        unset _gw_prefix
        ;;
    *) echo "slurm-env: --slurm must be 22.05 or 25.11, not '$_gw_slurm'" >&2 ;;
esac
export SLURM_CONF=$_gw_state/slurm.conf
unset _gw_root _gw_state _gw_slurm
