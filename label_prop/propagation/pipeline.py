"""Segment a video one frame at a time: the per-frame API of every caller (``run_test.sh``,
``label_prop.segment``, the demo) and the base of interactive use.

Intended use::

    encoder = build_encoder("random", device="cpu")          # label_prop.propagation.features; sets the device
    seg = VideoSegmenter(encoder, PropagationConfig(n_context=20))
    for t, image in enumerate(frames):                       # [H, W, 3] uint8 RGB
        ids = seg.step(image, first_mask if t == 0 else None)    # [H, W] uint8 object ids
    # cached features instead of images (e.g. seg.encode(image) kept from an earlier pass):
    ids = seg.step(features=feat, size=(H, W))
    # engine alone: LabelPropagator(first_feat, first_labels, config).step(feat) -> [K, h, w]

:class:`VideoSegmenter` owns the encoder call, the map of object ids to label channels
(:class:`ObjectChannels`; objects may start mid-video) and the multi-reference propagation
(:class:`label_prop.propagation.multiref.MultiRefPropagator`, one :class:`label_prop.propagation.engine.LabelPropagator`
per start frame). :func:`segment_frames` (a first-frame mask) and :func:`segment_plan` (a
dataset's :class:`~label_prop.data.plans.SequencePlan`) drive it over whole videos.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from label_prop.config import MemoryConfig, PropagationConfig
from label_prop.propagation.features import FrameEncoder
from label_prop.data.io import read_annotation, read_frame
from label_prop.propagation.multiref import MultiRefPropagator, masks_on_grid
from label_prop.data.plans import SequencePlan, starting_ids


@dataclass
class Timings:
    """Accumulated wall-clock seconds per stage and the number of frames (propagated frames for
    ``propagate``, all frames for the others)."""

    read: float = 0.0
    features: float = 0.0
    propagate: float = 0.0
    write: float = 0.0
    frames: int = 0
    propagated: int = 0

    def per_frame(self) -> dict[str, float]:
        """Seconds per frame of each stage (propagation per propagated frame)."""
        n, m = max(self.frames, 1), max(self.propagated, 1)
        return {
            "read_s_per_frame": self.read / n,
            "features_s_per_frame": self.features / n,
            "propagate_s_per_frame": self.propagate / m,
            "write_s_per_frame": self.write / n,
        }

    def add(self, other: "Timings") -> None:
        """Add ``other``'s seconds and counts to these."""
        for name in ("read", "features", "propagate", "write", "frames", "propagated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def labels_to_ids(labels: torch.Tensor, size: tuple[int, int], ids: np.ndarray) -> np.ndarray:
    """Upsample soft labels ``[K, h, w]`` to ``size = (H, W)`` pixels (bilinear, ``align_corners=True``,
    as HVC) and take the channel argmax; returns ``[H, W]`` uint8 object ids (``ids[channel]``)."""
    up = F.interpolate(labels[None].float(), size=size, mode="bilinear", align_corners=True)[0]
    # max(0).indices, not argmax(0): same indices (the first maximum), about 20x faster on CPU for
    # a few channels of a 480p frame (0.005 s against 0.1 s, one thread).
    return ids[up.max(0).indices.cpu().numpy()]


def first_frame_labels(mask: np.ndarray, grid: tuple[int, int],
                       object_ids: Sequence[int] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Soft labels of an annotated frame on the feature grid.

    Args:
        mask: ``[H, W]`` object ids (0 = background, 255 = void, treated as background).
        grid: ``(h, w)`` of the feature grid.
        object_ids: the ids to track (default: every id present in ``mask`` except 0 and 255).

    Returns:
        ``(labels [K, h, w] float32, ids [K] uint8)``: channel 0 is the background, channel
        ``c`` the object ``ids[c]``; the one-hot ``[K, H, W]`` mask downsampled bilinearly with
        ``align_corners=True`` (:func:`label_prop.propagation.multiref.masks_on_grid`).

    Raises:
        ValueError: ``mask`` is not 2-D, or a requested object id is absent from it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"first-frame mask must be [H, W], got shape {mask.shape}")
    present = starting_ids(mask, ())
    object_ids = present if object_ids is None else [int(i) for i in object_ids]
    missing = [i for i in object_ids if i not in present]
    if missing:
        raise ValueError(f"object ids {missing} are not in the first-frame mask (present: {present})")
    ids = np.array([0, *object_ids], dtype=np.uint8)
    labels = masks_on_grid(mask, {i: c for c, i in enumerate(object_ids, 1)}, len(ids), grid, with_background=True)
    return labels, ids


class ObjectChannels:
    """Object ids <-> label channels of one video; channel 0 is the background.

    Args:
        num_channels: ``K``.
        ids: ids given channels ``1, 2, ...`` in advance (the rest are free until objects start).

    Attributes:
        ids: ``[K]`` uint8, channel -> object id (0 = background or free).
        started: object id -> channel of every object that has started.
    """

    def __init__(self, num_channels: int, ids: Sequence[int] = ()):
        self.ids = np.zeros(num_channels, np.uint8)
        self._slot: dict[int, int] = {}
        for c, i in enumerate(ids, 1):
            self.ids[c], self._slot[int(i)] = i, c
        self.started: dict[int, int] = {}

    def start(self, new: Sequence[int], source: str, hint: str = "") -> dict[int, int]:
        """Start objects ``new`` (not started yet): their channel, a free one for ids without one.

        Returns:
            id -> channel of ``new``.

        Raises:
            ValueError: no free channel is left (names ``source``; ``hint`` is appended).
        """
        out = {}
        for i in new:
            if i not in self._slot:
                free = [c for c in range(1, len(self.ids)) if self.ids[c] == 0]
                if not free:
                    raise ValueError(f"{source}: object {i} exceeds the {len(self.ids) - 1} object channels{hint}")
                self.ids[free[0]], self._slot[i] = i, free[0]
            out[i] = self.started[i] = self._slot[i]
        return out


class VideoSegmenter:
    """Per-frame video object segmentation by label propagation (see the module docstring).

    Args:
        encoder: frames to features; its device is where everything runs.
        config: the propagation protocol and input size.
        object_ids: every id to track, in channel order, when known in advance; else None.
        late_starts: objects may start after the first annotated frame. With ``object_ids``
            None it decides the channels: ``config.max_objects`` of them (True), or exactly the
            first annotation's ids (False).
        timings: accumulator of the seconds per stage (default: a new one, :attr:`timings`).
        memory: the long-term object memory's settings (re-identification with ``memory.reid``;
            :class:`~label_prop.propagation.multiref.MultiRefPropagator`); None = off.

    Attributes:
        propagator: the :class:`~label_prop.propagation.multiref.MultiRefPropagator`, None before the first
            object starts; channels: the :class:`ObjectChannels`; labels: the last soft labels
            ``[K, h, w]``; t: index of the last frame stepped.
    """

    def __init__(self, encoder: FrameEncoder, config: PropagationConfig = PropagationConfig(), *,
                 object_ids: Sequence[int] | None = None, late_starts: bool = True, timings: Timings | None = None,
                 memory: MemoryConfig | None = None):
        self.encoder, self.config, self.late_starts = encoder, config, late_starts
        self.memory = memory
        self.object_ids = [int(i) for i in object_ids] if object_ids is not None else None
        self.timings = timings if timings is not None else Timings()
        self.propagator: MultiRefPropagator | None = None
        self.channels: ObjectChannels | None = None
        self.labels: torch.Tensor | None = None
        self.size: tuple[int, int] | None = None
        self.first_name: str | None = None
        self.t = -1

    @property
    def device(self) -> torch.device:
        """The encoder's device (features and propagation run there)."""
        return self.encoder.device

    def encode(self, image: np.ndarray) -> torch.Tensor:
        """Features ``[C, h, w]`` of an ``[H, W, 3]`` uint8 RGB frame at ``config.input_size``
        (timed as ``features``). Keep them to step again without the encoder."""
        t0 = time.perf_counter()
        feat = self.encoder.encode_frame(image, self.config.input_size)
        if feat.device.type == "cuda":
            torch.cuda.synchronize(feat.device)
        self.timings.features += time.perf_counter() - t0
        return feat

    @torch.no_grad()
    def step(self, image: np.ndarray | None = None, annotation: np.ndarray | None = None, *,
             features: torch.Tensor | None = None, new_ids: Sequence[int] | None = None,
             size: tuple[int, int] | None = None, source: str | None = None,
             name: str | None = None) -> np.ndarray:
        """Segment the next frame.

        Args:
            image: ``[H, W, 3]`` uint8 RGB frame (or give ``features``).
            annotation: ``[H, W]`` uint8 ids of objects that start at this frame (255 = void,
                background); ids already started are ignored.
            features: precomputed ``[C, h, w]`` features of the frame (:meth:`encode`), instead
                of ``image``.
            new_ids: the ids starting here (each must be in ``annotation``); default: every id of
                it not started before (and in ``object_ids`` when given).
            size: ``(H, W)`` of the frame when neither ``image`` nor an earlier frame gives it.
            source: name of the annotation for error messages (e.g. its file).
            name: name of the frame for error messages (e.g. its file; default ``frame T``).

        Returns:
            ``[H, W]`` uint8 ids: 0 before the first object starts; at the first start the
            annotation with untracked ids and void set to 0; at later starts the prediction with
            the new objects' annotated pixels pasted; elsewhere the argmax of the merged soft
            labels upsampled bilinearly (``align_corners=True``).

        Raises:
            ValueError: frame sizes differ (names this frame and the first), the annotation's
                size differs from the frame's, a
                listed start id is absent from the annotation, more objects than channels, or
                neither ``image`` nor ``features`` is given when needed.
        """
        self.t += 1
        size = self._frame_size(image, size, name or f"frame {self.t}")
        src = source or f"annotation of frame {self.t}"
        mask, new = None, []
        if annotation is not None:
            mask = np.asarray(annotation)
            if mask.shape != size:
                raise ValueError(f"{src}: size {mask.shape} differs from the frame's {size}")
            new = self._new_ids(mask, new_ids, src)
        if self.propagator is None and not new:
            self.timings.frames += 1
            return np.zeros(size, np.uint8)
        feat = self._features(image, features)
        t1 = time.perf_counter()
        self.timings.frames += 1
        first = self.propagator is None
        if first:
            self._allocate(new)
        started_now = self.channels.start(new, src, "" if self.object_ids is not None else " (raise --max-objects)")
        self.labels = self._propagate(feat, mask, started_now, first)
        if first:
            return np.where(np.isin(mask, list(started_now)), mask, 0).astype(np.uint8)
        out = labels_to_ids(self.labels, size, self.channels.ids)
        self.timings.propagate += time.perf_counter() - t1
        self.timings.propagated += 1
        if started_now:
            pasted = np.isin(mask, list(started_now))
            out[pasted] = mask[pasted]
        return out

    def _frame_size(self, image: np.ndarray | None, size: tuple[int, int] | None, name: str) -> tuple[int, int]:
        """The frame's ``(H, W)``, checked against the first frame's (errors name both frames)."""
        if image is not None:
            size = tuple(image.shape[:2])
        size = tuple(size) if size is not None else self.size
        if size is None:
            raise ValueError(f"{name}: give the image, or the frame size with precomputed features")
        if self.size is None:
            self.size, self.first_name = size, name
        elif size != self.size:
            raise ValueError(f"{name} has size {size[1]}x{size[0]} (WxH), the first frame ({self.first_name}) "
                             f"{self.size[1]}x{self.size[0]}: all frames of a video must have one size")
        return size

    def _new_ids(self, mask: np.ndarray, new_ids: Sequence[int] | None, src: str) -> list[int]:
        started = self.channels.started if self.channels is not None else {}
        if new_ids is not None:
            new = [int(i) for i in new_ids]
            absent = [i for i in new if not (mask == i).any()]
            if absent:
                raise ValueError(f"{src}: object ids {absent} are not in this annotation")
        else:
            new = starting_ids(mask, started, self.object_ids)
        return [i for i in new if i not in started]

    def _features(self, image: np.ndarray | None, features: torch.Tensor | None) -> torch.Tensor:
        if features is not None:
            return features.to(self.device)
        if image is None:
            raise ValueError(f"frame {self.t}: give the image or its features")
        return self.encode(image)

    def _propagate(self, feat: torch.Tensor, mask: np.ndarray | None, started_now: dict[int, int],
                   first: bool) -> torch.Tensor:
        """Merged soft labels ``[K, h, w]`` of the frame; objects starting now get their masks."""
        if not started_now:
            return self.propagator.step(feat)
        g = masks_on_grid(mask, started_now, len(self.channels.ids), tuple(feat.shape[1:]), with_background=first)
        return self.propagator.step(feat, g.to(feat.device), list(started_now.values()))

    def _allocate(self, new: list[int]) -> None:
        """Channels and propagator at the first start (see ``late_starts``)."""
        channels = self.object_ids if self.object_ids is not None else (None if self.late_starts else new)
        K = 1 + (len(channels) if channels is not None else self.config.max_objects)
        self.propagator = MultiRefPropagator(K, self.config, self.memory)
        self.channels = ObjectChannels(K, channels or [])


def require_objects(ids: Sequence[int], source: str) -> None:
    """ValueError naming ``source`` when ``ids`` is empty: no object starts anywhere, so every
    frame would come out as background (an empty or all-void first-frame mask)."""
    if not ids:
        raise ValueError(f"{source}: no object (only background or void): nothing to propagate; "
                         f"give a mask with at least one object id")


def segment_frames(frames: Iterable[np.ndarray], first_mask: np.ndarray, encoder: FrameEncoder,
                   config: PropagationConfig = PropagationConfig(), *, object_ids: Sequence[int] | None = None,
                   timings: Timings | None = None, memory: MemoryConfig | None = None) -> Iterator[np.ndarray]:
    """Segment a video from its first-frame mask, streaming (memory bounded by ``n_context + 1``
    frames); every object starts at frame 0 (a single reference: the engine bit for bit).

    Args:
        frames: iterable of ``[H, W, 3]`` uint8 RGB frames, all of the first mask's size.
        first_mask: ``[H, W]`` object ids of frame 0 (255 = void, treated as background).
        encoder, config, memory: see :class:`VideoSegmenter`.
        object_ids: ids to track (default: all of ``first_mask``).
        timings: optional accumulator of the seconds spent per stage.

    Yields:
        ``[H, W]`` uint8 object ids per frame; frame 0 yields ``first_mask`` with untracked ids
        and void set to 0.

    Raises:
        ValueError: a frame's size differs from the first mask's, a requested id is absent, or
            the mask holds no object (:func:`require_objects`).
    """
    first_mask = np.asarray(first_mask)
    present = starting_ids(first_mask, ())
    require_objects(present, "the first-frame mask")
    ids = present if object_ids is None else [int(i) for i in object_ids]
    missing = [i for i in ids if i not in present]
    if missing:
        raise ValueError(f"object ids {missing} are not in the first-frame mask (present: {present})")
    seg = VideoSegmenter(encoder, config, object_ids=ids, timings=timings, memory=memory)
    for t, frame in enumerate(frames):
        if frame.shape[:2] != first_mask.shape:
            raise ValueError(f"frame {t} has size {frame.shape[:2]}, the first-frame mask {first_mask.shape}")
        yield seg.step(frame, first_mask if t == 0 else None, new_ids=ids if t == 0 else None)


@dataclass
class FrameResult:
    """One frame of :func:`segment_plan`: its index in the plan, JPEG path, ``[H, W, 3]`` image,
    ``[H, W]`` uint8 ids and whether the plan writes it."""

    index: int
    path: Path
    image: np.ndarray
    ids: np.ndarray
    save: bool


def segment_plan(plan: SequencePlan, encoder: FrameEncoder, config: PropagationConfig = PropagationConfig(),
                 timings: Timings | None = None, memory: MemoryConfig | None = None) -> Iterator[FrameResult]:
    """Segment one dataset sequence: its frames read one at a time, each annotation read only
    when the stream reaches its frame, objects started where the plan says (``memory``: see
    :class:`VideoSegmenter`).

    Raises:
        FileNotFoundError, ValueError: an unreadable frame or annotation (named), no object in
            any of the plan's annotations (raised at the last one, naming it:
            :func:`require_objects`), or the errors of :meth:`VideoSegmenter.step`.
    """
    timings = timings if timings is not None else Timings()
    seg = VideoSegmenter(encoder, config, object_ids=plan.object_ids, late_starts=len(plan.annotations) > 1,
                         timings=timings, memory=memory)
    last_annotated = max(plan.annotations, default=-1)
    for t, path in enumerate(plan.frames):
        t0 = time.perf_counter()
        image = read_frame(path)
        timings.read += time.perf_counter() - t0
        ann = read_annotation(plan.annotations[t], plan.binary) if t in plan.annotations else None
        new = None if plan.start_ids is None else plan.start_ids.get(t, [])
        ids = seg.step(image, ann, new_ids=new, source=str(plan.annotations.get(t, path)), name=str(path))
        if t == last_annotated and seg.channels is None:
            require_objects([], str(plan.annotations[t]) if len(plan.annotations) == 1 else
                            f"{plan.name}: the {len(plan.annotations)} annotations {plan.annotations[min(plan.annotations)]} "
                            f"... {plan.annotations[t]}")
        yield FrameResult(t, path, image, ids, plan.save[t])
