"""Internal adapter between the interactive session and the propagation engine.

The session needs one operation: start from an annotated frame's features and soft labels and
propagate through a list of frames in the order given (later frames for forward propagation,
earlier frames in reverse order for backward propagation), keeping each frame's *soft* labels
(the two directions are fused before the argmax). This module is the only place that calls the
engine (:class:`label_prop.engine.LabelPropagator`: the annotated frame is the engine's frame 0,
its soft labels the long-term memory, the propagated soft labels the short-term context, as in
the CRW / HVC protocol; docs/method.md), with the :class:`~label_prop.config.PropagationConfig`
passed whole.

Not :class:`label_prop.pipeline.VideoSegmenter`: it returns each frame's argmax ids (upsampled
to full size), starts propagating only once an object is present (a frame annotated as all
background must propagate too), and holds one direction's merged labels at a time.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from label_prop.config import PropagationConfig
from label_prop.engine import LabelPropagator


@torch.no_grad()
def propagate_from(anchor_feat: torch.Tensor, anchor_labels: torch.Tensor, feats: Sequence[torch.Tensor],
                   config: PropagationConfig = PropagationConfig()) -> Iterator[torch.Tensor]:
    """Propagate an annotated frame's soft labels through ``feats`` in the given order.

    Args:
        anchor_feat: ``[C, h, w]`` features of the annotated frame (L2-normalised; any float
            dtype, used as float32 on its device, where the engine runs).
        anchor_labels: ``[K, h, w]`` its soft labels (channel 0 = background).
        feats: the frames to label, each ``[C, h, w]``, in propagation order.
        config: the protocol (topk, temperature, radius, n_context).

    Yields:
        ``[K, h, w]`` float32 soft labels of each frame of ``feats``, in order.

    Raises:
        ValueError: shapes disagree (from the engine).
    """
    dev = anchor_feat.device
    prop = LabelPropagator(anchor_feat.to(dev, torch.float32), anchor_labels.to(dev, torch.float32), config)
    for f in feats:
        yield prop.step(f.to(dev, torch.float32))
