"""YouTube-VOS validation sets (``ytvos18``, ``ytvos19``): meta.json, frames, first appearances.

Official layout (HVC_METHOD.md section 5, "Filelists": YTVOS runs over ``valid_all_frames`` and
writes only the sparse official frames)::

    <root>/YTVOS2018/valid/meta.json
    <root>/YTVOS2018/valid/JPEGImages/<video>/00000.jpg 00001.jpg ...  (ALL frames: valid_all_frames)
    <root>/YTVOS2018/valid/Annotations/<video>/<frame>.png             (first appearances only)

``valid_all_frames/JPEGImages/<video>`` next to ``valid/`` is used instead when it exists.
meta.json is ``{"videos": {<video>: {"objects": {"<id>": {"category": ..., "frames": [...]}}}}}``;
an object's ``frames`` are the sparse frames (every 5th) the server scores, from its first
appearance on.

Rules:

* an object's first appearance is the first frame listed for it in meta.json that has an
  Annotations PNG containing its id; that PNG is the only annotation read for it;
* the frames propagated are all frames from the first frame where any object appears;
* the frames written (and zipped) are the meta.json frames of the video (union over its
  objects) from that frame on.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from label_prop.datasets import Benchmark, SequencePlan, annotation_path, benchmark_dir, select_sequences
from label_prop.io import read_mask


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
        objs = info.get("objects") if isinstance(info, dict) else None
        if not isinstance(objs, dict) or not objs:
            raise ValueError(f"{path}: video {vid!r} has no 'objects'")
        for oid, o in objs.items():
            if not str(oid).isdigit() or not 0 < int(oid) < 255:
                raise ValueError(f"{path}: video {vid!r}: object id {oid!r} is not an integer in 1..254")
            if not isinstance(o, dict) or not isinstance(o.get("frames"), list) or not o["frames"]:
                raise ValueError(f"{path}: video {vid!r} object {oid}: missing or empty 'frames' list")
    return videos


def read_meta(bench: Benchmark, root: str | os.PathLike | None = None) -> dict:
    """The ``videos`` mapping of the benchmark's meta.json (video -> {"objects": {...}}).

    Raises:
        FileNotFoundError: meta.json is missing.
        ValueError: it is not a YouTube-VOS meta.json (the message names the file and the fault).
    """
    path = benchmark_dir(bench, root) / bench.imageset
    if not path.is_file():
        raise FileNotFoundError(f"{bench.name}: {path} not found (the YouTube-VOS valid meta.json)")
    return _load_meta(str(path), path.stat().st_mtime)


def list_videos(bench: Benchmark, root: str | os.PathLike | None = None,
                sequences: list[str] | None = None) -> list[str]:
    """Sorted video names of meta.json, optionally restricted to ``sequences``.

    Raises:
        ValueError: a requested video is not in meta.json.
    """
    return select_sequences(sorted(read_meta(bench, root)), sequences, f"{bench.name}: videos not in meta.json")


def video_frame_paths(bench: Benchmark, video: str, root: str | os.PathLike | None = None) -> list[Path]:
    """All JPEG frames of a video, sorted (``valid_all_frames`` if present beside ``valid``).

    Raises:
        FileNotFoundError: no frames.
        ValueError: the numbered frames are not consecutive, i.e. the folder holds only the
            sparse ``valid`` frames (propagating over a 5x frame gap would silently degrade).
    """
    base = benchmark_dir(bench, root)
    folder = base / "JPEGImages" / video
    alt = base.parent / "valid_all_frames" / "JPEGImages" / video
    if alt.is_dir():
        folder = alt
    frames = sorted(folder.glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"{bench.name}: no .jpg frames in {folder}")
    nums = [int(p.stem) for p in frames if re.fullmatch(r"\d+", p.stem)]
    if len(nums) == len(frames) and len(nums) > 1 and max(np.diff(nums)) > 1:
        raise ValueError(
            f"{bench.name}: {folder} holds non-consecutive frames ({frames[0].stem}, {frames[1].stem}, ...): "
            f"only the sparse 'valid' frames? Install the 'valid_all_frames' download there"
        )
    return frames


def plan_video(bench: Benchmark, video: str, root: str | os.PathLike | None = None) -> SequencePlan:
    """The :class:`SequencePlan` of one YouTube-VOS video (rules in the module docstring).

    Reads only the annotations needed to find each object's first appearance (normally one
    PNG per start frame).

    Raises:
        FileNotFoundError: frames missing.
        ValueError: a meta.json frame has no JPEG, or no annotation contains an object (the
            message names the video, object and folder).
    """
    meta = read_meta(bench, root)
    if video not in meta:
        raise ValueError(f"{bench.name}: video {video!r} not in meta.json")
    objects = meta[video]["objects"]
    frames = video_frame_paths(bench, video, root)
    index = {p.stem: i for i, p in enumerate(frames)}
    listed: set[str] = set()
    starts: dict[int, list[int]] = {}
    cache: dict[Path, np.ndarray] = {}
    for oid_s, obj in sorted(objects.items(), key=lambda kv: int(kv[0])):
        oid = int(oid_s)
        missing = [f for f in obj["frames"] if f not in index]
        if missing:
            raise ValueError(f"{bench.name}: video {video}: meta.json frames {missing[:3]} of object {oid} "
                             f"have no JPEG in {frames[0].parent}")
        listed.update(obj["frames"])
        start = None
        for f in sorted(obj["frames"], key=index.__getitem__):
            ann = annotation_path(bench, video, f, root)
            if not ann.is_file():
                continue
            if ann not in cache:
                cache[ann] = read_mask(ann)
            if (cache[ann] == oid).any():
                start = index[f]
                break
        if start is None:
            raise ValueError(f"{bench.name}: video {video}: no annotation in "
                             f"{annotation_path(bench, video, 'x', root).parent} contains object {oid} "
                             f"on its meta.json frames")
        starts.setdefault(start, []).append(oid)
    first = min(starts)
    kept = frames[first:]
    return SequencePlan(
        name=video,
        frames=kept,
        save=[p.stem in listed for p in kept],
        annotations={t - first: annotation_path(bench, video, frames[t].stem, root) for t in sorted(starts)},
        start_ids={t - first: sorted(ids) for t, ids in sorted(starts.items())},
        object_ids=sorted(int(o) for o in objects),
        binary=False,
    )
