"""The loss: phases on their own and together, R1 through the augmentation, path length, style mixing, MoCoGAN video
logits, gradient accumulation, lazy Adam, sanitising, EMA. (Parity with the original: test_train_parity.py.)"""
import copy

import pytest
import torch
import torch.nn as nn

from stylegan_v.augment import augment_pipe
from stylegan_v.loss import (Phase, StyleGANVLoss, ema_beta, lazy_adam, phase_plan, phases_due, r1_gamma_auto,
                             run_phase, sanitize_grads, update_ema)
from stylegan_v.networks.discriminator import Discriminator
from stylegan_v.networks.generator import Generator

RES, B, F = 32, 2, 3
SAMPLING = {'max_num_frames': 64, 'num_frames_per_video': F}
GCFG = {'z_dim': 32, 'w_dim': 32, 'motion': {'z_dim': 16, 'v_dim': 16, 'motion_z_distance': 8},
        'time_enc': {'dim': 8, 'max_period_len': 64}, 'sampling': SAMPLING}


def tiny_G(res=RES):
    torch.manual_seed(0)
    return Generator(c_dim=0, w_dim=32, img_resolution=res, img_channels=3, mapping_kwargs={'num_layers': 2},
                     synthesis_kwargs={'channel_base': 256, 'channel_max': 32}, cfg=GCFG).train().requires_grad_(False)


def tiny_D():
    torch.manual_seed(1)
    return Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=256, channel_max=32,
                         mapping_kwargs={'num_layers': 2}, cfg={'sampling': SAMPLING}).train().requires_grad_(False)


@pytest.fixture
def nets():
    return tiny_G(), tiny_D()


def batch(G, n=B, seed=3):
    g, RES = torch.Generator().manual_seed(seed), G.img_resolution
    t = torch.tensor([[0., 2, 4], [5, 7, 13], [1, 3, 9], [2, 4, 6]])[:n]
    L = G.synthesis.motion_encoder.num_noise_codes(t + 1)
    return dict(real_img=torch.rand(n, F, 3, RES, RES, generator=g) * 2 - 1, real_c=torch.zeros(n, 0), real_t=t,
                gen_z=torch.randn(n, G.z_dim, generator=g), gen_c=torch.zeros(n, 0), gen_t=t + 0.5,
                motion_z=torch.randn(n, L, 16, generator=g))


def grads(module):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def test_r1_through_augmentation_at_p_half_gives_finite_gradients(nets):
    G, D = nets
    loss = StyleGANVLoss(G, D, augment_pipe=augment_pipe('bgcfnc', p=0.5), r1_gamma=r1_gamma_auto(RES, B))
    inputs = batch(G)
    before = inputs['real_img'].clone()
    D.requires_grad_(True)
    torch.manual_seed(0)
    terms = loss.accumulate_gradients('Dreg', gain=16, **inputs)
    assert terms['Loss/r1_penalty'].shape == (B * F,) and terms['Loss/D/reg'].shape == (B,)
    assert torch.isfinite(terms['Loss/D/reg']).all() and (terms['Loss/r1_penalty'] > 0).all()
    g = grads(D)
    assert all(torch.isfinite(v).all() for v in g.values())
    assert sum(v.abs().sum() for v in g.values()) > 0
    assert torch.equal(inputs['real_img'], before)            # R1 reads the real frames, never changes them
    assert not any(v.requires_grad for v in terms.values())   # terms are detached


def test_each_phase_alone_and_the_both_phases_add_up(nets):
    G, D = nets
    inputs = batch(G)
    loss = StyleGANVLoss(G, D, augment_pipe=None, r1_gamma=0.5)
    D.requires_grad_(True)
    per_phase, terms = {}, {}
    for phase in ('Dmain', 'Dreg', 'Dboth'):
        D.zero_grad(set_to_none=True)
        terms[phase] = loss.accumulate_gradients(phase, **inputs)
        per_phase[phase] = grads(D)
    assert set(terms['Dboth']) == set(terms['Dmain']) | set(terms['Dreg'])
    torch.testing.assert_close(terms['Dboth']['Loss/D/loss'], terms['Dmain']['Loss/D/loss'])
    for name in per_phase['Dboth']:
        torch.testing.assert_close(per_phase['Dboth'][name], per_phase['Dmain'][name] + per_phase['Dreg'][name],
                                   rtol=1e-4, atol=1e-7)
    assert set(terms['Dmain']) >= {'Loss/scores/fake', 'Loss/scores/real', 'Loss/signs/real', 'Loss/D/loss'}
    torch.testing.assert_close(terms['Dmain']['Loss/D/loss'], torch.nn.functional.softplus(terms['Dmain']['Loss/scores/fake'])
                               + torch.nn.functional.softplus(-terms['Dmain']['Loss/scores/real']))


