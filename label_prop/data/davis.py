"""DAVIS benchmarks (DAVIS-2016 val, DAVIS-2017 val and test-dev) in the official layout::

    <root>/<folder>/JPEGImages/480p/<sequence>/00000.jpg ...
    <root>/<folder>/Annotations/480p/<sequence>/00000.png ...
    <root>/<folder>/ImageSets/<year>/<split>.txt

Every object starts at frame 0: every frame is propagated and written, and only frame 0's
annotation is read (the public code also scans later ground truth for new ids; docs/method.md,
"Differences from the public code").

Frames are numbered ``00000, 00001, ...`` without gaps: a missing JPEG, or an annotation without
its JPEG, is an error naming the files (propagating over the gap, or scoring without the frame,
would silently change the results). With ground truth for every frame (``full_gt``) the metrics
take the frame list from the ground truth, which must be complete too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from label_prop.data.plans import Benchmark, SequencePlan, check_name, numbering_gaps, select_sequences


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
        """Sequence names from the ImageSets file (see :meth:`Benchmark.sequences`).

        Raises:
            FileNotFoundError: the list is missing. ValueError: a line is not a plain name
                (:func:`label_prop.data.plans.check_name`: the message names the file and line).
        """
        listfile = self.dir(root) / self.imageset
        if not listfile.is_file():
            raise FileNotFoundError(f"{self.name}: sequence list {listfile} not found")
        names = [check_name(line.strip(), f"{listfile}:{n}")
                 for n, line in enumerate(listfile.read_text().splitlines(), 1) if line.strip()]
        return select_sequences(names, selection, f"{self.name}: sequences not in {listfile}")

    def frames(self, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
        """Sorted ``.jpg`` frames of a sequence.

        Raises:
            FileNotFoundError: no frames (names the folder).
            ValueError: a gap in the frame numbering, or an annotation PNG without its JPEG
                (names the missing files).
        """
        folder = self.dir(root) / "JPEGImages" / self.resolution / seq
        frames = sorted(folder.glob("*.jpg"))
        if not frames:
            raise FileNotFoundError(f"{self.name}: no .jpg frames in {folder}")
        _check_numbering(f"{self.name}/{seq}: frame", folder, [p.stem for p in frames], ".jpg")
        stems = {p.stem for p in frames}
        ann_dir = self.dir(root) / "Annotations" / self.resolution / seq
        orphans = sorted(p for p in ann_dir.glob("*.png") if p.stem not in stems)
        if orphans:
            raise ValueError(f"{self.name}/{seq}: annotation {orphans[0]} has no frame {folder / (orphans[0].stem + '.jpg')}"
                             + (f" ({len(orphans)} annotations without a frame)" if len(orphans) > 1 else ""))
        return frames

    def scored_frames(self, seq: str, root: str | os.PathLike | None = None) -> list[str]:
        """With ground truth for every frame: the annotated frames, checked complete (no gap in
        their numbering, an annotation for every JPEG); else the frames (:meth:`frames`).

        Raises:
            FileNotFoundError, ValueError: see :meth:`frames`; a missing annotation (named).
        """
        frames = self.frames(seq, root)
        if not self.full_gt:
            return [p.stem for p in frames]
        ann_dir = self.dir(root) / "Annotations" / self.resolution / seq
        anns = sorted(p.stem for p in ann_dir.glob("*.png"))
        if not anns:
            raise FileNotFoundError(f"{self.name}: no ground truth .png in {ann_dir}")
        _check_numbering(f"{self.name}/{seq}: ground truth", ann_dir, anns, ".png")
        unannotated = [p for p in frames if p.stem not in set(anns)]
        if unannotated:
            raise ValueError(f"{self.name}/{seq}: frame {unannotated[0]} has no ground truth "
                             f"{ann_dir / (unannotated[0].stem + '.png')}")
        return anns

    def annotation(self, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
        """``<folder>/Annotations/480p/<seq>/<frame>.png``."""
        return self.dir(root) / "Annotations" / self.resolution / seq / f"{frame}.png"

    def plan(self, seq: str, root: str | os.PathLike | None = None) -> SequencePlan:
        """Every frame propagated and written; frame 0's annotation is the only one read."""
        paths = self.frames(seq, root)
        return SequencePlan(seq, paths, [True] * len(paths), {0: self.annotation(seq, paths[0].stem, root)},
                            binary=self.binary)


def _check_numbering(what: str, folder: Path, stems: list[str], ext: str) -> None:
    """ValueError naming the first missing file when ``stems`` do not run from 0 without a gap."""
    missing = numbering_gaps(stems)
    if missing:
        raise ValueError(f"{what} {folder / (missing[0] + ext)} is missing: the files are numbered {min(stems)} to "
                         f"{max(stems)}{f' and {len(missing)} numbers are missing' if len(missing) > 1 else ''}")
