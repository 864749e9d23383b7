"""Multi-reference label propagation: objects that start mid-video (YouTube-VOS), streaming.

HVC's inference (docs/method.md, "Objects that start mid-video"): every frame
``t0`` at which at least one object starts is a *reference*. A reference keeps its own context
(frame ``t0`` as long-term memory plus the short-term frames since ``t0``), predicts every
later frame, and contributes only the channels of the objects that started at ``t0`` (its
0/1 channel-presence vector ``v_t0``); the background channel comes from the first reference.
When new objects start at ``t``, their given masks override the merged prediction and ``t``
becomes a new reference. The merged soft labels of every frame are pushed into every
reference's context.

Here each reference is one :class:`~label_prop.propagation.engine.LabelPropagator` started at ``t0`` with
the merged labels of ``t0`` (so its context is exactly HVC's: frame ``t0``, global, plus
``max(tau, t0)`` for the last ``n_context`` frames, local).

**Differences from the public reference (on purpose).**

* *Renormalisation* (docs/method.md, "Differences from the public code"): the reference merges
  ``y = sum_t0 v_t0 * yhat_t0`` with no normalisation. Every reference predicts *all*
  channels (their contexts hold the merged labels), so the merged vector takes the background
  and the old objects from reference 0 but the new objects from their own reference: at pixels
  where reference 0 already gives mass to a new object, that mass is dropped, and where both
  give mass it is counted from two different distributions; the channels no longer sum to 1,
  and the error compounds because ``y`` becomes context. We take each channel from its owning
  reference as HVC does (background: the first reference), then divide by the channel sum, so
  ``y`` is a distribution at every grid cell. Where that sum is below ``1e-6`` (every owner
  gives its channel ~0 mass), ``y`` is the mean of the references' full predictions (each a
  distribution).
* *Override*: HVC writes ``y = (1 - s) y + s g``; we use ``g`` = the new objects' downsampled
  one-hot masks (``s = sum_c g_c``) and ``y = (1 - s) y + g``, i.e. ``s`` times the new
  objects' normalised distribution ``g / s``, which keeps ``sum_c y_c = 1``.
* With a single reference (every object starts at the first annotated frame, as in DAVIS) the
  merge is the identity: the result is bit-for-bit :meth:`LabelPropagator.step`.
* Only the annotations of the frames where objects start are read (the reference scans every
  ground-truth frame for new ids, which leaks ground truth).

Memory: one :class:`LabelPropagator` ring buffer per reference (see its docstring), so a video
with ``R`` start frames holds ``R`` context buffers.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from label_prop.config import MemoryConfig, PropagationConfig
from label_prop.propagation.engine import LabelPropagator

#: Below this channel sum the renormalised merge falls back to the mean of the references.
MERGE_EPS = 1e-6


def masks_on_grid(mask: np.ndarray, channel_of: Mapping[int, int], num_channels: int,
                  grid: tuple[int, int], *, with_background: bool) -> torch.Tensor:
    """Downsample the binary masks of some objects to the feature grid.

    Args:
        mask: ``[H, W]`` object ids (255 = void).
        channel_of: object id -> channel (1..num_channels-1) of the objects to take.
        num_channels: ``K``, channel 0 being the background.
        grid: ``(h, w)`` of the feature grid.
        with_background: channel 0 = ``1 - sum`` of the object channels (a full distribution,
            void and other objects counting as background); else channel 0 stays 0.

    Returns:
        ``[K, h, w]`` float32, bilinear ``align_corners=True`` (as the public code).
    """
    mask = np.asarray(mask)
    onehot = torch.zeros(num_channels, *mask.shape)
    for oid, ch in channel_of.items():
        onehot[ch] = torch.from_numpy(mask == oid)
    if with_background:
        onehot[0] = 1.0 - onehot[1:].sum(0)
    return F.interpolate(onehot[None], size=grid, mode="bilinear", align_corners=True)[0]


class MultiRefPropagator:
    """Streaming propagation with one reference per object start frame (module docstring).

    Feed every frame's features in order with :meth:`step`; pass the new objects' soft masks at
    the frames where objects start. Before the first start the output is all background.

    Args:
        num_channels: ``K``; channel 0 is the background, channel ``c`` one object.
        config: the protocol of every reference.
        memory: with ``memory.reid``, a long-term object memory re-identifies lost objects
            (:class:`label_prop.propagation.memory.ObjectMemory`): where one is found, its labels
            are re-seeded and the frame becomes a new reference owning it. None or ``reid`` off:
            the protocol exactly.
        **engine_kwargs: speed knobs of each :class:`LabelPropagator`.

    Raises:
        ValueError: bad ``num_channels``; see :meth:`step`.
    """

    def __init__(self, num_channels: int, config: PropagationConfig = PropagationConfig(),
                 memory: MemoryConfig | None = None, **engine_kwargs):
        if num_channels < 2:
            raise ValueError(f"num_channels must be >= 2 (background + one object), got {num_channels}")
        self.K = num_channels
        self.memory = None
        if memory is not None and memory.reid:
            from label_prop.propagation.memory import ObjectMemory  # faiss only when asked for
            self.memory = ObjectMemory(num_channels, memory)
        self.config, self.engine_kwargs = config, engine_kwargs
        self.refs: list[LabelPropagator] = []
        #: owner[c] = index of the reference owning channel c, or -1 (object not started yet).
        self.owner = [-1] * num_channels
        self.ref_frames: list[int] = []
        self.t = -1

    @property
    def started(self) -> list[int]:
        """Channels whose object has started (background included once started)."""
        return [c for c, o in enumerate(self.owner) if o >= 0]

    @torch.no_grad()
    def step(self, feat: torch.Tensor, new_masks: torch.Tensor | None = None,
             new_channels: Sequence[int] = ()) -> torch.Tensor:
        """Soft labels of the next frame.

        Args:
            feat: ``[C, h, w]`` features of the frame (L2-normalised over C).
            new_masks: ``[K, h, w]`` downsampled masks of the objects starting at this frame
                (:func:`masks_on_grid`); for the first start it must be a full distribution
                (``with_background=True``), later only the new channels are used.
            new_channels: the channels of those objects (must not have started before).

        Returns:
            ``[K, h, w]`` float32 soft labels summing to 1 over K at every cell.

        Raises:
            ValueError: shapes disagree, a channel is out of range or already started, or
                ``new_channels`` is given without ``new_masks``.
        """
        self.t += 1
        new_channels = [int(c) for c in new_channels]
        if new_channels:
            if new_masks is None:
                raise ValueError("new_channels given without new_masks")
            if tuple(new_masks.shape) != (self.K, *feat.shape[1:]):
                raise ValueError(f"new_masks must be [{self.K}, h, w] = {(self.K, *feat.shape[1:])}, "
                                 f"got {tuple(new_masks.shape)}")
            bad = [c for c in new_channels if not 0 < c < self.K or self.owner[c] >= 0]
            if bad:
                raise ValueError(f"channels {bad} are out of 1..{self.K - 1} or already started")
            new_masks = new_masks.to(feat.device, torch.float32)
        first = not self.refs
        if first:
            if not new_channels:  # nothing to propagate yet
                y = feat.new_zeros(self.K, *feat.shape[1:])
                y[0] = 1.0
                return y
            y = new_masks.clone()
            self.owner[0] = 0
        else:
            preds = [r.predict(feat) for r in self.refs]
            y = self._merge(preds)
            if new_channels:
                g = torch.zeros_like(y)
                g[new_channels] = new_masks[new_channels]
                s = g.sum(0, keepdim=True).clamp(max=1.0)
                y = (1.0 - s) * y + g
        found = self._reidentify(feat, y, new_channels, first)
        if not first:
            for r in self.refs:
                r.push(feat, y)
        own = new_channels + [c for c in found if c not in new_channels]
        if own:
            idx = len(self.refs)
            for c in own:
                self.owner[c] = idx
            self.refs.append(LabelPropagator(feat, y, self.config, **self.engine_kwargs))
            self.ref_frames.append(self.t)
            if found:
                self._drop_unowned()
        return y

    def _drop_unowned(self) -> None:
        """Forget the references that no longer own a channel (an object re-identified moves to
        its new reference), so that repeated re-identifications do not add references."""
        keep = [i for i in range(len(self.refs)) if i in self.owner]
        if len(keep) == len(self.refs):
            return
        new_index = {old: new for new, old in enumerate(keep)}
        self.refs = [self.refs[i] for i in keep]
        self.ref_frames = [self.ref_frames[i] for i in keep]
        self.owner = [new_index[o] if o >= 0 else -1 for o in self.owner]

    def _reidentify(self, feat: torch.Tensor, y: torch.Tensor, new_channels: list[int], first: bool) -> list[int]:
        """With a memory: admit the starting objects, track the others, and re-seed ``y`` (in
        place) where a lost object is found; returns the found channels."""
        if self.memory is None:
            return []
        if new_channels:
            self.memory.admit(feat, y, ([0] if first else []) + new_channels, self.t)
        objects = [c for c in self.started if c > 0 and c not in new_channels]
        found = self.memory.update(feat, y, objects, self.t)
        for c, region in found.items():
            r = torch.from_numpy(region).to(y.device)
            y[:, r] = 0.0
            y[c, r] = 1.0
        return list(found)

    def _merge(self, preds: list[torch.Tensor]) -> torch.Tensor:
        """Each channel from its owning reference, renormalised (see the module docstring)."""
        if len(preds) == 1:
            return preds[0]  # identity: bit-for-bit the single-reference engine
        y = torch.zeros_like(preds[0])
        for c, o in enumerate(self.owner):
            if o >= 0:
                y[c] = preds[o][c]
        total = y.sum(0, keepdim=True)
        fallback = torch.stack(preds).mean(0)
        ok = total > MERGE_EPS
        return torch.where(ok, y / total.clamp(min=MERGE_EPS), fallback)


def hvc_unnormalised_merge(preds: Sequence[torch.Tensor], presence: Sequence[torch.Tensor]) -> torch.Tensor:
    """The public reference's merge ``sum_r v_r * yhat_r``, kept for comparison in tests and docs
    only: ``preds`` ``[K, h, w]`` and presence vectors ``[K]`` (0/1). Its channels do not sum to 1
    (docs/method.md, "Differences from the public code")."""
    return sum(v.view(-1, 1, 1).to(p.dtype) * p for p, v in zip(preds, presence))
