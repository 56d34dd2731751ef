#!/usr/bin/env bash
# Set up and run the whole test suite: the system packages the tests start
# for real (memcached, redis, openssl, httpd, nginx, HAProxy, tinyproxy; zsh and fish,
# whose completions are tested; prometheus for promtool, which checks the
# metrics and runs the documented alert rules), the virtualenv, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(memcached redis-server openssl apache2 nginx haproxy tinyproxy systemd zsh fish prometheus)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        # prometheus (for promtool) without its recommends: it would bring its node exporter along
        lean=() rest=()
        for pkg in "${missing[@]}"; do [ "$pkg" = prometheus ] && lean+=("$pkg") || rest+=("$pkg"); done
        ((${#rest[@]})) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${rest[@]}" >/dev/null
        ((${#lean[@]})) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
    else
        echo "missing system packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    fi
fi
bash scripts/setup.sh
exec .venv/bin/pytest -q "$@"
