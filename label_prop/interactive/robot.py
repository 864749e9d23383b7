"""A scribble robot after the DAVIS interactive protocol (Caelles et al., "The 2018 DAVIS
Challenge on Video Object Segmentation", arXiv:1803.00557), written from its description.

After each round the protocol's robot looks at one frame, takes the pixels the prediction gets
wrong and draws scribbles where a person would: for every label ``l`` (each object and the
background) the region ``R_l = (gt == l) & (pred != l)`` that should be ``l`` but is not (an
object's false negatives; the background's region is made of the objects' false positives) is

1. *opened* (eroded, then dilated) with a disk of radius
   ``r = min(kernel_fraction * sqrt(|R_l|) / 2, max_kernel_radius)`` pixels, so thin slivers
   along boundaries and small specks get no scribble; when the opening leaves nothing, ``r`` is
   multiplied by ``shrink`` and tried again while ``r > 1`` (no opening when it starts at ``<= 1``);
2. thinned to its skeleton (``skimage.morphology.skeletonize``);
3. turned into strokes: each 8-connected piece of the skeleton (at least ``min_nodes`` pixels)
   is made a tree (minimum spanning tree of its pixel graph, edges 1 or sqrt(2) pixels long) and
   its longest path becomes one stroke labelled ``l``.

Every stroke thus runs through pixels of ``R_l``: it corrects only errors. The first
interaction, for which the protocol uses scribbles drawn by people, is the same procedure
against an empty prediction (no pixel labelled), so it scribbles every object and the
background of one frame (:func:`first_frame`). Differences from the protocol's robot: strokes
are the skeleton paths themselves (the robot smooths them into Bezier curves, which can leave
the region), and every label including the background is scribbled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree
from skimage.morphology import disk, skeletonize

from hvc.errors import UsageError
from label_prop.data.io import VOID_ID


@dataclass(frozen=True)
class RobotConfig:
    """Settings of the scribble robot (the protocol's values; see the module docstring)."""

    #: Opening radius as a fraction of the square root of the region's area, halved
    #: (``kernel_size`` of the protocol: 0.2 in its evaluation service, 0.15 its robot's default).
    kernel_fraction: float = 0.2
    #: Largest opening radius, pixels (protocol: 16).
    max_kernel_radius: float = 16.0
    #: Factor applied to the radius when the opening removes the whole region (protocol: 0.9).
    shrink: float = 0.9
    #: Skeleton pieces with fewer pixels than this get no stroke (protocol: 4).
    min_nodes: int = 4

    def __post_init__(self):
        if not 0 <= self.kernel_fraction < 1:
            raise UsageError(f"kernel_fraction must be in [0, 1), got {self.kernel_fraction}")
        if not 0 < self.shrink < 1:
            raise UsageError(f"shrink must be in (0, 1), got {self.shrink}")
        if self.min_nodes < 1:
            raise UsageError(f"min_nodes must be >= 1, got {self.min_nodes}")


def error_regions(pred: np.ndarray | None, gt: np.ndarray, labels: Sequence[int]) -> dict[int, np.ndarray]:
    """``{l: (gt == l) & (pred != l)}`` for each label ``l`` (0 = background), ``[H, W]`` bool.

    ``pred=None`` is an empty prediction (no pixel labelled): the regions are ``gt == l``. Void
    pixels of the ground truth (255) are in no region.

    Raises:
        ValueError: ``pred`` and ``gt`` differ in shape, or are not 2-D.
    """
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"ground truth must be [H, W], got shape {gt.shape}")
    if pred is not None:
        pred = np.asarray(pred)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from the ground truth {gt.shape}")
    return {int(l): (gt == l) & (True if pred is None else pred != l) for l in labels if l != VOID_ID}


def opened_region(region: np.ndarray, cfg: RobotConfig = RobotConfig()) -> np.ndarray:
    """Step 1 of the module docstring: the region opened with the protocol's shrinking disk, ``[H, W]`` bool
    (a subset of ``region``; empty when every opening empties it)."""
    region = np.asarray(region, dtype=bool)
    area = int(region.sum())
    if area == 0:
        return region.copy()
    r = min(cfg.kernel_fraction * math.sqrt(area) / 2.0, cfg.max_kernel_radius)
    if r <= 1:
        return region.copy()
    src = region.astype(np.uint8)
    while r > 1:
        opened = cv2.morphologyEx(src, cv2.MORPH_OPEN, disk(int(r)).astype(np.uint8)) > 0
        if opened.any():
            return opened
        r *= cfg.shrink
    return np.zeros_like(region)


