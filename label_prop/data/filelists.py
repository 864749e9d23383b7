"""Filelists in HVC's format, ``<flag> <image> <mask>`` (docs/method.md, "Filelists and YouTube-VOS").

One line per frame, three space-separated fields, paths relative to the data root; a sequence
is a run of lines with the same image folder. ``flag`` 1 = write this frame's prediction, 0 =
propagate through it without writing (YouTube-VOS frames outside the sparse official list).
The mask field always names where the frame's annotation would be; it is read only as
:func:`read_filelist` says.

Generate the lists from the dataset folders::

    python -m label_prop.data.filelists [--data-root PATH] [--out data/filelists] [--benchmarks davis16,...] [--overwrite]

which writes, for every benchmark whose folder exists, its sequence plans as lines:
``val_davis2016_val.txt``, ``val_davis2017_val.txt``, ``val_davis2017_dev.txt`` (every frame,
flag 1) and ``val_ytvos2018_valid.txt``, ``val_ytvos2019_valid.txt`` (every frame from the first
object's start, :func:`label_prop.data.plans.starting_ids`; flag 1 on the meta.json frames).

Run one with ``bash scripts/run_test.sh MODEL val_davis2016_val`` (a name in data/filelists/ or
a path to a ``.txt``): :func:`open_benchmark` turns it into a :class:`FilelistBenchmark`.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hvc.errors import UsageError
from hvc.runtime import atomic_write, run_cli
from label_prop.data.datasets import BENCHMARKS, get_benchmark
from label_prop.data.plans import Benchmark, SequencePlan, check_name, data_root, select_sequences

#: Where the generated lists live: committed, shipped with the package (``package_data``), so that an
#: installed copy finds them from any folder; ``data/filelists`` in the source tree links here.
FILELIST_DIR = Path(__file__).resolve().parent / "filelists"
#: Benchmark -> filelist name (HVC's names for DAVIS).
FILELIST_NAMES = {
    "davis16": "val_davis2016_val",
    "davis17": "val_davis2017_val",
    "davis17dev": "val_davis2017_dev",
    "ytvos18": "val_ytvos2018_valid",
    "ytvos19": "val_ytvos2019_valid",
}
#: ``--read-masks`` choices (see :func:`read_filelist`).
READ_MASKS = ("first", "existing")


@dataclass(frozen=True, kw_only=True)
class FilelistBenchmark(Benchmark):
    """The sequences of a filelist, paths relative to the data root (see :func:`read_filelist`).

    Attributes:
        path: the ``.txt``.
        read_masks: ``"first"`` or ``"existing"`` (:func:`read_filelist`).
    """

    path: Path
    read_masks: str = "first"

    @classmethod
    def open(cls, path: str | os.PathLike, read_masks: str = "first") -> "FilelistBenchmark":
        """The filelist ``path`` as a benchmark named after its stem (binary masks detected when read).

        Raises:
            UsageError: ``read_masks`` is not one of :data:`READ_MASKS`.
        """
        if read_masks not in READ_MASKS:
            raise UsageError(f"--read-masks must be one of {', '.join(READ_MASKS)}, got {read_masks!r}")
        path = Path(path)
        return cls(name=path.stem, folder="", binary=None, full_gt=False, path=path, read_masks=read_masks)

    def _plans(self, root: str | os.PathLike | None) -> dict[str, SequencePlan]:
        return {p.name: p for p in read_filelist(self.path, root, read_masks=self.read_masks)}

    def sequences(self, root: str | os.PathLike | None = None, selection: list[str] | None = None) -> list[str]:
        """Sequence names in list order (see :meth:`Benchmark.sequences`)."""
        return select_sequences(list(self._plans(root)), selection, f"{self.path}: sequences not in the list")

    def frames(self, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
        """The listed frames of a sequence."""
        return self.plan(seq, root).frames

    def annotation(self, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
        """The mask field of the line of ``frame``.

        Raises:
            ValueError: no line of ``seq`` has that frame.
        """
        plan = self.plan(seq, root)
        for img, mask in zip(plan.frames, plan.extra["masks"]):
            if img.stem == frame:
                return mask
        raise ValueError(f"{self.path}: sequence {seq} has no frame {frame}")

    def plan(self, seq: str, root: str | os.PathLike | None = None) -> SequencePlan:
        """The plan of one listed sequence (ValueError when it is not in the list)."""
        plans = self._plans(root)
        if seq not in plans:
            raise ValueError(f"{self.path}: no sequence {seq!r} in the list")
        return plans[seq]


def open_benchmark(name: str, read_masks: str = "first") -> Benchmark:
    """A named benchmark (:data:`label_prop.data.datasets.BENCHMARKS`) or a filelist (:func:`resolve_filelist`).

    Raises:
        UsageError: neither a known benchmark nor a filelist.
        FileNotFoundError: a ``.txt`` or path that does not exist.
    """
    listfile = resolve_filelist(name)
    if listfile is not None:
        return FilelistBenchmark.open(listfile, read_masks)
    return get_benchmark(name)


def filelist_lines(bench: Benchmark, root: str | os.PathLike | None = None) -> list[str]:
    """The lines (without newline) of ``bench``'s filelist, paths relative to the data root: one
    per frame of each sequence's plan, flag 1 where the plan writes the frame.

    Raises:
        FileNotFoundError, ValueError: dataset errors (see :meth:`Benchmark.plan`).
    """
    base = data_root(root)
    rel = lambda p: Path(os.path.relpath(p, base)).as_posix()  # noqa: E731
    lines = []
    for seq in bench.sequences(root):
        plan = bench.plan(seq, root)
        for p, save in zip(plan.frames, plan.save):
            lines.append(f"{int(save)} {rel(p)} {rel(bench.annotation(seq, p.stem, root))}")
    return lines


def write_filelists(root: str | os.PathLike | None = None, out_dir: str | os.PathLike = FILELIST_DIR,
                    benchmarks: Sequence[str] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write ``<out_dir>/<name>.txt`` for the benchmarks (default: every one whose folder exists).

    Returns:
        benchmark -> written path (an identical existing file counts as written).

    Raises:
        UsageError: an unknown benchmark name.
        FileExistsError: a list exists with different content and ``overwrite`` is False.
        FileNotFoundError: an explicitly requested benchmark's folder is missing.
    """
    out_dir = Path(out_dir)
    written = {}
    for name in (list(benchmarks) if benchmarks else list(BENCHMARKS)):
        bench = get_benchmark(name)
        try:
            bench.dir(root)
        except FileNotFoundError:
            if benchmarks:
                raise
            continue
        text = "\n".join(filelist_lines(bench, root)) + "\n"
        path = out_dir / f"{FILELIST_NAMES[name]}.txt"
        if path.exists() and path.read_text() != text and not overwrite:
            raise FileExistsError(f"{path} exists with different content; pass --overwrite to replace it")
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        written[name] = path
    return written


