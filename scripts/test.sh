#!/usr/bin/env bash
# Set up and run the whole test suite: the system packages the tests start
# for real (memcached, redis, openssl, httpd, nginx, HAProxy, tinyproxy; zsh and fish,
# whose completions are tested), the virtualenv, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(memcached redis-server openssl apache2 nginx haproxy tinyproxy systemd zsh fish)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing system packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    fi
fi
bash scripts/setup.sh
exec .venv/bin/pytest -q "$@"
