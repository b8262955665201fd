"""`stylegan-v demo` end to end with a tiny setting (2 training steps, 16 px), run as `python -m stylegan_v.cli`:
every output it prints exists and decodes (mp4 and GIF frame counts), the checkpoint opens with `stylegan_v.load` and
holds the trained G_ema of the run's last snapshot, and the loss plot and summary are written. A short training run
of the demo's recipe (16 px) lowers the Fréchet distance of `LearningProbe`; the full demo's learning targets run with
STYLEGAN_V_SLOW=1."""
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
    args = [sys.executable, '-m', 'stylegan_v.cli', 'demo', '-o', str(out), 'kimg=0.048', 'num_videos=4', 'resolution=16',
            'channels=16', 'sample_videos=3', 'sample_frames=12', 'evidence_clips=16']
    r = subprocess.run(args, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def test_demo_outputs_exist_and_decode(demo_run):
    out, stdout = demo_run
    s = json.loads((out / 'summary.json').read_text())
    files = s['files']
    for key in ('checkpoint', 'samples_mp4', 'samples_gif', 'samples_png', 'decomposition_mp4', 'decomposition_gif', 'loss_plot'):
        assert Path(files[key]).stat().st_size > 0, key
        assert files[key] in stdout, f'the demo prints where {key} is'
    assert n_frames(files['samples_mp4']) == 12
    assert n_frames(files['decomposition_mp4']) == 12
    import PIL.Image, PIL.ImageSequence
    for key, width in (('samples_gif', 3 * 18 - 2), ('decomposition_gif', 3 * 18 - 2)):   # 3 videos, 2 px gaps, 4x scaled
        with PIL.Image.open(files[key]) as im:   # (a GIF merges identical consecutive frames, adding their durations)
            durations = [f.info['duration'] for f in PIL.ImageSequence.Iterator(im)]
            assert im.size == (width * 4, (16 if key == 'samples_gif' else width) * 4), key
            assert sum(durations) == 12 * 80, (key, durations)           # 12 frames at 12 fps: 80 ms (GIF: 1/100 s units)
    from stylegan_v.data.layout import decode_frame
    strip = decode_frame(Path(files['samples_png']).read_bytes())
    assert strip.shape == (3 * 16 * 4 + 2, 8 * 16 * 4 + 7, 3)       # 3 videos x 8 frames, 4x scaled, 1 px gaps
    assert s['train']['steps'] == 2 and s['evidence']['init']['frechet'] > 0
    assert s['train']['sec_per_kimg'] > 0 and 'last_tick_sec_per_kimg' in s['train']   # the run's mean, and the last tick's
    # 2 steps miss the targets: the demo says which, and what the one default run in ten that missed needed
    assert 'learning targets: missed: ' in stdout and '`kimg=168` trains 7000 steps' in stdout


def test_demo_again_refuses_to_replace_a_finished_one(demo_run):
    out, _ = demo_run
    before = (out / 'model.safetensors').stat().st_mtime_ns
    r = subprocess.run([sys.executable, '-m', 'stylegan_v.cli', 'demo', '-o', str(out), 'kimg=0.048'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'already holds a finished demo' in r.stderr and '--force' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (out / 'model.safetensors').stat().st_mtime_ns == before


def test_demo_checkpoint_is_the_trained_G_ema(demo_run):
    out, _ = demo_run
    import stylegan_v
    from stylegan_v.checkpoints import load_checkpoint
    from stylegan_v.runs import find_snapshots
    G = stylegan_v.load(out / 'model.safetensors')
    G_snap = load_checkpoint(find_snapshots(out / 'train')[-1], ['G_ema'])['G_ema']
    for (k, a), (_, b) in zip(G.state_dict().items(), G_snap.state_dict().items()): assert torch.equal(a, b), k
    from stylegan_v.explore import explore
    e = explore(str(out / 'model.safetensors'), length=4, prefetch=0, background=False)
    assert e is not None


def test_short_training_lowers_the_frechet_distance(tmp_path):
    from stylegan_v.demo import DemoConfig, LearningProbe, demo_dataset, demo_run_config, probe_dataset
    from stylegan_v.trainer import Trainer
    torch.set_num_threads(1)
    # G_ema's half-life: 125 of the 250 steps; time features 16 frames apart, as the default's before the fifteenth round:
    # the default's slower ones (32) learn motion later than a toy run's 250 steps (nbs/09_demo.ipynb)
    cfg = DemoConfig(resolution=16, channels=16, num_videos=4, ema_kimg=1.0, time_period=16)
    trainer = Trainer(demo_run_config(cfg, demo_dataset(cfg, tmp_path)))
    probe = LearningProbe(probe_dataset(trainer.rc), num_clips=64)
    before = probe(trainer.G_ema)
    clips = iter(trainer.clip_loader())
    for _ in range(250): trainer.train_step(trainer.next_rounds(clips))
    after = probe(trainer.G_ema)
    assert after['frechet'] < 0.5 * before['frechet'], (before, after)
    assert abs(np.log(after['motion_ratio'])) < abs(np.log(before['motion_ratio'])), (before, after)


@pytest.mark.skipif(not os.environ.get('STYLEGAN_V_SLOW'), reason='the full demos (6-9 and 20-40 minutes): set STYLEGAN_V_SLOW=1')
@pytest.mark.timeout(3 * 3600)
@pytest.mark.parametrize('longer', [False, True], ids=['default', 'longer'])
def test_demo_meets_the_learning_targets(tmp_path, longer):
    """The default demo meets issue 18's targets: measured at 1.6x the floor, motion ratio 1.32, edges 1.14 (data seed
    0, 2 threads, as this test runs it), and in 8 of 9 runs with 1 torch thread on data seeds 0-8 (seed 5 had not
    learned to move by step 4200: 3.8x, motion 0.63; it met the targets from step 5600, and with train.seed=1 at 4200)
    (nbs/09_demo.ipynb 'Choosing the route', fifteenth and sixteenth rounds).
    `stylegan-v demo kimg=336 ema_kimg=8 labels=true time_period=16` (`LONGER_DEMO`) is the run that draws discs and
    squares: it meets the distance and edge targets with outlines within 2x their floor and shapes that travel as far
    as the data's (0.98x, edges 1.17, outline 1.5x, glide 0.93 measured, eleventh round), and with its two classes
    drawn apart (disc-square gap 0.24 measured, twelfth round); its motion ratio, 1.34 measured, is above the band (its
    objects morph), so it is reported here, not asserted."""
    from stylegan_v.demo import DemoConfig, LONGER_DEMO, longer_demo_misses, meets_targets, run_demo
    s = run_demo(DemoConfig(outdir=str(tmp_path / 'demo'), **(LONGER_DEMO if longer else {})), log=lambda *a: None)
    e = s['evidence']['trained']
    if not longer:
        assert not meets_targets(e), (meets_targets(e), e)
    else:
        print(f"LONGER_DEMO motion ratio {e['motion_ratio']:.3g}")
        assert not longer_demo_misses(e), (longer_demo_misses(e), e)


def test_learning_bench_prints_the_curves_and_saves_them(tmp_path):
    "`bench/learning.py` (issue 18's learning curves) at a toy size: a table row per measurement, JSON lines, a plot, and --replot."
    from PIL import Image
    bench = Path(__file__).resolve().parents[1] / 'bench' / 'learning.py'
    out = tmp_path / 'learning'
    toy = ['resolution=16', 'channels=16', 'num_videos=4', 'num_frames=16', 'w_dim=16', 'mapping_layers=2']
    r = subprocess.run([sys.executable, str(bench), '--steps', '4', '--every', '2', '--clips', '16',
                        '--threads', '1', '--out', str(out), '--label', 'toy', *toy], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if l.split()[:5] == ['step', 'min', 'cpu_s', 'FD', 'FD/floor'])
    assert [int(l.split()[0]) for l in lines[head + 1:head + 4]] == [0, 2, 4]
    rows = [json.loads(l) for l in (out / 'learning_toy.jsonl').read_text().splitlines()]
    assert [row['step'] for row in rows] == [0, 2, 4]
    for row in rows:
        assert row['floor'] > 0 and row['frechet'] > 0 and row['motion_ratio'] > 0 and row['edge_ratio'] > 0 and row['rss_gb'] > 0
        assert row['shape_ratio'] > 0 and row['shape_ratio_floor'] > 0 and row['glide_real'] > 0 and row['glide_ratio'] >= 0
        assert {'disc_square_gap', 'disc_square_gap_real'} <= row.keys() and 0 <= row['shimmer_ratio'] and row['shimmer_real'] >= 0
        assert row['motion_gaps'] == [1, 2, 4, 8] and len(row['motion_by_gap_ratio']) == 4 and min(row['motion_by_gap_real']) > 0
    assert lines[head].split()[-6:] == ['shape', 'glide', 'shimmer', 'motion1', 'gap', 'rss_GB']
    assert rows[0]['cpu_s'] == 0 and rows[-1]['cpu_s'] > 0
    assert Image.open(out / 'learning_toy.png').size[0] > 500
    r = subprocess.run([sys.executable, str(bench), '--replot', str(out / 'learning_toy.jsonl'), '--out', str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (out / 'learning_compare.png').is_file(), r.stderr[-2000:]
    r = subprocess.run([sys.executable, str(bench), '--steps', '1', '--out', str(out), 'kimg=0'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'kimg: expected a positive' in r.stderr