def test_g_phases_touch_only_G(nets):
    G, D = nets
    loss = StyleGANVLoss(G, D, augment_pipe=augment_pipe('bgc', p=0.3), r1_gamma=0.5)
    G.requires_grad_(True)
    terms = loss.accumulate_gradients('Gmain', **batch(G))
    assert set(terms) == {'Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss'}
    assert all(p.grad is None for p in D.parameters())
    assert G.synthesis.motion_encoder is not None and all(p.grad is not None for p in G.parameters())
    assert loss.accumulate_gradients('Greg', **batch(G)) == {}   # pl_weight = 0: Greg is a no-op, as in StyleGAN-V


def test_path_length_regularisation_when_enabled(nets):
    G, D = nets
    loss = StyleGANVLoss(G, D, r1_gamma=0.5, pl_weight=2.0)
    G.requires_grad_(True)
    terms = loss.accumulate_gradients('Gboth', **batch(G, n=4))
    assert terms['Loss/pl_penalty'].shape == (2,) and terms['Loss/G/reg'].shape == (2,)   # batch shrunk by 2
    assert loss.pl_mean > 0
    assert all(torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None)


def test_style_mixing_changes_codes_and_updates_w_avg_once(nets):
    G, D = nets
    inputs = batch(G)
    w_avg = G.mapping.w_avg.clone()
    plain = StyleGANVLoss(G, D, r1_gamma=0.5)
    with torch.no_grad():
        _, ws_plain = plain.run_G(inputs['gen_z'], inputs['gen_c'], inputs['gen_t'], inputs['motion_z'])
    once = G.mapping.w_avg.clone()
    assert not torch.equal(once, w_avg)
    G.mapping.w_avg.copy_(w_avg)
    mixing = StyleGANVLoss(G, D, r1_gamma=0.5, style_mixing_prob=1.0)
    torch.manual_seed(0)
    with torch.no_grad():
        _, ws_mixed = mixing.run_G(inputs['gen_z'], inputs['gen_c'], inputs['gen_t'], inputs['motion_z'])
    torch.testing.assert_close(G.mapping.w_avg, once)        # the second mapping call skips the w_avg update
    assert torch.equal(ws_mixed[:, 0], ws_plain[:, 0]) and not torch.equal(ws_mixed[:, -1], ws_plain[:, -1])


def test_video_consistent_augmentation_feeds_clips_to_any_pipe(nets):
    G, D = nets
    seen = []
    def recording_pipe(x):
        seen.append(tuple(x.shape)); return x
    inputs = batch(G)
    for consistent, shape in ((True, (B, F * 3, RES, RES)), (False, (B * F, 3, RES, RES))):
        seen.clear()
        loss = StyleGANVLoss(G, D, augment_pipe=recording_pipe, r1_gamma=0.5, video_consistent_aug=consistent)
        D.requires_grad_(True)
        loss.accumulate_gradients('Dmain', **inputs)
        assert seen == [shape, shape]                      # fakes, then reals


def test_mocogan_video_logits_enter_the_loss():
    from stylegan_v.networks.mocogan import Discriminator as MoCoGANDiscriminator
    G = tiny_G(res=64)   # the video D's 3-D convs need 64 px
    torch.manual_seed(2)
    D = MoCoGANDiscriminator(c_dim=0, img_resolution=64, img_channels=3, channel_base=256, channel_max=32,
                             mapping_kwargs={'num_layers': 2}).train().requires_grad_(False)
    loss = StyleGANVLoss(G, D, r1_gamma=0.5)
    inputs = batch(G, n=4)   # the image D's minibatch-std groups 4 of the 12 frames
    G.requires_grad_(True)
    g_terms = loss.accumulate_gradients('Gmain', **inputs)
    G.requires_grad_(False); D.requires_grad_(True)
    d_terms = loss.accumulate_gradients('Dboth', **inputs)
    assert {'Loss/G/loss_video', 'Loss/scores/fake_video'} <= set(g_terms)
    assert {'Loss/D/loss_video', 'Loss/scores/real_video'} <= set(d_terms)
    assert d_terms['Loss/D/reg'].shape == (4 * F,)           # image logits per frame: R1 per frame
    assert all(p.grad is not None for p in D.video_discr.parameters())


