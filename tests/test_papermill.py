"""The papermill templates (nbs/runs/) take their parameters through the `papermill` command line, refuse unknown
ones, and `stylegan-v train --notebook` reads paths in the caller's folder and fails in one line; all from a folder
other than the repository, with relative paths, at toy sizes."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from papermill.translators import PythonTranslator

from stylegan_v.data.synthetic import default_synthetic_dataset
from stylegan_v.metrics.detectors import StandInVideoDetector, save_standin
from stylegan_v.notebooks import assigned_names
from stylegan_v.train import demo_train_config

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / 'nbs' / 'runs').glob('*.ipynb'))
BIN = Path(sys.executable).parent
QUICK = ['train.batch_size=4', 'train.kimg_per_tick=0.012', 'train.grid_videos=2', 'train.grid_frames=2', 'train.progress=false']


def run(cmd: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
    return subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:])], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def workdir(tmp_path):
    "A user's folder: the built-in data as `data.zip` and a tiny base config `base.yaml` naming it by a relative path."
    default_synthetic_dataset(8, 16, 16, root=tmp_path / 'made').rename(tmp_path / 'data.zip')
    rc = demo_train_config('data.zip', resolution=16, kimg=0.012, channels=16).override(QUICK)
    (tmp_path / 'base.yaml').write_text(yaml.safe_dump(rc.to_dict()))
    return tmp_path


def test_every_template_has_one_tagged_parameters_cell_first():
    settings = (REPO / 'settings.ini').read_text()
    assert 'allowed_cell_metadata_keys = tags' in settings   # else nbdev_clean drops the tag (the sync check runs nbdev_clean)
    assert {t.name for t in TEMPLATES} >= {'train.ipynb', 'evaluate.ipynb', 'sweep_summary.ipynb'}
    for t in TEMPLATES:
        code = [c for c in json.loads(t.read_text())['cells'] if c['cell_type'] == 'code']
        tagged = [i for i, c in enumerate(code) if 'parameters' in c['metadata'].get('tags', [])]
        assert tagged == [0], f'{t.name}: the first code cell, and only it, must carry the parameters tag'
        assert 'check_parameters()' in ''.join(code[1]['source']), f'{t.name}: the cell after the parameters must check them'
        seen_by_papermill = [p.name for p in PythonTranslator.inspect({'source': ''.join(code[0]['source'])})]   # a '=' in a comment hides a line from it
        assert seen_by_papermill == assigned_names(''.join(code[0]['source'])), f'{t.name}: papermill does not see every parameter'


@pytest.mark.parametrize('template', TEMPLATES, ids=lambda p: p.stem)
def test_unknown_parameter_is_an_error_in_one_line(tmp_path, template):
    res = run(['papermill', os.path.relpath(template, tmp_path), 'out.ipynb', '-p', 'nosuch_name', '1', '-k', 'python3'], tmp_path)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("UsageError: unknown parameter nosuch_name; this template's parameters are: "), res.stderr[-2000:]


def test_train_template_takes_its_parameters(workdir):
    res = run(['papermill', os.path.relpath(REPO / 'nbs/runs/train.ipynb', workdir), 'run1.ipynb', '-k', 'python3',
               '-p', 'data', 'data.zip', '-p', 'outdir', 'run1', '-p', 'config', 'base.yaml',
               '-p', 'overrides', 'train.kimg=0.024 train.lr=0.002'], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    rc = json.loads((workdir / 'run1' / 'run.json').read_text())['run_config']
    assert (rc['data']['path'], rc['train']['lr'], rc['train']['kimg']) == ('data.zip', 0.002, 0.024)
    assert [json.loads(l)['kimg'] for l in (workdir / 'run1' / 'stats.jsonl').read_text().splitlines()][-1] == 0.024
    assert (workdir / 'run1' / 'training.png').is_file()


def test_evaluate_template_takes_its_parameters(tmp_path):
    "A small FVD between two synthetic sets with a stand-in I3D: every value differs from the template's defaults."
    default_synthetic_dataset(8, 8, 16, seed=0, root=tmp_path / 'made').rename(tmp_path / 'real.zip')
    default_synthetic_dataset(8, 8, 16, seed=1, root=tmp_path / 'made').rename(tmp_path / 'fake.zip')
    i3d = save_standin(StandInVideoDetector(), tmp_path / 'i3d.pt')
    res = run(['papermill', os.path.relpath(REPO / 'nbs/runs/evaluate.ipynb', tmp_path), 'eval.ipynb', '-k', 'python3',
               '-p', 'metrics', 'fvd8_4f', '-p', 'real', 'real.zip', '-p', 'fake', 'fake.zip', '-y', 'detectors: {i3d: i3d.pt}',
               '-p', 'out', 'results.jsonl', '-p', 'cache', 'False', '-p', 'num_workers', '0', '-p', 'resolution', '16'], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (r,) = [json.loads(l) for l in (tmp_path / 'results.jsonl').read_text().splitlines()]
    assert r['metric'] == 'fvd8_4f' and r['value'] > 0, r
    assert (r['protocol']['num_real'], r['protocol']['num_fake']) == (8, 8), r['protocol']
    assert r['protocol']['detector']['sha256'] == hashlib.sha256(i3d.read_bytes()).hexdigest()


def test_train_notebook_reads_relative_paths_and_fails_in_one_line(workdir):
    (workdir / 'empty').mkdir()                                       # a folder without videos: found, but not a dataset
    cmd = ['stylegan-v', 'train', '--notebook', '--config', 'base.yaml', '--outdir', 'nbrun']
    res = run(cmd + ['--data', 'empty'], workdir)
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith('stylegan-v train: error: nbs/runs/train.ipynb failed in cell ['), err
    assert 'DatasetError: ' in err and 'no frames or video files found' in err and err.endswith('(open nbrun/train.ipynb)'), err
    assert (workdir / 'nbrun' / 'train.ipynb').is_file()
    res = run(cmd + ['--data', 'data.zip'], workdir)                  # the corrected command is not blocked
    assert res.returncode == 0, res.stderr[-3000:]
    assert (workdir / 'nbrun' / 'training.png').is_file() and list((workdir / 'nbrun').glob('network-snapshot-*.safetensors'))
    assert json.loads((workdir / 'nbrun' / 'run.json').read_text())['run_config']['data']['path'] == str(workdir / 'data.zip')
