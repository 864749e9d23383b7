"""The settings of label propagation, stated once (docs/method.md, "Label propagation").

:class:`PropagationConfig` is passed whole from the command line (:meth:`PropagationConfig.add_arguments`,
:meth:`PropagationConfig.from_mapping`) to :class:`label_prop.propagation.pipeline.VideoSegmenter`,
:class:`label_prop.propagation.multiref.MultiRefPropagator`, :class:`label_prop.propagation.engine.LabelPropagator` and
the dense specification :mod:`label_prop.propagation.reference`. The defaults are the public HVC code's test
settings (its ``core/config.py``: RADIUS, TEMP, KNN, CXT_SIZE, INPUT_SIZE, NUM_CLASSES). The
device is not a setting: features and propagation run where the encoder is.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any, Mapping

from hvc.errors import UsageError


@dataclass(frozen=True)
class PropagationConfig:
    """The label-propagation protocol and its input (see the comment on each field).

    Raises:
        UsageError: a value out of range (the message names the option).
    """

    # Number of nearest context positions (candidates, over all context entries) whose labels a
    # query position averages: the top-k of its dot products. Reference (KNN): 15.
    topk: int = 15
    # Softmax temperature over those top-k dot products (features are unit vectors, so the
    # products are cosine similarities in [-1, 1]); lower = closer to the single best match.
    # Reference (TEMP): 0.1.
    temperature: float = 0.1
    # Spatial limit of the short-term context, in feature-grid cells (1 cell = 8 pixels of the
    # scaled frame): a position of a short-term frame is a candidate for a query when their
    # Euclidean grid distance is strictly below it. Frame 0 has no limit. Reference (RADIUS): 12.
    radius: float = 12
    # Short-term context frames: frame t is labelled from frames t-n_context .. t-1 (frame 0 in
    # place of the indices below 0) plus frame 0 as long-term memory. Memory grows with it, not
    # with the video's length. Reference (CXT_SIZE): 50.
    n_context: int = 50
    # Short side, in pixels, that frames are scaled to before feature extraction (bilinear,
    # align_corners=True), -1 for full resolution. Annotations stay at full resolution (their
    # one-hot masks are downsampled to the feature grid) and predictions are upsampled to the
    # frame's size, so masks are written and scored at full size. Reference (INPUT_SIZE): -1.
    input_size: int = -1
    # Object channels (background not counted) reserved when the objects of a video are
    # discovered while streaming (annotations that introduce ids mid-video, not listed in
    # advance). Reference (NUM_CLASSES): 20 channels = 19 objects + background.
    max_objects: int = 19

    def __post_init__(self) -> None:
        checks = (
            (self.topk >= 1, "--topk must be >= 1", self.topk),
            (self.temperature > 0, "--temperature must be > 0", self.temperature),
            (self.radius > 0, "--radius must be > 0 (grid cells)", self.radius),
            (self.n_context >= 0, "--n-context must be >= 0", self.n_context),
            (self.input_size == -1 or self.input_size >= 1,
             "--input-size must be -1 (full resolution) or >= 1 pixels", self.input_size),
            (self.max_objects >= 1, "--max-objects must be >= 1", self.max_objects),
        )
        for ok, msg, value in checks:
            if not ok:
                raise UsageError(f"{msg}, got {value}")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
        """Add one option per field (``--topk``, ..., ``--max-objects``) with its default and help.

        Args:
            defaults: fields whose command-line default differs from the protocol's (e.g. the
                browser app's smaller input size); the help states them.

        Raises:
            UsageError: a default out of range.
        """
        g = parser.add_argument_group("propagation (docs/method.md, 'Label propagation')")
        d = PropagationConfig(**(defaults or {}))
        g.add_argument("--topk", type=int, default=d.topk,
                       help=f"context positions whose labels each query position averages (default {d.topk})")
        g.add_argument("--temperature", type=float, default=d.temperature,
                       help=f"softmax temperature over the top-k dot products of unit features, no unit "
                            f"(default {d.temperature})")
        g.add_argument("--radius", type=float, default=d.radius,
                       help=f"short-term spatial limit in feature-grid cells of 8 pixels (strict <; default {d.radius:g})")
        g.add_argument("--n-context", type=int, default=d.n_context,
                       help=f"short-term context, in frames, besides frame 0 (default {d.n_context})")
        g.add_argument("--input-size", type=int, default=d.input_size,
                       help=f"scale frames so that their short side is this many pixels before feature extraction "
                            f"(bilinear; -1 = full resolution; default {d.input_size}); masks are written and scored "
                            f"at full size")
        g.add_argument("--max-objects", type=int, default=d.max_objects,
                       help=f"object channels when ids are discovered while streaming (default {d.max_objects}, as HVC)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "PropagationConfig":
        """The config of the fields present in ``values`` (e.g. ``vars(parsed_args)``), defaults elsewhere.

        Raises:
            UsageError: a value out of range.
        """
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
