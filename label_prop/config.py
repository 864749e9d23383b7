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
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from hvc.errors import UsageError


def check_settings(checks) -> None:
    """Raise the first failed check of ``(ok, message, value)`` triples (a config's ranges).

    Raises:
        UsageError: ``"{message}, got {value}"`` of the first check that is not ``ok``.
    """
    for ok, msg, value in checks:
        if not ok:
            raise UsageError(f"{msg}, got {value}")


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
        check_settings(checks)

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


#: Kinds of kNN index of the object memory (:class:`MemoryConfig.index`).
MEMORY_INDEXES = ("auto", "flat", "ivf", "hnsw")


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple | None = None) -> Any:
    """A config field stated once: its default and its help (with ``{default}`` filled in), the
    command-line flag when it is not ``--field-name``, and the allowed values; read by
    :func:`add_setting_arguments`."""
    meta = {"help": help, "flag": flag, "choices": choices}
    return field(default=default, metadata=meta)


def add_setting_arguments(group, cls, defaults: Mapping[str, Any] | None = None) -> None:
    """One option per :func:`setting` field of the dataclass ``cls``: ``--field-name`` (or its
    flag), its type from the default (a bool default False: a switch), its choices, and its help
    with the default (``defaults`` overrides some: a command that starts elsewhere)."""
    d = cls(**(defaults or {}))
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        value = getattr(d, f.name)
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        text = f.metadata["help"].format(default=value)
        if isinstance(value, bool):
            group.add_argument(flag, dest=f.name, action="store_true", default=value, help=text)
        else:
            group.add_argument(flag, dest=f.name, type=type(value), default=value, choices=f.metadata["choices"],
                               help=text)


@dataclass(frozen=True)
class MemoryConfig:
    """The long-term object memory and re-identification of lost objects
    (:mod:`label_prop.propagation.memory`; docs/reid.md). Off unless ``reid`` is set. Each field's
    help is its documentation.

    Raises:
        UsageError: a value out of range (the message names the option).
    """

    reid: bool = setting(False, "re-identify lost objects: keep a bank of feature vectors per object and for the "
                                "background, search it over the whole frame (faiss) for an object that was lost, and "
                                "restart its propagation where it is found (docs/reid.md; off by default)")
    bank_size: int = setting(2000, "most feature vectors kept per object and for the background, reservoir-sampled, so "
                                   "memory stays flat for any video length (default {default})")
    admit_every: int = setting(5, "a tracked object whose mass is within a factor 2 of its median adds its confident "
                                  "positions to its bank every N frames (default {default})")
    admit_confidence: float = setting(0.9, "soft label, 0..1, that a position needs to enter a bank (default {default})")
    prototypes: int = setting(8, "k-means prototypes per bank: the object's descriptors (default {default})")
    lost_ratio: float = setting(0.25, "an object is lost when its mass (grid cells where its label wins) falls below this "
                                      "fraction of its median over the last --history tracked frames (default {default})")
    history: int = setting(10, "frames of mass history behind the lost rule (default {default})")
    knn: int = setting(10, "neighbours per position in the global search (default {default})", flag="--reid-knn")
    vote: float = setting(0.3, "a core position of a found object has at least this fraction of its neighbours from "
                               "the object's bank (default {default}; chosen on the dev half)")
    margin: float = setting(0.0, "... and is closer (cosine) to the object's nearest prototype than to the "
                                 "background's by this (default {default})")
    found_ratio: float = setting(0.2, "the object is found when the region around its core positions covers this "
                                      "fraction of its median mass (default {default}; chosen on the dev half)")
    index: str = setting("auto", "kNN index: flat (exact), ivf, hnsw, or auto = flat up to --approx-above vectors, "
                                 "ivf beyond (default {default})", flag="--memory-index", choices=MEMORY_INDEXES)
    approx_above: int = setting(100_000, "vectors above which auto uses ivf (default {default})")
    ivf_lists: int = setting(256, "IVF inverted lists (default {default})")
    ivf_probe: int = setting(16, "IVF lists probed per query (default {default})")
    hnsw_m: int = setting(32, "HNSW neighbours per node (default {default})")

    def __post_init__(self) -> None:
        checks = (
            (self.bank_size >= 16, "--bank-size must be >= 16 vectors", self.bank_size),
            (self.admit_every >= 1, "--admit-every must be >= 1 frame", self.admit_every),
            (0 <= self.admit_confidence <= 1, "--admit-confidence must be in [0, 1]", self.admit_confidence),
            (self.prototypes >= 1, "--prototypes must be >= 1", self.prototypes),
            (0 < self.lost_ratio < 1, "--lost-ratio must be in (0, 1)", self.lost_ratio),
            (self.history >= 1, "--history must be >= 1 frame", self.history),
            (self.knn >= 1, "--reid-knn must be >= 1", self.knn),
            (0 < self.vote <= 1, "--vote must be in (0, 1]", self.vote),
            (-2 <= self.margin <= 2, "--margin must be in [-2, 2]", self.margin),
            (self.found_ratio > 0, "--found-ratio must be > 0", self.found_ratio),
            (self.index in MEMORY_INDEXES, f"--memory-index must be one of {', '.join(MEMORY_INDEXES)}", self.index),
            (self.approx_above >= 1 and self.ivf_lists >= 1 and self.ivf_probe >= 1 and self.hnsw_m >= 4,
             "--approx-above, --ivf-lists, --ivf-probe must be >= 1 and --hnsw-m >= 4",
             (self.approx_above, self.ivf_lists, self.ivf_probe, self.hnsw_m)),
        )
        check_settings(checks)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add one option per field (``--reid``, ``--bank-size``, ...) with its default and help."""
        add_setting_arguments(parser.add_argument_group("object memory and re-identification (docs/reid.md)"),
                              MemoryConfig)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "MemoryConfig":
        """The config of the fields present in ``values`` (e.g. ``vars(parsed_args)``), defaults elsewhere.

        Raises:
            UsageError: a value out of range.
        """
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
