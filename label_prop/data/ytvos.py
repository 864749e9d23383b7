"""YouTube-VOS validation sets (``ytvos18``, ``ytvos19``): meta.json, frames, first appearances.

Official layout (docs/method.md, "Filelists and YouTube-VOS": every frame is propagated through
(``valid_all_frames``) and only the sparse official frames are written)::

    <root>/YTVOS2018/valid/meta.json
    <root>/YTVOS2018/valid/JPEGImages/<video>/00000.jpg 00001.jpg ...  (ALL frames: valid_all_frames)
    <root>/YTVOS2018/valid/Annotations/<video>/<frame>.png             (first appearances only)

``valid_all_frames/JPEGImages/<video>`` next to ``valid/`` is used instead when it exists.
meta.json is ``{"videos": {<video>: {"objects": {"<id>": {"category": ..., "frames": [...]}}}}}``;
an object's ``frames`` are the sparse frames (every 5th) the server scores, from its first
appearance on.

Rules:

* an object starts at its first appearance: the first frame listed for it in meta.json whose
  Annotations PNG contains its id (:func:`label_prop.data.plans.starting_ids`); that PNG is the only
  annotation read for it;
* the frames propagated are all frames from the first frame where any object starts;
* the frames written (and zipped) are the meta.json frames of the video (union over its
  objects) from that frame on.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from label_prop.data.io import read_mask
from label_prop.data.plans import Benchmark, SequencePlan, check_name, select_sequences, starting_ids

@lru_cache(maxsize=8)
def _load_meta(path: str, mtime: float) -> dict:
    try:
        meta = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f"{path}: expected a top-level 'videos' object (YouTube-VOS meta.json)")
    for vid, info in videos.items():
        check_name(str(vid), f"{path}: video id")
        objs = info.get("objects") if isinstance(info, dict) else None
        if not isinstance(objs, dict) or not objs:
            raise ValueError(f"{path}: video {vid!r} has no 'objects'")
        for oid, o in objs.items():
            if not str(oid).isdigit() or not 0 < int(oid) < 255:
                raise ValueError(f"{path}: video {vid!r}: object id {oid!r} is not an integer in 1..254")
            if not isinstance(o, dict) or not isinstance(o.get("frames"), list) or not o["frames"]:
                raise ValueError(f"{path}: video {vid!r} object {oid}: missing or empty 'frames' list")
    return videos


@dataclass(frozen=True, kw_only=True)
class YtvosBenchmark(Benchmark):
    """A YouTube-VOS validation set (see the module docstring).

    Attributes:
        meta: the meta.json file, relative to ``folder``.
    """

    meta: str = "meta.json"

    def read_meta(self, root: str | os.PathLike | None = None) -> dict:
        """The ``videos`` mapping of meta.json (video -> {"objects": {...}}).

        Raises:
            FileNotFoundError: meta.json is missing.
            ValueError: it is not a YouTube-VOS meta.json (the message names the file and the fault).
        """
        path = self.dir(root) / self.meta
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: {path} not found (the YouTube-VOS valid meta.json)")
        return _load_meta(str(path), path.stat().st_mtime)

    def sequences(self, root: str | os.PathLike | None = None, selection: list[str] | None = None) -> list[str]:
        """Sorted video names of meta.json (see :meth:`Benchmark.sequences`)."""
        return select_sequences(sorted(self.read_meta(root)), selection, f"{self.name}: videos not in meta.json")

    def frames(self, seq: str, root: str | os.PathLike | None = None) -> list[Path]:
        """All JPEG frames of a video, sorted (``valid_all_frames`` if present beside ``valid``).

        Raises:
            FileNotFoundError: no frames.
            ValueError: the numbered frames are not consecutive, i.e. the folder holds only the
                sparse ``valid`` frames (propagating over a 5x frame gap would silently degrade).
        """
        base = self.dir(root)
        folder = base / "JPEGImages" / seq
        alt = base.parent / "valid_all_frames" / "JPEGImages" / seq
        if alt.is_dir():
            folder = alt
        frames = sorted(folder.glob("*.jpg"))
        if not frames:
            raise FileNotFoundError(f"{self.name}: no .jpg frames in {folder}")
        nums = [int(p.stem) for p in frames if re.fullmatch(r"\d+", p.stem)]
        if len(nums) == len(frames) and len(nums) > 1 and max(np.diff(nums)) > 1:
            raise ValueError(
                f"{self.name}: {folder} holds non-consecutive frames ({frames[0].stem}, {frames[1].stem}, ...): "
                f"only the sparse 'valid' frames? Install the 'valid_all_frames' download there"
            )
        return frames

    def annotation(self, seq: str, frame: str, root: str | os.PathLike | None = None) -> Path:
        """``<folder>/Annotations/<video>/<frame>.png``."""
        return self.dir(root) / "Annotations" / seq / f"{frame}.png"

    def plan(self, seq: str, root: str | os.PathLike | None = None) -> SequencePlan:
        """The plan of one video (rules in the module docstring). Reads only the annotations
        needed to find each object's first appearance (normally one PNG per start frame).

        Raises:
            FileNotFoundError: frames missing.
            ValueError: the video is not in meta.json, a meta.json frame has no JPEG, or no
                annotation contains an object (the message names the video, object and folder).
        """
        meta = self.read_meta(root)
        if seq not in meta:
            raise ValueError(f"{self.name}: video {seq!r} not in meta.json")
        objects = {int(k): v["frames"] for k, v in meta[seq]["objects"].items()}
        frames = self.frames(seq, root)
        starts = self._first_appearances(seq, objects, frames, root)
        first = min(starts)
        listed = {f for fs in objects.values() for f in fs}
        kept = frames[first:]
        return SequencePlan(
            name=seq,
            frames=kept,
            save=[p.stem in listed for p in kept],
            annotations={t - first: self.annotation(seq, frames[t].stem, root) for t in sorted(starts)},
            start_ids={t - first: ids for t, ids in sorted(starts.items())},
            object_ids=sorted(objects),
            binary=False,
        )

    def _first_appearances(self, seq: str, objects: dict[int, list[str]], frames: list[Path],
                           root: str | os.PathLike | None) -> dict[int, list[int]]:
        """Frame index -> ids starting there; a frame's PNG is read only when an object not yet
        started is listed at it."""
        index = {p.stem: i for i, p in enumerate(frames)}
        listed_at: dict[int, set[int]] = {}
        for oid, names in sorted(objects.items()):
            missing = [f for f in names if f not in index]
            if missing:
                raise ValueError(f"{self.name}: video {seq}: meta.json frames {missing[:3]} of object {oid} "
                                 f"have no JPEG in {frames[0].parent}")
            for f in names:
                listed_at.setdefault(index[f], set()).add(oid)
        starts: dict[int, list[int]] = {}
        started: set[int] = set()
        for t in sorted(listed_at):
            waiting = listed_at[t] - started
            ann = self.annotation(seq, frames[t].stem, root)
            if waiting and ann.is_file():
                new = starting_ids(read_mask(ann), started, waiting)
                if new:
                    starts[t] = new
                    started.update(new)
        absent = sorted(set(objects) - started)
        if absent:
            raise ValueError(f"{self.name}: video {seq}: no annotation in {self.annotation(seq, 'x', root).parent} "
                             f"contains object {absent[0]} on its meta.json frames")
        return starts