def skeleton_strokes(skeleton: np.ndarray, min_nodes: int = 4) -> list[np.ndarray]:
    """Step 3 of the module docstring: one stroke per 8-connected skeleton piece of at least
    ``min_nodes`` pixels, the longest path of the piece's minimum spanning tree.

    Returns:
        Strokes ``[N, 2]`` float64 ``(x, y)`` pixel coordinates; consecutive points are
        8-neighbours, so the polyline through them covers exactly those pixels.
    """
    ys, xs = np.nonzero(skeleton)
    n = len(ys)
    if n == 0:
        return []
    index = np.full(skeleton.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    h, w = skeleton.shape
    rows, cols, wts = [], [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each undirected neighbour pair once
        y2, x2 = ys + dy, xs + dx
        ok = (y2 < h) & (x2 >= 0) & (x2 < w)
        j = np.full(n, -1, dtype=np.int64)
        j[ok] = index[y2[ok], x2[ok]]
        keep = j >= 0
        rows.append(np.arange(n)[keep])
        cols.append(j[keep])
        wts.append(np.full(int(keep.sum()), math.hypot(dy, dx)))
    graph = coo_matrix((np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    tree = minimum_spanning_tree(graph)  # a forest: cycles broken at their longest (diagonal) edges
    n_comp, comp = connected_components(tree, directed=False)
    strokes = []
    for c in range(n_comp):
        nodes = np.flatnonzero(comp == c)
        if len(nodes) < min_nodes:
            continue
        d0 = dijkstra(tree, directed=False, indices=int(nodes[0]))
        u = int(nodes[np.argmax(d0[nodes])])
        du, pred = dijkstra(tree, directed=False, indices=u, return_predecessors=True)
        v = int(nodes[np.argmax(du[nodes])])
        path = [v]
        while path[-1] != u:
            path.append(int(pred[path[-1]]))
        path = np.asarray(path[::-1])
        strokes.append(np.stack([xs[path], ys[path]], axis=1).astype(np.float64))
    return strokes


def region_strokes(region: np.ndarray, cfg: RobotConfig = RobotConfig()) -> list[np.ndarray]:
    """Strokes ``[N, 2]`` ``(x, y)`` that correct one error region (steps 1-3 of the module docstring)."""
    opened = opened_region(region, cfg)
    if not opened.any():
        return []
    return skeleton_strokes(skeletonize(opened), cfg.min_nodes)


def robot_scribbles(pred: np.ndarray | None, gt: np.ndarray, labels: Sequence[int],
                    cfg: RobotConfig = RobotConfig()) -> dict[int, list[np.ndarray]]:
    """The robot's scribbles for one frame.

    Args:
        pred: ``[H, W]`` predicted ids of the frame, or None for an empty prediction (the
            first interaction).
        gt: ``[H, W]`` ground-truth ids (255 = void).
        labels: the labels to scribble: 0 (background) and the object ids.
        cfg: robot settings.

    Returns:
        ``{label: [stroke [N, 2] (x, y), ...]}`` for the labels that get at least one stroke
        (empty when every error region is too thin or small).

    Raises:
        ValueError: shapes disagree (see :func:`error_regions`).
    """
    out = {}
    for label, region in error_regions(pred, gt, labels).items():
        strokes = region_strokes(region, cfg)
        if strokes:
            out[label] = strokes
    return out


def first_frame(gt: np.ndarray, object_ids: Sequence[int]) -> int:
    """The frame of the first interaction: where the smallest object is largest (every object
    as visible as it gets; ties to the earliest frame). The protocol's first scribbles are on a
    frame people chose as representative; this is our stand-in.

    Args:
        gt: ``[T, H, W]`` ground-truth ids.
        object_ids: the objects.

    Raises:
        ValueError: ``gt`` is not ``[T, H, W]`` or ``object_ids`` is empty.
    """
    gt = np.asarray(gt)
    if gt.ndim != 3 or not len(object_ids):
        raise ValueError(f"need [T, H, W] ground truth and at least one object, got {gt.shape} and {list(object_ids)}")
    areas = np.stack([(gt == i).reshape(len(gt), -1).sum(1) for i in object_ids], axis=1)  # [T, N]
    return int(np.argmax(areas.min(axis=1)))
