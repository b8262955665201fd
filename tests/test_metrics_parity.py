"""Parity with the original's metric pipeline (issue 11): `stylegan-v metrics` on the metric-parity fixture folder
reproduces its expected.json (FVD and FID with the stand-in detectors) from the folders and from the zips.
The folder comes from $STYLEGAN_V_METRIC_PARITY (default ../shared/metric-parity/set1); every name, count and
option is read from its expected.json.
The 2048-d FID goes through the fast symmetric-eigh square-root route here (`--frechet eigh`, ≲1e-6 relative from
scipy's sqrtm on set1); scipy's sqrtm of a 2048x2048 product takes minutes on a loaded 2-core CI machine. The
default sqrtm route is checked on the 400-d FVD (and reproduces FID to ~1e-7 when run by hand: see the report)."""
import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import need_shared

FIXTURE: Path = None  # set by the `fixture` fixture: $STYLEGAN_V_METRIC_PARITY, else <reference data>/metric-parity/set1

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::FutureWarning')


@pytest.fixture(scope='module')
def fixture():
    global FIXTURE
    FIXTURE = need_shared('metric-parity', 'set1', env='STYLEGAN_V_METRIC_PARITY')
    assert (FIXTURE / 'expected.json').is_file(), f"{FIXTURE} has no expected.json; expected a metric-parity folder (see its README)"
    exp = json.loads((FIXTURE / 'expected.json').read_text())
    args = exp['original_cli_args']
    opt = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    metrics = opt['--metrics'].split(',')
    detectors = {'i3d': FIXTURE / 'i3d_tiny.pt', 'inception': FIXTURE / 'inception_tiny.pt'}
    for name, path in detectors.items():
        assert path.is_file(), f"{path} missing from the fixture"
    return exp, opt, metrics, detectors


def run_cli(fixture, real, fake, out, extra=()):
    from stylegan_v.metrics.evaluate import cli_main
    exp, opt, metrics, detectors = fixture
    argv = ['--real', str(real), '--fake', str(fake), '--resolution', opt['--resolution'], '--metrics', ','.join(metrics),
            '--out', str(out), '--no-cache', '--device', 'cpu', '--workers', '0', *extra]
    for name, path in detectors.items(): argv += ['--detector', f'{name}={path}']
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert cli_main(argv) == 0
    return {r['metric']: r for r in map(json.loads, out.read_text().splitlines())}


def test_folders_reproduce_expected(fixture, tmp_path):
    exp, opt, metrics, detectors = fixture
    got = run_cli(fixture, FIXTURE / opt['--real_data_path'], FIXTURE / opt['--fake_data_path'], tmp_path / 'dir.jsonl', ['--frechet', 'eigh'])
    for m in metrics:
        rel = abs(got[m]['value'] - exp[m]) / abs(exp[m])
        assert rel <= 1e-5, f"{m}: {got[m]['value']} vs expected {exp[m]} (relative {rel:.2e})"
        det = got[m]['protocol']['detector']
        assert det['sha256'] == exp['detectors'][Path(detectors[det['name']]).name]['sha256']
    c = exp['counts']
    fvd = next(m for m in metrics if m.startswith('fvd'))
    fid = next(m for m in metrics if m.startswith('fid'))
    assert (got[fvd]['protocol']['num_real'], got[fvd]['protocol']['num_fake']) == (c['fvd_real_videos'], c['fvd_fake_videos'])
    assert (got[fid]['protocol']['num_real'], got[fid]['protocol']['num_fake']) == (c['fid_real_frames'], c['fid_fake_frames'])


def test_zips_reproduce_expected(fixture):
    "From the zips: FVD reproduces expected.json, and every frame the FID sides read is bit-identical to the folder's."
    from stylegan_v.metrics.evaluate import compute_metric, make_side, parse_metric
    from stylegan_v.metrics.features import frame_view
    exp, opt, metrics, detectors = fixture
    paths = {k: str(v) for k, v in detectors.items()}
    res = int(opt['--resolution'])
    real, fake = opt['--real_data_path'], opt['--fake_data_path']
    for m in metrics:
        spec = parse_metric(m)
        if spec.family == 'fvd':  # the default (scipy sqrtm) route, end to end
            r = compute_metric(m, FIXTURE / f'{real}.zip', FIXTURE / f'{fake}.zip', detectors=paths, resolution=res, cache=False,
                               fewer='allow', num_workers=0, progress=False, device='cpu')
            assert abs(r['value'] - exp['from_zip'][m]) / abs(exp['from_zip'][m]) <= 1e-5
        else:  # same frames in the same order => the same detector input, features and statistics as the folder run
            for side in (real, fake):
                a, na = frame_view(make_side(FIXTURE / side, res).source)
                b, nb = frame_view(make_side(FIXTURE / f'{side}.zip', res).source)
                assert na == nb == exp['datasets'][side]['num_frames']
                assert all(np.array_equal(a[i].numpy(), b[i].numpy()) for i in range(na))
