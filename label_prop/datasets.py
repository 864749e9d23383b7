"""Benchmark definitions and dataset discovery (official DAVIS layout).

Datasets are found under the data root: the ``root`` argument, else ``$HVC_DATA_ROOT``, else
``./data``. Each DAVIS benchmark is a folder in the official layout::

    <root>/<folder>/JPEGImages/480p/<sequence>/00000.jpg ...
    <root>/<folder>/Annotations/480p/<sequence>/00000.png ...
    <root>/<folder>/ImageSets/<year>/<split>.txt

YouTube-VOS benchmarks (``ytvos18``, ``ytvos19``) use the official validation layout, with every
frame present (the ``valid_all_frames`` download) and the sparse scored frames from meta.json::

    <root>/YTVOS2018/valid/JPEGImages/<video>/00000.jpg ...   (all frames)
    <root>/YTVOS2018/valid/Annotations/<video>/00000.png ...  (first appearances only)
    <root>/YTVOS2018/valid/meta.json

(see :mod:`label_prop.ytvos`). :func:`plan_sequence` turns any of them into a
:class:`SequencePlan`: the frames to propagate, which to write, and which annotations to read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
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
        layout: ``"davis"`` (ImageSets list, ``480p`` folders) or ``"ytvos"`` (meta.json).
        submission: the server's zip layout, ``"davis"`` (``<sequence>/<frame>.png`` at the zip
            root), ``"ytvos"`` (``Annotations/<video>/<frame>.png``) or None (scored locally).
    """

    name: str
    folder: str
    imageset: str
    binary: bool
    full_gt: bool
    layout: str = "davis"
    submission: str | None = None


BENCHMARKS: dict[str, Benchmark] = {
    "davis16": Benchmark("davis16", "DAVIS2016", "ImageSets/2016/val.txt", binary=True, full_gt=True),
    "davis17": Benchmark("davis17", "DAVIS2017", "ImageSets/2017/val.txt", binary=False, full_gt=True),
    "davis17dev": Benchmark(
        "davis17dev", "DAVIS2017-test-dev", "ImageSets/2017/test-dev.txt", binary=False, full_gt=False,
        submission="davis",
    ),
    "ytvos18": Benchmark("ytvos18", "YTVOS2018/valid", "meta.json", binary=False, full_gt=False,
                         layout="ytvos", submission="ytvos"),
    "ytvos19": Benchmark("ytvos19", "YTVOS2019/valid", "meta.json", binary=False, full_gt=False,
                         layout="ytvos", submission="ytvos"),
}


#: Fixed halves of a benchmark's sequences, for choosing settings on one half ("dev") and reporting
#: on the other ("heldout") without tuning on it. DAVIS-2016 val: the 20 sequences in the order of
#: ``ImageSets/2016/val.txt`` (alphabetical), alternately dev (1st, 3rd, ...) and held out (2nd, 4th, ...);
#: fixed before any training setting was chosen. 645 frames dev, 731 held out.
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "davis16": {
        "dev": ("blackswan", "breakdance", "car-roundabout", "cows", "dog", "drift-straight", "horsejump-high",
                "libby", "paragliding-launch", "scooter-black"),
        "heldout": ("bmx-trees", "camel", "car-shadow", "dance-twirl", "drift-chicane", "goat", "kite-surf",
                    "motocross-jump", "parkour", "soapbox"),
    },
}


def split_sequences(bench: Benchmark | str, split: str) -> list[str]:
    """The sequences of a named half of a benchmark (:data:`SPLITS`), in benchmark order.

    Raises:
        ValueError: the benchmark has no splits, or ``split`` is not one of them (both named).
    """
    name = bench if isinstance(bench, str) else bench.name
    splits = SPLITS.get(name)
    if not splits:
        raise ValueError(f"benchmark {name} has no named splits (splits exist for: {', '.join(SPLITS)})")
    if split not in splits:
        raise ValueError(f"{name}: unknown split {split!r}; known: {', '.join(splits)}")
    return list(splits[split])


