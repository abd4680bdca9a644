#!/usr/bin/env bash
# Install the real servers the export tests run against, when missing: Debian's
# `victoria-metrics` (the InfluxDB line-protocol server) and `prometheus` (which scrapes the
# collector's /metrics). apt-get starts no daemon here; each test starts its own on 127.0.0.1.
# Needs root to install; does nothing when both are present.
set -euo pipefail
missing=()
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v prometheus >/dev/null || missing+=(prometheus)
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "exports-install: ${missing[*]} missing; run as root to install them" >&2
    exit 1
fi
echo "exports-install: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    apt-get update >>"$log" 2>&1
    apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        echo "exports-install: apt-get install ${missing[*]} failed" >&2
        exit 1
    }
fi
