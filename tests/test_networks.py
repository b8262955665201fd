"""Behaviour of the StyleGAN-V networks beyond parity: config defaults, input errors, w_avg tracking, the content/motion
API, arbitrary-length and fractional time, variants (noise, conditioning, cond types, fp16 pre-normalisation)."""
import json

import pytest
import torch

from stylegan_v.networks.discriminator import Discriminator, resolve_discriminator_cfg
from stylegan_v.networks.generator import Generator, MotionNoise
from stylegan_v.networks.layers import MappingNetwork, modulated_conv2d
from stylegan_v.networks.motion import MotionMappingNetwork, resolve_generator_cfg


def _ctor(d):
    return {k: v for k, v in d.items() if k not in ('class_name', 'cfg')}


@pytest.fixture(scope='module')
def cfg_a(parity_dir):
    return json.loads((parity_dir / 'config_a' / 'config.json').read_text())


@pytest.fixture(scope='module')
def G(cfg_a, parity_dir):
    G = Generator(**_ctor(cfg_a['G_ctor']), cfg=cfg_a['model_cfg']['generator']).eval()
    G.load_state_dict(torch.load(parity_dir / 'config_a' / 'G_state.pt'), strict=True)
    return G


@pytest.fixture(scope='module')
def D(cfg_a, parity_dir):
    D = Discriminator(**_ctor(cfg_a['D_ctor']), cfg=cfg_a['model_cfg']['discriminator']).eval()
    D.load_state_dict(torch.load(parity_dir / 'config_a' / 'D_state.pt'), strict=True)
    return D


def tiny_G(**cfg):
    base = {'z_dim': 8, 'motion': {'z_dim': 8, 'v_dim': 8}, 'time_enc': {'dim': 4},
            'sampling': {'max_num_frames': 32}}
    for k, v in cfg.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return Generator(c_dim=cfg.get('c_dim', 0), w_dim=8, img_resolution=8, img_channels=3,
                     mapping_kwargs={'num_layers': 2}, synthesis_kwargs={'channel_base': 64, 'channel_max': 8},
                     cfg=base).eval()


# ---------------------------------------------------------------------------------------------- configs
def test_generator_cfg_defaults_are_the_originals_stylegan_v_defaults():
    cfg = resolve_generator_cfg({})
    assert (cfg['z_dim'], cfg['use_noise'], cfg['input']['type']) == (512, False, 'temporal')
    assert cfg['motion'] == {'z_dim': 512, 'v_dim': 512, 'motion_z_distance': 16, 'gen_strategy': 'conv',
                             'kernel_size': 11, 'use_fractional_t': True, 'fourier': True}
    te = cfg['time_enc']
    assert (te['cond_type'], te['dim'], te['min_period_len'], te['max_period_len']) == ('concat_const', 256, 16, 1024)
    assert cfg['sampling']['max_num_frames'] == 1024 and cfg['sampling']['num_frames_per_video'] == 3
    # min_period_len follows motion_z_distance unless set
    assert resolve_generator_cfg({'motion': {'motion_z_distance': 4}})['time_enc']['min_period_len'] == 4
    d = resolve_discriminator_cfg({})
    assert (d['concat_res'], d['num_frames_div_factor'], d['dummy_c']) == (16, 2, False)


def test_init_kwargs_rebuild_the_same_modules(G, D):
    for net in (G, D):
        clone = type(net)(**net.init_kwargs)
        clone.load_state_dict(net.state_dict(), strict=True)
        assert json.loads(json.dumps(net.init_kwargs)) == net.init_kwargs, 'init_kwargs must be plain JSON-able data'
    assert G.sampling_dict['num_frames_per_video'] == 3


