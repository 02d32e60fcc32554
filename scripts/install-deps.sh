#!/usr/bin/env bash
# Installs what rehost needs on a fresh Debian 12 machine: the Debian packages listed in
# deps/debian-packages.txt (only the missing ones), then a virtual environment at .venv with the locked
# Python dependencies and rehost itself. Safe to run again: it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t wanted < <(grep -v '^\s*#' deps/debian-packages.txt | sed '/^\s*$/d')
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || [ requirements.lock -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "Setting up .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r requirements.lock
    .venv/bin/pip install -q --no-deps -e .
    touch .venv/.installed
fi

# The one-file installer, as the control plane serves it, also on the developer's PATH.
.venv/bin/python -c "from rehost.agent.bundle import build_installer; build_installer('.venv/bin/rehost-replication-installer-init')"
