"""The interactive protocol's loop for one sequence: robot scribbles in, session masks out,
scores and seconds per interaction (DAVIS interactive protocol, Caelles et al.,
arXiv:1803.00557; see :mod:`label_prop.interactive.robot` and
:mod:`label_prop.interactive.scoring`).

1. Interaction 1: the robot scribbles every object and the background on
   :func:`~label_prop.interactive.robot.first_frame` (against an empty prediction).
2. After each interaction all frames are scored; the next frame to scribble is the one with
   the lowest J&F (``frame_choice="worst"``, the protocol's rule, which reads the ground truth)
   or the session's :meth:`~label_prop.interactive.session.InteractiveSession.recommend`
   (``"recommended"``, no ground truth), skipping frames on which the robot finds no error
   large enough to scribble (then the next worst / next least reliable).
3. When no frame has such an error the remaining interactions repeat the last result with
   0 seconds (``annotated_frame = -1``), as the protocol scores missing interactions.

The seconds of an interaction are the wall-clock time of the session's work: for interaction
1 the session's creation (feature extraction of every frame) plus the annotation, afterwards
the annotation (the strokes' segmentation and the propagation).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from hvc.errors import UsageError
from label_prop.data.io import VOID_ID, read_frame, read_mask
from label_prop.data.plans import Benchmark
from label_prop.propagation.features import FrameEncoder
from label_prop.interactive.robot import RobotConfig, first_frame, robot_scribbles
from label_prop.interactive.scoring import frame_scores
from label_prop.interactive.session import InteractiveConfig, InteractiveSession

FRAME_CHOICES = ("worst", "recommended")


@dataclass(frozen=True)
class ProtocolConfig:
    """The loop's settings."""

    #: Interactions per sequence (the protocol's maximum: 8).
    interactions: int = 8
    #: How the next frame is chosen: ``"worst"`` (lowest J&F, the protocol's) or ``"recommended"``.
    frame_choice: str = "worst"
    #: The scribble robot.
    robot: RobotConfig = field(default_factory=RobotConfig)

    def __post_init__(self):
        if self.interactions < 1:
            raise UsageError(f"interactions must be >= 1, got {self.interactions}")
        if self.frame_choice not in FRAME_CHOICES:
            raise UsageError(f"frame choice must be one of {', '.join(FRAME_CHOICES)}, got {self.frame_choice!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sequence(frames: Sequence[np.ndarray], gt: np.ndarray, object_ids: Sequence[int], encoder: FrameEncoder,
                 config: InteractiveConfig = InteractiveConfig(), protocol: ProtocolConfig = ProtocolConfig(), *,
                 binary: bool = False, name: str = "") -> tuple[list[dict], np.ndarray]:
    """Run the protocol on one sequence (see the module docstring).

    Args:
        frames: ``T`` frames ``[H, W, 3]`` uint8 RGB.
        gt: ``[T, H, W]`` ground-truth ids (255 = void).
        object_ids: the objects to segment and score.
        encoder: the feature extractor (its device is the session's).
        config: the session's settings.
        protocol: the loop's settings.
        binary: DAVIS-2016 single-object scoring.
        name: the sequence name for the result rows.

    Returns:
        ``(rows, masks)``: one dict per interaction with the keys of
        :data:`label_prop.interactive.scoring.COLUMNS`, and the final ``[T, H, W]`` uint8 masks.

    Raises:
        ValueError: sizes disagree, or the robot finds nothing to scribble on the first frame.
    """
    gt = np.asarray(gt)
    if gt.ndim != 3 or len(gt) != len(frames) or gt.shape[1:] != np.asarray(frames[0]).shape[:2]:
        raise ValueError(f"{name}: ground truth {gt.shape} does not match {len(frames)} frames of "
                         f"size {np.asarray(frames[0]).shape[:2]}")
    ids = [int(i) for i in object_ids]
    session, setup, frame, scribbles = _open_session(frames, gt, ids, encoder, config, protocol.robot, name)
    rows: list[dict] = []
    masks = session.masks()
    for i in range(1, protocol.interactions + 1):
        seconds = 0.0
        if frame >= 0:
            t0 = time.perf_counter()
            masks = session.annotate(frame, scribbles)
            _sync(encoder.device)
            seconds = time.perf_counter() - t0 + (setup if i == 1 else 0.0)
        j, f = frame_scores(masks, gt, ids, binary)
        rows.append({"sequence": name, "interaction": i, "annotated_frame": frame, "J": float(j.mean()),
                     "F": float(f.mean()), "J&F": float((j.mean() + f.mean()) / 2), "seconds": seconds,
                     "objects": len(ids)})
        if i == protocol.interactions or frame < 0:
            continue
        frame, scribbles = _next_frame(session, masks, gt, ids, (j + f) / 2, protocol)
    return rows, masks


