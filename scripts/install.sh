#!/usr/bin/env bash
# Installs everything Trunkline needs on a fresh Debian-family machine: the real SIP peers the tests drive
# (when run as root), then a virtualenv with the server, its local models and the dev tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DEBS=(kamailio sip-tester baresip sox espeak-ng tshark)

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "install: Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install: not root; the integration tests need these Debian packages: ${missing[*]}" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.trunkline-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e ".[models,dev]"; } \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "install: pip failed; full log in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
echo "install: ok ($("$VENV/bin/python" --version), $VENV)"
