"""DAVIS benchmarks (DAVIS-2016 val, DAVIS-2017 val and test-dev) in the official layout::

    <root>/<folder>/JPEGImages/480p/<sequence>/00000.jpg ...
    <root>/<folder>/Annotations/480p/<sequence>/00000.png ...
    <root>/<folder>/ImageSets/<year>/<split>.txt

Every object starts at frame 0: every frame is propagated and written, and only frame 0's
annotation is read (the public code also scans later ground truth for new ids; docs/method.md,
"Differences from the public code").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from label_prop.plans import Benchmark, SequencePlan, select_sequences


@dataclass(frozen=True, kw_only=True)
class DavisBenchmark(Benchmark):
    """A DAVIS benchmark (see the module docstring).

    Attributes:
        imageset: the sequence list, relative to ``folder`` (``ImageSets/2016/val.txt`` ...).
        resolution: the frame folder under ``JPEGImages`` and ``Annotations`` (``480p``).
    """

    imageset: str
    resolution: str = "480p"

    def sequences(self, root: str | os.PathLike | None = None, selection: list[str] | None = None) -> list[str]:
        """Sequence names from the ImageSets file (see :meth:`Benchmark.sequences`)."""
        listfile = self.dir(root) / self.imageset
        if not listfile.is_file():
            raise FileNotFoundError(f"{self.name}: sequence list {listfile} not found")
        names = [line.strip() for line in listfile.read_text().splitlines() if line.strip()]
        return select_sequences(names, selection, f"{self.name}: sequences not in {listfile}")

    def frames(self, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
        """Sorted ``.jpg`` frames of a sequence (FileNotFoundError naming the folder when none)."""
        folder = self.dir(root) / "JPEGImages" / self.resolution / seq
        frames = sorted(folder.glob("*.jpg"))
        if not frames:
            raise FileNotFoundError(f"{self.name}: no .jpg frames in {folder}")
        return frames

    def annotation(self, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
        """``<folder>/Annotations/480p/<seq>/<frame>.png``."""
        return self.dir(root) / "Annotations" / self.resolution / seq / f"{frame}.png"

    def plan(self, seq: str, root: str | os.PathLike | None = None) -> SequencePlan:
        """Every frame propagated and written; frame 0's annotation is the only one read."""
        paths = self.frames(seq, root)
        return SequencePlan(seq, paths, [True] * len(paths), {0: self.annotation(seq, paths[0].stem, root)},
                            binary=self.binary)
