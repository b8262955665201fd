"""Benchmark (not a test): frames/s and peak memory of G_ema sampling on this machine's CPU.

Generator at the original's default widths (channel_base 16384, channel_max 512, w_dim = z_dim = 512, 2 mapping layers,
StyleGAN-V motion/time-encoder defaults, fp32, conv_clamp 256), batch of 4 videos x 16 frames, at 64 and 128 px.
Each sampling path runs in its own subprocess (so that peak RSS belongs to that path alone):

- `fused (original)`: the original's eval-mode approach, one grouped convolution with per-frame modulated weights;
- `non-fused`: modulate the activations instead of the weights (the original's train-mode path);
- `channels_last non-fused` (the module converted with `.to(memory_format=torch.channels_last)`; the fused variant is
  available with `--paths` but was slower than the original approach in every run);
- `per-video (default)`: `modconv='per_video'`, what eval mode uses by default (`modconv='auto'`) for StyleGAN-V: the
  content ws are shared by the frames of a video, so every layer modulates/demodulates its weight once per video and
  convolves that video's frames with it in one plain convolution (`per_video_impl='loop'`), one video at a time;
- `per-video grouped` / `per-video broadcast` (with `--paths`): the same per-video weights as one grouped convolution
  over the videos, or the non-fused formulation with per-video styles broadcast over the frames (both measured slower
  than `loop` here);
- `torch.compile` of the default eager path (`--compile`, on by default at the smallest resolution only: compiling a
  full-width generator on 2 cores takes minutes).

Ratios are against `fused (original)` measured in the same run. Frames of each path are compared with the fused ones
(max |diff|). Absolute numbers depend on the load of the machine; only the ratios mean something. The machine may be
shared: besides wall-clock frames/s the table gives frames per CPU-second of the process (less sensitive to other
processes taking the cores; with several threads it also counts the threads' spin-waiting).

    python bench/generator.py                       # the default table (< 10 min on 2 cores)
    python bench/generator.py --resolutions 64 --reps 3 --compile all
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = ['fused (original)', 'non-fused', 'channels_last fused', 'channels_last non-fused',
         'per-video (default)', 'per-video grouped', 'per-video broadcast', 'torch.compile']
# channels_last fused was slower than fused in every run so far, and the per-video variants slower than the default
DEFAULT_PATHS = [p for p in PATHS if p not in ('channels_last fused', 'per-video grouped', 'per-video broadcast')]
MODCONV = {'fused (original)': 'fused', 'channels_last fused': 'fused', 'non-fused': 'nonfused',
           'channels_last non-fused': 'nonfused', 'per-video (default)': 'per_video', 'per-video grouped': 'per_video',
           'per-video broadcast': 'per_video', 'torch.compile': 'per_video'}


def _build_generator(res: int):
    import torch
    from stylegan_v.networks.generator import Generator
    torch.manual_seed(0)
    G = Generator(c_dim=0, w_dim=512, img_resolution=res, img_channels=3, mapping_kwargs={'num_layers': 2},
                  synthesis_kwargs={'channel_base': 16384, 'channel_max': 512, 'num_fp16_res': 0, 'conv_clamp': 256},
                  cfg={})
    return G.eval().requires_grad_(False)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(spec: dict) -> dict:
    """Measure one (resolution, path) in this process; returns a JSON-able result."""
    import torch
    torch.set_num_threads(spec['threads'])
    res, path, B, F = spec['res'], spec['path'], spec['batch'], spec['frames']
    G = _build_generator(res)
    kwargs = {'noise_mode': 'const', 'modconv': MODCONV[path]}
    if path.startswith('channels_last'): G = G.to(memory_format=torch.channels_last)
    if path in ('per-video grouped', 'per-video broadcast'): G.synthesis.per_video_impl = path.split()[-1]
    if path == 'per-video (default)': assert G.synthesis.resolve_modconv() == 'per_video', 'eval default changed'
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, 512, generator=g)
    c = torch.zeros(B, 0)
    t = torch.arange(F, dtype=torch.float32).repeat(B, 1)
    L = G.synthesis.motion_encoder.num_noise_codes(t)
    motion_z = torch.randn(B, L, G.synthesis.motion_encoder.cfg['motion']['z_dim'], generator=g)
    run = lambda z, c, t, motion_z: G(z, c, t, motion_z=motion_z, **kwargs)
    out = {}
    with torch.no_grad():
        run(z[:1], c[:1], t[:1, :1], motion_z[:1])  # lazy initialisation (filters, kernels) out of the timing
        if path == 'torch.compile':
            run = torch.compile(run, dynamic=False)
            t0 = time.perf_counter()
            run(z, c, t, motion_z)
            out['compile_s'] = time.perf_counter() - t0
        rss_before = _maxrss_mib()
        times, cpu, frames = [], [], None
        for _ in range(spec['reps']):
            t0, c0 = time.perf_counter(), time.process_time()
            y = run(z, c, t, motion_z)
            times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
            if frames is None: frames = y
    torch.save(frames, spec['frames_path'])
    times.sort()
    out.update(fps=B * F / times[len(times) // 2], times=times, fpcs=B * F / sorted(cpu)[len(cpu) // 2],
               rss_model_mib=rss_before, rss_peak_mib=_maxrss_mib())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--resolutions', type=int, nargs='+', default=[64, 128])
    p.add_argument('--batch', type=int, default=4, help='videos per call')
    p.add_argument('--frames', type=int, default=16, help='frames per video')
    p.add_argument('--reps', type=int, default=1, help='timed calls per path (median is reported)')
    p.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    p.add_argument('--paths', nargs='+', default=None, choices=PATHS, help='default: all but channels_last fused')
    p.add_argument('--compile', choices=['none', 'smallest', 'all'], default='smallest',
                   help='where to try torch.compile (it takes minutes on a small CPU)')
    p.add_argument('--budget-s', type=float, default=540, help='skip remaining paths once this much time is spent')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print('RESULT ' + json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    start = time.perf_counter()
    paths = args.paths or DEFAULT_PATHS
    rows, tmp = [], Path(tempfile.mkdtemp(prefix='bench_generator_'))
    print(f'G_ema sampling, {args.batch} videos x {args.frames} frames per call, fp32, {args.threads} threads, '
          f'{args.reps} timed call(s) per path; each path in its own process', flush=True)
    # eager paths at every resolution first, torch.compile (slow to build) last
    jobs = [(res, path) for path in paths if path != 'torch.compile' for res in args.resolutions]
    jobs = sorted(jobs, key=lambda j: (j[0], paths.index(j[1]))) + [(res, 'torch.compile') for res in args.resolutions if 'torch.compile' in paths]
    ref_frames = {}
    for res, path in jobs:
        if True:
            if path == 'torch.compile' and (args.compile == 'none' or (args.compile == 'smallest' and res != min(args.resolutions))):
                rows.append((res, path, {'skipped': f'--compile {args.compile}'})); continue
            spent = time.perf_counter() - start
            measured = [r[2]['wall_s'] for r in rows if 'fps' in r[2] and r[0] == res] or [r[2]['wall_s'] for r in rows if 'fps' in r[2]]
            estimate = max(measured, default=0) * (3 if path == 'torch.compile' else 1)  # compiling costs ~2 eager calls
            if spent + estimate > args.budget_s:
                rows.append((res, path, {'skipped': f'time budget ({args.budget_s:.0f} s)'})); continue
            spec = dict(res=res, path=path, batch=args.batch, frames=args.frames, reps=args.reps, threads=args.threads,
                        frames_path=str(tmp / f'{res}_{len(rows)}.pt'))
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(spec)], capture_output=True, text=True,
                                      timeout=max(60, args.budget_s - spent + 30))
                line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
                result = json.loads(line[-1][7:]) if line else {'skipped': 'failed: ' + (proc.stderr.strip().splitlines() or ['?'])[-1][:120]}
            except subprocess.TimeoutExpired:
                result = {'skipped': 'timed out'}
            result['wall_s'] = time.perf_counter() - t0
            if 'fps' in result:
                import torch
                frames = torch.load(spec['frames_path'])
                if path == 'fused (original)': ref_frames[res] = frames
                result['max_diff'] = (frames - ref_frames[res]).abs().max().item() if res in ref_frames else float('nan')
            rows.append((res, path, result))
            print(f'  {res:4d} px  {path:26s} ' + (f"{result['fps']:7.2f} frames/s" if 'fps' in result else result['skipped']),
                  flush=True)

    print(f"\n| res | path | frames/s | vs original | frames per CPU-s (vs original) | peak RSS MiB (model / peak) "
          f"| max abs diff vs original | notes |")
    print('|---|---|---|---|---|---|---|---|')
    for res, path, r in sorted(rows, key=lambda row: (row[0], PATHS.index(row[1]))):
        base = next((x for rr, pp, x in rows if rr == res and pp == 'fused (original)' and 'fps' in x), None)
        if 'fps' not in r:
            print(f"| {res} | {path} | - | - | - | - | - | {r['skipped']} |"); continue
        ratio = f"{r['fps'] / base['fps']:.2f}x" if base else '-'
        cpu_ratio = f" ({r['fpcs'] / base['fpcs']:.2f}x)" if base else ''
        notes = f"compile {r['compile_s']:.0f} s" if 'compile_s' in r else ''
        print(f"| {res} | {path} | {r['fps']:.2f} | {ratio} | {r['fpcs']:.2f}{cpu_ratio} | "
              f"{r['rss_model_mib']:.0f} / {r['rss_peak_mib']:.0f} | "
              f"{r['max_diff']:.1e} | {notes} |")
    print(f'\ntotal {time.perf_counter() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
