"""DAVIS semi-supervised VOS metrics: region similarity J, boundary accuracy F, statistics.

Pure functions on numpy arrays (no file I/O). They reproduce the official DAVIS evaluation,
``davisvideochallenge/davis2017-evaluation``:

* :func:`region_similarity` -- ``davis2017/metrics.py::db_eval_iou`` (Jaccard index);
* :func:`boundary_f_measure` -- ``davis2017/metrics.py::f_measure`` (with ``_seg2bmap``);
* :func:`db_statistics`, :func:`summarize` -- ``davis2017/utils.py::db_statistics`` (Mean,
  Recall, Decay) and the dataset means (:mod:`label_prop.evaluation.statistics`, re-exported here);
* :func:`evaluate_sequence` -- ``davis2017/evaluation.py::DAVISEvaluation.evaluate`` for the
  semi-supervised task (objects 1..N of the first-frame annotation, first and last frames
  excluded), with the ``single_object`` mode of the DAVIS-2016 evaluation.

Masks are arrays of object ids, ``[H, W]`` per frame or ``[T, H, W]`` per sequence
(0 = background; 255 = void in DAVIS-2017 ground truth). All sizes are in pixels.
Scores are fractions in [0, 1] (not percent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from skimage.morphology import disk

from label_prop.data.io import VOID_ID
from label_prop.evaluation.statistics import RECALL_TH, Statistics, db_statistics, decay_bins, summarize

#: Boundary tolerance of the official F measure, as a fraction of the image diagonal.
BOUND_TH = 0.008



def _as_bool_2d(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask [H, W], got shape {arr.shape}")
    return arr.astype(bool)


def _void_2d(void: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if void is None:
        return np.zeros(shape, dtype=bool)
    void = np.asarray(void)
    if void.shape != shape:
        raise ValueError(f"void mask shape {void.shape} does not match the masks {shape}")
    return void.astype(bool)


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J (Jaccard index, IoU) of one object in one frame.

    ``J = |pred & gt| / |pred | gt|`` counted over the non-void pixels. When the union is
    empty (the object is absent from both prediction and ground truth) J is 1.

    Args:
        pred: predicted binary mask of the object, ``[H, W]`` (any dtype; non-zero = object).
        gt: ground-truth binary mask of the object, ``[H, W]``.
        void: optional ``[H, W]`` mask of void pixels, removed from both ``pred`` and ``gt``.

    Returns:
        J in [0, 1].

    Raises:
        ValueError: a mask is not 2-D, or the shapes differ (the message gives both shapes).

    Source: ``davis2017-evaluation``, ``davis2017/metrics.py::db_eval_iou`` (same special
    case: a union of 0 pixels scores 1).
    """
    pred_b = _as_bool_2d("prediction", pred)
    gt_b = _as_bool_2d("ground truth", gt)
    if pred_b.shape != gt_b.shape:
        raise ValueError(f"prediction shape {pred_b.shape} does not match ground truth {gt_b.shape}")
    valid = ~_void_2d(void, gt_b.shape)
    inter = np.count_nonzero(pred_b & gt_b & valid)
    union = np.count_nonzero((pred_b | gt_b) & valid)
    if union == 0:
        return 1.0
    return inter / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour;
    the boundaries are thus offset by half a pixel towards the origin. Along the last row only
    the east neighbour counts, along the last column only the south one, and the bottom-right
    pixel is never a boundary. An object touching the image border has no boundary along it.

    Args:
        seg: binary mask ``[H, W]`` (non-zero = object).

    Returns:
        ``[H, W]`` bool boundary map.

    Raises:
        ValueError: ``seg`` is not 2-D.

    Source: ``davis2017-evaluation``, ``davis2017/metrics.py::_seg2bmap`` (D. Martin's BSDS
    ``seg2bmap``), for an output the size of the input.
    """
    s = _as_bool_2d("segmentation", seg)
    east = np.zeros_like(s)
    south = np.zeros_like(s)
    south_east = np.zeros_like(s)
    east[:, :-1] = s[:, 1:]
    south[:-1, :] = s[1:, :]
    south_east[:-1, :-1] = s[1:, 1:]
    b = (s ^ east) | (s ^ south) | (s ^ south_east)
    b[-1, :] = s[-1, :] ^ east[-1, :]
    b[:, -1] = s[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance(shape: Sequence[int], bound_th: float = BOUND_TH) -> float:
    """Radius in pixels of the boundary matching tolerance of the F measure.

    ``bound_th`` >= 1 is a radius in pixels; below 1 it is a fraction of the image diagonal,
    ``ceil(bound_th * sqrt(H**2 + W**2))`` (8 pixels for 480x854 DAVIS frames). The radius is
    given to ``skimage.morphology.disk`` as is.

    Args:
        shape: ``(H, W)`` of the frame, in pixels.
        bound_th: the tolerance (official default 0.008).

    Raises:
        ValueError: ``bound_th`` is not positive.

    Source: ``davis2017-evaluation``, ``davis2017/metrics.py::f_measure`` (``bound_pix``).
    """
    if not bound_th > 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(np.asarray(shape[:2], dtype=np.float64))))


def boundary_f_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary accuracy F of one object in one frame.

    The boundaries of ``pred`` and ``gt`` (after removing void pixels from both masks) are
    extracted with :func:`seg2bmap`; each is dilated with a disk of radius
    :func:`boundary_tolerance` pixels (``skimage.morphology.disk``, ``cv2.dilate``).
    Precision = fraction of predicted boundary pixels within the dilated GT boundary, recall =
    fraction of GT boundary pixels within the dilated predicted boundary, and
    ``F = 2 P R / (P + R)`` (0 when ``P + R = 0``). Special cases, as official: no predicted
    and no GT boundary -> P = R = 1 (F = 1); no predicted boundary but a GT one -> P = 1,
    R = 0 (F = 0); a predicted boundary but no GT one -> P = 0, R = 1 (F = 0).

    Args:
        pred: predicted binary mask ``[H, W]`` (non-zero = object).
        gt: ground-truth binary mask ``[H, W]``.
        void: optional ``[H, W]`` mask of void pixels, removed from both masks.
        bound_th: boundary tolerance, fraction of the image diagonal (< 1) or pixels (>= 1).

    Returns:
        F in [0, 1].

    Raises:
        ValueError: a mask is not 2-D, the shapes differ, or ``bound_th`` is not positive.

    Source: ``davis2017-evaluation``, ``davis2017/metrics.py::f_measure``.
    """
    pred_b = _as_bool_2d("prediction", pred)
    gt_b = _as_bool_2d("ground truth", gt)
    if pred_b.shape != gt_b.shape:
        raise ValueError(f"prediction shape {pred_b.shape} does not match ground truth {gt_b.shape}")
    valid = ~_void_2d(void, gt_b.shape)
    radius = boundary_tolerance(gt_b.shape, bound_th)

    fg_boundary = seg2bmap(pred_b & valid)
    gt_boundary = seg2bmap(gt_b & valid)
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))

    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        kernel = disk(radius).astype(np.uint8)
        fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel) > 0
        gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel) > 0
        precision = np.count_nonzero(fg_boundary & gt_dil) / float(n_fg)
        recall = np.count_nonzero(gt_boundary & fg_dil) / float(n_gt)

    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class SequenceScores:
    """Per-object, per-frame scores of one sequence.

    Attributes:
        object_ids: the scored object ids, ``[N]`` (1..N for DAVIS).
        frames: indices (into the input ``[T, H, W]``) of the scored frames, ``[T']``.
        j: region similarity, ``[N, T']``.
        f: boundary accuracy, ``[N, T']``.
    """

    object_ids: list[int]
    frames: list[int]
    j: np.ndarray
    f: np.ndarray

    def statistics(self) -> dict[int, tuple[Statistics, Statistics]]:
        """``{object id: (J statistics, F statistics)}`` (see :func:`db_statistics`)."""
        return {
            oid: (db_statistics(self.j[i]), db_statistics(self.f[i])) for i, oid in enumerate(self.object_ids)
        }