def _open_session(frames: Sequence[np.ndarray], gt: np.ndarray, ids: list[int], encoder: FrameEncoder,
                  config: InteractiveConfig, robot: RobotConfig,
                  name: str) -> tuple[InteractiveSession, float, int, dict[int, list[np.ndarray]]]:
    """Create the session (timed, CUDA synchronised) and the robot's scribbles of interaction 1
    on :func:`~label_prop.interactive.robot.first_frame` (against an empty prediction).

    Returns:
        ``(session, seconds of its creation, the first frame, its scribbles)``.

    Raises:
        ValueError: the robot finds nothing to scribble on the first frame.
    """
    t0 = time.perf_counter()
    session = InteractiveSession(frames, encoder, ids, config)
    _sync(encoder.device)
    setup = time.perf_counter() - t0
    frame = first_frame(gt, ids)
    scribbles = robot_scribbles(None, gt[frame], [0, *ids], robot)
    if not any(k != 0 for k in scribbles):
        raise ValueError(f"{name}: the robot finds no object to scribble on frame {frame}")
    return session, setup, frame, scribbles


def _next_frame(session: InteractiveSession, masks: np.ndarray, gt: np.ndarray, ids: list[int],
                jf: np.ndarray, protocol: ProtocolConfig) -> tuple[int, dict[int, list[np.ndarray]] | None]:
    """The next frame to scribble and the robot's scribbles on it: the candidates in order (lowest
    mean J&F first for ``"worst"``, ``jf`` being ``[objects, T]``; the session's ranking for
    ``"recommended"``), the first on which the robot finds an error large enough.

    Returns:
        ``(frame, scribbles)``, or ``(-1, None)`` when no frame has such an error.
    """
    if protocol.frame_choice == "worst":
        candidates = np.argsort(jf.mean(0), kind="stable").tolist()
    else:
        candidates = session.ranked_frames()
    for c in candidates:
        sc = robot_scribbles(masks[c], gt[c], [0, *ids], protocol.robot)
        if sc:
            return int(c), sc
    return -1, None


def load_sequence(bench: Benchmark, seq: str, root=None, max_frames: int | None = None
                  ) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Frames, ground truth ``[T, H, W]`` and object ids of one sequence (DAVIS-2016: ``[1]``;
    DAVIS-2017: ``1 .. N``, N the largest id in any frame, void excluded).

    Raises:
        FileNotFoundError, ValueError: missing files, sizes that differ, or no object (names the file).
    """
    paths = bench.frames(seq, root)[:max_frames]
    frames = [read_frame(p) for p in paths]
    gts = []
    for p, f in zip(paths, frames):
        ap = bench.annotation(seq, p.stem, root)
        m = read_mask(ap, binary=bool(bench.binary))
        if m.shape != f.shape[:2]:
            raise ValueError(f"{ap}: size {m.shape} differs from the frame {p} {f.shape[:2]}")
        gts.append(m)
    gt = np.stack(gts)
    ids = [1] if bench.binary else list(range(1, int(gt[gt != VOID_ID].max(initial=0)) + 1))
    if not ids or not np.isin(gt, ids).any():
        raise ValueError(f"{bench.name}/{seq}: no object in the ground truth")
    return frames, gt, ids
