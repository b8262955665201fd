"""Metrics benchmark (issue 11): feature extraction videos/s with an I3D-sized stand-in detector on this CPU, the time
split between decoding, resizing and the detector, whether loader workers overlap decoding with the detector, and the
Fréchet distance time for 400-d (FVD) and 2048-d (FID) features.

    python bench/metrics.py [--videos 24] [--workers 2]

Prints times and ratios against baselines measured in the same run (never asserted)."""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stylegan_v.metrics.detectors import load_detector, save_standin
from stylegan_v.metrics.features import extract_features, open_source, video_view
from stylegan_v.metrics.stats import FeatureStats, frechet_terms

warnings.simplefilter('ignore')


class BenchI3D(torch.nn.Module):
    "I3D's size (~13.6M parameters; the real one has ~12M), its call and its 224x224 internal resize; ~3.6 GMAC per 16-frame clip (I3D: more)."
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv3d(3, 64, (3, 7, 7), stride=(2, 4, 4), padding=(1, 3, 3))
        self.c2 = torch.nn.Conv3d(64, 192, 3, stride=2, padding=1)
        self.c3 = torch.nn.Conv3d(192, 480, 3, stride=2, padding=1)
        self.c4 = torch.nn.Conv3d(480, 832, 3, stride=(1, 2, 2), padding=1)
        self.fc = torch.nn.Linear(832, 400)

    def preprocess(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos.float() / 127.5 - 1
        return F.interpolate(x, size=[x.shape[2], 224, 224], mode='trilinear', align_corners=False)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c4(F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))))
        return self.fc(x.mean([2, 3, 4]))

    def forward(self, videos: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = True) -> torch.Tensor:
        y = self.net(self.preprocess(videos))
        return y if return_features else y.softmax(1)


def make_data(root: Path, n: int, frames: int = 16, size: int = 128) -> Path:
    rs = np.random.RandomState(0)
    for v in range(n):
        (root / f'{v:06d}').mkdir(parents=True)
        base = rs.randint(0, 256, (size, size, 3), dtype=np.uint8)
        for f in range(frames): Image.fromarray(np.roll(base, 3 * f, axis=1)).save(root / f'{v:06d}' / f'{f:06d}.png')
    return root


def timed(fn, repeat=1):
    t = time.perf_counter()
    for _ in range(repeat): out = fn()
    return (time.perf_counter() - t) / repeat, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--videos', type=int, default=24)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--batch', type=int, default=8, help="videos per batch (the original's 128 frames // 16 at 128 px)")
    ap.add_argument('--repeat', type=int, default=2, help='runs per pipeline configuration (the best is kept)')
    ap.add_argument('--skip-frechet', action='store_true', help='only the extraction part')
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model = BenchI3D().eval()
        det = load_detector('i3d', {'i3d': str(save_standin(model, d / 'bench_i3d.pt'))})
        print(f"stand-in detector: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, TorchScript via load_detector")
        src = open_source(make_data(d / 'data', args.videos))
        clips, n = video_view(src, 16)
        kw = dict(rescale=True, resize=True, return_features=True)

        # 1. the parts, one after the other
        t_decode, batch = timed(lambda: torch.stack([clips[i] for i in range(n)]))
        x = batch.permute(0, 2, 1, 3, 4).contiguous()
        with torch.no_grad():
            t_resize, pre = timed(lambda: torch.cat([model.preprocess(x[i:i + args.batch]) for i in range(0, n, args.batch)]))
            t_net, _ = timed(lambda: torch.cat([model.net(pre[i:i + args.batch]) for i in range(0, n, args.batch)]))
        total = t_decode + t_resize + t_net
        print(f"\nper video ({n} videos of 16x128x128 PNG frames):")
        for name, t in (('decode (PNG -> uint8 clip)', t_decode), ('resize to 224 (in the detector)', t_resize), ('detector network', t_net)):
            print(f"  {name:32s} {1e3 * t / n:8.1f} ms  {100 * t / total:5.1f}%")

        # 2. the pipeline. Baseline: the same loop over clips already decoded in memory (the detector alone). Then the
        # loop over the PNG dataset without workers (decode, then detect) and with loader workers (decode overlaps the
        # detector). Runs alternate and the best of `--repeat` is kept, so load from other processes hurts all alike.
        in_memory = type('InMemory', (torch.utils.data.Dataset,), {'__len__': lambda self: n, '__getitem__': lambda self, i: batch[i]})()
        run = lambda items, w: extract_features(items, det, kw, 400, n, args.batch, FeatureStats(capture_mean_cov=True), num_workers=w, progress=False)
        configs = [('detector alone (clips in memory)', in_memory, 0), ('PNG dataset, num_workers=0', clips, 0),
                   *[(f'PNG dataset, num_workers={w}', clips, w) for w in sorted({1, args.workers})]]
        best = {name: float('inf') for name, _, _ in configs}
        for _ in range(args.repeat):
            for name, items, w in configs: best[name] = min(best[name], timed(lambda: run(items, w))[0])
        base = best[configs[0][0]]
        print()
        for name, _, _ in configs:
            print(f"extract_features, {name:34s} {n / best[name]:6.2f} videos/s  ({base / best[name]:.0%} of the detector-alone rate)")

    # 3. the Fréchet distance
    if args.skip_frechet: return
    rng = np.random.default_rng(0)
    print()
    base = None
    for dim, n_items in ((400, 2048), (2048, 4096)):
        stats = []
        for shift in (0.0, 0.1):
            s = FeatureStats(capture_mean_cov=True)
            s.append(rng.normal(shift, 1, size=(n_items, dim)).astype(np.float32))
            stats.append(s.get_mean_cov())
        for method in ('sqrtm', 'eigh'):
            t, r = timed(lambda: frechet_terms(*stats[1], *stats[0], method=method))
            base = base or t
            print(f"Fréchet distance {dim:5d}-d ({n_items} items per side), {method:5s}: {t:7.2f} s ({t / base:5.2f}x the 400-d sqrtm time), value {r['value']:.6f}")

if __name__ == '__main__':
    main()
