"""Safe loading of the original's snapshot pickles (stylegan_v.legacy): parity with the original and refusal of code."""
import collections
import contextlib
import io
import json
import pickle
import pickletools
import sys
import types

import pytest
import torch

from stylegan_v.legacy import PersistentRecord, load_network_pkl, safe_load_pickle


# --- writing pickles the way the original's persistence does (used for crafted snapshots below) ---

_SOURCES = {'networks': 'class SynthesisNetwork(torch.nn.Module): ...\n', 'mocogan': 'class MoCoGANVideoDiscriminator: ...\n'}


@contextlib.contextmanager
def _original_names_importable():
    """While dumping, let pickle name things the way the original's pickles do: persistent classes through
    `src.torch_utils.persistence._reconstruct_persistent_obj`, and the non-persistent MoCoGAN helpers as
    `training.mocogan.Noise` / `training.mocogan.MoCoGANVideoDiscriminator` (pickled by reference)."""
    from stylegan_v.networks import mocogan
    def _reconstruct_persistent_obj(meta):
        raise AssertionError('only used as a name while dumping')
    _reconstruct_persistent_obj.__module__ = 'src.torch_utils.persistence'
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    persistence = types.ModuleType('src.torch_utils.persistence')
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    training_mocogan = types.ModuleType('training.mocogan')
    by_reference = (mocogan.Noise, mocogan.MoCoGANVideoDiscriminator)
    for cls in by_reference: setattr(training_mocogan, cls.__name__, cls)
    fake = {'src': types.ModuleType('src'), 'src.torch_utils': types.ModuleType('src.torch_utils'),
            'src.torch_utils.persistence': persistence, 'training': types.ModuleType('training'), 'training.mocogan': training_mocogan}
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    for cls in by_reference: cls.__module__ = 'training.mocogan'
    try:
        yield _reconstruct_persistent_obj
    finally:
        for cls in by_reference: cls.__module__ = mocogan.__name__
        for k, v in saved.items():
            if v is None: sys.modules.pop(k, None)
            else: sys.modules[k] = v


class _Persistent:
    def __init__(self, reconstruct, meta): self.reconstruct, self.meta = reconstruct, meta
    def __reduce__(self): return (self.reconstruct, (self.meta,))


def _as_original(module, reconstruct, source, class_name=None, init_kwargs=None):
    """Our module pickled like the original's persistent classes; torch.nn modules and the MoCoGAN helpers are pickled
    by reference, as the original does."""
    if type(module).__module__.startswith(('torch.nn.', 'training.')):
        return module  # pickled by reference, as in the original
    state = {'training': module.training, '_parameters': collections.OrderedDict(module._parameters),
             '_buffers': collections.OrderedDict(module._buffers),
             '_non_persistent_buffers_set': set(module._non_persistent_buffers_set),
             '_modules': collections.OrderedDict((k, _as_original(m, reconstruct, source)) for k, m in module._modules.items())}
    if init_kwargs is not None:
        state.update(_init_args=(), _init_kwargs=init_kwargs)
    return _Persistent(reconstruct, {'type': 'class', 'version': 6, 'module_src': source,
                                     'class_name': class_name or type(module).__name__, 'state': state})



@pytest.fixture(scope='module')
def snapshot(parity_dir):
    return load_network_pkl(parity_dir / 'config_a' / 'fixture.pkl')


@pytest.fixture(scope='module')
def parity_a(parity_dir):
    d = parity_dir / 'config_a'
    return torch.load(d / 'inputs.pt'), torch.load(d / 'outputs.pt')


def _max_diff(a, b):
    return (a - b).abs().max().item()


def test_snapshot_contents(snapshot, parity_dir):
    ref_G = torch.load(parity_dir / 'config_a' / 'G_state.pt')
    ref_D = torch.load(parity_dir / 'config_a' / 'D_state.pt')
    for name, ref in (('G', ref_G), ('G_ema', ref_G), ('D', ref_D)):
        state = snapshot[name].state_dict()
        assert sorted(state) == sorted(ref), name
        assert all(torch.equal(state[k], ref[k]) for k in ref), name
        assert not snapshot[name].training
    assert snapshot['augment_pipe']['class_name'] == 'AugmentPipe'
    assert 'p' in snapshot['augment_pipe']['state_dict']
    assert snapshot['training_set_kwargs']['resolution'] == 32
    assert snapshot['training_set_kwargs']['cfg']['sampling']['num_frames_per_video'] == 3
    assert snapshot['stats'] == {'cur_nimg': 0, 'cur_tick': 0, 'batch_idx': 0}
    assert set(snapshot['G_opt']) == {'state', 'param_groups'}


