"""CLIP editing with a tiny random open_clip model built offline: the CLIP loss falls, the motion noise is untouched bit
for bit, the L2 weight bounds the change; a conditional model's edit renders with the class of its codes (or --class);
the command writes its outputs and refuses bad input in one line."""
import json
import os

import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
from safetensors.torch import save_file  # noqa: E402

from stylegan_v.checkpoints import save_checkpoint  # noqa: E402
from stylegan_v.edit import OUTPUTS, EditConfig, IRSE, cli_main, edit_content, load_clip  # noqa: E402
from stylegan_v.generate import class_labels  # noqa: E402
from tiny_models import tiny_generator  # noqa: E402
from stylegan_v.project import Projection, load_codes, save_codes  # noqa: E402

TINY_CLIP = {'embed_dim': 32, 'vision_cfg': {'image_size': 32, 'layers': 1, 'width': 32, 'patch_size': 8, 'head_width': 16},
             'text_cfg': {'context_length': 16, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1}}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp('edit')
    (d / 'clip.json').write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(1)
    save_file(load_clip(str(d / 'clip.json'), None).model.state_dict(), str(d / 'clip.safetensors'))
    clip = load_clip(str(d / 'clip.json'), str(d / 'clip.safetensors'))
    G = tiny_generator()
    save_checkpoint(d / 'G.safetensors', {'G_ema': G})
    return d, G, clip


def test_edit_lowers_clip_loss_keeps_motion_bounds_change(setup):
    _, G, clip = setup
    with torch.no_grad(): w0 = G.sample_content(1, seed=3)
    motion = G.sample_motion(1, seed=4)
    motion_before = motion.motion_z.clone()
    changes = {}
    for l2 in (0.001, 0.02):
        res = edit_content(G, w0, motion, 'a red ball on grass', clip, EditConfig(num_steps=20, l2_weight=l2),
                           torch.arange(8.), progress=False)
        h, b = res.history, res.best_step
        assert h['clip'][b] < h['clip'][0] - (0.02 if l2 == 0.001 else 0), (l2, h['clip'][0], h['clip'][b])
        assert l2 * h['l2'][b] <= h['clip'][0] - h['clip'][b] + 1e-6      # the L2 bound on the change
        assert torch.allclose((res.content_w - w0).square().sum(), torch.tensor(h['l2'][b]), rtol=1e-4)
        changes[l2] = h['l2'][b]
    assert changes[0.02] < changes[0.001], changes                          # a stronger L2 weight, a smaller change
    assert torch.equal(motion.motion_z, motion_before)                      # motion untouched, bit for bit


def test_identity_loss_needs_weights(setup):
    _, G, clip = setup
    with torch.no_grad(): w0 = G.sample_content(1, seed=3)
    with pytest.raises(Exception, match='identity weights'):
        edit_content(G, w0, G.sample_motion(1, seed=4), 'x', clip, EditConfig(num_steps=1, id_weight=0.1), progress=False)
    net = IRSE(units=(1, 1), widths=(8, 16), input_size=16, embed_dim=16).eval()
    res = edit_content(G, w0, G.sample_motion(1, seed=4), 'a face', clip, EditConfig(num_steps=3, id_weight=0.1),
                       torch.arange(4.), id_net=net, progress=False)
    assert res.history['id'][0] == pytest.approx(0, abs=1e-5) and len(res.history['id']) == 4


def test_edit_cli(setup, capsys, cli_error):
    d, G, _ = setup
    common = ['--network', str(d / 'G.safetensors'), '--clip-model', str(d / 'clip.json'),
              '--clip-weights', str(d / 'clip.safetensors'), '--num-frames', '6', '--steps', '4']
    assert cli_main(common + ['--prompt', 'a red ball', '--seed', '5', '--outdir', str(d / 'out')]) == 0
    assert sorted(p.name for p in (d / 'out').iterdir()) == sorted(OUTPUTS)
    edited = load_codes(d / 'out/edited_codes.safetensors')
    assert torch.equal(edited.motion_z, G.sample_motion(1, seed=5).motion_z)
    history = json.loads((d / 'out/history.json').read_text())
    assert len(history['clip']) == 5 and history['prompt'] == 'a red ball'
    # chained: the edited codes are a valid --codes input
    assert cli_main(common + ['--prompt', 'a blue ball', '--codes', str(d / 'out/edited_codes.safetensors'),
                              '--outdir', str(d / 'out2')]) == 0
    assert torch.equal(load_codes(d / 'out2/edited_codes.safetensors').motion_z, edited.motion_z)
    capsys.readouterr()

    error = lambda argv: cli_error(cli_main, argv, 'edit')

    assert 'expected a non-empty text' in error(common + ['--prompt', '  ', '--outdir', str(d / 'o1')])
    assert 'do not exist' in error(common[:4] + ['--clip-weights', str(d / 'none.safetensors'), '--prompt', 'x',
                                                 '--outdir', str(d / 'o2')])
    assert 'expected --id-weights' in error(common + ['--prompt', 'x', '--id-weight', '0.1', '--outdir', str(d / 'o3')])
    assert 'does not exist' in error(common + ['--prompt', 'x', '--codes', str(d / 'none.safetensors'), '--outdir', str(d / 'o4')])


