"""The settings of an HVC training run, stated once (docs/method.md, "Training data" to "Loss").

:class:`TrainConfig` is passed whole from the command line (``python -m hvc.train`` adds one flag
per field with :meth:`TrainConfig.add_arguments` and builds the config with
:meth:`TrainConfig.from_mapping` after applying the ``--preset``, :func:`hvc.presets.apply_preset`)
to :func:`hvc.trainer.train`. The checkpoint and ``run.json`` store it as the plain dict of
:meth:`TrainConfig.to_dict` (one key per field, named as the flag's argparse destination).
Defaults are the paper's / the public code's where it has the setting ("paper" / "reference" in
the comments; docs/method.md, "Differences from the public code", for where we differ).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import UsageError
from .presets import PRESET_NAMES
from .records import plain
from .tables import AMP_DTYPE_CHOICES, NORMALIZATION

#: Area fraction of the random resized crops, ~ U(MIN, MAX) (docs/method.md, "Training data"; paper and public code).
DEFAULT_SCALE = (0.0, 1.0)
#: Positive radius in units of the larger bin diagonal (docs/method.md, "Loss"; paper and public code).
DEFAULT_POS_RADIUS = 0.1
#: EMA base momentum m0 of the cosine schedule (docs/method.md, "Model"; paper and public code).
DEFAULT_EMA_BASE = 0.99

#: ``mode`` choices: frames of videos, or still images (docs/method.md, "Training data").
MODES = ("video", "images")
#: ``loss_impl`` choices (:func:`hvc.loss.hybrid_loss`, :func:`hvc.loss.dense_hybrid_loss`).
LOSS_IMPLS = ("sparse", "dense")
#: Fields holding sequences: stored as tuples (a frozen config), lists in :meth:`TrainConfig.to_dict`.
_SEQUENCE_FIELDS = ("image_sets", "image_dirs", "crop_scale", "snapshot_steps")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every setting of a training run (see the comment on each field); ``data`` and ``output_dir``
    have no default.

    Raises:
        UsageError: a value out of range (the message names the flag).
    """

    # Name of the preset (hvc.presets) whose values replaced the defaults, None for none. Recorded
    # only: its values are already in the other fields. Paper: none (its setting is the default).
    preset: Optional[str] = None
    # -- data (docs/method.md, "Training data") --
    # Data root. Video mode: folder with JPEGImages/<video>/<frame>.jpg (and an optional
    # ytvos.csv); images mode: root of the image presets and of relative image folders.
    data: str
    # Training data kind: "video" (frames of unlabeled videos) or "images" (still images).
    # Reference: both, as two separate runs (YouTube-VOS, COCO).
    mode: str = "video"
    # Video: frames per clip T (each frame is cropped twice on its own). Reference: 1.
    clip_len: int = 1
    # Video: frames per second; frames of a clip are round(30 / frame_rate) frames apart. Reference: 30.
    frame_rate: float = 30.0
    # Video: most clips drawn per video per epoch. Reference: 80.
    clips_per_video: int = 80
    # Video: index CSV to read, or to write the scanned index to; None: DATA/ytvos.csv if present,
    # else the folders are scanned and the index written to OUTPUT_DIR/ytvos.csv. Not a paper setting.
    index_csv: Optional[str] = None
    # Images: presets among coco, voc, msra10k ("none" for none); None: coco unless image_dirs
    # are given. Reference: coco.
    image_sets: Optional[Tuple[str, ...]] = None
    # Images: extra folders (relative to data, or absolute), searched recursively. Reference: none.
    image_dirs: Tuple[str, ...] = ()
    # Input mean/std, a key of hvc.tables.NORMALIZATION: "imagenet" (what inference uses) or
    # "cifar10" (the reference's training constants). Ours: imagenet.
    normalization: str = "imagenet"
    # Area of each random resized crop as a fraction of the frame area, drawn uniformly in
    # [MIN, MAX]; dimensionless. Paper: (0, 1).
    crop_scale: Tuple[float, float] = DEFAULT_SCALE
    # Data-loader processes per rank; None: 0 on CPU, min(8, CPUs / processes per node) on CUDA
    # (hvc.step.default_workers). Reference: 16.
    workers: Optional[int] = None
    # Decoded frames kept in memory per rank, MiB (uint8; 0: off). Not a paper setting.
    cache_mb: int = 2048
    # -- optimisation (docs/method.md, "Model" and "Loss") --
    # Total optimisation steps K (the EMA schedule's length); None: epochs x steps per epoch.
    steps: Optional[int] = None
    # Epochs, used when steps is None. Paper: 20.
    epochs: int = 20
    # Frames per step, all ranks together (x clip_len for clips; split evenly over the ranks). Paper: 128.
    batch_size: int = 128
    # Crop side, pixels (a multiple of the output stride 8). Paper: 256.
    img_size: int = 256
    # Adam learning rate, constant (betas 0.9, 0.999, no weight decay). Paper: 1e-3.
    lr: float = 1e-3
    # Positive radius, in units of the larger of the two cells' diagonals. Paper: 0.1.
    pos_radius: float = DEFAULT_POS_RADIUS
    # EMA base momentum m0 of the cosine schedule, dimensionless. Paper: 0.99.
    ema_base: float = DEFAULT_EMA_BASE
    # Weight of the static (spatial) term of the hybrid loss, dimensionless. Paper: 1.
    spatial_weight: float = 1.0
    # Weight of the dynamic (temporal) term of the hybrid loss, dimensionless. Paper: 1.
    temporal_weight: float = 1.0
    # Loss implementation: "sparse" (ours, positive pairs only) or "dense" (the reference's
    # formulation, memory O(N (HW)^2)); equal to < 1e-5 relative error.
    loss_impl: str = "sparse"
    # Seed of the initialisation and of the data order. Reference: 42.
    seed: int = 42
    # Mixed precision (autocast) of amp_dtype; float16 has an effect on CUDA only. Reference: on
    # (video training; docs/method.md, "Differences from the public code").
    amp: bool = True
    # Autocast dtype, one of hvc.tables.AMP_DTYPE_CHOICES: float16 (with a grad scaler, CUDA only),
    # bfloat16, or auto (bfloat16 where a probe on this machine shows it clearly faster than
    # float32, else float16 on CUDA and float32 on CPU). Reference: float16.
    amp_dtype: str = "float16"
    # NHWC memory format of weights and activations; None: on with CUDA, off on CPU. Not a paper setting.
    channels_last: Optional[bool] = None
    # torchrun on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm). Reference: off (one GPU).
    sync_bn: bool = False
    # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ... (under torchrun: cuda:LOCAL_RANK).
    device: str = "auto"
    # CPU threads of torch, 0 for torch's default. Not a paper setting.
    threads: int = 0
    # cudnn deterministic mode (slower). Reference: on.
    deterministic: bool = False
    # -- output (hvc.rundir) --
    # Run directory: checkpoint, log, run.json, snapshots.
    output_dir: str
    # "auto" (OUTPUT_DIR/checkpoint.pth; start fresh if absent) or a checkpoint path; None: a new run.
    resume: Optional[str] = None
    # Allow starting a new run in a directory that holds another run (which is then removed).
    overwrite: bool = False
    # Checkpoint every this many steps (also at epoch ends and at the end). Reference: every epoch.
    ckpt_every: int = 500
    # Global steps after which a copy of the checkpoint is kept as snapshots/step-XXXXX.pth
    # (sorted, distinct, >= 1), None for none.
    snapshot_steps: Optional[Tuple[int, ...]] = None
    # Also keep a checkpoint copy every this many minutes of training time (summed over
    # resumes), None for never.
    snapshot_every_min: Optional[float] = None
    # A log row (log.csv, TensorBoard) every this many steps.
    log_every: int = 10
    # Stop (with a checkpoint) after this global step, keeping the schedule of steps / epochs;
    # None: at the end of the schedule. For time-sliced runs.
    stop_at: Optional[int] = None
    # Also log to OUTPUT_DIR/tb when the tensorboard package is installed.
    tensorboard: bool = True
    # tqdm progress bar with ETA (without it, the ETA is printed with every log row).
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {"--batch-size": self.batch_size, "--img-size": self.img_size, "--epochs": self.epochs,
                    "--ckpt-every": self.ckpt_every, "--log-every": self.log_every, "--clip-len": self.clip_len}
        if self.steps is not None:
            positive["--steps"] = self.steps
        for flag, value in positive.items():
            if value < 1:
                raise UsageError(f"{flag} must be >= 1, got {value}")
        if self.img_size % 8:
            raise UsageError(f"--img-size must be a multiple of 8 (output stride), got {self.img_size}")
        if self.lr <= 0 or self.pos_radius <= 0 or (self.workers is not None and self.workers < 0):
            raise UsageError("--lr and --pos-radius must be > 0 and --workers >= 0")
        lo, hi = self.crop_scale
        if not 0.0 <= lo <= hi <= 1.0 or hi <= 0.0:
            raise UsageError(f"--crop-scale needs 0 <= MIN <= MAX <= 1 and MAX > 0, got {lo} {hi}")
        for flag, w in (("--spatial-weight", self.spatial_weight), ("--temporal-weight", self.temporal_weight)):
            if not math.isfinite(w) or w < 0:
                raise UsageError(f"{flag} must be a finite number >= 0, got {w}")
        if self.spatial_weight == 0 and self.temporal_weight == 0:
            raise UsageError("--spatial-weight and --temporal-weight are both 0: nothing to train")
        if self.snapshot_every_min is not None and not self.snapshot_every_min > 0:
            raise UsageError(f"--snapshot-every-min must be > 0, got {self.snapshot_every_min}")
        if self.cache_mb < 0:
            raise UsageError(f"--cache-mb must be >= 0, got {self.cache_mb}")
        choices = {"--mode": (self.mode, MODES), "--loss-impl": (self.loss_impl, LOSS_IMPLS),
                   "--normalization": (self.normalization, tuple(NORMALIZATION))}
        for flag, (value, allowed) in choices.items():  # argparse checks them on the command line
            if value not in allowed:
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """The config of the fields present in ``values`` (e.g. ``vars(parsed_args)``, the
        preset already applied), defaults elsewhere; lists become tuples.

        Raises:
            UsageError: a value out of range. TypeError: ``data`` or ``output_dir`` missing.
        """
        kwargs = {f.name: values[f.name] for f in fields(cls) if f.name in values}
        for name in _SEQUENCE_FIELDS:
            if kwargs.get(name) is not None:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a plain dict (lists for tuples; ``weights_only``-safe), in field order:
        what the checkpoint's and ``run.json``'s ``args`` hold (the keys of the flags' argparse
        destinations, as written by every version of the trainer)."""
        return plain({f.name: getattr(self, f.name) for f in fields(self)})

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add one flag per field (``--preset``, ``--data``, ..., ``--progress``) with its default and help."""
        d = {f.name: f.default for f in fields(TrainConfig)}
        parser.add_argument("--preset", choices=sorted(PRESET_NAMES), default=d["preset"],
                            help="named flag defaults (hvc/presets.py), e.g. cpu-1h: about one hour on a 2-core CPU; "
                                 "cpu-1h-auto: cpu-1h-bf16 where a short probe shows this CPU faster in bfloat16, "
                                 "else cpu-1h; flags given explicitly override it")
        _add_data_arguments(parser.add_argument_group("data"), d)
        _add_optimisation_arguments(parser.add_argument_group("optimisation"), d)
        _add_output_arguments(parser.add_argument_group("output"), d)


