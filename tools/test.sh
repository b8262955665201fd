#!/usr/bin/env bash
# The test command: set up (or refresh) .venv, then check, in this order,
#   1. notebooks <-> package sync (nbdev_export must reproduce stylegan_v/ exactly),
#   2. notebooks are clean (nbdev_clean changes nothing),
#   3. nbdev_test: every notebook runs on the CPU (cells flagged slow / cuda are skipped),
#   4. pytest tests/: a test still running after 15 minutes fails with every thread's stack printed (pytest-timeout),
#      so a hang costs one test, not the whole run; tests that need longer say so with @pytest.mark.timeout.
# Extra arguments go to pytest (a later --timeout overrides this one).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh
bash tools/setup_browser.sh
venv=${STYLEGAN_V_VENV:-$root/.venv}
export PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 MPLBACKEND=Agg
# this checkout's package, even when the venv (STYLEGAN_V_VENV) was installed from another clone
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$root/.torch_extensions}
SECONDS=0
echo "== 1-2. sync and clean checks"; python tools/check_sync.py
echo "== 3. nbdev_test (CPU)";          nbdev_test --n_workers 2
echo "== 4. pytest";                   python -m pytest tests/ -q -rs -p no:cacheprovider --timeout 900 "$@"   # -rs: each skipped test with its reason
echo "tests finished in ${SECONDS}s"
