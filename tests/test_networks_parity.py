"""Parity of the StyleGAN-V generator and discriminator with the original's tensors (shared/parity/config_a, and the
MoCoGAN+SG2 generator of shared/parity/mocogan). Every check runs twice: with the ops forced to the plain-PyTorch
reference ('ref') and with whatever implementation the op modules pick by default ('default')."""
import json

import pytest
import torch
import torch.nn.functional as F

import stylegan_v.ops.bias_act as bias_act_mod
import stylegan_v.ops.upfirdn2d as upfirdn2d_mod
from stylegan_v.networks.discriminator import Discriminator
from stylegan_v.networks.generator import Generator

FRAME_TOL = dict(atol=1e-4, rtol=1e-4)
CODE_TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(params=['ref', 'default'])
def impl(request, monkeypatch):
    """'ref': every bias_act/upfirdn2d call (also those inside conv2d_resample) resolves to the reference ops."""
    if request.param == 'ref':
        monkeypatch.setattr(bias_act_mod, 'resolve_impl', lambda *args, **kwargs: None)
        monkeypatch.setattr(upfirdn2d_mod, 'resolve_impl', lambda *args, **kwargs: None)
    return request.param


def _ctor(d):
    return {k: v for k, v in d.items() if k not in ('class_name', 'cfg')}


def _load_set(parity_dir, name):
    p = parity_dir / name
    cfg = json.loads((p / 'config.json').read_text())
    return p, cfg, torch.load(p / 'inputs.pt'), torch.load(p / 'outputs.pt')


@pytest.fixture(scope='module')
def set_a(parity_dir):
    p, cfg, inputs, outputs = _load_set(parity_dir, 'config_a')
    G = Generator(**_ctor(cfg['G_ctor']), cfg=cfg['model_cfg']['generator']).eval()
    G.load_state_dict(torch.load(p / 'G_state.pt'), strict=True)
    D = Discriminator(**_ctor(cfg['D_ctor']), cfg=cfg['model_cfg']['discriminator']).eval()
    D.load_state_dict(torch.load(p / 'D_state.pt'), strict=True)
    return dict(cfg=cfg, G=G, D=D, inputs=inputs, outputs=outputs, intermediates=torch.load(p / 'intermediates.pt'))


def close(actual, expected, tol, what):
    diff = (actual.detach() - expected).abs().max().item()
    assert torch.allclose(actual.detach(), expected, **tol), f'{what}: max abs diff {diff:.3g}'


# ---------------------------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize('which', ['G', 'D'])
def test_fresh_modules_have_the_original_state_dict_keys(parity_dir, which):
    p, cfg, _, _ = _load_set(parity_dir, 'config_a')
    ours = (Generator(**_ctor(cfg['G_ctor']), cfg=cfg['model_cfg']['generator']) if which == 'G' else
            Discriminator(**_ctor(cfg['D_ctor']), cfg=cfg['model_cfg']['discriminator'])).state_dict()
    theirs = torch.load(p / f'{which}_state.pt')
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    for k in [k for k in ours if k.endswith(('resample_filter', 'freqs', 'phase_scales', 'fourier_coefs'))]:
        assert torch.equal(ours[k], theirs[k]), f'fixed buffer {k} differs from the original'


# ---------------------------------------------------------------------------------------------- generator
def test_mapping(set_a, impl):
    G, I, O = set_a['G'], set_a['inputs'], set_a['outputs']
    close(G.mapping.w_avg, O['w_avg'], CODE_TOL, 'w_avg')
    with torch.no_grad():
        close(G.mapping(I['z'], I['c']), O['ws'], CODE_TOL, 'ws')
        close(G.mapping(I['z'], I['c'], truncation_psi=0.7), O['ws_psi0.7'], CODE_TOL, 'ws_psi0.7')


def test_motion_encoder(set_a, impl):
    G, I, O, X = set_a['G'], set_a['inputs'], set_a['outputs'], set_a['intermediates']
    me = G.synthesis.motion_encoder
    with torch.no_grad():
        # codes agree to ~2e-6 (conv1d summation order differs between torch builds); sin(freqs*p*t + phase*scale) with
        # t up to 300 and phase scales up to 64 amplifies that ~30x, so motion_v is held to the frames' tolerance and
        # the time encoder alone, fed the original's codes, to CODE_TOL below
        close(me(I['c'], I['t'], I['motion_z'])['motion_v'], O['motion_v'], FRAME_TOL, 'motion_v')
        info = me.generate_motion_u_codes(I['c'], I['t'], I['motion_z'])
        for k in ('motion_u_left', 'motion_u_right', 't_left', 't_right', 'interp_weights', 'motion_u'):
            close(info[k], X['motion.' + k], CODE_TOL, k)
        v = me.time_encoder(I['t'], *(X['motion.' + k] for k in ('motion_u_left', 'motion_u_right', 'interp_weights', 't_left', 't_right')))
        close(v, O['motion_v'], CODE_TOL, 'motion_v from the original codes')
        close(me.trajectory(I['motion_z']).permute(0, 2, 1), X['motion.trajs_conv_out'], CODE_TOL, 'trajs_conv_out')


