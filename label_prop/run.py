"""Segment a benchmark by label propagation and write palette PNGs (``scripts/run_test.sh``).

Usage::

    python -m label_prop.run MODEL BENCHMARK|FILELIST [--sequences a,b | --split dev|heldout] [--overwrite]
        [--save-overlays] [--data-root PATH] [--results-dir results] [--read-masks first|existing]
        [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50] [--input-size -1] [--max-objects 19]
        [--checkpoints-dir checkpoints] [--moco FILE] [--seed 0] [--device auto|cpu|cuda] [--threads N]

This module parses the command line and writes files; the work is done by the library:
:func:`label_prop.filelists.open_benchmark` (a benchmark of :mod:`label_prop.datasets` or a
filelist) gives one :class:`~label_prop.plans.SequencePlan` per sequence, and
:func:`label_prop.pipeline.segment_plan` segments it frame by frame
(:class:`~label_prop.pipeline.VideoSegmenter`) with the encoder of :mod:`label_prop.features`
and the settings of :class:`~label_prop.config.PropagationConfig`.

Outputs, under ``<results-dir>/MODEL/BENCHMARK/`` (a filelist's name for filelists):

* ``<sequence>/<frame>.png``: object ids as a palette PNG (DAVIS palette) of the frame's size,
  one per written frame (DAVIS: every frame; YouTube-VOS: the meta.json frames from the first
  appearance; filelists: flag-1 lines); the first annotated frame is the given annotation, void
  turned into background;
* ``<results-dir>/MODEL/BENCHMARK.zip`` for davis17dev / ytvos18 / ytvos19 after a run over all
  sequences: the server's layout (:mod:`label_prop.submission`);
* ``run-<UTC timestamp>.json``: the exact command, arguments, git revision, device, versions, the
  encoder's input normalisation and the measured seconds per frame (frame reading, feature
  extraction, propagation, writing);
* with ``--save-overlays``: ``<results-dir>/MODEL/overlays/BENCHMARK/<sequence>/<frame>.jpg``.

A sequence is written into a hidden ``.<sequence>.partial`` folder and renamed when complete, so
an interrupted run never leaves a half-written sequence under its final name. An existing
sequence folder is never replaced without ``--overwrite``. Exit status: 0, 1 (bad data) or 2
(usage error), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from tqdm import tqdm

from hvc.runtime import atomic_write, git_revision, resolve_device, run_cli
from label_prop.config import PropagationConfig
from label_prop.datasets import parse_sequences
from label_prop.features import FrameEncoder, add_encoder_arguments, build_encoder
from label_prop.filelists import READ_MASKS, open_benchmark
from label_prop.io import overlay, write_palette_png
from label_prop.pipeline import Timings, segment_plan
from label_prop.plans import Benchmark, SequencePlan, data_root
from label_prop.submission import build_submission, submission_path

PROG = "bash scripts/run_test.sh"


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Segment a benchmark or filelist by label propagation from the given object masks.")
    p.add_argument("model", metavar="MODEL", help="'random' (seeded baseline), a name (checkpoints/MODEL.pth) or a .pth path")
    p.add_argument("benchmark", metavar="BENCHMARK",
                   help="davis16, davis17, davis17dev, ytvos18, ytvos19, or a filelist (a .txt path or a "
                        "name in data/filelists/)")
    p.add_argument("--sequences", default=None, help="comma-separated sequences (default: all)")
    p.add_argument("--split", default=None, help="a named half of the benchmark instead of --sequences: "
                   "dev (for choosing settings) or heldout (for reporting); davis16 only")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument("--save-overlays", action="store_true", help="also write JPEG overlays")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--results-dir", default="results", type=Path, help="results root (default: results)")
    p.add_argument("--read-masks", choices=READ_MASKS, default="first",
                   help="filelists only: read only each sequence's first mask (default), or every mask file "
                        "that exists (objects start at their first mask: YouTube-VOS valid lists)")
    PropagationConfig.add_arguments(p)
    add_encoder_arguments(p)
    return p


def _check_outputs(args: argparse.Namespace, names: list[str], out_root: Path, ov_root: Path,
                   zip_path: Path | None) -> None:
    """FileExistsError naming what exists, unless ``--overwrite``."""
    if args.overwrite:
        return
    existing = [str(out_root / s) for s in names if (out_root / s).exists()]
    if args.save_overlays:
        existing += [str(ov_root / s) for s in names if (ov_root / s).exists()]
    if existing:
        raise FileExistsError(f"results exist: {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                              f"pass --overwrite to replace them")
    if zip_path is not None and zip_path.exists():
        raise FileExistsError(f"{zip_path} exists; pass --overwrite to replace it")


def _write_sequence(plan: SequencePlan, encoder: FrameEncoder, config: PropagationConfig, out_root: Path,
                    ov_dir: Path | None) -> Timings:
    """Segment one sequence into ``.<name>.partial`` and rename it ``<name>`` when complete."""
    tmp_dir = out_root / f".{plan.name}.partial"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    if ov_dir is not None:
        shutil.rmtree(ov_dir, ignore_errors=True)  # absent, or --overwrite was given
        ov_dir.mkdir(parents=True)
    tm = Timings()
    results = segment_plan(plan, encoder, config, tm)
    try:
        for r in tqdm(results, total=len(plan.frames), desc=plan.name, unit="frame", file=sys.stderr):
            if not r.save:
                continue
            t0 = time.perf_counter()
            write_palette_png(tmp_dir / f"{r.path.stem}.png", r.ids)
            if ov_dir is not None:
                Image.fromarray(overlay(r.image, r.ids)).save(ov_dir / f"{r.path.stem}.jpg", quality=90)
            tm.write += time.perf_counter() - t0
    except (ValueError, FileNotFoundError):
        shutil.rmtree(tmp_dir, ignore_errors=True)  # a data error: leave no partial folder
        raise
    final = out_root / plan.name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp_dir, final)
    return tm


def _run(args: argparse.Namespace) -> int:
    """Segment every requested sequence, writing the PNGs, the run record and the zip."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PropagationConfig.from_mapping(vars(args))
    bench: Benchmark = open_benchmark(args.benchmark, args.read_masks)
    names = bench.sequences(args.data_root, parse_sequences(bench, args.sequences, args.split))
    plans = [bench.plan(s, args.data_root) for s in names]
    if not plans:
        raise ValueError(f"{bench.name}: no sequences to segment")
    out_root = args.results_dir / args.model / bench.name
    ov_root = args.results_dir / args.model / "overlays" / bench.name
    whole = bench.submission and not args.sequences and not args.split
    zip_path = submission_path(args.results_dir, args.model, bench) if whole else None
    _check_outputs(args, names, out_root, ov_root, zip_path)
    device = resolve_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device)
    started = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    record = {
        "command": shlex.join([sys.executable, "-m", "label_prop.run", *sys.argv[1:]]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data_root": str(data_root(args.data_root).resolve()), "git_revision": git_revision(),
        "started_utc": started, "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "host": platform.node(),
        "normalization": encoder.normalization.name, "sequences": {},
    }
    total, wall0, run_path = Timings(), time.perf_counter(), out_root / f"run-{started}.json"
    for plan in plans:
        tm = _write_sequence(plan, encoder, config, out_root, ov_root / plan.name if args.save_overlays else None)
        total.add(tm)
        record["sequences"][plan.name] = {"frames": len(plan.frames), "written": sum(plan.save), **tm.per_frame()}
        # The record is rewritten after every sequence, so an interrupted run keeps its timings.
        record.update(complete=plan is plans[-1], wall_s=time.perf_counter() - wall0, frames=total.frames,
                      **total.per_frame())
        if record["complete"] and zip_path is not None:
            build_submission(bench, out_root, zip_path, overwrite=True,
                             expected={p.name: p.saved_names() for p in plans})
            record["submission_zip"] = str(zip_path)
        atomic_write(run_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    print(f"{record['frames']} frames of {len(plans)} sequences in {record['wall_s']:.1f} s on {device}: "
          f"features {record['features_s_per_frame']:.3f} s/frame, "
          f"propagation {record['propagate_s_per_frame']:.3f} s/frame")
    print(f"wrote {out_root}/<sequence>/*.png and {run_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
