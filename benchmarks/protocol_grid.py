"""The test-time protocol per encoder: temperature, top-k and n-context chosen on a named half.

Usage::

    python benchmarks/protocol_grid.py --models random PATH/TO/encoder.pth --names random trained
        --output-dir bench_out/protocol [--split dev] [--input-size 240]
        [--temperatures 0.05 0.1 0.2] [--topks 5 15 30] [--n-contexts 5 20] [--threads 1]

For every encoder, the features of every frame of the split (DAVIS-2016 val,
``$HVC_DATA_ROOT/DAVIS2016``) are computed once, at ``--input-size`` (the fast protocol), and
label propagation (:class:`label_prop.propagation.pipeline.VideoSegmenter`, the engine of every command) is
run from frame 0's mask for every point of the grid; the masks are written as palette PNGs and
scored by :func:`label_prop.evaluate.evaluate_benchmark` (the official DAVIS measures). The grid
is one setting at a time around the reference protocol (temperature 0.1, top-k 15, n-context of
the first ``--n-contexts`` value): each value of each list with the other two at their
reference value, so its size is the sum of the lists' lengths minus two, not their product.

Outputs in ``--output-dir``: ``grid.csv`` (one row per model, setting and sequence: J, F, J&F),
``best.csv`` (per model: the setting with the highest mean J&F over the split, and the
reference protocol's) and the predicted masks under ``masks/``. Runs already in ``grid.csv`` are
skipped, so an interrupted run continues. Relative paths are the current directory's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from label_prop.config import PropagationConfig
from label_prop.data.datasets import parse_sequences
from label_prop.evaluate import evaluate_benchmark
from label_prop.propagation.features import build_encoder
from label_prop.data.filelists import open_benchmark
from label_prop.data.io import read_annotation, read_frame, write_palette_png
from label_prop.propagation.pipeline import VideoSegmenter

REFERENCE = {"temperature": 0.1, "topk": 15}


def build_parser() -> argparse.ArgumentParser:
    """The command line (no side effects)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--models", nargs="+", required=True, help="encoders: 'random' or .pth paths")
    p.add_argument("--names", nargs="+", default=None, help="short names of the models (default: file stems)")
    p.add_argument("--output-dir", type=Path, required=True, help="where grid.csv, best.csv and the masks go")
    p.add_argument("--split", default="dev", help="half of DAVIS-2016 val to choose on (default: dev)")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--input-size", type=int, default=240, help="short side of the frames, pixels (default: 240)")
    p.add_argument("--temperatures", nargs="+", type=float, default=[0.05, 0.1, 0.2],
                   help="softmax temperatures (default: 0.05 0.1 0.2)")
    p.add_argument("--topks", nargs="+", type=int, default=[5, 15, 30], help="top-k values (default: 5 15 30)")
    p.add_argument("--n-contexts", nargs="+", type=int, default=[20, 5, 50],
                   help="context frames; the first is the reference (default: 20 5 50)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    return p


def grid(temperatures: list[float], topks: list[int], n_contexts: list[int]) -> list[dict]:
    """The one-setting-at-a-time grid around ``{temperature 0.1, topk 15, n_context
    n_contexts[0]}``: a list of ``{temperature, topk, n_context}`` without repeats."""
    ref = {**REFERENCE, "n_context": n_contexts[0]}
    points = [ref]
    for key, values in (("temperature", temperatures), ("topk", topks), ("n_context", n_contexts)):
        points += [{**ref, key: v} for v in values]
    unique = []
    for p in points:
        if p not in unique:
            unique.append(p)
    return unique


def _tag(point: dict) -> str:
    return f"t{point['temperature']:g}-k{point['topk']}-n{point['n_context']}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or [Path(m).stem for m in args.models]
    if len(names) != len(args.models):
        raise SystemExit("--names needs one name per model")
    bench = open_benchmark("davis16", "first")
    seqs = bench.sequences(args.data_root, parse_sequences(bench, None, args.split))
    points = grid(args.temperatures, args.topks, args.n_contexts)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "grid.csv"
    done = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["model", "setting"])
    have = set(zip(done["model"], done["setting"]))
    for model, name in zip(args.models, names):
        todo = [p for p in points if (name, _tag(p)) not in have]
        if not todo:
            continue
        encoder = build_encoder(model, device=torch.device("cpu"))
        for seq in seqs:
            plan = bench.plan(seq, args.data_root)
            images = [read_frame(f) for f in plan.frames]
            first = read_annotation(plan.annotations[0], plan.binary)
            probe = VideoSegmenter(encoder, PropagationConfig(input_size=args.input_size))
            feats = [probe.encode(im) for im in images]
            for p in todo:
                config = PropagationConfig(input_size=args.input_size, **p)
                seg = VideoSegmenter(encoder, config, object_ids=plan.object_ids, late_starts=False)
                folder = out / "masks" / name / _tag(p) / seq
                folder.mkdir(parents=True, exist_ok=True)
                for t, (path, feat) in enumerate(zip(plan.frames, feats)):
                    ids = seg.step(annotation=first if t == 0 else None, features=feat, size=first.shape)
                    write_palette_png(folder / f"{path.stem}.png", ids)
            print(f"{name} {seq}: {len(todo)} settings", file=sys.stderr)
        rows = []
        for p in todo:
            _, per_seq = evaluate_benchmark(out / "masks" / name / _tag(p), bench, args.data_root, seqs)
            for _, r in per_seq.iterrows():
                rows.append({"model": name, "setting": _tag(p), **p, "sequence": r["Sequence"].rsplit("_", 1)[0],
                             "J": r["J-Mean"], "F": r["F-Mean"], "JF": (r["J-Mean"] + r["F-Mean"]) / 2})
        done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True)
        done.to_csv(csv, index=False)
    means = done.groupby(["model", "setting", "temperature", "topk", "n_context"], as_index=False)["JF"].mean()
    ref_tag = _tag({**REFERENCE, "n_context": args.n_contexts[0]})
    best = []
    for name in names:
        m = means[means["model"] == name].sort_values("JF", ascending=False)
        best.append({"model": name, "best": m.iloc[0]["setting"], "best_JF": m.iloc[0]["JF"], "reference": ref_tag,
                     "reference_JF": float(m[m["setting"] == ref_tag]["JF"].iloc[0])})
    pd.DataFrame(best).to_csv(out / "best.csv", index=False)
    print(means.pivot(index="setting", columns="model", values="JF").round(3).to_string())
    print(pd.DataFrame(best).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
