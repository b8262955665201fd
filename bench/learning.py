"""Does the demo configuration learn, and how fast? Trains `stylegan_v.demo`'s run (the same `RunConfig` as
`stylegan-v demo`, through the training library's `Trainer`) and prints, every `--every` steps, against wall-clock
minutes and process CPU seconds:

  (a) Fréchet distance of fixed clip features (`stylegan_v.demo.clip_features`) between `--clips` generated and as many
      real clips, beside the floor: the same distance between two disjoint sets of real clips of that size;
  (b) mean |frame change| of generated vs real clips (ratio fake/real);
  (c) edge energy, the mean image-gradient magnitude, generated vs real (ratio fake/real);
  (d) peak RSS of the process;
  and the outline distance (`stylegan_v.demo.outline_features`: the Fréchet distance of the frames' edge maps at 16x16)
  over its own floor, which sees the shapes' outlines where (a)'s 8x8 features cannot; and the shape change
  (`stylegan_v.demo.shape_change`: how much outlines change between frames once their shift is taken out) fake/real,
  which tells a shape gliding from a shape morphing where (b) counts both as motion; and the glide
  (`stylegan_v.demo.glide`: how far the outlines travel between frames) fake/real, which tells whether the shapes
  travel as far as the data's; and the shimmer (`stylegan_v.demo.shimmer`: the frame change away from every outline,
  over the data's whole frame change), the part of (b) that a flickering background or shape interior adds; and the
  motion between neighbouring frames (column `motion1`: `stylegan_v.demo.motion_by_gap` at a gap of 1 frame, fake/real,
  on 16 consecutive frames), which is highest for shapes that wobble back and forth; and, for
  a conditional G, the disc-square gap (`stylegan_v.demo.ShapeAxis`: how
  differently G draws the frames asked for squares and for discs, 1 as the data's), which tells whether G draws the
  data's squares, corners and all.

The curves are saved as a PNG plot and the rows as JSON lines beside it.

    python bench/learning.py [--minutes 8] [--every 100] [--clips 512] [--out bench_out/learning] [field=value ...]
    python bench/learning.py --replot bench_out/learning/learning_a.jsonl bench_out/learning/learning_b.jsonl

`field=value` are `DemoConfig` fields (e.g. `dtype=bf16 resolution=32 lr=0.004`). The machine this runs on may be
shared: compare configurations by the CPU-seconds column or by steps, not by wall-clock minutes.
"""
import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--minutes', type=float, default=None, help='stop after this many wall-clock minutes of training '
                   '(default: the demo configuration\'s own length, its kimg)')
    p.add_argument('--steps', type=int, default=None, help='stop after this many steps instead')
    p.add_argument('--every', type=int, default=100, help='measure every this many steps')
    p.add_argument('--clips', type=int, default=512, help='generated (and real) clips per measurement')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s own)')
    p.add_argument('--out', default='bench_out/learning', help='folder for learning.png and learning.jsonl')
    p.add_argument('--label', default=None, help='name of this run in the output files (default: from the fields)')
    p.add_argument('--save', action='store_true', help='also save the final G_ema and D as <out>/model_<label>.safetensors')
    p.add_argument('--replot', nargs='+', metavar='JSONL', help='only plot saved runs side by side (against steps) into --out')
    p.add_argument('fields', nargs='*', help='DemoConfig fields as key=value')
    args = p.parse_args(argv)
    if args.replot: return replot(args.replot, Path(args.out) / 'learning_compare.png')
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    from stylegan_v.demo import DemoConfig, check_demo_config, demo_dataset, demo_run_config, LearningProbe, probe_dataset
    from stylegan_v.train import keep_freed_memory
    from stylegan_v.trainer import Trainer
    cfg = check_demo_config(DemoConfig().override(args.fields))
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    label = args.label or ('_'.join(a.replace('=', '') for a in args.fields) or 'default')
    data = demo_dataset(cfg, out / 'data')
    keep_freed_memory()
    trainer = Trainer(demo_run_config(cfg, data))
    rc = trainer.rc
    probe = LearningProbe(probe_dataset(rc), num_clips=args.clips)
    frames_per_step = rc.train.batch_size * trainer.num_frames
    max_steps = args.steps or (None if args.minutes else round(rc.train.kimg * 1000 / frames_per_step))
    print(f"{label}: {rc.data.resolution} px, batch {rc.train.batch_size}, dtype {rc.train.dtype}, floor FD "
          f"{probe.floor:.3f} ({args.clips} vs {args.clips} real clips); stop at "
          f"{f'{max_steps} steps' if max_steps else f'{args.minutes} min'}", flush=True)
    head = f"{'step':>6} {'min':>6} {'cpu_s':>7} {'FD':>8} {'FD/floor':>8} {'motion':>7} {'edges':>7} {'outline':>7} {'shape':>6} {'glide':>6} {'shimmer':>7} {'motion1':>7} {'gap':>6} {'rss_GB':>7}"
    print(head, flush=True)
    rows, clips = [], iter(trainer.clip_loader())
    (out / f'learning_{label}.jsonl').unlink(missing_ok=True)   # rows are appended as they are measured
    wall = cpu = 0.0

    def measure():
        ev = probe(trainer.G_ema)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        row = dict(label=label, step=trainer.counters['batch_idx'], minutes=wall / 60, cpu_s=cpu, **ev, rss_gb=rss)
        rows.append(row)
        with open(out / f'learning_{label}.jsonl', 'a') as f: f.write(json.dumps(row) + '\n')
        print(f"{row['step']:6d} {row['minutes']:6.2f} {cpu:7.0f} {ev['frechet']:8.3f} {ev['frechet'] / probe.floor:8.2f} "
              f"{ev['motion_ratio']:7.3f} {ev['edge_ratio']:7.3f} {ev['outline_frechet'] / ev['outline_floor']:7.2f} {ev['shape_ratio']:6.2f} {ev['glide_ratio']:6.2f} {ev['shimmer_ratio']:7.2f} {(ev['motion_by_gap_ratio'] or [math.nan])[0]:7.2f} {ev['disc_square_gap']:6.2f} {rss:7.2f}", flush=True)

    measure()
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.train_step(trainer.next_rounds(clips))
        wall += time.perf_counter() - t0; cpu += time.process_time() - c0
        step = trainer.counters['batch_idx']
        done = (max_steps and step >= max_steps) or (args.minutes and wall >= args.minutes * 60)
        if step % args.every == 0 or done: measure()
        if done: break
    plot({label: rows}, out / f'learning_{label}.png')
    if args.save:
        from stylegan_v.checkpoints import save_checkpoint
        save_checkpoint(out / f'model_{label}.safetensors', {'G_ema': trainer.G_ema, 'D': trainer.D}, metadata={'demo': cfg.to_dict()})
    print(f"wrote {out / f'learning_{label}.png'} and .jsonl", flush=True)


