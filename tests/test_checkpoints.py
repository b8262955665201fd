"""Our checkpoint format (stylegan_v.checkpoints): bit-exact round trips, conversion of original pickles, clear errors."""
import pickle

import pytest
import torch
from safetensors.torch import save_file

from stylegan_v import checkpoints
from stylegan_v.checkpoints import CheckpointError, cli_convert, load, load_checkpoint, save_checkpoint
from stylegan_v.legacy import load_network_pkl


@pytest.fixture(scope='module')
def snapshot(parity_dir):
    return load_network_pkl(parity_dir / 'config_a' / 'fixture.pkl')


@pytest.fixture(scope='module')
def inputs_a(parity_dir):
    return torch.load(parity_dir / 'config_a' / 'inputs.pt')


def _frames(G, inputs):
    with torch.no_grad():
        return G(inputs['z'], inputs['c'], inputs['t'], motion_z=inputs['motion_z'], noise_mode='const')


def _logits(D, inputs):
    with torch.no_grad():
        return D(inputs['real_img'], inputs['c'], inputs['t_D'])['image_logits']


def test_round_trip_is_bit_exact(tmp_path, snapshot, inputs_a):
    path = save_checkpoint(tmp_path / 'ckpt.safetensors', {'G_ema': snapshot['G_ema'], 'D': snapshot['D']},
                           metadata={'kimg': 0})
    back = load_checkpoint(path)
    assert back['metadata'] == {'kimg': 0}
    assert torch.equal(_frames(back['G_ema'], inputs_a), _frames(snapshot['G_ema'], inputs_a))
    assert torch.equal(_logits(back['D'], inputs_a), _logits(snapshot['D'], inputs_a))
    for name in ('G_ema', 'D'):
        a, b = snapshot[name].state_dict(), back[name].state_dict()
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(_frames(load(path), inputs_a), _frames(snapshot['G_ema'], inputs_a))


def test_convert_original_pickle(tmp_path, parity_dir, snapshot, inputs_a, capsys):
    out = tmp_path / 'converted.safetensors'
    assert cli_convert([str(parity_dir / 'config_a' / 'fixture.pkl'), str(out)]) == 0
    assert 'G_ema (Generator)' in capsys.readouterr().out
    back = load_checkpoint(out)
    assert set(back) == {'G', 'G_ema', 'D', 'augment_pipe', 'metadata'}
    assert back['metadata']['converted_from'] == 'fixture.pkl'
    assert back['metadata']['training_set_kwargs']['resolution'] == 32
    assert torch.equal(back['augment_pipe']['state_dict']['p'], snapshot['augment_pipe']['state_dict']['p'])
    G = load(out)
    outputs = torch.load(parity_dir / 'config_a' / 'outputs.pt')
    torch.testing.assert_close(_frames(G, inputs_a), outputs['frames_psi1'], atol=1e-4, rtol=1e-4)
    assert torch.equal(_frames(G, inputs_a), _frames(snapshot['G_ema'], inputs_a))
    # load() reads the original pickle directly, too
    assert torch.equal(_frames(load(parity_dir / 'config_a' / 'fixture.pkl'), inputs_a), _frames(G, inputs_a))
    # the whole CLI path, and refusal to overwrite
    from stylegan_v.cli import main
    assert main(['convert', str(parity_dir / 'config_a' / 'fixture.pkl'), str(out)]) == 2
    assert 'pass --force' in capsys.readouterr().err
    assert main(['convert', str(parity_dir / 'config_a' / 'fixture.pkl'), str(out), '--force', '--networks', 'G_ema']) == 0
    assert set(load_checkpoint(out)) == {'G_ema', 'metadata'}


def test_convert_refuses_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / 'marker'
    src = tmp_path / 'evil.pkl'
    src.write_bytes(b'\x80\x02cos\nsystem\n(V' + f'touch {marker}'.encode() + b'\ntR.')
    assert cli_convert([str(src), str(tmp_path / 'out.safetensors')]) == 2
    assert 'os.system' in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / 'out.safetensors').exists()


def test_wrong_kind_of_file(tmp_path, snapshot):
    torch.save(snapshot['G_ema'].state_dict(), tmp_path / 'state.pt')
    with pytest.raises(CheckpointError, match='torch.save / zip archive'):
        load(tmp_path / 'state.pt')
    (tmp_path / 'readme.txt').write_text('not weights')
    with pytest.raises(CheckpointError, match='looks like text'):
        load(tmp_path / 'readme.txt')
    save_file({'w': torch.zeros(3)}, tmp_path / 'foreign.safetensors')
    with pytest.raises(CheckpointError, match='not a stylegan-v checkpoint'):
        load(tmp_path / 'foreign.safetensors')
    d_only = save_checkpoint(tmp_path / 'd.safetensors', {'D': snapshot['D']})
    with pytest.raises(CheckpointError, match='holds no generator'):
        load(d_only)
    with pytest.raises(CheckpointError, match='is a directory'):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / 'missing.safetensors')


def test_weights_that_do_not_fit(tmp_path, snapshot):
    path = save_checkpoint(tmp_path / 'g.safetensors', {'G_ema': snapshot['G_ema']})
    config, tensors = checkpoints.read_checkpoint(path)
    config['networks']['G_ema']['kwargs']['w_dim'] = 32  # kwargs that no longer match the weights
    from safetensors.torch import save
    import json
    meta = {'format': checkpoints.FORMAT_NAME, 'format_version': '1', 'config': json.dumps(config)}
    (tmp_path / 'bad.safetensors').write_bytes(save(tensors, metadata=meta))
    with pytest.raises(CheckpointError, match="weights of 'G_ema' do not fit"):
        load_checkpoint(tmp_path / 'bad.safetensors')
    config['networks']['G_ema']['class'] = 'subprocess:Popen'
    meta['config'] = json.dumps(config)
    (tmp_path / 'bad2.safetensors').write_bytes(save(tensors, metadata=meta))
    with pytest.raises(CheckpointError, match='unknown network class'):
        load_checkpoint(tmp_path / 'bad2.safetensors')


def test_mocogan_round_trip_is_bit_exact(tmp_path, parity_dir):
    import json
    from stylegan_v.networks.mocogan import Discriminator
    from test_mocogan_parity import _ctor, _video_discr_weights
    d = parity_dir / 'mocogan'
    cfg = json.loads((d / 'config.json').read_text())
    inputs = torch.load(d / 'inputs.pt')
    D = Discriminator(**_ctor(cfg['D_ctor']), cfg=cfg['model_cfg']['discriminator']).eval()
    D.load_state_dict({**torch.load(d / 'D_state.pt'), **_video_discr_weights(cfg)})
    back = load_checkpoint(save_checkpoint(tmp_path / 'd.safetensors', {'D': D}))['D']
    assert type(back) is Discriminator and back.cfg['video_discr_num_t_paddings'] == 1
    for net in (D, back): net.video_discr.set_noise(False)
    with torch.no_grad():
        a, b = (net(inputs['real_img'], inputs['c'], inputs['t_D']) for net in (D, back))
    assert all(torch.equal(a[k], b[k]) for k in ('image_logits', 'video_logits'))
