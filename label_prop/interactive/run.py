"""Score interactive segmentation on a benchmark with the local robot (``scripts/run_interactive.sh``).

Usage::

    python -m label_prop.interactive.run MODEL BENCHMARK [--sequences a,b | --split dev|heldout]
        [--interactions 8] [--frame-choice worst|recommended] [--seed-method random_walker|feature_knn]
        [--feature-dtype float16|float32] [--max-frames N] [--data-root PATH] [--results-dir results]
        [--overwrite] [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50] [--input-size -1]
        [--checkpoints-dir checkpoints] [--moco FILE] [--seed 0] [--device auto|cpu|cuda] [--threads N]

BENCHMARK is ``davis16`` or ``davis17`` (the DAVIS layout with ground truth for every frame; the
protocol needs it). Every sequence goes through :func:`label_prop.interactive.protocol.run_sequence`.
Written into ``<results-dir>/<model name>/interactive/BENCHMARK/FRAME_CHOICE/`` (a ``.pth`` MODEL
path is named by its stem, :func:`label_prop.evaluation.results.model_name`):

* ``interactive_results.csv``: one row per sequence and interaction (``sequence, interaction,
  annotated_frame, J, F, J&F, seconds, objects``), rewritten atomically after every sequence;
* ``interactive_summary.json``: the command, settings, hardware and the figures of
  :func:`label_prop.interactive.scoring.summarize`;
* ``<sequence>/<frame>.png``: the masks after the last interaction (palette PNGs), each
  sequence written to a hidden folder and renamed when complete.

Printed: J, F, J&F and seconds per interaction (means over sequences), AUC-J&F over interactions
and over time, J&F@60s, and the hardware the seconds were measured on. This module parses the
command line and writes files; the work is :mod:`label_prop.interactive`'s. Exit status: 0, 1
(bad data) or 2 (usage error), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from hvc.output_lock import hold_output
from hvc.errors import UsageError
from hvc.hardware import in_words
from hvc.runtime import atomic_write, git_revision, resolve_device, run_cli, staged_dir
from label_prop.config import PropagationConfig
from label_prop.data.datasets import get_benchmark, parse_sequences
from label_prop.propagation.features import add_encoder_arguments, build_encoder
from label_prop.interactive.protocol import FRAME_CHOICES, ProtocolConfig, load_sequence, run_sequence
from label_prop.interactive.scoring import COLUMNS, summarize
from label_prop.interactive.seeded import METHODS, SeedConfig
from label_prop.interactive.session import FEATURE_DTYPES, InteractiveConfig
from label_prop.data.io import write_palette_png
from label_prop.data.plans import data_root
from label_prop.evaluation.results import model_name

PROG = "bash scripts/run_interactive.sh"
RESULTS_CSV = "interactive_results.csv"
SUMMARY_JSON = "interactive_summary.json"


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog=PROG, description="Interactive segmentation scored with a local robot after the "
                                "DAVIS interactive protocol (J&F per interaction, AUC-J&F, J&F@60s).")
    p.add_argument("model", metavar="MODEL", help="'random', a name (checkpoints/MODEL.pth) or a .pth path")
    p.add_argument("benchmark", metavar="BENCHMARK", help="davis16 or davis17 (ground truth for every frame)")
    p.add_argument("--sequences", default=None, help="comma-separated sequences (default: all)")
    p.add_argument("--split", default=None, help="a named half instead of --sequences: dev or heldout (davis16)")
    p.add_argument("--interactions", type=int, default=8, help="interactions per sequence (default 8, the protocol's)")
    p.add_argument("--frame-choice", choices=FRAME_CHOICES, default="worst",
                   help="next frame: worst J&F (the protocol's robot, reads ground truth) or the session's "
                        "recommended frame (default worst)")
    p.add_argument("--seed-method", choices=METHODS, default="random_walker",
                   help="strokes to a mask: random walker on the image or kNN over the frame's features "
                        "(default random_walker)")
    p.add_argument("--feature-dtype", choices=tuple(FEATURE_DTYPES), default="float16",
                   help="storage of the cached features (default float16)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each sequence (default: all)")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--results-dir", default="results", type=Path, help="results root (default: results)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    PropagationConfig.add_arguments(p)
    add_encoder_arguments(p)
    return p


def _write_masks(out: Path, seq: str, paths: list[Path], masks: np.ndarray) -> None:
    """The final masks as palette PNGs in ``out/.<seq>.partial``, which replaces ``out/<seq>`` when
    complete (:func:`hvc.runtime.staged_dir`)."""
    with staged_dir(out / seq, within=out) as tmp_dir:
        for p, m in zip(paths, masks):
            write_palette_png(tmp_dir / f"{p.stem}.png", m)


def _run(args: argparse.Namespace) -> int:
    """Run every requested sequence, write the CSV, masks and summary, print the figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = get_benchmark(args.benchmark)
    if not bench.full_gt or bench.binary is None:
        raise UsageError(f"benchmark {bench.name}: interactive scoring needs ground truth for every frame "
                         f"(davis16 or davis17)")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    names = bench.sequences(args.data_root, parse_sequences(bench, args.sequences, args.split))
    out = Path(args.results_dir) / model_name(args.model) / "interactive" / bench.name / args.frame_choice
    with hold_output(out, PROG, tag="interactive"):  # a second run on this folder fails at once
        return _run_locked(args, bench, names, out)