def parse_sequences(bench: Benchmark | str, sequences: str | None, split: str | None) -> list[str] | None:
    """The ``--sequences a,b`` / ``--split NAME`` choice of a command line as a list (None = all).

    Raises:
        ValueError: both are given, or the split is unknown.
    """
    if sequences and split:
        raise ValueError("give either --sequences or --split, not both")
    if split:
        return split_sequences(bench, split)
    return [s.strip() for s in sequences.split(",") if s.strip()] if sequences else None


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
    if bench.layout == "ytvos":
        from label_prop.ytvos import list_videos

        return list_videos(bench, root, sequences)
    listfile = benchmark_dir(bench, root) / bench.imageset
    if not listfile.is_file():
        raise FileNotFoundError(f"{bench.name}: sequence list {listfile} not found")
    names = [line.strip() for line in listfile.read_text().splitlines() if line.strip()]
    return select_sequences(names, sequences, f"{bench.name}: sequences not in {listfile}")


def select_sequences(names: list[str], sequences: list[str] | None, unknown_msg: str) -> list[str]:
    """``names`` restricted to ``sequences`` (kept in the order of ``names``); all when None.

    Raises:
        ValueError: a requested sequence is not in ``names`` (``unknown_msg: a, b``).
    """
    if not sequences:
        return names
    unknown = [s for s in sequences if s not in names]
    if unknown:
        raise ValueError(f"{unknown_msg}: {', '.join(unknown)}")
    return [s for s in names if s in set(sequences)]


def frame_paths(bench: Benchmark, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Sorted JPEG frames of a sequence.

    Raises:
        FileNotFoundError: the sequence folder is missing or holds no ``.jpg``.
    """
    if bench.layout == "ytvos":
        from label_prop.ytvos import video_frame_paths

        return video_frame_paths(bench, seq, root)
    folder = benchmark_dir(bench, root) / "JPEGImages" / "480p" / seq
    frames = sorted(folder.glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"{bench.name}: no .jpg frames in {folder}")
    return frames


def annotation_path(bench: Benchmark, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
    """Path of the annotation PNG of ``frame`` (a frame name without extension, e.g. ``00000``)."""
    if bench.layout == "ytvos":
        return benchmark_dir(bench, root) / "Annotations" / seq / f"{frame}.png"
    return benchmark_dir(bench, root) / "Annotations" / "480p" / seq / f"{frame}.png"


@dataclass
class SequencePlan:
    """What the runner does with one sequence (HVC_METHOD.md section 5, "Objects").

    Attributes:
        name: the sequence (output folder name).
        frames: the frames to propagate through, in order (the first is the first annotated one).
        save: per frame, whether its prediction is written (``<frame stem>.png``).
        annotations: frame index -> annotation PNG read *at that frame* (no other ground truth
            is ever opened).
        start_ids: frame index -> ids of the objects starting there, or None (every id of the
            annotation not seen before starts there).
        object_ids: every object id of the sequence when known in advance (the channels), else
            None (frame 0's ids when there is one annotation, else ``max_objects`` slots).
        binary: DAVIS-2016 masks (0/255 -> object 1).
    """

    name: str
    frames: list[Path]
    save: list[bool]
    annotations: dict[int, Path]
    start_ids: dict[int, list[int]] | None = None
    object_ids: list[int] | None = None
    binary: bool = False
    extra: dict = field(default_factory=dict)

    def saved_names(self) -> list[str]:
        """Stems of the frames that are written, in order."""
        return [p.stem for p, s in zip(self.frames, self.save) if s]


def plan_sequence(bench: Benchmark, seq: str, root: str | os.PathLike | None = None) -> SequencePlan:
    """The :class:`SequencePlan` of one benchmark sequence.

    DAVIS: every frame is propagated and written; only frame 0's annotation is read (every
    object starts there; the public code's scan of later ground truth is not done, HVC_METHOD.md
    section 7 bug 13). YouTube-VOS: see :func:`label_prop.ytvos.plan_video`.

    Raises:
        FileNotFoundError, ValueError: missing or inconsistent data (the message names the file).
    """
    if bench.layout == "ytvos":
        from label_prop.ytvos import plan_video

        return plan_video(bench, seq, root)
    paths = frame_paths(bench, seq, root)
    return SequencePlan(seq, paths, [True] * len(paths), {0: annotation_path(bench, seq, paths[0].stem, root)},
                        binary=bench.binary)
