"""What the app may open: videos, frame folders and DAVIS / YouTube-VOS sequences under its root
folders, with every requested path checked to stay inside its root.

A *source* is ``(root index, relative path)``: the page lists them (:func:`list_sources`) and
sends one back to open (:func:`resolve_source`). A path is refused when it is absolute, holds a
``..`` part, or resolves (symlinks followed) outside the resolved root: a symlink inside a root
that points out of it cannot be opened, one that stays inside can.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from label_prop.data.video import FRAME_EXTS, VideoFrames

#: Video files the app lists (OpenCV decodes them; :class:`label_prop.data.video.VideoFrames`).
VIDEO_EXTS = (".mp4", ".webm", ".mov", ".avi", ".mkv")
#: Folders never listed as frame folders: the masks of the DAVIS and YouTube-VOS layouts.
MASK_FOLDERS = ("Annotations", "Annotations_unsupervised", "SegmentationObject")
#: Listing stops after this many sources, or this many folders visited, per root.
MAX_LISTED = 5000
MAX_VISITED = 20000


class SourceError(ValueError):
    """A source that cannot be opened; ``status`` is the HTTP status the server answers with
    (403 outside a root, 404 missing, 413 too long, 400 otherwise)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Source:
    """A video file or frame folder inside root ``root`` (index into the app's roots) at ``path``
    (relative, POSIX separators); ``kind`` is ``"video"`` or ``"frames"``, ``frames`` the number of
    frame files of a folder (-1 for a video: its header may be wrong, it is counted when opened)."""

    root: int
    path: str
    kind: str
    frames: int

    def as_json(self) -> dict:
        """``{"root", "path", "kind", "frames", "name"}`` for the page."""
        return {"root": self.root, "path": self.path, "kind": self.kind, "frames": self.frames, "name": self.name}

    @property
    def name(self) -> str:
        """The sequence name used for exports: the folder's or the video file's stem."""
        return PurePosixPath(self.path).stem if self.kind == "video" else PurePosixPath(self.path).name


def _frame_count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTS and p.is_file())


def list_sources(roots: Sequence[Path]) -> list[Source]:
    """Every video file and frame folder under each root (symlinked folders are not followed;
    mask folders of the DAVIS / YouTube-VOS layouts skipped), sorted by root then path; at most
    :data:`MAX_LISTED` per root."""
    out: list[Source] = []
    for i, root in enumerate(roots):
        root = Path(root).resolve()
        listed = visited = 0
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            visited += 1
            dirnames[:] = sorted(d for d in dirnames if d not in MASK_FOLDERS and not d.startswith("."))
            here = Path(dirpath)
            rel = here.relative_to(root).as_posix()
            n = sum(1 for f in filenames if Path(f).suffix.lower() in FRAME_EXTS)
            if n and rel != ".":
                out.append(Source(i, rel, "frames", n))
                listed += 1
            for f in sorted(filenames):
                real = (here / f).resolve()
                if real != root and root not in real.parents:
                    continue  # a symlink that leaves the root: it could not be opened
                if Path(f).suffix.lower() in VIDEO_EXTS and not f.startswith("."):
                    out.append(Source(i, (Path(rel) / f).as_posix() if rel != "." else f, "video", -1))
                    listed += 1
            if listed >= MAX_LISTED or visited >= MAX_VISITED:
                break
    return out


def resolve_source(roots: Sequence[Path], root: object, path: object) -> tuple[Source, Path]:
    """Check a requested source and return it with its resolved path.

    Args:
        roots: the app's root folders.
        root: index into ``roots`` (an int).
        path: the path relative to that root (a string, ``/`` separators).

    Raises:
        SourceError: a bad root index or path type (400); an absolute path, a ``..`` part, or a
            path that resolves outside the root (403); nothing there (404); neither a video file
            nor a folder of frames (400).
    """
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < len(roots):
        raise SourceError(f"root must be an index in 0..{len(roots) - 1}, got {root!r}")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise SourceError(f"path must be a non-empty string relative to the root, got {path!r}")
    rel = PurePosixPath(path.replace("\\", "/"))
    if rel.is_absolute() or Path(path).is_absolute() or (len(path) > 1 and path[1] == ":"):
        raise SourceError(f"{path!r}: absolute paths are refused; give a path relative to root {root}", 403)
    if ".." in rel.parts:
        raise SourceError(f"{path!r}: '..' is refused; give a path inside root {root}", 403)
    base = Path(roots[root]).resolve()
    real = (base / Path(*rel.parts)).resolve()
    if real != base and base not in real.parents:
        raise SourceError(f"{path!r} resolves outside root {root} (a symlink that leaves it?); refused", 403)
    if not real.exists():
        raise SourceError(f"{path!r}: no such file or folder under root {root}", 404)
    if real.is_dir():
        n = _frame_count(real)
        if not n:
            raise SourceError(f"{path!r}: a folder without {'/'.join(FRAME_EXTS)} frames")
        return Source(root, rel.as_posix(), "frames", n), real
    if real.suffix.lower() not in VIDEO_EXTS:
        raise SourceError(f"{path!r}: not a video file ({', '.join(VIDEO_EXTS)}) or a folder of frames")
    return Source(root, rel.as_posix(), "video", -1), real


def read_source(source: Source, real: Path, first: int | None, max_frames: int
                ) -> tuple[list[np.ndarray], list[str], float]:
    """Decode a source's frames.

    Args:
        source, real: from :func:`resolve_source`.
        first: read only the first ``first`` frames (None: all).
        max_frames: the app's limit; a source with more frames than this (after ``first``) is refused.

    Returns:
        ``(frames, stems, fps)``: ``[H, W, 3]`` uint8 RGB frames, the names of their exported
        masks (frame files' stems; ``00000``, ... for a video) and the video's frames per second
        (0.0 for folders or when unknown).

    Raises:
        SourceError: more than ``max_frames`` frames (413); frames of different sizes, or an
            undecodable file (400, naming it).
    """
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 1):
        raise SourceError(f"frames must be an integer >= 1, got {first!r}")
    if source.kind == "frames":
        total = source.frames if first is None else min(first, source.frames)
        if total > max_frames:
            raise SourceError(f"{source.path!r} has {total} frames, more than the limit of {max_frames} "
                              f"(--max-frames); ask for its first frames only", 413)
    limit = max_frames + 1 if first is None else min(first, max_frames + 1)
    try:
        video = VideoFrames(real, max_frames=limit)
        frames, stems = [], []
        for name, frame in video:
            if frames and frame.shape != frames[0].shape:
                raise SourceError(f"{name}: size {frame.shape[:2]} differs from the first frame's {frames[0].shape[:2]}")
            frames.append(frame)
            stems.append(Path(name).stem if video.files is not None else f"{len(stems):05d}")
    except (OSError, ValueError) as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(str(exc).replace(str(real), source.path)) from None
    if len(frames) > max_frames:
        raise SourceError(f"{source.path!r} has more than {max_frames} frames (--max-frames); ask for its first "
                          f"frames only", 413)
    return frames, stems, video.fps
