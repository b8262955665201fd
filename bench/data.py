"""Benchmark (not a test): data-loading throughput.

1. The training loader (`stylegan_v.data.dataset.make_training_loader`): 3-frame clips at 256 px read from a zip of
   JPEG frames, batch 16, with 0, 1 and 2 DataLoader workers -> clips/s and frames/s.
2. Video decoding with PyAV: a directory of 256 px mp4s decoded frame by frame -> frames/s; and the whole
   `stylegan-v prepare videos` conversion (decode + resize + JPEG encode + zip) with 0 and 2 workers.
3. Sparse frames from long videos: training clips (3 frames up to 32 apart, the original's sampler) read by
   `VideoDataset` from a folder of long mp4s (>= 2,000 frames, 64 px), decoding from the start vs seeking to the
   keyframe before the first needed frame, against the same frames as JPEGs in a zip -> clips/s and ratios.
4. The streaming video writer (`stylegan_v.data.video.VideoWriter`): a producer that computes chunks of frames
   (torch work standing in for the generator) while they are encoded, inline vs in the background thread.

The data is made by the built-in synthetic generator, so nothing needs downloading. Ratios are against the
0-worker baseline measured in the same run.

    python bench/data.py              # ~40-60 s on 2 CPU cores
    python bench/data.py --quick      # smaller, for a smoke run
    python bench/data.py --only seek  # just part 3 (or loader, decode, writer)
"""
import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stylegan_v.data.prepare import videos_to_dataset
from stylegan_v.data.video import iter_video_frames, write_video
from stylegan_v.data.synthetic import synthetic_video, write_synthetic_dataset


def bench_loader(zip_path, num_workers, batch_size, num_batches, warmup):
    from stylegan_v.data.dataset import make_training_loader
    loader = make_training_loader(zip_path, batch_size=batch_size, num_workers=num_workers, seed=0)
    it = iter(loader)
    t_start = time.perf_counter()
    for _ in range(warmup):  # includes worker start-up
        batch = next(it)
    t_first = time.perf_counter() - t_start
    t0 = time.perf_counter()
    frames = 0
    for _ in range(num_batches):
        batch = next(it)
        frames += batch['image'].shape[0] * batch['image'].shape[1]
    dt = time.perf_counter() - t0
    shape = tuple(batch['image'].shape)
    del it, loader
    return dict(clips_s=num_batches * batch_size / dt, frames_s=frames / dt, startup_s=t_first, shape=shape)


def bench_decode(mp4s):
    t0 = time.perf_counter()
    n = 0
    for p in mp4s:
        for img in iter_video_frames(p):
            np.asarray(img)
            n += 1
    return n / (time.perf_counter() - t0), n


def bench_clips(dataset, num_clips, seed=0):
    "clips/s of `dataset.get_clip` over `num_clips` random items (after one warm-up clip per video)."
    rng = random.Random(seed)
    for v in range(len(dataset)): dataset.get_clip(v, rng)   # opens, and reads each video's timestamps once
    t0 = time.perf_counter()
    for _ in range(num_clips): dataset.get_clip(rng.randrange(len(dataset)), rng)
    return num_clips / (time.perf_counter() - t0)