def test_bad_calls_are_explained(nets):
    G, D = nets
    loss = StyleGANVLoss(G, D, r1_gamma=0.5)
    inputs = batch(G)
    with pytest.raises(ValueError, match='Gboth'):
        loss.accumulate_gradients('Dr1', **inputs)
    with pytest.raises(ValueError, match='real_img'):
        loss.accumulate_gradients('Dmain', **{**inputs, 'real_img': inputs['real_img'][:, 0]})
    with pytest.raises(ValueError, match='r1_gamma'):
        StyleGANVLoss(G, D, r1_gamma=-1)
    with pytest.raises(ValueError, match='at least one round'):
        run_phase(loss, Phase('Dmain', 'D', 1), lazy_adam(D.parameters(), 1e-3), [])


def test_rounds_accumulate_like_the_original(nets):
    G, D = nets
    loss = StyleGANVLoss(G, D, r1_gamma=0.5)
    full = batch(G, n=4)
    rounds = [{k: v[i:i + 2] for k, v in full.items()} for i in (0, 2)]
    expected = {}
    for r in rounds:
        D.requires_grad_(True); D.zero_grad(set_to_none=True)
        loss.accumulate_gradients('Dreg', gain=16, **r)
        for n, g in grads(D).items(): expected[n] = expected.get(n, 0) + g
    D.requires_grad_(False)
    snapshot = copy.deepcopy(D.state_dict())
    opt = lazy_adam(D.parameters(), 0.0025, reg_interval=16)
    terms = run_phase(loss, Phase('Dreg', 'D', 16), opt, rounds)
    assert terms['Loss/D/reg'].shape == (4,)
    for n, g in grads(D).items():
        torch.testing.assert_close(g, expected[n], rtol=1e-6, atol=1e-12)
    assert not any(p.requires_grad for p in D.parameters())
    assert any(not torch.equal(p, snapshot[n]) for n, p in D.named_parameters())   # the step happened


def test_optimiser_helpers():
    opt = lazy_adam([nn.Parameter(torch.zeros(2))], lr=0.0025, betas=(0, 0.99), reg_interval=16)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.0025 * 16 / 17)
    assert opt.param_groups[0]['betas'][1] == pytest.approx(0.99 ** (16 / 17))
    assert [p.name for p in phase_plan()] == ['Gmain', 'Greg', 'Dmain', 'Dreg']
    assert [p.name for p in phase_plan(0, None)] == ['Gboth', 'Dboth']
    assert [p.name for p in phases_due(phase_plan(), 4)] == ['Gmain', 'Greg', 'Dmain']
    with pytest.raises(ValueError, match='reg_interval_D'):
        phase_plan(4, -1)
    assert r1_gamma_auto(256, 64) == pytest.approx(0.2048)
    lin = nn.Linear(3, 1)
    lin.weight.grad = torch.tensor([[float('nan'), float('inf'), -float('inf')]])
    sanitize_grads(lin)
    assert torch.equal(lin.weight.grad, torch.tensor([[0., 1e5, -1e5]]))


def test_ema():
    assert ema_beta(4, 1.25) == pytest.approx(0.5 ** (4 / 1250))
    assert ema_beta(64, 20, ema_rampup=0.05, cur_nimg=64_000) == pytest.approx(0.5 ** (64 / 3200))
    G, G_ema = tiny_G(), tiny_G()
    with torch.no_grad():
        for p in G.parameters(): p.add_(1.0)
        G.mapping.w_avg.fill_(3.0)
    before = copy.deepcopy(G_ema.state_dict())
    update_ema(G_ema, G, 0.75)
    for n, p in G_ema.named_parameters():
        torch.testing.assert_close(p, 0.75 * before[n] + 0.25 * dict(G.named_parameters())[n])
    assert torch.equal(G_ema.mapping.w_avg, G.mapping.w_avg)   # buffers are copied
