"""Custom ops: native kernels against the plain-PyTorch reference (forward, backward, double backward), finite-difference
gradient checks, argument errors, the build/fallback machinery, and the CUDA sources' compile check."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from stylegan_v.core import in_ci
from stylegan_v.ops import build
from stylegan_v.ops.bias_act import activation_funcs, bias_act
from stylegan_v.ops.conv2d_resample import _conv2d_resample_definition, conv2d_resample
from stylegan_v.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

NATIVE = build.load_extension('cpu', warn=False)
needs_native = pytest.mark.skipif(not NATIVE, reason=f"native CPU kernels unavailable: {build._STATE['cpu'].reason}")
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}


def _rand(*shape, dtype=torch.float32, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def _grads_to_second_order(fn, inputs, seed=1):
    """Forward output, first-order grads of <y, v>, and grads of <grad_x, u> (what R1 needs) w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    v = _rand(*y.shape, dtype=y.dtype, seed=seed)
    g1 = torch.autograd.grad((y * v).sum(), leaves, create_graph=True)
    u = _rand(*g1[0].shape, dtype=y.dtype, seed=seed + 1)
    if g1[0].requires_grad: g2 = torch.autograd.grad((g1[0] * u).sum(), leaves, allow_unused=True)
    else: g2 = [None] * len(leaves)  # the gradient does not depend on the inputs (e.g. a linear activation)
    g2 = [torch.zeros_like(l) if g is None else g for g, l in zip(g2, leaves)]
    return [y.detach()] + [g.detach() for g in g1] + list(g2)


def _assert_same(a_list, b_list, dtype):
    for i, (a, b) in enumerate(zip(a_list, b_list)):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f'output {i} (0: y, then grads, then grads of grads): {m}')


# ----------------------------------------------------------------------------------------------------------- bias_act
BIAS_SHAPES = [((3, 5, 4, 7), 1, True), ((6, 5), 1, True), ((2, 3, 9), 2, True), ((4, 3, 2, 5), 0, True), ((3, 5, 4, 7), 1, False)]