def bench_seek(d, num_videos, num_frames, num_clips, res=64, gop=None):
    from stylegan_v.data.dataset import VideoDataset
    from stylegan_v.data.layout import DatasetWriter
    t0 = time.perf_counter()
    with DatasetWriter(d / 'long_frames.zip', ext='jpg', quality=95) as zw:
        for i in range(num_videos):
            frames = synthetic_video((2, i), num_frames, res)
            write_video(d / 'long_mp4' / f'clip{i:02d}.mp4', frames, fps=25, options={'g': gop} if gop else None)
            zw.add_video(f'clip{i:02d}', frames)
    mp4_mb = sum(p.stat().st_size for p in (d / 'long_mp4').iterdir()) / 1e6
    print(f"bench data: {num_videos} videos x {num_frames} frames at {res} px as mp4 (libx264, GOP {gop or 'default 250'}, "
          f"{mp4_mb:.1f} MB) and as JPEGs in a zip ({(d / 'long_frames.zip').stat().st_size / 1e6:.1f} MB), "
          f"made in {time.perf_counter() - t0:.1f} s")
    sampling = {'num_frames_per_video': 3, 'max_dist': 32}
    rates = {}
    rates['zip of JPEG frames'] = bench_clips(VideoDataset(d / 'long_frames.zip', sampling=sampling), num_clips)
    for seek in (False, True):
        ds = VideoDataset(d / 'long_mp4', sampling=sampling)
        ds.source.seek = seek
        n = num_clips if seek else max(4, num_clips // 8)  # decoding from the start is slow: fewer clips
        rates[f"mp4, {'seek to keyframe' if seek else 'decode from start'}"] = bench_clips(ds, n)
    base = rates['zip of JPEG frames']
    for name, r in rates.items(): print(f"{name:>28}: {r:8.1f} clips/s  (x{r / base:.3f} vs the zip)")
    scan, seek = rates['mp4, decode from start'], rates['mp4, seek to keyframe']
    print(f"seeking vs decoding from the start: x{seek / scan:.1f}")
    return rates


def bench_writer(d, num_chunks, res=128, work=3):
    "Seconds to make and encode `num_chunks` chunks of 8 frames, inline and in the background; and to make them only."
    from stylegan_v.data.video import VideoWriter, to_uint8
    w = torch.randn(res, res) * 0.05
    def chunks():
        g = torch.Generator().manual_seed(0)
        for _ in range(num_chunks):
            x = torch.randn(8, 3, res, res, generator=g)
            for _ in range(work): x = torch.tanh(x @ w + x)   # stand-in for the generator's forward pass
            yield to_uint8(x, channels_last=True)
    t0 = time.perf_counter(); n = sum(len(c) for c in chunks()); compute = time.perf_counter() - t0
    times = {}
    for background in (False, True):
        t0 = time.perf_counter()
        with VideoWriter(d / f'w{int(background)}.mp4', background=background) as vw:
            for c in chunks(): vw.write(c)
        times[background] = time.perf_counter() - t0
    print(f"{n} frames at {res} px: compute only {compute:.2f} s, compute + encode inline {times[False]:.2f} s, "
          f"in the background {times[True]:.2f} s (x{times[False] / times[True]:.2f} vs inline)")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='smaller data and fewer batches')
    ap.add_argument('--workdir', default=None, help='where to put the bench data (default: a temporary dir)')
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--only', choices=['loader', 'decode', 'seek', 'writer'], default=None, help='run one part only')
    args = ap.parse_args(argv)
    res, batch = 256, 16
    num_videos, num_frames = (8, 16) if args.quick else (24, 48)
    num_batches = 4 if args.quick else 30
    num_mp4, mp4_frames = (2, 32) if args.quick else (8, 64)
    torch.set_num_threads(max(1, os.cpu_count() // 2))

    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (other work on the machine skews the numbers)")
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        d = Path(d)
        if args.only in (None, 'loader'): part_loader(d, args, res, batch, num_videos, num_frames, num_batches)
        if args.only in (None, 'decode'): part_decode(d, args, res, num_mp4, mp4_frames)
        if args.only in (None, 'seek'):
            n_long, long_frames, clips = (2, 2000, 40) if args.quick else (3, 2400, 200)
            for gop in (None, 32):
                print(f"\n== sparse clips (3 frames up to 32 apart) from long videos, GOP {gop or 'default'} ==")
                bench_seek(d / f'seek{gop}', n_long, long_frames, clips, gop=gop)
        if args.only in (None, 'writer'):
            print("\n== streaming video writer: encoding inline vs in a background thread ==")
            bench_writer(d, 8 if args.quick else 24)


def part_loader(d, args, res, batch, num_videos, num_frames, num_batches):
    t0 = time.perf_counter()
    zip_path = write_synthetic_dataset(d / 'synth256.zip', num_videos=num_videos, num_frames=num_frames,
                                       resolution=res, ext='jpg', quality=95, progress=False)
    print(f"bench data: {num_videos} videos x {num_frames} frames at {res} px, JPEG q95, "
          f"{zip_path.stat().st_size / 1e6:.1f} MB zip, made in {time.perf_counter() - t0:.1f} s")
    print(f"\n== training loader: 3-frame clips at {res} px from a zip, batch {batch}, {num_batches} batches ==")
    base = None
    for w in args.workers:
        r = bench_loader(zip_path, w, batch, num_batches, warmup=1)
        base = base or r['clips_s']
        print(f"workers={w}: {r['clips_s']:7.1f} clips/s  {r['frames_s']:7.1f} frames/s  "
              f"(x{r['clips_s'] / base:.2f} vs 0 workers; first batch {r['startup_s']:.2f} s; batch {r['shape']})")


def part_decode(d, args, res, num_mp4, mp4_frames):
    print(f"\n== PyAV decoding: {num_mp4} mp4s (libx264 yuv420p) x {mp4_frames} frames at {res} px ==")
    t0 = time.perf_counter()
    mp4s = [write_video(d / 'mp4' / f'clip{i:02d}.mp4', synthetic_video((1, i), mp4_frames, res), fps=25)
            for i in range(num_mp4)]
    print(f"(encoded in {time.perf_counter() - t0:.1f} s)")
    fps, n = bench_decode(mp4s)
    print(f"decode to RGB arrays: {fps:7.1f} frames/s ({n} frames)")
    base = None
    for w in sorted({0, 2} & set(args.workers) | {0}):
        t0 = time.perf_counter()
        out = videos_to_dataset(d / 'mp4', d / f'conv{w}.zip', target_size=128, num_workers=w, progress=False)
        dt = time.perf_counter() - t0
        rate = out['num_videos'] * mp4_frames / dt
        base = base or rate
        print(f"prepare videos (decode + resize to 128 + JPEG + zip), workers={w}: {rate:7.1f} frames/s "
              f"(x{rate / base:.2f} vs 0 workers)")

if __name__ == '__main__':
    main()
