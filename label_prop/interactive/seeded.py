"""Scribbles to a mask within one frame: seeded segmentation.

Two methods, chosen with :attr:`SeedConfig.method` (measured against each other in
``benchmarks/compare_scribble_masks.py``; results in the README):

* ``"random_walker"``: scikit-image's random walker (Grady, "Random Walks for Image
  Segmentation", TPAMI 2006) on the RGB frame, scaled to a short side of ``rw_short_side``
  pixels; the label probabilities are scaled back to the frame's size and their argmax taken.
* ``"feature_knn"``: kNN over the frame's own features ``[C, h, w]`` (the ones propagation
  uses): every grid cell takes the ``knn_topk`` most similar seeded cells (dot product of the
  L2-normalised features), weighs their labels by ``softmax(similarity / knn_temperature)``
  (the propagation protocol's rule within one frame), and the soft labels are upsampled
  bilinearly (``align_corners=True``) to the frame's size.

Seeds are the strokes (:func:`label_prop.interactive.scribbles.rasterize`) and, when the frame
already has a mask (a propagated one that the user corrects), that mask's labels away from the
strokes (:func:`prior_seeds`), so a stroke changes its surroundings and nothing else. The strokes'
own pixels always keep their label in the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import disk
from skimage.segmentation import random_walker

from hvc.errors import UsageError
from label_prop.propagation.features import scaled_size
from label_prop.interactive.scribbles import UNLABELED

METHODS = ("random_walker", "feature_knn")


@dataclass(frozen=True)
class SeedConfig:
    """How strokes become a frame's mask (see the module docstring)."""

    #: ``"random_walker"`` (on the image) or ``"feature_knn"`` (on the frame's features).
    method: str = "random_walker"
    #: Stroke width when rasterising, pixels (1 = the stroke's centre line).
    stroke_width: int = 1
    #: Random walker edge weight ``exp(-beta * |grad|^2)`` (scikit-image's default is 130; chosen on
    #: the DAVIS-2016 dev half, see the README).
    rw_beta: float = 1000.0
    #: Short side the frame is scaled to for the random walker, pixels (-1 = full size). The
    #: system is solved exactly (scikit-image's ``mode="bf"``), so its cost grows with this.
    rw_short_side: int = 160
    #: Seeded cells each cell looks at (``feature_knn``; the propagation protocol's top-k, 15).
    knn_topk: int = 15
    #: Softmax temperature over the similarities (``feature_knn``; the protocol's 0.1).
    knn_temperature: float = 0.1
    #: The previous mask's labels are seeds only this many pixels inside their region.
    prior_erosion: int = 4
    #: Around each stroke pixel ``p`` of label ``l``, other labels' previous-mask seeds are dropped
    #: within ``max(band_min, band_scale * d(p))`` pixels, ``d(p)`` the distance from ``p`` to the
    #: previous mask's nearest pixel of label ``l``: a stroke along the middle of a wrong region
    #: frees about that region (and a margin) for the segmentation to decide.
    band_scale: float = 1.5
    #: Smallest freed radius around a stroke pixel, pixels.
    band_min: float = 8.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"unknown seeded segmentation method {self.method!r}; known: {', '.join(METHODS)}")
        if self.stroke_width < 1 or self.knn_topk < 1 or not self.knn_temperature > 0 or self.prior_erosion < 0:
            raise UsageError("stroke_width and knn_topk must be >= 1, knn_temperature > 0, prior_erosion >= 0")
        if self.rw_short_side != -1 and self.rw_short_side < 16:
            raise UsageError(f"rw_short_side must be -1 or >= 16 pixels, got {self.rw_short_side}")


