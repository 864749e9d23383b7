"""Scoring after the DAVIS interactive protocol (written from its description: Caelles et al.,
arXiv:1803.00557, and the davis-interactive documentation), with our DAVIS metrics.

After each interaction every frame of the sequence is scored (J and F of
:mod:`label_prop.evaluation.metrics`, per object, all frames: the annotated ones and the first and last
included, as the interactive protocol does) and the figures of a run are:

* **J&F per interaction**: ``(J + F) / 2``, J and F the means over the frames and objects of a
  sequence, then the mean over sequences;
* **AUC-J&F over interactions**: the area under J&F against the interaction number ``1 .. N``
  (trapezoids), divided by ``N - 1`` (J&F itself when ``N = 1``);
* **AUC-J&F over time**: the curve of J&F against accumulated seconds, its points
  ``(0, 0)`` and, per interaction ``i``, (mean over sequences of the seconds spent up to ``i``,
  mean J&F after ``i``), linear between points and flat after the last; its area over
  ``[0, T]`` divided by ``T``, the protocol's time budget ``T = seconds_per_object * N *``
  (mean number of objects) (the protocol allows 30 s per interaction and object);
* **J&F@60s**: that curve at 60 seconds.

The seconds are the method's wall-clock time (the robot's and the scorer's are not counted), so
the time figures depend on the hardware, which every report names.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from label_prop.evaluation.metrics import evaluate_sequence

#: Columns of ``interactive_results.csv`` (one row per sequence and interaction).
COLUMNS = ["sequence", "interaction", "annotated_frame", "J", "F", "J&F", "seconds", "objects"]

#: Time budget per interaction and object of the DAVIS interactive protocol, seconds.
SECONDS_PER_OBJECT = 30.0


def frame_scores(pred: np.ndarray, gt: np.ndarray, object_ids: Sequence[int], binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every object in every frame, ``([N, T], [N, T])``.

    Args:
        pred: ``[T, H, W]`` predicted ids.
        gt: ``[T, H, W]`` ground-truth ids (255 = void, counted as background as in the
            official semi-supervised driver).
        object_ids: the objects (``[1]`` for DAVIS-2016).
        binary: DAVIS-2016 single-object scoring (prediction and ground truth binarised).

    Raises:
        ValueError: see :func:`label_prop.evaluation.metrics.evaluate_sequence`.
    """
    s = evaluate_sequence(pred, gt, None if binary else list(object_ids), single_object=binary,
                          ignore_void=False, skip_first_last=False)
    return s.j, s.f


def summarize(results: pd.DataFrame, seconds_per_object: float = SECONDS_PER_OBJECT) -> dict:
    """The run's figures (see the module docstring) from rows with the :data:`COLUMNS`.

    Every sequence must have the same interactions ``1 .. N``.

    Returns:
        ``{"per_interaction": DataFrame (interaction, J, F, J&F, seconds, cumulative_seconds),
        "auc_interactions", "auc_time", "time_budget_s", "jf_at_60s", "sequences", "interactions"}``.

    Raises:
        ValueError: no rows, or sequences with different interactions.
    """
    if results.empty:
        raise ValueError("no interaction results to summarize")
    df = results.sort_values(["sequence", "interaction"]).copy()
    steps = df.groupby("sequence")["interaction"].apply(tuple)
    if steps.nunique() != 1:
        raise ValueError("every sequence must have the same interactions; got " + ", ".join(
            f"{s}: {len(v)}" for s, v in steps.items()))
    df["cumulative_seconds"] = df.groupby("sequence")["seconds"].cumsum()
    per = df.groupby("interaction")[["J", "F", "J&F", "seconds", "cumulative_seconds"]].mean().reset_index()
    jf = per["J&F"].to_numpy()
    n = len(per)
    steps_i = per["interaction"].to_numpy(dtype=np.float64)
    auc_int = float(jf[0]) if n == 1 else _area(steps_i, jf) / float(steps_i[-1] - steps_i[0])
    budget = seconds_per_object * n * float(df.groupby("sequence")["objects"].first().mean())
    xs = np.concatenate([[0.0], per["cumulative_seconds"].to_numpy()])
    ys = np.concatenate([[0.0], jf])
    grid = np.linspace(0.0, budget, 4001)
    auc_time = _area(grid, np.interp(grid, xs, ys)) / budget
    return {
        "per_interaction": per,
        "auc_interactions": auc_int,
        "auc_time": auc_time,
        "time_budget_s": budget,
        "jf_at_60s": float(np.interp(60.0, xs, ys)),
        "sequences": int(df["sequence"].nunique()),
        "interactions": n,
    }


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid-rule area under ``y(x)``."""
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2.0)
