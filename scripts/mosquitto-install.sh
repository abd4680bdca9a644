#!/usr/bin/env bash
# Install Debian's mosquitto (the MQTT broker the alert tests start on 127.0.0.1) when it is
# missing. The package's own service is not used: the tests start the broker themselves.
set -euo pipefail
if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then
    exit 0
fi
echo "mosquitto-install: installing mosquitto" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
