"""Benchmark of the custom ops on this machine's CPU: reference (plain PyTorch) vs native kernels.

Run: `python bench/ops.py [--reps 11] [--threads N]`. Prints the median time of ref and native for the forward pass and
for forward + backward, and the speed-up ratio ref/native (measured in the same run, ref and native runs interleaved;
no absolute numbers are asserted anywhere). `conv2d_resample` is torch's (transposed) convolution plus upfirdn2d, and
`impl` only switches the upfirdn2d part, so its last row shows that part alone.
"""
import argparse
import statistics
import time

import torch

from stylegan_v.ops import build
from stylegan_v.ops.bias_act import bias_act
from stylegan_v.ops.conv2d_resample import conv2d_resample
from stylegan_v.ops.upfirdn2d import downsample2d, setup_filter, upfirdn2d, upsample2d


def median_times(fns, reps):
    """Median wall time of each function; runs are interleaved (a, b, a, b, ...) so that both see the same machine load."""
    for fn in fns: fn()  # warm-up (and first-use allocations)
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def cases():
    g = torch.Generator().manual_seed(0)
    f = setup_filter([1, 3, 3, 1])
    x_ba, b_ba = torch.randn(8, 512, 32, 32, generator=g), torch.randn(512, generator=g)
    x_rs = torch.randn(8, 256, 64, 64, generator=g)
    x_cv, w_cv = torch.randn(4, 256, 32, 32, generator=g), torch.randn(256, 256, 3, 3, generator=g) / 48
    yield ('bias_act lrelu gain clamp [8,512,32,32]', (x_ba, b_ba),
           lambda x, b, impl: bias_act(x, b, act='lrelu', gain=2 ** 0.5, clamp=256, impl=impl))
    yield ('upsample2d [1,3,3,1] [8,256,64,64]', (x_rs,), lambda x, impl: upsample2d(x, f, impl=impl))
    yield ('downsample2d [1,3,3,1] [8,256,64,64]', (x_rs,), lambda x, impl: downsample2d(x, f, impl=impl))
    yield ('conv2d_resample up=2 3x3 [4,256,32,32]', (x_cv, w_cv),
           lambda x, w, impl: conv2d_resample(x, w, f, up=2, padding=1, impl=impl))
    # the part of that conv2d_resample call that impl switches: its FIR step on the transposed conv's [4,256,65,65] output
    x_fir = torch.randn(4, 256, 65, 65, generator=g)
    yield ('  its FIR step: upfirdn2d [4,256,65,65]', (x_fir,),
           lambda x, impl: upfirdn2d(x, f, padding=[0, -1, 0, -1], gain=4, impl=impl))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=11)
    ap.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    if not build.load_extension('cpu'): print('native CPU kernels unavailable:', build._STATE['cpu'].reason)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.reps}')
    print(f"{'op':42s} {'pass':8s} {'ref ms':>8s} {'native ms':>10s} {'ratio':>6s}")
    for name, inputs, fn in cases():
        for mode in ('fwd', 'fwd+bwd'):
            runs = []
            for impl in ('ref', 'native'):
                if mode == 'fwd':
                    def run(impl=impl):
                        with torch.no_grad(): fn(*inputs, impl=impl)
                else:
                    leaves = [t.detach().requires_grad_(True) for t in inputs]
                    def run(impl=impl, leaves=leaves):
                        y = fn(*leaves, impl=impl)
                        y.backward(torch.ones_like(y))
                runs.append(run)
            res = dict(zip(('ref', 'native'), median_times(runs, args.reps)))
            print(f"{name:42s} {mode:8s} {res['ref']*1e3:8.1f} {res['native']*1e3:10.1f} {res['ref']/res['native']:6.2f}x")


if __name__ == '__main__':
    main()
