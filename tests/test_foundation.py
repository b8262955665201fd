"""The workbench's foundation: README <-> index notebook, the two commands, the sync check, the download helper."""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stylegan_v.core import DownloadError, download

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import make_readme  # noqa: E402


def test_readme_is_generated_from_index_notebook():
    assert (ROOT / 'README.md').read_text() == make_readme.render(), \
        'README.md differs from nbs/index.ipynb: run python tools/make_readme.py'


def test_readme_gives_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / 'README.md').read_text()
    blocks = re.findall(r'```bash\n(.*?)```', readme, flags=re.S)
    commands = [line.split('#')[0].strip() for line in blocks[0].splitlines() if line.strip()]
    assert commands == ['bash tools/main.sh', 'bash tools/test.sh']
    ci = [l for l in (ROOT / '.ci' / 'run').read_text().splitlines() if l.strip() and not l.startswith('#')]
    assert 'bash tools/test.sh' in ci, '.ci/run must call the README test command'


def _scratch_repo(tmp_path: Path) -> Path:
    "A copy of what the sync check reads (settings.ini, nbs/, stylegan_v/, tools/) to break on purpose."
    repo = tmp_path / 'repo'
    repo.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints')
    for item in ('settings.ini', 'nbs', 'stylegan_v', 'tools'):
        src = ROOT / item
        shutil.copytree(src, repo / item, ignore=ignore) if src.is_dir() else shutil.copy2(src, repo / item)
    return repo


def _check(repo: Path):
    return subprocess.run([sys.executable, str(repo / 'tools' / 'check_sync.py')], capture_output=True, text=True)


def test_sync_check_passes_on_the_repository():
    res = _check(ROOT)
    assert res.returncode == 0, res.stderr


def test_hand_edited_py_fails_and_names_the_notebook(tmp_path):
    repo = _scratch_repo(tmp_path)
    with open(repo / 'stylegan_v' / 'core.py', 'a') as f: f.write('\nHAND_EDIT = 1\n')
    res = _check(repo)
    assert res.returncode == 1
    assert 'stylegan_v/core.py differs from what nbs/00_core.ipynb exports' in res.stderr


def test_notebook_changed_without_export_fails(tmp_path):
    repo = _scratch_repo(tmp_path)
    nb_path = repo / 'nbs' / '00_core.ipynb'
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).startswith('#| export\ndef seed_everything'))
    cell['source'] = ''.join(cell['source']) + '\n\ndef new_helper(): return 1\n'
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    res = _check(repo)
    assert res.returncode == 1
    assert 'stylegan_v/core.py' in res.stderr and 'run nbdev_export' in res.stderr


def test_unclean_notebook_fails(tmp_path):
    repo = _scratch_repo(tmp_path)
    nb_path = repo / 'nbs' / '08_cli.ipynb'
    nb = json.loads(nb_path.read_text())
    next(c for c in nb['cells'] if c['cell_type'] == 'code')['execution_count'] = 7
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    res = _check(repo)
    assert res.returncode == 1 and 'nbs/08_cli.ipynb is not clean' in res.stderr


def test_console_script_lists_commands():
    exe = Path(sys.executable).with_name('stylegan-v')
    res = subprocess.run([str(exe), '--help'], capture_output=True, text=True)
    assert res.returncode == 0 and 'info' in res.stdout


# ---- download helper -------------------------------------------------------------------------------------------

@pytest.fixture
def weights(tmp_path):
    src = tmp_path / 'i3d_torchscript.pt'
    src.write_bytes(b'tiny detector bytes')
    return src, hashlib.sha256(b'tiny detector bytes').hexdigest()


def test_download_local_path_is_used_in_place(weights):
    src, sha = weights
    assert download(src, sha256=sha) == src
    with pytest.raises(DownloadError, match='sha256 mismatch'):
        download(src, sha256='f' * 64)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        download(src.parent / 'missing.pt')


def test_download_file_url_is_cached(weights, tmp_path, monkeypatch):
    src, sha = weights
    monkeypatch.setenv('STYLEGAN_V_CACHE', str(tmp_path / 'cache'))
    path = download(src.as_uri(), sha256=sha, progress=False)
    assert path == tmp_path / 'cache' / src.name and path.read_bytes() == src.read_bytes()
    src.unlink()  # a second call is served from the cache
    assert download(src.as_uri(), sha256=sha, progress=False) == path


def test_download_wrong_checksum_leaves_nothing_in_cache(weights, tmp_path):
    src, _ = weights
    cache = tmp_path / 'cache'
    with pytest.raises(DownloadError, match='sha256 mismatch'):
        download(src.as_uri(), sha256='0' * 64, cache=cache, progress=False)
    assert not any(cache.iterdir())


def test_download_unreachable_url_names_file_and_manual_path(tmp_path):
    cache = tmp_path / 'cache'
    with pytest.raises(DownloadError) as err:
        download('http://127.0.0.1:9/detectors/inception-2015-12-05.pkl', sha256='a' * 64, cache=cache,
                 progress=False, timeout=2)
    msg = str(err.value)
    assert 'inception-2015-12-05.pkl' in msg and str(cache / 'inception-2015-12-05.pkl') in msg and 'a' * 64 in msg
    assert not any(cache.iterdir())


def test_non_editable_install_ships_the_kernels(tmp_path):
    "A wheel carries kernels/ as package data, and the op builder finds the sources inside the installed package."
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                    str(tmp_path / 'whl'), str(ROOT)], check=True, capture_output=True)
    wheel, = (tmp_path / 'whl').glob('*.whl')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(tmp_path / 'site'),
                    str(wheel)], check=True, capture_output=True)
    kernels = sorted(p.name for p in (ROOT / 'kernels').iterdir() if p.is_file())
    assert kernels and sorted(p.name for p in (tmp_path / 'site' / 'stylegan_v' / 'kernels').iterdir()) == kernels
    code = 'import stylegan_v.ops.build as b; print(b.kernels_dir())'
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True,
                         env={'PYTHONPATH': str(tmp_path / 'site'), 'PATH': '/usr/bin:/bin'}, check=True).stdout
    assert Path(out.strip()) == tmp_path / 'site' / 'stylegan_v' / 'kernels'


def test_config_round_trips_through_papermill_parameters(tmp_path):
    "A run config flattened by `to_params` goes through papermill's injected parameters cell and back, typed."
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    params = nbformat.v4.new_code_cell("model__w_dim = 512\nseed = 0\noutdir = None")
    params.metadata['tags'] = ['parameters']
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import dataclasses, json\n"
        "from stylegan_v.core import Config\n"
        "@dataclasses.dataclass\nclass Model(Config):\n    w_dim: int = 512\n"
        "@dataclasses.dataclass\nclass Run(Config):\n"
        "    model: Model = dataclasses.field(default_factory=Model)\n    seed: int = 0\n    outdir: str | None = None\n"
        "run = Run.from_params(globals(), ignore_unknown=True)\n"
        "open(outdir + '/run.json', 'w').write(json.dumps(run.to_dict()))")]
    nbformat.write(nb, tmp_path / 'template.ipynb')
    papermill = Path(sys.executable).with_name('papermill')
    res = subprocess.run([str(papermill), str(tmp_path / 'template.ipynb'), str(tmp_path / 'out.ipynb'), '-k', 'python3',
                          '-p', 'model__w_dim', '64', '-p', 'seed', '7', '-p', 'outdir', str(tmp_path), '--log-level', 'ERROR'],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / 'run.json').read_text()) == {'model': {'w_dim': 64}, 'seed': 7, 'outdir': str(tmp_path)}