def prior_seeds(prior: np.ndarray, strokes: np.ndarray, labels: Sequence[int], cfg: SeedConfig = SeedConfig()) -> np.ndarray:
    """Seeds from a frame's previous mask, kept away from strokes that contradict it.

    Each label's region of ``prior``, eroded by ``cfg.prior_erosion`` pixels, is seeded with
    that label, except within the freed band (see :class:`SeedConfig`) of strokes of another
    label.

    Args:
        prior: ``[H, W]`` previous ids of the frame.
        strokes: ``[H, W]`` int16 stroke labels, -1 where none.
        labels: every label of the session (0 and the object ids).

    Returns:
        ``[H, W]`` int16 seed labels, -1 where none (strokes not included).
    """
    H, W = prior.shape
    cap = max(H, W) / 4.0
    freed = {}
    for s in np.unique(strokes[strokes != UNLABELED]).tolist():
        ys, xs = np.nonzero(strokes == s)
        if (prior == s).any():
            dist = cv2.distanceTransform((prior != s).astype(np.uint8), cv2.DIST_L2, 5)[ys, xs]
        else:
            dist = np.full(len(ys), cap)
        radius = np.clip(cfg.band_scale * dist, cfg.band_min, cap).round().astype(int)
        band = np.zeros((H, W), np.uint8)
        for x, y, r in zip(xs.tolist(), ys.tolist(), radius.tolist()):
            cv2.circle(band, (x, y), r, 1, -1)
        freed[s] = band > 0
    out = np.full((H, W), UNLABELED, dtype=np.int16)
    kernel = disk(cfg.prior_erosion).astype(np.uint8) if cfg.prior_erosion > 0 else None
    for l in labels:
        region = (prior == l).astype(np.uint8)
        if kernel is not None:
            region = cv2.erode(region, kernel, borderType=cv2.BORDER_REPLICATE)
        keep = region > 0
        for s, band in freed.items():
            if s != l:
                keep &= ~band
        out[keep] = l
    return out


def _index_map(seeds: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Seed labels -> channel index (-1 = none)."""
    idx = np.full(seeds.shape, -1, dtype=np.int64)
    for c, l in enumerate(labels):
        idx[seeds == l] = c
    return idx


def random_walker_probs(image: np.ndarray, seeds: np.ndarray, labels: Sequence[int], cfg: SeedConfig = SeedConfig()) -> np.ndarray:
    """Random-walker label probabilities at the frame's size, ``[L, H, W]`` float32 (channel ``c``
    = ``labels[c]``; channels of labels without seeds are 0).

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        seeds: ``[H, W]`` int16 seed labels, -1 where none (at least one seeded pixel).
        labels: the labels (channel order).

    Raises:
        ValueError: no seed at all.
    """
    H, W = seeds.shape
    idx = _index_map(seeds, labels)
    present = sorted(set(np.unique(idx).tolist()) - {-1})
    if not present:
        raise ValueError("no seed pixel: draw at least one stroke")
    out = np.zeros((len(labels), H, W), np.float32)
    if len(present) == 1:
        out[present[0]] = 1.0
        return out
    h, w = scaled_size((H, W), cfg.rw_short_side)
    img = image if (h, w) == (H, W) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    # Seeds at the working size: a cell takes the label covering most of it (any coverage counts).
    cover = np.stack([cv2.resize((idx == c).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
                      for c in present])
    small = np.where(cover.max(0) > 0, np.asarray(present)[cover.argmax(0)] + 1, 0)
    prob = random_walker(img.astype(np.float64) / 255.0, small, beta=cfg.rw_beta, mode="bf",
                         channel_axis=-1, return_full_prob=True)  # [len(present), h, w]
    for k, c in enumerate(present):
        out[c] = prob[k] if (h, w) == (H, W) else cv2.resize(prob[k].astype(np.float32), (W, H),
                                                             interpolation=cv2.INTER_LINEAR)
    return out


def feature_knn_probs(features: torch.Tensor, seeds: np.ndarray, labels: Sequence[int],
                      cfg: SeedConfig = SeedConfig(), query_chunk: int = 2048) -> np.ndarray:
    """kNN label probabilities from the frame's own features, at the frame's size, ``[L, H, W]``.

    Args:
        features: ``[C, h, w]`` L2-normalised features of the frame (any float dtype, any device).
        seeds: ``[H, W]`` int16 seed labels, -1 where none (at least one seeded pixel).
        labels: the labels (channel order).
        query_chunk: cells scored at a time (bounds memory to ``query_chunk * seeded cells`` floats).

    A pixel ``(y, x)`` falls in grid cell ``(round(y (h-1)/(H-1)), round(x (w-1)/(W-1)))`` (the
    ``align_corners=True`` correspondence used to put masks on the grid); a seeded cell's labels
    are the label fractions of its seed pixels.

    Raises:
        ValueError: no seed at all, or ``features`` is not 3-D.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be [C, h, w], got shape {tuple(features.shape)}")
    H, W = seeds.shape
    C, h, w = features.shape
    idx = _index_map(seeds, labels)
    ys, xs = np.nonzero(idx >= 0)
    if len(ys) == 0:
        raise ValueError("no seed pixel: draw at least one stroke")
    L = len(labels)
    gy = np.round(ys * ((h - 1) / max(H - 1, 1))).astype(np.int64)
    gx = np.round(xs * ((w - 1) / max(W - 1, 1))).astype(np.int64)
    counts = np.zeros((h * w, L), np.float32)
    np.add.at(counts, (gy * w + gx, idx[ys, xs]), 1.0)
    seeded = counts.sum(1) > 0
    dist = counts[seeded] / counts[seeded].sum(1, keepdims=True)
    f = features.detach().reshape(C, h * w).to("cpu", torch.float32)
    keys = f[:, torch.from_numpy(seeded)]  # [C, S]
    key_lab = torch.from_numpy(dist)  # [S, L]
    soft = torch.from_numpy(counts / np.maximum(counts.sum(1, keepdims=True), 1.0))  # seeded cells keep theirs
    todo = torch.from_numpy(np.flatnonzero(~seeded))
    k = min(cfg.knn_topk, keys.shape[1])
    for s in range(0, len(todo), query_chunk):
        q = todo[s:s + query_chunk]
        val, pos = (f[:, q].t() @ keys).topk(k, dim=1)
        wgt = torch.softmax(val / cfg.knn_temperature, dim=1)
        soft[q] = (wgt.unsqueeze(-1) * key_lab[pos]).sum(1)
    grid = soft.t().reshape(1, L, h, w)
    return F.interpolate(grid, size=(H, W), mode="bilinear", align_corners=True)[0].numpy()


