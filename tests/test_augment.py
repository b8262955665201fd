"""The ADA pipeline: double-differentiable grid_sample, one transform per video across its frames, debug_percentile,
p = 0 behaviour, the adaptive-p rule and the aug modes. (Parity with the original's outputs: test_train_parity.py.)"""
import pytest
import torch
import torch.nn.functional as F

from stylegan_v.augment import (AUGMENT_SPECS, AdaController, AugmentPipe, augment_pipe, augment_setup, filter_bank,
                                grid_sample)

NOISY = {name for name, spec in AUGMENT_SPECS.items() if spec.get('noise', 0) > 0}  # additive noise differs per pixel


def test_grid_sample_first_and_second_derivatives_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 7, 4, 2, dtype=torch.float64) * 2.5 - 1.25   # some samples fall outside: zero padding
    assert torch.allclose(grid_sample(x, grid), F.grid_sample(x, grid, align_corners=False), atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: grid_sample(x, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda x: grid_sample(x, grid), (x,))


def test_grid_sample_second_order_through_grid_is_refused():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(1, 3, 3, 2, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    gx, gg = torch.autograd.grad(grid_sample(x, grid).square().sum(), [x, grid], create_graph=True)
    with pytest.raises(NotImplementedError, match='sampling grid'):
        gg.sum().backward()


def test_grid_sample_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r'grid \[N, h, w, 2\]'):
        grid_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, 3))


def test_filter_bank_shape_and_dc():
    bank = filter_bank()
    assert bank.shape == (4, 43)
    assert abs(bank[0].sum() - 1) < 1e-9 and all(abs(row.sum()) < 1e-9 for row in bank[1:])


@pytest.mark.parametrize('name', sorted(set(AUGMENT_SPECS) - NOISY))
@pytest.mark.parametrize('q', [0.1, 0.7])
def test_the_same_transform_on_every_frame(name, q):
    "A clip of F frames (stacked in channels) == each frame augmented alone with the same (quantile) parameters."
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    pipe = augment_pipe(name, p=1.0)
    clip_out = pipe(frames.reshape(2, 9, 32, 32), debug_percentile=q).reshape(2, 3, 3, 32, 32)
    for f in range(3):
        alone = pipe(frames[:, f], debug_percentile=q)
        assert (clip_out[:, f] - alone).abs().max() < 1e-5, f'{name}: frame {f} differs from its own augmentation'


@pytest.mark.parametrize('name', sorted(set(AUGMENT_SPECS) - NOISY))
def test_identical_frames_stay_identical_with_random_draws(name):
    torch.manual_seed(1)
    frame = torch.rand(3, 3, 32, 32) * 2 - 1
    out = augment_pipe(name, p=0.8)(frame.repeat(1, 4, 1, 1)).reshape(3, 4, 3, 32, 32)
    assert (out - out[:, :1]).abs().max() < 1e-6


def test_debug_percentile_ignores_the_random_state():
    x = torch.rand(2, 9, 32, 32)
    pipe = augment_pipe('bgcf', p=1.0)
    torch.manual_seed(1); a = pipe(x, debug_percentile=0.3)
    torch.manual_seed(2); b = pipe(x, debug_percentile=0.3)
    assert torch.equal(a, b)


def test_seeded_draws_reproduce_and_p_zero():
    x = torch.rand(2, 9, 32, 32) * 2 - 1
    torch.manual_seed(4); a = augment_pipe('bgcfnc', p=0.5)(x)
    torch.manual_seed(4); b = augment_pipe('bgcfnc', p=0.5)(x)
    assert torch.equal(a, b)
    for name in ('color', 'filter', 'noise', 'cutout'):   # no geometric op: nothing is resampled at p = 0
        assert (augment_pipe(name, p=0.0)(x) - x).abs().max() < 1e-6, name
    resampled = augment_pipe('bgc', p=0.0)(x)               # the original's geometric branch runs even at p = 0
    assert 0 < (resampled - x).abs().max() < 1e-4


def test_every_pipeline_runs_and_is_finite():
    x = torch.rand(2, 6, 32, 32) * 2 - 1
    for name in AUGMENT_SPECS:
        out = augment_pipe(name, p=1.0)(x)
        assert out.shape == x.shape and torch.isfinite(out).all(), name


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match='one of'):
        augment_pipe('nope')
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        augment_pipe('bgc')(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match='multiple of 3'):
        augment_pipe('color', p=1.0)(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match='larger than 21'):
        augment_pipe('filter', p=1.0)(torch.zeros(1, 3, 16, 16))


def test_ada_rule_steps_and_clamps():
    pipe = augment_pipe('bgc')
    ada = AdaController(pipe, target=0.6, interval=4, kimg=100)
    step = 64 * 4 / 100_000
    ps = []
    for it in range(12):
        ada.accumulate(torch.tensor([1., 1, 1, -1]))        # E[sign] = 0.5 < 0.6: p goes down, but not below 0
        ps.append(ada.update(batch_videos=64))
    assert ps == [0.0] * 12
    for it in range(12):
        ada.accumulate(torch.ones(8))                       # over-confident: up by `step` every 4th iteration
        ps.append(ada.update(batch_videos=64))
    assert ps[12] == pytest.approx(step) and ps[15] == pytest.approx(step) and ps[16] == pytest.approx(2 * step)
    assert ps[-1] == pytest.approx(3 * step)


def test_ada_has_no_upper_clamp_and_skips_empty_windows():
    pipe = augment_pipe('bgc', p=0.999)
    ada = AdaController(pipe, interval=1, kimg=0.001)
    ada.accumulate(torch.ones(4)); assert ada.update(4) > 1          # no upper clamp, as the original
    p = float(pipe.p)
    assert ada.update(4) == p                                         # nothing accumulated: unchanged
    state = ada.state_dict()
    ada2 = AdaController(augment_pipe('bgc'))
    ada2.load_state_dict(state)
    assert float(ada2.pipe.p) == p and ada2.step == ada.step


def test_augment_setup_modes():
    assert augment_setup('noaug') == (None, None)
    pipe, ada = augment_setup('fixed', 'geom', p=0.3)
    assert ada is None and float(pipe.p) == pytest.approx(0.3) and pipe.scale == 1 and pipe.xflip == 0
    pipe, ada = augment_setup('ada', target=0.5)
    assert ada.pipe is pipe and ada.target == 0.5 and float(pipe.p) == 0
    for kwargs, msg in [(dict(aug='fixed'), 'needs p'), (dict(aug='fixed', p=1.5), r'\[0, 1\]'),
                        (dict(aug='ada', p=0.1), 'only used'), (dict(aug='auto'), 'noaug')]:
        with pytest.raises(ValueError, match=msg):
            augment_setup(**kwargs)


def test_pipe_state_travels_with_the_module():
    pipe = augment_pipe('bgc', p=0.25)
    other = augment_pipe('bgc')
    other.load_state_dict(pipe.state_dict())
    assert float(other.p) == 0.25
    assert isinstance(pipe, AugmentPipe) and 'p=0.25' in repr(pipe)
