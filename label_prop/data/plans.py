"""What every dataset layout shares: the data root, the :class:`Benchmark` interface, the
:class:`SequencePlan` it produces for each sequence, and the rule for where an object starts.

One :class:`Benchmark` subclass per layout family: :class:`label_prop.data.davis.DavisBenchmark`,
:class:`label_prop.data.ytvos.YtvosBenchmark`, :class:`label_prop.data.filelists.FilelistBenchmark`; the
named benchmarks are in :mod:`label_prop.data.datasets`. The runner only sees plans.

**Where an object starts** (:func:`starting_ids`, the one rule for plans, filelists and the
streaming pipeline): at the first frame, in frame order, whose annotation contains its id,
among the frames allowed for it (YouTube-VOS: the frames meta.json lists for it; otherwise every
annotated frame); a sequence's frames begin at its first start.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hvc.errors import UsageError
from label_prop.data.io import VOID_ID


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$HVC_DATA_ROOT``, else ``./data``."""
    return Path(root if root is not None else os.environ.get("HVC_DATA_ROOT", "./data"))


def check_name(name: str, where: str) -> str:
    """``name`` if it is a plain name: one path component that stays where it is joined.

    Sequence names, YouTube-VOS video ids and filelist sequences become folder names under the
    results folder, so they are data, never paths: a name is refused when it is empty, is ``.`` or
    ``..``, starts with ``.`` (the hidden names of folders being written), or holds ``/``, ``\\``,
    a NUL or another control character.

    Args:
        name: the name as read.
        where: the list file and line (``.../val.txt:3``) or entry it came from, for the message.

    Raises:
        ValueError: ``"<where>: sequence name '<name>' is not a plain name ..."`` (one line).
    """
    bad = (not name or name.startswith(".") or any(c in name for c in "/\\") or
           any(ord(c) < 32 or ord(c) == 127 for c in name))
    if bad:
        raise ValueError(f"{where}: sequence name {name!r} is not a plain name (one path component, not "
                         f"starting with '.', without '/', '\\' or control characters)")
    return name


def select_sequences(names: list[str], sequences: list[str] | None, unknown_msg: str) -> list[str]:
    """``names`` restricted to ``sequences`` (kept in the order of ``names``); all when None.

    Raises:
        UsageError: a requested sequence is not in ``names`` (``unknown_msg: a, b``).
    """
    if not sequences:
        return names
    unknown = [s for s in sequences if s not in names]
    if unknown:
        raise UsageError(f"{unknown_msg}: {', '.join(unknown)}")
    return [s for s in names if s in set(sequences)]


def numbering_gaps(stems: list[str]) -> list[str] | None:
    """The frame names missing from zero-padded frame numbers that should run from 0 to the
    largest (DAVIS: ``00000``, ``00001``, ...): ``["00000", "00001", "00003"]`` -> ``["00002"]``.
    None when not every name is a number (no numbering to check)."""
    if not stems or not all(s.isdigit() for s in stems):
        return None
    width = len(stems[0])
    have = {int(s) for s in stems}
    return [f"{n:0{width}d}" for n in range(max(have) + 1) if n not in have]


def starting_ids(mask: np.ndarray, started: Collection[int], allowed: Collection[int] | None = None) -> list[int]:
    """The ids that start at a frame with annotation ``mask`` ``[H, W]``: present in it (not 0,
    not void 255), not started before, and in ``allowed`` when given; sorted."""
    return [int(i) for i in np.unique(mask)
            if i not in (0, VOID_ID) and int(i) not in started and (allowed is None or int(i) in allowed)]


@dataclass
class SequencePlan:
    """What the runner does with one sequence (docs/method.md, "Objects that start mid-video").

    Attributes:
        name: the sequence (output folder name).
        frames: the frames to propagate through, in order (the first is the first annotated one).
        save: per frame, whether its prediction is written (``<frame stem>.png``).
        annotations: frame index -> annotation PNG read *at that frame* (no other ground truth
            is ever opened).
        start_ids: frame index -> ids of the objects starting there, or None (every id of an
            annotation not started before starts there: :func:`starting_ids`).
        object_ids: every object id of the sequence when known in advance (the channels), else
            None (frame 0's ids when there is one annotation, else ``max_objects`` channels).
        binary: DAVIS-2016 masks (0/255 -> object 1); None: detected when read.
    """

    name: str
    frames: list[Path]
    save: list[bool]
    annotations: dict[int, Path]
    start_ids: dict[int, list[int]] | None = None
    object_ids: list[int] | None = None
    binary: bool | None = False
    extra: dict = field(default_factory=dict)

    def saved_names(self) -> list[str]:
        """Stems of the frames that are written, in order."""
        return [p.stem for p, s in zip(self.frames, self.save) if s]


@dataclass(frozen=True, kw_only=True)
class Benchmark(ABC):
    """A set of sequences in one layout under the data root.

    Attributes:
        name: the name on the command line (``davis16`` ...) or a filelist's stem.
        folder: the dataset folder under the data root (``""`` = the data root itself).
        binary: single-object annotations stored as 0/255 (DAVIS-2016); the metrics then
            binarise predictions too, as the official ``--single-object`` evaluation does;
            None: detected per file.
        full_gt: ground truth exists for every frame (so the metrics can run).
        submission: the server's zip layout, ``"davis"`` (``<sequence>/<frame>.png`` at the zip
            root), ``"ytvos"`` (``Annotations/<video>/<frame>.png``) or None (scored locally).
    """

    name: str
    folder: str
    binary: bool | None
    full_gt: bool
    submission: str | None = None

    def dir(self, root: str | os.PathLike | None = None) -> Path:
        """The dataset folder.

        Raises:
            FileNotFoundError: it does not exist (names it and how to set the data root).
        """
        path = data_root(root) / self.folder
        if not path.is_dir():
            if root is not None:
                source = "the data root given (--data-root)"
            elif "HVC_DATA_ROOT" in os.environ:
                source = f"the data root from $HVC_DATA_ROOT={os.environ['HVC_DATA_ROOT']}"
            else:
                source = "the default data root ./data ($HVC_DATA_ROOT is not set)"
            raise FileNotFoundError(f"{self.name}: dataset folder {path.resolve()} not found, under {source}; "
                                    f"set HVC_DATA_ROOT to the folder that holds {self.folder}/ or pass --data-root")
        return path

    @abstractmethod
    def sequences(self, root: str | os.PathLike | None = None, selection: list[str] | None = None) -> list[str]:
        """Sequence names in the benchmark's order, restricted to ``selection`` when given.

        Raises:
            FileNotFoundError, ValueError: the dataset or its list is missing or malformed.
            UsageError: a selected sequence is not in the benchmark.
        """

    @abstractmethod
    def frames(self, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
        """All JPEG frames of a sequence, sorted.

        Raises:
            FileNotFoundError: no frames.
        """

    def scored_frames(self, seq: str, root: str | os.PathLike | None = None) -> list[str]:
        """The frame names the metrics score (default: the stems of :meth:`frames`); layouts with
        ground truth for every frame take them from the ground truth and check it is complete.

        Raises:
            FileNotFoundError, ValueError: missing or inconsistent frames (named).
        """
        return [p.stem for p in self.frames(seq, root)]

    @abstractmethod
    def annotation(self, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
        """Path of the annotation PNG of ``frame`` (a frame name without extension, e.g. ``00000``)."""

    @abstractmethod
    def plan(self, seq: str, root: str | os.PathLike | None = None) -> SequencePlan:
        """The :class:`SequencePlan` of one sequence.

        Raises:
            FileNotFoundError, ValueError: missing or inconsistent data (the message names the file).
        """