def scribble_mask(image: np.ndarray, strokes: np.ndarray, labels: Sequence[int], *,
                  prior: np.ndarray | None = None, features: torch.Tensor | None = None,
                  cfg: SeedConfig = SeedConfig()) -> np.ndarray:
    """A frame's mask from its strokes (and its previous mask, when it has one).

    Args:
        image: ``[H, W, 3]`` uint8 RGB frame.
        strokes: ``[H, W]`` int16 stroke labels (-1 where none), every stroke of this frame so far.
        labels: 0 and the object ids; the result holds only these.
        prior: ``[H, W]`` previous ids of the frame (a propagated mask), or None.
        features: ``[C, h, w]`` features of the frame (needed by ``feature_knn``).
        cfg: the method and its settings.

    Returns:
        ``[H, W]`` uint8 ids; stroke pixels keep their stroke's label.

    Raises:
        ValueError: shapes disagree, no seed, ``feature_knn`` without features, or no seed for
            the background (0) although an object is seeded (no previous mask to take it from).
    """
    strokes = np.asarray(strokes)
    if image.shape[:2] != strokes.shape or (prior is not None and prior.shape != strokes.shape):
        raise ValueError(f"image {image.shape[:2]}, strokes {strokes.shape} and previous mask "
                         f"{None if prior is None else prior.shape} must have one size")
    seeds = strokes.astype(np.int16)
    if prior is not None:
        ps = prior_seeds(prior, strokes, labels, cfg)
        seeds = np.where(strokes != UNLABELED, strokes, ps).astype(np.int16)
    present = set(np.unique(seeds).tolist()) - {UNLABELED}
    if present and 0 not in present:
        raise ValueError("no background seed: without a previous mask, give background strokes (label 0) "
                         "as well as object strokes, or a full mask")
    if cfg.method == "random_walker":
        probs = random_walker_probs(image, seeds, labels, cfg)
    else:
        if features is None:
            raise ValueError("the feature_knn method needs the frame's features")
        probs = feature_knn_probs(features, seeds, labels, cfg)
    ids = np.asarray(labels, dtype=np.uint8)[probs.argmax(0)]
    drawn = strokes != UNLABELED
    ids[drawn] = strokes[drawn]
    return ids
