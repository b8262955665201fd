"""The first-GPU check: one command that tells, in under 8 minutes on one CUDA GPU, whether this package runs right
and how fast, and writes `report.json` and a readable `report.md` into `--out DIR`.

    python bench/gpu_check.py --out gpu_report                      # on a machine with one CUDA GPU
    python bench/gpu_check.py --out /tmp/r --device cpu --quick     # the same plumbing at toy sizes, in seconds

Parts, each in its own process with its own time box (a part that fails or runs out of time is reported and the
rest still runs; the whole run keeps to `--budget` seconds, the least important part last):
  kernels        build time of the native kernels; bias_act, upfirdn2d, conv2d_resample: CUDA vs the reference (on the
                 GPU) vs the CPU native kernels on random inputs: forward, gradient, second order, fp32 and fp16,
                 max errors against stated bounds; the first-use self-check's outcome
  networks       G and D of ../shared/parity/config_a on the GPU vs the CPU (frames, logits) and vs the original's
                 tensors, within tests/test_networks_parity.py's tolerances; the original's pickle loaded onto the GPU
  train_*        one training iteration at 256 px with the original's default widths: fp32, fp16 top layers
                 (num_fp16_res=4 + conv_clamp=256, the default), bf16 autocast, channels_last, torch.compile:
                 s/iteration, sec/kimg (frames, as the original counts), peak GPU memory, every loss finite
  torchrun       `torchrun --nproc_per_node 1 stylegan-v train` (NCCL on a GPU) for two steps, then resume=latest
  fvd            FVD feature extraction videos/s with an I3D-sized stand-in, and the metric on the GPU equal to the
                 CPU's (relative 1e-4) on a small set
  generate       `generate` of 1024 frames at 256 px: frames/s and peak GPU memory against 64 frames
Errors are relative to the reference's scale when that exceeds 1 (`ops.build.max_error`). TF32 is off in the
comparisons (torch's default for matmuls, not for cuDNN convolutions) and in the timings, as in `stylegan-v train`
by default (`train.allow_tf32=false`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name, time box in seconds on a GPU, what it checks (in run order: the least important last)
PARTS = [
    ('kernels', 150, 'kernel build, CUDA vs reference vs CPU native'),
    ('networks', 60, 'G and D on the GPU vs the CPU, the original pickle on the GPU'),
    ('train_fp32', 90, 'one training iteration (256 px; --quick: toy sizes), fp32; writes the 256 px dataset first'),
    ('train_fp16', 60, 'one training iteration, fp16 top layers (num_fp16_res=4, conv_clamp=256): the default'),
    ('train_bf16', 60, 'one training iteration, bf16 autocast'),
    ('train_channels_last', 60, 'one training iteration, fp16 top layers + channels_last'),
    ('torchrun', 120, 'torchrun --nproc_per_node 1 stylegan-v train, then resume=latest'),
    ('fvd', 60, 'FVD feature extraction throughput, GPU value = CPU value'),
    ('generate', 60, 'generate 1024 frames at 256 px vs 64 frames (--quick: 64 vs 16 at 32 px)'),
    ('train_compile', 150, 'one training iteration, fp16 top layers + torch.compile'),
]
TRAIN_VARIANTS = {  # part -> (train.dtype, channels_last, compile)
    'train_fp32': ('fp32', False, False), 'train_fp16': ('fp16', False, False), 'train_bf16': ('bf16', False, False),
    'train_channels_last': ('fp16', True, False), 'train_compile': ('fp16', False, True)}
BOUNDS = {'float32': 1e-4, 'float16': 1e-2}  # kernel comparisons, relative to the values' scale


# ------------------------------------------------------------------------------------------------- sizes and context
def sizes(quick: bool, overrides=()) -> dict:
    "Problem sizes: the real ones, or toy ones for `--quick` (seconds on a CPU); `overrides`: 'key=json' items."
    out = _sizes(quick)
    for item in overrides:
        key, _, value = item.partition('=')
        if key not in out:
            print(f"gpu_check: error: --size {item}: unknown key {key!r}; expected one of {', '.join(out)}", file=sys.stderr)
            sys.exit(2)
        out[key] = json.loads(value) if value[:1] in '[{"0123456789-' or value in ('true', 'false') else value
        if isinstance(out[key], list): out[key] = tuple(out[key])
    return out


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(res=16, widths='tiny', batch=4, warm_steps=1, timed_steps=1, torchrun_res=16, fvd_videos=6,
                    fvd_frames=8, fvd_res=32, fvd_detector='tiny', gen_res=32, gen_frames=(16, 64), kernel_shape=(2, 8, 16, 16))
    return dict(res=256, widths='default', batch=8, warm_steps=2, timed_steps=3, torchrun_res=64, fvd_videos=32,
                fvd_frames=16, fvd_res=128, fvd_detector='i3d-sized', gen_res=256, gen_frames=(64, 1024),
                kernel_shape=(4, 64, 64, 64))


class Part:
    "What one part found: numbers, checks against bounds (`ok` decides the part's status) and things it skipped."
    def __init__(self, name: str):
        self.name, self.numbers, self.checks, self.skipped = name, {}, [], []

    def check(self, what: str, value, bound, ok: bool | None = None, unit: str = ''):
        ok = bool(value <= bound) if ok is None else bool(ok)  # a NaN error fails
        self.checks.append(dict(what=what, value=value, bound=bound, ok=ok, unit=unit))
        return ok

    def skip(self, what: str, why: str): self.skipped.append(dict(what=what, why=why))

    def to_dict(self) -> dict:
        failed = [c for c in self.checks if not c['ok']]
        return dict(name=self.name, status='fail' if failed else 'ok', numbers=self.numbers, checks=self.checks,
                    skipped=self.skipped)


def _sync(device):
    import torch
    if device.type == 'cuda': torch.cuda.synchronize(device)


def _reset_peak(device):
    import torch
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device):
    import torch
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == 'cuda' else None


def _load_file(name: str, path: Path):
    "Import the Python file `path` as module `name` (bench/ and tests/ are folders, not packages)."
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------------ part: kernels
def part_kernels(p: Part, device, sz: dict, work: Path):
    import torch
    from stylegan_v.ops import build
    from stylegan_v.ops.bias_act import bias_act
    from stylegan_v.ops.conv2d_resample import conv2d_resample
    from stylegan_v.ops.upfirdn2d import setup_filter, upfirdn2d
    for kind in ('cpu',) + (('cuda',) if device.type == 'cuda' else ()):
        cached = (build.extensions_dir() / f'stylegan_v_ops_{kind}_{build.build_tag(kind)}').is_dir()
        t0 = time.perf_counter()
        ok = build.load_extension(kind, warn=False)
        p.numbers[f'{kind}_build_s'] = round(time.perf_counter() - t0, 2)
        p.numbers[f'{kind}_build'] = ('loaded from the cache' if cached else 'compiled') if ok else f'failed: {build._STATE[kind].reason}'
        p.check(f'{kind.upper()} kernels build and load', 0, 0, ok=ok)
        if ok:
            checks = build.run_self_checks(kind)
            p.numbers[f'{kind}_self_check'] = checks
            p.check(f'{kind.upper()} first-use self-check passes', 0, 0,
                    ok=bool(checks) and all(v.startswith('matches the reference') for v in checks.values()))
    if device.type != 'cuda': p.skip('CUDA kernel columns', f'no CUDA device (--device {device.type})')
    g = torch.Generator().manual_seed(0)
    N, C, H, W = sz['kernel_shape']
    x0, b0 = torch.randn(N, C, H, W, generator=g) * 2, torch.randn(C, generator=g)
    # inputs within a hair of the clamp or of the leaky ReLU's kink are moved off it: float16 rounding would flip
    # their mask there, an honest difference that says nothing about the kernel
    s = (x0 + b0[:, None, None]).double()
    y = torch.nn.functional.leaky_relu(s, 0.2) * 2 ** 0.5
    x0 = torch.where((s.abs() < 0.02) | ((y.abs() - 4).abs() < 0.05), 0.3 - b0[:, None, None], x0)
    w0 = torch.randn(C, C, 3, 3, generator=g) / (3 * C ** 0.5)
    f = setup_filter([1, 3, 3, 1])
    cases = {  # name -> (fn(impl, *inputs), float32 inputs)
        'bias_act lrelu clamp': (lambda impl, x, b: bias_act(x, b, act='lrelu', clamp=256 / 64, impl=impl), (x0, b0)),
        'upfirdn2d up2': (lambda impl, x: upfirdn2d(x, f.to(x.device), up=2, padding=[2, 1, 2, 1], gain=4, impl=impl), (x0,)),
        'upfirdn2d down2': (lambda impl, x: upfirdn2d(x, f.to(x.device), down=2, padding=1, impl=impl), (x0,)),
        'conv2d_resample up2': (lambda impl, x, w: conv2d_resample(x, w, f.to(x.device), up=2, padding=1, impl=impl), (x0, w0)),
        'conv2d_resample down2': (lambda impl, x, w: conv2d_resample(x, w, f.to(x.device), down=2, padding=1, impl=impl), (x0, w0)),
    }
    table = []
    for name, (fn, inputs) in cases.items():
        names = ['x', 'b'] if 'bias_act' in name else ['x', 'w'][:len(inputs)]
        labels = build.fwd_grad_grad_names(names)
        cpu_native = build.fwd_grad_grad(lambda *a: fn('native', *a), inputs)
        cpu_ref = build.fwd_grad_grad(lambda *a: fn('ref', *a), inputs)
        for lab, a, r in zip(labels, cpu_native, cpu_ref):
            err = build.max_error(a, r)
            table.append(dict(case=name, term=lab, dtype='float32', pair='CPU native vs CPU ref', error=err))
            p.check(f'{name} {lab} float32: CPU native vs CPU ref', err, BOUNDS['float32'])
        if device.type != 'cuda': continue
        for dtype in ('float32', 'float16'):
            dev_in = [t.to(device, getattr(torch, dtype)) for t in inputs]
            cuda_native = build.fwd_grad_grad(lambda *a: fn('native', *a), dev_in)
            cuda_ref = build.fwd_grad_grad(lambda *a: fn('ref', *a), dev_in)
            for lab, a, r, c in zip(labels, cuda_native, cuda_ref, cpu_native):
                for pair, other in (('CUDA native vs CUDA ref', r), ('CUDA native vs CPU native (fp32)', c)):
                    err = build.max_error(a.float().cpu(), other.float().cpu())
                    table.append(dict(case=name, term=lab, dtype=dtype, pair=pair, error=err))
                    p.check(f'{name} {lab} {dtype}: {pair}', err, BOUNDS[dtype])
    p.numbers['errors'] = table
    p.numbers['bounds'] = BOUNDS


# ----------------------------------------------------------------------------------------------------- part: networks
def part_networks(p: Part, device, sz: dict, work: Path):
    import torch
    parity = _load_file('test_networks_parity', REPO / 'tests' / 'test_networks_parity.py')
    CODE_TOL, FRAME_TOL, _ctor = parity.CODE_TOL, parity.FRAME_TOL, parity._ctor  # the parity tests' own tolerances
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    from stylegan_v.core import SharedDataMissing, in_ci, locate_shared
    from stylegan_v.legacy import load_network_pkl
    from stylegan_v.networks.discriminator import Discriminator
    from stylegan_v.networks.generator import Generator
    try: d = locate_shared('parity', 'config_a')
    except SharedDataMissing as e:
        if in_ci(): raise
        p.skip('the whole part', str(e)); return
    cfg = json.loads((d / 'config.json').read_text())
    I, O = torch.load(d / 'inputs.pt'), torch.load(d / 'outputs.pt')
    p.numbers['tolerances'] = dict(frames=FRAME_TOL, logits=CODE_TOL)

    def nets(dev):
        G = Generator(**_ctor(cfg['G_ctor']), cfg=cfg['model_cfg']['generator']).eval()
        G.load_state_dict(torch.load(d / 'G_state.pt'))
        D = Discriminator(**_ctor(cfg['D_ctor']), cfg=cfg['model_cfg']['discriminator']).eval()
        D.load_state_dict(torch.load(d / 'D_state.pt'))
        return G.to(dev), D.to(dev)

    def run(G, D, dev):
        to = lambda t: t.to(dev)
        with torch.no_grad():
            frames = G(to(I['z']), to(I['c']), to(I['t']), motion_z=to(I['motion_z']), noise_mode='const')
            logits = D(to(I['real_img']), to(I['c']), to(I['t_D']))['image_logits']
        return frames.cpu(), logits.cpu()

    def close(what, a, b, tol):  # torch.allclose as a number: the largest |a - b| / (atol + rtol |b|), at most 1
        ratio = ((a - b).abs() / (tol['atol'] + tol['rtol'] * b.abs())).max().item()
        p.check(f"{what} (max abs diff {(a - b).abs().max().item():.2g}), in units of atol + rtol|b|", ratio, 1.0,
                ok=torch.allclose(a, b, **tol))

    cpu_frames, cpu_logits = run(*nets('cpu'), torch.device('cpu'))
    close('frames, CPU vs the original', cpu_frames, O['frames_psi1'], FRAME_TOL)
    if device.type != 'cuda':
        p.skip('G and D on the GPU, the pickle on the GPU', f'no CUDA device (--device {device.type})')
        return
    dev_frames, dev_logits = run(*nets(device), device)
    close('frames, GPU vs CPU', dev_frames, cpu_frames, FRAME_TOL)
    close('frames, GPU vs the original', dev_frames, O['frames_psi1'], FRAME_TOL)
    close('D logits, GPU vs CPU', dev_logits, cpu_logits, CODE_TOL)
    close('D logits, GPU vs the original', dev_logits, O['D_real.image_logits'], CODE_TOL)
    snap = load_network_pkl(d / 'fixture.pkl', device=device)
    G = snap['G_ema']
    p.check('the original pickle loads onto the GPU (G_ema parameters on the device)', 0, 0,
            ok=all(t.device.type == device.type for t in G.parameters()))
    with torch.no_grad():
        frames = G(*(I[k].to(device) for k in ('z', 'c', 't')), motion_z=I['motion_z'].to(device), noise_mode='const').cpu()
    close("frames of the pickle's G_ema on the GPU vs the original", frames, O['frames_psi1'], FRAME_TOL)


# -------------------------------------------------------------------------------------------------------- part: train
def _dataset(work: Path, res: int, videos: int = 16, frames: int = 16) -> Path:
    "The built-in synthetic dataset at `res` px (written once per run directory)."
    from stylegan_v.data.synthetic import default_synthetic_dataset
    return default_synthetic_dataset(videos, frames, res, root=work / 'data')


def _run_config(data: Path, sz: dict, res: int, device, extra=(), workers: int = 0):
    from stylegan_v.config import RunConfig
    from stylegan_v.train import demo_train_config
    common = ['metrics.metrics=[]', 'train.progress=false', f'train.device={device.type}', f'train.num_workers={workers}',
              'train.allow_tf32=false', f'train.batch_gpu={sz["batch"]}']  # one round of the whole batch: no memory probe
    if sz['widths'] == 'tiny':  # the demo's small model, in the same precision as the original's default
        rc = demo_train_config(data, resolution=res, channels=16).override(['model.fp32=false', f'train.batch_size={sz["batch"]}'])
    else:  # the original's defaults: channel_base 16384 at 256 px, channel_max 512, 2-layer mappings
        rc = RunConfig().override([f'data.path={data}', f'data.resolution={res}', f'train.batch_size={sz["batch"]}',
                                   'data.max_num_frames=16'])
    return rc.override(common + list(extra))


def part_train(p: Part, device, sz: dict, work: Path):
    import torch
    from stylegan_v.trainer import Trainer
    dtype, channels_last, compile_ = TRAIN_VARIANTS[p.name]
    if dtype == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        p.skip('bf16', f'{torch.cuda.get_device_name(device)} has no bfloat16 support'); return
    if dtype == 'fp16' and device.type == 'cpu':  # not a skip of the part: it runs, with conv_clamp, in fp32
        p.skip('fp16 arithmetic', 'the top layers compute in fp16 on CUDA only (as in the original); on a CPU in fp32')
    if compile_ and device.type == 'cpu':
        p.skip('torch.compile', 'compiling G takes minutes on a CPU; run on a GPU (or without --quick)'); return
    data = _dataset(work, sz['res'])
    rc = _run_config(data, sz, sz['res'], device, [f'train.dtype={dtype}', f'train.channels_last={str(channels_last).lower()}',
                                                   f'train.compile={str(compile_).lower()}'])
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    trainer = Trainer(rc)
    rc = trainer.rc
    p.numbers.update(resolution=sz['res'], batch=rc.train.batch_size, frames_per_video=trainer.num_frames, dtype=dtype,
                     channels_last=channels_last, compile=compile_, modconv=trainer.modconv or "G's own",
                     num_fp16_res=rc.model.num_fp16_res, conv_clamp=rc.model.conv_clamp,
                     G_params_M=round(sum(t.numel() for t in trainer.G.parameters()) / 1e6, 2),
                     D_params_M=round(sum(t.numel() for t in trainer.D.parameters()) / 1e6, 2))
    clips = iter(trainer.clip_loader())
    rounds = trainer.next_rounds(clips)  # one batch, reused: the timings are of the GPU work, not of PNG decoding
    _reset_peak(device)

    def steps(n, at=None):
        if at is not None: trainer.counters['batch_idx'] = at
        _sync(device); t0 = time.perf_counter()
        for _ in range(n): trainer.train_step(rounds)
        _sync(device); return (time.perf_counter() - t0) / n

    p.numbers['first_step_s'] = round(steps(1), 3)          # step 0: every phase (Dreg too); compiles under compile
    for _ in range(sz['warm_steps'] - 1): steps(1)
    t_main = steps(sz['timed_steps'])                          # Gmain + Dmain (steps 1..15 of every 16)
    t_reg = steps(1, at=16)                                    # Gmain + Dmain + Dreg (every 16th step)
    frames = rc.train.batch_size * trainer.num_frames
    t_iter = t_main + (t_reg - t_main) / rc.train.D_reg_interval  # the average step, lazy R1 included
    p.numbers.update(s_per_iter=round(t_main, 4), s_per_iter_with_dreg=round(t_reg, 4), s_per_iter_avg=round(t_iter, 4),
                     sec_per_kimg=round(t_iter / frames * 1000, 2), peak_gpu_mem_gb=_peak_gb(device))
    stats = trainer.tick_stats()
    losses = {k: float(v) for k, v in stats.items() if k.startswith('Loss/')}
    p.numbers['losses'] = losses
    p.check('every loss term finite', 0, 0, ok=bool(losses) and all(v == v and abs(v) != float('inf') for v in losses.values()))
    del clips


# ----------------------------------------------------------------------------------------------------- part: torchrun
def part_torchrun(p: Part, device, sz: dict, work: Path):
    import torch
    from stylegan_v.runs import find_snapshots, snapshot_name
    res = sz['torchrun_res']
    data = _dataset(work, res)
    rc = _run_config(data, sz, res, device, workers=2)  # the real loop reads its data every step
    frames_per_step = sz['batch'] * rc.sampling.num_frames_per_video
    cfg = work / 'torchrun.yaml'
    import yaml
    cfg.write_text(yaml.safe_dump(rc.to_dict()))
    outdir = work / 'torchrun_run'
    shutil.rmtree(outdir, ignore_errors=True)
    bindir = Path(sys.executable).parent
    torchrun = str(bindir / 'torchrun') if (bindir / 'torchrun').exists() else shutil.which('torchrun')
    cli = str(bindir / 'stylegan-v') if (bindir / 'stylegan-v').exists() else shutil.which('stylegan-v')
    if not torchrun or not cli: raise RuntimeError(f'torchrun ({torchrun}) or stylegan-v ({cli}) not found next to {sys.executable} or on PATH')
    quick = [f'train.kimg_per_tick={frames_per_step / 1000}', 'train.grid_videos=2', 'train.grid_frames=4', 'train.snap=100']
    p.numbers['backend'] = 'nccl' if device.type == 'cuda' else 'gloo'
    runs = []
    for i, (kimg, extra) in enumerate(((2 * frames_per_step / 1000, []), (4 * frames_per_step / 1000, ['resume=latest']))):
        cmd = [torchrun, '--standalone', '--nproc_per_node', '1', cli, 'train', '--config', str(cfg), '--outdir', str(outdir),
               f'train.kimg={kimg}'] + quick + extra
        env = dict(os.environ, NCCL_DEBUG='WARN', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'))
        t0, log = time.perf_counter(), work / f'torchrun_{i + 1}.log'
        with open(log, 'w') as fh: rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
        text = log.read_text()
        runs.append(dict(cmd=' '.join(['torchrun', *cmd[1:4], 'stylegan-v', *cmd[5:]]), rc=rc, seconds=round(time.perf_counter() - t0, 1), tail=text[-1500:]))
        p.check(f"run {i + 1} ({'fresh' if not extra else 'resume=latest'}) exits 0", rc, 0, ok=rc == 0)
        if rc != 0: break
        if extra: p.check("run 2 resumes from run 1's snapshot", 0, 0, ok='resuming from network-snapshot-' in text)
    p.numbers['runs'] = runs
    snaps = [s.name for s in find_snapshots(outdir)]
    p.numbers['snapshots'] = snaps
    want = snapshot_name(4 * frames_per_step)
    p.check(f'the resumed run ends at {want}', 0, 0, ok=want in snaps)


# ---------------------------------------------------------------------------------------------------------- part: fvd
def _bench_i3d():
    return _load_file('bench_metrics', REPO / 'bench' / 'metrics.py').BenchI3D()


def part_fvd(p: Part, device, sz: dict, work: Path):
    import numpy as np
    import torch
    from stylegan_v.metrics.detectors import StandInVideoDetector, load_detector, save_standin
    from stylegan_v.metrics.evaluate import compute_metric
    from stylegan_v.metrics.features import extract_features
    from stylegan_v.metrics.stats import FeatureStats
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = (_bench_i3d() if sz['fvd_detector'] == 'i3d-sized' else StandInVideoDetector(dim=400)).eval()
    path = save_standin(model, work / 'i3d_standin.pt')
    p.numbers['detector'] = f"{sz['fvd_detector']} stand-in, {sum(t.numel() for t in model.parameters()) / 1e6:.3g}M parameters"
    n, T, R = sz['fvd_videos'], sz['fvd_frames'], sz['fvd_res']
    rs = np.random.RandomState(0)
    base = rs.randint(0, 256, (n, 1, 3, R, R), dtype=np.uint8)
    videos = np.stack([np.roll(base[:, 0], 2 * f, axis=-1) for f in range(T)], axis=1)  # [n, T, 3, R, R], moving texture
    clips = torch.from_numpy(videos).permute(0, 2, 1, 3, 4).contiguous()  # the detector's [B, 3, T, H, W]
    det = load_detector('i3d', {'i3d': str(path)}, device=device)
    kw = dict(rescale=True, resize=True, return_features=True)
    items = type('Clips', (torch.utils.data.Dataset,), {'__len__': lambda s: n, '__getitem__': lambda s, i: clips[i].permute(1, 0, 2, 3)})()
    run = lambda: extract_features(items, det, kw, 400, n, 8, FeatureStats(capture_mean_cov=True), num_workers=0,
                                 device=device, progress=False)
    run()  # warm-up (cuDNN autotuning, first allocations)
    _sync(device); t0 = time.perf_counter(); run(); _sync(device)
    p.numbers.update(videos=n, frames=T, resolution=R, videos_per_s=round(n / (time.perf_counter() - t0), 2))
    half = n // 2
    name = f'fvd{half}_{T}f'
    common = dict(detectors={'i3d': str(path)}, num_workers=0, progress=False, fewer='allow', cache=False, seed=0, batch_size=4)
    other = torch.device('cpu')
    v_dev = compute_metric(name, videos[:half], videos[half:], device=str(device), **common)['value']
    v_cpu = compute_metric(name, videos[:half], videos[half:], device='cpu', **{**common, 'batch_size': 3})['value']
    rel = abs(v_dev - v_cpu) / max(abs(v_cpu), 1e-12)
    p.numbers.update(metric=name, value_device=v_dev, value_cpu=v_cpu)
    what = 'GPU' if device.type == 'cuda' else f'{device.type} (batch 4)'
    p.check(f'{name}: {what} value vs CPU value (batch 3), relative difference', rel, 1e-4)
    if device.type != 'cuda': p.skip('GPU throughput and GPU value', f'no CUDA device (--device {device.type})')
    del other


# ----------------------------------------------------------------------------------------------------- part: generate
def part_generate(p: Part, device, sz: dict, work: Path):
    import torch
    from stylegan_v.config import ModelConfig
    from stylegan_v.generate import generate
    from stylegan_v.networks.generator import Generator
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    kwargs = ModelConfig().generator_kwargs(sz['gen_res'])  # the original's widths and fp16 top layers, random weights
    if sz['widths'] == 'tiny': kwargs['synthesis_kwargs'].update(channel_base=512, channel_max=16)
    G = Generator(**kwargs).eval().requires_grad_(False).to(device)
    generate(G, work / 'gen_warm', [0], 16, progress=False, force=True)  # warm-up
    rows = {}
    for frames in sz['gen_frames']:
        _reset_peak(device); _sync(device); t0 = time.perf_counter()
        generate(G, work / f'gen_{frames}', [0], frames, progress=False, force=True)
        _sync(device); dt = time.perf_counter() - t0
        rows[frames] = dict(seconds=round(dt, 2), frames_per_s=round(frames / dt, 1), peak_gpu_mem_gb=_peak_gb(device))
        p.check(f'{frames} frames written', 0, 0, ok=any((work / f'gen_{frames}').glob('*.mp4')))
    p.numbers.update(resolution=sz['gen_res'], rows={str(k): v for k, v in rows.items()})
    short, long = sz['gen_frames']
    if device.type == 'cuda':
        ratio = rows[long]['peak_gpu_mem_gb'] / max(rows[short]['peak_gpu_mem_gb'], 1e-9)
        p.numbers['peak_mem_ratio_long_vs_short'] = round(ratio, 3)
        p.check(f'peak GPU memory of {long} frames vs {short} frames (bounded-memory rendering)', round(ratio, 3), 1.5)
    else: p.skip('peak GPU memory', f'no CUDA device (--device {device.type})')


PART_FUNCS = {'kernels': part_kernels, 'networks': part_networks, 'torchrun': part_torchrun, 'fvd': part_fvd,
              'generate': part_generate, **{name: part_train for name in TRAIN_VARIANTS}}


# --------------------------------------------------------------------------------------------------- child / parent
def run_child(name: str, args) -> int:
    "Run one part in this process and write `parts/<name>.json`."
    import faulthandler
    import warnings
    warnings.simplefilter('ignore')
    if args.box: faulthandler.dump_traceback_later(max(args.box - 3, 1), exit=False)  # where a part that runs out of time was
    import torch
    out = Path(args.out)
    p = Part(name)
    t0 = time.perf_counter()
    try:
        device = torch.device(args.device)
        if device.type == 'cuda' and not torch.cuda.is_available(): raise RuntimeError('--device cuda but torch sees no CUDA device')
        threads = args.threads or (1 if args.quick and device.type == 'cpu' else None)
        if threads: torch.set_num_threads(threads)  # toy sizes on a CPU: one thread, no OpenMP waits on a busy machine
        if f'{name}=raise' in args.inject: raise RuntimeError(f'injected failure of {name}')
        if f'{name}=hang' in args.inject: time.sleep(3600)
        PART_FUNCS[name](p, device, sizes(args.quick, args.size), out / 'work')
        rec = p.to_dict()
    except Exception as e:
        rec = {**p.to_dict(), 'status': 'error', 'error': f'{type(e).__name__}: {e}'.splitlines()[0][:500],
               'traceback': traceback.format_exc()[-3000:]}
    rec['seconds'] = round(time.perf_counter() - t0, 1)
    (out / 'parts').mkdir(parents=True, exist_ok=True)
    (out / 'parts' / f'{name}.json').write_text(json.dumps(rec, indent=1, default=str))
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)  # the record is written: do not wait on loader workers or threads at interpreter exit


def environment(device_kind: str) -> dict:
    "Card, driver, torch/CUDA/cuDNN versions, CPU."
    import torch
    env = dict(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), device=device_kind)
    if device_kind == 'cuda' and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(card=torch.cuda.get_device_name(0), capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
                   gpu_mem_gb=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
    if shutil.which('nvidia-smi'):
        r = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
                           capture_output=True, text=True)
        env['nvidia_smi'] = r.stdout.strip() or r.stderr.strip()[:200]
        env['driver'] = env['nvidia_smi'].split(',')[1].strip() if r.returncode == 0 and ',' in env['nvidia_smi'] else None
    else: env['driver'] = None
    from stylegan_v.ops.build import cuda_arch_list
    env['TORCH_CUDA_ARCH_LIST'] = cuda_arch_list()  # what a CUDA kernel build here targets
    return env


def run_part_process(name: str, box: float, args) -> dict:
    "Run one part in a child process (its own session, so a timeout kills its workers too); its record."
    cmd = [sys.executable, str(Path(__file__).resolve()), '--out', args.out, '--device', args.device, '--part', name,
           '--box', str(int(box))]
    if args.quick: cmd.append('--quick')
    if args.threads: cmd += ['--threads', str(args.threads)]
    for item in args.size: cmd += ['--size', item]
    for item in args.inject: cmd += ['--inject', item]
    log = Path(args.out) / 'parts' / f'{name}.log'
    t0 = time.perf_counter()
    with open(log, 'w') as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))
        try: proc.wait(timeout=box)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait()
            rec_file = Path(args.out) / 'parts' / f'{name}.json'
            if rec_file.is_file():  # it finished its work but its process did not end
                return {**json.loads(rec_file.read_text()), 'log': str(log),
                        'note': f'the part finished, but its process had not exited at the end of its {box:.0f} s box'}
            return dict(name=name, status='timeout', error=f'stopped after its time box of {box:.0f} s',
                        seconds=round(time.perf_counter() - t0, 1), log=str(log))
    rec_file = Path(args.out) / 'parts' / f'{name}.json'
    if rec_file.is_file(): return {**json.loads(rec_file.read_text()), 'log': str(log)}
    tail = log.read_text()[-1500:] if log.is_file() else ''
    return dict(name=name, status='error', error=f'the part process exited with {proc.returncode} and wrote no record',
                seconds=round(time.perf_counter() - t0, 1), log=str(log), traceback=tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n', 2)[2])
    ap.add_argument('--out', required=True, help='folder for report.json, report.md and the parts\' logs')
    ap.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='cuda (one GPU) or cpu (the plumbing only)')
    ap.add_argument('--quick', action='store_true', help='toy sizes (seconds on a CPU)')
    ap.add_argument('--budget', type=float, default=None, help='seconds for the whole run (default 450, --quick 300, times --box-scale)')
    ap.add_argument('--box-scale', type=float, default=1.0, help='multiply every part\'s time box (e.g. 2 on a slow machine)')
    ap.add_argument('--parts', default=None, help='comma-separated subset of: ' + ', '.join(n for n, _, _ in PARTS))
    ap.add_argument('--threads', type=int, default=None, help='torch threads in each part (default: torch\'s; --quick on a CPU: 1)')
    ap.add_argument('--size', action='append', default=[], metavar='KEY=VALUE',
                    help='override one problem size (JSON value), e.g. --size batch=16 --size res=128; keys: ' + ', '.join(sizes(False)))
    ap.add_argument('--part', default=None, help=argparse.SUPPRESS)  # internal: run one part in this process
    ap.add_argument('--box', type=float, default=None, help=argparse.SUPPRESS)  # internal: that part's time box
    ap.add_argument('--inject', action='append', default=[], help=argparse.SUPPRESS)  # tests: PART=raise|hang
    args = ap.parse_args(argv)
    if args.part: return run_child(args.part, args)
    import torch
    names = [n for n, _, _ in PARTS]
    chosen = names if not args.parts else [n.strip() for n in args.parts.split(',')]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"gpu_check: error: --parts: unknown part(s) {', '.join(unknown)}; expected some of {', '.join(names)}", file=sys.stderr)
        return 2
    sizes(args.quick, args.size)  # a bad --size ends here, in one line
    out = Path(args.out); (out / 'parts').mkdir(parents=True, exist_ok=True)
    for stale in (out / 'parts').glob('*.json'): stale.unlink()
    budget = args.budget or (300 if args.quick else 450) * args.box_scale
    deadline = time.perf_counter() + budget
    env = environment(args.device)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: error: --device cuda but torch sees no CUDA device; use --device cpu --quick for the plumbing', file=sys.stderr)
        return 2
    print(f"gpu_check: {env.get('card', 'CPU')}, torch {env['torch']} (CUDA {env['torch_cuda']}), budget {budget:.0f} s", flush=True)
    records = []
    for name, box, what in PARTS:
        if name not in chosen: continue
        left = deadline - time.perf_counter()
        if left < 10:
            records.append(dict(name=name, status='skipped', error=f'out of the {budget:.0f} s budget', seconds=0)); continue
        rec = run_part_process(name, min(box * args.box_scale, left), args)
        rec['what'] = what
        records.append(rec)
        print(f"  {name:20s} {rec['status']:8s} {rec.get('seconds', 0):6.1f} s  {rec.get('error', '')}", flush=True)
    report = dict(created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), quick=args.quick, budget_s=budget,
                  total_s=round(budget - (deadline - time.perf_counter()), 1), environment=env, sizes=sizes(args.quick, args.size), parts=records)
    (out / 'report.json').write_text(json.dumps(report, indent=1, default=str))
    (out / 'report.md').write_text(render_md(report))
    bad = [r['name'] for r in records if r['status'] not in ('ok', 'skipped')]
    print(f"gpu_check: {len(records) - len(bad)}/{len(records)} parts ok or skipped; report in {out / 'report.md'}")
    return 1 if bad else 0


# --------------------------------------------------------------------------------------------------------- report.md
def _fmt(v):
    if isinstance(v, float): return f'{v:.3g}'
    return str(v)


def render_md(report: dict) -> str:
    "The readable report: environment, one line per part, then each part's numbers, failed checks and skips."
    env, L = report['environment'], []
    L.append(f"# GPU check{' (quick, toy sizes)' if report['quick'] else ''}: {report['created']}\n")
    L.append(f"- device: {env.get('card') or 'no GPU (' + env['device'] + ')'}"
             + (f", compute capability {env['capability']}, {env['gpu_mem_gb']} GiB" if env.get('card') else ''))
    L.append(f"- driver: {env.get('driver') or 'n/a'}; torch {env['torch']}, CUDA {env['torch_cuda']}, cuDNN {env['cudnn']}, "
             f"python {env['python']}; {env['cpu_count']} CPUs; TORCH_CUDA_ARCH_LIST={env.get('TORCH_CUDA_ARCH_LIST')}")
    L.append(f"- total {report['total_s']} s of a {report['budget_s']:.0f} s budget\n")
    L.append('| part | status | s | checks passed | note |\n|---|---|---|---|---|')
    for r in report['parts']:
        checks = r.get('checks', [])
        note = r.get('error') or '; '.join(f"{s['what']}: {s['why']}" for s in r.get('skipped', []))
        L.append(f"| {r['name']} | {r['status']} | {r.get('seconds', 0)} | {sum(c['ok'] for c in checks)}/{len(checks)} | {note} |")
    for r in report['parts']:
        L.append(f"\n## {r['name']}: {r['status']}\n\n{r.get('what', '')}\n")
        nums = {k: v for k, v in (r.get('numbers') or {}).items() if k not in ('errors', 'runs')}
        for k, v in nums.items(): L.append(f"- {k}: {_fmt(v) if not isinstance(v, dict) else json.dumps(v, default=str)}")
        errs = (r.get('numbers') or {}).get('errors')
        if errs:
            worst = {}
            for e in errs:
                key = (e['case'], e['dtype'], e['pair'])
                worst[key] = max(worst.get(key, 0.0), e['error'] if e['error'] == e['error'] else float('inf'))
            L.append('\n| op | dtype | comparison | max error (fwd, grads, 2nd order) | bound |\n|---|---|---|---|---|')
            for (case, dt, pair), err in worst.items(): L.append(f"| {case} | {dt} | {pair} | {err:.3g} | {BOUNDS[dt]:g} |")
            L.append('')
        for run in (r.get('numbers') or {}).get('runs', []):
            L.append(f"- `{run['cmd']}`: exit {run['rc']}, {run['seconds']} s")
        failed = [c for c in r.get('checks', []) if not c['ok']]
        for c in failed: L.append(f"- FAILED: {c['what']}: {_fmt(c['value'])} (bound {_fmt(c['bound'])})")
        if r.get('checks') and not failed: L.append(f"- all {len(r['checks'])} checks passed")
        for s in r.get('skipped', []): L.append(f"- skipped: {s['what']}: {s['why']}")
        if r.get('error'): L.append(f"- {r['status']}: {r['error']}")
        if r.get('note'): L.append(f"- note: {r['note']}")
        if r.get('traceback'): L.append(f"\n```\n{r['traceback'][-1200:]}\n```")
    return '\n'.join(L) + '\n'


if __name__ == '__main__':
    sys.exit(main())
