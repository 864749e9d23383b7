"""Video input and output for :mod:`label_prop.segment`: frames streamed from a video file
(OpenCV) or a frame folder, and an overlay video written frame by frame.

The overlay video is H.264 (``libx264``, ``yuv420p``, what browsers play) encoded by the ffmpeg
binary that ``imageio-ffmpeg`` ships (run directly, so that its exit status and messages are
checked: ``imageio_ffmpeg.write_frames`` ignores them, and a full disk would go unnoticed);
when that is not available it falls back to OpenCV's ``mp4v`` with a warning (``mp4v`` plays in
desktop players, not in most browsers).
"""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from label_prop.data.io import overlay, read_frame

try:  # ships its own ffmpeg binary (setup.cfg); optional at run time, see OverlayWriter
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - depends on the installation
    imageio_ffmpeg = None

#: Frame files of a frame folder (case-insensitive), read in name order.
FRAME_EXTS = (".jpg", ".jpeg", ".png")


class VideoFrames:
    """The frames of a video file (OpenCV) or a frame folder, streamed one at a time.

    Args:
        path: a video file (``.mp4``, ``.avi``, ...) or a folder of ``.jpg``/``.jpeg``/``.png``
            frames (read in name order).
        max_frames: stop after this many frames (None: all).

    Attributes:
        header_frames: the frame count the video's header states (folders: the number of frame
            files); -1 when unknown.
        fps: the header's frames per second (0.0 for folders or when unknown).
        decoded: frames yielded so far.

    Iterating yields ``(name, frame)``: ``name`` for messages (the file of a folder's frame,
    ``VIDEO frame N`` for a video), ``frame`` ``[H, W, 3]`` uint8 RGB.

    Raises:
        FileNotFoundError: missing input, or a folder without frames (when constructed).
        ValueError: OpenCV cannot open the video (when constructed), or decodes no frame
            (when iterated); an undecodable frame file (named).
    """

    def __init__(self, path: str | os.PathLike, max_frames: int | None = None):
        self.path, self.max_frames, self.decoded = Path(path), max_frames, 0
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in FRAME_EXTS)
            if not self.files:
                raise FileNotFoundError(f"{self.path}: no {'/'.join(FRAME_EXTS)} frames in this folder")
            self.header_frames, self.fps = len(self.files), 0.0
            return
        self.files = None
        if not self.path.is_file():
            raise FileNotFoundError(f"input not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise ValueError(f"{self.path}: OpenCV cannot open this video")
            self.header_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1)
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        finally:
            cap.release()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.files is not None:
            for f in self.files[:self.max_frames]:
                frame = read_frame(f)
                self.decoded += 1
                yield str(f), frame
            return
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ValueError(f"{self.path}: OpenCV cannot open this video")
        try:
            while self.max_frames is None or self.decoded < self.max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                self.decoded += 1
                yield f"{self.path} frame {self.decoded - 1}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        if self.decoded == 0:
            raise ValueError(f"{self.path}: OpenCV decoded no frame from this video")

    def shortfall(self) -> str | None:
        """After iterating: a message when the video's header states more frames than were decoded
        (a truncated or damaged file), with both counts; None otherwise (or when ``max_frames``
        stopped the reading first)."""
        if self.files is not None or self.header_frames <= 0 or self.decoded >= self.header_frames:
            return None
        if self.max_frames is not None and self.decoded >= self.max_frames:
            return None
        return (f"{self.path}: the header states {self.header_frames} frames but only {self.decoded} could be "
                f"decoded (a truncated or damaged video?); the output covers the {self.decoded} decoded frames")


def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """``(frame count or -1, fps or 0.0)`` of a video file or frame folder (folders: fps 0).

    Raises:
        FileNotFoundError: missing input; ValueError: OpenCV cannot open the file.
    """
    v = VideoFrames(path)
    return v.header_frames, v.fps


