"""Training-step speed: one Gmain+Dmain iteration and one Dreg step of StyleGAN-V at the original's default widths
(channel_base 16384, channel_max 512, 2-layer mappings, fp32), 64 px, 4 videos x 3 frames, ADA pipe `bgc` at p = 0
(as at the start of training), on the CPU with 2 threads.

Configurations, measured in the same run, one iteration of each in turn (so load changes hit all alike):
  original   the original's configuration reproduced in this package: non-fused modulated conv, ref ops everywhere
  native     G's own training path (the original's non-fused modconv) with the native ops
  per_video  native + modconv='per_video' (weights modulated once per video): what `stylegan-v train` runs on a CPU
             for a G this wide (`train.default_modconv`)
Prints the median time per step and the speed-up over `original` (wall time is the step rate; CPU time is printed
too), then the top ops by self CPU time (torch.profiler) for `original` and `per_video`.

    python bench/train_step.py [--res 64] [--videos 4] [--frames 3] [--threads 2] [--repeats 2] [--no-profile]
"""
import argparse
import contextlib
import statistics
import time

import torch

import stylegan_v.ops.bias_act as bias_act_mod
import stylegan_v.ops.upfirdn2d as upfirdn2d_mod
from stylegan_v.augment import augment_pipe
from stylegan_v.loss import StyleGANVLoss, lazy_adam, phase_plan, r1_gamma_auto, run_phase
from stylegan_v.networks.discriminator import Discriminator
from stylegan_v.networks.generator import Generator


@contextlib.contextmanager
def ref_ops(enabled: bool):
    "Force every bias_act/upfirdn2d call to the plain-PyTorch reference (what the original runs on a CPU)."
    saved = bias_act_mod.resolve_impl, upfirdn2d_mod.resolve_impl
    if enabled:
        bias_act_mod.resolve_impl = upfirdn2d_mod.resolve_impl = lambda *args, **kwargs: None
    try:
        yield
    finally:
        bias_act_mod.resolve_impl, upfirdn2d_mod.resolve_impl = saved


def build(res: int, frames: int, seed: int = 0):
    torch.manual_seed(seed)
    sampling = {'num_frames_per_video': frames}
    G = Generator(c_dim=0, w_dim=512, img_resolution=res, img_channels=3, mapping_kwargs={'num_layers': 2},
                  synthesis_kwargs={'channel_base': 16384, 'channel_max': 512, 'num_fp16_res': 0, 'conv_clamp': None},
                  cfg={'sampling': sampling})
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=16384, channel_max=512, num_fp16_res=0,
                      conv_clamp=None, mapping_kwargs={'num_layers': 2}, epilogue_kwargs={'mbstd_group_size': 4},
                      cfg={'sampling': sampling})
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def make_inputs(G, videos: int, frames: int, res: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, 20, [videos, 1], generator=g).float()
    real_t = offsets + torch.tensor([0., 2, 4])[:frames]
    return dict(real_img=torch.rand(videos, frames, 3, res, res, generator=g) * 2 - 1, real_c=torch.zeros(videos, 0),
                real_t=real_t, gen_z=torch.randn(videos, G.z_dim, generator=g), gen_c=torch.zeros(videos, 0),
                gen_t=real_t + torch.rand(videos, 1, generator=g))


def one_iteration(loss, opts, plan, inputs):
    "Gmain + Dmain (an iteration without regularisation), then the Dreg step: (wall, CPU) seconds of each."
    w0, c0 = time.perf_counter(), time.process_time()
    for phase in (plan['Gmain'], plan['Dmain']):
        run_phase(loss, phase, opts[phase.network], [inputs])
    w1, c1 = time.perf_counter(), time.process_time()
    run_phase(loss, plan['Dreg'], opts['D'], [inputs])
    return (w1 - w0, c1 - c0), (time.perf_counter() - w1, time.process_time() - c1)


CONFIGS = {'original': dict(ref=True, modconv='nonfused'), 'native': dict(ref=False, modconv=None),
           'per_video': dict(ref=False, modconv='per_video')}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--res', type=int, default=64); ap.add_argument('--videos', type=int, default=4)
    ap.add_argument('--frames', type=int, default=3); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=3); ap.add_argument('--no-profile', action='store_true')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {args.threads} threads, {args.res} px, {args.videos} videos x {args.frames} frames, fp32')

    G0, D0 = build(args.res, args.frames)
    inputs = make_inputs(G0, args.videos, args.frames, args.res)
    del G0, D0
    runs, times, results = {}, {name: [] for name in CONFIGS}, {}
    for name, conf in CONFIGS.items():
        G, D = build(args.res, args.frames)   # the same start weights for every configuration
        loss = StyleGANVLoss(G, D, augment_pipe=augment_pipe('bgc', p=0.0), r1_gamma=r1_gamma_auto(args.res, 64),
                             modconv=conf['modconv'])
        opts = {'G': lazy_adam(G.parameters(), 0.0025, reg_interval=4), 'D': lazy_adam(D.parameters(), 0.0025, reg_interval=16)}
        runs[name] = (loss, opts, {p.name: p for p in phase_plan(4, 16)})
        with ref_ops(conf['ref']):
            torch.manual_seed(0)
            one_iteration(*runs[name], inputs)                             # warm-up (allocations, kernels)
    for _ in range(args.repeats):                                          # interleaved: one iteration of each in turn
        for name, conf in CONFIGS.items():
            with ref_ops(conf['ref']):
                times[name].append(one_iteration(*runs[name], inputs))
    for name, conf in CONFIGS.items():
        med = lambda phase, clock: statistics.median(t[phase][clock] for t in times[name])
        results[name] = {clock: (med(0, i), med(1, i)) for i, clock in enumerate(('wall', 'cpu'))}
        print(f"{name:10s} Gmain+Dmain {results[name]['wall'][0]:7.2f} s wall {results[name]['cpu'][0]:7.2f} s CPU   "
              f"Dreg {results[name]['wall'][1]:7.2f} s wall {results[name]['cpu'][1]:7.2f} s CPU   (median of {args.repeats})", flush=True)
        if not args.no_profile and name in ('original', 'per_video'):
            with ref_ops(conf['ref']), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                one_iteration(*runs[name], inputs)
            results[name + '_profile'] = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=14)

    print('\nspeed-up over the original configuration (higher is better; wall time is the step rate):')
    for clock in ('wall', 'cpu'):
        base_main, base_reg = results['original'][clock]
        for name in CONFIGS:
            m, r = results[name][clock]
            # one training iteration = Gmain + Dmain every step, Dreg every 16th
            step = (base_main + base_reg / 16) / (m + r / 16)
            print(f'  [{clock:4s}] {name:10s} Gmain+Dmain x{base_main / m:5.2f}   Dreg x{base_reg / r:5.2f}   '
                  f'per iteration (Dreg/16) x{step:5.2f}')
    for name in ('original', 'per_video'):
        if name + '_profile' in results:
            print(f'\n--- top ops by self CPU time, {name} (Gmain+Dmain+Dreg) ---\n{results[name + "_profile"]}')


if __name__ == '__main__':
    main()
