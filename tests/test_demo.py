"""`stylegan-v demo` end to end with a tiny setting (2 training steps, 16 px), run as `python -m stylegan_v.cli`:
every output it prints exists and decodes (mp4 frame counts), the checkpoint opens with `stylegan_v.load` and holds
the trained G_ema of the run's last snapshot, and the loss plot and summary are written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def n_frames(path) -> int:
    import av
    with av.open(str(path)) as f: return sum(1 for _ in f.decode(video=0))


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo') / 'out'
    args = [sys.executable, '-m', 'stylegan_v.cli', 'demo', '-o', str(out), 'kimg=0.048', 'num_videos=4',
            'sample_videos=3', 'sample_frames=12', 'evidence_clips=16']
    r = subprocess.run(args, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def test_demo_outputs_exist_and_decode(demo_run):
    out, stdout = demo_run
    s = json.loads((out / 'summary.json').read_text())
    files = s['files']
    for key in ('checkpoint', 'samples_mp4', 'samples_png', 'decomposition_mp4', 'loss_plot'):
        assert Path(files[key]).stat().st_size > 0, key
        assert files[key] in stdout, f'the demo prints where {key} is'
    assert n_frames(files['samples_mp4']) == 12
    assert n_frames(files['decomposition_mp4']) == 12
    from stylegan_v.data.layout import decode_frame
    strip = decode_frame(Path(files['samples_png']).read_bytes())
    assert strip.shape == (3 * 16 * 4 + 2, 8 * 16 * 4 + 7, 3)       # 3 videos x 8 frames, 4x scaled, 1 px gaps
    assert s['train']['steps'] == 2 and s['evidence']['init']['frechet'] > 0


def test_demo_checkpoint_is_the_trained_G_ema(demo_run):
    out, _ = demo_run
    import stylegan_v
    from stylegan_v.checkpoints import load_checkpoint
    from stylegan_v.train import find_snapshots
    G = stylegan_v.load(out / 'model.safetensors')
    G_snap = load_checkpoint(find_snapshots(out / 'train')[-1], ['G_ema'])['G_ema']
    for (k, a), (_, b) in zip(G.state_dict().items(), G_snap.state_dict().items()): assert torch.equal(a, b), k
    from stylegan_v.explore import explore
    e = explore(str(out / 'model.safetensors'), length=4, prefetch=0, background=False)
    assert e is not None