@needs_native
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('act', list(activation_funcs))
def test_bias_act_native_matches_ref(act, dtype):
    for shape, dim, with_bias in BIAS_SHAPES:
        for clamp, gain, alpha in ((None, None, None), (0.7, 2.5, 0.3)):
            x = _rand(*shape, dtype=dtype, scale=2.0)
            b = _rand(shape[dim], dtype=dtype, seed=3)
            def fn(impl):
                if with_bias: return lambda x, b: bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
                return lambda x: bias_act(x, None, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
            inputs = (x, b) if with_bias else (x,)
            _assert_same(_grads_to_second_order(fn('native'), inputs), _grads_to_second_order(fn('ref'), inputs), dtype)


@needs_native
@pytest.mark.parametrize('act', list(activation_funcs))
def test_bias_act_gradcheck(act):
    x = _rand(2, 3, 5, dtype=torch.float64, seed=4, scale=1.5).requires_grad_(True)
    b = _rand(3, dtype=torch.float64, seed=5).requires_grad_(True)
    for clamp in (None, 0.8):
        fn = lambda x, b: bias_act(x, b, act=act, gain=1.7, clamp=clamp, impl='native')
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_defaults_and_order():
    x = torch.tensor([[-1.0, 2.0]])
    for impl in ('ref', None):
        # lrelu defaults: alpha 0.2, gain sqrt(2); bias first, clamp last
        torch.testing.assert_close(bias_act(x, torch.tensor([0.5, -3.0]), act='lrelu', impl=impl),
                                   torch.tensor([[-0.1, -0.2]]) * 2 ** 0.5)
        torch.testing.assert_close(bias_act(x, act='relu', gain=10.0, clamp=3.0, impl=impl), torch.tensor([[0.0, 3.0]]))
        torch.testing.assert_close(bias_act(x, act='swish', impl=impl), x * torch.sigmoid(x) * 2 ** 0.5)
    assert activation_funcs['tanh'].def_gain == 1.0 and activation_funcs['relu'].def_gain == pytest.approx(2 ** 0.5)


def test_bias_act_layouts_and_dtypes():
    x, b = _rand(2, 6, 5, 4, scale=2), _rand(6, seed=1)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(bias_act(xc, b, act='swish', impl=None), bias_act(x, b, act='swish', impl='ref'), **TOL[torch.float32])
    for impl in ('ref', None):
        assert bias_act(x, b.double(), act='lrelu', impl=impl).dtype == torch.float32  # the output keeps x's dtype
        y16 = bias_act(x.bfloat16(), b, act='lrelu', clamp=1.0, impl=impl)  # no native kernel for bf16 on CPU: ref
        assert y16.dtype == torch.bfloat16
        torch.testing.assert_close(y16.float(), bias_act(x, b, act='lrelu', clamp=1.0, impl='ref'), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('impl', ['ref', None])
def test_bias_act_bad_arguments(impl):
    x, b = torch.randn(2, 4, 3), torch.randn(4)
    with pytest.raises(ValueError, match="unknown activation 'gelu'; expected one of linear, relu"): bias_act(x, b, act='gelu', impl=impl)
    with pytest.raises(ValueError, match=r'must have shape \[4\]'): bias_act(x, torch.randn(3), impl=impl)
    with pytest.raises(ValueError, match=r'must have shape \[4\]'): bias_act(x, torch.randn(4, 1), impl=impl)
    with pytest.raises(ValueError, match=r'dim must be an int in \[0, 2\]'): bias_act(x, b, dim=3, impl=impl)
    with pytest.raises(ValueError, match='clamp must be None or >= 0'): bias_act(x, b, clamp=-1.0, impl=impl)
    with pytest.raises(ValueError, match="expected None, 'ref' or 'native'"): bias_act(x, b, impl='fast')


# ---------------------------------------------------------------------------------------------------------- upfirdn2d
FILTERS = {'binomial4': setup_filter([1, 3, 3, 1]), 'separable8': setup_filter([1, 2, 3, 4, 4, 3, 2, 1]),
           'asym3x2': torch.tensor([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]]), 'none': None}
UPFIRDN_CASES = [  # up, down, padding, flip_filter, gain
    (1, 1, 0, False, 1), (2, 1, [2, 1, 2, 1], False, 4), (1, 2, [1, 1, 1, 1], False, 1), (4, 1, [3, 0, 1, 2], True, 2.5),
    (1, 4, [2, 3, 0, 1], False, 1), ([2, 1], [1, 2], [1, 2, 3, 0], True, 1), (2, 2, [1, 2, 0, 3], False, 1.5),
    (1, 1, [-1, 2, 1, -2], True, 1), (2, 1, [-3, 1, 2, -1], False, 1), (1, [2, 4], [3, 2], False, 1)]


@needs_native
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('fname', list(FILTERS))
def test_upfirdn2d_native_matches_ref(fname, dtype):
    f = FILTERS[fname]
    for i, (up, down, pad, flip, gain) in enumerate(UPFIRDN_CASES):
        x = _rand(2, 3, 13, 10, dtype=dtype, seed=i)
        fn = lambda impl: (lambda x: upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl=impl))
        _assert_same(_grads_to_second_order(fn('native'), (x,)), _grads_to_second_order(fn('ref'), (x,)), dtype)


