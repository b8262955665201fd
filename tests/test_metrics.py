"""Metrics (issue 11): statistics against independent float64 NumPy/SciPy code, FVD sanity, disk vs memory, 1 vs 2
processes, the real-statistics cache, and bad input. Detectors are tiny stand-ins built and scripted here."""
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from stylegan_v.core import UsageError
from stylegan_v.metrics.detectors import (DetectorError, StandInImageDetector, StandInVideoDetector, load_detector,
                                          save_standin)
from stylegan_v.metrics.evaluate import compute_metric, parse_metric, side_stats, make_side
from stylegan_v.metrics.stats import FeatureStats, frechet_distance, kernel_distance

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::FutureWarning')


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp('metrics')
    paths = {'i3d': str(save_standin(StandInVideoDetector(dim=400), d / 'i3d.pt')),
             'inception': str(save_standin(StandInImageDetector(), d / 'inception.pt'))}
    return d, paths


def squares(n=6, length=8, size=16, speed=1, seed=0):
    "uint8 [n, T, 3, H, W]: a coloured square moving right."
    rs = np.random.RandomState(seed)
    out = np.zeros((n, length, 3, size, size), np.uint8)
    for v in range(n):
        x0, y0, col = rs.randint(0, size - 4), rs.randint(0, size - 4), rs.randint(30, 256, 3)
        for f in range(length):
            x = (x0 + speed * f) % (size - 4)
            out[v, f, :, y0:y0 + 4, x:x + 4] = col[:, None, None]
    return out


def write_dataset(root: Path, videos: np.ndarray) -> Path:
    for v, video in enumerate(videos):
        (root / f'{v:06d}').mkdir(parents=True, exist_ok=True)
        for f, frame in enumerate(video): Image.fromarray(frame.transpose(1, 2, 0)).save(root / f'{v:06d}' / f'{f:06d}.png')
    return root


def kw(paths, **extra):
    return dict(detectors=paths, num_workers=0, progress=False, fewer='allow', device='cpu', cache=False, **extra)


# ---- statistics vs an independent float64 computation ----

def test_frechet_matches_independent_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(500, 64)), rng.normal(0.3, 1.2, size=(400, 64)) @ rng.normal(size=(64, 64)) * 0.3
    sa, sb = FeatureStats(capture_mean_cov=True), FeatureStats(capture_mean_cov=True)
    for i in range(0, 500, 64): sa.append(a[i:i + 64])
    for i in range(0, 400, 64): sb.append(b[i:i + 64])
    got = frechet_distance(*sb.get_mean_cov(), *sa.get_mean_cov())
    a, b = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)  # stats see float32 features
    ca, cb = np.cov(a.T, bias=True), np.cov(b.T, bias=True)
    root_a = scipy.linalg.sqrtm(ca).real  # independent route: Tr sqrt(A^1/2 B A^1/2), symmetric
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(scipy.linalg.sqrtm(root_a @ cb @ root_a).real)
    assert abs(got - want) / want <= 1e-6


def test_kid_matches_independent_loop():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 8)), rng.normal(0.4, 1, size=(50, 8))
    got = kernel_distance(x, y, num_subsets=3, max_subset_size=40, seed=5)
    rs, m, total = np.random.RandomState(5), 40, 0.0
    for _ in range(3):
        xs, ys = x[rs.choice(60, m, replace=False)], y[rs.choice(50, m, replace=False)]
        k = lambda p, q: (p @ q / 8 + 1) ** 3
        kxx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kxy = sum(k(xs[i], ys[j]) for i in range(m) for j in range(m)) / (m * m)
        total += kxx + kyy - 2 * kxy
    want = total / 3
    assert abs(got - want) / abs(want) <= 1e-6


# ---- FVD behaviour ----

def test_fvd_of_identical_sets_is_zero_and_grows_with_corruption(work):
    _, paths = work
    videos = squares(n=8, length=8)
    base = compute_metric('fvd8_8f', videos, videos, **kw(paths))
    assert abs(base['value']) <= 1e-6 * base['terms']['trace_real']
    rng = np.random.default_rng(0)
    noise = rng.normal(size=videos.shape)
    values = [compute_metric('fvd8_8f', videos, np.clip(videos + s * noise, 0, 255).astype(np.uint8), **kw(paths))['value']
              for s in (5, 20, 60)]
    assert base['value'] < values[0] < values[1] < values[2], values


