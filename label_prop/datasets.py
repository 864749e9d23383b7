"""Benchmark definitions and dataset discovery (official DAVIS layout).

Datasets are found under the data root: the ``root`` argument, else ``$HVC_DATA_ROOT``, else
``./data``. Each DAVIS benchmark is a folder in the official layout::

    <root>/<folder>/JPEGImages/480p/<sequence>/00000.jpg ...
    <root>/<folder>/Annotations/480p/<sequence>/00000.png ...
    <root>/<folder>/ImageSets/<year>/<split>.txt
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Benchmark:
    """One evaluation benchmark.

    Attributes:
        name: the name used on the command line (``davis16``, ``davis17``, ``davis17dev``).
        folder: the dataset folder under the data root.
        imageset: the sequence list, relative to ``folder``.
        binary: single-object annotations stored as 0/255 (DAVIS-2016); the metrics then
            binarise predictions too, as the official ``--single-object`` evaluation does.
        full_gt: ground truth exists for every frame (so the metrics can run).
    """

    name: str
    folder: str
    imageset: str
    binary: bool
    full_gt: bool


BENCHMARKS: dict[str, Benchmark] = {
    "davis16": Benchmark("davis16", "DAVIS2016", "ImageSets/2016/val.txt", binary=True, full_gt=True),
    "davis17": Benchmark("davis17", "DAVIS2017", "ImageSets/2017/val.txt", binary=False, full_gt=True),
    "davis17dev": Benchmark(
        "davis17dev", "DAVIS2017-test-dev", "ImageSets/2017/test-dev.txt", binary=False, full_gt=False
    ),
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$HVC_DATA_ROOT``, else ``./data``."""
    return Path(root if root is not None else os.environ.get("HVC_DATA_ROOT", "./data"))


def get_benchmark(name: str) -> Benchmark:
    """Look up a benchmark by name.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def benchmark_dir(bench: Benchmark, root: str | os.PathLike | None = None) -> Path:
    """The benchmark's dataset folder.

    Raises:
        FileNotFoundError: the folder does not exist (names it and how to set the data root).
    """
    path = data_root(root) / bench.folder
    if not path.is_dir():
        raise FileNotFoundError(
            f"{bench.name}: dataset folder {path} not found; set $HVC_DATA_ROOT or pass a data root"
        )
    return path


def list_sequences(
    bench: Benchmark, root: str | os.PathLike | None = None, sequences: list[str] | None = None
) -> list[str]:
    """Sequence names of ``bench`` from its ImageSets file, optionally restricted to ``sequences``.

    Raises:
        FileNotFoundError: the ImageSets file is missing.
        ValueError: a requested sequence is not in the benchmark.
    """
    listfile = benchmark_dir(bench, root) / bench.imageset
    if not listfile.is_file():
        raise FileNotFoundError(f"{bench.name}: sequence list {listfile} not found")
    names = [line.strip() for line in listfile.read_text().splitlines() if line.strip()]
    if sequences:
        unknown = [s for s in sequences if s not in names]
        if unknown:
            raise ValueError(f"{bench.name}: sequences not in {listfile}: {', '.join(unknown)}")
        names = [s for s in names if s in set(sequences)]
    return names


def frame_paths(bench: Benchmark, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Sorted JPEG frames of a sequence.

    Raises:
        FileNotFoundError: the sequence folder is missing or holds no ``.jpg``.
    """
    folder = benchmark_dir(bench, root) / "JPEGImages" / "480p" / seq
    frames = sorted(folder.glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"{bench.name}: no .jpg frames in {folder}")
    return frames


def annotation_path(bench: Benchmark, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
    """Path of the annotation PNG of ``frame`` (a frame name without extension, e.g. ``00000``)."""
    return benchmark_dir(bench, root) / "Annotations" / "480p" / seq / f"{frame}.png"
