#!/usr/bin/env bash
# The main job: set up (or refresh) .venv, then run the most complete end-to-end run the workbench has
# (`stylegan-v demo`: built-in data -> a few minutes of StyleGAN-V training on the CPU -> learning numbers, a safe
# checkpoint of the trained G_ema, a sample video grid + PNG frame strip, a content/motion decomposition video and a
# loss plot; it prints where each is). Usage: bash tools/main.sh [OUTDIR] [key=value ...]: the output folder
# (default runs_out/demo), then demo fields (e.g. kimg=0.5; `stylegan-v demo --help` lists them). A folder that already
# holds a trained demo is reused (and the script says so) instead of being trained again; STYLEGAN_V_RETRAIN=1 retrains. When the reference data sits beside the repository, the demo also renders
# from the original implementation's snapshot pickle (loaded without executing its code).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh
venv=${STYLEGAN_V_VENV:-$root/.venv}
export PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 MPLBACKEND=Agg
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$root/.torch_extensions}
stylegan-v info
extra=()
fixture=${STYLEGAN_V_SHARED:-$root/../shared}/parity/config_a/fixture.pkl
[ -f "$fixture" ] && extra=(--checkpoint "$fixture")
outdir=runs_out/demo
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then outdir=$1; shift; fi   # a first argument without '=' is the folder
for a in "$@"; do [[ "$a" == outdir=* ]] && outdir=${a#outdir=}; done
if [ -f "$outdir/model.safetensors" ] && [ "${STYLEGAN_V_RETRAIN:-0}" != 1 ]; then   # a finished demo: reuse, never replace
    echo "main job: $outdir already holds a trained demo ($outdir/model.safetensors); reusing it, not training again."
    [ $# -gt 0 ] && echo "  the fields given ($*) were not applied to it."
    echo "  To train again: bash tools/main.sh NEW_OUTDIR [key=value ...], or STYLEGAN_V_RETRAIN=1 bash tools/main.sh (replaces it)."
    ls "$outdir"
    exit 0
fi
[ "${STYLEGAN_V_RETRAIN:-0}" = 1 ] && extra+=(--force)   # stylegan-v demo refuses to replace a finished demo otherwise
stylegan-v demo --outdir "$outdir" "${extra[@]}" "$@"
