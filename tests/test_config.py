"""stylegan_v.config: every preset loads, round-trips through YAML and papermill parameters, and builds G and D;
a config and the networks' ctor kwargs convert both ways (also for the original's parity fixture)."""
import json

import pytest
import torch

from stylegan_v.config import ModelConfig, RunConfig, SamplingConfig, load_run_config, preset, preset_names
from stylegan_v.core import ConfigError
from conftest import need_shared
from stylegan_v.networks.discriminator import Discriminator
from stylegan_v.networks.generator import Generator

TINY = ['model.w_dim=16', 'model.z_dim=16', 'model.motion_z_dim=16', 'model.time_enc_dim=8', 'model.fmaps=0.015625',
        'model.channel_max=16', 'model.fp32=true', 'data.resolution=32']


def test_presets_listed():
    assert preset_names() == ['ffs', 'mead', 'rainbow_jelly', 'sky_timelapse', 'ucf101']


@pytest.mark.parametrize('name', ['ffs', 'sky_timelapse', 'ucf101', 'rainbow_jelly', 'mead'])
def test_preset_round_trips_and_builds(name, tmp_path):
    cfg = preset(name)
    assert load_run_config(cfg.save(tmp_path / 'run.yaml')) == cfg
    assert load_run_config(cfg.save(tmp_path / 'run.json')) == cfg
    assert RunConfig.from_params(cfg.to_params()) == cfg
    assert RunConfig.from_params({**cfg.to_params(), 'other_global': 1}, ignore_unknown=True) == cfg
    tiny = cfg.override(TINY)                      # the preset's own labels, sampling and time encoder, tiny widths
    G, D = Generator(**tiny.generator_kwargs()), Discriminator(**tiny.discriminator_kwargs())
    assert ModelConfig.from_network_kwargs(G.init_kwargs, D.init_kwargs).resolved(32) == tiny.model.resolved(32)
    B, F = 2, tiny.sampling.num_frames_per_video
    c = torch.zeros(B, tiny.data.c_dim)
    t = torch.tensor([[0, 2, 4], [1, 3, 9]], dtype=torch.float32)
    with torch.no_grad():
        frames = G(torch.randn(B, G.z_dim), c, t)
        logits = D(frames, c, t)['image_logits']
    assert frames.shape == (B * F, 3, 32, 32) and logits.shape == (B,)


def test_preset_values():
    assert preset('mead').data.c_dim == 77 and preset('mead').data.resolution == 1024
    sky = preset('sky_timelapse')
    assert sky.model.time_enc_min_period_len == 256
    assert sky.generator_kwargs()['cfg']['motion']['motion_z_distance'] == 256


def test_parity_fixture_kwargs_round_trip(parity_dir):
    """The original's G_ctor/D_ctor (config_a) -> ModelConfig -> the same networks, state_dict keys and shapes alike."""
    cfg = json.loads((parity_dir / 'config_a' / 'config.json').read_text())
    ctor = lambda d: {k: v for k, v in d.items() if k not in ('class_name', 'cfg')}
    G = Generator(**ctor(cfg['G_ctor']), cfg={**cfg['model_cfg']['generator'], 'sampling': cfg['sampling_cfg']})
    D = Discriminator(**ctor(cfg['D_ctor']), cfg={**cfg['model_cfg']['discriminator'], 'sampling': cfg['sampling_cfg']})
    model = ModelConfig.from_network_kwargs(G.init_kwargs, D.init_kwargs)
    data = cfg['dataset_cfg']
    sampling = SamplingConfig.from_dict({k: v for k, v in cfg['sampling_cfg'].items() if k not in ('name', 'fps', 'max_num_frames')})
    args = (data['resolution'], data['c_dim'], sampling, data['max_num_frames'], data['fps'])
    G2, D2 = Generator(**model.generator_kwargs(*args)), Discriminator(**model.discriminator_kwargs(*args))
    for ours, orig in ((G2, G), (D2, D)):
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in orig.state_dict().items()}
    G2.load_state_dict(G.state_dict()); D2.load_state_dict(D.state_dict())  # strict: same parameters and buffers


@pytest.mark.parametrize('override, message', [
    ('model.w_dimm=3', "unknown field 'model.w_dimm'"),
    ('train.batch_size=big', 'RunConfig.train.batch_size: expected an integer'),
    ('data.mirror=maybe', 'RunConfig.data.mirror: expected true/false'),
    ('sampling.type=linear', "expected one of ['random', 'uniform']"),
    ('data.c_dim=5', 'expected labels on exactly when c_dim > 0'),
])
def test_bad_override_names_the_field(override, message):
    with pytest.raises(ConfigError, match=None) as e:
        load_run_config('ffs', [override])
    assert message in str(e.value)


def test_yaml_unknown_key_names_the_field(tmp_path):
    (tmp_path / 'run.yaml').write_text('data:\n  resolutoin: 64\n')
    with pytest.raises(ConfigError) as e:
        load_run_config(tmp_path / 'run.yaml')
    assert "unknown field(s) ['resolutoin']" in str(e.value) and 'run.yaml.data' in str(e.value)


def test_mocogan_generator_kwargs_round_trip(parity_dir):
    """The MoCoGAN+SG2 generator (const input, LSTM motion, concat_w, no Fourier encoder) is a ModelConfig too."""
    cfg = json.loads((need_shared('parity', 'mocogan') / 'config.json').read_text())
    ctor = {k: v for k, v in cfg['G_ctor'].items() if k not in ('class_name', 'cfg')}
    G = Generator(**ctor, cfg={**cfg['model_cfg']['generator'], 'sampling': cfg['sampling_cfg']})
    model = ModelConfig.from_network_kwargs(G.init_kwargs)
    assert (model.input_type, model.motion_gen_strategy, model.cond_type, model.motion_fourier) == ('const', 'autoregressive', 'concat_w', False)
    sampling = SamplingConfig.from_dict({k: v for k, v in cfg['sampling_cfg'].items() if k not in ('name', 'fps', 'max_num_frames')})
    G2 = Generator(**model.generator_kwargs(ctor['img_resolution'], ctor['c_dim'], sampling, cfg['sampling_cfg']['max_num_frames']))
    G2.load_state_dict(G.state_dict())  # strict: the same parameters and buffers


def test_commented_yaml_lists_every_field_with_its_comment_and_reads_back():
    import dataclasses
    import yaml
    from stylegan_v.config import RunConfig, commented_yaml, field_comments, TrainConfig
    rc = RunConfig().override(['train.batch_size=16', 'train.memory_budget_gb=2.5'])   # eps stays 1e-8: YAML needs 1.0e-08
    text = commented_yaml(rc)
    assert RunConfig.from_dict(yaml.safe_load(text)) == rc          # a file --config reads back to the same config
    lines = text.splitlines()
    for f in dataclasses.fields(TrainConfig):                     # every field on its own line, commented where the source is
        line = next(l for l in lines if l.startswith(f'  {f.name}:'))
        assert (field_comments(TrainConfig).get(f.name) or '') in line
    assert any('memory_budget_gb: 2.5' in l and '# memory a step may take' in l for l in lines)
