"""The app's sessions: bounded, unguessable, freed when idle, computed by one worker thread.

Each :class:`AppSession` wraps one :class:`~label_prop.interactive.session.InteractiveSession`
and its *history*, the interactions that made its masks (JSON-ready dicts, see
:func:`check_interaction`): strokes with a brush width, a full mask, a new object. Undo pops the
last interaction and restores the snapshot taken before it; the session file
(:meth:`AppSession.session_json`) holds the history, and replaying it on the same frames, model
and settings gives the same masks (the session is deterministic; a test checks it).

Work that takes time (feature extraction when a session opens, propagation after an
annotation, a replay) runs on the store's single worker thread, one job at a time for the whole
app (the CPU's cores are the engine's, not the requests'); a session that is busy refuses a new
job (:class:`Busy`), and its ``progress`` and ``version`` tell the page what is happening.
"""
from __future__ import annotations

import base64
import io
import queue
import secrets
import threading
import time
from dataclasses import asdict
from typing import Callable, Mapping

import numpy as np
from PIL import Image

from hvc.runtime import git_revision
from label_prop.app.sources import Source
from label_prop.data.io import VOID_ID
from label_prop.interactive.scribbles import check_scribbles, scribbles_to_json
from label_prop.interactive.session import InteractiveConfig, InteractiveSession, Snapshot
from label_prop.propagation.features import FrameEncoder

#: ``format`` of a session file and its version.
SESSION_FORMAT = "hvc-app-session"
SESSION_VERSION = 1
#: Kinds of interaction in a history.
KINDS = ("strokes", "mask", "add_object")
#: Most points in one request's strokes; most brush width, pixels.
MAX_POINTS = 100_000
MAX_WIDTH = 200


class Busy(RuntimeError):
    """The session is computing; the request is refused (409)."""


class Full(RuntimeError):
    """The app holds its most sessions (503)."""


