"""Training checkpoints: atomic writes, safe loading, RNG state capture (docs/method.md,
"Checkpoints and encoder files").

A training checkpoint (``<output-dir>/checkpoint.pth``) is a plain dict loadable with
``torch.load(weights_only=True)`` -- only tensors, numbers, strings, lists, tuples and dicts;
the run's arguments are stored as a plain dict, never as an ``argparse.Namespace`` (the
public code pickles the Namespace, so torch >= 2.6 needs ``weights_only=False``)::

    {
      "format": "hvc-train-v1",
      "model": HVCModel.state_dict(),          # EMA step k and K included (the public code loses k)
      "optimizer": ..., "scaler": ...,        # Adam and GradScaler states
      "step": int,                             # optimisation steps done
      "epoch": int,                            # completed epochs (step // steps_per_epoch)
      "steps_per_epoch": int, "total_steps": int,
      "sampler": {"seed", "epoch", "start"},   # data order position (see hvc.data.sampler)
      "dataset": {"kind", "length", "epoch_length", "fingerprint"},
      "rng": {"python", "numpy", "torch", "cuda"},
      "skipped_files": int,                    # unreadable images skipped so far
      "args": dict, "versions": dict,
    }

Writes are atomic: the file is written to a temporary name in the same directory, flushed,
fsynced and moved over the destination with ``os.replace``, so an interrupted save never
leaves a truncated checkpoint. The object is serialised in memory first and then written with
ordinary file writes, so that a full disk is reported as ``OSError(ENOSPC)`` naming the file
(``torch.save`` to a path reports it as ``RuntimeError: ... unexpected pos N vs M``).

Reading: :func:`load_weights_file` is the one ``torch.load`` of every weights file (training
checkpoints, encoder files, MoCo files); a file that is not one is a :class:`CheckpointError`
that names it and says what it holds instead.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from .runtime import atomic_write

PathLike = Union[str, os.PathLike]
TRAIN_FORMAT = "hvc-train-v1"
ENCODER_FORMAT = "hvc-encoder-v1"


class CheckpointError(ValueError):
    """A weights file does not hold what is needed (the message names the file)."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write` (serialised in memory, then written).

    Raises:
        OSError: the file cannot be written (``ENOSPC`` for a full disk), naming ``path``.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())

    return atomic_write(path, write)


def load_weights_file(path: PathLike, what: str = "weights file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that say what is wrong.

    Args:
        path: the file.
        what: what the caller expects, for messages (``checkpoint``, ``encoder file`` ...).

    Raises:
        FileNotFoundError: ``path`` does not exist (``WHAT not found: PATH``).
        CheckpointError: the file is not a ``torch.save`` file (e.g. text: the message quotes its
            first bytes), is truncated, or holds objects that ``weights_only`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        with open(path, "rb") as f:
            head = f.read(16)
        size = path.stat().st_size
        if head.startswith(b"PK") and not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or incomplete ({size} bytes: the start of a torch.save zip "
                                  f"archive whose end is missing, e.g. an interrupted copy or download); "
                                  f"copy it again") from None
        if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
            raise CheckpointError(f"{path}: not a PyTorch weights file (neither a torch.save zip archive nor a "
                                  f"pickle; it starts with {head!r}, {size} bytes)") from None
        if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower():
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            raise CheckpointError(
                f"{path}: not loaded: it holds Python objects that run code when unpickled"
                f"{f' ({found[1]})' if found else ''}, which a weights file never needs; if you trust its "
                f"source, save a plain state dict from it (torch.save(model.state_dict(), FILE)) or export a "
                f"training checkpoint with python -m hvc.export") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot be loaded with torch.load(weights_only=True) "
                              f"(truncated or not a weights file?): {type(exc).__name__}: {reason}") from exc


def load_checkpoint(path: PathLike, expected_format: str = TRAIN_FORMAT) -> Dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` and check its format tag.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: (a ValueError) the file is not loadable (:func:`load_weights_file`) or not
            a dict with ``"format" == expected_format`` (e.g. a raw reference checkpoint, or an
            exported encoder passed where a training checkpoint is expected); names the file.
    """
    path = Path(path)
    ckpt = load_weights_file(path, "checkpoint")
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt != expected_format:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected a {expected_format!r} checkpoint, found format {fmt!r} (keys {keys})")
    return ckpt


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (CPU) and CUDA RNG states as ``weights_only``-safe values."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states restored when CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
