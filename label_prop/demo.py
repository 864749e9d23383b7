"""A self-contained demo: propagate a mask through a synthetic clip with known ground truth.

Usage::

    python -m label_prop.demo [--model random] [--frames 24] [--out DIR] [--overwrite] [--n-context 50] ...

No download: the clip (:func:`label_prop.data.synthetic.synthetic_clip`) is built from photographs
that scikit-image ships. A disk cut from ``chelsea`` (the cat) moves over ``astronaut`` while the
background pans, so every frame's ground truth is known. The first frame's mask is propagated
(:func:`label_prop.propagation.pipeline.segment_frames`) with the encoder of ``--model`` (``random`` by
default, or a checkpoint as in ``run_test.sh``), and the prediction is scored with the DAVIS
metrics (first and last frames excluded). With ``--out`` the palette PNGs and overlays are
written there (an existing folder is refused unless ``--overwrite``, which replaces a folder of
numbered PNG/JPEG files; other files there are an error, since the folder is replaced whole: it
is written under a hidden name and swapped in when complete, :func:`hvc.runtime.staged_dir`).
Exit status: 0, 1 (bad data, or a folder that cannot be written), 2 (usage error), 130
(interrupted), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hvc.errors import UsageError
from hvc.runtime import check_output_dir, resolve_device, run_cli, staged_dir
from label_prop.config import PropagationConfig
from label_prop.propagation.features import add_encoder_arguments, build_encoder
from label_prop.data.io import overlay, write_jpeg, write_palette_png
from label_prop.evaluation.metrics import evaluate_sequence, summarize
from label_prop.propagation.pipeline import segment_frames
from label_prop.data.synthetic import synthetic_clip

PROG = "python -m label_prop.demo"
#: The files the demo writes into --out.
OUTPUT_FILES = re.compile(r"\d+\.(png|jpg)")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random", help="'random' (default), a name in checkpoints/ or a .pth path")
    p.add_argument("--frames", type=int, default=24, help="clip length (default 24)")
    p.add_argument("--out", type=Path, default=None, help="write palette PNGs and overlays here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --out folder that holds an earlier demo output (default: refuse)")
    PropagationConfig.add_arguments(p)
    add_encoder_arguments(p)
    return p


def _run(args: argparse.Namespace) -> int:
    """Segment and score the clip, print the J&F table, write the outputs when asked."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames < 3:
        raise UsageError("--frames must be >= 3 (the metrics skip the first and last frames)")
    if args.out is not None:
        check_output_dir(args.out, args.overwrite, OUTPUT_FILES, PROG)
    config = PropagationConfig.from_mapping(vars(args))
    device = resolve_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device, precision=args.precision)
    frames, gt = synthetic_clip(args.frames)
    t0 = time.perf_counter()
    pred = np.stack(list(segment_frames(frames, gt[0], encoder, config)))
    wall = time.perf_counter() - t0
    s = summarize(list(evaluate_sequence(pred, gt).statistics().values()))
    print(f"synthetic clip: {args.frames} frames {frames.shape[2]}x{frames.shape[1]}, model {args.model}, "
          f"{wall / args.frames:.2f} s/frame on {device}")
    print(f"J&F-Mean {s['J&F-Mean']:.3f}  J-Mean {s['J-Mean']:.3f}  F-Mean {s['F-Mean']:.3f}  "
          f"J-Recall {s['J-Recall']:.3f}  J-Decay {s['J-Decay']:.3f}")
    if args.out is not None:
        with staged_dir(args.out) as tmp:
            for t in range(args.frames):
                write_palette_png(tmp / f"{t:05d}.png", pred[t])
                write_jpeg(tmp / f"{t:05d}.jpg", overlay(frames[t], pred[t]))
        print(f"wrote {args.out}/*.png and overlays *.jpg")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the J&F table. Returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
