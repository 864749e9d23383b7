"""The HVC training loop: :func:`train` runs or resumes the run that a :class:`hvc.config.TrainConfig`
describes, on one CPU or GPU or as one rank of a ``torchrun`` run (Pei et al., arXiv 2404.13505;
docs/method.md, "Training data" to "Checkpoints and encoder files"). ``python -m hvc.train`` is
its command line; the files it writes are described there and handled by :mod:`hvc.rundir`.

One session: :func:`_setup` (device, precision, run directory, data, schedule, seeds, model and
optimiser), :func:`_resume` (from a checkpoint), :func:`_announce` (what the run is, in one
line), then :func:`_loop`: :func:`_train_step`, a log row every ``log_every`` steps
(:class:`hvc.progress.Progress`), and :func:`_checkpoint_if_due` / :func:`_checkpoint`.
"""
from __future__ import annotations

import math
import platform
import random
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import load_checkpoint, restore_rng_state
from .config import TrainConfig
from .tables import NORMALIZATION
from .data.images import StaticImageDataset, TwoViewDataset, pick_image_sets
from .data.sampler import EpochSampler
from .data.video import VideoFrameDataset
from .distributed import (all_sum_int, rank0_decides, rank0_first, replica_max_abs_diff, say, setup_distributed,
                          wrap_model)
from .launch import DistContext, dist_context_from_env
from .model import HVCModel
from .output_lock import hold_output
from .progress import Progress, peak_mem_mib
from .rundir import (CHECKPOINT_NAME, LOG_NAME, SNAPSHOT_DIR, RunLogger, check_resume, prepare_output_dir,
                     save_checkpoint, save_failed, truncate_log, write_run_record)
from .errors import UsageError
from .runtime import atomic_write, git_revision
from .step import (Precision, batch_to_device, default_workers, forward_backward, make_loader, make_optimizer,
                   resolve_precision)


@dataclass(frozen=True)
class Schedule:
    """The steps of a run: ``steps_per_epoch`` (complete global batches per epoch),
    ``total_steps`` (the schedule's length K, which the EMA momentum follows) and ``stop_at``
    (the step this session stops after, <= ``total_steps``)."""

    steps_per_epoch: int
    total_steps: int
    stop_at: int


@dataclass(eq=False)
class _Run:
    """A run being trained: what :func:`_setup` builds, and the counters the loop advances."""

    config: TrainConfig
    ctx: DistContext
    device: torch.device
    precision: Precision
    out_dir: Path
    resume_path: Optional[Path]
    dataset: TwoViewDataset
    schedule: Schedule
    workers: int                  # data-loader processes of this rank
    model: HVCModel               # the plain model (checkpoints, EMA update)
    net: nn.Module                # what the step calls: the model or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: EpochSampler
    step: int = 0                 # optimisation steps done, all sessions
    train_time: float = 0.0       # seconds spent training, all sessions
    skipped_base: int = 0         # unreadable files skipped before this session (rank 0; 0 elsewhere)
    skipped_local: int = 0        # unreadable files this rank skipped in this session
    saved_step: Optional[int] = None  # the step checkpoint.pth holds (for the message when a save fails)
    ips_history: List[float] = field(default_factory=list)  # images/s of each log row
    record: Dict[str, Any] = field(default_factory=dict)    # run.json (rank 0 writes it)

    @property
    def ckpt_path(self) -> Path:
        """The run's checkpoint file."""
        return self.out_dir / CHECKPOINT_NAME


def train(config: TrainConfig, ctx: Optional[DistContext] = None) -> Dict[str, Any]:
    """Run (or resume) training as described by ``config``.

    Args:
        config: the run's settings (validated when it was built).
        ctx: this process's place in a distributed run (default: from the environment,
            :func:`hvc.distributed.dist_context_from_env`); the process group is created when needed.

    Returns:
        ``{"step", "epoch", "loss", "output_dir", "checkpoint", "skipped", "wall_s",
        "images_per_s", "peak_mem_mib", "precision", "world_size"}`` of the last step run
        (``loss`` is None when no step was run).

    Raises:
        FileExistsError, FileNotFoundError, ValueError (UsageError included): see
        :func:`hvc.rundir.prepare_output_dir`, :func:`build_dataset`, :func:`hvc.rundir.check_resume`,
        :func:`hvc.runtime.resolve_device`; OSError: a checkpoint or log write failed (the message
        says which step the kept checkpoint holds); FloatingPointError: a non-finite loss or weights.
    """
    t_start = time.time()
    ctx = dist_context_from_env() if ctx is None else ctx
    with ExitStack() as locks:
        return _train(config, ctx, locks, t_start)


