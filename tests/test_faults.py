"""Faults of long runs, each injected at toy size: a stop signal (SIGTERM / SIGUSR1 / Ctrl-C) on one process and on
2 gloo processes, a full disk at each kind of write, a truncated newest snapshot, unreadable videos at index time and
at run time, a metric failing mid-run. Each test checks what is on disk afterwards and the one-line messages."""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from stylegan_v.checkpoints import read_checkpoint
from stylegan_v.distributed import free_port
from stylegan_v.runs import DiskFull, latest_snapshot, load_stats, snapshot_files, snapshot_name
from tiny_models import tiny_run_config
from stylegan_v.config import RunConfig
from stylegan_v.loop import EXIT_PREEMPTED, run_training

REPO = Path(__file__).resolve().parents[1]
slow = pytest.mark.skipif(os.environ.get('STYLEGAN_V_SLOW') != '1',
                          reason='slow (training child processes, 1-2 min each on 2 cores): set STYLEGAN_V_SLOW=1')
STEPS, FRAMES_PER_STEP = 8, 4 * 3      # 8 steps of 4 videos x 3 frames; a tick is 2 steps, a snapshot every 2 ticks



def tiny_plan(data, *overrides: str) -> RunConfig:
    return tiny_run_config(data, STEPS, 2, 2, *overrides)


# --- stop signals: a child process (or two gloo ranks) told to stop at a random step ------------------------------

CHILD = textwrap.dedent('''
    import json, sys, time, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from stylegan_v.config import RunConfig
    from stylegan_v.loop import run_training
    from stylegan_v.trainer import Trainer
    plan = RunConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    step = Trainer.train_step
    def slow_step(self, rounds):   # a marker per finished step, so the test can aim its signal at a step
        step(self, rounds); Path(sys.argv[2], f'.step-{self.env.rank}').write_text(str(self.counters['batch_idx']))
        time.sleep(float(sys.argv[3]))
    Trainer.train_step = slow_step
    s = run_training(plan, sys.argv[2], resume=sys.argv[4] or None, log=lambda m: print(m, flush=True))
    print('summary', json.dumps({k: s[k] for k in ('steps', 'sec_per_kimg', 'last_tick_sec_per_kimg')}), flush=True)
''')


def child_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', HF_HUB_OFFLINE='1', **extra)
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        if k not in extra: env.pop(k, None)
    return env


def start(tmp_path, plan, run_dir, world=1, pause=0.0, port=None, resume=''):
    "Start `world` training processes (ranks of one gloo job when world > 1); return them, rank 0 first."
    (tmp_path / 'plan.json').write_text(json.dumps(plan.to_dict()))
    (tmp_path / 'child.py').write_text(CHILD)
    run_dir.mkdir(parents=True, exist_ok=True)
    ranks = [dict(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
             for r in range(world)] if world > 1 else [{}]
    return [subprocess.Popen([sys.executable, str(tmp_path / 'child.py'), str(tmp_path / 'plan.json'), str(run_dir), str(pause), resume],
                             env=child_env(**r), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in ranks]


def finish(procs, expect=0, timeout=300):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [expect] * len(procs), '\n'.join(o[-3000:] for o in outs)
    return outs


def steps_done(run_dir, rank=0):
    path = Path(run_dir) / f'.step-{rank}'
    try: return int(path.read_text() or 0)
    except (OSError, ValueError): return 0


def wait_for_step(procs, run_dir, step, rank=0, timeout=240):
    t0 = time.time()
    while steps_done(run_dir, rank) < step:
        if any(p.poll() is not None for p in procs): raise AssertionError(f"a child exited early: {procs[0].stdout.read()[-3000:]}")
        if time.time() - t0 > timeout: raise AssertionError('timed out waiting for the child')
        time.sleep(0.01)


def assert_same_state(snap_a, snap_b):
    (cfg_a, ta), (cfg_b, tb) = read_checkpoint(snap_a), read_checkpoint(snap_b)
    assert sorted(ta) == sorted(tb) and cfg_a['metadata']['counters'] == cfg_b['metadata']['counters']
    differing = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:5]}"


@pytest.fixture(scope='module')
def straight(tmp_path_factory, data16):
    "The uninterrupted reference run (a child process, like the interrupted ones)."
    tmp = tmp_path_factory.mktemp('straight')
    out, = finish(start(tmp, tiny_plan(data16), tmp / 'run'))
    return tmp / 'run', out