def test_omegaconf_like_mappings_are_accepted(cfg_a):
    class Cfg:  # a mapping with keys()/__getitem__ only, like OmegaConf's DictConfig
        def __init__(self, d): self.d = d
        def keys(self): return self.d.keys()
        def __getitem__(self, k): return Cfg(self.d[k]) if isinstance(self.d[k], dict) else self.d[k]
    G1 = Generator(**_ctor(cfg_a['G_ctor']), cfg=Cfg(cfg_a['model_cfg']['generator']))
    assert G1.cfg['time_enc']['dim'] == 32 and isinstance(G1.cfg['motion'], dict)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_inputs_name_the_tensor_and_shape(G, D):
    z, c, t = torch.randn(2, 64), torch.zeros(2, 0), torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r'z: expected shape \[\*, 64\]'): G(torch.randn(2, 63), c, t)
    with pytest.raises(ValueError, match='t: expected 2 dims'): G(z, c, torch.zeros(2))
    with pytest.raises(ValueError, match='same batch size'): G(z, c, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r'ws: expected shape \[\*, 8, 64\]'): G.synthesis(torch.randn(2, 7, 64), t=t, c=c)
    with pytest.raises(ValueError, match='motion_z: expected shape'):
        G(z, c, t, motion_z=torch.randn(2, 10, 64))
    # checked once, where t enters (G, G.synthesis, G.render), not again inside the motion mapper
    with pytest.raises(ValueError, match='t: expected 2 dims'): G.synthesis(torch.randn(2, 8, 64), t=torch.zeros(6), c=c)
    with pytest.raises(ValueError, match='t: expected'): G.render(torch.randn(2, 8, 64), G.sample_motion(2), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r'content: expected shape \[\*, 8, 64\]'): G.render(torch.randn(2, 7, 64), G.sample_motion(2), t)
    with pytest.raises(ValueError, match='expected a resolved generator config'): type(G.synthesis.motion_encoder)({'motion': {}})
    img = torch.randn(6, 3, 32, 32)
    with pytest.raises(ValueError, match=r'img: expected shape \[6, 3, 32, 32\]'): D(img[:5], c, t)
    with pytest.raises(ValueError, match='t: expected 2 dims'): D(img, c, torch.zeros(6))
    with pytest.raises(ValueError, match='built for 3 frames'): D(img, c, torch.zeros(3, 2))
    with pytest.raises(ValueError, match='time differences'): D(img, c, torch.tensor([[0., 300, 301], [0, 1, 2]]))


# ---------------------------------------------------------------------------------------------- mapping
def test_w_avg_tracks_the_batch_mean_with_beta_0995_and_truncation_cutoff():
    torch.manual_seed(0)
    m = MappingNetwork(z_dim=4, c_dim=0, w_dim=4, num_ws=3, num_layers=2).train()
    w_avg0 = torch.randn(4); m.w_avg.copy_(w_avg0)
    w = m(torch.randn(6, 4), None)[:, 0].detach()
    assert torch.allclose(m.w_avg, w_avg0 * 0.995 + w.mean(0) * 0.005, atol=1e-6)
    m.eval(); before = m.w_avg.clone(); z = torch.randn(2, 4)
    ws = m(z, None)
    assert torch.equal(m.w_avg, before), 'eval mode must not update w_avg'
    cut = m(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], before + 0.5 * (ws[:, :2] - before)) and torch.equal(cut[:, 2:], ws[:, 2:])


# ---------------------------------------------------------------------------------------------- content / motion API
def test_render_matches_the_original_calling_convention(G, parity_dir):
    I = torch.load(parity_dir / 'config_a' / 'inputs.pt')
    with torch.no_grad():
        frames = G(I['z'], I['c'], I['t'], motion_z=I['motion_z'])
        video = G.render(G.sample_content(I['z']), MotionNoise(2, 64, motion_z=I['motion_z']), I['t'])
    assert video.shape == (2, 5, 3, 32, 32)
    assert torch.equal(video.reshape(frames.shape), frames)


def test_motion_is_reusable_deterministic_and_extends_past_its_end(G):
    with torch.no_grad():
        content = G.sample_content(3, seed=1)
        assert torch.equal(content, G.sample_content(3, seed=1))
        motion = G.sample_motion(1, seed=5)
        assert motion.motion_z.shape[1] >= G.synthesis.motion_encoder.num_noise_codes(0)
        short = G.render(content, motion, torch.arange(0., 40., 8.))              # one motion, three contents
        long_t = torch.cat([torch.arange(0., 40., 8.), torch.tensor([1000.5, 2000.])])
        long = G.render(content, G.sample_motion(1, seed=5), long_t)              # same seed, far past max_num_frames
        again = G.render(content[1:2], motion, long_t)                            # the first motion, extended lazily
    assert long.shape == (3, 7, 3, 32, 32) and torch.isfinite(long).all()
    assert torch.allclose(long[:, :5], short, atol=1e-4, rtol=1e-4), 'extending a motion must not change its beginning'
    assert torch.allclose(again[0], long[1], atol=1e-4, rtol=1e-4), 'a seed gives the same motion however it is extended'
    assert not torch.allclose(short[0], short[1]), 'different contents must give different frames'
    # the same content with two motions: same first-frame content code, different motion
    with torch.no_grad():
        two = G.render(content[:1], G.sample_motion(2, seed=9), torch.tensor([0., 7.5]))
    assert not torch.allclose(two[0], two[1])


def test_fractional_t_interpolates_between_knots(G):
    me = G.synthesis.motion_encoder
    mz = torch.randn(1, me.num_noise_codes(64), 64)
    with torch.no_grad():
        info = me.generate_motion_u_codes(torch.zeros(1, 0), torch.tensor([[16., 20., 24.5, 32.]]), mz)
    alpha = info['interp_weights'][0, :, 0]
    assert torch.allclose(alpha, torch.tensor([0., 4 / 16, 8.5 / 16, 0.]))
    u = info['motion_u']
    assert torch.allclose(u[2], info['motion_u_left'][0, 2] * (1 - 8.5 / 16) + info['motion_u_right'][0, 2] * 8.5 / 16,
                          atol=1e-6)
    assert torch.allclose(info['motion_u_left'][0, 3], info['motion_u_right'][0, 0]), 'knot 32 is the right code of 16'