def test_disk_and_memory_give_the_same_value(work):
    d, paths = work
    real, fake = squares(n=6, length=10, seed=0), squares(n=5, length=8, speed=3, seed=1)
    real_dir, fake_dir = write_dataset(d / 'real', real), write_dataset(d / 'fake', fake)
    on_disk = compute_metric('fvd6_8f', real_dir, fake_dir, seed=3, **kw(paths))
    in_mem = compute_metric('fvd6_8f', real, fake, seed=3, **kw(paths))
    assert on_disk['value'] == in_mem['value']
    assert (on_disk['protocol']['num_real'], on_disk['protocol']['num_fake']) == (6, 5)


# ---- 1 vs 2 processes ----

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


WORKER = r'''
import json, os, sys, warnings
warnings.simplefilter('ignore')
import torch
torch.set_num_threads(1)
rank, world, port, out, real, fake, i3d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
if world > 1: torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
from stylegan_v.metrics.evaluate import compute_metric
r = compute_metric('fvd6_8f', real, fake, detectors={'i3d': i3d}, num_workers=0, progress=False, fewer='allow', device='cpu', cache=False, batch_size=4, seed=2)
json.dump(r['value'], open(f'{out}.{world}.{rank}', 'w'))
'''


def test_one_and_two_processes_agree(work):
    d, paths = work
    real_dir = d / 'real' if (d / 'real').exists() else write_dataset(d / 'real', squares(n=6, length=10))
    fake_dir = d / 'fake' if (d / 'fake').exists() else write_dataset(d / 'fake', squares(n=5, length=8, speed=3, seed=1))
    script, out, port = d / 'worker.py', d / 'value', str(_free_port())
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    args = lambda r, w: [sys.executable, str(script), str(r), str(w), port, str(out), str(real_dir), str(fake_dir), paths['i3d']]
    procs = [subprocess.Popen(args(r, 2), env=env) for r in range(2)]
    single = subprocess.run(args(0, 1), env=env)
    assert single.returncode == 0 and all(p.wait(timeout=120) == 0 for p in procs)
    values = [json.loads(Path(f'{out}.{w}.{r}').read_text()) for w, r in ((1, 0), (2, 0), (2, 1))]
    assert values[0] == values[1] == values[2], values


# ---- cache ----

def test_cache_hit_and_invalidation(work, monkeypatch):
    d, paths = work
    monkeypatch.setenv('STYLEGAN_V_METRICS_CACHE', str(d / 'cache'))
    real_dir = write_dataset(d / 'cached_real', squares(n=4, length=10, seed=4))
    fake = squares(n=4, length=8, speed=2, seed=5)
    run = lambda **e: compute_metric('fvd4_8f', real_dir, fake, **{**kw(paths), 'cache': True, **e})
    first, second = run(), run()
    assert (first['cache'], second['cache'], first['value'] == second['value']) == ('miss', 'hit', True)
    assert run(seed=1)['cache'] == 'miss'                                # a protocol field changed
    assert run(replace_cache=True)['cache'] == 'replaced'
    assert run(cache=False)['cache'] == 'off'
    other = save_standin(StandInVideoDetector(dim=400, seed=9), d / 'i3d_other.pt')
    assert run(detectors={**paths, 'i3d': str(other)})['cache'] == 'miss'  # another detector file
    frame = real_dir / '000001' / '000003.png'
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(frame)           # the data changed
    changed = run()
    assert changed['cache'] == 'miss' and changed['value'] != first['value']


# ---- bad input ----