@pytest.mark.parametrize('sig', ['SIGTERM', pytest.param('SIGUSR1', marks=slow)])
def test_stop_signal_snapshots_the_step_and_resume_is_bit_exact(tmp_path, data16, straight, sig):
    run_b, stop_at = tmp_path / 'run', random.Random(sig).randint(1, STEPS - 2)   # a random step, mid-tick or not
    procs = start(tmp_path, tiny_plan(data16), run_b, pause=0.3)
    wait_for_step(procs, run_b, stop_at)
    procs[0].send_signal(getattr(signal, sig))
    out, = finish(procs, expect=EXIT_PREEMPTED)
    stopped = [l for l in out.splitlines() if l.startswith('stopped by')]
    assert len(stopped) == 1 and stopped[0].startswith(f'stopped by {sig} after step ') and 'resume=latest' in stopped[0], out
    step = int(stopped[0].split('after step ')[1].split()[0])
    assert stop_at <= step < STEPS
    newest = latest_snapshot(run_b)
    assert newest.name == snapshot_name(step * FRAMES_PER_STEP) and newest.name in stopped[0]
    assert read_checkpoint(newest)[0]['metadata']['counters']['batch_idx'] == step
    assert not list(run_b.glob('.*.partial'))
    finish(start(tmp_path, tiny_plan(data16), run_b, resume='latest'))
    run_a = straight[0]
    assert_same_state(latest_snapshot(run_a), latest_snapshot(run_b))
    ticks = lambda run: [(s['tick'], s['nimg'], s.get('Loss/G/loss')) for s in load_stats(run)]
    assert ticks(run_a) == ticks(run_b)                                     # the log reads as one run, losses included


@slow
def test_sigterm_on_one_of_two_gloo_ranks_stops_both_after_the_same_step(tmp_path, data16):
    plan = tiny_plan(data16, 'train.batch_gpu=2')
    ref = tmp_path / 'ref'
    (tmp_path / 'r').mkdir()
    finish(start(tmp_path / 'r', plan, ref, world=2, port=free_port()))
    run = tmp_path / 'run'
    procs = start(tmp_path, plan, run, world=2, pause=0.3, port=free_port())
    wait_for_step(procs, run, random.Random(2).randint(1, STEPS - 2), rank=1)
    procs[1].send_signal(signal.SIGTERM)                                   # rank 1 only: rank 0 learns it in the all-reduce
    outs = finish(procs, expect=EXIT_PREEMPTED)
    assert sum(l.startswith('stopped by SIGTERM after step') for l in outs[0].splitlines()) == 1, outs[0]
    assert steps_done(run, 0) == steps_done(run, 1) < STEPS
    assert latest_snapshot(run).name == snapshot_name(steps_done(run, 0) * FRAMES_PER_STEP)
    finish(start(tmp_path, plan, run, world=2, port=free_port(), resume='latest'))
    assert_same_state(latest_snapshot(ref), latest_snapshot(run))