def first_frame_objects(gt_first: np.ndarray) -> list[int]:
    """Object ids scored in a sequence: ``1..N`` with N the largest id of the first-frame GT.

    Void (255) is not an object. Ids missing between 1 and N are still scored (they are empty
    in the ground truth, so an empty prediction scores 1), as the official code does.

    Args:
        gt_first: first-frame ground truth ids, ``[H, W]``.

    Source: ``davis2017-evaluation``, ``davis2017/davis.py::DAVIS.get_all_masks``
    (``num_objects = max(masks[0])`` after void is set to 0).
    """
    ids = np.asarray(gt_first)
    ids = ids[ids != VOID_ID]
    n = int(ids.max(initial=0))
    return list(range(1, n + 1))


def _scored_objects(pred: np.ndarray, gt: np.ndarray, frames: list[int], object_ids: Sequence[int] | None,
                    single_object: bool, ignore_void: bool):
    """``(pred, gt, ids, void [T, H, W] or None)`` as :func:`evaluate_sequence` scores them
    (binarised in ``single_object`` mode; GT void as background when not ignored); raises its
    ValueErrors about object ids."""
    if single_object:
        if object_ids is not None and list(object_ids) != [1]:
            raise ValueError(f"single_object scores object 1 only, got object_ids={list(object_ids)}")
        return (pred > 0).astype(np.uint8), (gt > 0).astype(np.uint8), [1], None
    ids = first_frame_objects(gt[0]) if object_ids is None else [int(k) for k in object_ids]
    if any(k <= 0 or k == VOID_ID for k in ids):
        raise ValueError(f"object ids must be in 1..254, got {ids}")
    void_all = (gt == VOID_ID) if ignore_void else None
    if not ignore_void:
        gt = np.where(gt == VOID_ID, 0, gt)
    unknown = sorted(set(np.unique(pred[frames]).tolist()) - {0} - set(ids))
    if unknown:
        raise ValueError(f"prediction holds object ids {unknown} not in the scored objects {ids}")
    if not ids:
        raise ValueError("no object to score (the first-frame ground truth is empty)")
    return pred, gt, ids, void_all


