"""The resumable, shardable order of the training data: :class:`EpochSampler`.

Every dataset item is addressed by a key ``(index, seed)``: ``seed`` drives the crops of that
item, and :class:`EpochSampler` derives both the order and the seeds from ``(seed, epoch)``.
So the data of step ``k`` depends only on ``(seed, k)`` -- not on the number of workers, nor on
the number of processes of a distributed run (each rank takes its slice of every global batch),
nor on whether the run was interrupted and resumed (the reference checkpoints only the epoch,
docs/method.md, "Checkpoints and encoder files", so a resumed run restarts its epoch with new data).

The sampler orders any dataset with ``epoch_length()`` and ``epoch_indices(rng)`` (see
:class:`EpochSource`): the image and video datasets of :mod:`hvc.data.images` and
:mod:`hvc.data.video` both are.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np
from torch.utils.data import Sampler


class EpochSource(Protocol):
    """What :class:`EpochSampler` needs of a dataset (:class:`hvc.data.images.TwoViewDataset`)."""

    def epoch_length(self) -> int:
        """Number of items one epoch visits."""

    def epoch_indices(self, rng: np.random.Generator) -> np.ndarray:
        """The item indices of one epoch, in training order (``int64 [epoch_length]``)."""


class EpochSampler(Sampler):
    """Order and crop seeds of every epoch, derived from ``(seed, epoch)`` only; resumable and
    shardable over the ranks of a distributed run.

    ``set_epoch(epoch, start)`` selects the epoch and the first position to yield; iterating
    yields ``(index, item_seed)`` keys for :class:`hvc.data.images.TwoViewDataset`. The generator of epoch ``e``
    is ``numpy.random.default_rng([seed, e])``: it draws the order (``dataset.epoch_indices``)
    and then one 63-bit crop seed per position -- the same on every rank.

    With ``batch_size`` (the *global* batch ``B``, split over ``world_size`` ranks), only
    complete global batches are yielded and rank ``r`` gets positions
    ``[g B + r B / W, g B + (r + 1) B / W)`` of every global batch ``g``: the ranks' slices of
    step ``k`` together are exactly the batch a single process trains on at step ``k``.
    Without it (the default), every position from ``start`` on is yielded.

    Args:
        dataset: the :class:`hvc.data.images.TwoViewDataset` (any :class:`EpochSource`) to order.
        seed: seed of the orders and crop seeds.
        rank, world_size: this process's rank and the number of processes (0, 1 when not
            distributed).
        batch_size: the global batch ``B`` (a multiple of ``world_size``), or None.

    Raises:
        ValueError: ``rank`` outside ``[0, world_size)``, ``batch_size`` not a positive multiple
            of ``world_size``, ``start`` outside ``[0, epoch_length]`` or (with ``batch_size``)
            not a multiple of it.
    """
    def __init__(self, dataset: EpochSource, seed: int, rank: int = 0, world_size: int = 1,
                 batch_size: Optional[int] = None):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, world size {world_size})")
        if batch_size is not None and (batch_size < 1 or batch_size % world_size):
            raise ValueError(f"the global batch {batch_size} must be a positive multiple of the world size "
                             f"{world_size}")
        if batch_size is None and world_size > 1:
            raise ValueError("a sampler shared by several ranks needs the global batch size")
        self.dataset = dataset
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.epoch = 0
        self.start = 0

    @property
    def local_batch_size(self) -> Optional[int]:
        """Items per rank and step (``B / W``), or None without ``batch_size``."""
        return None if self.batch_size is None else self.batch_size // self.world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch ``epoch`` (0-based) and skip its first ``start`` positions (global)."""
        n = self.dataset.epoch_length()
        if not 0 <= start <= n:
            raise ValueError(f"start position {start} outside [0, {n}]")
        if self.batch_size is not None and start % self.batch_size:
            raise ValueError(f"start position {start} is not a multiple of the global batch {self.batch_size}")
        self.epoch, self.start = int(epoch), int(start)

    def epoch_keys(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(indices, seeds)`` of every position of ``epoch`` (``int64 [epoch_length]`` each)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        order = np.asarray(self.dataset.epoch_indices(rng), dtype=np.int64)
        seeds = rng.integers(0, 2**63 - 1, size=len(order), dtype=np.int64)
        return order, seeds

    def positions(self, length: int) -> range | List[int]:
        """Positions (of an epoch of ``length``) this rank yields, from ``start`` on."""
        if self.batch_size is None:
            return range(self.start, length)
        b, big = self.local_batch_size, self.batch_size
        return [g * big + self.rank * b + i for g in range(self.start // big, length // big) for i in range(b)]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order, seeds = self.epoch_keys(self.epoch)
        for k in self.positions(len(order)):
            yield int(order[k]), int(seeds[k])

    def __len__(self) -> int:
        return len(self.positions(self.dataset.epoch_length()))

    def state_dict(self) -> Dict[str, int]:
        """``{"seed", "epoch", "start"}`` (plain ints; ``start`` is a global position)."""
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}
