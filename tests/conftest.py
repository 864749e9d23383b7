"""Shared pytest fixtures: where the real datasets are, and the rule for when they are missing.

The data root is ``$HVC_DATA_ROOT`` (a relative value is taken from the current directory, else
from the repository root, so ``HVC_DATA_ROOT=../shared/data`` works when pytest runs from the
repo root), else ``<repo>/../shared/data``.

Tests that read the real data are marked ``@pytest.mark.data`` and get their paths from the
``data_root`` fixture (and :func:`require_data` for sub-folders). When the data is missing they
**fail** if the environment variable ``CI`` is set (CI must always run them) and are skipped
otherwise (developer machines without the data).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True when the environment variable ``CI`` is set (to anything non-empty)."""
    return bool(os.environ.get("CI"))


def resolve_data_root() -> Path:
    """The data root: ``$HVC_DATA_ROOT`` if set, else ``<repo>/../shared/data`` (absolute)."""
    env = os.environ.get("HVC_DATA_ROOT")
    if env:
        path = Path(env).expanduser()
        if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
            path = REPO_ROOT / path
        return path.resolve()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def require_data(path: str | os.PathLike, what: str = "real data") -> Path:
    """Return ``path`` if it exists; else fail (``CI`` set) or skip the calling test.

    Use it inside tests or fixtures for sub-folders of the data root, e.g.
    ``require_data(data_root / "DAVIS2016", "DAVIS-2016 val")``.
    """
    path = Path(path)
    if not path.exists():
        msg = f"{what} not found at {path} (set $HVC_DATA_ROOT to the shared data folder)"
        if in_ci():
            pytest.fail(f"{msg}; CI is set, so tests marked 'data' must run", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root (absolute Path); fails under CI, skips elsewhere, when it is missing."""
    return require_data(resolve_data_root(), "data root")


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test (restored after): on a machine whose cores are busy,
    two threads are up to ~10x slower for these small inputs (thread hand-offs, not compute)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
