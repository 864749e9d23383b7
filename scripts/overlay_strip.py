"""An overlay strip: a few frames of one sequence with predicted masks blended over them, side by side.

Usage::

    python scripts/overlay_strip.py --frames DIR --masks DIR --out strip.jpg [--count 5] [--height 180]

``--frames`` holds the sequence's JPEGs (e.g. ``$HVC_DATA_ROOT/DAVIS2016/JPEGImages/480p/blackswan``),
``--masks`` the palette PNGs of the same frame names that ``scripts/run_test.sh`` wrote (e.g.
``results/random/davis16/blackswan``). ``--count`` frames evenly spaced over the predicted ones are
blended (DAVIS colours, :func:`label_prop.data.io.overlay`), scaled to ``--height`` pixels and joined
left to right. Relative paths are taken from the current directory. The README's picture is made
this way (its command is in ``docs/benchmarks.md``).

Exit codes: 0 written, 1 a folder is missing or holds no matching frames (one line naming it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from label_prop.data.io import overlay, read_frame, read_mask


def build_parser() -> argparse.ArgumentParser:
    """The command line (no side effects)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--frames", type=Path, required=True, help="folder of the sequence's JPEG frames")
    p.add_argument("--masks", type=Path, required=True, help="folder of predicted palette PNGs (same frame names)")
    p.add_argument("--out", type=Path, required=True, help="output image (.jpg or .png)")
    p.add_argument("--count", type=int, default=5, help="frames in the strip (default 5)")
    p.add_argument("--height", type=int, default=180, help="height of each frame in the strip, pixels (default 180)")
    return p


def strip(frames_dir: Path, masks_dir: Path, count: int, height: int) -> np.ndarray:
    """The strip ``[height, sum of widths, 3]`` uint8 of ``count`` evenly spaced predicted frames.

    Raises:
        FileNotFoundError: a folder is missing, or no PNG of ``masks_dir`` has a JPEG in ``frames_dir``.
    """
    for d in (frames_dir, masks_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d.resolve()}: no such folder")
    names = [p.stem for p in sorted(masks_dir.glob("*.png")) if (frames_dir / f"{p.stem}.jpg").is_file()]
    if not names:
        raise FileNotFoundError(f"{masks_dir.resolve()}: no palette PNG with a matching JPEG in {frames_dir.resolve()}")
    picks = [names[i] for i in np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)]
    tiles = []
    for n in picks:
        im = Image.fromarray(overlay(read_frame(frames_dir / f"{n}.jpg"), read_mask(masks_dir / f"{n}.png")))
        tiles.append(np.asarray(im.resize((round(im.width * height / im.height), height), Image.BILINEAR)))
    return np.concatenate(tiles, axis=1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        img = strip(args.frames, args.masks, args.count, args.height)
    except FileNotFoundError as e:
        print(f"overlay_strip: error: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(args.out, quality=88)
    print(f"wrote {args.out.resolve()} ({img.shape[1]}x{img.shape[0]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
