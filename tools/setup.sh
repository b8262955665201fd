#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv, or $STYLEGAN_V_VENV).
# Idempotent: it reinstalls only when settings.ini or setup.py changed since the last successful install.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${STYLEGAN_V_VENV:-$root/.venv}
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment in $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.stylegan-v-installed"
want=$(cat "$root/settings.ini" "$root/setup.py" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && (cd / && "$venv/bin/python" -c "import stylegan_v" 2>/dev/null); then
  echo "[setup] environment up to date ($venv)"
  exit 0
fi
echo "[setup] installing stylegan-v and its dependencies (first time: a few minutes)"
# pip's find-links warnings about this machine's local wheel store are noise; everything else is shown.
quiet_pip() { "$venv/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
quiet_pip --upgrade pip setuptools wheel
quiet_pip -e "$root[dev]"
echo "$want" > "$stamp"
echo "[setup] done"
