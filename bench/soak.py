"""Soak test: does a long training run leak? A CPU run at the demo's size for --minutes, with a snapshot (networks,
grid video, a cheap FVD against the stand-in video detector, pruning) every few minutes, then a SIGTERM (the path a
cluster's preemption takes: finish the step, snapshot, exit 75). Every tick's resident memory (`Resources/rss_gb`,
which every run records in stats.jsonl) is the curve; the verdict compares the peak RSS of the last third of the
run after warm-up with the peak of its first third (a leak shows as growth; allowed: --tolerance, 5 %).

    python bench/soak.py [--minutes 30] [--outdir runs_soak] [--threads 1] [--tick-steps 60] [--snap-ticks 6]
    python bench/soak.py --report RUN_DIR            # the curve and verdict of a finished (or stopped) soak run
"""
import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def train(args) -> Path:
    "Run the soak; return its run folder."
    import torch
    torch.set_num_threads(args.threads)
    from stylegan_v.data.synthetic import default_synthetic_dataset
    from stylegan_v.metrics.detectors import StandInVideoDetector, save_standin
    from stylegan_v.loop import EXIT_PREEMPTED, run_training
    from stylegan_v.train import demo_train_config, keep_freed_memory
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault('STYLEGAN_V_CACHE', str(out / 'cache'))   # the metric's real-data statistics live there
    data = default_synthetic_dataset(32, 32, 32, root=out / 'data')
    i3d = save_standin(StandInVideoDetector(), out / 'i3d_standin.pt')
    rc = demo_train_config(data, resolution=32)
    frames_per_step = rc.train.batch_size * rc.sampling.num_frames_per_video
    rc = rc.override([f'train.kimg={10 ** 6}', f'train.kimg_per_tick={args.tick_steps * frames_per_step / 1000}',
                      f'train.snap={args.snap_ticks}', 'train.progress=true', 'train.device=cpu', 'train.keep_last=2',
                      'metrics.metrics=[fvd16_16f]', f'metrics.detectors={{i3d: {i3d}}}'])
    keep_freed_memory()                                           # as `stylegan-v train` does on a CPU
    signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGTERM))
    signal.alarm(int(args.minutes * 60))
    run = out / 'run'
    t0 = time.time()
    try: run_training(rc, run, log=lambda m: print(m, flush=True))
    except SystemExit as e:
        if e.code != EXIT_PREEMPTED: raise
    print(f"soak ran {(time.time() - t0) / 60:.1f} min", flush=True)
    return run


def report(run: Path, tolerance: float = 0.05, warmup: float = 0.1) -> dict:
    "The RSS curve of `run` (minutes, GiB per tick) and the verdict; writes `soak_rss.png` and `soak.json` beside it."
    from stylegan_v.runs import load_stats
    stats = [s for s in load_stats(run) if 'Resources/rss_gb' in s]
    if len(stats) < 6: raise SystemExit(f"{run}: only {len(stats)} ticks with Resources/rss_gb; a soak needs a longer run")
    t0 = stats[0]['timestamp']
    curve = [(round((s['timestamp'] - t0) / 60, 2), round(s['Resources/rss_gb'], 4), s['kimg']) for s in stats]
    after = curve[max(1, int(len(curve) * warmup)):]
    third = max(1, len(after) // 3)
    first, last = max(r for _, r, _ in after[:third]), max(r for _, r, _ in after[-third:])
    growth = last / first - 1
    metrics = sum(1 for s in stats if any(k.startswith('Metrics/') for k in s))
    res = {'ticks': len(curve), 'minutes': curve[-1][0], 'kimg': curve[-1][2], 'snapshots_with_metric': metrics,
           'peak_rss_first_third_gb': first, 'peak_rss_last_third_gb': last, 'growth': round(growth, 4),
           'tolerance': tolerance, 'ok': abs(growth) <= tolerance, 'curve': curve}
    Path(run, 'soak.json').write_text(json.dumps(res, indent=1))
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([m for m, _, _ in curve], [r for _, r, _ in curve], marker='.')
    ax.axvline(after[0][0], color='gray', ls=':', label='end of warm-up')
    ax.set_xlabel('minutes'); ax.set_ylabel('RSS (GiB)'); ax.set_title(f'soak: RSS per tick ({growth:+.1%} peak growth)')
    ax.legend(); fig.tight_layout(); fig.savefig(Path(run, 'soak_rss.png'), dpi=100)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--minutes', type=float, default=30)
    p.add_argument('--outdir', default='runs_soak')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--tick-steps', type=int, default=60, help='steps per tick (one RSS sample each)')
    p.add_argument('--snap-ticks', type=int, default=6, help='ticks between snapshots (with the metric)')
    p.add_argument('--tolerance', type=float, default=0.05)
    p.add_argument('--report', metavar='RUN_DIR', help='only report on an existing soak run')
    args = p.parse_args()
    run = Path(args.report) if args.report else train(args)
    res = report(run, args.tolerance)
    print(json.dumps({k: v for k, v in res.items() if k != 'curve'}))
    for minute, rss, kimg in res['curve']: print(f"{minute:7.2f} min  {kimg:9.3f} kimg  {rss:.4f} GiB")
    return 0 if res['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
