"""Segment your own video from a first-frame mask: palette PNGs and an overlay video.

Usage::

    python -m label_prop.segment INPUT --mask FIRST.png --model NAME --out DIR
        [--objects 1,3] [--no-overlay] [--fps 24] [--overwrite]
        [--checkpoints-dir checkpoints] [--moco FILE] [--device auto|cpu|cuda] [--seed 0]
        [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50] [--input-size -1] [--max-frames N] [--threads N]

INPUT is a video file read with OpenCV (``.mp4``, ``.avi``, ...) or a folder of frames
(``.jpg``/``.jpeg``/``.png``, sorted by name). FIRST.png holds the object ids of the first
frame (a palette PNG as DAVIS / YouTube-VOS, or greyscale ids; 255 = void), at the frame size.

Writes into DIR (created; refused when it holds files, unless ``--overwrite``):

* ``00000.png, 00001.png, ...``: object ids per frame, palette PNGs (DAVIS palette);
* ``overlay.mp4``: the frames with the objects' colours blended at 50 % (OpenCV ``mp4v``; FPS of
  the input video, else ``--fps``);
* ``segment.json``: the command, frame count, seconds per frame and the peak resident memory.

Frames are decoded, segmented, written and dropped one at a time (``label_prop.run.segment_frames``),
so memory does not grow with the video's length: it is the encoder, the engine's context buffer
(``n_context + 1`` frames of features, see :class:`label_prop.engine.LabelPropagator`) and one
frame.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from label_prop.io import overlay, read_frame, write_palette_png

FRAME_EXTS = (".jpg", ".jpeg", ".png")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss``, KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


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
        if self.vw is not None:
            self.vw.release()


def segment_video_file(args: argparse.Namespace) -> dict:
    """Run the command (see the module docstring); returns the record written to segment.json.

    Raises:
        FileNotFoundError, ValueError, FileExistsError, CheckpointError: bad input, mask,
        objects, model, or an output folder that holds files without ``--overwrite``.
    """
    from label_prop.features import build_encoder
    from label_prop.run import Timings, load_annotation, pick_device, segment_frames

    src = Path(args.input)
    out = Path(args.out)
    if args.max_frames is not None and args.max_frames < 2:
        raise ValueError(f"--max-frames must be >= 2 (the first frame is the mask's), got {args.max_frames}")
    n_frames, fps = video_info(src)
    mask = load_annotation(args.mask, None)  # a 0/255 mask (DAVIS-2016 style) is object 1
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} holds files; pass --overwrite to write into it")
    objects = [int(o) for o in args.objects.split(",") if o.strip()] if args.objects else None
    device = pick_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device)
    frames = iter_frames(src, args.max_frames)
    first = next(frames)
    if first.shape[:2] != mask.shape:
        raise ValueError(f"{args.mask}: size {mask.shape} differs from the first frame of {src} {first.shape[:2]}")
    present = set(np.unique(mask).tolist()) - {0, 255}
    if objects is not None and not set(objects) <= present:
        raise ValueError(f"{args.mask}: object ids {sorted(set(objects) - present)} are not in the mask "
                         f"(present: {sorted(present)})")
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        for old in out.glob("[0-9]*.png"):
            old.unlink()
    current: list[np.ndarray] = []

    def stream() -> Iterator[np.ndarray]:
        for f in _chain(first, frames):
            current[:] = [f]
            yield f

    writer = None if args.no_overlay else OverlayWriter(out / "overlay.mp4", fps if fps > 0 else args.fps)
    tm = Timings()
    wall0 = time.perf_counter()
    t = 0
    try:
        for t, ids in enumerate(segment_frames(stream(), mask, encoder, device=device, topk=args.topk,
                                               temperature=args.temperature, radius=args.radius,
                                               n_context=args.n_context, object_ids=objects,
                                               input_size=args.input_size, timings=tm)):
            write_palette_png(out / f"{t:05d}.png", ids)
            if writer is not None:
                writer.write(current[0], ids)
            if args.progress and t % 50 == 0:
                print(f"frame {t}/{n_frames}  peak RSS {peak_rss_mib():.0f} MiB", file=sys.stderr)
    finally:
        if writer is not None:
            writer.close()
    record = {
        "command": shlex.join([sys.executable, "-m", "label_prop.segment", *sys.argv[1:]]),
        "input": str(src), "mask": str(args.mask), "frames": t + 1, "size": list(mask.shape),
        "objects": objects, "device": str(device), "n_context": args.n_context,
        "wall_s": time.perf_counter() - wall0,
        **{k: v for k, v in tm.per_frame().items() if k.startswith(("features", "propagate"))},
        "peak_rss_mib": peak_rss_mib(),
    }
    (out / "segment.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m label_prop.segment",
                                description="Segment a video file or frame folder from a first-frame mask.")
    p.add_argument("input", metavar="INPUT", help="video file (mp4, avi, ... via OpenCV) or folder of frames")
    p.add_argument("--mask", required=True, help="first-frame object ids (palette or greyscale PNG)")
    p.add_argument("--model", default="random", help="'random', a name (checkpoints/NAME.pth) or a .pth path")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--objects", default=None, help="comma-separated ids to track (default: all in the mask)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--fps", type=float, default=24.0, help="overlay FPS for frame folders (default 24)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that holds files")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--progress", action="store_true", help="print progress and peak memory every 50 frames")
    p.add_argument("--checkpoints-dir", default="checkpoints", type=Path)
    p.add_argument("--moco", default=None, help="optional MoCo-v1 ResNet-50 merged with the encoder")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the 'random' encoder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--topk", type=int, default=15)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--radius", type=float, default=12)
    p.add_argument("--n-context", type=int, default=50)
    p.add_argument("--input-size", type=int, default=-1,
                   help="scale frames so that their short side is this many pixels before feature extraction "
                        "(bilinear; -1 = full resolution); masks are written at full size")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 error)."""
    from label_prop.run import call_cli

    args = build_parser().parse_args(argv)
    rec = call_cli(segment_video_file, args)
    if rec is None:
        return 1
    print(f"{rec['frames']} frames in {rec['wall_s']:.1f} s, peak RSS {rec['peak_rss_mib']:.0f} MiB; "
          f"wrote {args.out}/<frame>.png" + ("" if args.no_overlay else f" and {args.out}/overlay.mp4"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