@pytest.mark.parametrize('psi', [1, 0.7])
def test_frames_eval_fused(set_a, impl, psi):
    G, I, O = set_a['G'], set_a['inputs'], set_a['outputs']
    calls = []
    hook = G.synthesis.b8.conv0.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs['fused_modconv']),
                                                          with_kwargs=True)
    try:
        with torch.no_grad():
            frames = G(I['z'], I['c'], I['t'], truncation_psi=psi, motion_z=I['motion_z'], noise_mode='const')
    finally:
        hook.remove()
    assert calls == [True], 'eval mode in fp32 must use the fused modulated conv'
    assert frames.shape == (10, 3, 32, 32)
    close(frames, O['frames_psi1' if psi == 1 else 'frames_psi0.7'], FRAME_TOL, f'frames psi={psi}')


def test_synthesis_train_mode_non_fused(set_a, impl):
    G, I, O = set_a['G'], set_a['inputs'], set_a['outputs']
    calls = []
    hook = G.synthesis.b8.conv0.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs['fused_modconv']),
                                                          with_kwargs=True)
    G.synthesis.train()
    try:
        with torch.no_grad():
            frames = G.synthesis(O['ws'], t=I['t'], c=I['c'], motion_z=I['motion_z'], noise_mode='const')
    finally:
        G.synthesis.eval(); hook.remove()
    assert calls == [False], 'train mode must use the non-fused modulated conv'
    close(frames, O['frames_psi1_synthesis_trainmode'], FRAME_TOL, 'train-mode synthesis frames')


def test_frames_with_other_motion_noise(set_a, impl):
    G, I, O = set_a['G'], set_a['inputs'], set_a['outputs']
    with torch.no_grad():
        frames = G(I['z'], I['c'], I['t'], motion_z=O['motion_z_rng4321'], noise_mode='const')
        torch.manual_seed(4321)  # without motion_z we draw exactly the original's randn(B, L, z_dim)
        frames_own_draw = G(I['z'], I['c'], I['t'], noise_mode='const')
    close(frames, O['frames_psi1_rng4321'], FRAME_TOL, 'frames_psi1_rng4321')
    close(frames_own_draw, O['frames_psi1_rng4321'], FRAME_TOL, 'frames_psi1_rng4321 (drawn inside forward)')


def test_frames_for_D(set_a, impl):
    G, I, O = set_a['G'], set_a['inputs'], set_a['outputs']
    with torch.no_grad():
        frames_D = G(I['z'], I['c'], I['t_D'], motion_z=I['motion_z'], noise_mode='const')
    close(frames_D, O['frames_for_D'], FRAME_TOL, 'frames_for_D')


def test_block_intermediates(set_a, impl):
    G, I, X = set_a['G'], set_a['inputs'], set_a['intermediates']
    seen = {}
    hooks = [getattr(G.synthesis, f'b{r}').register_forward_hook(lambda m, a, o, r=r: seen.setdefault(r, o))
             for r in (4, 8, 16)]
    try:
        with torch.no_grad():
            G(I['z'], I['c'], I['t'], motion_z=I['motion_z'], noise_mode='const')
    finally:
        for h in hooks: h.remove()
    close(seen[4][0], X['synthesis.b4.x'], FRAME_TOL, 'b4.x')
    close(seen[4][1], X['synthesis.b4.img'], FRAME_TOL, 'b4.img')
    close(seen[8][0], X['synthesis.b8.x'], FRAME_TOL, 'b8.x')
    close(seen[8][1], X['synthesis.b8.img'], FRAME_TOL, 'b8.img')
    close(seen[16][1], X['synthesis.b16.img'], FRAME_TOL, 'b16.img')


# ---------------------------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize('key,img_key,t_key', [('D_real', 'real_img', 't_D'), ('D_fake', 'frames_for_D', 't_D'),
                                                ('D_real_tfrac', 'real_img', 't_D_frac')])
