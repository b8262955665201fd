"""Shared pytest fixtures: where the repository and the read-only shared reference data live."""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    """The reference data folder: $STYLEGAN_V_SHARED, else `shared/` beside the repository."""
    path = Path(os.environ.get('STYLEGAN_V_SHARED', REPO_ROOT.parent / 'shared'))
    if not path.is_dir():
        pytest.fail(f"reference data folder {path} not found: set STYLEGAN_V_SHARED or place shared/ beside the repo")
    return path


@pytest.fixture(scope='session')
def parity_dir(shared_dir) -> Path:
    return shared_dir / 'parity'
