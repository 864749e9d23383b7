"""Segment your own video from a first-frame mask: palette PNGs and an overlay video.

Usage::

    python -m label_prop.segment INPUT --mask FIRST.png --model NAME --out DIR
        [--objects 1,3] [--no-overlay] [--fps 24] [--overwrite] [--max-frames N] [--progress]
        [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50] [--input-size -1]
        [--checkpoints-dir checkpoints] [--moco FILE] [--device auto|cpu|cuda] [--seed 0] [--threads N]

INPUT is a video file read with OpenCV (``.mp4``, ``.avi``, ...) or a folder of frames
(``.jpg``/``.jpeg``/``.png``, sorted by name, all of one size; :mod:`label_prop.data.video`).
FIRST.png holds the object ids of the first frame (a palette PNG as DAVIS / YouTube-VOS, or
greyscale ids; 255 = void; a 0/255 mask is object 1), at the frame size, with at least one object.

Writes DIR (refused when it holds files, unless ``--overwrite``):

* ``00000.png, 00001.png, ...``: object ids per frame, palette PNGs (DAVIS palette);
* ``overlay.mp4``: the frames with the objects' colours blended at 50 % (H.264, else ``mp4v``
  with a warning: :class:`label_prop.data.video.OverlayWriter`; FPS of the input video, else ``--fps``);
* ``segment.json``: the command, the model (name and file), the seed of a ``random`` encoder,
  the git revision of the code, the tracked objects, the frame
  count (and the header's count when a video decodes fewer frames: a warning), the overlay's
  codec, seconds per frame and the peak resident memory.

Everything is written into a hidden ``.DIR.partial`` folder beside DIR, which replaces DIR only
when complete: an interrupted or failed run (Ctrl-C, bad data, a full disk) leaves an earlier
DIR as it was. While it runs, the lock ``.DIR.lock.segment`` beside DIR names this process: a
second ``segment`` on the same DIR fails at once (:func:`hvc.output_lock.hold_output`).
``--overwrite`` replaces a DIR that holds only these outputs; other files in it
are an error (they would be lost). A progress bar with the remaining time is shown on a terminal.

Frames are decoded, segmented (:class:`label_prop.propagation.pipeline.VideoSegmenter`), written and dropped
one at a time, so memory does not grow with the video's length: it is the encoder, the engine's
context buffer (``n_context + 1`` frames of features, :class:`label_prop.propagation.engine.ContextMemory`)
and one frame. Exit status: 0, 1 (bad data, or a folder that cannot be written), 2 (usage error),
130 (interrupted), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from hvc.output_lock import hold_output
from hvc.errors import UsageError
from hvc.runtime import (atomic_write, check_output_dir, git_revision, peak_rss_mib, resolve_device, run_cli,
                         staged_dir)
from label_prop.config import MemoryConfig, PropagationConfig
from label_prop.propagation.features import FrameEncoder, add_encoder_arguments, build_encoder, resolve_model
from label_prop.data.io import read_annotation, write_palette_png
from label_prop.propagation.pipeline import Timings, VideoSegmenter, require_objects
from label_prop.data.plans import starting_ids
from label_prop.evaluation.results import model_name
from label_prop.data.video import OverlayWriter, VideoFrames

PROG = "python -m label_prop.segment"
#: The files this command writes into --out (anything else there is not replaced by --overwrite).
OUTPUT_FILES = re.compile(r"\d+\.png|overlay\.mp4|segment\.json")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog=PROG, description="Segment a video file or frame folder from a first-frame mask.")
    p.add_argument("input", metavar="INPUT", help="video file (mp4, avi, ... via OpenCV) or folder of frames")
    p.add_argument("--mask", required=True, help="first-frame object ids, a palette or greyscale PNG of the first "
                   "frame's size in pixels (required)")
    p.add_argument("--model", default="random",
                   help="'random', a name (checkpoints/NAME.pth) or a .pth path (default: random)")
    p.add_argument("--out", required=True, type=Path, help="output folder (required)")
    p.add_argument("--objects", default=None,
                   help="comma-separated object ids to track (default: every id in the mask)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4 (default: write it)")
    p.add_argument("--fps", type=float, default=24.0,
                   help="frames per second of overlay.mp4 for frame folders; videos keep theirs (default 24)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --out folder that holds an earlier output (default: refuse)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (default: all)")
    p.add_argument("--progress", action="store_true",
                   help="also print a line with the peak memory every 50 frames, e.g. for logs "
                        "(default: off; a terminal always gets a progress bar)")
    PropagationConfig.add_arguments(p)
    MemoryConfig.add_arguments(p)
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
    frames = VideoFrames(src, args.max_frames)
    mask = read_annotation(args.mask, None)
    with hold_output(out, PROG, tag="segment"):  # a second segment on this --out fails at once
        return _run_locked(args, config, frames, mask, out)


def _run_locked(args: argparse.Namespace, config: PropagationConfig, frames: VideoFrames, mask: np.ndarray,
                out: Path) -> int:
    """:func:`_run` once the lock of ``out`` is held."""
    check_output_dir(out, args.overwrite, OUTPUT_FILES, PROG)
    objects = [int(o) for o in args.objects.split(",") if o.strip()] if args.objects else None
    present = starting_ids(mask, ())
    require_objects(present, str(args.mask))
    if objects is not None and not set(objects) <= set(present):
        raise ValueError(f"{args.mask}: object ids {sorted(set(objects) - set(present))} are not in the mask "
                         f"(present: {present})")
    device = resolve_device(args.device)
    model_path = resolve_model(args.model, args.checkpoints_dir)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device, precision=args.precision)
    stream = iter(frames)
    first_name, first = next(stream)
    if first.shape[:2] != mask.shape:
        raise ValueError(f"{args.mask}: size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from the first frame "
                         f"{first_name} ({first.shape[1]}x{first.shape[0]})")
    with staged_dir(out) as tmp:
        record = _segment(args, config, encoder, frames, itertools.chain([(first_name, first)], stream), mask,
                          objects if objects is not None else present, tmp)
        record.update(model={"name": model_name(args.model), "path": str(model_path.resolve()) if model_path else None},
                      objects_requested=objects, device=str(device), seed=args.seed, git_revision=git_revision(),
                      precision=encoder.precision_choice.record())
        atomic_write(tmp / "segment.json", lambda t: Path(t).write_text(json.dumps(record, indent=2) + "\n"))
    print(f"{record['frames']} frames in {record['wall_s']:.1f} s, peak RSS {record['peak_rss_mib']:.0f} MiB; "
          f"wrote {out}/<frame>.png" + ("" if args.no_overlay else f" and {out}/overlay.mp4 ({record['codec']})"))
    return 0


def _segment(args: argparse.Namespace, config: PropagationConfig, encoder: FrameEncoder, frames: VideoFrames,
             stream, mask: np.ndarray, tracked: list[int], tmp: Path) -> dict:
    """Segment and write every frame of ``stream`` (``(name, frame)`` pairs) into ``tmp``; returns
    the record of ``segment.json`` (without the model and device)."""
    fps = frames.fps if frames.fps > 0 else args.fps
    writer = None if args.no_overlay else OverlayWriter(tmp / "overlay.mp4", fps)
    total = frames.header_frames if frames.header_frames > 0 else None
    if total is not None and args.max_frames is not None:
        total = min(total, args.max_frames)
    tm, wall0, t = Timings(), time.perf_counter(), 0
    memory = MemoryConfig.from_mapping(vars(args))
    seg = VideoSegmenter(encoder, config, object_ids=tracked, timings=tm, memory=memory)
    with (writer if writer is not None else nullcontext()), \
            tqdm(total=total, desc=frames.path.name, unit="frame", file=sys.stderr, disable=None) as bar:
        for t, (name, image) in enumerate(stream):
            ids = seg.step(image, mask if t == 0 else None, new_ids=tracked if t == 0 else None, source=args.mask,
                           name=name)
            write_palette_png(tmp / f"{t:05d}.png", ids)
            if writer is not None:
                writer.write(image, ids)
            bar.update()
            if args.progress and t % 50 == 0:
                tqdm.write(f"frame {t}/{total if total is not None else '?'}  peak RSS {peak_rss_mib():.0f} MiB",
                           file=sys.stderr)
    shortfall = frames.shortfall()
    if shortfall:
        warnings.warn(shortfall)
    return {
        "command": shlex.join([sys.executable, "-m", "label_prop.segment", *sys.argv[1:]]),
        "input": str(frames.path), "mask": str(args.mask), "frames": t + 1,
        "header_frames": frames.header_frames, "warnings": [shortfall] if shortfall else [],
        "size": list(mask.shape), "objects": [int(i) for i in tracked],
        "codec": writer.codec if writer is not None else None, "fps": fps, "n_context": config.n_context,
        "config": asdict(config), "memory": asdict(memory),
        "reid_events": [list(e) for e in seg.propagator.memory.events if e[2] != "admitted"]
        if seg.propagator is not None and seg.propagator.memory is not None else [],
        "wall_s": time.perf_counter() - wall0,
        **{k: v for k, v in tm.per_frame().items() if k.startswith(("features", "propagate"))},
        "peak_rss_mib": peak_rss_mib(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data or unwritable, 2 usage error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args), interrupted=f"{args.out} was left as it was")


if __name__ == "__main__":
    sys.exit(main())