def test_fixture_generator_matches_original(snapshot, parity_a):
    inputs, outputs = parity_a
    G = snapshot['G_ema']
    z, c, t, motion_z = inputs['z'], inputs['c'], inputs['t'], inputs['motion_z']
    with torch.no_grad():
        ws = G.mapping(z, c)
        ws07 = G.mapping(z, c, truncation_psi=0.7)
        frames = G(z, c, t, motion_z=motion_z, noise_mode='const')
        frames07 = G(z, c, t, truncation_psi=0.7, motion_z=motion_z, noise_mode='const')
        frames_rng = G(z, c, t, motion_z=outputs['motion_z_rng4321'], noise_mode='const')
        frames_for_D = G(z, c, inputs['t_D'], motion_z=motion_z, noise_mode='const')
    torch.testing.assert_close(ws, outputs['ws'], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ws07, outputs['ws_psi0.7'], atol=1e-5, rtol=1e-5)
    for got, key in ((frames, 'frames_psi1'), (frames07, 'frames_psi0.7'), (frames_rng, 'frames_psi1_rng4321'),
                     (frames_for_D, 'frames_for_D')):
        torch.testing.assert_close(got, outputs[key], atol=1e-4, rtol=1e-4, msg=lambda m: f'{key}: {m}')
    print('max |diff| frames_psi1', _max_diff(frames, outputs['frames_psi1']), 'ws', _max_diff(ws, outputs['ws']))


def test_fixture_discriminator_matches_original(snapshot, parity_a):
    inputs, outputs = parity_a
    D = snapshot['D']
    c = inputs['c']
    with torch.no_grad():
        real = D(inputs['real_img'], c, inputs['t_D'])['image_logits']
        fake = D(outputs['frames_for_D'], c, inputs['t_D'])['image_logits']
        frac = D(inputs['real_img'], c, inputs['t_D_frac'])['image_logits']
    for got, key in ((real, 'D_real.image_logits'), (fake, 'D_fake.image_logits'), (frac, 'D_real_tfrac.image_logits')):
        torch.testing.assert_close(got, outputs[key], atol=1e-5, rtol=1e-5, msg=lambda m: f'{key}: {m}')
    print('max |diff| D_real', _max_diff(real, outputs['D_real.image_logits']))


def _global_call_pickle(module: str, name: str, arg, protocol: int) -> bytes:
    """A pickle that calls module.name(arg) when loaded: protocol 0 uses GLOBAL, protocol 4 STACK_GLOBAL."""
    if protocol == 0:
        return f'c{module}\n{name}\n(V{arg}\ntR.'.encode()
    parts = [b'\x80\x04', pickle.SHORT_BINUNICODE + bytes([len(module)]) + module.encode(),
             pickle.SHORT_BINUNICODE + bytes([len(name)]) + name.encode(), pickle.STACK_GLOBAL,
             pickle.BINUNICODE + len(arg.encode()).to_bytes(4, 'little') + arg.encode(), pickle.TUPLE1, pickle.REDUCE, pickle.STOP]
    return b''.join(parts)


@pytest.mark.parametrize('protocol', [0, 4])
@pytest.mark.parametrize('module,name,make_arg', [
    ('os', 'system', lambda p: f'touch {p}'),
    ('builtins', 'eval', lambda p: f"open({str(p)!r}, 'w').close()"),
    ('builtins', 'exec', lambda p: f"open({str(p)!r}, 'w').close()"),
    ('subprocess', 'Popen', lambda p: f'touch {p}'),
    ('posix', 'system', lambda p: f'touch {p}'),
])
def test_malicious_globals_are_refused(tmp_path, module, name, make_arg, protocol):
    marker = tmp_path / 'marker'
    payload = _global_call_pickle(module, name, make_arg(marker), protocol)
    pickletools.dis(payload, out=io.StringIO())  # the payload is well-formed
    path = tmp_path / 'network-snapshot-000000.pkl'
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=f'{module}.{name}'):
        load_network_pkl(path)
    assert not marker.exists()