def test_bad_detectors(work):
    d, paths = work
    (d / 'junk.pt').write_bytes(b'PK not really')
    with pytest.raises(DetectorError, match='not a TorchScript archive'): load_detector('i3d', {'i3d': str(d / 'junk.pt')})
    with pytest.raises(DetectorError, match='sha256 mismatch'): load_detector('i3d', paths, sha256='ab' * 32)
    with pytest.raises(DetectorError, match='is this the right detector file'):  # an image detector under the video name
        compute_metric('fvd4_8f', squares(4), squares(4), **kw({'i3d': paths['inception']}))
    wrong_dim = save_standin(StandInVideoDetector(dim=128), d / 'i3d_128.pt')
    with pytest.raises(DetectorError, match=r'expected output \[\d+, 400\], got \(\d+, 128\)'):
        compute_metric('fvd4_8f', squares(4), squares(4), **kw({'i3d': str(wrong_dim)}))


def test_too_few_videos(work):
    _, paths = work
    with pytest.raises(UsageError, match='has 4 usable videos, fewer than the 16'):
        compute_metric('fvd16_8f', squares(4), squares(16), **{**kw(paths), 'fewer': 'error'})
    r = compute_metric('fvd16_8f', squares(4), squares(16), **kw(paths))  # fewer='allow' records the true count
    assert (r['protocol']['num_real'], r['protocol']['num_real_requested'], r['protocol']['num_fake']) == (4, 16, 16)
    with pytest.warns(UserWarning, match='fewer than the 16'):
        compute_metric('fvd16_8f', squares(4), squares(16), **{**kw(paths), 'fewer': 'warn'})


def test_videos_shorter_than_frames_times_stride(work):
    _, paths = work
    with pytest.raises(UsageError, match='has 8 frames, but the fake side needs at least 16'):
        compute_metric('fvd4_16f_subsample2f', squares(4, length=16), squares(4, length=8), **kw(paths))
    with pytest.raises(UsageError, match='all 4 videos are shorter than the 16 frames'):
        compute_metric('fvd4_16f_subsample2f', squares(4, length=8), squares(4, length=16), **kw(paths))
    short_real = [torch.from_numpy(v) for v in squares(4, length=16)] + [torch.from_numpy(squares(1, length=6)[0])]
    r = compute_metric('fvd5_16f_subsample2f', short_real, squares(5, length=16), **kw(paths))  # the real side skips short videos
    assert r['protocol']['num_real'] == 4 and r['protocol']['num_frames'] == 8 and r['protocol']['stride'] == 2


def test_cli_errors_are_one_line(work, capsys):
    from stylegan_v.metrics.evaluate import cli_main
    d, _ = work
    assert cli_main(['--real', str(d), '--fake', str(d), '--metrics', 'fvd2048_16f,fdi50k']) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and "unknown metric 'fdi50k'" in err
    assert cli_main(['--real', str(d), '--metrics', 'fvd2048_16f']) == 2
    assert 'expected exactly one fake side' in capsys.readouterr().err


def test_generator_fakes_are_per_video_deterministic():
    from stylegan_v.metrics.features import GeneratorVideos
    from stylegan_v.networks.generator import Generator
    torch.manual_seed(0)
    G = Generator(c_dim=0, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0), cfg={'z_dim': 32})
    gv = GeneratorVideos(G.eval(), num_frames=4, stride=2, seed=7)
    both, one = gv.render([0, 1]), gv.render([1])
    assert both.dtype == torch.uint8 and both.shape == (2, 4, 3, 16, 16)
    assert torch.equal(both[1:], one) and not torch.equal(both[0], both[1])


def test_folder_of_video_files(work):
    "A folder of mp4s is a dataset like any other: FVD equals the one computed from the same decoded frames in memory."
    from stylegan_v.data.video import write_video
    from stylegan_v.metrics.features import open_source
    d, paths = work
    (d / 'mp4s').mkdir(exist_ok=True)
    for i, v in enumerate(squares(n=4, length=10, seed=8)):
        write_video(d / 'mp4s' / f'{i:03d}.mp4', v.transpose(0, 2, 3, 1), pix_fmt='yuv444p', options={'qp': '0'})
    src = open_source(d / 'mp4s')
    assert (src.lengths, src.frame_shape) == ([10] * 4, [3, 16, 16])
    decoded = np.stack([src.load_frames(i, range(10)) for i in range(4)])
    fake = squares(n=4, length=8, speed=2, seed=9)
    from_files = compute_metric('fvd4_8f', d / 'mp4s', fake, seed=1, **kw(paths))
    from_memory = compute_metric('fvd4_8f', decoded, fake, seed=1, **kw(paths))
    assert from_files['value'] == from_memory['value'] and from_files['protocol']['num_real'] == 4