@needs_native
def test_upfirdn2d_native_matches_ref_random_configs():
    """200 random configurations (sizes, filter shapes, up/down 1-3 per axis, paddings that crop or pad), float64."""
    g = torch.Generator().manual_seed(123)
    ri = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=g))
    checked = 0
    while checked < 200:
        H, W, fh, fw = ri(1, 9), ri(1, 9), ri(1, 5), ri(1, 5)
        up, down = [ri(1, 3), ri(1, 3)], [ri(1, 3), ri(1, 3)]
        pad = [ri(-3, 4) for _ in range(4)]
        if W * up[0] + pad[0] + pad[1] < fw or H * up[1] + pad[2] + pad[3] < fh: continue
        x = torch.randn(2, 2, H, W, dtype=torch.float64, generator=g)
        f = torch.randn(fh, fw, generator=g) if ri(0, 1) else torch.randn(fw, generator=g)
        if f.ndim == 1 and H * up[1] + pad[2] + pad[3] < fw: continue
        kw = dict(up=up, down=down, padding=pad, flip_filter=bool(ri(0, 1)), gain=1.5)
        torch.testing.assert_close(upfirdn2d(x, f, impl='native', **kw), upfirdn2d(x, f, impl='ref', **kw),
                                   msg=lambda m: f'{tuple(x.shape)} f{tuple(f.shape)} {kw}: {m}')
        checked += 1


