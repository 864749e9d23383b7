"""Per-object statistics of per-frame scores (Mean, Recall, Decay) and the dataset means,
as the official DAVIS evaluation (``davisvideochallenge/davis2017-evaluation``) computes them.
Scores are fractions in [0, 1]."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

#: Threshold of the Recall statistic (fraction of frames scoring more than this).
RECALL_TH = 0.5


@dataclass(frozen=True)
class Statistics:
    """Per-object statistics of a per-frame score series (see :func:`db_statistics`)."""

    mean: float
    recall: float
    decay: float


def decay_bins(n: int) -> list[tuple[int, int]]:
    """The 4 (overlapping) frame bins of the official Decay statistic, as ``[start, stop)``.

    Bin edges are ``round(linspace(1, n, 5) + 1e-10) - 1``; bin ``i`` spans
    ``edges[i] .. edges[i + 1]`` *inclusive*, so consecutive bins share their edge frame
    (e.g. ``n = 8`` gives frames 0-2, 2-4, 4-5, 5-7). This is not ``np.array_split``.

    Raises:
        ValueError: ``n < 1``.

    Source: ``davis2017-evaluation``, ``davis2017/utils.py::db_statistics``. The official code
    casts the edges to ``uint8``, which wraps around for series longer than 256 frames; here
    they stay plain integers (identical results up to 256 frames; DAVIS has at most 104).
    """
    if n < 1:
        raise ValueError(f"decay needs at least one value, got {n}")
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def db_statistics(per_frame: Iterable[float]) -> Statistics:
    """Mean, Recall and Decay of one object's per-frame J or F values.

    * Mean: ``nanmean`` of the values;
    * Recall: fraction of frames whose value is > 0.5 (a NaN counts as not > 0.5);
    * Decay: ``nanmean`` of the first of the 4 :func:`decay_bins` minus that of the last,
      i.e. how much the score drops from the first to the last quarter of the video.

    Args:
        per_frame: ``[T]`` per-frame scores of one object (first/last frames already removed).

    Raises:
        ValueError: the series is empty or not 1-D.

    Source: ``davis2017-evaluation``, ``davis2017/utils.py::db_statistics``.
    """
    v = np.asarray(list(per_frame) if not isinstance(per_frame, np.ndarray) else per_frame, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"per-frame values must be 1-D [T], got shape {v.shape}")
    if v.size == 0:
        raise ValueError("per-frame values are empty")
    bins = decay_bins(v.size)
    with warnings.catch_warnings():  # all-NaN slices give NaN, as official, without a warning
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.mean(v > RECALL_TH))
        decay = float(np.nanmean(v[bins[0][0]:bins[0][1]]) - np.nanmean(v[bins[3][0]:bins[3][1]]))
    return Statistics(mean=mean, recall=recall, decay=decay)


def summarize(per_object: Sequence[tuple[Statistics, Statistics]]) -> dict[str, float]:
    """Dataset-level figures from the per-object statistics: the mean over all objects.

    Args:
        per_object: ``[(J statistics, F statistics), ...]``, one pair per object of every
            sequence.

    Returns:
        ``{'J&F-Mean', 'J-Mean', 'J-Recall', 'J-Decay', 'F-Mean', 'F-Recall', 'F-Decay'}``,
        with ``J&F-Mean = (J-Mean + F-Mean) / 2``.

    Raises:
        ValueError: ``per_object`` is empty.

    Source: ``davis2017-evaluation``, ``evaluation_method.py`` (``g_res``).
    """
    if not per_object:
        raise ValueError("no object statistics to summarize")
    js = [p[0] for p in per_object]
    fs = [p[1] for p in per_object]
    j_mean = float(np.mean([s.mean for s in js]))
    f_mean = float(np.mean([s.mean for s in fs]))
    return {
        "J&F-Mean": (j_mean + f_mean) / 2.0,
        "J-Mean": j_mean,
        "J-Recall": float(np.mean([s.recall for s in js])),
        "J-Decay": float(np.mean([s.decay for s in js])),
        "F-Mean": f_mean,
        "F-Recall": float(np.mean([s.recall for s in fs])),
        "F-Decay": float(np.mean([s.decay for s in fs])),
    }