def plot(runs: dict, path, x='minutes'):
    "Curves of one or more runs (`{label: rows}`) against `x` ('minutes' or 'step'), with the floor and the targets."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 7, figsize=(29, 3.4))
    for label, rows in runs.items():
        xs = [r[x] for r in rows]
        line, = axes[0].plot(xs, [r['frechet'] for r in rows], marker='.', label=label)
        axes[0].plot(xs, [3 * r['floor'] for r in rows], color=line.get_color(), ls='--', lw=0.8)
        axes[1].plot(xs, [r['motion_ratio'] for r in rows], marker='.', color=line.get_color())
        axes[1].plot(xs, [r.get('shimmer_ratio', math.nan) for r in rows], color=line.get_color(), ls='--', lw=0.8)  # older runs: none
        axes[2].plot(xs, [r['edge_ratio'] for r in rows], marker='.', color=line.get_color())
        outline = [r['outline_frechet'] / r['outline_floor'] if 'outline_frechet' in r else math.nan for r in rows]  # older runs: none
        axes[3].plot(xs, outline, marker='.', color=line.get_color())
        axes[4].plot(xs, [r.get('shape_ratio', math.nan) for r in rows], marker='.', color=line.get_color())  # older runs: none
        axes[5].plot(xs, [r.get('glide_ratio', math.nan) for r in rows], marker='.', color=line.get_color())  # older runs: none
        axes[6].plot(xs, [r.get('disc_square_gap', math.nan) for r in rows], marker='.', color=line.get_color())  # older runs: none
    axes[0].set_yscale('log'); axes[0].set_title('Fréchet distance (dashed: target, 3x the real-vs-real floor)', fontsize=9)
    axes[1].set_title('mean |frame change|, fake / real (dashed: of it, shimmer)', fontsize=9); axes[2].set_title('edge energy, fake / real', fontsize=9)
    axes[3].set_yscale('log'); axes[3].set_title('outline distance / its floor (not a target)', fontsize=9); axes[3].axhline(1, color='k', ls=':', lw=0.8)
    axes[4].set_title('shape change between frames, fake / real (not a target)', fontsize=9); axes[4].axhline(1, color='k', ls=':', lw=0.8)
    axes[5].set_title('glide (how far outlines travel), fake / real (not a target)', fontsize=9); axes[5].axhline(1, color='k', ls=':', lw=0.8)
    axes[6].set_title('disc-square gap, conditional G (1: as the data\'s; not a target)', fontsize=9); axes[6].axhline(1, color='k', ls=':', lw=0.8)
    for ax, (lo, hi) in ((axes[1], (0.75, 1.33)), (axes[2], (0.7, 1.4))):
        ax.axhspan(lo, hi, color='g', alpha=0.1); ax.axhline(1, color='k', ls=':', lw=0.8)
    for ax in axes: ax.set_xlabel('training minutes (wall clock)' if x == 'minutes' else 'training steps')
    axes[0].legend(fontsize=7); fig.tight_layout()
    fig.savefig(path, dpi=90)


def replot(paths, out, x='step'):
    "Plot saved runs (`learning_<label>.jsonl` files) side by side."
    runs = {}
    for p in paths:
        rows = [json.loads(l) for l in Path(p).read_text().splitlines() if l.strip()]
        runs[rows[0]['label']] = rows
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    plot(runs, out, x)
    print(f"wrote {out}")


if __name__ == '__main__':
    sys.exit(main())
