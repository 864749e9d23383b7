"""Scribbles to a mask within one frame: random walker on the image against kNN over the frame's
features, IoU against the ground truth from robot scribbles on real DAVIS-2016 frames.

Frames: of each sequence of the chosen DAVIS-2016 half (``--split``, default the held-out half;
the dev half is for choosing settings), the frames at 1/3 and 2/3 of its length. Two scenarios:

* ``first``: the robot's first-interaction scribbles (every label, against an empty prediction),
  no previous mask;
* ``correct``: the previous mask is the ground truth of the frame ``--shift`` frames earlier (a
  stand-in for a propagated mask that lags behind the motion); the robot scribbles its errors
  and the method corrects it. The table also gives that previous mask's own IoU.

Usage::

    python benchmarks/compare_scribble_masks.py [--split dev|heldout] [--rw-beta 1000] [--rw-short-side 160]
        [--model random] [--input-size 240] [--shift 5] [--threads 1]

``--rw-beta`` and ``--rw-short-side`` take comma-separated values (every combination is run).
Prints one row per method, setting and scenario: frames, mean and median IoU, mean seconds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_prop.data.datasets import get_benchmark, parse_sequences  # noqa: E402
from label_prop.propagation.features import build_encoder  # noqa: E402
from label_prop.interactive.robot import robot_scribbles  # noqa: E402
from label_prop.interactive.scribbles import rasterize  # noqa: E402
from label_prop.interactive.seeded import SeedConfig, scribble_mask  # noqa: E402
from label_prop.data.io import read_frame, read_mask  # noqa: E402
from label_prop.evaluation.metrics import region_similarity  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="heldout", choices=("dev", "heldout"))
    p.add_argument("--sequences", default=None, help="instead of --split")
    p.add_argument("--rw-beta", default="1000")
    p.add_argument("--rw-short-side", default="160")
    p.add_argument("--no-knn", action="store_true", help="skip the feature kNN method")
    p.add_argument("--model", default="random")
    p.add_argument("--input-size", type=int, default=240, help="feature extraction short side for kNN")
    p.add_argument("--shift", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench = get_benchmark("davis16")
    names = bench.sequences(args.data_root, parse_sequences(bench, args.sequences,
                                                            None if args.sequences else args.split))
    encoder = None if args.no_knn else build_encoder(args.model)
    methods = [("random_walker", f"beta {b}, short side {s}",
                SeedConfig(rw_beta=float(b), rw_short_side=int(s)))
               for b in args.rw_beta.split(",") for s in args.rw_short_side.split(",")]
    if not args.no_knn:
        methods.append(("feature_knn", f"{args.model}, input {args.input_size}", SeedConfig(method="feature_knn")))
    res: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    prior_iou = []
    for seq in names:
        paths = bench.frames(seq, args.data_root)
        for t in (len(paths) // 3, 2 * len(paths) // 3):
            img = read_frame(paths[t])
            gt = read_mask(bench.annotation(seq, paths[t].stem, args.data_root), binary=True)
            prev = read_mask(bench.annotation(seq, paths[t - args.shift].stem, args.data_root), binary=True)
            feat = None if encoder is None else encoder.encode_frame(img, args.input_size)
            prior_iou.append(region_similarity(prev == 1, gt == 1))
            for scen, prior in (("first", None), ("correct", prev)):
                strokes = rasterize(robot_scribbles(prior, gt, [0, 1]), gt.shape)
                for name, setting, cfg in methods:
                    t0 = time.perf_counter()
                    m = scribble_mask(img, strokes, [0, 1], prior=prior, features=feat, cfg=cfg)
                    dt = time.perf_counter() - t0
                    res.setdefault((name, setting, scen), []).append((region_similarity(m == 1, gt == 1), dt))
        print(f"{seq} done", file=sys.stderr)
    print(f"DAVIS-2016 {'sequences ' + args.sequences if args.sequences else args.split + ' half'}: "
          f"{len(prior_iou)} frames (1/3 and 2/3 of each sequence), {args.threads} thread(s)")
    print(f"previous mask of the 'correct' scenario (ground truth {args.shift} frames earlier): "
          f"mean IoU {np.mean(prior_iou):.3f}")
    print("| method | setting | scenario | frames | mean IoU | median IoU | s/frame |")
    print("|---|---|---|---|---|---|---|")
    for (name, setting, scen), v in res.items():
        a = np.asarray(v)
        print(f"| {name} | {setting} | {scen} | {len(a)} | {a[:, 0].mean():.3f} | {np.median(a[:, 0]):.3f} | {a[:, 1].mean():.2f} |")


if __name__ == "__main__":
    main()