def test_payload_check_really_runs_with_plain_pickle(tmp_path):
    """The marker check is meaningful: the same bytes given to pickle.loads do create the file."""
    marker = tmp_path / 'marker'
    pickle.loads(_global_call_pickle('builtins', 'eval', f"open({str(marker)!r}, 'w').close()", 4))
    assert marker.exists()


def test_embedded_module_source_is_not_executed(tmp_path):
    """A persistent object carries source code that the original loader would exec; we only record it."""
    marker = tmp_path / 'marker'
    source = f"open({str(marker)!r}, 'w').close()\nclass SynthesisNetwork: pass\n"
    with _original_names_importable() as reconstruct:
        payload = pickle.dumps({'G': _Persistent(reconstruct, {
            'type': 'class', 'version': 6, 'class_name': 'Generator', 'module_src': source,
            'state': {'_parameters': {}, '_buffers': {}, '_modules': {}}})}, protocol=4)
    record = safe_load_pickle(io.BytesIO(payload))['G']
    assert isinstance(record, PersistentRecord)
    assert (record.class_name, record.source_module) == ('Generator', 'networks')
    assert not marker.exists()
    exec(source)  # the check is meaningful: running the embedded source does create the marker
    assert marker.exists()


def test_nested_malicious_global_is_refused(tmp_path):
    """A forbidden global deep inside otherwise valid snapshot data is still refused."""
    marker = tmp_path / 'marker'
    inner = _global_call_pickle('os', 'system', f'touch {marker}', 0)[:-1]  # without STOP
    payload = b'(dp0\nVG\np1\n' + inner + b'\ns.'
    with pytest.raises(pickle.UnpicklingError, match='os.system'):
        safe_load_pickle(io.BytesIO(payload))
    assert not marker.exists()


def test_not_a_snapshot(tmp_path):
    path = tmp_path / 'list.pkl'
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match='expected a snapshot dict'):
        load_network_pkl(path)


def test_mocogan_snapshot_round_trip(tmp_path, parity_dir):
    from stylegan_v.networks.generator import Generator
    from stylegan_v.networks.mocogan import Discriminator
    from test_mocogan_parity import _ctor, _video_discr_weights
    d = parity_dir / 'mocogan'
    cfg = json.loads((d / 'config.json').read_text())
    inputs, outputs = torch.load(d / 'inputs.pt'), torch.load(d / 'outputs.pt')
    G_kwargs = {**_ctor(cfg['G_ctor']), 'mapping_kwargs': {'num_layers': 2, 'cfg': {}},  # the original repeats cfg here
                'cfg': {**cfg['model_cfg']['generator'], 'sampling': cfg['sampling_cfg'], 'c_dim': 0}}
    D_kwargs = {**_ctor(cfg['D_ctor']), 'cfg': cfg['model_cfg']['discriminator']}
    G = Generator(**{**G_kwargs, 'mapping_kwargs': {'num_layers': 2}})
    G.load_state_dict(torch.load(d / 'G_state.pt'))
    D = Discriminator(**D_kwargs)
    D.load_state_dict({**torch.load(d / 'D_state.pt'), **_video_discr_weights(cfg)})
    with _original_names_importable() as reconstruct:
        snapshot = {'G_ema': _as_original(G, reconstruct, _SOURCES['networks'], 'Generator', G_kwargs),
                    'D': _as_original(D, reconstruct, _SOURCES['mocogan'], 'Discriminator', D_kwargs),
                    'stats': {'cur_nimg': 1000}}
        path = tmp_path / 'network-snapshot-000001.pkl'
        path.write_bytes(pickle.dumps(snapshot, protocol=4))
    loaded = load_network_pkl(path)
    assert loaded['G'] is None and loaded['stats'] == {'cur_nimg': 1000}
    with torch.no_grad():
        frames = loaded['G_ema'](inputs['z'], inputs['c'], inputs['t'], motion_z=inputs['motion_z'], noise_mode='const')
        loaded['D'].video_discr.set_noise(False)
        logits = loaded['D'](inputs['real_img'], inputs['c'], inputs['t_D'])
    torch.testing.assert_close(frames, outputs['frames_psi1'], atol=1e-4, rtol=1e-4)
    for part in ('image_logits', 'video_logits'):
        torch.testing.assert_close(logits[part], outputs[f'D_real.{part}'], atol=1e-5, rtol=1e-5)