def snapshot_steps_type(text: str) -> List[int]:
    """``"a,b,c"`` -> sorted distinct positive ints (argparse type of ``--snapshot-steps``).

    Raises:
        argparse.ArgumentTypeError: not comma-separated integers, or one below 1.
    """
    try:
        steps = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step numbers, got {text!r}") from None
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError(f"step numbers must be >= 1, got {text!r}")
    return steps


def _add_data_arguments(g, d: Dict[str, Any]) -> None:
    """The flags of the data fields (``d``: the fields' defaults)."""
    g.add_argument("--data", required=True, help="data root: video mode: folder with JPEGImages/<video>/<frame>.jpg "
                   "(and optional ytvos.csv); images mode: root of the image presets / folders")
    g.add_argument("--mode", choices=MODES, default=d["mode"], help="training data kind")
    g.add_argument("--clip-len", type=int, default=d["clip_len"], help="video: frames per clip T")
    g.add_argument("--frame-rate", type=float, default=d["frame_rate"],
                   help="video: fps; dilation = round(30 / frame_rate)")
    g.add_argument("--clips-per-video", type=int, default=d["clips_per_video"],
                   help="video: max clips per video per epoch")
    g.add_argument("--index-csv", default=d["index_csv"], help="video: index CSV to read, or to write the scanned "
                   "index to (default: DATA/ytvos.csv if present, else scan and save DIR/ytvos.csv)")
    g.add_argument("--image-sets", nargs="*", default=d["image_sets"], help="images: presets among coco, voc, "
                   "msra10k ('none' for none; default coco unless --image-dirs is given)")
    g.add_argument("--image-dirs", nargs="*", default=list(d["image_dirs"]), help="images: extra folders (relative "
                   "to --data or absolute), searched recursively")
    g.add_argument("--normalization", choices=tuple(NORMALIZATION), default=d["normalization"],
                   help="input mean/std: imagenet (what inference uses) or cifar10 (what the reference trains with)")
    g.add_argument("--crop-scale", nargs=2, type=float, metavar=("MIN", "MAX"), default=list(d["crop_scale"]),
                   help="area of each random resized crop as a fraction of the frame area, drawn uniformly in "
                        "[MIN, MAX] (paper: 0 1)")
    g.add_argument("--workers", type=int, default=d["workers"], help="data-loader processes per rank (default: 0 on "
                   "CPU, where decoding and cropping a frame cost 0.2 %% (128 px) to 2 %% (64 px) of its training "
                   "step; min(8, CPUs / processes per node) on CUDA)")
    g.add_argument("--cache-mb", type=int, default=d["cache_mb"], help="keep decoded frames in memory up to this "
                   "many MiB per rank (uint8; 0: off); filled as frames are first read, or all at start when "
                   "--workers > 0 (before the workers fork, so they share it). The unlabeled set (2086 frames of "
                   "~427x240) takes 620 MiB")


