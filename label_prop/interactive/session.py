"""An interactive segmentation session over one video: scribbles or masks in, masks of every
frame and a recommended frame out.

The round-based interaction of GIS (Heo, Koh and Kim, "Guided Interactive Video Object
Segmentation Using Reliability-Based Attention Maps", CVPR 2021) on our correspondence
features and label-propagation engine, not on GIS's networks:

1. the user annotates a frame (strokes per object and for the background, or a full mask);
   strokes become a mask by seeded segmentation (:mod:`label_prop.interactive.seeded`), and an
   annotated frame's mask is fixed from then on (until the user annotates that frame again);
2. every frame between two annotated frames ``a < t < b`` is labelled from both: the engine
   propagates forward from ``a`` (frames ``a+1 .. b-1``) and backward from ``b`` (frames
   ``b-1 .. a+1``, in reverse order), and the two soft labels are fused by temporal distance,
   ``y_t = (b - t) / (b - a) * y_fwd + (t - a) / (b - a) * y_bwd``; frames before the first
   annotated frame take the backward propagation only, frames after the last the forward one;
3. a new annotation at ``t`` changes only the frames between its neighbouring annotated frames,
   and only those are recomputed (:attr:`InteractiveSession.changed_frames`);
4. each propagated frame gets a reliability score from the propagation itself, the confidence
   of its fused soft labels around the objects (see
   :meth:`InteractiveSession.reliability`), and :meth:`InteractiveSession.recommend` returns the
   least reliable frame as the one to annotate next.

Everything that goes in and out is plain numpy arrays, ints and dicts, so that a browser front
end can drive a session (frames in, scribbles in, masks and a recommended frame out).

Memory: the frames (``T * H * W * 3`` bytes), their features, cached once (``C * h * w`` values
per frame, float16 by default: 3.3 MB per 854x480 frame at full input size, ``C = 256`` on a
60x107 grid; 0.83 MB at ``propagation.input_size=240``), the masks (``H * W`` bytes per frame) and the
propagated soft labels (``K * h * w`` float32 per frame, 77 kB at 480p with ``K = 3``). One
propagation at a time holds the engine's context buffer (see
:class:`label_prop.propagation.engine.LabelPropagator`).
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hvc.errors import UsageError
from label_prop.config import PropagationConfig
from label_prop.propagation.features import FrameEncoder
from label_prop.interactive.scribbles import check_scribbles, merge_scribbles, rasterize
from label_prop.interactive.seeded import SeedConfig, scribble_mask
from label_prop.data.io import VOID_ID
from label_prop.propagation.engine import LabelPropagator
from label_prop.propagation.multiref import masks_on_grid
from label_prop.propagation.pipeline import labels_to_ids

FEATURE_DTYPES = {"float16": torch.float16, "float32": torch.float32}

#: ``progress(stage, done, total)``: called with ``"features"`` once per encoded frame and with
#: ``"propagation"`` once per propagated frame and direction (``done`` of ``total`` frames).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Snapshot:
    """What :meth:`InteractiveSession.snapshot` keeps to undo an interaction: the masks
    (zlib-compressed), reliability, strokes and their widths, the annotated frames' soft labels and
    the objects. Opaque to callers; restore it with :meth:`InteractiveSession.restore`."""

    masks: bytes
    reliability: np.ndarray
    strokes: dict
    widths: dict
    annotated: dict
    object_ids: tuple

    @property
    def nbytes(self) -> int:
        """Approximate bytes held (compressed masks, soft labels of the annotated frames)."""
        return len(self.masks) + sum(t.numel() * t.element_size() for t in self.annotated.values())


@dataclass(frozen=True)
class InteractiveConfig:
    """Settings of an interactive session, passed whole."""

    #: The propagation protocol between annotated frames, and the input size of feature
    #: extraction (``propagation.input_size``: short side in pixels, -1 = full resolution; masks
    #: are always at the frames' size). Its ``max_objects`` is not used: the objects are given.
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    #: How strokes become an annotated frame's mask.
    seeds: SeedConfig = field(default_factory=SeedConfig)
    #: Storage type of the cached features: ``"float16"`` (half the memory) or ``"float32"``.
    feature_dtype: str = "float16"

    def __post_init__(self):
        if self.feature_dtype not in FEATURE_DTYPES:
            raise UsageError(f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {self.feature_dtype!r}")


class InteractiveSession:
    """Interactive segmentation of one video (see the module docstring).

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB frames (an array or a sequence of ``[H, W, 3]`` arrays).
        encoder: the feature extractor; features are computed once here, on its device (where
            the propagation runs too).
        object_ids: the object ids to segment (1..254); masks hold these and 0 (background);
            more can be added later (:meth:`add_object`).
        config: the session's settings.
        progress: optional :data:`Progress` callback, told of each encoded frame here and of each
            propagated frame in :meth:`annotate` (a front end streams it; it must not raise).

    Raises:
        ValueError: no frame, frames of different sizes or not uint8 RGB, or bad object ids.
    """

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], encoder: FrameEncoder,
                 object_ids: Sequence[int] = (1,), config: InteractiveConfig = InteractiveConfig(),
                 progress: Progress | None = None):
        frames = [np.asarray(f) for f in frames]
        if not frames:
            raise ValueError("a session needs at least one frame")
        size = frames[0].shape[:2]
        for t, f in enumerate(frames):
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frame {t} must be [H, W, 3] uint8 RGB, got {f.shape} {f.dtype}")
            if f.shape[:2] != size:
                raise ValueError(f"frame {t} has size {f.shape[:2]}, frame 0 {size}")
        ids = [int(i) for i in object_ids]
        if not ids or len(set(ids)) != len(ids) or any(not 0 < i < VOID_ID for i in ids):
            raise ValueError(f"object ids must be distinct integers in 1..254, got {list(object_ids)}")
        self.config = config
        self.progress = progress
        self.frames = frames
        self.size = (int(size[0]), int(size[1]))
        self.object_ids = ids
        #: Labels: 0 (background) then the object ids; channel ``c`` of soft labels is ``labels[c]``.
        self.labels = [0, *ids]
        self._chan_ids = np.asarray(self.labels, dtype=np.uint8)
        self.device = encoder.device
        dtype = FEATURE_DTYPES[config.feature_dtype]
        self.features = []
        with torch.no_grad():
            for t, f in enumerate(frames):
                self.features.append(encoder.encode_frame(f, config.propagation.input_size).to(dtype))
                self._tell("features", t + 1, len(frames))
        self.grid = tuple(self.features[0].shape[1:])
        T = len(frames)
        self._masks = np.zeros((T, *self.size), dtype=np.uint8)
        self._reliability = np.full(T, np.nan)
        self._strokes: dict[int, dict[int, list[np.ndarray]]] = {}
        self._widths: dict[int, dict[int, list[int]]] = {}  # frame -> label -> width of each stroke, pixels
        self._annotated: dict[int, torch.Tensor] = {}  # frame -> [K, h, w] soft labels of its fixed mask
        #: Frames whose masks the last :meth:`annotate` call recomputed (the annotated frame included).
        self.changed_frames: list[int] = []

    # ------------------------------------------------------------------ public
    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return len(self.frames)

    @property
    def annotated_frames(self) -> list[int]:
        """Indices of the annotated frames, ascending."""
        return sorted(self._annotated)

    @property
    def feature_bytes_per_frame(self) -> int:
        """Bytes of cached features per frame (``C * h * w * itemsize``)."""
        f = self.features[0]
        return f.numel() * f.element_size()

    def masks(self) -> np.ndarray:
        """``[T, H, W]`` uint8 ids of every frame (a copy; all 0 before the first annotation)."""
        return self._masks.copy()

    def mask(self, frame: int) -> np.ndarray:
        """``[H, W]`` uint8 ids of one frame (a copy).

        Raises:
            ValueError: a bad frame index.
        """
        return self._masks[self._check_frame(frame)].copy()

    def state(self) -> dict:
        """The session's state as plain JSON-ready values (for a front end; masks via :meth:`masks`):
        ``{"num_frames", "size": [H, W], "object_ids", "annotated_frames", "changed_frames",
        "reliability": [T] (None before the first annotation), "recommended": int or None}``."""
        rel = [None if np.isnan(r) else float(r) for r in self._reliability]
        return {"num_frames": self.num_frames, "size": list(self.size), "object_ids": list(self.object_ids),
                "annotated_frames": self.annotated_frames, "changed_frames": list(self.changed_frames),
                "reliability": rel, "recommended": self.recommend() if self._annotated else None}

    def strokes(self, frame: int) -> dict[int, list[np.ndarray]]:
        """The strokes given so far on ``frame``, ``{label: [[N, 2] (x, y), ...]}`` (a copy)."""
        return {k: list(v) for k, v in self._strokes.get(self._check_frame(frame), {}).items()}

    def stroke_widths(self, frame: int) -> dict[int, list[int]]:
        """The width in pixels of each stroke of :meth:`strokes` on ``frame``, ``{label: [width, ...]}``."""
        return {k: list(v) for k, v in self._widths.get(self._check_frame(frame), {}).items()}

    def add_object(self, obj_id: int) -> None:
        """Add an object to segment from now on: it has no pixel until an annotation gives it some
        (its soft-label channel is 0 on the frames annotated so far).

        Raises:
            ValueError: ``obj_id`` is not in 1..254 or is already an object of the session.
        """
        i = int(obj_id)
        if i != obj_id or not 0 < i < VOID_ID or i in self.object_ids:
            raise ValueError(f"object id {obj_id!r} must be a new integer in 1..254 (objects: {self.object_ids})")
        self._set_objects([*self.object_ids, i])
        self._annotated = {t: torch.cat([y, y.new_zeros((1, *y.shape[1:]))]) for t, y in self._annotated.items()}

    def snapshot(self) -> Snapshot:
        """The session's state after the interactions so far (features and frames excluded, they
        do not change), for :meth:`restore` (an undo)."""
        return Snapshot(masks=zlib.compress(self._masks.tobytes(), 1), reliability=self._reliability.copy(),
                        strokes=copy.deepcopy(self._strokes), widths=copy.deepcopy(self._widths),
                        annotated=dict(self._annotated), object_ids=tuple(self.object_ids))

    def restore(self, snap: Snapshot) -> None:
        """Return to the state of ``snap`` (taken from this session by :meth:`snapshot`); the frames
        whose masks differ from the current ones become :attr:`changed_frames`."""
        masks = np.frombuffer(zlib.decompress(snap.masks), dtype=np.uint8).reshape(self._masks.shape)
        self.changed_frames = [t for t in range(self.num_frames) if not np.array_equal(masks[t], self._masks[t])]
        self._masks = masks.copy()
        self._reliability = snap.reliability.copy()
        self._strokes, self._widths = copy.deepcopy(snap.strokes), copy.deepcopy(snap.widths)
        self._annotated = dict(snap.annotated)
        self._set_objects(list(snap.object_ids))

    def annotate(self, frame: int, scribbles: Mapping | None = None, *, mask: np.ndarray | None = None,
                 width: int | None = None) -> np.ndarray:
        """Annotate one frame and update the masks of the frames it can change.

        Args:
            frame: the frame index, ``0 <= frame < T``.
            scribbles: ``{label: [stroke, ...]}`` with ``label`` 0 (background) or an object id
                and each stroke ``[N, 2]`` ``(x, y)`` pixel coordinates (see
                :mod:`label_prop.interactive.scribbles`; JSON-style string keys are accepted).
                Strokes add to those given on this frame since its last full mask. The first
                annotation of the session needs background strokes too.
            mask: instead of scribbles, the frame's full mask ``[H, W]`` of ids (0, the object
                ids; 255 = void is taken as background).
            width: width in pixels of these strokes (a brush size; default
                ``config.seeds.stroke_width``); earlier strokes keep theirs.

        Returns:
            ``[T, H, W]`` uint8 ids of every frame (as :meth:`masks`).

        Raises:
            ValueError: a bad frame index, both or neither of ``scribbles`` and ``mask``, a width
                below 1, bad strokes (:func:`~label_prop.interactive.scribbles.check_scribbles`), no seed for
                the background, or a mask of the wrong size or with unknown ids.
        """
        t = self._check_frame(frame)
        if (scribbles is None) == (mask is None):
            raise ValueError("give either scribbles or a mask")
        if mask is not None:
            ids = self._check_mask(mask)
            self._strokes.pop(t, None)  # a full mask replaces the frame's strokes
            self._widths.pop(t, None)
        else:
            new = check_scribbles(scribbles, self.labels)
            if not new:
                raise ValueError(f"frame {t}: no stroke given")
            w = self.config.seeds.stroke_width if width is None else width
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                raise ValueError(f"stroke width must be an integer >= 1 pixel, got {width!r}")
            strokes = merge_scribbles(self._strokes.get(t, {}), new)
            widths = merge_scribbles(self._widths.get(t, {}), {k: [int(w)] * len(v) for k, v in new.items()})
            drawn = rasterize(strokes, self.size, self.config.seeds.stroke_width, widths)
            prior = self._masks[t] if self._annotated else None
            ids = scribble_mask(self.frames[t], drawn, self.labels, prior=prior, features=self.features[t],
                                cfg=self.config.seeds)
            self._strokes[t], self._widths[t] = strokes, widths
        self._masks[t] = ids
        self._reliability[t] = 1.0
        self._annotated[t] = masks_on_grid(ids, {i: c for c, i in enumerate(self.labels) if c}, len(self.labels),
                                           self.grid, with_background=True)
        before = [a for a in self._annotated if a < t]
        after = [b for b in self._annotated if b > t]
        spans = [(max(before) if before else None, t), (t, min(after) if after else None)]
        total = sum(len(self._between(a, b)) * ((a is not None) + (b is not None)) for a, b in spans)
        done = [0]

        def step() -> None:
            done[0] += 1
            self._tell("propagation", done[0], total)

        changed = [t]
        for a, b in spans:
            changed += self._recompute(a, b, step)
        self.changed_frames = sorted(changed)
        return self.masks()

    def reliability(self) -> np.ndarray:
        """``[T]`` reliability scores in [0, 1]: 1 for annotated frames, NaN before the first annotation.

        For a propagated frame: the mean confidence ``max_k y_k`` of its fused soft labels ``y``
        over the grid cells where ``y`` or either propagation direction finds an object (dilated
        by one cell; every cell when there is none). Where the two directions disagree and carry
        similar weights the fused labels are uncertain; near an annotated frame its direction
        dominates and the confidence is its own.
        """
        return self._reliability.copy()

    def recommend(self) -> int | None:
        """The frame to annotate next: the least reliable frame that is not annotated (ties: the
        one farthest from an annotated frame, then the earliest); None when every frame is annotated.

        Raises:
            ValueError: nothing is annotated yet.
        """
        ranked = self.ranked_frames()
        return ranked[0] if ranked else None

    def ranked_frames(self) -> list[int]:
        """The frames that are not annotated, least reliable first (the order of :meth:`recommend`).

        Raises:
            ValueError: nothing is annotated yet.
        """
        if not self._annotated:
            raise ValueError("nothing is annotated yet: annotate a frame first")
        ann = np.asarray(self.annotated_frames)
        free = [t for t in range(self.num_frames) if t not in self._annotated]
        return sorted(free, key=lambda t: (self._reliability[t], -int(np.abs(ann - t).min()), t))

    # ----------------------------------------------------------------- helpers
    def _tell(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def _set_objects(self, ids: list[int]) -> None:
        self.object_ids = ids
        self.labels = [0, *ids]
        self._chan_ids = np.asarray(self.labels, dtype=np.uint8)

    def _check_frame(self, frame: int) -> int:
        t = int(frame)
        if t != frame or not 0 <= t < self.num_frames:
            raise ValueError(f"frame {frame!r} is not an index in 0..{self.num_frames - 1}")
        return t

    def _check_mask(self, mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask)
        if m.shape != self.size:
            raise ValueError(f"mask size {m.shape} differs from the frames' {self.size}")
        m = np.where(m == VOID_ID, 0, m)
        unknown = sorted(set(np.unique(m).tolist()) - set(self.labels))
        if unknown:
            raise ValueError(f"mask holds ids {unknown} that are not objects of the session {self.object_ids}")
        return m.astype(np.uint8)

    def _between(self, a: int | None, b: int | None) -> list[int]:
        """The frames strictly between ``a`` and ``b`` (None = the video's start / end)."""
        return list(range(0 if a is None else a + 1, self.num_frames if b is None else b))

    def _recompute(self, a: int | None, b: int | None, step: Callable[[], None]) -> list[int]:
        """Relabel the frames strictly between ``a`` and ``b`` (None = the video's start / end);
        ``step()`` after each propagated frame."""
        frames = self._between(a, b)
        if not frames:
            return []
        cfg = self.config.propagation
        fwd = bwd = None
        if a is not None:
            fwd = _propagate(self.features[a], self._annotated[a], [self.features[t] for t in frames], cfg, step)
        if b is not None:
            bwd = _propagate(self.features[b], self._annotated[b], [self.features[t] for t in reversed(frames)],
                             cfg, step)[::-1]
        for i, t in enumerate(frames):
            if fwd is not None and bwd is not None:
                wb = (t - a) / (b - a)
                y = (1.0 - wb) * fwd[i] + wb * bwd[i]
            else:
                y = fwd[i] if fwd is not None else bwd[i]
            self._masks[t] = labels_to_ids(y, self.size, self._chan_ids)
            self._reliability[t] = _reliability(y, fwd[i] if fwd is not None else None,
                                                bwd[i] if bwd is not None else None)
        return frames


def _reliability(y: torch.Tensor, fwd: torch.Tensor | None, bwd: torch.Tensor | None) -> float:
    """See :meth:`InteractiveSession.reliability`; ``y``, ``fwd``, ``bwd``: ``[K, h, w]`` soft labels."""
    conf, arg = y.max(0)
    fg = arg > 0
    dirs = [d.argmax(0) for d in (fwd, bwd) if d is not None]
    for d in dirs:
        fg |= d > 0
    fg = F.max_pool2d(fg[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    return float(conf[fg].mean()) if fg.any() else float(conf.mean())


@torch.no_grad()
def _propagate(anchor_feat: torch.Tensor, anchor_labels: torch.Tensor, feats: Sequence[torch.Tensor],
               config: PropagationConfig, step: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """An annotated frame's soft labels propagated through ``feats`` in the order given (later frames
    forwards, earlier ones in reverse order backwards): the annotated frame is the engine's frame 0,
    the propagated soft labels its short-term context (the CRW / HVC protocol, docs/method.md).

    Args:
        anchor_feat: ``[C, h, w]`` features of the annotated frame (L2-normalised; used as float32 on
            its device, where the engine runs).
        anchor_labels: ``[K, h, w]`` its soft labels (channel 0 = background).
        feats: the frames to label, each ``[C, h, w]``, in propagation order.
        step: optional, called after each propagated frame (progress).

    Returns:
        ``[K, h, w]`` float32 soft labels of each frame of ``feats``, in order (soft: the two
        directions are fused before the argmax).

    Raises:
        ValueError: shapes disagree (from the engine).
    """
    dev = anchor_feat.device
    prop = LabelPropagator(anchor_feat.to(dev, torch.float32), anchor_labels.to(dev, torch.float32), config)
    out = []
    for f in feats:
        out.append(prop.step(f.to(dev, torch.float32)))
        if step is not None:
            step()
    return out