def _run_locked(args: argparse.Namespace, bench, names: list[str], out: Path) -> int:
    """:func:`_run` once the lock of the results folder ``out`` is held."""
    csv_path, json_path = out / RESULTS_CSV, out / SUMMARY_JSON
    if csv_path.exists() and not args.overwrite:
        raise FileExistsError(f"{csv_path} exists; pass --overwrite to replace it")
    config = InteractiveConfig(propagation=PropagationConfig.from_mapping(vars(args)),
                               seeds=SeedConfig(method=args.seed_method), feature_dtype=args.feature_dtype)
    protocol = ProtocolConfig(interactions=args.interactions, frame_choice=args.frame_choice)
    device = resolve_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device, precision=args.precision)
    record = {"command": shlex.join([sys.executable, "-m", "label_prop.interactive.run", *sys.argv[1:]]),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "data_root": str(data_root(args.data_root).resolve()), "git_revision": git_revision(),
              "hardware": in_words(device), "precision": encoder.precision_choice.record(),
              "device": str(device), "torch": torch.__version__,
              "normalization": encoder.normalization.name,
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    rows: list[dict] = []
    for seq in names:
        frames, gt, ids = load_sequence(bench, seq, args.data_root, args.max_frames)
        seq_rows, masks = run_sequence(frames, gt, ids, encoder, config, protocol, binary=bool(bench.binary), name=seq)
        rows += seq_rows
        _write_masks(out, seq, bench.frames(seq, args.data_root), masks)
        df = pd.DataFrame(rows, columns=COLUMNS)
        atomic_write(csv_path, lambda tmp: df.to_csv(tmp, index=False))
        print(f"{seq}: J&F per interaction " + " ".join(f"{r['J&F']:.3f}" for r in seq_rows)
              + f"; {np.mean([r['seconds'] for r in seq_rows]):.1f} s per interaction", file=sys.stderr)
    summary = summarize(pd.DataFrame(rows, columns=COLUMNS))
    record.update({k: v for k, v in summary.items() if k != "per_interaction"}, complete=True,
                  per_interaction=summary["per_interaction"].to_dict(orient="records"))
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    print(f"{record['sequences']} sequences, {record['interactions']} interactions, frame choice {args.frame_choice}, "
          f"input size {config.propagation.input_size}, n_context {config.propagation.n_context}")
    print(format_summary(record))
    print(f"wrote {csv_path} and {json_path}")
    return 0


def format_summary(rec: dict) -> str:
    """The printed table and figures of a summary record (:func:`label_prop.interactive.scoring.summarize`)."""
    lines = [f"{'interaction':>11} {'J':>6} {'F':>6} {'J&F':>6} {'seconds':>8}"]
    for r in rec["per_interaction"]:
        lines.append(f"{int(r['interaction']):>11} {r['J']:>6.3f} {r['F']:>6.3f} {r['J&F']:>6.3f} {r['seconds']:>8.1f}")
    lines += [f"AUC-J&F over interactions: {rec['auc_interactions']:.3f}",
              f"AUC-J&F over time (0 to {rec['time_budget_s']:.0f} s): {rec['auc_time']:.3f}",
              f"J&F@60s: {rec['jf_at_60s']:.3f}",
              f"hardware: {rec['hardware']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