def test_discriminator_logits(set_a, impl, key, img_key, t_key):
    D, I, O = set_a['D'], set_a['inputs'], set_a['outputs']
    img = I[img_key] if img_key in I else O[img_key]
    with torch.no_grad():
        logits = D(img, I['c'], I[t_key])['image_logits']
    assert logits.shape == (2,)
    close(logits, O[f'{key}.image_logits'], CODE_TOL, f'{key}.image_logits')


def test_discriminator_intermediates(set_a, impl):
    D, I, X = set_a['D'], set_a['inputs'], set_a['intermediates']
    seen = {}
    hooks = [D.b16.register_forward_hook(lambda m, a, o: seen.__setitem__('b16', o[0])),
             D.b8.register_forward_hook(lambda m, a, o: seen.__setitem__('b8', o[0])),
             D.time_encoder.register_forward_hook(lambda m, a, o: seen.__setitem__('t', o)),
             D.mapping.register_forward_hook(lambda m, a, o: seen.__setitem__('cmap', o))]
    try:
        with torch.no_grad():
            D(I['real_img'], I['c'], I['t_D'])
    finally:
        for h in hooks: h.remove()
    close(seen['t'], X['D.time_encoder_out'], CODE_TOL, 'time_encoder_out')
    close(seen['cmap'], X['D.mapping_out_cmap'], CODE_TOL, 'cmap')
    close(seen['b16'], X['D.b16.x'], FRAME_TOL, 'b16.x')
    close(seen['b8'], X['D.b8.x'], FRAME_TOL, 'b8.x')


def test_r1_penalty(set_a, impl):
    D, I, O, cfg = set_a['D'], set_a['inputs'], set_a['outputs'], set_a['cfg']
    img = I['real_img'].detach().requires_grad_(True)
    logits = D(img, I['c'], I['t_D'])['image_logits']
    grads, = torch.autograd.grad(logits.sum(), img, create_graph=True)
    r1 = grads.square().sum([1, 2, 3])
    loss_r1 = (r1 * (cfg['loss']['r1_gamma'] / 2)).view(len(logits), -1).mean(dim=1)
    close(r1, O['r1_penalty_per_frame'], CODE_TOL, 'r1_penalty_per_frame')
    close(loss_r1, O['loss_Dr1_per_video'], CODE_TOL, 'loss_Dr1_per_video')
    close(F.softplus(-logits), O['softplus_neg_D_real'], CODE_TOL, 'softplus_neg_D_real')
    loss_r1.sum().backward()  # double backward through every op must work (R1 training step)
    assert D.b32.conv0.weight.grad is not None and torch.isfinite(D.b32.conv0.weight.grad).all()
    D.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------- MoCoGAN+SG2 generator
def test_mocogan_generator(parity_dir, impl):
    """LSTM motion, fourier=False (2-layer MLP: no get_dim crash), const input, concat_w. The fixture stores only the
    first video for the psi0.7 / rng / train-mode frames."""
    p, cfg, I, O = _load_set(parity_dir, 'mocogan')
    G = Generator(**_ctor(cfg['G_ctor']), cfg=cfg['model_cfg']['generator']).eval()
    G.load_state_dict(torch.load(p / 'G_state.pt'), strict=True)
    z, c, t, mz = I['z'], I['c'], I['t'], I['motion_z']
    with torch.no_grad():
        close(G.mapping(z, c), O['ws'], CODE_TOL, 'ws')
        close(G.synthesis.motion_encoder(c, t, mz)['motion_v'], O['motion_v'], CODE_TOL, 'motion_v')
        close(G(z, c, t, motion_z=mz, noise_mode='const'), O['frames_psi1'], FRAME_TOL, 'frames_psi1')
        # the first video alone (frames of one video do not depend on the other videos of the batch)
        z, c, t, mz = z[:1], c[:1], t[:1], mz[:1]
        close(G(z, c, t, truncation_psi=0.7, motion_z=mz), O['frames_psi0.7'], FRAME_TOL, 'frames_psi0.7')
        close(G(z, c, t, motion_z=O['motion_z_rng4321'][:1]), O['frames_psi1_rng4321'], FRAME_TOL, 'rng4321')
        G.synthesis.train()
        close(G.synthesis(O['ws'][:1], t=t, c=c, motion_z=mz), O['frames_psi1_synthesis_trainmode'], FRAME_TOL, 'train')
