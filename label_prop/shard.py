"""Sharded evaluation: a benchmark's sequences split over N processes, one shard each.

Two ways to run shard ``I`` of ``N`` (``0 <= I < N``):

* ``bash scripts/run_test.sh MODEL BENCHMARK --shard I/N`` -- one process per shard, started by
  you (on one machine, several machines or a batch system's array job);
* ``torchrun --nproc_per_node N -m label_prop.run MODEL BENCHMARK ...`` -- shard ``RANK`` of
  ``WORLD_SIZE`` (several nodes: ``--nnodes``), each process on ``cuda:LOCAL_RANK`` when there are
  GPUs (:func:`hvc.launch.resolve_rank_device`).

**The rule** (:func:`assign_shards`): the sequences are taken in decreasing order of their
number of frames (ties: the benchmark's order) and each goes to the shard with the fewest frames
so far (ties: the lowest index) -- the greedy longest-processing-time rule, which balances the
frames (the cost) over the shards. It depends only on the sequences selected (``--sequences`` /
``--split`` / all) and their frame counts, so every process computes the same split, and every
sequence is in exactly one shard. A sequence's output does not depend on the shard it is in, so
the union of the shards' PNGs is the unsharded run's (tested byte for byte).

**Completion.** Each shard writes its own run record. Under ``torchrun`` the ranks wait for each
other at the end (:class:`ShardGroup`, a gloo process group over CPU objects only, whatever the
device) and rank 0 builds the server zip (davis17dev, ytvos18/19) when every rank finished
without error. Shards started with ``--shard`` know nothing of each other: build the zip when
all are done with ``python -m label_prop.evaluation.submission MODEL BENCHMARK``, which checks that every
expected PNG is there.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch.distributed as dist

from hvc.launch import DistContext
from hvc.errors import UsageError

T = TypeVar("T")

#: How long a rank waits at the end for the slowest one, seconds (the collective's timeout):
#: shards are balanced by frames, but frame sizes and machines differ.
WAIT_S = 24 * 3600
#: The rule, as written into the run records.
RULE = "longest-first greedy by frame count (ties: benchmark order, lowest shard)"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (both as given to ``--shard I/N``; ``0 <= index < count``).

    Raises:
        UsageError: ``count < 1`` or ``index`` out of ``0 .. count-1``.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"--shard {self.index}/{self.count}: need 0 <= I < N (shards are numbered from 0)")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` -> ``Shard(I, N)``.

        Raises:
            UsageError: not two integers separated by ``/``, or out of range.
        """
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise UsageError(f"--shard {text}: expected I/N, e.g. 0/4 (shards are numbered from 0)") from None
        return cls(i, n)

    @property
    def whole(self) -> bool:
        """True for the unsharded run (``0/1``)."""
        return self.count == 1

    @property
    def tag(self) -> str:
        """File-name suffix of this shard's run record: ``""`` unsharded, else ``-shardIofN``."""
        return "" if self.whole else f"-shard{self.index}of{self.count}"

    def select(self, names: Sequence[str], frame_counts: Sequence[int]) -> list[str]:
        """This shard's sequences among ``names`` (in their order), :func:`assign_shards`."""
        owner = assign_shards(frame_counts, self.count)
        return [n for n, o in zip(names, owner) if o == self.index]


def assign_shards(frame_counts: Sequence[int], count: int) -> list[int]:
    """The shard of each sequence (the module docstring's rule).

    Args:
        frame_counts: frames of each sequence, in the benchmark's order.
        count: number of shards ``N``.

    Returns:
        ``[len(frame_counts)]`` shard indices in ``0 .. N-1``; with fewer sequences than shards
        the last shards are empty.
    """
    load = [0] * count
    owner = [0] * len(frame_counts)
    for i in sorted(range(len(frame_counts)), key=lambda i: (-frame_counts[i], i)):
        s = min(range(count), key=lambda s: (load[s], s))
        owner[i] = s
        load[s] += frame_counts[i]
    return owner


def shard_for_run(spec: str | None, ctx: DistContext) -> Shard:
    """The shard of this process: ``--shard I/N`` when given, ``RANK/WORLD_SIZE`` under torchrun,
    else the whole benchmark.

    Raises:
        UsageError: both ``--shard`` and a torchrun launch, or a bad ``spec``.
    """
    if ctx.distributed:
        if spec is not None:
            raise UsageError(f"--shard {spec} under torchrun: each rank already runs shard RANK/WORLD_SIZE; "
                             f"drop --shard or launch without torchrun")
        return Shard(ctx.rank, ctx.world_size)
    return Shard.parse(spec) if spec is not None else Shard()


class ShardGroup:
    """The processes of a ``torchrun`` launch, for the few messages the shards exchange (a gloo
    process group: CPU objects only, so it needs no GPU), or a single process (no group).

    Args:
        ctx: this process's place in the launch (:func:`hvc.launch.dist_context_from_env`).
        wait_s: timeout of each collective, seconds (default :data:`WAIT_S`).

    Use it as a context manager; the group it created is destroyed on exit.
    """

    def __init__(self, ctx: DistContext, wait_s: float = WAIT_S):
        self.ctx, self._own = ctx, False
        if ctx.distributed and not dist.is_initialized():
            dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.world_size,
                                    timeout=datetime.timedelta(seconds=wait_s))
            self._own = True

    def __enter__(self) -> "ShardGroup":
        return self

    def __exit__(self, *exc) -> None:
        if self._own and dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (``obj`` itself without a group). A collective."""
        if not self.ctx.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without a group). A collective."""
        if not self.ctx.distributed:
            return [obj]
        out: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(out, obj)
        return out


def run_together(group: ShardGroup, body: Callable[[], T], finish: Callable[[T], None] | None = None) -> T:
    """Run ``body()`` on every rank, then ``finish(result)`` on rank 0 when every rank succeeded.

    An expected failure of ``body`` (ValueError, FileNotFoundError, FileExistsError: bad data or
    usage) is held until the ranks have exchanged their outcome, so that no rank waits for one
    that has given up; it is then raised on the rank where it happened. Any other exception
    ends the process at once (torchrun then stops the other ranks).

    Returns:
        ``body()``'s result.

    Raises:
        the failure of ``body`` on this rank; on rank 0, ValueError when another rank failed
        (``finish`` is not run).
    """
    result, err = None, None
    try:
        result = body()
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        err = exc
    failed = [r for r, ok in enumerate(group.gather(err is None)) if not ok]
    if err is not None:
        raise err
    if group.ctx.is_main:
        if failed:
            raise ValueError(f"shard(s) {', '.join(map(str, failed))} of {group.ctx.world_size} failed (see their "
                             f"messages); the other shards' results are written")
        if finish is not None:
            finish(result)
    return result
