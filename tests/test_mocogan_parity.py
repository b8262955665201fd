"""MoCoGAN+SG2 baseline (stylegan_v.networks.mocogan + the LSTM/concat_w generator) against the original's outputs."""
import copy
import hashlib
import json

import pytest
import torch

from stylegan_v.networks.generator import Generator
from stylegan_v.networks.mocogan import Discriminator, MoCoGANVideoDiscriminator


@pytest.fixture(scope='module')
def parity(parity_dir):
    d = parity_dir / 'mocogan'
    return (json.loads((d / 'config.json').read_text()), torch.load(d / 'inputs.pt'), torch.load(d / 'outputs.pt'),
            torch.load(d / 'G_state.pt'), torch.load(d / 'D_state.pt'))


def _ctor(ctor):
    return {k: v for k, v in ctor.items() if k not in ('class_name', 'cfg')}


def _video_discr_weights(cfg):
    """The five Conv3d weights the parity run overwrote, regenerated from the README recipe (name-sorted order)."""
    weights = {}
    for i, r in enumerate(sorted(cfg['video_discr_recipe'], key=lambda r: r['name'])):
        assert r['seed'] == 20240 + i
        g = torch.Generator().manual_seed(r['seed'])
        w = torch.randn(r['shape'], generator=g, dtype=torch.float32) * r['scale']
        assert hashlib.sha256(w.numpy().tobytes()).hexdigest() == r['sha256'], r['name']
        weights[r['name']] = w
    return weights


@pytest.fixture(scope='module')
def G(parity):
    cfg, _, _, G_state, _ = parity
    gen_cfg = {**cfg['model_cfg']['generator'], 'sampling': cfg['sampling_cfg'], 'c_dim': cfg['dataset_cfg']['c_dim']}
    G = Generator(**_ctor(cfg['G_ctor']), cfg=gen_cfg).eval()
    G.load_state_dict(G_state, strict=True)
    return G


@pytest.fixture(scope='module')
def D(parity):
    cfg, _, _, _, D_state = parity
    D = Discriminator(**_ctor(cfg['D_ctor']), cfg=cfg['model_cfg']['discriminator']).eval()
    D.load_state_dict({**D_state, **_video_discr_weights(cfg)}, strict=True)
    D.video_discr.set_noise(False)
    return D


def _close(got, want, tol, key):
    torch.testing.assert_close(got, want, atol=tol, rtol=tol, msg=lambda m: f'{key}: {m}')
    return (got - want).abs().max().item()


def test_generator_matches_original(G, parity):
    cfg, inputs, outputs, _, _ = parity
    z, c, t, motion_z = inputs['z'], inputs['c'], inputs['t'], inputs['motion_z']
    assert G.synthesis.motion_encoder.get_dim() == cfg['derived']['motion_v_dim']
    n = outputs['frames_psi0.7'].shape[0] // t.shape[1]  # the 0.7 / train-mode / rng outputs cover the first videos only
    with torch.no_grad():
        ws = G.mapping(z, c)
        diffs = {
            'ws': _close(ws, outputs['ws'], 1e-5, 'ws'),
            'ws_psi0.7': _close(G.mapping(z, c, truncation_psi=0.7), outputs['ws_psi0.7'], 1e-5, 'ws_psi0.7'),
            'motion_v': _close(G.synthesis.motion_encoder(c, t, motion_z=motion_z)['motion_v'], outputs['motion_v'], 1e-5, 'motion_v'),
            'frames_psi1': _close(G(z, c, t, motion_z=motion_z, noise_mode='const'), outputs['frames_psi1'], 1e-4, 'frames_psi1'),
            'frames_psi0.7': _close(G(z[:n], c[:n], t[:n], truncation_psi=0.7, motion_z=motion_z[:n], noise_mode='const'),
                                    outputs['frames_psi0.7'], 1e-4, 'frames_psi0.7'),
            'frames_psi1_rng4321': _close(G(z[:n], c[:n], t[:n], motion_z=outputs['motion_z_rng4321'][:n], noise_mode='const'),
                                          outputs['frames_psi1_rng4321'], 1e-4, 'frames_psi1_rng4321'),
        }
        G_train = copy.deepcopy(G).train()
        diffs['frames_psi1_synthesis_trainmode'] = _close(
            G_train.synthesis(ws[:n], t=t[:n], c=c[:n], motion_z=motion_z[:n], noise_mode='const'),
            outputs['frames_psi1_synthesis_trainmode'], 1e-4, 'frames_psi1_synthesis_trainmode')
    print('max |diff|', diffs)


def test_discriminator_matches_original(D, parity):
    _, inputs, outputs, _, _ = parity
    c, t_D, real = inputs['c'], inputs['t_D'], inputs['real_img']
    diffs = {}
    with torch.no_grad():
        for key, out in (('D_real', D(real, c, t_D)), ('D_fake', D(outputs['frames_psi1'], c, t_D))):
            for part in ('image_logits', 'video_logits'):
                diffs[f'{key}.{part}'] = _close(out[part], outputs[f'{key}.{part}'], 1e-5, f'{key}.{part}')
        D_train = copy.deepcopy(D).train()  # BatchNorm3d with batch statistics
        out = D_train(real, c, t_D)
        for part in ('image_logits', 'video_logits'):
            key = f'D_real_trainmode_nonoise.{part}'
            diffs[key] = _close(out[part], outputs[key], 1e-5, key)
        D_noise = copy.deepcopy(D)
        D_noise.video_discr.set_noise(True)
        torch.manual_seed(999)
        out = D_noise(real, c, t_D)
        for part in ('image_logits', 'video_logits'):
            key = f'D_real_noise_rng999.{part}'
            diffs[key] = _close(out[part], outputs[key], 1e-5, key)
    print('max |diff|', diffs)


def test_r1_penalty_per_frame(D, parity):
    cfg, inputs, outputs, _, _ = parity
    img = inputs['real_img'].clone().requires_grad_(True)
    logits = D(img, inputs['c'], inputs['t_D'])['image_logits']
    grad, = torch.autograd.grad(logits.sum(), img)
    _close(grad.square().sum([1, 2, 3]), outputs['r1_penalty_per_frame'], 1e-5, 'r1_penalty_per_frame')


def test_video_discriminator_scores_short_clips(D):
    """The original's video D cannot run on 3-frame clips (kernel-4 time convs without padding); ours pads as needed."""
    vd = MoCoGANVideoDiscriminator(image_size=64, num_t_paddings=0, use_noise=False).eval()
    with torch.no_grad():
        for num_frames in (3, 4, 8, 16):
            logits = vd(torch.randn(2, 3, num_frames, 64, 64))
            assert logits.shape[0] == 2 and logits.shape[1] >= 1 and torch.isfinite(logits).all()
        # the full D on a 3-frame clip, batch of 1 (the original's .squeeze() would also drop the batch dim)
        t = torch.tensor([[0.0, 1.0, 2.0]])
        out = D(torch.randn(3, 3, 64, 64), torch.zeros(1, 0), t)
    assert out['image_logits'].shape == (3,)
    assert out['video_logits'].shape == (1, 4)
    with pytest.raises(ValueError, match='too few'):
        MoCoGANVideoDiscriminator(image_size=64, auto_t_padding=False, use_noise=False)(torch.randn(1, 3, 3, 64, 64))
