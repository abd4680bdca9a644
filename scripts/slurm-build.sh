#!/usr/bin/env bash
# Build Slurm 25.11 from source once, into a cache outside the clone, and print its prefix.
#
#   scripts/slurm-build.sh [--print-prefix]
#
# The prefix is $GPUWARDEN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/gpuwarden)
# /slurm-25.11.7-<first 12 hex of the source tarball's sha256>; a finished build there is
# reused as is. The source is a vendored copy when one is found (../shared/vendor next to the
# repository or next to the main checkout of a git worktree, or $GPUWARDEN_VENDOR_DIR), checked
# against that folder's SHA256SUMS and the checksum pinned here; otherwise the release is
# downloaded from SchedMD and checked against its pinned checksum. Installs the -dev packages
# configure needs (libmunge-dev, libjson-c-dev: without json-c `squeue --json` fails).
# --print-prefix prints where the build is (or would be) and exits without building.
# Needs root only to apt-get install what is missing. Log: <prefix>.log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

version=25.11.7
# Vendored copy: `git archive` of tag slurm-25-11-7-1 (configure included).
vendored_name=slurm-$version.tar.xz
vendored_sha256=f71f1e5f33a72e7864104a6857e86862eac3c4e5e348c92dd0c10dbe03a82dec
# SchedMD's release tarball (a different archive from the vendored one, so its own checksum).
# The pin is the digest other Slurm packagers recorded for this file; it could not be checked
# from the machine this was written on (no network). GPUWARDEN_SLURM_SHA256 overrides it.
download_url=https://download.schedmd.com/slurm/slurm-$version.tar.bz2
download_sha256=${GPUWARDEN_SLURM_SHA256:-8f71a55b755e41f07d0fc790e9d0c94bd810dc1b324cd308545b9a0fd5f66df6}

print_only=0
while (($#)); do
    case "$1" in
        --print-prefix) print_only=1; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "slurm-build: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "slurm-build: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cache=${GPUWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpuwarden}

# Folders that may hold a vendored copy, in order.
vendor_dirs() {
    [[ -n ${GPUWARDEN_VENDOR_DIR:-} ]] && echo "$GPUWARDEN_VENDOR_DIR"
    echo "$root/../shared/vendor"
    local common
    if common=$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
        echo "$(dirname "$common")/../shared/vendor"
    fi
}

# Print the path of a vendored tarball whose checksum matches both SHA256SUMS and the pin.
find_vendored() {
    local dir file listed
    while read -r dir; do
        file=$dir/$vendored_name
        [[ -f $file && -f $dir/SHA256SUMS ]] || continue
        listed=$(awk -v n="$vendored_name" '$2 == n || $2 == "*" n { print $1 }' "$dir/SHA256SUMS")
        if [[ $listed != "$vendored_sha256" ]]; then
            log "ignoring $file: SHA256SUMS lists '${listed:-nothing}', pinned $vendored_sha256"
            continue
        fi
        if [[ $(sha256sum "$file" | cut -d' ' -f1) != "$vendored_sha256" ]]; then
            log "ignoring $file: its sha256 is not the pinned $vendored_sha256"
            continue
        fi
        echo "$(cd "$dir" && pwd -P)/$vendored_name"
        return 0
    done < <(vendor_dirs)
    return 1
}

if tarball=$(find_vendored); then
    sha=$vendored_sha256
    source_kind=vendored
else
    tarball=""
    sha=$download_sha256
    source_kind=download
    [[ $sha =~ ^[0-9a-f]{64}$ ]] || die "GPUWARDEN_SLURM_SHA256 is not a sha256 (64 hex digits): '$sha'"
fi
prefix=$cache/slurm-$version-${sha:0:12}
if ((print_only)); then
    echo "$prefix"
    exit 0
fi
if [[ -f $prefix/.gpuwarden-built ]] && [[ $(cat "$prefix/.gpuwarden-built") == "$sha" ]]; then
    echo "$prefix"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/slurm-$version.lock"
flock 9 # one build at a time; a second caller waits and then finds it built
if [[ -f $prefix/.gpuwarden-built ]] && [[ $(cat "$prefix/.gpuwarden-built") == "$sha" ]]; then
    echo "$prefix"
    exit 0
fi

buildlog=$prefix.log
: >"$buildlog"
t0=$SECONDS
need=()
for pkg in libmunge-dev libjson-c-dev pkg-config gcc make xz-utils bzip2 python3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
    [[ $(id -u) -eq 0 ]] || die "${need[*]} missing: run as root to apt-get install them"
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${need[@]}" >>"$buildlog" 2>&1; then
        apt-get update >>"$buildlog" 2>&1
        apt-get install -y --no-install-recommends "${need[@]}" >>"$buildlog" 2>&1 \
            || { tail -n 20 "$buildlog" >&2; die "apt-get install ${need[*]} failed"; }
    fi
fi

work=$(mktemp -d "$cache/build-slurm-$version.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [[ $source_kind == download ]]; then
    log "downloading $download_url"
    tarball=$work/slurm-$version.tar.bz2
    curl -fsSL --retry 3 -o "$tarball" "$download_url" || die "download of $download_url failed"
fi
got=$(sha256sum "$tarball" | cut -d' ' -f1)
[[ $got == "$sha" ]] || die "$tarball: sha256 $got, expected $sha"

log "building Slurm $version from $source_kind $tarball into $prefix (log: $buildlog)"
tar -xf "$tarball" -C "$work"
src=$work/slurm-$version
[[ -x $src/configure ]] || die "$tarball does not unpack to slurm-$version/configure"
rm -rf "$prefix"
(
    cd "$src"
    nice -n 19 ./configure --prefix="$prefix" --sysconfdir="$prefix/etc" --disable-debug
    nice -n 19 make -j2
    make install
) >>"$buildlog" 2>&1 || { tail -n 30 "$buildlog" >&2; die "build failed (see $buildlog)"; }
"$prefix/bin/scontrol" --version >>"$buildlog" 2>&1 || die "installed scontrol does not run"
echo "$sha" >"$prefix/.gpuwarden-built"
log "built in $((SECONDS - t0)) s"
echo "$prefix"