def resolve_filelist(name: str) -> Path | None:
    """A filelist path for ``name``: an existing file, or ``<name>[.txt]`` among the lists
    shipped in :data:`FILELIST_DIR`; None
    when ``name`` is neither (then it is a benchmark name).

    Raises:
        FileNotFoundError: ``name`` ends with ``.txt`` or contains a path separator but is no file.
    """
    if name in BENCHMARKS:
        return None
    for cand in (Path(name), FILELIST_DIR / name, FILELIST_DIR / f"{name}.txt"):
        if cand.is_file():
            return cand
    if name.endswith(".txt") or os.sep in name:
        raise FileNotFoundError(f"filelist {name} not found")
    return None


def read_filelist(path: str | os.PathLike, root: str | os.PathLike | None = None, *,
                  read_masks: str = "first") -> list[SequencePlan]:
    """Parse a filelist into one :class:`SequencePlan` per sequence (runs of the same image folder).

    Args:
        path: the ``.txt``.
        root: data root the paths are relative to.
        read_masks: ``"first"``: only the first line's mask of each sequence is read (DAVIS
            semantics; never reads later ground truth); ``"existing"``: every mask file that
            exists is read at its frame and its unseen ids start there (HVC's semantics, right
            for YouTube-VOS ``valid`` where only first appearances exist; on a full-ground-truth
            dataset this reads later ground truth).

    Binary (DAVIS-2016 0/255) masks are detected when read (``binary=None`` in the plan); every
    line's mask path is kept in ``plan.extra["masks"]``.

    Raises:
        FileNotFoundError: the list, or (``first``) a sequence's first mask, is missing.
        ValueError: a malformed line or flag, a sequence split into two runs, no lines
            (the message names the file and line number).
    """
    path = Path(path)
    if read_masks not in READ_MASKS:
        raise UsageError(f"--read-masks must be one of {', '.join(READ_MASKS)}, got {read_masks!r}")
    if not path.is_file():
        raise FileNotFoundError(f"filelist {path} not found")
    runs, first_lines = _read_runs(path, data_root(root))
    names = [Path(k).name for k, _ in runs]
    dup = {x for x in names if names.count(x) > 1}
    plans = []
    for (key, rows), line in zip(runs, first_lines):
        name = key.replace("/", "_") if Path(key).name in dup else Path(key).name
        check_name(name, f"{path}:{line}")
        if read_masks == "first":
            if not rows[0][2].is_file():
                raise FileNotFoundError(f"{path}: first-frame mask of {key} not found: {rows[0][2]}")
            ann = {0: rows[0][2]}
        else:
            ann = {i: m for i, (_, _, m) in enumerate(rows) if m.is_file()}
            if not ann:
                raise FileNotFoundError(f"{path}: no mask of sequence {key} exists (e.g. {rows[0][2]})")
        plans.append(SequencePlan(name, [r[1] for r in rows], [bool(r[0]) for r in rows], ann, binary=None,
                                  extra={"masks": [r[2] for r in rows]}))
    return plans


