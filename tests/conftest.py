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
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def make_davis_dataset(root: Path, folder: str = "DAVIS2016", imageset: str = "ImageSets/2016/val.txt", *,
                       multi: bool = False, seqs=("alpha", "beta"), frames: int = 6,
                       size: tuple[int, int] = (48, 64)) -> dict:
    """A tiny dataset in the official DAVIS layout under ``root``, ground truth for every frame:
    flat grey JPEGs, a moving box as object 1 (DAVIS-2016: 0/255 greyscale PNGs; ``multi``:
    palette PNGs with a fixed object 2 and a void line). Returns {seq: GT ids [T, H, W]}."""
    from label_prop.data.io import write_palette_png

    sh, sw = size
    gts = {}
    (root / folder / imageset).parent.mkdir(parents=True, exist_ok=True)
    (root / folder / imageset).write_text("\n".join(seqs) + "\n")
    for s_idx, seq in enumerate(seqs):
        jpg_dir = root / folder / "JPEGImages" / "480p" / seq
        ann_dir = root / folder / "Annotations" / "480p" / seq
        jpg_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        gt = []
        for t in range(frames):
            Image.fromarray(np.full((sh, sw, 3), 40 * t, np.uint8)).save(jpg_dir / f"{t:05d}.jpg")
            ids = np.zeros((sh, sw), np.uint8)
            ids[8 + t:24 + t, 6 + 2 * t + s_idx:26 + 2 * t] = 1
            if multi:
                ids[30:44, 36:60] = 2
                ids[29, 36:60] = 255  # void line
                write_palette_png(ann_dir / f"{t:05d}.png", ids)
            else:
                Image.fromarray(ids * 255, mode="L").save(ann_dir / f"{t:05d}.png")
            gt.append(ids)
        gts[seq] = np.stack(gt)
    return gts


def copy_davis16(data_root: Path, root: Path, seqs=("blackswan",), frames: int = 6) -> Path:
    """Copy the first ``frames`` JPEGs and annotations of real DAVIS-2016 sequences into a DAVIS-2016
    layout under ``root`` (copies, so that a test may break them); returns ``root``."""
    src = require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    dst = root / "DAVIS2016"
    (dst / "ImageSets" / "2016").mkdir(parents=True)
    (dst / "ImageSets" / "2016" / "val.txt").write_text("\n".join(seqs) + "\n")
    for seq in seqs:
        for kind, ext in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            (dst / kind / "480p" / seq).mkdir(parents=True)
            for f in sorted((src / kind / "480p" / seq).glob(f"*{ext}"))[:frames]:
                shutil.copy(f, dst / kind / "480p" / seq / f.name)
    return root
