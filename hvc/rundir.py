"""The run directory of :func:`hvc.trainer.train` (``--output-dir``; written by rank 0 only): which
run it holds and whether to continue it, the training checkpoint, the log and the run record.

Files (the module docstring of :mod:`hvc.train` says what each holds): ``checkpoint.pth``
(:func:`save_checkpoint`), ``snapshots/step-XXXXX.pth``, ``log.csv`` and ``tb/``
(:class:`RunLogger`), ``run.json`` (:func:`write_run_record`), ``ytvos.csv`` (a scanned video
index). Every file is written atomically (:func:`hvc.runtime.atomic_write`); temporaries of
killed runs are removed when a run starts (:func:`prepare_output_dir`).
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from . import __version__
from .checkpoint import TRAIN_FORMAT, atomic_torch_save, capture_rng_state
from .config import TrainConfig
from .data.images import TwoViewDataset
from .data.sampler import EpochSampler
from .model import HVCModel
from .errors import UsageError
from .runtime import atomic_write, clean_stale_temporaries

CHECKPOINT_NAME = "checkpoint.pth"
LOG_NAME = "log.csv"
RUN_NAME = "run.json"
SNAPSHOT_DIR = "snapshots"
TENSORBOARD_DIR = "tb"
LOG_FIELDS = ("step", "epoch", "loss", "spatial", "temporal", "num_pos", "no_pos_frac", "momentum", "lr",
              "images_per_s", "peak_mem_mib", "skipped_total", "elapsed_s")
#: Settings that must agree between a checkpoint and the run resuming it (they define the
#: schedule, the data and the loss); keys of :meth:`TrainConfig.to_dict`.
RESUME_MUST_MATCH = ("mode", "batch_size", "img_size", "seed", "clip_len", "frame_rate", "clips_per_video",
                     "pos_radius", "ema_base", "loss_impl", "normalization", "lr", "crop_scale", "spatial_weight",
                     "temporal_weight")


def is_previous_run(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a checkpoint, log or run record of a run."""
    return any((out_dir / n).exists() for n in (CHECKPOINT_NAME, LOG_NAME, RUN_NAME))


def prepare_output_dir(config: TrainConfig) -> tuple[Path, Optional[Path]]:
    """Create the output directory (``config.output_dir``) and decide which checkpoint to resume
    from (``config.resume``, ``config.overwrite``).

    Returns:
        ``(out_dir, resume_path or None)``.

    ``--resume auto`` in a directory whose run stopped before its first checkpoint (a log or
    run.json, no checkpoint) starts that run again from step 0: there is nothing to continue
    from, and it says so. Temporary files of killed runs are removed first
    (:func:`hvc.runtime.clean_stale_temporaries`).

    Raises:
        FileExistsError: ``DIR`` holds another run and neither ``--resume`` (of that run's own
            checkpoint) nor ``--overwrite`` was given (never silently overwrite a run).
        FileNotFoundError: ``--resume PATH`` does not exist.
    """
    out_dir = Path(config.output_dir)
    for folder in (out_dir, out_dir / SNAPSHOT_DIR):
        clean_stale_temporaries(folder, "hvc.train")
    resume: Optional[Path] = None
    if config.resume is not None:
        if config.resume == "auto":
            cand = out_dir / CHECKPOINT_NAME
            resume = cand if cand.is_file() else None
            if resume is None and is_previous_run(out_dir):
                restart_without_checkpoint(out_dir)
        else:
            resume = Path(config.resume)
            if not resume.is_file():
                raise FileNotFoundError(f"--resume {config.resume}: checkpoint not found")
    foreign = resume is not None and resume.resolve() != (out_dir / CHECKPOINT_NAME).resolve()
    if (resume is None or foreign) and is_previous_run(out_dir):
        if not config.overwrite:
            raise FileExistsError(f"{out_dir} already holds a training run ({CHECKPOINT_NAME}/{LOG_NAME}/{RUN_NAME}); "
                                  f"use --resume auto to continue it, --overwrite to replace it, or another --output-dir")
        for name in (CHECKPOINT_NAME, LOG_NAME, RUN_NAME, "ytvos.csv"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / TENSORBOARD_DIR, ignore_errors=True)
        shutil.rmtree(out_dir / SNAPSHOT_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, resume


def restart_without_checkpoint(out_dir: Path) -> None:
    """``--resume auto`` of a run that stopped before its first checkpoint: drop its log rows and
    run.json (they describe steps whose weights were never saved) and say so; the run starts at 0."""
    log = out_dir / LOG_NAME
    rows = 0
    if log.is_file():
        with open(log, newline="") as f:
            rows = max(sum(1 for _ in f) - 1, 0)
    print(f"hvc.train: {out_dir} holds a run that stopped before its first checkpoint ({CHECKPOINT_NAME} was never "
          f"written; {rows} log rows): nothing to continue from, starting it again at step 0", file=sys.stderr)
    for name in (LOG_NAME, RUN_NAME):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / TENSORBOARD_DIR, ignore_errors=True)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], [r for r in rows[1:] if r and int(r[0]) <= step]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(body)
    atomic_write(path, write)