def _read_runs(path: Path, base: Path) -> tuple[list[tuple[str, list[tuple[int, Path, Path]]]], list[int]]:
    """The lines of a filelist grouped into runs of one image folder: ``[(folder, [(flag, image,
    mask), ...]), ...]``, and the line number where each run starts (ValueError naming the file
    and line on a malformed line)."""
    runs: list[tuple[str, list[tuple[int, Path, Path]]]] = []
    first_lines: list[int] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"{path}:{n}: expected '<flag> <image> <mask>', got {line!r}")
        if fields[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: flag must be 0 or 1, got {fields[0]!r}")
        key = str(Path(fields[1]).parent)
        if not runs or runs[-1][0] != key:
            if key in seen:
                raise ValueError(f"{path}:{n}: sequence {key} continues after another sequence")
            seen.add(key)
            runs.append((key, []))
            first_lines.append(n)
        runs[-1][1].append((int(fields[0]), base / fields[1], base / fields[2]))
    if not runs:
        raise ValueError(f"{path}: no lines")
    return runs, first_lines


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (:mod:`hvc.runtime`: 2 usage error, 1 bad data)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m label_prop.data.filelists",
                                description="Write HVC-format filelists from the dataset folders.")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--out", default=FILELIST_DIR, type=Path, help="output folder (default: the lists shipped with the package, label_prop/data/filelists)")
    p.add_argument("--benchmarks", default=None, help="comma-separated (default: every one found)")
    p.add_argument("--overwrite", action="store_true", help="replace lists whose content changed")
    args = p.parse_args(argv)
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None

    def job() -> None:
        written = write_filelists(args.data_root, args.out, names, args.overwrite)
        if not written:
            raise FileNotFoundError(f"no benchmark folder found under {data_root(args.data_root)}")
        for name, path in written.items():
            print(f"{name}: {path} ({len(path.read_text().splitlines())} lines)")
    return run_cli("python -m label_prop.data.filelists", job)


if __name__ == "__main__":
    sys.exit(main())
