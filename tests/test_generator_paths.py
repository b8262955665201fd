"""The generator's modulated-conv paths (`modconv='fused'|'nonfused'|'per_video'|'auto'`): every path reproduces the
original's frames (shared/parity/config_a), 'fused' is the original's eval computation bit for bit, eval mode picks the
per-video path by default, and the switch refuses unknown values and per-video weights where ws differ per frame."""
import json

import pytest
import torch

from stylegan_v.networks.generator import Generator
from stylegan_v.networks.layers import modulated_conv2d, modulated_conv2d_per_video

FRAME_TOL = dict(atol=1e-4, rtol=1e-4)


def _ctor(d):
    return {k: v for k, v in d.items() if k not in ('class_name', 'cfg')}


@pytest.fixture(scope='module')
def set_a(parity_dir):
    p = parity_dir / 'config_a'
    cfg = json.loads((p / 'config.json').read_text())
    G = Generator(**_ctor(cfg['G_ctor']), cfg=cfg['model_cfg']['generator']).eval()
    G.load_state_dict(torch.load(p / 'G_state.pt'), strict=True)
    return G, torch.load(p / 'inputs.pt'), torch.load(p / 'outputs.pt')


def _frames(G, I, **kwargs):
    with torch.no_grad():
        return G(I['z'], I['c'], I['t'], motion_z=I['motion_z'], noise_mode='const', **kwargs)


def _diff(a, b): return (a - b).abs().max().item()


def test_fused_path_is_the_originals_eval_computation_bit_for_bit(set_a):
    G, I, O = set_a
    fused = _frames(G, I, modconv='fused')
    assert _diff(fused, _frames(G, I, fused_modconv=True)) == 0.0  # the original's kwarg still selects it
    assert torch.allclose(fused, O['frames_psi1'], **FRAME_TOL), _diff(fused, O['frames_psi1'])


@pytest.mark.parametrize('modconv,impl', [('nonfused', None), ('per_video', 'loop'), ('per_video', 'grouped'),
                                          ('per_video', 'broadcast'), ('auto', None), (None, None)])
def test_every_path_matches_the_original_within_1e4(set_a, modconv, impl, monkeypatch):
    G, I, O = set_a
    if impl: monkeypatch.setattr(G.synthesis, 'per_video_impl', impl)
    frames = _frames(G, I, modconv=modconv)
    assert torch.allclose(frames, O['frames_psi1'], **FRAME_TOL), f'{modconv}/{impl}: {_diff(frames, O["frames_psi1"]):.3g}'
    assert _diff(frames, _frames(G, I, modconv='fused')) < 1e-4


def test_per_video_chunks_give_the_same_frames(set_a, monkeypatch):
    G, I, _ = set_a
    ref = _frames(G, I, modconv='per_video')
    for chunk in (1, 1000):  # one video at a time (even below one video's frames) / all videos at once
        monkeypatch.setattr(G.synthesis, 'per_video_chunk', chunk)
        assert _diff(_frames(G, I, modconv='per_video'), ref) < 1e-5


def test_eval_default_is_per_video_and_train_default_is_the_originals_non_fused(set_a):
    G, I, O = set_a
    seen = []
    hook = G.synthesis.b8.conv0.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[1].shape[0], kwargs.get('per_video'), kwargs['fused_modconv'])),
        with_kwargs=True)
    try:
        assert G.synthesis.modconv == 'auto' and G.synthesis.resolve_modconv() == 'per_video'
        _frames(G, I)
        G.synthesis.train()
        assert G.synthesis.resolve_modconv() == 'original'
        with torch.no_grad():
            frames_train = G.synthesis(O['ws'], t=I['t'], c=I['c'], motion_z=I['motion_z'], noise_mode='const')
    finally:
        G.synthesis.eval(); hook.remove()
    B, T = I['t'].shape
    assert seen[0] == (B, 'loop', True)       # eval: one w (and one modulated weight) per video
    assert seen[1] == (B * T, None, False)    # train: the original's per-frame non-fused path
    assert torch.allclose(frames_train, O['frames_psi1_synthesis_trainmode'], **FRAME_TOL)


def test_module_attribute_sets_the_default_and_unknown_values_are_refused(set_a, monkeypatch):
    G, I, _ = set_a
    monkeypatch.setattr(G.synthesis, 'modconv', 'fused')
    assert _diff(_frames(G, I), _frames(G, I, modconv='fused')) == 0.0
    with pytest.raises(ValueError, match=r"modconv: expected one of 'auto', 'fused', 'nonfused', 'per_video', got 'fast'"):
        _frames(G, I, modconv='fast')
    monkeypatch.setattr(G.synthesis, 'modconv', 'per-video')
    with pytest.raises(ValueError, match='modconv: expected one of'):
        _frames(G, I)
    monkeypatch.setattr(G.synthesis, 'modconv', 'auto')
    monkeypatch.setattr(G.synthesis, 'per_video_impl', 'fast')
    with pytest.raises(ValueError, match="impl: expected 'loop', 'grouped' or 'broadcast'"):
        _frames(G, I)


def _tiny(cond_type):
    return Generator(c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs={'num_layers': 2},
                     synthesis_kwargs={'channel_base': 64, 'channel_max': 8},
                     cfg={'z_dim': 8, 'motion': {'z_dim': 8, 'v_dim': 8}, 'time_enc': {'dim': 4, 'cond_type': cond_type},
                          'input': {'type': 'const'},
                          'sampling': {'max_num_frames': 32}}).eval()


@pytest.mark.parametrize('cond_type', ['concat_w', 'sum_w'])
def test_per_video_is_refused_where_w_differs_per_frame_and_auto_falls_back(cond_type):
    torch.manual_seed(0)
    G = _tiny(cond_type)
    if cond_type == 'sum_w':  # sum_w needs motion_v_dim == w_dim
        G = Generator(**{**G.init_kwargs, 'w_dim': G.synthesis.motion_v_dim}).eval()
    z, t = torch.randn(2, 8), torch.arange(3.).repeat(2, 1)
    with torch.no_grad():
        with pytest.raises(ValueError, match=f"modconv='per_video' needs the same ws for all frames.*{cond_type}"):
            G(z, None, t, modconv='per_video')
        assert G.synthesis.resolve_modconv() == 'original'
        torch.manual_seed(1); auto = G(z, None, t)
        torch.manual_seed(1); fused = G(z, None, t, modconv='fused')
    assert _diff(auto, fused) == 0.0


def test_per_video_conv_matches_per_frame_fused_conv_and_checks_shapes():
    torch.manual_seed(0)
    x, w, s = torch.randn(6, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)  # 3 videos x 2 frames
    ref = modulated_conv2d(x, w, s.repeat_interleave(2, dim=0), padding=1, fused_modconv=True)
    for impl in ('loop', 'grouped', 'broadcast'):
        assert _diff(modulated_conv2d_per_video(x, w, s, padding=1, impl=impl), ref) < 1e-5
    with pytest.raises(ValueError, match=r'x: expected shape \[B\*T, 4, H, W\] with B=4 videos'):
        modulated_conv2d_per_video(x, w, torch.randn(4, 4), padding=1)
