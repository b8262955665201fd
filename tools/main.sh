#!/usr/bin/env bash
# The main job: set up (or refresh) .venv, then run the most complete end-to-end run the workbench has.
# Output goes to ${1:-runs_out/demo}.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh
venv=${STYLEGAN_V_VENV:-$root/.venv}
export PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 MPLBACKEND=Agg
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$root/.torch_extensions}
stylegan-v info
if stylegan-v --help | grep -q '^  demo '; then
  stylegan-v demo --outdir "${1:-runs_out/demo}"
fi