@slow
def test_ctrl_c_snapshots_the_finished_step_and_exits_130(tmp_path, data16):
    "The CLI path: SIGINT during `stylegan-v train` -> one 'stopped by SIGINT' line, 'interrupted', exit 130, a snapshot."
    from stylegan_v.train import demo_train_config
    import yaml
    rc = demo_train_config(data16, resolution=16, kimg=50, channels=16).override(['train.device=cpu'])
    (tmp_path / 'run.yaml').write_text(yaml.safe_dump(rc.to_dict()))
    run = tmp_path / 'run'
    proc = subprocess.Popen([sys.executable, '-m', 'stylegan_v.cli', 'train', '--config', str(tmp_path / 'run.yaml'),
                             '--outdir', str(run)], env=child_env(STYLEGAN_V_DEBUG=''), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (run / 'stats.jsonl').exists():   # training has started (a Ctrl-C before that stops at once, with nothing to save)
        assert proc.poll() is None and time.time() - t0 < 240, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == 'interrupted', (proc.returncode, err[-2000:])
    stopped = [l for l in out.splitlines() if l.startswith('stopped by SIGINT after step')]
    assert len(stopped) == 1, out[-2000:]
    step = int(stopped[0].split('after step ')[1].split()[0])
    assert latest_snapshot(run).name == snapshot_name(step * 8 * 3) and not list(run.glob('.*.partial'))


# --- a full disk: ENOSPC injected into the one write helper of each kind of write ---------------------------------

def no_space_on(calls: list, n: int, real):
    "A stand-in for a write helper that fails with ENOSPC on its `n`-th call (1-based) and works otherwise."
    def write(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == n: raise OSError(errno.ENOSPC, 'No space left on device')
        return real(*args, **kwargs)
    return write


def demo_yaml(tmp_path, data, *overrides):
    import yaml
    from stylegan_v.train import demo_train_config
    rc = demo_train_config(data, resolution=16, kimg=4 * 8 * 3 / 1000, channels=16)
    rc = rc.override(['train.device=cpu', 'train.kimg_per_tick=0.024', 'train.snap=2', 'train.progress=false',
                      'train.grid_videos=2', 'train.grid_frames=2', *overrides])
    (tmp_path / 'run.yaml').write_text(yaml.safe_dump(rc.to_dict()))
    return str(tmp_path / 'run.yaml')


def test_full_disk_at_a_snapshot_stops_with_one_line_and_resumes(tmp_path, data16, monkeypatch, capsys):
    import stylegan_v.checkpoints as ck
    from stylegan_v.train import cli_main
    run, calls = tmp_path / 'run', []
    monkeypatch.setattr(ck, 'atomic_write_bytes', no_space_on(calls, 2, ck.atomic_write_bytes))  # the 2nd snapshot fails
    assert cli_main(['--config', demo_yaml(tmp_path, data16), '--outdir', str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('stylegan-v train: error: no space left on the device for '), err
    assert Path(calls[1]).name in err[0] and 'bytes)' in err[0] and 'resume=latest' in err[0]
    assert [p.name for p in snapshot_files(run)] == [Path(calls[0]).name]     # the previous snapshot, complete
    assert latest_snapshot(run) == Path(calls[0]) and not list(run.glob('.*.partial'))
    monkeypatch.undo()                                                        # space freed
    assert cli_main(['--config', demo_yaml(tmp_path, data16), '--outdir', str(run), 'resume=latest']) == 0
    assert latest_snapshot(run).name == snapshot_name(4 * 8 * 3)


@slow
@pytest.mark.parametrize('what', ['grid video', 'metric log'])
def test_full_disk_at_a_video_grid_or_metric_write(tmp_path, data16, monkeypatch, what):
    import stylegan_v.snapshots as snapshots
    import stylegan_v.metrics.evaluate as ev
    from stylegan_v.metrics.detectors import StandInVideoDetector, save_standin
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path / 'cache'))
    i3d = save_standin(StandInVideoDetector(), tmp_path / 'i3d.pt')
    plan = tiny_plan(data16, f'train.kimg={6 * FRAMES_PER_STEP / 1000}', 'metrics.metrics=[fvd8_4f]', f'metrics.detectors={{i3d: {i3d}}}')
    calls = []
    if what == 'grid video': monkeypatch.setattr(snapshots, 'write_video', no_space_on(calls, 2, snapshots.write_video))
    else: monkeypatch.setattr(ev, 'report_metric', no_space_on(calls, 2, ev.report_metric))
    with pytest.raises(DiskFull) as e: run_training(plan, tmp_path / 'run', log=lambda m: None)
    second = 5 * FRAMES_PER_STEP                                     # snapshots after steps 1, 5 (ticks 0 and 2), ...
    target = f'videos-{second / 1000:010.3f}.mp4' if what == 'grid video' else 'metric-fvd8_4f.jsonl'
    assert target in str(e.value) and '\n' not in str(e.value), str(e.value)
    assert latest_snapshot(tmp_path / 'run').name == snapshot_name(second)   # written before the failing write
    monkeypatch.undo(); monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path / 'cache'))
    run_training(plan, tmp_path / 'run', resume='latest', log=lambda m: None)
    assert latest_snapshot(tmp_path / 'run').name == snapshot_name(6 * FRAMES_PER_STEP)


def test_low_free_space_warns_in_one_line_before_training(tmp_path, data16, monkeypatch):
    import stylegan_v.runs as runs
    monkeypatch.setattr(runs, 'free_bytes', lambda folder: 1 << 16)
    said = []
    run_training(tiny_plan(data16, f'train.kimg={FRAMES_PER_STEP / 1000}'), tmp_path / 'run', log=said.append)
    warned = [l for l in said if l.startswith('warning:')]
    assert len(warned) == 1 and 'has 0.1 MiB free, less than 3 snapshots of' in warned[0], said


# --- a truncated newest snapshot -----------------------------------------------------------------------------------

def damage(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])       # copied half-way