def _train(config: TrainConfig, ctx: DistContext, locks: ExitStack, t_start: float) -> Dict[str, Any]:
    """:func:`train`; rank 0 enters the lock of the output folder into ``locks``."""
    run = _setup(config, ctx, locks)
    if run.resume_path is not None:
        _resume(run)
    _announce(run)
    run.record = _run_record(run)
    if ctx.is_main:
        write_run_record(run.out_dir, run.record)
    logger = RunLogger(run.out_dir, config.tensorboard) if ctx.is_main else None
    progress = Progress(config, ctx, run.device, run.schedule.steps_per_epoch, run.schedule.stop_at, run.step,
                        logger, run.ips_history, t_start)
    _loop(run, progress)
    if rank0_decides(not run.ckpt_path.is_file(), ctx, run.device):  # e.g. --stop-at 0: the untrained network,
        _checkpoint(run, snapshot=False)                              # for learning curves
    return _finish(run, progress.last_loss, t_start)


def _setup(config: TrainConfig, ctx: DistContext, locks: ExitStack) -> _Run:
    """Device and process group, precision, run directory, data, schedule, seeds, model, optimiser.

    Rank 0 takes the lock of the output folder (:func:`hvc.output_lock.hold_output`, held until
    ``locks`` closes) before it looks at the folder: a second training on the same folder fails at
    once, naming the running one.

    Raises:
        UsageError: the batch is not a multiple of the world size, or ``sync_bn`` without CUDA;
            see :func:`train` for the rest.
    """
    if config.batch_size % ctx.world_size:
        raise UsageError(f"--batch-size {config.batch_size} (the global batch) must be a multiple of the world size "
                         f"{ctx.world_size}")
    device = setup_distributed(config.device, ctx)
    precision = resolve_precision(device, config.amp, config.amp_dtype, config.channels_last)
    if config.sync_bn and device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    def lock_and_prepare():
        locks.enter_context(hold_output(config.output_dir, "hvc.train", tag="train"))
        return prepare_output_dir(config)

    out_dir, resume_path = rank0_first(ctx, lock_and_prepare, others=False)
    dataset = rank0_first(ctx, lambda: build_dataset(config, out_dir))  # rank 0 writes the scanned index
    schedule = make_schedule(config, dataset)
    workers = default_workers(device, ctx) if config.workers is None else config.workers
    _seed(config, device)
    model = HVCModel(schedule.total_steps, pos_radius=config.pos_radius, ema_base=config.ema_base,
                     loss_impl=config.loss_impl, spatial_weight=config.spatial_weight,
                     temporal_weight=config.temporal_weight).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = wrap_model(model, device, ctx, sync_bn=config.sync_bn)
    optimizer = make_optimizer(model, config.lr, device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.grad_scaler)
    sampler = EpochSampler(dataset, config.seed, rank=ctx.rank, world_size=ctx.world_size,
                           batch_size=config.batch_size)
    return _Run(config, ctx, device, precision, out_dir, resume_path, dataset, schedule, workers, model, net,
                optimizer, scaler, sampler)


def make_schedule(config: TrainConfig, dataset: TwoViewDataset) -> Schedule:
    """The :class:`Schedule` of ``config`` on ``dataset``: ``steps`` or ``epochs`` x steps per
    epoch, stopping at ``stop_at`` when given.

    Raises:
        ValueError: one epoch holds fewer items than one batch (names the data root).
    """
    steps_per_epoch = dataset.epoch_length() // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{config.data}: one epoch has {dataset.epoch_length()} items, fewer than --batch-size "
                         f"{config.batch_size}")
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    stop_at = min(total_steps, config.stop_at) if config.stop_at is not None else total_steps
    return Schedule(steps_per_epoch, total_steps, stop_at)


