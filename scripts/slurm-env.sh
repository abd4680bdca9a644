# Sourced by slurm-up.sh / slurm-down.sh, or by a shell: `source scripts/slurm-env.sh [STATE_DIR]`.
# Exports SLURM_CONF for the local test cluster (clients without it try DNS SRV and fail).
_gw_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_gw_state=${1:-$_gw_root/.run/slurm}
export SLURM_CONF=$_gw_state/slurm.conf
unset _gw_root _gw_state
