"""Where this process sits in a ``torchrun`` launch, for training (:mod:`hvc.distributed`) and
sharded evaluation (:mod:`label_prop.shard`): :class:`DistContext` from torchrun's environment
variables, and the device of one rank.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import UsageError
from .runtime import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a ``torchrun`` launch; ``world_size == 1`` otherwise.

    Fields: ``rank`` (0 .. world_size - 1), ``world_size`` (processes of the launch, all nodes),
    ``local_rank`` (index on this node; selects ``cuda:LOCAL_RANK``), ``local_world_size``
    (processes on this node).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1


def dist_context_from_env() -> DistContext:
    """The :class:`DistContext` described by ``torchrun``'s environment variables (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); a single process when they are unset.

    Raises:
        ValueError: non-integer or inconsistent values (the variables are named).
    """
    env = os.environ
    try:
        ctx = DistContext(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                          int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))))
    except ValueError:
        raise ValueError("RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE must be integers") from None
    if ctx.world_size < 1 or not 0 <= ctx.rank < ctx.world_size or not 0 <= ctx.local_rank < ctx.local_world_size:
        raise ValueError(f"inconsistent torchrun environment: RANK {ctx.rank}, WORLD_SIZE {ctx.world_size}, "
                         f"LOCAL_RANK {ctx.local_rank}, LOCAL_WORLD_SIZE {ctx.local_world_size}")
    return ctx


def resolve_rank_device(name: str, ctx: DistContext) -> torch.device:
    """:func:`resolve_device` for one process of a launch: under ``torchrun`` (``ctx`` distributed)
    ``auto`` and ``cuda`` without an index become ``cuda:LOCAL_RANK`` when CUDA is available
    (``auto`` stays CPU without CUDA); an explicit ``cuda:N`` or ``cpu`` is kept.

    Raises:
        UsageError: see :func:`resolve_device`, or fewer visible GPUs than local ranks.
    """
    dev = resolve_device(name)
    if dev.type != "cuda" or dev.index is not None or not ctx.distributed:
        return dev
    if torch.cuda.device_count() <= ctx.local_rank:
        raise UsageError(f"--device {name}: local rank {ctx.local_rank} needs cuda:{ctx.local_rank}, but only "
                         f"{torch.cuda.device_count()} GPU(s) are visible")
    return torch.device("cuda", ctx.local_rank)