def _seed(config: TrainConfig, device: torch.device) -> None:
    """Torch's CPU threads, the Python / NumPy / torch seeds and the cudnn modes of ``config``."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = bool(config.deterministic)
        torch.backends.cudnn.benchmark = not config.deterministic


def build_dataset(config: TrainConfig, out_dir: Path) -> TwoViewDataset:
    """The training dataset of ``config.mode`` (docs/method.md "Training data"), with ``crop_scale``
    and a frame cache of ``cache_mb``.

    Video: the index is ``index_csv`` if given, else ``DATA/ytvos.csv`` if present, else the
    folders are scanned and the index saved to ``out_dir/ytvos.csv`` (the data root is never written).

    Raises:
        FileNotFoundError, ValueError: missing folders / no frames (messages name the paths).
    """
    common = dict(size=config.img_size, scale=tuple(config.crop_scale), cache_bytes=config.cache_mb * 2**20)
    if config.mode == "video":
        index = config.index_csv
        if index is None and not (Path(config.data) / "ytvos.csv").is_file():
            index = out_dir / "ytvos.csv"
        return VideoFrameDataset(config.data, clip_len=config.clip_len, frame_rate=config.frame_rate,
                                 clips_per_video=config.clips_per_video, index_csv=index, **common)
    image_sets = None if config.image_sets is None else list(config.image_sets)
    return StaticImageDataset(config.data, image_sets=pick_image_sets(image_sets, list(config.image_dirs)),
                              image_dirs=list(config.image_dirs), **common)


def _resume(run: _Run) -> None:
    """Continue from ``run.resume_path``: weights, optimiser, grad scaler, step, training time,
    skipped files, RNG states; log rows after the checkpoint's step are dropped.

    Raises:
        UsageError: the checkpoint belongs to another configuration (:func:`hvc.rundir.check_resume`).
    """
    ckpt = load_checkpoint(run.resume_path)
    check_resume(ckpt, run.config, run.dataset, run.schedule.total_steps, run.resume_path, run.ctx.world_size)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.precision.grad_scaler and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.step, run.train_time = int(ckpt["step"]), float(ckpt.get("train_time_s", 0.0))
    run.skipped_base = int(ckpt.get("skipped_files", 0)) if run.ctx.is_main else 0
    restore_rng_state(ckpt["rng"])
    if run.ctx.is_main:
        truncate_log(run.out_dir / LOG_NAME, run.step)
    say(run.ctx, f"resumed {run.resume_path} at step {run.step}/{run.schedule.total_steps} (epoch "
                 f"{run.step // run.schedule.steps_per_epoch}, EMA step {int(run.model.ema_step)})")
    run.saved_step = run.step if run.resume_path.resolve() == run.ckpt_path.resolve() else None


def _announce(run: _Run) -> None:
    """Fill the frame cache when workers will fork, then say what this run is in one line (and
    warn when a CPU run would take many hours)."""
    c, ctx, ds, sched = run.config, run.ctx, run.dataset, run.schedule
    cache_mode = "off" if not c.cache_mb else ("preloaded" if run.workers > 0 else "filled on first read")
    if run.workers > 0 and c.cache_mb:
        t0 = time.perf_counter()
        n_cached, b_cached = ds.preload(threads=max(1, torch.get_num_threads()))
        cache_mode = f"{n_cached} frames ({b_cached / 2**20:.0f} MiB) preloaded in {time.perf_counter() - t0:.1f} s"
    data_desc = (f"{ds.num_frames} frames, {ds.num_items()} clips of {c.clip_len}"
                 if c.mode == "video" else f"{ds.num_items()} images")
    say(ctx, f"hvc.train: device {run.device}, dtype {run.precision.name}"
             f"{', channels_last' if run.precision.channels_last else ''}, world size {ctx.world_size}, data "
             f"{data_desc} ({ds.epoch_length()} items per epoch), {sched.total_steps} steps "
             f"({sched.total_steps / sched.steps_per_epoch:.3g} epochs"
             f"{f', stopping at {sched.stop_at}' if sched.stop_at < sched.total_steps else ''}), batch {c.batch_size}"
             f"{f' ({c.batch_size // ctx.world_size} per rank)' if ctx.distributed else ''}, crop {c.img_size} px, "
             f"workers {run.workers}, threads {torch.get_num_threads()}, frame cache {cache_mode}"
             f"{f', preset {c.preset}' if c.preset else ''}")


def _run_record(run: _Run) -> Dict[str, Any]:
    """The contents of ``run.json`` (its ``result`` is filled in at every checkpoint)."""
    c, ctx, device = run.config, run.ctx, run.device
    return {"command": [sys.executable, "-m", "hvc.train", *sys.argv[1:]], "args": c.to_dict(),
            "preset": c.preset, "device": str(device), "precision": run.precision.name,
            "amp": run.precision.autocast_dtype is not None, "channels_last": run.precision.channels_last,
            "world_size": ctx.world_size, "local_batch_size": c.batch_size // ctx.world_size,
            "workers": run.workers, "threads": torch.get_num_threads(),
            "steps_per_epoch": run.schedule.steps_per_epoch, "total_steps": run.schedule.total_steps,
            "dataset": {"kind": c.mode, "items": run.dataset.num_items(), "epoch_length": run.dataset.epoch_length()},
            "git_revision": git_revision(), "versions": {"hvc": __version__, "torch": str(torch.__version__),
                                                         "python": platform.python_version()},
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "resumed_from": str(run.resume_path) if run.resume_path else None, "result": None}


def _loop(run: _Run, progress: Progress) -> None:
    """Train from ``run.step`` to the schedule's ``stop_at``: one :func:`_train_step` per batch,
    a log row every ``log_every`` steps and at the end, checkpoints when due. The bar and the
    log are closed however it ends."""
    c, sched = run.config, run.schedule
    norm = NORMALIZATION[c.normalization]
    run.model.train()
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    loader = make_loader(run.dataset, run.sampler, run.workers, run.device)
    t_mark = time.perf_counter()
    try:
        while run.step < sched.stop_at:
            epoch, pos = divmod(run.step, sched.steps_per_epoch)
            run.sampler.set_epoch(epoch, pos * c.batch_size)
            for batch in loader:
                out, momentum = _train_step(run, batch, norm, progress)
                if run.step % c.log_every == 0 or run.step == sched.stop_at:
                    progress.log(run.step, out, momentum, run.optimizer.param_groups[0]["lr"], run.skipped_base,
                                 run.skipped_local)
                now = progress.advance(run.step)
                time_before, run.train_time, t_mark = run.train_time, run.train_time + (now - t_mark), now
                _checkpoint_if_due(run, time_before)
                if run.step >= sched.stop_at:
                    break
    finally:
        progress.close()
        del loader


def _train_step(run: _Run, batch: Dict[str, torch.Tensor], norm, progress: Progress):
    """One optimisation step on a data-loader ``batch`` (``norm``: its (mean, std)): EMA update of
    the target (before the target pass, as the reference), forward / backward, Adam (through the
    grad scaler). Advances ``run.step``; returns ``(model output dict, EMA momentum)``."""
    v1, v2, c1, c2 = batch_to_device(batch, run.device, norm, run.precision.channels_last)
    run.skipped_local += int(batch["skipped"].sum())
    momentum = run.model.momentum_update(run.step)
    run.optimizer.zero_grad(set_to_none=True)
    out = forward_backward(run.net, v1, v2, c1, c2, run.precision, run.scaler)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    progress.count(v1.shape[0])
    return out, momentum


def snapshot_due(step: int, config: TrainConfig, train_time: float, last_time: float) -> bool:
    """Whether a snapshot is due after ``step``: a step of ``snapshot_steps``, or a multiple of
    ``snapshot_every_min`` minutes of training passed between ``last_time`` and ``train_time``
    (seconds; rank 0's view for the time-based rule)."""
    if config.snapshot_steps and step in config.snapshot_steps:
        return True
    if config.snapshot_every_min:
        period = 60.0 * config.snapshot_every_min
        return math.floor(train_time / period) > math.floor(last_time / period)
    return False


def _checkpoint_if_due(run: _Run, time_before: float) -> None:
    """Checkpoint after a step every ``ckpt_every`` steps, at epoch ends, at ``stop_at`` and when a
    snapshot is due (``time_before``: the training time before the step, seconds). Every rank
    takes the same decision (rank 0's clock for the time-based snapshots)."""
    c, sched, step = run.config, run.schedule, run.step
    snapshot = snapshot_due(step, c, run.train_time, time_before)
    if c.snapshot_every_min and run.ctx.distributed:
        snapshot = rank0_decides(snapshot, run.ctx, run.device)  # rank 0's clock decides
    if step % c.ckpt_every == 0 or step % sched.steps_per_epoch == 0 or step == sched.stop_at or snapshot:
        _checkpoint(run, snapshot)


def _checkpoint(run: _Run, snapshot: bool) -> None:
    """Write the checkpoint of ``run.step`` (and its snapshot copy) and update ``run.json``.
    A collective: every rank calls it at the same steps; rank 0 writes.

    Raises:
        FloatingPointError: non-finite weights (the last good checkpoint is kept).
        OSError: the write failed; the message names the step the kept checkpoint holds.
    """
    ctx, step, ckpt_path = run.ctx, run.step, run.ckpt_path
    bad = [name for name, p in run.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never replace the last good checkpoint with a diverged model
        raise FloatingPointError(f"non-finite weights at step {step} ({', '.join(bad[:3])}...); "
                                 f"{ckpt_path} (the last good checkpoint) was kept")
    spread = replica_max_abs_diff(run.model, ctx)
    skipped = run.skipped_base + all_sum_int(run.skipped_local, ctx, run.device)
    if not ctx.is_main:
        return
    if spread > 0:
        print(f"hvc.train: warning: the ranks' weights differ at step {step} (largest parameter-sum "
              f"difference {spread:.3g}); the checkpoint holds rank 0's", file=sys.stderr)
    try:
        save_checkpoint(ckpt_path, model=run.model, optimizer=run.optimizer, scaler=run.scaler, step=step,
                        steps_per_epoch=run.schedule.steps_per_epoch, total_steps=run.schedule.total_steps,
                        sampler=run.sampler, dataset=run.dataset, skipped=skipped, config=run.config,
                        world_size=ctx.world_size, train_time_s=run.train_time, replica_max_abs_diff=spread)
        run.saved_step = step
        if snapshot:
            snap = run.out_dir / SNAPSHOT_DIR / f"step-{step:05d}.pth"
            atomic_write(snap, lambda tmp: shutil.copyfile(ckpt_path, tmp))
    except OSError as exc:  # full disk, read-only folder: say what is kept and how to continue
        raise save_failed(exc, step, ckpt_path, run.saved_step)
    hist = run.ips_history
    run.record["result"] = {"step": step, "train_time_s": round(run.train_time, 3), "skipped_files": skipped,
                            "images_per_s_median": round(statistics.median(hist), 3) if hist else None,
                            "peak_mem_mib": round(peak_mem_mib(run.device), 1), "precision": run.precision.name,
                            "world_size": ctx.world_size}
    write_run_record(run.out_dir, run.record)


def _finish(run: _Run, last_loss: Optional[float], t_start: float) -> Dict[str, Any]:
    """Say how the session ended, in one line, and return :func:`train`'s summary."""
    wall = time.time() - t_start
    peak = peak_mem_mib(run.device)
    ips_med = statistics.median(run.ips_history) if run.ips_history else None
    skipped = (run.record["result"] or {}).get("skipped_files", 0)
    say(run.ctx, f"done: step {run.step}/{run.schedule.total_steps}, loss {last_loss}, skipped files {skipped}, "
                 f"{wall:.1f} s, {f'{ips_med:.2f}' if ips_med else '-'} images/s (median), peak memory {peak:.0f} MiB; "
                 f"checkpoint {run.ckpt_path}")
    return {"step": run.step, "epoch": run.step // run.schedule.steps_per_epoch, "loss": last_loss,
            "output_dir": str(run.out_dir), "checkpoint": str(run.ckpt_path), "skipped": skipped, "wall_s": wall,
            "images_per_s": ips_med, "peak_mem_mib": peak, "precision": run.precision.name,
            "world_size": run.ctx.world_size}
