"""Where a trained encoder loses to another: per-frame J curves, affinity statistics and overlays.

Usage::

    python benchmarks/failure_analysis.py --models random PATH/TO/encoder.pth --names random trained
        --sequences car-shadow,drift-chicane,goat --output-dir bench_out/failures [--input-size 240]
        [--n-context 20] [--threads 1]

For every DAVIS-2016 sequence (``$HVC_DATA_ROOT/DAVIS2016``) and every encoder, the label
propagation protocol (:mod:`label_prop.propagation.reference`, the dense statement: the same soft labels as
the engine) is run from frame 0's mask with the *fast protocol* (frames scaled to a short side
of ``--input-size`` pixels before feature extraction, masks scored at full size), and for each
frame ``t >= 1`` this records:

* ``J``: region similarity of the argmax mask against the ground truth (the DAVIS J of that frame);
* ``gt_area``: the object's share of the frame's pixels in the ground truth;
* ``entropy``: the mean over query positions of the entropy of the top-k softmax weights,
  divided by ``log(k)`` (0: one key takes all the weight, 1: the k keys weigh the same);
* ``top1_weight``: the mean weight of the best key (the spread of the top-k weights);
* ``first_frame_share``: the mean share of the top-k weight that falls on frame 0 (the long-term
  memory) rather than on the short-term context;
* ``fg_mass``: the predicted object's soft-label mass on the grid over its mass in frame 0
  (below 1: the object shrinks; near 0: lost);
* ``fg_entropy``: ``entropy`` over the query positions that the ground truth marks as object.

Outputs in ``--output-dir``: ``frames.csv`` (one row per model, sequence, frame),
``summary.csv`` (per model and sequence: mean J over frames 1..T-2 as DAVIS scores it, and the
means of the statistics), ``curves-<seq>.png`` (J and entropy per frame, one line per model) and
``parting-<seq>.jpg`` (the frame where the first two models' J differ most: the frame with each
model's mask, side by side, and the ground truth outline). Relative paths are the current
directory's.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from label_prop.config import PropagationConfig
from label_prop.propagation.features import build_encoder
from label_prop.data.io import overlay, read_annotation, read_frame
from label_prop.evaluation.metrics import region_similarity, seg2bmap
from label_prop.propagation.pipeline import first_frame_labels, labels_to_ids
from label_prop.propagation.reference import context_entries, dense_frame_topk


def build_parser() -> argparse.ArgumentParser:
    """The command line (no side effects)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--models", nargs="+", required=True, help="encoders: 'random' or .pth paths (first two are compared)")
    p.add_argument("--names", nargs="+", default=None, help="short names of the models (default: file stems)")
    p.add_argument("--sequences", required=True, help="comma-separated DAVIS-2016 val sequences")
    p.add_argument("--output-dir", type=Path, required=True, help="where the CSVs and pictures go")
    p.add_argument("--data-root", type=Path, default=None, help="dataset root (default: $HVC_DATA_ROOT)")
    p.add_argument("--input-size", type=int, default=240, help="short side of frames for features, pixels (default 240)")
    p.add_argument("--n-context", type=int, default=20, help="context frames (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p


@torch.no_grad()
def analyse_sequence(encoder, frames: list[np.ndarray], gts: list[np.ndarray], config: PropagationConfig,
                     input_size: int) -> tuple[list[dict], list[np.ndarray]]:
    """Propagate frame 0's mask densely and measure every frame (module docstring).

    Args:
        encoder: a :class:`label_prop.propagation.features.FrameEncoder`.
        frames: ``T`` frames ``[H, W, 3]`` uint8.
        gts: ``T`` binary ground-truth masks ``[H, W]`` (0/1).
        config: the protocol (topk, temperature, radius, n_context).
        input_size: short side for features, pixels (-1: full resolution).

    Returns:
        ``(rows, masks)``: one dict per frame ``t >= 1`` (keys of the module docstring) and the
        ``T`` predicted id masks ``[H, W]`` uint8 (frame 0 = its ground truth).
    """
    feats = [encoder.encode_frame(f, input_size).float() for f in frames]
    C, h, w = feats[0].shape
    hw = h * w
    labels0, ids = first_frame_labels(gts[0], (h, w))
    keys = [f.reshape(C, hw) for f in feats]
    labs = [labels0.reshape(labels0.shape[0], hw).t()]
    fg0 = float(labs[0][:, 1:].sum())
    masks = [gts[0].astype(np.uint8)]
    rows = []
    H, W = gts[0].shape
    for t in range(1, len(frames)):
        entries = context_entries(t, config.n_context)
        val, idx = dense_frame_topk(keys[t], [keys[e] for e in entries], (h, w), config)
        wgt = torch.softmax(val / config.temperature, dim=1)  # [hw, k]
        lab = torch.cat([labs[e] for e in entries], dim=0)
        cur = (wgt.unsqueeze(-1) * lab[idx]).sum(1)  # [hw, K]
        labs.append(cur)
        k = wgt.shape[1]
        ent = -(wgt * wgt.clamp_min(1e-12).log()).sum(1) / math.log(k)  # [hw]
        pred = labels_to_ids(cur.t().reshape(-1, h, w), (H, W), ids)
        masks.append(pred)
        gt_small = torch.nn.functional.interpolate(torch.from_numpy(gts[t].astype(np.float32))[None, None],
                                                   size=(h, w), mode="bilinear", align_corners=True).reshape(-1) > 0.5
        rows.append({
            "frame": t,
            "J": region_similarity(pred > 0, gts[t] > 0),
            "gt_area": float((gts[t] > 0).mean()),
            "entropy": float(ent.mean()),
            "top1_weight": float(wgt[:, 0].mean()),
            "first_frame_share": float((wgt * (idx < hw)).sum(1).mean()),
            "fg_mass": float(cur[:, 1:].sum()) / max(fg0, 1e-9),
            "fg_entropy": float(ent[gt_small].mean()) if bool(gt_small.any()) else float("nan"),
        })
    return rows, masks


def parting_picture(frame: np.ndarray, gt: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """``frame`` with each mask of ``masks`` blended over it, side by side, the ground-truth
    outline drawn in white on each; ``[H, n*W, 3]`` uint8."""
    edge = seg2bmap(gt > 0) > 0
    tiles = []
    for m in masks:
        im = overlay(frame, m)
        im[edge] = 255
        tiles.append(im)
    return np.concatenate(tiles, axis=1)


def plot_curves(df: pd.DataFrame, seq: str, path: Path) -> None:
    """J and top-k weight entropy against the frame, one line per model, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for name, g in df.groupby("model", sort=False):
        axes[0].plot(g["frame"], g["J"], label=name)
        axes[1].plot(g["frame"], g["entropy"], label=name)
    axes[0].set_ylabel("J")
    axes[1].set_ylabel("top-k weight entropy / log k")
    axes[1].set_xlabel("frame")
    axes[0].set_title(seq)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or [Path(m).stem for m in args.models]
    if len(names) != len(args.models):
        print("failure_analysis: error: --names must give one name per --models entry", file=sys.stderr)
        return 2
    root = Path(args.data_root or os.environ.get("HVC_DATA_ROOT", "data")).resolve() / "DAVIS2016"
    config = PropagationConfig(n_context=args.n_context)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    encoders = [build_encoder(m) for m in args.models]
    all_rows = []
    for seq in args.sequences.split(","):
        jpgs = sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        if not jpgs:
            print(f"failure_analysis: error: no frames in {root / 'JPEGImages' / '480p' / seq}", file=sys.stderr)
            return 1
        frames = [read_frame(p) for p in jpgs]
        gts = [(read_annotation(root / "Annotations" / "480p" / seq / f"{p.stem}.png", True) > 0).astype(np.uint8)
               for p in jpgs]
        seq_masks = []
        for name, enc in zip(names, encoders):
            rows, masks = analyse_sequence(enc, frames, gts, config, args.input_size)
            for r in rows:
                all_rows.append({"model": name, "sequence": seq, **r})
            seq_masks.append(masks)
            print(f"{seq:16s} {name:12s} J {np.mean([r['J'] for r in rows[:-1]]):.3f}", flush=True)
        df = pd.DataFrame([r for r in all_rows if r["sequence"] == seq])
        plot_curves(df, seq, args.output_dir / f"curves-{seq}.png")
        if len(names) >= 2:
            a, b = (df[df.model == n].set_index("frame")["J"] for n in names[:2])
            t = int((a - b).abs().iloc[:-1].idxmax())
            from PIL import Image
            Image.fromarray(parting_picture(frames[t], gts[t], [m[t] for m in seq_masks[:2]])).save(
                args.output_dir / f"parting-{seq}.jpg", quality=85)
    frames_df = pd.DataFrame(all_rows)
    frames_df.to_csv(args.output_dir / "frames.csv", index=False)
    # DAVIS scores frames 1..T-2: drop each sequence's last frame from the means.
    last = frames_df.groupby(["model", "sequence"])["frame"].transform("max")
    summary = frames_df[frames_df.frame < last].groupby(["model", "sequence"], sort=False).mean(numeric_only=True)
    summary = summary.drop(columns="frame").round(4)
    summary.to_csv(args.output_dir / "summary.csv")
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
