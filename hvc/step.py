"""One training step, shared by the loop (:mod:`hvc.trainer`) and the tests: the precision it runs
in, the optimiser, the data loader (and its worker count), a batch on the device, and the forward /
backward pass (docs/method.md, "Model" and "Loss").

Precision (``--amp``, ``--amp-dtype``, ``--channels-last``): float16 autocast with a grad scaler
on CUDA (plain float32 on CPU), or bfloat16 autocast on CUDA and CPU; the loss is always
accumulated in float32 (:mod:`hvc.loss`).
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from .data.crops import normalize_batch
from .data.images import TwoViewDataset
from .data.sampler import EpochSampler
from .launch import DistContext
from .model import HVCModel
from .errors import UsageError
from .tables import AMP_DTYPE_NAMES

#: ``--amp-dtype`` name -> autocast dtype.
AMP_DTYPES = {name: getattr(torch, name) for name in AMP_DTYPE_NAMES}


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs. Fields: ``device_type`` (``cpu``/``cuda``), ``autocast_dtype``
    (``torch.float16``/``torch.bfloat16`` for autocast, None for float32), ``grad_scaler``
    (float16 on CUDA: scale the loss against gradient underflow), ``channels_last`` (NHWC)."""

    device_type: str
    autocast_dtype: Optional[torch.dtype] = None
    grad_scaler: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        """``float32``, ``bf16`` or ``fp16``."""
        return {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self):
        """The autocast context of the forward pass (a no-op for float32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)


def resolve_precision(device: torch.device, amp: bool, amp_dtype: str, channels_last: Optional[bool]) -> Precision:
    """The :class:`Precision` of ``--amp``/``--amp-dtype``/``--channels-last`` on ``device``.

    float16 autocast (with a grad scaler) only on CUDA -- on CPU ``--amp-dtype float16`` means
    float32; bfloat16 autocast on CUDA and CPU. ``auto``: the probe of
    :func:`hvc.hardware.encoder_precision` on ``device`` (the backbone's forward) picks bfloat16
    where it is clearly faster than float32, else float16 on CUDA (as the default) and float32 on
    CPU; with ``channels_last`` None the probe's layout is used on CPU. ``channels_last`` None
    otherwise: on for CUDA only.

    Raises:
        UsageError: unknown ``amp_dtype``, or bfloat16 on a GPU without bfloat16 support.
    """
    if amp_dtype == "auto":
        if not amp or device.type not in ("cpu", "cuda"):
            return Precision(device.type, None, False, bool(channels_last))
        from .hardware import encoder_precision  # the probe imports the backbone
        choice = encoder_precision("auto", device)
        amp_dtype = choice.precision if choice.precision != "float32" else "float16"  # float16 = float32 on CPU
        if channels_last is None and device.type == "cpu":
            channels_last = choice.channels_last and choice.precision != "float32"
    if amp_dtype not in AMP_DTYPES:
        raise UsageError(f"--amp-dtype must be one of {sorted(AMP_DTYPES) + ['auto']}, got {amp_dtype!r}")
    dtype = AMP_DTYPES[amp_dtype] if amp else None
    if dtype is torch.float16 and device.type != "cuda":
        dtype = None
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--amp-dtype bfloat16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                         f"use --amp-dtype float16")
    if device.type not in ("cpu", "cuda"):
        dtype = None
    if channels_last is None:
        channels_last = device.type == "cuda"
    return Precision(device.type, dtype, dtype is torch.float16, bool(channels_last))


def make_optimizer(model: HVCModel, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over the online parameters (docs/method.md "Loss": betas (0.9, 0.999), no weight decay,
    constant ``lr``), with the fused kernel on CPU and CUDA (one pass over all parameters; on
    the 2-core CPU ~3x faster than the per-tensor loop, ~70 ms less per step; results equal to
    ~1e-8)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.online_parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0,
                            fused=fused or None)


def default_workers(device: torch.device, ctx: DistContext) -> int:
    """``--workers`` when not given: 0 on CPU (the training step uses every core, and decoding and
    cropping a frame cost 0.2 % (128 px) to 2 % (64 px) of its step, measured with
    benchmarks/bench_train.py --data), ``min(8, CPUs / processes on this node)`` on CUDA."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 1) // max(1, ctx.local_world_size)))


def make_loader(dataset: TwoViewDataset, sampler: EpochSampler, workers: int, device: torch.device) -> DataLoader:
    """The run's one data loader: ``sampler.local_batch_size`` items per batch, complete
    batches only; pinned memory on CUDA; workers persistent over epochs (the epoch and start
    are read from ``sampler`` at each ``iter``)."""
    return DataLoader(dataset, batch_size=sampler.local_batch_size, sampler=sampler, drop_last=True,
                      num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def batch_to_device(batch: Dict[str, torch.Tensor], device: torch.device, normalization: Tuple[Sequence[float],
                    Sequence[float]], channels_last: bool = False) -> Tuple[torch.Tensor, ...]:
    """A data-loader batch on ``device``: ``(view1, view2, coord1, coord2)``.

    Views ``uint8 [B, T, 3, S, S]`` -> normalised float32 ``[B T, 3, S, S]`` (NHWC when
    ``channels_last``), boxes ``[B, T, 4]`` -> ``[B T, 4]``; host-to-device copies are
    non-blocking (from pinned memory on CUDA). ``normalization``: (mean, std) of RGB in [0, 1]
    (a value of :data:`hvc.tables.NORMALIZATION`).
    """
    mean, std = normalization
    views = [normalize_batch(batch[k].flatten(0, 1), device, mean, std, channels_last=channels_last)
             for k in ("view1", "view2")]
    coords = [batch[k].reshape(-1, 4).to(device, non_blocking=True) for k in ("coord1", "coord2")]
    return views[0], views[1], coords[0], coords[1]


def forward_backward(net: nn.Module, view1: torch.Tensor, view2: torch.Tensor, coord1: torch.Tensor,
                     coord2: torch.Tensor, precision: Precision, scaler) -> Dict[str, torch.Tensor]:
    """Forward under ``precision``'s autocast and backward of the (scaled) loss.

    Args:
        net: :class:`HVCModel` or its DDP wrapper (:func:`hvc.distributed.wrap_model`).
        view1, view2: normalised crops ``[N, 3, S, S]``; coord1, coord2: boxes ``[N, 4]``.
        scaler: a :class:`torch.amp.GradScaler` (disabled unless float16 on CUDA).

    Returns:
        The model's output dict (``loss`` float32, see :meth:`HVCModel.forward`); gradients are
        accumulated into the parameters' ``.grad`` (averaged over the ranks under DDP).
    """
    with precision.autocast():
        out = net(view1, view2, coord1, coord2)
    scaler.scale(out["loss"]).backward()
    return out
