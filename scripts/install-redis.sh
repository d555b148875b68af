#!/usr/bin/env bash
# Make sure `redis-server` is on PATH for the Redis tests (tests/fleet/): Debian's package, installed
# when it is missing and this machine allows it (root and apt-get). The tests start their own
# server on a free loopback port; nothing here starts or enables a service.
#
#   scripts/install-redis.sh           # prints the path of redis-server on stdout
#
# Exit status: 0 and the path on stdout when redis-server is there; 3 when it is missing and
# cannot be installed here (the tests then skip and say why); anything else is a failed install.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
    exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis: redis-server is not on PATH, and installing it needs root and apt-get" >&2
    exit 3
fi
export DEBIAN_FRONTEND=noninteractive
install() {
    # The package's scripts would start a system-wide server: policy-rc.d says no (status 101).
    local policy=/usr/sbin/policy-rc.d created=""
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends redis-server >&2 || status=$?
    [[ -n "$created" ]] && rm -f "$policy"
    return "$status"
}
echo "install-redis: installing Debian's redis-server (first run only)" >&2
install || { apt-get update -qq >&2 && install; }
command -v redis-server
