#!/usr/bin/env bash
# Create .venv and install staplectl with its test dependencies into it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "staplectl installed in $(pwd)/.venv ($(.venv/bin/staplectl --version))"
