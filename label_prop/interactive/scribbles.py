"""Scribbles: strokes per label in pixel coordinates, checked and rasterised.

A *scribble set* is a plain mapping ``{label: [stroke, ...]}`` so that a browser front end can
send it as JSON: ``label`` is an object id (1..254) for a positive stroke or ``0`` for a
background stroke, and each stroke is a polyline ``[N, 2]`` of ``(x, y)`` pixel coordinates
(x = column, y = row, 0-based, full frame resolution; ``N >= 1``, a single point is a dot).
Example: ``{1: [[[120, 80], [140, 85], [160, 95]]], 0: [[[10, 10], [10, 200]]]}``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from label_prop.data.io import VOID_ID

#: Label of background strokes.
BACKGROUND = 0

#: Value of :func:`rasterize` where no stroke passes.
UNLABELED = -1

Scribbles = Mapping[int, Sequence[np.ndarray]]


def check_scribbles(scribbles: Mapping, labels: Sequence[int] | None = None) -> dict[int, list[np.ndarray]]:
    """Validate a scribble set and return it as ``{label: [float64 [N, 2] (x, y), ...]}``.

    Labels may be ints or decimal strings (JSON object keys); empty stroke lists are dropped.

    Args:
        scribbles: ``{label: [stroke, ...]}``, a stroke an array-like ``[N, 2]`` of ``(x, y)``.
        labels: the allowed labels (background 0 and the session's object ids); None = any of 0..254.

    Raises:
        ValueError: a label is not an integer, is void (255) or not allowed; a stroke is not
            ``[N, 2]`` with ``N >= 1`` or holds a non-finite coordinate (the message names it).
    """
    if not isinstance(scribbles, Mapping):
        raise ValueError(f"scribbles must be a mapping {{label: [stroke, ...]}}, got {type(scribbles).__name__}")
    out: dict[int, list[np.ndarray]] = {}
    for key, strokes in scribbles.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"scribble label {key!r} is not an integer") from None
        if label < 0 or label >= VOID_ID or (labels is not None and label not in labels):
            allowed = "0..254" if labels is None else ", ".join(str(i) for i in labels)
            raise ValueError(f"scribble label {label} is not allowed (allowed: {allowed})")
        checked = []
        for i, stroke in enumerate(strokes):
            arr = np.asarray(stroke, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
                raise ValueError(f"stroke {i} of label {label} must be [N, 2] (x, y) points, got shape {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"stroke {i} of label {label} has a non-finite coordinate")
            checked.append(arr)
        if checked:
            out.setdefault(label, []).extend(checked)
    return out


def merge_scribbles(a: Mapping[int, Sequence[np.ndarray]], b: Mapping[int, Sequence[np.ndarray]]) -> dict[int, list[np.ndarray]]:
    """Strokes of ``a`` then those of ``b``, per label (a new dict; the inputs are not changed)."""
    out = {int(k): list(v) for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(int(k), []).extend(v)
    return out


def rasterize(scribbles: Mapping[int, Sequence[np.ndarray]], shape: tuple[int, int], width: int = 1,
              widths: Mapping[int, Sequence[int]] | None = None) -> np.ndarray:
    """Draw the strokes into a label map.

    Args:
        scribbles: checked strokes (:func:`check_scribbles`).
        shape: ``(H, W)`` of the frame, pixels.
        width: stroke width in pixels (OpenCV polyline thickness; 1 = the 8-connected line
            through the points, coordinates rounded to the nearest pixel).
        widths: optional per-stroke widths in pixels, ``{label: [width of each stroke]}``
            (a brush size per stroke); strokes it does not cover are drawn with ``width``.

    Returns:
        ``[H, W]`` int16: the label of the stroke drawn there, :data:`UNLABELED` (-1) elsewhere.
        Parts of strokes outside the frame are clipped. Where strokes of different labels
        cross, the label drawn last wins (labels in ascending order, strokes in order).

    Raises:
        ValueError: a width below 1.
    """
    widths = widths or {}
    if width < 1 or any(w < 1 for ws in widths.values() for w in ws):
        raise ValueError(f"stroke widths must be >= 1 pixel, got {width} and {dict(widths)}")
    out = np.full(shape, UNLABELED, dtype=np.int16)
    for label in sorted(scribbles):
        layer = np.zeros(shape, dtype=np.uint8)
        own = list(widths.get(label, ()))
        for i, stroke in enumerate(scribbles[label]):
            w = int(own[i]) if i < len(own) else width
            pts = np.round(np.asarray(stroke, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
            if len(pts) == 1:
                cv2.circle(layer, tuple(int(v) for v in pts[0, 0]), max(w // 2, 0), 1, -1)
            else:
                cv2.polylines(layer, [pts], False, 1, thickness=w, lineType=cv2.LINE_8)
        out[layer > 0] = label
    return out


def scribbles_to_json(scribbles: Mapping[int, Sequence[np.ndarray]]) -> dict[str, list[list[list[float]]]]:
    """The JSON form of a scribble set: ``{"label": [[[x, y], ...], ...]}`` (plain lists)."""
    return {str(int(k)): [np.asarray(s, dtype=np.float64).tolist() for s in v] for k, v in scribbles.items()}