def _add_optimisation_arguments(g, d: Dict[str, Any]) -> None:
    """The flags of the optimisation fields (``d``: the fields' defaults)."""
    g.add_argument("--steps", type=int, default=d["steps"], help="total optimisation steps (overrides --epochs)")
    g.add_argument("--epochs", type=int, default=d["epochs"], help="epochs (used when --steps is not given)")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="frames per step, all ranks together "
                   "(x T for clips; split evenly over the torchrun processes)")
    g.add_argument("--img-size", type=int, default=d["img_size"], help="crop side, pixels")
    g.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate (constant)")
    g.add_argument("--pos-radius", type=float, default=d["pos_radius"],
                   help="positive radius, in units of the larger bin diagonal (paper 0.1)")
    g.add_argument("--ema-base", type=float, default=d["ema_base"], help="EMA base momentum m0 (paper 0.99)")
    g.add_argument("--spatial-weight", type=float, default=d["spatial_weight"], help="weight of the static "
                   "(spatial) term of the hybrid loss, dimensionless (paper 1)")
    g.add_argument("--temporal-weight", type=float, default=d["temporal_weight"], help="weight of the dynamic "
                   "(temporal) term of the hybrid loss, dimensionless (paper 1)")
    g.add_argument("--loss-impl", choices=LOSS_IMPLS, default=d["loss_impl"],
                   help="sparse (ours) or dense (reference formulation; memory O(N (HW)^2))")
    g.add_argument("--seed", type=int, default=d["seed"], help="seed of the initialisation and the data order")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d["amp"],
                   help="mixed precision (autocast) of --amp-dtype; float16 has an effect on CUDA only")
    g.add_argument("--amp-dtype", choices=AMP_DTYPE_CHOICES, default=d["amp_dtype"],
                   help="float16: autocast + grad scaler on CUDA, float32 on CPU; bfloat16: autocast on CUDA and "
                        "CPU (on CPUs without bfloat16 instructions much slower than float32); auto: bfloat16 "
                        "(and, on CPU, its faster layout) where a short probe at start shows it clearly faster "
                        f"than float32, else float16 (default {d['amp_dtype']})")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d["channels_last"],
                   help="NHWC memory format for weights and activations (default: on with CUDA, where tensor-core "
                        "convolutions use it; off on CPU, where it measured no faster for a training step)")
    g.add_argument("--sync-bn", action="store_true", help="torchrun on CUDA: BatchNorm statistics over the global "
                   "batch (default: per rank, as DDP without SyncBatchNorm)")
    g.add_argument("--device", default=d["device"], help="auto (CUDA when available), cpu, cuda, cuda:1, ... "
                   "(under torchrun: cuda:LOCAL_RANK)")
    g.add_argument("--threads", type=int, default=d["threads"], help="CPU threads for torch (0 = torch's default)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=d["deterministic"],
                   help="cudnn deterministic mode (slower; the reference sets it)")


