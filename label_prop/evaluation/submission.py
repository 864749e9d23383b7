"""Server submission zips for benchmarks scored online (DAVIS-2017 test-dev, YouTube-VOS).

Usage::

    python -m label_prop.evaluation.submission MODEL BENCHMARK [--results-dir results] [--data-root PATH] [--overwrite]

reads ``<results-dir>/MODEL/BENCHMARK/<sequence>/<frame>.png`` and writes
``<results-dir>/MODEL/BENCHMARK.zip``:

* ``davis17dev`` (DAVIS CodaLab): ``<sequence>/<frame>.png`` at the zip root, every frame;
* ``ytvos18`` / ``ytvos19`` (YouTube-VOS CodaLab): ``Annotations/<video>/<frame>.png``, exactly
  the meta.json frames of each video from the first frame where an object appears.

The PNGs are zipped as written by the runner (palette PNGs whose indices are the object ids).
Every expected file must exist and no other PNG may be present (the error names the first
missing or extra files). The zip is written to a temporary file and renamed, and an existing zip
is not replaced without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path
from typing import Sequence

from hvc.errors import UsageError
from hvc.runtime import atomic_write, run_cli
from label_prop.data.datasets import get_benchmark
from label_prop.data.plans import Benchmark
from label_prop.evaluation.results import model_name, results_root


def submission_path(results_dir: str | os.PathLike, model: str, bench: Benchmark) -> Path:
    """``<results_dir>/<model name>/<benchmark>.zip`` (:func:`label_prop.evaluation.results.model_name`)."""
    return Path(results_dir) / model_name(model) / f"{bench.name}.zip"


def expected_files(bench: Benchmark, root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Sequence -> frame stems the server scores (see the module docstring), in order.

    Raises:
        UsageError: the benchmark has no submission format.
        FileNotFoundError, ValueError: data errors of :meth:`Benchmark.plan`.
    """
    if bench.submission is None:
        raise UsageError(f"benchmark {bench.name} is scored locally (run_metrics.sh), not by a server zip")
    return {seq: bench.plan(seq, root).saved_names() for seq in bench.sequences(root)}


def build_submission(bench: Benchmark | str, pred_dir: str | os.PathLike, zip_path: str | os.PathLike, *,
                     root: str | os.PathLike | None = None, overwrite: bool = False,
                     expected: dict[str, list[str]] | None = None) -> Path:
    """Zip the predictions of ``bench`` from ``pred_dir/<sequence>/<frame>.png``.

    Args:
        bench: the benchmark (``submission`` must be ``"davis"`` or ``"ytvos"``).
        pred_dir: the runner's output folder ``results/MODEL/BENCHMARK``.
        zip_path: the zip to write (atomically).
        root: data root (to know the expected frames).
        overwrite: replace an existing zip.
        expected: precomputed :func:`expected_files` (else computed).

    Returns:
        ``zip_path``.

    Raises:
        FileExistsError: the zip exists and ``overwrite`` is False.
        FileNotFoundError: a sequence folder or an expected PNG is missing (named).
        ValueError: extra PNGs in a sequence folder, or no submission format.
    """
    if isinstance(bench, str):
        bench = get_benchmark(bench)
    zip_path, pred_dir = Path(zip_path), Path(pred_dir)
    if zip_path.exists() and not overwrite:
        raise FileExistsError(f"{zip_path} exists; pass --overwrite to replace it")
    expected = expected if expected is not None else expected_files(bench, root)
    members: list[tuple[Path, str]] = []
    prefix = "Annotations/" if bench.submission == "ytvos" else ""
    for seq, stems in expected.items():
        folder = pred_dir / seq
        if not folder.is_dir():
            raise FileNotFoundError(f"{bench.name}: predictions of {seq} not found: {folder}")
        have = {p.stem for p in folder.glob("*.png")}
        missing = [s for s in stems if s not in have]
        if missing:
            raise FileNotFoundError(f"{bench.name}: {len(missing)} predictions missing in {folder}: "
                                    f"{', '.join(m + '.png' for m in missing[:3])}")
        extra = sorted(have - set(stems))
        if extra:
            raise ValueError(f"{bench.name}: {folder} holds PNGs the server does not expect: "
                             f"{', '.join(e + '.png' for e in extra[:3])}")
        members += [(folder / f"{s}.png", f"{prefix}{seq}/{s}.png") for s in stems]

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for src, arc in members:
                zf.write(src, arc)

    atomic_write(zip_path, write)
    return zip_path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m label_prop.evaluation.submission",
                                description="Zip predictions in the layout of the benchmark's server.")
    p.add_argument("model", metavar="MODEL", help="as given to run_test.sh (a .pth path maps to its stem)")
    p.add_argument("benchmark", metavar="BENCHMARK", help="davis17dev, ytvos18 or ytvos19")
    p.add_argument("--results-dir", default="results", type=Path,
                   help="results root holding MODEL/BENCHMARK/<sequence>/*.png (default: results)")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zip")
    args = p.parse_args(argv)

    def job() -> None:
        bench = get_benchmark(args.benchmark)
        out = build_submission(bench, results_root(args.results_dir, args.model, bench.name),
                               submission_path(args.results_dir, args.model, bench),
                               root=args.data_root, overwrite=args.overwrite)
        with zipfile.ZipFile(out) as zf:
            print(f"wrote {out} ({len(zf.namelist())} PNGs)")
    return run_cli("python -m label_prop.evaluation.submission", job)


if __name__ == "__main__":
    sys.exit(main())
