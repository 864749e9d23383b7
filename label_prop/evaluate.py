"""Score predicted masks on a DAVIS benchmark: J, F and J&F, as the official DAVIS evaluation.

Usage::

    bash scripts/run_metrics.sh MODEL BENCHMARK [--sequences a,b | --split dev|heldout] [--results-dir results]
        [--data-root PATH] [--overwrite]

MODEL is what ``run_test.sh`` was given (``random``, a name, or a ``.pth`` path, which maps to
its stem: :func:`label_prop.evaluation.results.model_name`). Predictions are palette PNGs
``<results-dir>/<model name>/BENCHMARK/<sequence>/<frame>.png``, one per frame of the ground
truth (:meth:`~label_prop.data.plans.Benchmark.scored_frames`: the annotated frames, checked
complete). Only benchmarks with ground truth for every frame can be scored.

Ground truth whose first frame leaves ids out (e.g. objects 1, 5 and 30) is scored as the
official code does, objects 1..30, the absent ones scoring J = F = 1 where the prediction leaves
them empty too; a warning names the absent ids.

Two CSV files are written together (both or neither: :func:`hvc.runtime.atomic_write_all`) into
``<results-dir>/<model name>/BENCHMARK/``, with the columns of ``davis2017-evaluation``'s
``evaluation_method.py`` (``-SPLIT`` is added to the names with ``--split``):

* ``global_results.csv``: ``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay``, each the
  mean over all objects of all sequences;
* ``per-sequence_results.csv``: ``Sequence,J-Mean,F-Mean`` with one row ``<sequence>_<object id>``
  per object.

Values are fractions in [0, 1] written at full precision (the official script rounds to 3
decimals with ``float_format="%.3f"``).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from hvc.errors import UsageError
from hvc.runtime import atomic_write_all, clean_stale_temporaries, run_cli
from label_prop.data.datasets import get_benchmark, parse_sequences
from label_prop.data.io import read_mask
from label_prop.evaluation.metrics import (
    evaluate_sequence,
    first_frame_objects,
    summarize,
)
from label_prop.data.plans import Benchmark, starting_ids
from label_prop.evaluation.results import mixed_settings_message, results_csv_paths, results_root
from label_prop.evaluation.results import settings_groups

PROG = "bash scripts/run_metrics.sh"
GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
PER_SEQUENCE_COLUMNS = ["Sequence", "J-Mean", "F-Mean"]


def _load_sequence(
    pred_dir: Path, bench: Benchmark, seq: str, root: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Read and check the predictions and GT of one sequence.

    Returns ``(pred [T, H, W], gt [T, H, W], object ids)``.

    Raises:
        FileNotFoundError: the prediction folder or a GT annotation is missing.
        ValueError: a missing or extra prediction PNG, a size mismatch, or an object id absent
            from the GT (the message names the file). For binary (DAVIS-2016) benchmarks the
            object may be written as 1 or as 255 (the DAVIS-2016 on-disk value); other ids are
            errors.
    """
    frames = bench.scored_frames(seq, root)
    seq_dir = _prediction_folder(pred_dir, bench, seq, frames)
    gts: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    object_ids: list[int] = []
    for t, frame in enumerate(frames):
        gt_path = bench.annotation(seq, frame, root)
        gt = read_mask(gt_path, binary=bench.binary)
        if t == 0:
            object_ids = [1] if bench.binary else first_frame_objects(gt)
            if not object_ids:
                raise ValueError(f"{bench.name}/{seq}: no object in the first-frame annotation {gt_path}")
            _warn_absent_ids(gt, object_ids, gt_path)
            # DAVIS-2016 stores the object as 255 on disk: a prediction may use 1 or 255 for it
            allowed = {0, 1, 255} if bench.binary else {0, *object_ids}
        pred_path = seq_dir / f"{frame}.png"
        pred = read_mask(pred_path)
        _check_prediction(pred, gt, pred_path, gt_path, allowed, f"{bench.name}/{seq}", object_ids)
        gts.append(gt)
        preds.append(pred)
    return np.stack(preds), np.stack(gts), object_ids