def _add_output_arguments(g, d: Dict[str, Any]) -> None:
    """The flags of the output fields (``d``: the fields' defaults)."""
    g.add_argument("--output-dir", required=True, help="run directory (checkpoint, log, run.json)")
    g.add_argument("--resume", default=d["resume"], help="'auto' (= DIR/checkpoint.pth, start fresh if absent) or a "
                   "checkpoint path")
    g.add_argument("--overwrite", action="store_true",
                   help="allow starting a new run in a directory holding another run")
    g.add_argument("--ckpt-every", type=int, default=d["ckpt_every"], help="checkpoint every N steps (also at "
                   "epoch ends and at the end)")
    g.add_argument("--snapshot-steps", type=snapshot_steps_type, default=d["snapshot_steps"], metavar="A,B,C",
                   help="also keep a copy of the checkpoint at these global steps as DIR/snapshots/step-XXXXX.pth")
    g.add_argument("--snapshot-every-min", type=float, default=d["snapshot_every_min"], metavar="M",
                   help="also keep a checkpoint copy every M minutes of training time (summed over resumes)")
    g.add_argument("--log-every", type=int, default=d["log_every"], help="CSV/TensorBoard row every N steps")
    g.add_argument("--stop-at", type=int, default=d["stop_at"], help="stop (with a checkpoint) after this global "
                   "step, keeping the schedule of --steps/--epochs; for time-sliced runs")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=d["tensorboard"],
                   help="also log to DIR/tb when the tensorboard package is installed")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d["progress"],
                   help="tqdm progress bar with ETA (without it, the ETA is printed with every log row)")