# ---------------------------------------------------------------------------------------------- variants
def test_fourier_false_motion_mlp_does_not_crash():
    G = tiny_G(motion={'fourier': False, 'gen_strategy': 'autoregressive', 'motion_z_distance': 1},
               time_enc={'cond_type': 'concat_w'}, input={'type': 'const'})
    assert G.synthesis.motion_encoder.get_dim() == 8
    with torch.no_grad():
        out = G(torch.randn(2, 8), torch.zeros(2, 0), torch.arange(4.).repeat(2, 1))
    assert out.shape == (8, 3, 8, 8)
    assert G.synthesis.b4.conv1.affine.weight.shape[1] == 16, 'concat_w: each block sees w_dim + motion_v_dim'


def test_sum_w_and_no_motion_variants_run():
    with torch.no_grad():
        G = tiny_G(time_enc={'cond_type': 'sum_w'}, input={'type': 'const'})   # motion_v (2*4) + w (8)
        assert G(torch.randn(1, 8), None, torch.zeros(1, 2)).shape == (2, 3, 8, 8)
        G = tiny_G(motion={'v_dim': 0}, input={'type': 'const'})
        assert G.synthesis.motion_encoder is None
        out = G(torch.randn(1, 8), None, torch.tensor([[0., 5.]]))
    assert torch.equal(out[0], out[1]), 'without motion all frames of a video are equal'


def test_noise_inputs():
    G = tiny_G(use_noise=True)
    assert any(k.endswith('noise_const') for k in G.state_dict())
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'): p.fill_(0.5)
        args = (torch.randn(1, 8), None, torch.zeros(1, 1))
        mz = torch.randn(1, G.synthesis.motion_encoder.num_noise_codes(0), 8)
        const1, const2 = (G(*args, motion_z=mz, noise_mode='const') for _ in range(2))
        rand = G(*args, motion_z=mz, noise_mode='random')
        none = G(*args, motion_z=mz, noise_mode='none')
    assert torch.equal(const1, const2) and not torch.allclose(const1, rand) and not torch.allclose(const1, none)
    assert not any('noise' in k for k in tiny_G().state_dict()), 'use_noise=False: no noise buffers (as the original)'


def test_conditional_generator_and_discriminator():
    G = tiny_G(c_dim=5)
    c = torch.eye(5)[:2]
    with torch.no_grad():
        frames = G(torch.randn(2, 8), c, torch.tensor([[0., 1, 2], [3, 4, 5]]))
    assert frames.shape == (6, 3, 8, 8)
    assert G.synthesis.motion_encoder.conv[0].weight.shape[1] == 8 + 5, 'the label is concatenated to the motion noise'
    D = Discriminator(c_dim=5, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                      mapping_kwargs={'num_layers': 2}, cfg={'concat_res': 8, 'sampling': {'max_num_frames': 32}})
    assert D.b8.conv0.weight.shape[1] == (8 // 2) * 3, 'b8 sees the 3 frames of a video, each with half the channels'
    frames = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        out = D(frames, c, torch.tensor([[0., 1, 2], [3, 4, 5]]))['image_logits']
    assert out.shape == (2,)
    with pytest.raises(ValueError, match=r'c: expected shape \[2, 5\]'):
        D(frames, None, torch.tensor([[0., 1, 2], [3, 4, 5]]))


def test_fp16_blocks_stay_fp32_on_cpu_and_prenormalisation_prevents_overflow():
    G = tiny_G()
    G16 = Generator(**{**G.init_kwargs, 'synthesis_kwargs': {**G.init_kwargs['synthesis_kwargs'], 'num_fp16_res': 2,
                                                             'conv_clamp': 256}}).eval()
    G16.load_state_dict(G.state_dict())
    assert G16.synthesis.b8.use_fp16 and not G16.synthesis.b4.use_fp16
    args = (torch.randn(2, 8), None, torch.zeros(2, 2))
    with torch.no_grad():
        mz = torch.randn(2, 30, 8)
        out16, out32 = G16(*args, motion_z=mz), G(*args, motion_z=mz)
    assert out16.dtype == torch.float32 and torch.allclose(out16, out32, atol=1e-5)
    # half-precision modulated conv with large styles: finite thanks to the max-norm pre-normalisation
    x, w, s = torch.randn(2, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(2, 4) * 1000
    y16 = modulated_conv2d(x.half(), w.half(), s.half(), padding=1, fused_modconv=False)
    y32 = modulated_conv2d(x, w, s, padding=1, fused_modconv=False)
    assert torch.isfinite(y16).all() and torch.allclose(y16.float(), y32, atol=2e-2, rtol=1e-2)