@pytest.fixture(scope='module')
def conditional(setup):
    "A two-class tiny G (saved), codes of a class-1 video for it, and codes of the unconditional G's video."
    d, G, _ = setup
    Gc = tiny_generator(c_dim=2)
    save_checkpoint(d / 'Gc.safetensors', {'G_ema': Gc})
    with torch.no_grad(): w_c, w = Gc.sample_content(1, class_labels(Gc, 1, 1), seed=3), G.sample_content(1, seed=3)
    video = lambda G, w, class_idx=None: Projection(w, G.sample_motion(1, seed=4).motion_z, 4, torch.arange(6.), {}, class_idx=class_idx)
    save_codes(d / 'codes_c1.safetensors', video(Gc, w_c, 1))
    save_codes(d / 'codes_0.safetensors', video(G, w))
    return Gc


def test_edit_cli_renders_the_codes_class(setup, conditional, capsys, cli_error):
    d, _, clip = setup
    Gc = conditional
    common = ['--network', str(d / 'Gc.safetensors'), '--clip-model', str(d / 'clip.json'), '--clip-weights',
              str(d / 'clip.safetensors'), '--steps', '2', '--prompt', 'a red ball']
    assert cli_main(common + ['--codes', str(d / 'codes_c1.safetensors'), '--outdir', str(d / 'c_out')]) == 0
    assert load_codes(d / 'c_out/edited_codes.safetensors').class_idx == 1
    codes = load_codes(d / 'codes_c1.safetensors')
    first_clip = lambda k: edit_content(Gc, codes.ws(Gc), codes.motion(Gc), 'a red ball', clip, EditConfig(num_steps=1),
                                        codes.frame_times, progress=False, class_idx=k).history['clip'][0]
    history = json.loads((d / 'c_out/history.json').read_text())
    assert history['clip'][0] == pytest.approx(first_clip(1), abs=1e-6)    # the command edited the class-1 video ...
    assert abs(first_clip(0) - first_clip(1)) > 1e-4                       # ... not the class-0 one (measured 1e-3 apart)
    assert cli_main(common + ['--seed', '5', '--class', '0', '--outdir', str(d / 'c_seed')]) == 0
    assert load_codes(d / 'c_seed/edited_codes.safetensors').class_idx == 0
    capsys.readouterr()

    error = lambda argv: cli_error(cli_main, argv, 'edit')

    assert 'conditional (c_dim=2); expected --class K' in error(common + ['--seed', '5', '--outdir', str(d / 'e1')])
    assert 'expected 0 <= K < 2 (c_dim), got 2' in error(common + ['--seed', '5', '--class', '2', '--outdir', str(d / 'e2')])
    assert 'the codes record class 1' in error(common + ['--codes', str(d / 'codes_c1.safetensors'), '--class', '0',
                                                         '--outdir', str(d / 'e3')])
    assert 'no class, but' in error(common + ['--codes', str(d / 'codes_0.safetensors'), '--outdir', str(d / 'e4')])
    unconditional = ['--network', str(d / 'G.safetensors')] + common[2:]
    assert 'unconditional (c_dim=0); expected no class' in error(unconditional + ['--seed', '5', '--class', '0',
                                                                                  '--outdir', str(d / 'e5')])
    assert 'class 1, but' in error(unconditional + ['--codes', str(d / 'codes_c1.safetensors'), '--outdir', str(d / 'e6')])
    assert not any((d / f'e{i}').exists() for i in range(1, 7))


def test_default_clip_offline_names_file_and_place(tmp_path, monkeypatch):
    "Offline, ViT-B-32 with OpenAI's weights fails with the download helper's message: the file, and where to put it."
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path))
    try: load_clip()
    except Exception as e: msg = str(e)
    else: pytest.skip('this machine can download the CLIP weights')
    assert 'ViT-B-32.pt' in msg and str(tmp_path) in msg
