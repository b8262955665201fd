"""`stylegan-v sweep`: a 2 x 2 grid of tiny runs, each an executed training notebook, interrupted during the third
run (Ctrl-C), resumed by the same command, compared in an executed summary notebook; run from a folder other than the
repository, with relative paths."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stylegan_v.data.synthetic import default_synthetic_dataset
from stylegan_v.train import demo_train_config

BIN = Path(sys.executable).parent
QUICK = ['train.batch_size=4', 'train.kimg_per_tick=0.012', 'train.grid_videos=2', 'train.grid_frames=2', 'train.progress=false']
GRID = ['train.lr=0.001,0.0025', 'train.r1_gamma=0.1,1']
NAMES = ['00-lr0.001-r1_gamma0.1', '01-lr0.001-r1_gamma1', '02-lr0.0025-r1_gamma0.1', '03-lr0.0025-r1_gamma1']
ENV = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg')


@pytest.fixture
def workdir(tmp_path):
    default_synthetic_dataset(8, 16, 16, root=tmp_path / 'made').rename(tmp_path / 'data.zip')
    rc = demo_train_config('data.zip', resolution=16, kimg=0.036, channels=16).override(QUICK + ['train.snap=1'])
    (tmp_path / 'base.yaml').write_text(yaml.safe_dump(rc.to_dict()))
    return tmp_path


def sweep(workdir, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / 'stylegan-v'), 'sweep', '--config', 'base.yaml', '--outdir', 'sweep', *args],
                          cwd=workdir, capture_output=True, text=True, env=ENV, **kw)


def done(workdir) -> list[bool]:
    path = workdir / 'sweep' / 'sweep.json'
    return [r['done'] for r in json.loads(path.read_text())['runs']] if path.is_file() else []


# Slow (2 minutes), so behind the flag. It was flaky before `notebooks.CtrlCToKernel` (3 of 11 runs: the Ctrl-C reached
# only papermill's waiting loop and was lost there, or the kernel died without a snapshot); with the signal passed on
# to the kernel it passed 3 of 3 runs in a row here (2026-12-06, 114-149 s each, two training jobs beside it).
@pytest.mark.skipif(not os.environ.get('STYLEGAN_V_SLOW'), reason='slow (2 minutes): set STYLEGAN_V_SLOW=1')
def test_sweep_interrupted_after_the_second_run_resumes_and_compares(workdir):
    proc = subprocess.Popen([str(BIN / 'stylegan-v'), 'sweep', '--config', 'base.yaml', '--outdir', 'sweep', *GRID],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    third = workdir / 'sweep' / NAMES[2]
    deadline = time.time() + 600
    while not list(third.glob('network-snapshot-*.safetensors')) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)                                        # Ctrl-C during the third run
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == 'interrupted', err[-3000:]
    assert done(workdir) == [True, True, False, False], out
    kept = {n: (workdir / 'sweep' / n / 'train.ipynb').stat().st_mtime_ns for n in NAMES[:2]}

    res = sweep(workdir, *GRID, timeout=900)                               # the same command resumes
    assert res.returncode == 0, res.stderr[-3000:]
    assert f'[1/4] {NAMES[0]}: finished before, kept' in res.stdout and f'[3/4] {NAMES[2]}: resuming' in res.stdout, res.stdout
    assert f'[4/4] {NAMES[3]}: training' in res.stdout, res.stdout
    assert done(workdir) == [True] * 4
    assert {n: (workdir / 'sweep' / n / 'train.ipynb').stat().st_mtime_ns for n in NAMES[:2]} == kept
    for name, (lr, gamma) in zip(NAMES, [(0.001, 0.1), (0.001, 1), (0.0025, 0.1), (0.0025, 1)]):
        run_dir = workdir / 'sweep' / name
        t = json.loads((run_dir / 'run.json').read_text())['run_config']['train']
        assert (t['lr'], t['r1_gamma']) == (lr, gamma)
        ticks = [json.loads(l)['tick'] for l in (run_dir / 'stats.jsonl').read_text().splitlines()]
        assert ticks == sorted(set(ticks)) and ticks[-1] == 2, (name, ticks)     # the resumed run: no tick twice
    rows = list(csv.DictReader(open(workdir / 'sweep' / 'comparison.csv')))
    assert [r['run'] for r in rows] == NAMES and [r['train.lr'] for r in rows] == ['0.001', '0.001', '0.0025', '0.0025']
    assert all(float(r['kimg']) == 0.036 for r in rows)
    summary = json.loads((workdir / 'sweep' / 'summary.ipynb').read_text())
    assert 'comparing Loss/G/loss' in json.dumps(summary)
    assert (workdir / 'sweep' / 'comparison.png').stat().st_size > 0 and (workdir / 'sweep' / 'samples.png').stat().st_size > 0


def test_sweep_mistakes_end_in_one_line_before_anything_is_written(workdir):
    for args, expected in [(['train.lr=0.001,fast'], "train.lr"), (['train.nosuch=1,2'], "unknown field 'train.nosuch'"),
                           (['--zip', 'train.lr=1,2', 'train.seed=1,2,3'], 'same length'), (['outdir=a,b'], 'the sweep sets it')]:
        res = sweep(workdir, *args)
        err = res.stderr.strip()
        assert res.returncode == 2 and len(err.splitlines()) == 1 and err.startswith('stylegan-v sweep: error:'), err
        assert expected in err, err
        assert not (workdir / 'sweep').exists()


def test_sweep_writes_one_sbatch_line_per_run(workdir):
    res = sweep(workdir, '--slurm', *GRID)
    assert res.returncode == 0, res.stderr
    lines = (workdir / 'sweep' / 'sbatch.sh').read_text().splitlines()[2:]
    assert len(lines) == 4 and all(' sbatch ' in l and l.endswith('tools/slurm/train.sbatch train.batch_size=4') for l in lines)
    assert lines[3].startswith(f"PRESET={workdir}/sweep/{NAMES[3]}/config.yaml DATA={workdir}/data.zip OUTDIR={workdir}/sweep/{NAMES[3]} ")
    cfg = yaml.safe_load((workdir / 'sweep' / NAMES[3] / 'config.yaml').read_text())
    assert (cfg['train']['lr'], cfg['train']['r1_gamma'], cfg['data']['path']) == (0.0025, 1, str(workdir / 'data.zip'))