def iter_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Stream ``[H, W, 3]`` uint8 RGB frames of a video file (OpenCV) or a frame folder
    (:class:`VideoFrames` without the names).

    Raises:
        FileNotFoundError: missing input or a folder without frames.
        ValueError: OpenCV cannot open the video or it yields no frame (the message names it).
    """
    for _, frame in VideoFrames(path, max_frames):
        yield frame


class _FfmpegH264:
    """``ffmpeg`` (imageio-ffmpeg's binary) encoding raw RGB frames of ``w x h`` pixels (even) to
    H.264 ``yuv420p`` at ``path``; in its own process group (Ctrl-C reaches only Python, which
    stops it), its messages kept for the error.

    Raises:
        OSError: ffmpeg cannot be started, stops while writing, or exits with an error (names
            ``path`` and ffmpeg's last message; ENOSPC when it reports a full disk).
    """

    def __init__(self, path: Path, w: int, h: int, fps: float):
        self.path = path
        self.log = tempfile.TemporaryFile()
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                     start_new_session=True)

    def _error(self, what: str) -> OSError:
        self.log.seek(0)
        lines = [ln.strip() for ln in self.log.read().decode(errors="replace").splitlines() if ln.strip()]
        full = [ln for ln in lines if "No space left" in ln]
        last = (full or lines or [f"exit status {self.proc.poll()}"])[-1]
        return OSError(errno.ENOSPC if full else 0, f"{what} ({last})", str(self.path))

    def write(self, rgb: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        except (BrokenPipeError, OSError):
            self.proc.wait()
            raise self._error("ffmpeg stopped writing the video") from None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.wait() != 0:
            raise self._error("ffmpeg could not finish the video")
        self.log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class OverlayWriter:
    """Streaming writer of overlay frames: H.264 through imageio-ffmpeg's ffmpeg, else OpenCV
    ``mp4v`` (with a warning). The file is opened on the first frame; odd frame sizes are padded by
    one pixel (edge colour) to the even size that ``yuv420p`` needs (OpenCV's ``mp4v`` would drop
    the odd row and column instead).

    Args:
        path: the ``.mp4`` to write.
        fps: frames per second.

    Attributes:
        codec: ``"h264"`` or ``"mp4v"`` once the first frame is written (None before).

    Use as a context manager (``close`` on success, ``abort`` on an exception), or call
    :meth:`close` / :meth:`abort` yourself.

    Raises:
        ValueError: neither encoder can write the file (names it).
        OSError: ffmpeg failed while writing or finishing the file (names it and the cause).
    """

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self.codec: str | None = None
        self._ffmpeg: _FfmpegH264 | None = None
        self._cv = None

    def __enter__(self) -> "OverlayWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self, w: int, h: int) -> None:
        """Start the encoder for frames of ``w x h`` pixels (even)."""
        reason = "imageio-ffmpeg is not installed"
        if imageio_ffmpeg is not None:
            try:
                self._ffmpeg, self.codec = _FfmpegH264(self.path, w, h, self.fps), "h264"
                return
            except (OSError, RuntimeError) as exc:  # no binary for this platform, not executable ...
                reason = f"ffmpeg could not be started: {exc}"
        warnings.warn(f"{self.path}: writing mp4v instead of H.264 ({reason}); most browsers do not play mp4v")
        self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not self._cv.isOpened():
            raise ValueError(f"{self.path}: OpenCV cannot write an mp4v video of size {w}x{h}")
        self.codec = "mp4v"

    def write(self, frame: np.ndarray, ids: np.ndarray) -> None:
        """Blend ``ids`` ``[H, W]`` over ``frame`` ``[H, W, 3]`` RGB and append it.

        Raises:
            OSError: ffmpeg stopped (e.g. the disk is full), naming the file.
        """
        h, w = frame.shape[:2]
        if self.codec is None:
            self._open(w + w % 2, h + h % 2)
        rgb = overlay(frame, ids)
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._ffmpeg is not None:
            self._ffmpeg.write(rgb)
        else:
            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Finish the file (nothing to do when no frame was written).

        Raises:
            OSError: ffmpeg could not finish it (names the file and ffmpeg's message).
        """
        self._end(kill=False)

    def abort(self) -> None:
        """Stop writing after a failure or an interruption: end the encoder at once (the file is
        incomplete; the caller discards it)."""
        self._end(kill=True)

    def _end(self, kill: bool) -> None:
        """Release the encoder once: ffmpeg is killed (``kill``) or closed; OpenCV's writer released."""
        if self._ffmpeg is not None:
            ff, self._ffmpeg = self._ffmpeg, None
            if kill:
                ff.kill()
            else:
                ff.close()
        if self._cv is not None:
            self._cv.release()
            self._cv = None
