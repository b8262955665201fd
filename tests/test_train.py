"""Training loop: exact resume after SIGKILL (between snapshots and during a snapshot write), bad-input errors, the CLI."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from stylegan_v.checkpoints import read_checkpoint
from stylegan_v.data.synthetic import default_synthetic_dataset
from stylegan_v.distributed import DistEnv
from tiny_models import tiny_run_config
from stylegan_v.config import RunConfig
from stylegan_v.loop import run_training
from stylegan_v.runs import find_snapshots, snapshot_name
from stylegan_v.snapshots import check_resume_compatible, snapshot_settings
from stylegan_v.train import cli_main, demo_train_config
from stylegan_v.trainer import Trainer, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]
STEPS = 8          # steps of run A; one tick per step, snapshots every 3 ticks (ticks 0, 3, 6 and the end)
FRAMES_PER_STEP = 4 * 3



def tiny_plan(data, *overrides: str) -> RunConfig:
    return tiny_run_config(data, STEPS, 1, 3, *overrides)


CHILD = textwrap.dedent('''
    import json, os, sys, time, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from stylegan_v.config import RunConfig
    from stylegan_v.loop import run_training
    plan = RunConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    if len(sys.argv) > 3:   # hang half-way through writing snapshot number argv[3] (then the test kills us)
        import stylegan_v.checkpoints as ck
        from stylegan_v.core import atomic_path
        real, calls, marker = ck.atomic_write_bytes, [0], sys.argv[4]
        def half_then_hang(path, data):
            calls[0] += 1
            if calls[0] < int(sys.argv[3]): return real(path, data)
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data[: len(data) // 2])
                Path(marker).write_text(str(tmp))
                time.sleep(600)
        ck.atomic_write_bytes = half_then_hang
    run_training(plan, sys.argv[2], resume='auto', log=lambda *a: None)  # start, or continue the run there
''')


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', HF_HUB_OFFLINE='1',
               TORCH_EXTENSIONS_DIR=os.environ.get('TORCH_EXTENSIONS_DIR', str(REPO / '.torch_extensions')))
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'): env.pop(k, None)
    return env


def start_child(tmp_path, plan, run_dir, *hang):
    plan_file = tmp_path / f'plan-{run_dir.name}.json'
    plan_file.write_text(json.dumps(plan.to_dict()))
    script = tmp_path / 'child.py'
    script.write_text(CHILD)
    return subprocess.Popen([sys.executable, str(script), str(plan_file), str(run_dir), *map(str, hang)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def wait_for(cond, proc, timeout=180):
    t0 = time.time()
    while not cond():
        if proc.poll() is not None: raise AssertionError(f"child exited early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        if time.time() - t0 > timeout: raise AssertionError('timed out waiting for the child')
        time.sleep(0.02)


def stats_ticks(run_dir):
    path = run_dir / 'stats.jsonl'
    return [json.loads(l)['tick'] for l in path.read_text().splitlines()] if path.exists() else []


def assert_same_state(snap_a, snap_b):
    (cfg_a, ta), (cfg_b, tb) = read_checkpoint(snap_a), read_checkpoint(snap_b)
    assert sorted(ta) == sorted(tb)
    assert cfg_a['metadata']['counters'] == cfg_b['metadata']['counters']
    differing = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:5]}"
    assert any(k.startswith('training./G_opt/state') for k in ta) and any(k.startswith('G_ema.') for k in ta)


@pytest.fixture(scope='module')
def run_a(tmp_path_factory, data16):
    "The uninterrupted reference run (in a child process, like the interrupted ones)."
    tmp = tmp_path_factory.mktemp('a')
    finish(start_child(tmp, tiny_plan(data16), tmp / 'run'))
    return tmp / 'run'


def test_sigkill_between_snapshots_resumes_bit_exact(tmp_path, data16, run_a):
    run_b = tmp_path / 'run'
    proc = start_child(tmp_path, tiny_plan(data16), run_b)
    wait_for(lambda: 4 in stats_ticks(run_b), proc)          # past the tick-3 snapshot, before the tick-6 one
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert stats_ticks(run_b)[-1] < STEPS - 1, 'the child finished before it was killed'
    finish(start_child(tmp_path, tiny_plan(data16), run_b))  # resume=latest
    assert stats_ticks(run_b) == list(range(STEPS))          # the log reads as one run: lines after the snapshot dropped
    assert_same_state(find_snapshots(run_a)[-1], find_snapshots(run_b)[-1])
    assert [p.name for p in find_snapshots(run_a)] == [p.name for p in find_snapshots(run_b)]


def test_sigkill_during_snapshot_write(tmp_path, data16, run_a):
    run_c, marker = tmp_path / 'run', tmp_path / 'hanging'
    proc = start_child(tmp_path, tiny_plan(data16), run_c, 2, marker)   # the 2nd snapshot write hangs half-way
    wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGKILL); proc.wait()
    partial = Path(marker.read_text())
    assert partial.exists() and partial.name.endswith('.partial')
    snaps = find_snapshots(run_c)
    assert [p.name for p in snaps] == [snapshot_name(FRAMES_PER_STEP)]       # only the complete tick-0 snapshot
    read_checkpoint(snaps[0])                                                # and it loads
    finish(start_child(tmp_path, tiny_plan(data16), run_c))
    assert not partial.exists()
    assert_same_state(find_snapshots(run_a)[-1], find_snapshots(run_c)[-1])


def test_resume_refuses_changed_settings(tmp_path, data16, run_a):
    with pytest.raises(Exception, match='differ in train.lr, train.r1_gamma'):
        run_training(tiny_plan(data16, 'train.lr=0.01', 'train.r1_gamma=2.0'), run_a, resume='latest')
    with pytest.raises(FileExistsError, match='resume=latest'):
        run_training(tiny_plan(data16), run_a)


def test_bad_inputs(tmp_path, data16):
    with pytest.raises(Exception, match=r'16x16 frames but the model is configured for resolution 32'):
        Trainer(tiny_plan(data16, 'data.resolution=32'))
    with pytest.raises(Exception, match=r'train.batch_size=4 \(expected a multiple of 3 process\(es\)'):
        Trainer(tiny_plan(data16), DistEnv(rank=0, world_size=3))


def test_non_finite_loss_stops_and_names_the_phase(tmp_path, data16, monkeypatch):
    step = Trainer.train_step
    def poisoned(self, rounds):   # step 0 fine (and snapshotted), then D's weights turn infinite
        step(self, rounds)
        with torch.no_grad(): next(self.D.parameters()).fill_(float('inf'))
    monkeypatch.setattr(Trainer, 'train_step', poisoned)
    plan = tiny_plan(data16, f'train.kimg={4 * FRAMES_PER_STEP / 1000}')
    with pytest.raises(TrainingDiverged, match=r'phase Gmain produced a non-finite loss \(.*Loss/G/loss.*\) at step 1 .*last good snapshot is .*000000\.012'):
        run_training(plan, tmp_path / 'run', log=lambda *a: None)


def test_cli_errors(tmp_path, data16, capsys):
    common = ['--data', str(data16), '--outdir', str(tmp_path / 'run')]
    assert cli_main(common + ['train.batchsize=3']) == 2
    assert "unknown field 'train.batchsize'" in capsys.readouterr().err
    assert cli_main(common + ['data.resolution=32', 'train.num_workers=0']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '16x16 frames but the model is configured for resolution 32' in err
    assert cli_main(['--data', str(tmp_path / 'nope'), '--outdir', str(tmp_path / 'r')]) == 2
    assert 'no such file or folder' in capsys.readouterr().err
    assert cli_main(common + ['train.dtype=fp8']) == 2
    assert "'fp32', 'fp16', 'bf16'" in capsys.readouterr().err
    assert cli_main(common + ['metrics.best_metric=fid50k_full']) == 2
    assert 'metrics.best_metric=fid50k_full (expected one of the metrics computed: fvd2048_16f)' in capsys.readouterr().err
    assert cli_main(common + ['data.resolution=16', 'model.concat_res=16', 'train.kimg=-1']) == 2   # a new user's two mistakes
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'train.kimg=-1.0 (expected > 0); model.concat_res=16 with data.resolution=16 (expected one of [8])' in err
    assert not (tmp_path / 'run').exists()


def test_cli_trains_resumes_and_runs_the_notebook(tmp_path, data16, capsys):
    import yaml
    rc = demo_train_config(data16, resolution=16, channels=16)
    cfg = tmp_path / 'run.yaml'
    cfg.write_text(yaml.safe_dump(rc.override(['train.batch_size=4']).to_dict()))
    quick = ['train.kimg_per_tick=0.012', 'train.grid_videos=2', 'train.grid_frames=2', 'train.progress=false']
    run = ['--config', str(cfg), '--outdir', str(tmp_path / 'run')]
    assert cli_main(run + ['train.kimg=0.024'] + quick) == 0
    assert cli_main(run + ['train.kimg=0.024'] + quick) == 2
    assert 'already holds a training run; pass resume=latest' in capsys.readouterr().err
    assert cli_main(run + ['train.kimg=0.036', 'resume=latest'] + quick) == 0          # a longer run may resume
    assert [json.loads(l)['tick'] for l in (tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()] == [0, 1, 2]
    assert cli_main(run + ['train.kimg=0.048', 'resume=latest', 'train.lr=0.1'] + quick) == 2
    assert 'differ in train.lr' in capsys.readouterr().err
    nb = tmp_path / 'nb'
    assert cli_main(['--notebook', '--config', str(cfg), '--outdir', str(nb), 'train.kimg=0.012'] + quick) == 0
    assert (nb / 'train.ipynb').is_file() and (nb / 'training.png').is_file() and find_snapshots(nb)


@pytest.mark.parametrize('switch', ['train.dtype=bf16', 'train.channels_last=true', 'train.dtype=fp16',
    pytest.param('train.compile=true', marks=[pytest.mark.timeout(3600), pytest.mark.skipif(os.environ.get('STYLEGAN_V_SLOW') != '1',
                                                             reason='slow (torch.compile of G on the CPU took 570 s here): set STYLEGAN_V_SLOW=1')])])
def test_precision_memory_format_and_compile_switches_train_on_cpu(tmp_path, data16, switch):
    s = run_training(tiny_plan(data16, f'train.kimg={2 * FRAMES_PER_STEP / 1000}', 'train.snap=100', switch), tmp_path / 'run', log=lambda *a: None)
    assert s['steps'] == 2 and all(math.isfinite(v) for k, v in s['stats'].items() if k.startswith('Loss/'))
    _, tensors = read_checkpoint(find_snapshots(tmp_path / 'run')[-1])
    assert all(t.dtype == torch.float32 for k, t in tensors.items() if k.startswith('G.'))   # stored as fp32 either way


def test_unloadable_metric_detector_is_refused_before_training(tmp_path, data16, monkeypatch):
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path / 'cache'))   # no detector there, and no network
    with pytest.raises(Exception, match=r'metric fvd64_16f needs the i3d detector, which could not be loaded: .*metrics.metrics=\[\]'):
        run_training(tiny_plan(data16, 'metrics.metrics=[fvd64_16f]'), tmp_path / 'run', log=lambda *a: None)
    assert not (tmp_path / 'run' / 'stats.jsonl').exists()


def test_metrics_at_snapshots_keep_last_and_best(tmp_path, data16, monkeypatch):
    from stylegan_v.generate import best_snapshot
    from stylegan_v.metrics.detectors import StandInVideoDetector, save_standin
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path / 'cache'))
    i3d = save_standin(StandInVideoDetector(), tmp_path / 'i3d_standin.pt')
    plan = tiny_plan(data16, f'train.kimg={3 * FRAMES_PER_STEP / 1000}', 'train.snap=1', 'train.keep_last=1', 'metrics.metrics=[fvd8_4f]',
                     'metrics.best_metric=fvd8_4f', f'metrics.detectors={{i3d: {i3d}}}')
    run_training(plan, tmp_path / 'run', log=lambda *a: None)
    lines = [json.loads(l) for l in (tmp_path / 'run' / 'metric-fvd8_4f.jsonl').read_text().splitlines()]
    assert [l['snapshot'] for l in lines] == [snapshot_name(n * FRAMES_PER_STEP) for n in (1, 2, 3)]
    assert all(math.isfinite(l['value']) and l['metric'] == 'fvd8_4f' for l in lines)
    best = min(lines, key=lambda l: l['value'])['snapshot']
    kept = {p.name for p in find_snapshots(tmp_path / 'run')}
    assert kept == {best, snapshot_name(3 * FRAMES_PER_STEP)}                       # the last one and the best one
    assert best_snapshot(tmp_path / 'run', 'fvd8_4f')[0].name == best             # what `generate --networks-dir` picks
    stats = [json.loads(l) for l in (tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()]
    assert [s['Metrics/fvd8_4f'] for s in stats] == [l['value'] for l in lines]


def test_keep_freed_memory_in_a_training_process():
    "stylegan-v train on a CPU keeps freed blocks mapped (glibc's mallopt); elsewhere it says it could not."
    import platform, subprocess, sys
    code = 'from stylegan_v.train import keep_freed_memory; print(keep_freed_memory())'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(platform.libc_ver()[0] == 'glibc')


# --- the tour: a run remembers itself, memory that fits, raw footage, --show-config, --detector (issue 22) ---

def quick_cli(data, run, *extra):
    return ['--data', str(data), '--outdir', str(run), 'data.resolution=16', 'model.fmaps=0.0078125', 'model.channel_max=16',
            'model.z_dim=16', 'model.w_dim=16', 'model.motion_z_dim=16', 'model.time_enc_dim=8', 'model.fp32=true',
            'model.concat_res=8', 'data.max_num_frames=16', 'train.batch_size=4', 'train.num_workers=0',
            'train.kimg_per_tick=0.012', 'train.grid_videos=2', 'train.grid_frames=2', 'train.progress=false',
            'metrics.metrics=[]', *extra]


def test_resume_latest_needs_only_the_run_folder(tmp_path, data16, capsys):
    run = tmp_path / 'run'
    assert cli_main(quick_cli(data16, run, 'train.kimg=0.012', 'train.r1_gamma=0.5')) == 0
    assert cli_main(['--outdir', str(run), 'resume=latest', 'train.kimg=0.024']) == 0        # nothing else: the run's own config
    assert [json.loads(l)['tick'] for l in (run / 'stats.jsonl').read_text().splitlines()] == [0, 1]
    capsys.readouterr()
    assert cli_main(['--outdir', str(run), 'resume=latest', 'train.kimg=0.036', 'train.r1_gamma=2']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'differ in train.r1_gamma' in err
    assert cli_main(['--outdir', str(tmp_path / 'typo'), 'resume=latest']) == 2             # a mistyped folder: no new run
    assert 'holds no training run' in capsys.readouterr().err and not (tmp_path / 'typo').exists()
    for kimg in ('0.012', '0.024'):                                                         # auto: start, then continue
        assert cli_main(quick_cli(data16, tmp_path / 'auto', 'resume=auto', f'train.kimg={kimg}')) == 0
    assert len((tmp_path / 'auto' / 'stats.jsonl').read_text().splitlines()) == 2


def test_a_run_that_failed_before_its_first_snapshot_does_not_block_a_retry(tmp_path, data16, capsys):
    run = tmp_path / 'run'
    # a fresh process: the step measurement reads the process's memory high-water mark, which a long-lived process
    # (this pytest one) may already have raised past what a step needs
    r = subprocess.run([sys.executable, '-m', 'stylegan_v.cli', 'train', *quick_cli(data16, run, 'train.kimg=0.012',
                        'train.memory_budget_gb=0.000001')], capture_output=True, text=True, timeout=600, env=child_env())
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr
    assert err.count('\n') == 1 and 'a training step on one video needs' in err and 'train.memory_budget_gb=1e-06' in err
    assert not run.exists()                                                                 # refused before writing anything
    run.mkdir(); (run / 'run.json').write_text('{"plan": {"batch": 64}}'); (run / 'reals.png').write_bytes(b'')  # a killed start
    assert cli_main(quick_cli(data16, run, 'train.kimg=0.012', 'train.batch_size=8')) == 0   # other settings: fine
    assert 'removed reals.png, run.json of a run that stopped before its first snapshot' in capsys.readouterr().out
    assert json.loads((run / 'run.json').read_text())['run_config']['train']['batch_size'] == 8 and find_snapshots(run)


def test_memory_budget_sets_the_videos_per_round(tmp_path):
    """The loop measures a step and picks the largest round that fits the budget (tested with budgets, in a process)."""
    data64 = default_synthetic_dataset(8, 16, 64, root=tmp_path / 'data64')
    def train(budget, name):
        r = subprocess.run([sys.executable, '-m', 'stylegan_v.cli', 'train', *quick_cli(data64, tmp_path / name,
                            'data.resolution=64', 'model.fmaps=0.0625', 'model.channel_max=64', 'model.concat_res=16',
                            'train.batch_size=8', 'train.kimg=0.024', f'train.memory_budget_gb={budget}')],
                           capture_output=True, text=True, timeout=600, env=child_env())
        assert r.returncode == 0, r.stderr[-2000:]
        line = next(l for l in r.stdout.splitlines() if l.startswith('memory:'))
        fixed, per_video = (float(x) * (2**30 if u == 'GiB' else 2**20) for x, u in re.findall(r'([\d.]+) (GiB|MiB)', line)[:2])
        return int(re.search(r'(\d+) videos per round', line).group(1)), fixed, per_video
    b, fixed, per_video = train(1000, 'roomy')
    assert b == 8 and per_video > 4 * 2**20, (fixed, per_video)                            # all in one round; a real measure
    b, _, _ = train((fixed + 2.6 * per_video) / 2**30, 'tight')
    assert b < 8, b                                                                         # 2 fit (the two runs measure alike)


def write_mp4(path, height, width, frames=12, seed=0):
    "A real H.264 video of moving noise (PyAV)."
    import av, numpy as np
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width + frames, 3), dtype=np.uint8)
    with av.open(str(path), 'w') as f:
        s = f.add_stream('libx264', rate=10); s.height, s.width, s.pix_fmt = height, width, 'yuv420p'
        for k in range(frames): f.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, k:k + width]), format='rgb24')))
        f.mux(s.encode())


def test_a_folder_of_videos_of_three_sizes_trains_at_the_given_resolution(tmp_path, capsys):
    videos = tmp_path / 'footage'; videos.mkdir()
    for name, (h, w) in {'wide': (24, 40), 'tall': (40, 24), 'square': (32, 32)}.items(): write_mp4(videos / f'{name}.mp4', h, w)
    assert cli_main(quick_cli(videos, tmp_path / 'run', 'train.kimg=0.012', 'data.max_num_frames=12')) == 0
    snap = find_snapshots(tmp_path / 'run')[-1]
    assert json.loads((tmp_path / 'run' / 'run.json').read_text())['run_config']['data']['resolution'] == 16 and snap


def test_show_config_prints_every_field_with_its_comment(capsys):
    assert cli_main(['--show-config', '--preset', 'ffs', 'data.resolution=64', 'train.batch_size=16']) == 0
    out = capsys.readouterr().out
    import yaml
    cfg = yaml.safe_load(out)
    assert (cfg['data']['resolution'], cfg['train']['batch_size'], cfg['train']['r1_gamma']) == (64, 16, 0.0002 * 64 ** 2 / 16)
    assert '# videos per step, over all GPUs' in out and 'memory_budget_gb: null' in out       # resolved, commented
    assert cli_main(['--help']) == 0 and '--show-config' in capsys.readouterr().out


def test_detector_option_means_the_same_as_in_metrics(tmp_path, data16, capsys):
    missing = tmp_path / 'no_i3d.pt'
    assert cli_main(quick_cli(data16, tmp_path / 'run', 'metrics.metrics=[fvd64_16f]', '--detector', f'i3d={missing}')) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'detector i3d (argument): {missing} does not exist' in err and '--detector i3d=PATH' in err
    assert cli_main(quick_cli(data16, tmp_path / 'run', '--detector', 'i3d')) == 2
    assert 'expected NAME=PATH' in capsys.readouterr().err and not (tmp_path / 'run').exists()


def test_out_of_range_settings_are_refused_before_any_folder(tmp_path, data16, capsys):
    assert cli_main(['--data', str(data16), '--outdir', str(tmp_path / 'run'), 'data.resolution=16', 'train.kimg=-1',
                     'train.snap=0', 'metrics.metrics=[]']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'train.kimg=-1.0 (expected > 0); train.snap=0 (expected >= 1); model.concat_res=16 with ' \
                                    'data.resolution=16 (expected one of [8])' in err
    assert not (tmp_path / 'run').exists()


def test_a_snapshot_of_an_older_version_resumes_by_its_plan():
    "Snapshots before the resolved RunConfig recorded a `TrainPlan` (here the default demo's, written by that version)."
    from stylegan_v.demo import DemoConfig, demo_run_config
    plan = json.loads((REPO / 'tests' / 'fixtures' / 'legacy_demo_plan.json').read_text())
    from stylegan_v.config import POWERS_OF_TWO
    old_demo = DemoConfig(lr=0.005, r1_gamma=0.1, spans=list(POWERS_OF_TWO), ema_kimg=1.0,   # the demo's defaults when the plan was written
                          mapping_layers=2, w_dim=None, time_period=8)
    rc = demo_run_config(old_demo, plan['data']).resolved()
    check_resume_compatible(*snapshot_settings({'plan': plan}, rc), 'old')            # the same run: nothing differs
    with pytest.raises(Exception, match='differ in G, train.lr'):                     # G's widths and a rate changed: refused
        check_resume_compatible(*snapshot_settings({'plan': plan}, rc.override(['train.lr=0.01', 'model.channel_max=16'])), 'old')
