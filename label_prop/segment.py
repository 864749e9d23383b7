"""Segment your own video from a first-frame mask: palette PNGs and an overlay video.

Usage::

    python -m label_prop.segment INPUT --mask FIRST.png --model NAME --out DIR
        [--objects 1,3] [--no-overlay] [--fps 24] [--overwrite] [--max-frames N] [--progress]
        [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50] [--input-size -1]
        [--checkpoints-dir checkpoints] [--moco FILE] [--device auto|cpu|cuda] [--seed 0] [--threads N]

INPUT is a video file read with OpenCV (``.mp4``, ``.avi``, ...) or a folder of frames
(``.jpg``/``.jpeg``/``.png``, sorted by name; :mod:`label_prop.video`). FIRST.png holds the object
ids of the first frame (a palette PNG as DAVIS / YouTube-VOS, or greyscale ids; 255 = void; a
0/255 mask is object 1), at the frame size.

Writes into DIR (created; refused when it holds files, unless ``--overwrite``):

* ``00000.png, 00001.png, ...``: object ids per frame, palette PNGs (DAVIS palette);
* ``overlay.mp4``: the frames with the objects' colours blended at 50 % (OpenCV ``mp4v``; FPS of
  the input video, else ``--fps``);
* ``segment.json``: the command, frame count, seconds per frame and the peak resident memory.

Frames are decoded, segmented (:class:`label_prop.pipeline.VideoSegmenter`), written and dropped
one at a time, so memory does not grow with the video's length: it is the encoder, the engine's
context buffer (``n_context + 1`` frames of features, :class:`label_prop.engine.ContextMemory`)
and one frame. Exit status: 0, 1 (bad data) or 2 (usage error), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from hvc.runtime import UsageError, atomic_write, peak_rss_mib, resolve_device, run_cli
from label_prop.config import PropagationConfig
from label_prop.features import add_encoder_arguments, build_encoder
from label_prop.io import read_annotation, write_palette_png
from label_prop.pipeline import Timings, VideoSegmenter
from label_prop.plans import starting_ids
from label_prop.video import OverlayWriter, iter_frames, video_info

PROG = "python -m label_prop.segment"


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog=PROG, description="Segment a video file or frame folder from a first-frame mask.")
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
    PropagationConfig.add_arguments(p)
    add_encoder_arguments(p)
    return p


def _run(args: argparse.Namespace) -> int:
    """Check the inputs, then segment and write frame by frame (see the module docstring)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_frames is not None and args.max_frames < 2:
        raise UsageError(f"--max-frames must be >= 2 (the first frame is the mask's), got {args.max_frames}")
    config = PropagationConfig.from_mapping(vars(args))
    src, out = Path(args.input), Path(args.out)
    n_frames, fps = video_info(src)
    mask = read_annotation(args.mask, None)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} holds files; pass --overwrite to write into it")
    objects = [int(o) for o in args.objects.split(",") if o.strip()] if args.objects else None
    device = resolve_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device)
    frames = iter_frames(src, args.max_frames)
    first = next(frames)
    if first.shape[:2] != mask.shape:
        raise ValueError(f"{args.mask}: size {mask.shape} differs from the first frame of {src} {first.shape[:2]}")
    present = starting_ids(mask, ())
    if objects is not None and not set(objects) <= set(present):
        raise ValueError(f"{args.mask}: object ids {sorted(set(objects) - set(present))} are not in the mask "
                         f"(present: {present})")
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        for old in out.glob("[0-9]*.png"):
            old.unlink()
    writer = None if args.no_overlay else OverlayWriter(out / "overlay.mp4", fps if fps > 0 else args.fps)
    tm, wall0, t = Timings(), time.perf_counter(), 0
    tracked = objects if objects is not None else present
    seg = VideoSegmenter(encoder, config, object_ids=tracked, timings=tm)
    try:
        for t, image in enumerate(itertools.chain([first], frames)):
            ids = seg.step(image, mask if t == 0 else None, new_ids=tracked if t == 0 else None, source=args.mask)
            write_palette_png(out / f"{t:05d}.png", ids)
            if writer is not None:
                writer.write(image, ids)
            if args.progress and t % 50 == 0:
                print(f"frame {t}/{n_frames}  peak RSS {peak_rss_mib():.0f} MiB", file=sys.stderr)
    finally:
        if writer is not None:
            writer.close()
    record = {
        "command": shlex.join([sys.executable, "-m", "label_prop.segment", *sys.argv[1:]]),
        "input": str(src), "mask": str(args.mask), "frames": t + 1, "size": list(mask.shape),
        "objects": objects, "device": str(device), "n_context": config.n_context,
        "wall_s": time.perf_counter() - wall0,
        **{k: v for k, v in tm.per_frame().items() if k.startswith(("features", "propagate"))},
        "peak_rss_mib": peak_rss_mib(),
    }
    atomic_write(out / "segment.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    print(f"{record['frames']} frames in {record['wall_s']:.1f} s, peak RSS {record['peak_rss_mib']:.0f} MiB; "
          f"wrote {out}/<frame>.png" + ("" if args.no_overlay else f" and {out}/overlay.mp4"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
