"""A self-contained demo: propagate a mask through a synthetic clip with known ground truth.

Usage::

    python -m label_prop.demo [--model random] [--frames 24] [--out DIR] [--n-context 50]

No download: the clip is built from photographs that scikit-image ships. A disk cut from
``chelsea`` (the cat) moves over ``astronaut`` while the background pans, so every frame's
ground truth is known. The first frame's mask is propagated by the engine with the encoder of
``--model`` (``random`` by default, or a checkpoint as in ``run_test.sh``), and the prediction is
scored with the DAVIS metrics (first and last frames excluded). With ``--out`` the palette PNGs
and overlays are written there (an existing folder is refused unless ``--overwrite``, which
replaces only its numbered PNG/JPEG files).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from skimage import data as skdata
from skimage.transform import resize

from label_prop.features import CheckpointError, build_encoder
from label_prop.io import overlay, write_palette_png
from label_prop.metrics import evaluate_sequence, summarize
from label_prop.run import pick_device, segment_frames


def synthetic_clip(n_frames: int = 24, size: tuple[int, int] = (240, 320),
                   radius: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """A clip of a textured disk moving over a panning photograph, with its ground truth.

    Args:
        n_frames: number of frames T.
        size: ``(H, W)`` in pixels.
        radius: disk radius in pixels.

    Returns:
        ``(frames [T, H, W, 3] uint8, masks [T, H, W] uint8)`` with object id 1 on the disk.
    """
    H, W = size
    bg = (resize(skdata.astronaut(), (H + 40, W + 3 * n_frames + 40), anti_aliasing=True) * 255).astype(np.uint8)
    cat = skdata.chelsea()  # 300 x 451
    patch = (resize(cat[20:280, 100:360], (2 * radius, 2 * radius), anti_aliasing=True) * 255).astype(np.uint8)
    yy, xx = np.mgrid[-radius:radius, -radius:radius]
    disk = (yy + 0.5) ** 2 + (xx + 0.5) ** 2 < radius ** 2
    frames = np.empty((n_frames, H, W, 3), np.uint8)
    masks = np.zeros((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        frame = bg[20:20 + H, 3 * t:3 * t + W].copy()  # camera pans 3 px per frame
        cy = int(H / 2 + 0.15 * H * np.sin(2 * np.pi * t / max(n_frames, 1)))
        cx = int(radius + 10 + (W - 2 * radius - 20) * t / max(n_frames - 1, 1))
        y0, x0 = cy - radius, cx - radius
        region = frame[y0:y0 + 2 * radius, x0:x0 + 2 * radius]
        region[disk] = patch[disk]
        masks[t, y0:y0 + 2 * radius, x0:x0 + 2 * radius][disk] = 1
        frames[t] = frame
    return frames, masks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m label_prop.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random", help="'random' (default), a name in checkpoints/ or a .pth path")
    p.add_argument("--frames", type=int, default=24, help="clip length (default 24)")
    p.add_argument("--n-context", type=int, default=50, help="short-term context frames (default 50)")
    p.add_argument("--out", type=Path, default=None, help="write palette PNGs and overlays here")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder (its numbered .png/.jpg files are replaced)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the J&F table. Returns 0, or 1 on a bad model / output folder."""
    args = build_parser().parse_args(argv)
    if args.frames < 3:
        print("error: --frames must be >= 3 (the metrics skip the first and last frames)", file=sys.stderr)
        return 1
    if args.out is not None and args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    try:
        device = pick_device(args.device)
        encoder = build_encoder(args.model, device=device)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    frames, gt = synthetic_clip(args.frames)
    t0 = time.perf_counter()
    pred = np.stack(list(segment_frames(frames, gt[0], encoder, device=device, n_context=args.n_context)))
    wall = time.perf_counter() - t0
    scores = evaluate_sequence(pred, gt)
    s = summarize(list(scores.statistics().values()))
    print(f"synthetic clip: {args.frames} frames {frames.shape[2]}x{frames.shape[1]}, model {args.model}, "
          f"{wall / args.frames:.2f} s/frame on {device}")
    print(f"J&F-Mean {s['J&F-Mean']:.3f}  J-Mean {s['J-Mean']:.3f}  F-Mean {s['F-Mean']:.3f}  "
          f"J-Recall {s['J-Recall']:.3f}  J-Decay {s['J-Decay']:.3f}")
    if args.out is not None:
        for pattern in ("[0-9]*.png", "[0-9]*.jpg"):  # the demo's own earlier outputs, nothing else
            for old in args.out.glob(pattern):
                old.unlink()
        for t in range(args.frames):
            write_palette_png(args.out / f"{t:05d}.png", pred[t])
            Image.fromarray(overlay(frames[t], pred[t])).save(args.out / f"{t:05d}.jpg", quality=90)
        print(f"wrote {args.out}/*.png and overlays *.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