class RunLogger:
    """CSV (always) and TensorBoard (when installed and enabled) scalar logging.

    A log written with other columns (an older version) is rewritten with :data:`LOG_FIELDS`
    first (missing values empty)."""

    def __init__(self, out_dir: Path, tensorboard: bool):
        self.path = out_dir / LOG_NAME
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                old = list(reader)
                header = tuple(reader.fieldnames or ())
            if header != LOG_FIELDS:
                def rewrite(tmp: Path) -> None:
                    with open(tmp, "w", newline="") as f:
                        w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
                        w.writeheader()
                        w.writerows(old)
                atomic_write(self.path, rewrite)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
        if new:
            self.writer.writeheader()
            self.file.flush()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / TENSORBOARD_DIR))
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    def log(self, row: Dict[str, Any]) -> None:
        """Append ``row`` (OSError names the log file, e.g. on a full disk)."""
        try:
            self.writer.writerow(row)
            self.file.flush()
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.path)
            raise
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        """Close the CSV file and the TensorBoard writer."""
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def write_run_record(out_dir: Path, record: Dict[str, Any]) -> None:
    """Write ``run.json`` (indented JSON) atomically."""
    atomic_write(out_dir / RUN_NAME, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))


def save_checkpoint(path: Path, *, model: HVCModel, optimizer, scaler, step: int, steps_per_epoch: int,
                    total_steps: int, sampler: EpochSampler, dataset: TwoViewDataset, skipped: int,
                    config: TrainConfig, world_size: int = 1, train_time_s: float = 0.0,
                    replica_max_abs_diff: float = 0.0) -> None:
    """Write the training checkpoint atomically (layout: :mod:`hvc.checkpoint`, plus
    ``world_size``, ``train_time_s`` and ``replica_max_abs_diff``, see :mod:`hvc.train`; ``args``
    is :meth:`TrainConfig.to_dict`). ``model`` is the plain :class:`HVCModel` (not its DDP wrapper).

    Raises:
        OSError: the write failed (the previous file at ``path`` is kept).
    """
    epoch, pos = divmod(step, steps_per_epoch)
    ckpt = {
        "format": TRAIN_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "steps_per_epoch": int(steps_per_epoch),
        "total_steps": int(total_steps),
        "sampler": {"seed": sampler.seed, "epoch": int(epoch), "start": int(pos * config.batch_size)},
        "dataset": {"kind": config.mode, "length": dataset.num_items(), "epoch_length": dataset.epoch_length(),
                    "fingerprint": dataset.fingerprint()},
        "rng": capture_rng_state(),
        "skipped_files": int(skipped),
        "world_size": int(world_size),
        "train_time_s": float(train_time_s),
        "replica_max_abs_diff": float(replica_max_abs_diff),
        "args": config.to_dict(),
        "versions": {"hvc": __version__, "torch": str(torch.__version__), "python": platform.python_version()},
    }
    atomic_torch_save(ckpt, path)


def save_failed(exc: OSError, step: int, ckpt_path: Path, saved: Optional[int]) -> OSError:
    """``exc`` (a failed checkpoint or snapshot write) with what the directory still holds and how
    to continue appended to its cause (:func:`hvc.runtime.describe_os_error` prints it)."""
    kept = (f"{ckpt_path} holds step {saved}, continue from it with --resume auto" if saved is not None
            else "no checkpoint of this run was written yet")
    code = exc.errno if exc.errno is not None else next((a for a in exc.args[:1] if isinstance(a, int)), 0)
    cause = exc.strerror or (os.strerror(code) if code else str(exc))
    err = type(exc)(code, f"{cause} while saving step {step}; {kept}", exc.filename)
    err.__cause__ = exc
    return err


def check_resume(ckpt: Dict[str, Any], config: TrainConfig, dataset: TwoViewDataset, total_steps: int,
                 path: Path, world_size: int = 1) -> None:
    """Refuse to resume a checkpoint of a different run: the settings of :data:`RESUME_MUST_MATCH`,
    the dataset's item list, the total steps and the world size must agree.

    Raises:
        UsageError: they differ (the message names every difference).
    """
    old, now = ckpt.get("args", {}), config.to_dict()
    diffs = [f"--{k.replace('_', '-')}: checkpoint {old.get(k)!r} vs now {now[k]!r}"
             for k in RESUME_MUST_MATCH if k in old and old.get(k) != now[k]]
    if ckpt["dataset"]["fingerprint"] != dataset.fingerprint():
        diffs.append("the dataset's item list differs (data root, index or image folders changed)")
    if int(ckpt["total_steps"]) != total_steps:
        diffs.append(f"total steps: checkpoint {ckpt['total_steps']} vs now {total_steps} (--steps/--epochs)")
    old_world = int(ckpt.get("world_size", 1))
    if old_world != world_size:
        diffs.append(f"world size: the checkpoint was trained by {old_world} process(es), this run has {world_size}; "
                     f"resume with the same number (torchrun --nproc_per_node x --nnodes = {old_world}): each rank's "
                     f"BatchNorm batch and data slice depend on it")
    if diffs:
        raise UsageError(f"cannot resume {path}: it belongs to a different run configuration:\n  " + "\n  ".join(diffs))