def decode_mask(data: bytes, size: tuple[int, int], what: str = "mask") -> np.ndarray:
    """A mask PNG (palette indices or greyscale values = object ids; 255 = void) as ``[H, W]`` uint8.

    Raises:
        ValueError: not a decodable palette or greyscale image, or not ``size`` (``(H, W)``).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("P", "L", "1"):
                raise ValueError(f"{what}: must be a palette or greyscale PNG, got mode {im.mode}")
            arr = np.asarray(im).astype(np.uint8)
    except ValueError:
        raise
    except Exception as exc:  # PIL raises several types for corrupt data
        raise ValueError(f"{what}: cannot decode the image ({type(exc).__name__})") from None
    if arr.shape != tuple(size):
        raise ValueError(f"{what}: size {arr.shape[0]}x{arr.shape[1]} differs from the frames' {size[0]}x{size[1]}")
    return arr


def check_interaction(item: object, num_frames: int, size: tuple[int, int]) -> dict:
    """Validate one interaction and return it in its JSON form.

    Forms: ``{"kind": "strokes", "frame": t, "scribbles": {"label": [[[x, y], ...], ...]},
    "width": pixels}``, ``{"kind": "mask", "frame": t, "png": base64 PNG}`` (object ids; ids not
    yet objects are added first), ``{"kind": "add_object", "id": k}``.

    Raises:
        ValueError: a one-line reason (unknown kind, frame out of range, bad strokes or width,
            too many points, an undecodable mask).
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"an interaction must be an object, got {type(item).__name__}")
    kind = item.get("kind")
    if kind not in KINDS:
        raise ValueError(f"interaction kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "add_object":
        k = item.get("id")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < VOID_ID:
            raise ValueError(f"object id must be an integer in 1..254, got {k!r}")
        return {"kind": kind, "id": k}
    t = item.get("frame")
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < num_frames:
        raise ValueError(f"frame must be an integer in 0..{num_frames - 1}, got {t!r}")
    if kind == "mask":
        png = item.get("png")
        if not isinstance(png, str):
            raise ValueError("a mask interaction needs 'png', a base64 PNG")
        try:
            raw = base64.b64decode(png, validate=True)
        except ValueError:
            raise ValueError("'png' is not valid base64") from None
        decode_mask(raw, size, f"mask of frame {t}")
        return {"kind": kind, "frame": t, "png": png}
    w = item.get("width", 1)
    if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WIDTH:
        raise ValueError(f"width must be an integer in 1..{MAX_WIDTH} pixels, got {w!r}")
    scribbles = item.get("scribbles")
    if not isinstance(scribbles, Mapping):
        raise ValueError("'scribbles' must be an object {label: [stroke, ...]}")
    if any(not isinstance(v, list) for v in scribbles.values()):
        raise ValueError("each label's strokes must be a list of [[x, y], ...] polylines")
    checked = check_scribbles(scribbles)
    points = sum(len(s) for v in checked.values() for s in v)
    if not points:
        raise ValueError(f"frame {t}: no stroke given")
    if points > MAX_POINTS:
        raise ValueError(f"{points} stroke points, more than {MAX_POINTS} in one interaction")
    return {"kind": kind, "frame": t, "scribbles": scribbles_to_json(checked), "width": w}


def apply_interaction(session: InteractiveSession, item: dict) -> None:
    """Apply one checked interaction (:func:`check_interaction`) to ``session``.

    Raises:
        ValueError: the session refuses it (e.g. the first annotation without background strokes,
            a label that is not an object, an object id that exists).
    """
    if item["kind"] == "add_object":
        session.add_object(item["id"])
        return
    t = item["frame"]
    if item["kind"] == "mask":
        ids = decode_mask(base64.b64decode(item["png"]), session.size, f"mask of frame {t}")
        ids = np.where(ids == VOID_ID, 0, ids)
        for k in sorted(set(np.unique(ids).tolist()) - {0, *session.object_ids}):
            session.add_object(int(k))
        session.annotate(t, mask=ids)
        return
    session.annotate(t, item["scribbles"], width=item["width"])


def settings_json(config: InteractiveConfig) -> dict:
    """The session settings as plain values (compared when a session file is loaded)."""
    return {"propagation": asdict(config.propagation), "seeds": asdict(config.seeds),
            "feature_dtype": config.feature_dtype}


class AppSession:
    """One open video and its interactive session (see the module docstring).

    Attributes:
        id: unguessable id (``secrets.token_urlsafe(24)``, 192 bits).
        source: what was opened; ``stems``: exported mask names; ``fps``: the video's (0 if unknown).
        status: ``"loading"``, ``"ready"``, ``"busy"`` or ``"error"`` (opening failed).
        message: the last job's error, one line ("" when it succeeded).
        progress: ``{"stage", "done", "total"}`` of the running job.
        version: increases whenever the masks, objects or status change.
    """

    def __init__(self, source: Source, frames: list[np.ndarray], stems: list[str], fps: float):
        self.id = secrets.token_urlsafe(24)
        self.source, self.frames, self.stems, self.fps = source, frames, stems, fps
        self.session: InteractiveSession | None = None
        self.status, self.message = "loading", ""
        self.progress = {"stage": "", "done": 0, "total": 0}
        self.version = 0
        self.history: list[dict] = []
        self.undo: list[tuple[Snapshot, int]] = []
        self.lock = threading.Lock()
        self.last_used = time.monotonic()

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def tell(self, stage: str, done: int, total: int) -> None:
        """Progress callback of the session (worker thread)."""
        self.progress = {"stage": stage, "done": done, "total": total}

    def state(self) -> dict:
        """The page's view: status, progress, objects, annotated and changed frames, reliability,
        recommended frame, undo depth."""
        s = self.session
        out = {"id": self.id, "status": self.status, "message": self.message, "progress": dict(self.progress),
               "version": self.version, "source": self.source.as_json(), "num_frames": len(self.frames),
               "size": list(self.frames[0].shape[:2]), "interactions": len(self.history),
               "can_undo": bool(self.undo)}
        if s is not None:
            st = s.state()
            out.update({k: st[k] for k in ("object_ids", "annotated_frames", "changed_frames", "reliability",
                                           "recommended")})
        else:
            out.update(object_ids=[1], annotated_frames=[], changed_frames=[], reliability=[None] * len(self.frames),
                       recommended=None)
        return out

    def session_json(self, model: dict, config: InteractiveConfig) -> dict:
        """The session file: source, model, settings, git revision and the history."""
        return {"format": SESSION_FORMAT, "version": SESSION_VERSION,
                "source": {"root": self.source.root, "path": self.source.path, "frames": len(self.frames)},
                "num_frames": len(self.frames), "size": list(self.frames[0].shape[:2]),
                "model": model, "settings": settings_json(config), "git_revision": git_revision(),
                "saved_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                "interactions": list(self.history)}


class SessionStore:
    """The open sessions and the worker thread that computes for them.

    Args:
        encoder: the app's encoder (all sessions share it).
        config: the sessions' settings.
        max_sessions: most sessions at once (:class:`Full` beyond).
        idle_seconds: sessions untouched this long (and not busy) are freed.
        undo_depth: interactions that can be undone per session.
    """

    def __init__(self, encoder: FrameEncoder, config: InteractiveConfig, max_sessions: int, idle_seconds: float,
                 undo_depth: int):
        self.encoder, self.config = encoder, config
        self.max_sessions, self.idle_seconds, self.undo_depth = max_sessions, idle_seconds, undo_depth
        self._sessions: dict[str, AppSession] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="hvc-app-worker", daemon=True)
        self._worker.start()

    # ---------------------------------------------------------------- sessions
    def expire(self) -> list[str]:
        """Free the sessions idle for longer than ``idle_seconds``; returns their ids."""
        now = time.monotonic()
        with self._lock:
            gone = [k for k, s in self._sessions.items()
                    if s.status not in ("loading", "busy") and now - s.last_used > self.idle_seconds]
            for k in gone:
                del self._sessions[k]
        return gone

    def get(self, sid: str) -> AppSession | None:
        """The session ``sid`` (touched), or None when there is none (unknown, closed or expired)."""
        self.expire()
        with self._lock:
            s = self._sessions.get(sid)
        if s is not None:
            s.touch()
        return s

    def close(self, sid: str) -> bool:
        """Free a session; False when there was none."""
        with self._lock:
            return self._sessions.pop(sid, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, source: Source, frames: list[np.ndarray], stems: list[str], fps: float,
             replay: list[dict] | None = None) -> AppSession:
        """Register a session and queue its feature extraction (then the ``replay`` history).

        Raises:
            Full: ``max_sessions`` are open.
        """
        self.expire()
        s = AppSession(source, frames, stems, fps)
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise Full(f"{self.max_sessions} sessions are open (--max-sessions); close one or wait "
                           f"{self.idle_seconds:g} s for an idle one to be freed")
            self._sessions[s.id] = s

        def load() -> None:
            s.session = InteractiveSession(s.frames, self.encoder, (1,), self.config, progress=s.tell)
            for i, item in enumerate(replay or ()):
                s.tell("replay", i, len(replay))
                self._apply(s, item)
        self._jobs.put((s, load, True))
        return s

    # -------------------------------------------------------------- interactions
    def interact(self, s: AppSession, item: dict) -> None:
        """Queue a checked interaction (:func:`check_interaction`) on ``s``.

        Raises:
            Busy: ``s`` is loading or computing.
        """
        self._submit(s, lambda: self._apply(s, item))

    def _apply(self, s: AppSession, item: dict) -> None:
        """Apply ``item`` on the worker thread, keeping the snapshot before it for undo."""
        snap = s.session.snapshot()
        try:
            apply_interaction(s.session, item)
        except Exception:  # a half-applied interaction (a mask's new objects) is rolled back
            s.session.restore(snap)
            raise
        s.history.append(item)
        if self.undo_depth:
            s.undo = (s.undo + [(snap, len(s.history) - 1)])[-self.undo_depth:]

    def undo(self, s: AppSession) -> None:
        """Queue an undo of the last interaction.

        Raises:
            Busy: ``s`` is computing. ValueError: nothing to undo.
        """
        if not s.undo:
            raise ValueError("nothing to undo")

        def job() -> None:
            snap, n = s.undo.pop()
            s.session.restore(snap)
            del s.history[n:]
        self._submit(s, job)

    def _submit(self, s: AppSession, fn: Callable[[], None]) -> None:
        with s.lock:
            if s.status != "ready":
                raise Busy(f"the session is {s.status}; wait for it to finish")
            s.status, s.message = "busy", ""
            s.progress = {"stage": "queued", "done": 0, "total": 0}
            s.version += 1
        self._jobs.put((s, fn, False))

    def _work(self) -> None:
        while True:
            s, fn, opening = self._jobs.get()
            try:
                fn()
                s.message = ""
            except Exception as exc:  # one job's failure must not stop the worker; the page shows it
                s.message = " ".join(str(exc).split()) or type(exc).__name__
                if opening:
                    s.status = "error"
            finally:
                with s.lock:
                    if s.status != "error":
                        s.status = "ready"
                    s.progress = {**s.progress, "stage": "done"}
                    s.version += 1
                    s.touch()
