"""Internal adapter between the interactive session and the propagation engine.

The session needs one operation: start from an annotated frame's features and soft labels and
propagate through a list of frames in the order given (later frames for forward propagation,
earlier frames in reverse order for backward propagation). This module is the only place that
knows the engine's API (:class:`label_prop.engine.LabelPropagator`: frame 0 of the engine is the
annotated frame, its soft labels the long-term memory, the propagated soft labels the
short-term context, as in the CRW / HVC protocol).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from label_prop.engine import LabelPropagator


@dataclass(frozen=True)
class PropagationSettings:
    """The propagation protocol (CRW / HVC defaults; see :class:`label_prop.engine.LabelPropagator`)."""

    #: Candidates per query (CRW/HVC: 15).
    topk: int = 15
    #: Softmax temperature over the top-k affinities (CRW/HVC: 0.1).
    temperature: float = 0.1
    #: Short-term context limited to keys at grid distance < radius, grid cells (CRW/HVC: 12).
    radius: float = 12.0
    #: Short-term context frames (CRW/HVC: 50).
    n_context: int = 50


@torch.no_grad()
def propagate_from(anchor_feat: torch.Tensor, anchor_labels: torch.Tensor, feats: Sequence[torch.Tensor],
                   settings: PropagationSettings = PropagationSettings()) -> Iterator[torch.Tensor]:
    """Propagate an annotated frame's soft labels through ``feats`` in the given order.

    Args:
        anchor_feat: ``[C, h, w]`` features of the annotated frame (L2-normalised; any float
            dtype, converted to float32 on its device).
        anchor_labels: ``[K, h, w]`` its soft labels (channel 0 = background).
        feats: the frames to label, each ``[C, h, w]``, in propagation order.
        settings: the protocol.

    Yields:
        ``[K, h, w]`` float32 soft labels of each frame of ``feats``, in order.

    Raises:
        ValueError: shapes disagree or a setting is out of range (from the engine).
    """
    dev = anchor_feat.device
    prop = LabelPropagator(anchor_feat.to(dev, torch.float32), anchor_labels.to(dev, torch.float32),
                           topk=settings.topk, temperature=settings.temperature, radius=settings.radius,
                           n_context=settings.n_context)
    for f in feats:
        yield prop.step(f.to(dev, torch.float32))
