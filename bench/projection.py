"""Benchmark (not a test): how well `stylegan-v project` reconstructs clips, against the number of steps.

For a generator checkpoint (`--network`, ours or an original pickle) and a source of target clips, every clip is
projected once per step count (a separate run each: the learning-rate and noise schedules depend on the run length,
so a 300-step run is not the first 300 steps of a 500-step one), and the table gives, per run: mean PSNR over the
frames, the worst frame's PSNR, the motion ratio (1 = the reconstruction moves as much as the target) and the CPU
seconds of the projection. Target clips come from one of:

- `--seeds 3,4`: clips the network itself generates from those seeds (`generate.videos_array`, uint8 as a PNG/mp4
  would hold them): the exact codes exist, so this measures the optimisation alone;
- `--data DATASET --videos 0,1`: the first `--num-frames` frames of those videos of a dataset (zip or folder), e.g.
  the demo's own data `runs_out/demo/data/*.zip` for the demo's model;
- `--target PATH`: a video file or folder of frames (as `stylegan-v project --target`).

The perceptual distance is `--lpips PATH` (the VGG16 TorchScript) or, by default, the random stand-in
`project.RandomLPIPS` (no download). `key=value` arguments override `ProjectionConfig` fields for every run
(e.g. `init_candidates=0` for the old start, `lbfgs_fraction=0` for Adam alone); `--compare legacy` adds the settings
before issue 18 as a second row. Every loss evaluation counts as a step, the L-BFGS line search's included.

    python bench/projection.py --network ../shared/parity/config_a/fixture.pkl --seeds 3
    python bench/projection.py --network runs_out/demo/model.safetensors --data runs_out/demo/data/*.zip --videos 0,1,2
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from stylegan_v.data.dataset import VideoSource
from stylegan_v.generate import load_generator, parse_seeds, videos_array
from stylegan_v.project import (ProjectionConfig, RandomLPIPS, legacy_projection_config, load_lpips, project_video,
                                projection_metrics)


def target_clips(args, G) -> list[tuple[str, np.ndarray]]:
    "(name, uint8 [T, H, W, 3]) for every target clip the arguments name."
    if sum(x is not None for x in (args.seeds, args.data, args.target)) != 1:
        sys.exit('bench/projection.py: give exactly one of --seeds, --data, --target')
    if args.seeds is not None:
        return [(f'seed {s}', videos_array(G, [s], args.num_frames)[0]) for s in parse_seeds(args.seeds)]
    if args.data is not None:
        src = VideoSource(args.data, resolution=G.img_resolution)
        return [(f'video {v}', src.load_frames(v, range(args.num_frames)).transpose(0, 2, 3, 1))
                for v in parse_seeds(args.videos)]
    from stylegan_v.project import read_target
    return [(args.target, read_target(args.target, G.img_resolution, args.num_frames))]


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep: sys.exit(f'bench/projection.py: expected key=value, got {item!r}')
        out[key] = type(getattr(ProjectionConfig(), key))(eval(value, {}, {})) if value not in ('True', 'False') else value == 'True'
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--network', required=True)
    p.add_argument('--seeds'); p.add_argument('--data'); p.add_argument('--videos', default='0')
    p.add_argument('--target')
    p.add_argument('--num-frames', type=int, default=16)
    p.add_argument('--steps', default='100,300,500', help='step counts, one run each')
    p.add_argument('--lpips', help='VGG16 LPIPS TorchScript (default: the random stand-in)')
    p.add_argument('--compare', choices=('legacy',), help='also run the settings before issue 18')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: leave the default)')
    p.add_argument('overrides', nargs='*', metavar='key=value', help='ProjectionConfig fields')
    args = p.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    G = load_generator(args.network).eval().requires_grad_(False)
    lpips = load_lpips(args.lpips) if args.lpips else RandomLPIPS()
    clips = target_clips(args, G)
    overrides = parse_overrides(args.overrides)
    settings = [('current', ProjectionConfig(**overrides))]
    if args.compare == 'legacy': settings.append(('legacy', legacy_projection_config(**overrides)))
    print(f'network {args.network} ({G.img_resolution} px), {len(clips)} clip(s) x {args.num_frames} frames, '
          f'LPIPS {args.lpips or "random stand-in"}, torch threads {torch.get_num_threads()}')
    print('| settings | clip | steps | mean PSNR (dB) | worst frame (dB) | motion ratio | CPU s |')
    print('|---|---|---|---|---|---|---|')
    for label, base in settings:
        for name, clip in clips:
            for steps in (int(s) for s in args.steps.split(',')):
                cfg = ProjectionConfig.from_dict({**base.to_dict(), 'num_steps': steps})
                torch.manual_seed(0)
                t0 = time.process_time()
                proj = project_video(G, clip, lpips, cfg, progress=False)
                cpu = time.process_time() - t0
                m = projection_metrics(G, proj, clip, lpips)
                print(f"| {label} | {name} | {steps} | {m['psnr_mean']:.2f} | {min(m['psnr']):.2f} | "
                      f"{m['motion_ratio']:.2f} | {cpu:.0f} |", flush=True)


if __name__ == '__main__':
    main()