def test_resume_latest_skips_a_truncated_newest_snapshot_naming_it(tmp_path, data16, capsys):
    run, said = tmp_path / 'run', []
    run_training(tiny_plan(data16, f'train.kimg={3 * FRAMES_PER_STEP / 1000}', 'train.snap=1'), run, log=said.append)
    previous, newest = snapshot_files(run)                                   # after steps 1 and 3
    damage(newest)
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = run_training(tiny_plan(data16, f'train.kimg={5 * FRAMES_PER_STEP / 1000}', 'train.snap=1'), run, resume='latest', log=said.append)
    lines = [l for l in said + [str(x.message) for x in w] + capsys.readouterr().out.splitlines() if newest.name in l]
    assert len(lines) == 1 and 'unreadable' in lines[0] and 'truncated' in lines[0], lines
    assert s['resumed_from'] == previous.name and latest_snapshot(run).name == snapshot_name(5 * FRAMES_PER_STEP)
    assert snapshot_files(run)[1] == newest and latest_snapshot(run, warn=said.append) is not None   # rewritten whole by the resumed run


def test_generate_networks_dir_without_metrics_takes_the_newest_readable_snapshot(tmp_path, data16, capsys):
    from stylegan_v.generate import cli_main as generate
    run = tmp_path / 'run'
    run_training(tiny_plan(data16, f'train.kimg={3 * FRAMES_PER_STEP / 1000}', 'train.snap=1'), run, log=lambda m: None)
    previous, newest = snapshot_files(run)
    damage(newest)
    capsys.readouterr()
    assert generate(['--networks-dir', str(run), '-o', str(tmp_path / 'out'), '--video-len', '3', '--no-progress']) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(newest.name in l for l in out) == 1 and any(l == f'no metric logs in {run}: using the newest snapshot, {previous.name}' for l in out), out
    assert json.loads((tmp_path / 'out' / 'videos.json').read_text())['checkpoint']['path'] == str(previous)


# --- a metric failing mid-run ---------------------------------------------------------------------------------------

def test_a_metric_failing_mid_run_is_logged_and_the_run_goes_on(tmp_path, data16, monkeypatch):
    import stylegan_v.metrics.evaluate as ev
    from stylegan_v.metrics.detectors import StandInVideoDetector, save_standin
    from stylegan_v.runs import best_snapshot
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path / 'cache'))
    i3d = save_standin(StandInVideoDetector(), tmp_path / 'i3d.pt')
    real, calls = ev.compute_metric, []
    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2: raise FileNotFoundError(f'detector file {i3d} is gone')
        return dict(real(*a, **k), value=[5.0, None, 9.0][len(calls) - 1])   # the failed one would have been the best
    monkeypatch.setattr(ev, 'compute_metric', flaky)
    plan = tiny_plan(data16, f'train.kimg={3 * FRAMES_PER_STEP / 1000}', f'train.kimg_per_tick={FRAMES_PER_STEP / 1000}', 'train.snap=1',
                     'train.keep_last=1', 'metrics.metrics=[fvd8_4f]', 'metrics.best_metric=fvd8_4f', f'metrics.detectors={{i3d: {i3d}}}')
    said = []
    s = run_training(plan, tmp_path / 'run', log=said.append)
    assert s['steps'] == 3
    failed = [l for l in said if 'failed' in l]
    assert len(failed) == 1 and failed[0].startswith(f'warning: metric fvd8_4f failed at {snapshot_name(2 * FRAMES_PER_STEP)}: '
                                                     f'FileNotFoundError: detector file {i3d} is gone'), said
    lines = [json.loads(l) for l in (tmp_path / 'run' / 'metric-fvd8_4f.jsonl').read_text().splitlines()]
    assert [l['value'] for l in lines] == [5.0, None, 9.0] and 'is gone' in lines[1]['error']
    assert [p.name for p in snapshot_files(tmp_path / 'run')] == [snapshot_name(n * FRAMES_PER_STEP) for n in (1, 3)]
    assert best_snapshot(tmp_path / 'run', 'fvd8_4f')[0].name == snapshot_name(FRAMES_PER_STEP)
    assert ['Metrics/fvd8_4f' in r for r in load_stats(tmp_path / 'run')] == [True, False, True]


# --- bad videos: at index time and mid-run --------------------------------------------------------------------------

@pytest.fixture
def mp4_videos(tmp_path):
    from stylegan_v.data.video import write_video
    rng = torch.Generator().manual_seed(0)
    for k in range(10):
        frames = torch.randint(0, 255, (16, 16, 16, 3), generator=rng, dtype=torch.uint8).numpy()
        write_video(tmp_path / 'videos' / f'v{k}.mp4', frames, fps=10, pix_fmt='yuv444p', options={'qp': 0})
    (tmp_path / 'videos' / 'broken.mp4').write_bytes((tmp_path / 'videos' / 'v0.mp4').read_bytes()[:50])
    return tmp_path / 'videos'


