"""Distributed training (``torchrun``, DDP) for :mod:`hvc.trainer`: the process group and device,
the DDP wrapper, and the collectives the loop needs. Where this process sits in the run is
:class:`hvc.launch.DistContext` (shared with sharded evaluation; re-exported here).

Every function marked "a collective" must be called by every rank at the same point; without
distribution (world size 1) each is the identity and communicates nothing. Backend NCCL on CUDA
(device ``cuda:LOCAL_RANK``), gloo on CPU.
"""
from __future__ import annotations

import sys
from typing import Callable, List, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .model import HVCModel
from .launch import DistContext, resolve_rank_device
from .errors import UsageError

T = TypeVar("T")


def setup_distributed(device_arg: str, ctx: DistContext) -> torch.device:
    """This rank's device, and the default process group when ``ctx`` is distributed.

    The device is :func:`hvc.launch.resolve_rank_device` of ``device_arg`` (under torchrun a CUDA
    device without an index becomes ``cuda:LOCAL_RANK``), made current. The process group uses
    NCCL on CUDA and gloo on CPU, rendezvous from the environment (``MASTER_ADDR``/``MASTER_PORT``,
    set by torchrun).

    Raises:
        UsageError: fewer GPUs than local ranks; see :func:`hvc.runtime.resolve_device` (CUDA
            requested but not available).
    """
    device = resolve_rank_device(device_arg, ctx)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if ctx.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ctx.rank,
                                world_size=ctx.world_size)
    return device


def wrap_model(model: HVCModel, device: torch.device, ctx: DistContext, sync_bn: bool = False) -> nn.Module:
    """The module the training step calls: ``model`` itself, or under torchrun a
    :class:`~torch.nn.parallel.DistributedDataParallel` of it (gradients averaged over the ranks;
    BN buffers broadcast from rank 0 at each forward), with SyncBatchNorm when ``sync_bn``.

    ``model`` must already be on ``device`` (and in its memory format). Call
    :meth:`HVCModel.momentum_update` on ``model``, never on the wrapper.

    Raises:
        UsageError: ``sync_bn`` on a device other than CUDA.
    """
    if sync_bn and device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    if not ctx.distributed:
        return model
    if sync_bn:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def replica_max_abs_diff(model: HVCModel, ctx: DistContext) -> float:
    """Largest difference between the ranks' per-tensor parameter sums (online and EMA target;
    float64), 0.0 when the replicas agree or without distribution. A collective."""
    if not ctx.distributed:
        return 0.0
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.empty_like(sums) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, sums)
    return float(max((g - gathered[0]).abs().max() for g in gathered))


def all_mean(values: List[float], ctx: DistContext, device: torch.device) -> List[float]:
    """Mean over the ranks of each value (float64; identity without distribution). A collective."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


def all_sum_int(value: int, ctx: DistContext, device: torch.device) -> int:
    """Sum over the ranks of an integer (e.g. skipped files). A collective."""
    if not ctx.distributed:
        return int(value)
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def rank0_decides(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. a decision that reads rank 0's clock). A collective."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def rank0_first(ctx: DistContext, fn: Callable[[], T], others: bool = True) -> T:
    """Run ``fn`` on rank 0, then (``others``) on the other ranks; an expected error on rank 0
    (FileExistsError, FileNotFoundError, ValueError) is raised on every rank. Returns ``fn()``'s
    result (rank 0's, broadcast, when not ``others``). A collective."""
    if not ctx.distributed:
        return fn()
    result, err = None, None
    if ctx.is_main:
        try:
            result = fn()
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            err = exc
    box = [None if err is None else (type(err).__name__, str(err)), result if not others else None]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        if err is not None:
            raise err
        raise {"FileExistsError": FileExistsError, "FileNotFoundError": FileNotFoundError}.get(
            box[0][0], ValueError)(box[0][1])
    if ctx.is_main:
        return result
    return fn() if others else box[1]


def say(ctx: DistContext, message: str) -> None:
    """One line on stderr, from rank 0 only."""
    if ctx.is_main:
        print(message, file=sys.stderr, flush=True)
