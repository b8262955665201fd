"""Shared pytest fixtures: where the repository and the read-only reference data live.

Reference data (the original's parity tensors and pickles) sits in $STYLEGAN_V_SHARED, else `shared/` beside the
repository. A fresh clone does not have it: tests that need it are skipped with one line naming what is missing and
how to provide it, except under CI=true, where a missing folder fails the test. Use the `shared_dir` / `parity_dir`
fixtures, or `need_shared('metric-parity', 'set1', env='STYLEGAN_V_METRIC_PARITY')` for a folder of your own.
"""
from pathlib import Path

import pytest

from stylegan_v.core import SharedDataMissing, in_ci, locate_shared

REPO_ROOT = Path(__file__).resolve().parents[1]


def need_shared(*parts: str, env: str | None = None) -> Path:
    """`$env` if set, else `<reference data>/parts`; skip the test (fail it under CI=true) when it is absent."""
    try:
        return locate_shared(*parts, env=env)
    except SharedDataMissing as e:
        if in_ci(): pytest.fail(f"{e} (CI=true: reference data is required)", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """The reference data folder: $STYLEGAN_V_SHARED, else `shared/` beside the repository (skip / CI fail when absent)."""
    return need_shared()


@pytest.fixture(scope='session')
def parity_dir(shared_dir) -> Path:
    return need_shared('parity')


@pytest.fixture
def cli_error(capsys):
    "`cli_error(cli_main, argv, 'NAME')`: the run must exit 2 with one line `stylegan-v NAME: error: ...`; returns that line."
    def run(cli_main, argv, command: str) -> str:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f'stylegan-v {command}: error:'), err
        return err
    return run


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    "The built-in dataset at 16 px, 8 videos of 16 frames (the training tests' data)."
    from stylegan_v.data.synthetic import default_synthetic_dataset
    return default_synthetic_dataset(8, 16, 16, root=tmp_path_factory.mktemp('data'))