def test_unreadable_videos_at_index_time_one_line_then_refused_above_the_fraction(tmp_path, mp4_videos):
    import warnings
    from stylegan_v.data.layout import DatasetError
    with pytest.raises(DatasetError, match=r'1 of 11 videos are unreadable, more than max_bad_fraction=0.01 .*broken.mp4'):
        run_training(tiny_plan(mp4_videos, f'train.kimg={FRAMES_PER_STEP / 1000}'), tmp_path / 'refused', log=lambda m: None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        run_training(tiny_plan(mp4_videos, f'train.kimg={FRAMES_PER_STEP / 1000}', 'data.max_bad_fraction=0.1'), tmp_path / 'run', log=lambda m: None)
    said = [str(x.message) for x in w if 'broken.mp4' in str(x.message)]
    assert len(said) == 1 and 'leaving out 1 of 11 videos that cannot be read' in said[0], said


def test_a_video_failing_mid_run_is_skipped_named_and_counted(tmp_path, mp4_videos, monkeypatch):
    import warnings
    from stylegan_v.data.layout import DatasetError
    from stylegan_v.trainer import Trainer
    (mp4_videos / 'broken.mp4').unlink()
    from stylegan_v.trainer import ClipStream
    step, bad = Trainer.train_step, {'files': None}
    def then_break(self, rounds):   # after step 1, files go bad on the network disk (truncated, or deleted)
        step(self, rounds)
        if self.counters['batch_idx'] == 1:
            if bad['files'] is None:    # the video of the next step's first clip
                bad['files'] = [self.dataset.describe_item(ClipStream(self.dataset, self.rc.train.seed).item(4)).split()[1]]
            for name in bad['files']: (mp4_videos / name).write_bytes(b'') if name != 'v7.mp4' else (mp4_videos / name).unlink()
    monkeypatch.setattr(Trainer, 'train_step', then_break)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = run_training(tiny_plan(mp4_videos, f'train.kimg={3 * FRAMES_PER_STEP / 1000}', f'train.kimg_per_tick={FRAMES_PER_STEP / 1000}', 'train.snap=100'),
                         tmp_path / 'run', log=lambda m: None)
    assert s['steps'] == 3
    skipped = [str(x.message) for x in w if str(x.message).startswith('skipping video')]
    assert skipped and all(bad['files'][0] in m and 'failed to decode' in m for m in skipped), skipped
    assert sum(r['Data/skipped_videos'] for r in load_stats(tmp_path / 'run')) == len(skipped)
    bad['files'] = [f'v{k}.mp4' for k in range(10)]           # all of them: an error, never a hang
    with warnings.catch_warnings(), pytest.raises(DatasetError, match='17 videos in a row failed to decode'):
        warnings.simplefilter('ignore')
        run_training(tiny_plan(mp4_videos, f'train.kimg={3 * FRAMES_PER_STEP / 1000}', 'data.max_bad_fraction=0.2', 'train.snap=100'), tmp_path / 'broken',
                     log=lambda m: None)


# --- the SLURM script: SIGUSR1 from SLURM -> SIGTERM to the job step -> exit 75 -> requeue ---------------------------

def test_slurm_script_forwards_the_signal_and_requeues(tmp_path):
    "tools/slurm/train.sbatch under stand-ins for srun and scontrol (no SLURM here): the trap, the wait, the requeue."
    bin_dir = tmp_path / 'bin'; bin_dir.mkdir()
    (bin_dir / 'srun').write_text('#!/bin/bash\necho "$@" > "$FAKE/srun_args"\ntrap \'echo "stopped by SIGTERM"; exit 75\' TERM\n'
                                  'touch "$FAKE/started"\nwhile true; do sleep 0.05; done\n')
    (bin_dir / 'scontrol').write_text('#!/bin/bash\nif [ "$1" = show ]; then echo node1; else echo "$@" >> "$FAKE/scontrol"; fi\n')
    for f in bin_dir.iterdir(): f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE=str(tmp_path), SLURM_JOB_NODELIST='node1',
               SLURM_NNODES='1', SLURM_JOB_ID='4242', SLURM_GPUS_PER_NODE='2')
    proc = subprocess.Popen(['bash', str(REPO / 'tools' / 'slurm' / 'train.sbatch'), 'train.kimg=100'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not (tmp_path / 'started').exists():
        assert proc.poll() is None and time.time() - t0 < 30, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_PREEMPTED, out
    assert (tmp_path / 'scontrol').read_text().split() == ['requeue', '4242'], out
    args = (tmp_path / 'srun_args').read_text()
    assert 'resume=auto' in args and args.strip().endswith('train.kimg=100') and '-m stylegan_v.train' in args
