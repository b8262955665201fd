"""Training-loop speed on this machine: sec/kimg (thousands of *frames*, as the original counts) and peak memory of
`stylegan_v.loop.run_training`, and the data loader's clip rate against the rate training consumes clips.

Configurations, each in its own process (so peak memory is its own), measured in the same invocation:
  demo           the demo's run (`demo_train_config`: 32 px, tiny widths, batch 8, ADA)
  original       default widths (channel_base 16384, channel_max 512, 2-layer mappings), 64 px, batch 4, fp32,
                 the original's configuration reproduced in this package: ref ops, non-fused modulated conv
  default        the same model with this package's defaults (native ops where built; on a CPU the loop modulates this wide
                 G's weights once per video, train.modconv=per_video; and, as `stylegan-v train` on a CPU, freed
                 memory stays mapped: train.keep_freed_memory)
Ratios against `original` are what to read; absolute seconds on a shared machine are noisy.
With a GPU: `--device cuda --res 256 --dtypes fp32 fp16 bf16 --channels-last --compile` adds those variants.

    python bench/train.py [--steps 3] [--threads 2] [--configs demo original default] [--loader-workers 0 2]
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args):
    "Run one configuration and print one JSON line."
    import torch
    torch.set_num_threads(args.threads)
    from stylegan_v.data.synthetic import default_synthetic_dataset
    from stylegan_v.loop import run_training
    from stylegan_v.runs import load_stats
    from stylegan_v.train import demo_train_config
    tmp = Path(tempfile.mkdtemp(prefix='bench-train-'))
    res = 32 if args.one == 'demo' else args.res
    data = default_synthetic_dataset(32, 32, res, root=Path(args.cache) / 'data')
    rc = demo_train_config(data, resolution=res)
    if args.one != 'demo':
        rc = rc.override([f'train.batch_size={args.batch}', 'model.z_dim=512', 'model.w_dim=512', 'model.motion_z_dim=512',
                          'model.time_enc_dim=256', 'model.time_enc_min_period_len=16', 'model.time_enc_max_period_len=1024',
                          'model.fmaps=0.5', 'model.channel_max=512', 'model.concat_res=16', 'train.r1_gamma=0.2048'])
    frames_per_step = rc.train.batch_size * rc.sampling.num_frames_per_video
    kimg = (args.steps + 1) * frames_per_step / 1000
    rc = rc.override([f'train.kimg={kimg}', f'train.kimg_per_tick={frames_per_step / 1000}', 'train.progress=false',
                      'train.grid_videos=1', 'train.grid_frames=2', f'train.device={args.device}', f'train.dtype={args.dtype}',
                      f'train.channels_last={str(args.channels_last).lower()}', f'train.compile={str(args.compile).lower()}',
                      'train.snap=100000'] +
                     (['train.modconv=nonfused'] if args.one == 'original' else []))
    rc = rc.resolved()  # a setting out of range: one line before the timing starts
    ctx = contextlib.nullcontext()
    if args.one != 'original':  # what `stylegan-v train` does on a CPU (the original leaves glibc's allocator alone)
        from stylegan_v.train import keep_freed_memory
        if args.device == 'cpu': keep_freed_memory()
    if args.one == 'original':  # every bias_act / upfirdn2d call on the plain-PyTorch reference, as the original on a CPU
        import stylegan_v.ops.bias_act as ba, stylegan_v.ops.upfirdn2d as ud
        ba.resolve_impl = ud.resolve_impl = lambda *a, **k: None
    t0 = time.time()
    with ctx: run_training(rc, tmp / 'run', log=lambda *a: None)
    stats = load_stats(tmp / 'run')[1:]  # the first tick includes warm-up
    sec_per_kimg = statistics.median(s['Timing/sec_per_kimg'] for s in stats)
    print(json.dumps({'config': args.one, 'res': res, 'batch': rc.train.batch_size, 'frames_per_step': frames_per_step,
                      'sec_per_kimg': sec_per_kimg, 'sec_per_step': sec_per_kimg * frames_per_step / 1000,
                      'peak_mem_gb': max(s['Resources/peak_mem_gb'] for s in stats),
                      'data_wait_frac': statistics.median(s['Timing/data_wait_frac'] for s in stats),
                      'wall_s': round(time.time() - t0, 1)}))


def loader_rate(res: int, workers: int, batch: int, cache: str, seconds: float = 10.0) -> float:
    "Clips per second the training loader delivers (clip stream of the built-in data)."
    import torch
    from stylegan_v.data.synthetic import default_synthetic_dataset
    from stylegan_v.config import RunConfig
    from stylegan_v.trainer import ClipStream, RankClips, open_training_dataset
    data = default_synthetic_dataset(32, 32, res, root=Path(cache) / 'data')
    ds = open_training_dataset(RunConfig().override([f'data.path={data}', f'data.resolution={res}']))
    loader = torch.utils.data.DataLoader(ClipStream(ds), batch_size=batch, sampler=RankClips(batch, batch), num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    it, n = iter(loader), 0
    next(it)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)['image'])
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=3); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--res', type=int, default=64); ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--configs', nargs='+', default=['demo', 'original', 'default'])
    ap.add_argument('--loader-workers', type=int, nargs='+', default=[0, 2])
    ap.add_argument('--device', default='cpu'); ap.add_argument('--dtype', default='fp32')
    ap.add_argument('--channels-last', action='store_true'); ap.add_argument('--compile', action='store_true')
    ap.add_argument('--cache', default=str(Path(tempfile.gettempdir()) / 'stylegan-v-bench'))
    ap.add_argument('--one', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one: return child(args)
    print(f'bench/train.py: {args.threads} threads, device {args.device}, dtype {args.dtype}, {args.steps} timed steps per config')
    results = {}
    for name in args.configs:
        cmd = [sys.executable, __file__, '--one', name, '--steps', str(args.steps), '--threads', str(args.threads),
               '--res', str(args.res), '--batch', str(args.batch), '--device', args.device, '--dtype', args.dtype,
               '--cache', args.cache] + ['--channels-last'] * args.channels_last + ['--compile'] * args.compile
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
        if out.returncode: print(f'{name}: failed\n{out.stderr[-2000:]}'); continue
        r = results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:10s} {r['res']:4d} px batch {r['batch']:2d}: {r['sec_per_kimg']:9.1f} s/kimg  {r['sec_per_step']:7.2f} s/step  "
              f"peak {r['peak_mem_gb']:.2f} GB  data wait {100 * r['data_wait_frac']:.1f}%  ({r['wall_s']} s)", flush=True)
    if 'original' in results:
        print('\nspeed-up over the original configuration (same model, same machine, same run):')
        for name, r in results.items():
            if name != 'demo': print(f"  {name:10s} x{results['original']['sec_per_kimg'] / r['sec_per_kimg']:.2f}")
    print('\ndata loader (clips of 3 frames per second) against what training consumes:')
    for name, r in results.items():
        consumed = r['batch'] / r['sec_per_step']
        for w in args.loader_workers:
            rate = loader_rate(r['res'], w, r['batch'], args.cache, seconds=5)
            print(f"  {name:10s} loader {w} workers: {rate:8.1f} clips/s, training consumes {consumed:6.2f} clips/s "
                  f"(x{rate / consumed:.0f} headroom)", flush=True)


if __name__ == '__main__':
    main()