@needs_native
def test_upfirdn2d_gradcheck():
    x = _rand(1, 1, 5, 4, dtype=torch.float64).requires_grad_(True)
    for f in (FILTERS['binomial4'].double(), FILTERS['asym3x2'].double()):
        for up, down, pad in ((2, 1, [2, 1, 0, 2]), (1, 2, [1, 2, 1, 0]), ([1, 2], [2, 1], [-1, 2, 1, 1])):
            fn = lambda x: upfirdn2d(x, f, up=up, down=down, padding=pad, impl='native')
            assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_channels_last_and_bf16():
    f, x = setup_filter([1, 3, 3, 1]), _rand(2, 3, 9, 8)
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(upsample2d(xc, f), upsample2d(x, f, impl='ref'), **TOL[torch.float32])
    y16 = downsample2d(x.bfloat16(), f)
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), downsample2d(x, f, impl='ref'), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('impl', ['ref', None])
def test_resample_wrappers_shapes_and_gain(impl):
    f = setup_filter([1, 3, 3, 1])
    x = _rand(2, 3, 9, 6)
    assert upsample2d(x, f, impl=impl).shape == (2, 3, 18, 12)
    assert upsample2d(x, f, up=[4, 2], padding=[1, 0, 0, 2], impl=impl).shape == (2, 3, 20, 25)
    assert downsample2d(x, f, impl=impl).shape == (2, 3, 4, 3)
    assert filter2d(x, f, padding=1, impl=impl).shape == (2, 3, 11, 8)
    const = torch.ones(1, 1, 8, 8)
    torch.testing.assert_close(upsample2d(const, f, impl=impl)[..., 3:-3, 3:-3], torch.ones(1, 1, 10, 10))
    torch.testing.assert_close(downsample2d(const, f, impl=impl)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))
    torch.testing.assert_close(upsample2d(x, f, impl=impl), upsample2d(x, f, impl='ref'), rtol=1e-5, atol=1e-6)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1], gain=4)
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(4.0))
    assert setup_filter([1] * 8).shape == (8,) and setup_filter([1, 2, 1], separable=True).shape == (3,)
    torch.testing.assert_close(setup_filter([[1.0, 2.0], [3.0, 4.0]], flip_filter=True, normalize=False), torch.tensor([[4.0, 3.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match='expected a scalar, a 1-D or a 2-D filter'): setup_filter(torch.ones(2, 2, 2))


@pytest.mark.parametrize('impl', ['ref', None])
def test_upfirdn2d_bad_arguments(impl):
    x, f = torch.randn(1, 2, 6, 6), setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match=r'x must be a 4-D tensor \[N, C, H, W\], got shape \(2, 6, 6\)'): upfirdn2d(x[0], f, impl=impl)
    with pytest.raises(ValueError, match=r'expected a 1-D \[fw\] \(separable\) or 2-D \[fh, fw\] filter tensor, got shape \(1, 4, 4\)'):
        upfirdn2d(x, f[None], impl=impl)
    with pytest.raises(ValueError, match='crops past the image'): upfirdn2d(x, f, padding=[-3, 0, 0, 0], impl=impl)
    with pytest.raises(ValueError, match='crops past the image'): downsample2d(x, f, padding=-3, impl=impl)
    with pytest.raises(ValueError, match='up must be an int >= 1'): upfirdn2d(x, f, up=0, impl=impl)
    with pytest.raises(ValueError, match=r'padding must be an int, \[px, py\] or \[px0, px1, py0, py1\]'): upfirdn2d(x, f, padding=[1, 2, 3], impl=impl)


def test_upfirdn2d_filter_gradient_uses_ref():
    x, f = _rand(1, 1, 6, 6), setup_filter([1, 3, 3, 1]).requires_grad_(True)
    (gf,) = torch.autograd.grad(upsample2d(x, f).sum(), [f])  # native has no filter gradient: must route to ref
    (gf_ref,) = torch.autograd.grad(upsample2d(x, f, impl='ref').sum(), [f])
    torch.testing.assert_close(gf, gf_ref)


# ---------------------------------------------------------------------------------------------------- conv2d_resample
CONV_CASES = [  # k, up, down, padding, groups, flip_weight, flip_filter
    (3, 2, 1, 1, 1, True, False), (3, 1, 2, 1, 1, False, False), (1, 2, 1, 0, 1, True, True), (1, 1, 2, 0, 2, True, False),
    (3, 2, 1, 1, 2, False, False), (3, 1, 1, [1, 2, 0, 1], 1, True, False), (3, 2, 2, 1, 1, True, False),
    (4, 1, 1, 0, 1, True, False), (3, 1, 1, 1, 1, True, False), (3, 4, 1, [2, 1, 1, 0], 1, True, True)]


@pytest.mark.parametrize('case', CONV_CASES)
def test_conv2d_resample_matches_definition(case):
    k, up, down, pad, groups, flip_w, flip_f = case
    x, w = _rand(2, 4, 7, 6, dtype=torch.float64), _rand(6, 4 // groups, k, k, dtype=torch.float64, seed=2)
    kw = dict(f=setup_filter([1, 3, 3, 1]), up=up, down=down, padding=pad, groups=groups, flip_weight=flip_w, flip_filter=flip_f)
    torch.testing.assert_close(conv2d_resample(x, w, **kw), _conv2d_resample_definition(x, w, **kw), rtol=1e-10, atol=1e-10)


@needs_native
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_conv2d_resample_native_matches_ref(dtype):
    for i, (k, up, down, pad, groups, flip_w, flip_f) in enumerate(CONV_CASES):
        x, w = _rand(2, 4, 9, 8, dtype=dtype, seed=i), _rand(6, 4 // groups, k, k, dtype=dtype, seed=i + 50) / k
        fn = lambda impl: (lambda x, w: conv2d_resample(x, w, setup_filter([1, 3, 3, 1]), up=up, down=down, padding=pad,
                                                        groups=groups, flip_weight=flip_w, flip_filter=flip_f, impl=impl))
        _assert_same(_grads_to_second_order(fn('native'), (x, w)), _grads_to_second_order(fn(impl='ref'), (x, w)), dtype)


def test_conv2d_resample_gradgradcheck():
    """torch's own double backward of conv2d/conv_transpose2d (used instead of SG2's conv2d_gradfix) is exact."""
    x = _rand(1, 1, 4, 4, dtype=torch.float64).requires_grad_(True)
    w = _rand(2, 1, 3, 3, dtype=torch.float64, seed=1).requires_grad_(True)
    f = setup_filter([1, 3, 3, 1])
    for up, down in ((2, 1), (1, 2)):
        fn = lambda x, w: conv2d_resample(x, w, f, up=up, down=down, padding=1)
        assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True) and torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


def test_conv2d_resample_bad_arguments():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(5, 4, 3, 3)
    with pytest.raises(ValueError, match=r'expected x channels == w.shape\[1\] \* groups'): conv2d_resample(x, w[:, :3])
    with pytest.raises(ValueError, match='expected the same'): conv2d_resample(x, w.double())
    with pytest.raises(ValueError, match='up must be an int >= 1'): conv2d_resample(x, w, up=0)
    with pytest.raises(ValueError, match='f must be None or a float32 1-D/2-D filter'): conv2d_resample(x, w, torch.ones(1, 4, 4), up=2)
    with pytest.raises(ValueError, match=r'w must be a 4-D tensor'): conv2d_resample(x, w[0])


# -------------------------------------------------------------------------------------------------------------- build
def test_status_reports_every_op():
    s = build.status(print_table=False)
    assert set(s) == {'bias_act', 'upfirdn2d', 'conv2d_resample'}
    for op in s:
        impl, why = s[op]['cpu']
        assert impl == ('native' if NATIVE else 'ref') and why
        if not torch.cuda.is_available(): assert s[op]['cuda'][0] == 'ref' and 'no CUDA device' in s[op]['cuda'][1]


def test_build_failure_warns_once_and_falls_back(tmp_path):
    """A machine without a compiler: one warning naming the cause, then the ops still work (ref)."""
    code = ("import warnings, torch\nwarnings.simplefilter('always')\n"
            "from stylegan_v.ops.bias_act import bias_act\nfrom stylegan_v.ops.upfirdn2d import upsample2d, setup_filter\n"
            "from stylegan_v.ops import build\n"
            "y = bias_act(torch.ones(2, 3), torch.ones(3), act='relu'); z = upsample2d(torch.ones(1, 1, 4, 4), setup_filter([1, 3, 3, 1]))\n"
            "assert torch.allclose(y, 2 * 2 ** 0.5 * torch.ones(2, 3)) and z.shape == (1, 1, 8, 8)\n"
            "assert build.status(print_table=False)['bias_act']['cpu'][0] == 'ref'\n")
    env = dict(os.environ, CXX=str(tmp_path / 'no-such-compiler'), TORCH_EXTENSIONS_DIR=str(tmp_path / 'ext'))
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msgs = [l for l in r.stderr.splitlines() if 'native CPU kernels unavailable' in l]
    assert len(msgs) == 1 and 'no C++ compiler' in msgs[0], r.stderr


def test_kernel_sources_found_in_package_first(tmp_path, monkeypatch):
    pkg = tmp_path / 'site' / 'stylegan_v'
    (pkg / 'kernels').mkdir(parents=True)
    for s in build.CPU_SOURCES: (pkg / 'kernels' / s).write_text('// copy')
    monkeypatch.setattr(build, 'package_dir', lambda: pkg)
    assert build.kernels_dir() == pkg / 'kernels'
    (tmp_path / 'site' / 'kernels').mkdir()
    assert build.kernels_dir() == pkg / 'kernels'
    monkeypatch.setattr(build, 'package_dir', lambda: tmp_path / 'nowhere' / 'stylegan_v')
    with pytest.raises(FileNotFoundError, match='kernel sources'): build.kernels_dir()
    monkeypatch.delenv('TORCH_EXTENSIONS_DIR', raising=False)
    monkeypatch.setattr(build, 'package_dir', lambda: pkg)
    assert build.extensions_dir() == build.cache_dir() / 'torch_extensions'  # not a repo checkout: the user cache


def test_cuda_sources_compile():
    """The .cu kernels compile with this machine's nvcc (cached after the first run). No GPU here: they are not run."""
    if build.find_cuda_home() is None: pytest.skip('no CUDA toolkit (bin/nvcc + lib64/libcudart.so) on this machine')
    path = build._build('cuda')
    assert any(p.suffix == '.so' for p in Path(path).iterdir())
    assert hasattr(torch.ops.stylegan_v_cuda, 'bias_act') and hasattr(torch.ops.stylegan_v_cuda, 'upfirdn2d')


def need_cuda_kernels():
    """Skip (one line) without a CUDA device; with one, kernels that do not load or fail their self-check are a skip
    that names the cause, and a failure under CI=true."""
    if not torch.cuda.is_available(): pytest.skip('no CUDA device on this machine: the CUDA kernels are compiled but not run')
    if not build.load_extension('cuda', warn=False) or not all(build.native_ops('cuda', op) for op in ('bias_act', 'upfirdn2d')):
        msg = f"CUDA kernels unavailable on this GPU: {build._STATE['cuda'].reason}"
        if in_ci(): pytest.fail(msg + ' (CI=true: a GPU machine must run them)', pytrace=False)
        pytest.skip(msg)


def test_cuda_kernels_match_ref():
    need_cuda_kernels()
    f = setup_filter([1, 3, 3, 1], device='cuda')
    for dtype in (torch.float32, torch.float64):
        x, b = _rand(2, 6, 9, 7, dtype=dtype).cuda(), _rand(6, dtype=dtype, seed=3).cuda()
        for act in activation_funcs:
            fn = lambda impl: (lambda x, b: bias_act(x, b, act=act, clamp=0.9, impl=impl))
            _assert_same(_grads_to_second_order(fn('native'), (x, b)), _grads_to_second_order(fn('ref'), (x, b)), dtype)
        for up, down, pad, flip, gain in UPFIRDN_CASES:
            fn = lambda impl: (lambda x: upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl=impl))
            _assert_same(_grads_to_second_order(fn('native'), (x,)), _grads_to_second_order(fn('ref'), (x,)), dtype)


def test_cuda_self_check_passes():
    need_cuda_kernels()
    checks = build.run_self_checks('cuda', warn=True)
    assert set(checks) >= {'bias_act', 'upfirdn2d'} and all(v.startswith('matches the reference') for v in checks.values()), checks


# ------------------------------------------------------------------------------------------- self-check on first use
@pytest.fixture
def fresh_cpu_state(monkeypatch):
    """A fresh CPU extension state that counts as built, for injecting fake kernels through `build._namespace`."""
    state = build.ExtensionState('cpu', loaded=True, reason='compiled kernels loaded from (a test)')
    monkeypatch.setattr(build, '_STATE', {'cpu': state, 'cuda': build.ExtensionState('cuda')})
    return state


class _WrongKernels:
    "A fake plugin: bias_act's forward is off by 0.01 (gradients right); upfirdn2d raises as a kernel built for another GPU does."
    def bias_act(self, x, b, dy, ddx, grad, dim, act, alpha, gain, clamp):
        from stylegan_v.ops.bias_act import _bias_act_ref
        names = {a.native_idx: a.name for a in activation_funcs.values()}
        if grad == 0: return _bias_act_ref(x, b if b.numel() else None, dim, names[act], alpha, gain, None if clamp < 0 else clamp) + 0.01
        return torch.zeros_like(x)  # wrong too, but the check names the first quantity that is off: the forward

    def upfirdn2d(self, *args):
        raise RuntimeError('CUDA error: no kernel image is available for execution on the device')


def test_self_check_passes_for_the_built_kernels():
    if not NATIVE: pytest.skip(f"native CPU kernels unavailable: {build._STATE['cpu'].reason}")
    checks = build.run_self_checks('cpu', warn=True)
    assert all(checks[op].startswith('matches the reference') for op in ('bias_act', 'upfirdn2d')), checks
    s = build.status(print_table=False)
    assert 'self-check: matches the reference' in s['bias_act']['cpu'][1] and s['conv2d_resample']['cpu'][0] == 'native'


def test_wrong_kernel_results_fall_back_with_one_warning(fresh_cpu_state, monkeypatch):
    monkeypatch.setattr(build, '_namespace', lambda kind: _WrongKernels())
    x, b = _rand(2, 5, 4, 3, scale=2), _rand(5, seed=1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        y = bias_act(x, b, act='lrelu', clamp=1.0)
        y2 = bias_act(x, b, act='lrelu', clamp=1.0)        # decided once: no second check, no second warning
        z = upsample2d(x, setup_filter([1, 3, 3, 1]))      # the whole extension is off: upfirdn2d is never even tried
    msgs = [str(m.message) for m in w if 'stylegan_v.ops' in str(m.message)]
    assert len(msgs) == 1 and len(msgs[0].splitlines()) == 1, msgs
    assert 'self-check failed: bias_act lrelu forward float32 differs from the reference: max error 0.00667 > bound 0.0001' in msgs[0], msgs[0]
    ref = bias_act(x, b, act='lrelu', clamp=1.0, impl='ref')
    assert torch.equal(y, ref) and torch.equal(y2, ref)    # the user gets the reference's numbers, never the wrong ones
    torch.testing.assert_close(z, upsample2d(x, setup_filter([1, 3, 3, 1]), impl='ref'))
    assert fresh_cpu_state.checks == {'bias_act': 'failed'}
    impl, why = build.status(build=False, print_table=False)['upfirdn2d']['cpu']
    assert impl == 'ref' and why.startswith('self-check failed: bias_act'), why


def test_kernel_that_raises_falls_back_with_one_warning(fresh_cpu_state, monkeypatch):
    monkeypatch.setattr(build, '_namespace', lambda kind: _WrongKernels())
    x = _rand(2, 3, 9, 8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        y = downsample2d(x, setup_filter([1, 3, 3, 1]))
    msgs = [str(m.message) for m in w if 'stylegan_v.ops' in str(m.message)]
    assert len(msgs) == 1 and 'the self-check of upfirdn2d raised: CUDA error: no kernel image is available' in msgs[0], msgs
    torch.testing.assert_close(y, downsample2d(x, setup_filter([1, 3, 3, 1]), impl='ref'))


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(build, '_STATE', {'cpu': build.ExtensionState('cpu'), 'cuda': build.ExtensionState('cuda')})
    def broken_build(kind, verbose=False):
        raise RuntimeError("ninja: build stopped\nnvcc fatal   : Unsupported gpu architecture 'compute_120'\nerror: command failed")
    monkeypatch.setattr(build, '_build', broken_build)
    monkeypatch.setattr(build, 'find_cuda_home', lambda: Path('/usr/local/cuda'))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        y = bias_act(torch.ones(2, 3), torch.ones(3), act='relu')
    msgs = [str(m.message) for m in w if 'stylegan_v.ops' in str(m.message)]
    assert len(msgs) == 1 and len(msgs[0].splitlines()) == 1, msgs
    assert "the build failed: nvcc fatal   : Unsupported gpu architecture 'compute_120' | error: command failed" in msgs[0], msgs[0]
    assert torch.allclose(y, 2 * 2 ** 0.5 * torch.ones(2, 3))
    assert build.status(build=False, print_table=False)['bias_act']['cpu'][0] == 'ref'


@pytest.mark.parametrize('mode', [torch.no_grad, torch.inference_mode])
def test_first_use_under_no_grad_still_checks_gradients(fresh_cpu_state, mode):
    "Inference (generate, the explorer, metrics) is often a process's first use: the check must not fail for want of autograd."
    if not NATIVE: pytest.skip(f"native CPU kernels unavailable: {build._STATE['cpu'].reason}")
    with mode():
        upsample2d(_rand(1, 3, 8, 8), setup_filter([1, 3, 3, 1]))
    assert fresh_cpu_state.checks.get('upfirdn2d', '').startswith('matches the reference'), fresh_cpu_state.checks