def _per_frame_scores(pred: np.ndarray, gt: np.ndarray, frames: list[int], ids: list[int],
                      void_all: np.ndarray | None, bound_th: float) -> tuple[np.ndarray, np.ndarray]:
    """J and F ``[N, T']`` of objects ``ids`` on ``frames`` (void removed where given)."""
    j = np.zeros((len(ids), len(frames)), dtype=np.float64)
    f = np.zeros_like(j)
    for t_idx, t in enumerate(frames):
        void = None if void_all is None else void_all[t]
        if void is not None and not void.any():
            void = None
        for o_idx, k in enumerate(ids):
            p_k = pred[t] == k
            g_k = gt[t] == k
            j[o_idx, t_idx] = region_similarity(p_k, g_k, void)
            f[o_idx, t_idx] = boundary_f_measure(p_k, g_k, void, bound_th)
    return j, f


def evaluate_sequence(
    pred: np.ndarray,
    gt: np.ndarray,
    object_ids: Sequence[int] | None = None,
    *,
    single_object: bool = False,
    ignore_void: bool = True,
    skip_first_last: bool = True,
    bound_th: float = BOUND_TH,
) -> SequenceScores:
    """Per-object, per-frame J and F of a semi-supervised VOS prediction of one sequence.

    Object ``k`` is scored on the binary masks ``pred == k`` and ``gt == k``. The first frame
    (the given annotation) and the last frame are excluded, as in the official semi-supervised
    evaluation.

    Args:
        pred: predicted object ids, ``[T, H, W]`` (integer; 0 = background).
        gt: ground-truth object ids, ``[T, H, W]`` (255 = void in DAVIS-2017).
        object_ids: ids to score; default :func:`first_frame_objects` of ``gt[0]`` (objects
            1..N of the first-frame annotation, as official).
        single_object: DAVIS-2016 mode (official ``--single-object`` / ``year=2016``
            evaluation): prediction and GT are binarised (``> 0``) and scored as object 1.
            255 is then foreground (the DAVIS-2016 object value), not void, and ``object_ids``
            must be None or ``[1]``.
        ignore_void: remove GT void pixels (255) from both masks before J and F (the
            ``void_pixels`` handling of the official ``db_eval_iou`` / ``f_measure``). Note that
            the official *semi-supervised* driver passes no void mask: it sets void to
            background in the GT instead; ``ignore_void=False`` reproduces that.
        skip_first_last: drop the first and last frames (official semi-supervised protocol).
        bound_th: boundary tolerance of F (see :func:`boundary_tolerance`).

    Returns:
        :class:`SequenceScores` with ``j`` and ``f`` of shape ``[N, T']`` (``T' = T - 2``).

    Raises:
        ValueError: ``pred`` or ``gt`` is not 3-D, their shapes differ, there are too few
            frames (fewer than 3 with ``skip_first_last``), no object to score, or (outside
            ``single_object``) the prediction holds an id that is neither 0 nor a scored object
            (the official code exits with "an index higher than the number of objects").

    Source: ``davis2017-evaluation``, ``davis2017/evaluation.py::DAVISEvaluation.evaluate``
    and ``_evaluate_semisupervised``; ``single_object`` as ``hkchengrex/davis2016-evaluation``.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 3 or gt.ndim != 3:
        raise ValueError(f"pred and gt must be [T, H, W]; got {pred.shape} and {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth {gt.shape}")
    n_frames = gt.shape[0]
    if n_frames < (3 if skip_first_last else 1):
        raise ValueError(f"need at least 3 frames when skipping the first and last, got {n_frames}"
                         if skip_first_last else "the sequence has no frame")
    frames = list(range(1, n_frames - 1)) if skip_first_last else list(range(n_frames))
    pred, gt, ids, void_all = _scored_objects(pred, gt, frames, object_ids, single_object, ignore_void)
    j, f = _per_frame_scores(pred, gt, frames, ids, void_all, bound_th)
    return SequenceScores(object_ids=ids, frames=frames, j=j, f=f)


__all__ = [
    "BOUND_TH",
    "RECALL_TH",
    "VOID_ID",
    "SequenceScores",
    "Statistics",
    "boundary_f_measure",
    "boundary_tolerance",
    "db_statistics",
    "decay_bins",
    "evaluate_sequence",
    "first_frame_objects",
    "region_similarity",
    "seg2bmap",
    "summarize",
]