def _prediction_folder(pred_dir: Path, bench: Benchmark, seq: str, frames: list[str]) -> Path:
    """The prediction folder ``pred_dir / seq``, checked to hold one PNG per scored frame of
    ``frames`` and no other (hidden files ignored).

    Raises:
        FileNotFoundError: the folder is missing.
        ValueError: a predicted frame is missing, or a PNG names no frame of the sequence (the
            first such file is named, with the count of the others).
    """
    seq_dir = pred_dir / seq
    if not seq_dir.is_dir():
        raise FileNotFoundError(f"{bench.name}/{seq}: prediction folder {seq_dir} not found")
    predicted = {p.stem for p in seq_dir.glob("*.png") if not p.name.startswith(".")}
    missing = [f for f in frames if f not in predicted]
    if missing:
        raise ValueError(
            f"{bench.name}/{seq}: missing predicted frame {seq_dir / (missing[0] + '.png')}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = sorted(predicted - set(frames))
    if extra:
        raise ValueError(
            f"{bench.name}/{seq}: extra predicted frame {seq_dir / (extra[0] + '.png')} "
            f"(no such frame in the sequence)" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    return seq_dir


def _check_prediction(pred: np.ndarray, gt: np.ndarray, pred_path: Path, gt_path: Path, allowed: set[int],
                      where: str, object_ids: list[int]) -> None:
    """Check one predicted mask ``[H, W]`` against its ground truth ``[H, W]``: same size, and
    only the ids in ``allowed`` (background and the objects; ``where`` is ``benchmark/sequence``).

    Raises:
        ValueError: a size mismatch or an unknown object id (the message names the files).
    """
    if pred.shape != gt.shape:
        raise ValueError(
            f"{pred_path}: prediction size {pred.shape[1]}x{pred.shape[0]} (WxH) does not match "
            f"the ground truth {gt.shape[1]}x{gt.shape[0]} ({gt_path})"
        )
    unknown = sorted(set(np.unique(pred).tolist()) - allowed)
    if unknown:
        raise ValueError(
            f"{pred_path}: predicted object ids {unknown} are not objects of {where} "
            f"(ground-truth objects: {object_ids})"
        )


def _warn_absent_ids(gt_first: np.ndarray, object_ids: list[int], gt_path: Path) -> None:
    """Warn (naming the file and the ids) when ids of ``1..N`` are absent from the first-frame
    ground truth: the official evaluation scores them anyway (J = F = 1 where the prediction
    leaves them empty too), which raises the means; our figures keep that computation."""
    present = set(starting_ids(gt_first, ()))
    absent = [i for i in object_ids if i not in present]
    if absent:
        warnings.warn(f"{gt_path}: object ids {_ranges(absent)} are absent from the first-frame ground truth "
                      f"(present: {sorted(present)}); as in the official evaluation they are scored as objects "
                      f"1..{max(object_ids)}, J = F = 1 wherever the prediction leaves them empty too")


def _ranges(ids: list[int]) -> str:
    """``[2, 3, 4, 6, 8, 9]`` -> ``"2-4, 6, 8-9"``."""
    parts, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}-{a}" if a > start else f"{a}")
            start = b
    return ", ".join(parts)


def evaluate_benchmark(
    results_dir: str | os.PathLike,
    bench: Benchmark | str,
    root: str | os.PathLike | None = None,
    sequences: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the predictions of one model on one benchmark.

    Args:
        results_dir: the folder of predictions, holding one sub-folder of PNGs per sequence
            (``results/MODEL/BENCHMARK``).
        bench: a :class:`~label_prop.data.datasets.Benchmark` or its name.
        root: the data root (default ``$HVC_DATA_ROOT``, else ``./data``).
        sequences: restrict to these sequences (default: all of the benchmark).

    Returns:
        ``(global_df, per_seq_df)``: one row with columns :data:`GLOBAL_COLUMNS` (means over all
        objects), and one row per object with :data:`PER_SEQUENCE_COLUMNS`
        (``Sequence = <sequence>_<object id>``). Values are fractions in [0, 1].

    Raises:
        UsageError: unknown benchmark or sequence, or a benchmark without full ground truth.
        ValueError: a missing / extra predicted frame, a size mismatch, or a predicted object id
            that is not an object of the sequence (the message names the file).
        FileNotFoundError: the dataset, a GT annotation or a prediction folder is missing.

    Source: ``davis2017-evaluation``, ``evaluation_method.py`` and
    ``davis2017/evaluation.py::DAVISEvaluation.evaluate`` (semi-supervised task; DAVIS-2016
    benchmarks are scored in single-object mode).
    """
    if isinstance(bench, str):
        bench = get_benchmark(bench)
    if not bench.full_gt:
        raise UsageError(
            f"benchmark {bench.name} has ground truth for the first frame only; it cannot be scored "
            f"(use a benchmark with full ground truth, e.g. davis16 or davis17)"
        )
    pred_dir = Path(results_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{bench.name}: prediction folder {pred_dir} not found")
    names = bench.sequences(root, list(sequences) if sequences else None)

    rows: list[tuple[str, float, float]] = []
    per_object = []
    for seq in tqdm(names, desc=f"evaluate {bench.name}", unit="seq", file=sys.stderr):
        pred, gt, object_ids = _load_sequence(pred_dir, bench, seq, root)
        # The official semi-supervised driver passes no void mask: GT void counts as background.
        scores = evaluate_sequence(
            pred, gt, None if bench.binary else object_ids, single_object=bench.binary, ignore_void=False
        )
        for oid, (j_stats, f_stats) in scores.statistics().items():
            per_object.append((j_stats, f_stats))
            rows.append((f"{seq}_{oid}", j_stats.mean, f_stats.mean))

    summary = summarize(per_object)
    global_df = pd.DataFrame([[summary[c] for c in GLOBAL_COLUMNS]], columns=GLOBAL_COLUMNS)
    per_seq_df = pd.DataFrame(rows, columns=PER_SEQUENCE_COLUMNS)
    return global_df, per_seq_df


def write_results(
    out_dir: str | os.PathLike, global_df: pd.DataFrame, per_seq_df: pd.DataFrame, overwrite: bool = False,
    suffix: str = "",
) -> tuple[Path, Path]:
    """Write ``global_results<suffix>.csv`` and ``per-sequence_results<suffix>.csv`` into
    ``out_dir`` together (``suffix`` is ``-SPLIT`` for a named half, else empty): both temporary
    files are complete before either replaces its old version, so a failure (a full disk, a
    read-only folder) leaves the old pair as it was.

    Raises:
        FileExistsError: a CSV exists and ``overwrite`` is False (names it, says --overwrite).
        OSError: the files cannot be written (names the file and the cause).
    """
    paths = results_csv_paths(out_dir, suffix)
    check_writable(out_dir, overwrite, suffix)
    atomic_write_all([(paths[0], lambda tmp: global_df.to_csv(tmp, index=False)),
                      (paths[1], lambda tmp: per_seq_df.to_csv(tmp, index=False))])
    return paths


def check_writable(out_dir: str | os.PathLike, overwrite: bool, suffix: str = "") -> None:
    """Refuse (FileExistsError naming the file) if a results CSV exists and not ``overwrite``."""
    if overwrite:
        return
    for path in results_csv_paths(out_dir, suffix):
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description="Score predicted masks (J, F, J&F) as the official DAVIS evaluation "
                    "(also: python -m label_prop.evaluate).",
    )
    parser.add_argument("model", metavar="MODEL",
                        help="as given to run_test.sh: 'random', a name, or a .pth path (its stem names the folder); "
                             "predictions are in RESULTS_DIR/<model name>/BENCHMARK")
    parser.add_argument("benchmark", metavar="BENCHMARK", help="benchmark name (davis16, davis17)")
    parser.add_argument("--sequences", default=None, help="comma-separated sequences (default: all)")
    parser.add_argument("--split", default=None, help="a named half of the benchmark instead of --sequences "
                        "(dev or heldout, davis16 only); the CSVs are then named global_results-SPLIT.csv ...")
    parser.add_argument("--results-dir", default="results", type=Path, help="results root (default: results)")
    parser.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing CSV files")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="score sequences whose run records (run-*.json) give different settings or models "
                             "together, with a warning (default: an error naming them)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


def _check_alike(out_dir: Path, names: Sequence[str], allow_mixed: bool) -> None:
    """Refuse (UsageError) to score together sequences that the run records say were made with
    different settings or models (:func:`label_prop.evaluation.results.settings_groups`), or warn with
    ``allow_mixed``. A folder without any run record (results of another tool) is not checked."""
    groups = settings_groups(out_dir, names)
    if len(groups) < 2:
        return
    msg = mixed_settings_message(groups)
    if not allow_mixed:
        raise UsageError(f"{out_dir}: {msg}; rerun them alike (label_prop.run ... --resume --overwrite with one "
                         f"set of settings) or pass --allow-mixed")
    print(f"{PROG}: warning: {out_dir}: {msg}; scored together (--allow-mixed)", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    """Score, write the CSVs and print the tables."""
    bench = get_benchmark(args.benchmark)
    sequences = parse_sequences(bench, args.sequences, args.split)
    out_dir = results_root(args.results_dir, args.model, bench.name)
    suffix = f"-{args.split}" if args.split else ""
    check_writable(out_dir, args.overwrite, suffix)
    clean_stale_temporaries(out_dir, PROG)
    global_df, per_seq_df = evaluate_benchmark(out_dir, bench, args.data_root, sequences)
    _check_alike(out_dir, bench.sequences(args.data_root, sequences), args.allow_mixed)
    g_path, s_path = write_results(out_dir, global_df, per_seq_df, overwrite=args.overwrite, suffix=suffix)
    with pd.option_context("display.precision", 3, "display.width", 200):
        print(f"--------------------------- Global results for {bench.name} ---------------------------")
        print(global_df.to_string(index=False))
        print(f"\n---------- Per sequence results for {bench.name} ----------")
        print(per_seq_df.to_string(index=False))
    print(f"\nwrote {g_path} and {s_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