def test_cli_with_a_checkpoint(work, tmp_path):
    "`stylegan-v metrics --network CKPT`: fakes rendered by the generator; results appended to metric-<name>.jsonl beside it."
    from stylegan_v.checkpoints import save_checkpoint
    from stylegan_v.metrics.evaluate import cli_main
    from stylegan_v.networks.generator import Generator
    d, paths = work
    torch.manual_seed(0)
    G = Generator(c_dim=0, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0), cfg={'z_dim': 32})
    ckpt = save_checkpoint(tmp_path / 'run' / 'network-snapshot-000000.safetensors', {'G_ema': G})
    real = write_dataset(tmp_path / 'real', squares(n=4, length=8))
    argv = ['--real', str(real), '--network', str(ckpt), '--metrics', 'fvd4_8f', '--detector', f"i3d={paths['i3d']}",
            '--workers', '0', '--device', 'cpu', '--no-cache', '--seed', '3']
    assert cli_main(argv) == 0
    line = json.loads((tmp_path / 'run' / 'metric-fvd4_8f.jsonl').read_text().splitlines()[-1])
    assert line['protocol']['fake']['kind'] == 'generator' and line['protocol']['num_fake'] == 4 and line['value'] > 0
    direct = compute_metric('fvd4_8f', real, G=G, seed=3, **kw(paths))
    assert direct['value'] == line['value']
    two = compute_metric('fvd4_8f', real, G=G, seed=3, num_runs=2, **kw(paths))  # runs use seeds 3 and 4
    assert two['runs'][0] == direct['value'] and two['runs'][1] != two['runs'][0]
    assert two['value'] == np.mean(two['runs']) and two['std'] == np.std(two['runs']) and 'fvd4_8f_run02' in two['results']


def test_kid_is_and_video_is(work, tmp_path):
    "The other families end to end: KID (generator frames, 16 per video), image IS and video IS (C3D-style stand-in)."
    from stylegan_v.metrics.detectors import StandInVideoDetector
    from stylegan_v.metrics.features import GeneratorVideos, open_source, frame_view
    from stylegan_v.networks.generator import Generator
    d, paths = work
    c3d = save_standin(StandInVideoDetector(dim=101, probs_only=True, seed=3), tmp_path / 'c3d.pt')
    torch.manual_seed(0)
    G = Generator(c_dim=0, w_dim=32, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0), cfg={'z_dim': 32})
    real = squares(n=3, length=16)
    kid = compute_metric('kid40_full', real, G=G, seed=1, **kw(paths))
    p = kid['protocol']
    assert (p['num_real'], p['num_fake'], p['num_real_requested']) == (48, 40, 1_000_000)
    # the same number from the features directly: 40 generated frames = videos 0, 1, 2 (16 frames each), cut at 40
    det = load_detector('inception', paths)
    fake_frames = GeneratorVideos(G.eval(), 16, 1, seed=1).render([0, 1, 2]).flatten(0, 1)[:40]
    real_frames = torch.from_numpy(real).flatten(0, 1)
    feats = lambda x: det.features(x, dict(return_features=True), 2048).detach().numpy()
    assert abs(kid['value'] - kernel_distance(feats(fake_frames), feats(real_frames), 100, 1000, seed=1)) <= 1e-6 * abs(kid['value'])
    is_ = compute_metric('is20', None, squares(n=2, length=16), **kw(paths))
    assert 1 <= is_['value'] <= 1008 and set(is_['results']) == {'is20_mean', 'is20_std'} and is_['protocol']['num_fake'] == 20
    isv = compute_metric('isv20_ucf', None, squares(n=20, length=16), **kw({'c3d': str(c3d)}))
    assert 1 <= isv['value'] <= 101 and isv['std'] >= 0 and isv['protocol']['num_frames'] == 16
