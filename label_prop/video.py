"""Video input and output for :mod:`label_prop.segment`: frames streamed from a video file
(OpenCV) or a frame folder, and an overlay video written frame by frame."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from label_prop.io import overlay, read_frame

#: Frame files of a frame folder (case-insensitive), read in name order.
FRAME_EXTS = (".jpg", ".jpeg", ".png")


def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """``(frame count or -1, fps or 0.0)`` of a video file or frame folder (folders: fps 0).

    Raises:
        FileNotFoundError: missing input; ValueError: OpenCV cannot open the file.
    """
    path = Path(path)
    if path.is_dir():
        return len([p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS]), 0.0
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video")
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


def iter_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream ``[H, W, 3]`` uint8 RGB frames of a video file (OpenCV) or a frame folder.

    Raises:
        FileNotFoundError: missing input or a folder without frames.
        ValueError: OpenCV cannot open the video or it yields no frame (the message names it).
    """
    path = Path(path)
    n = 0
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS)
        if not files:
            raise FileNotFoundError(f"{path}: no {'/'.join(FRAME_EXTS)} frames in this folder")
        for f in files:
            if max_frames is not None and n >= max_frames:
                return
            yield read_frame(f)
            n += 1
        return
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    try:
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise ValueError(f"{path}: OpenCV decoded no frame from this video")


class OverlayWriter:
    """Streaming ``mp4v`` writer of overlay frames (opened on the first frame).

    Raises:
        ValueError: OpenCV cannot open the output (names the file).
    """

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path, self.fps, self.vw = Path(path), fps, None

    def write(self, frame: np.ndarray, ids: np.ndarray) -> None:
        """Blend ``ids`` ``[H, W]`` over ``frame`` ``[H, W, 3]`` RGB and append it."""
        if self.vw is None:
            h, w = frame.shape[:2]
            self.vw = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.vw.isOpened():
                raise ValueError(f"{self.path}: OpenCV cannot write an mp4v video of size {w}x{h}")
        self.vw.write(cv2.cvtColor(overlay(frame, ids), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Finish the file (nothing to do when no frame was written)."""
        if self.vw is not None:
            self.vw.release()
