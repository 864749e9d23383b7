"""The app's HTTP server: the page, and a JSON API over :class:`label_prop.app.store.SessionStore`.

FastAPI (on Starlette) serves it and uvicorn runs it: a well-kept pair with streaming responses
(server-sent events for progress) and a test client. Every error is ``{"error": "one line"}``
with a 4xx status: 400 malformed request, 403 a path outside the roots, 404 no such session or
file, 409 the session is busy, 413 a body or video over the limits, 422 a session file that does
not fit this app (another model or settings), 503 too many sessions.

Endpoints (``{id}`` a session id; frames ``t`` are 0-based):

* ``GET /``: the page; ``GET /static/...``: its script and style.
* ``GET /api/health``, ``GET /api/info`` (model, settings, limits, root names),
  ``GET /api/sources`` (what can be opened).
* ``POST /api/sessions`` ``{"root": i, "path": "rel/path", "frames": N?}``: open (202; features
  are extracted in the background), ``POST /api/sessions/load`` (a session file): open and replay.
* ``GET /api/sessions/{id}`` (state), ``GET /api/sessions/{id}/events`` (server-sent events: the
  state whenever it changes), ``GET .../frame/{t}.jpg``, ``GET .../mask/{t}.png`` (RGBA, DAVIS
  colours, transparent background), ``DELETE /api/sessions/{id}``.
* ``POST .../annotate`` ``{"frame", "scribbles", "width"}``, ``POST .../mask/{t}`` (a PNG body),
  ``POST .../objects`` (a new object id), ``POST .../undo``: queued (202).
* ``GET .../export/masks.zip`` (palette PNGs, DAVIS layout ``<name>/<frame>.png``),
  ``GET .../export/overlay.mp4`` (H.264, :class:`label_prop.data.video.OverlayWriter`),
  ``GET .../export/session.json``.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hvc.errors import UsageError
from label_prop.app.config import AppConfig
from label_prop.app.sources import SourceError, list_sources, read_source, resolve_source
from label_prop.app.store import (SESSION_FORMAT, SESSION_VERSION, AppSession, Busy, Full, SessionStore,
                                  check_interaction, decode_mask, settings_json)
from label_prop.data.io import DAVIS_PALETTE, palette_png_bytes
from label_prop.data.video import OverlayWriter
from label_prop.interactive.session import InteractiveConfig
from label_prop.propagation.features import FrameEncoder

STATIC = Path(__file__).parent / "static"
#: Seconds between checks of a session's state in the event stream, and between keep-alives.
EVENT_POLL_S = 0.1
KEEPALIVE_S = 15.0


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


async def _body(request: Request, limit: int) -> bytes:
    """The request body, read in pieces and refused (413) beyond ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared)} bytes is over the limit of {limit} (--max-upload-mb)")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes (--max-upload-mb)")
    return bytes(data)


async def _json(request: Request, limit: int) -> dict:
    raw = await _body(request, limit)
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _frame_index(s: AppSession, t: int) -> int:
    if not 0 <= t < len(s.frames):
        raise ApiError(404, f"frame {t} is not in 0..{len(s.frames) - 1}")
    return t


def mask_rgba(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` ids as ``[H, W, 4]`` uint8 RGBA: DAVIS colours, alpha 0 on the background."""
    rgba = np.zeros((*ids.shape, 4), dtype=np.uint8)
    rgba[..., :3] = DAVIS_PALETTE[ids]
    rgba[..., 3] = np.where(ids > 0, 255, 0)
    return rgba


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def masks_zip(s: AppSession) -> bytes:
    """Every frame's mask as a palette PNG in a zip, DAVIS layout ``<name>/<stem>.png``."""
    masks = s.session.masks()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for stem, m in zip(s.stems, masks):
            z.writestr(f"{s.source.name}/{stem}.png", palette_png_bytes(m))
    return buf.getvalue()


def create_app(encoder: FrameEncoder, model: dict, config: InteractiveConfig, app_config: AppConfig) -> FastAPI:
    """The app (see the module docstring).

    Args:
        encoder: the feature extractor every session uses.
        model: plain values that identify the encoder (its name, seed, weights' SHA-256,
            precision), written into session files and compared when one is loaded.
        config: the sessions' settings.
        app_config: roots, limits.

    Raises:
        UsageError: no root folder, or a root that is not a folder.
    """
    roots = [Path(r).resolve() for r in app_config.roots]
    if not roots:
        raise UsageError("the app needs at least one --root folder")
    for r in roots:
        if not r.is_dir():
            raise UsageError(f"--root {r}: not a folder")
    store = SessionStore(encoder, config, app_config.max_sessions, app_config.idle_seconds, app_config.undo_depth)
    limit = app_config.max_upload_bytes
    app = FastAPI(title="hvc interactive segmentation", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.stopping = store, False

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": _one_line(exc.message)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": _one_line(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error: {_one_line(exc) or type(exc).__name__}"}, status_code=500)

    def session(sid: str) -> AppSession:
        s = store.get(sid)
        if s is None:
            raise ApiError(404, "no such session (closed, expired after --idle-seconds, or never opened)")
        return s

    def ready(sid: str) -> AppSession:
        s = session(sid)
        if s.session is None:
            raise ApiError(409, f"the session is {s.status}: {s.message}" if s.message else
                           f"the session is {s.status}; wait for it")
        return s

    def queue(fn, *args, **extra) -> JSONResponse:
        try:
            fn(*args)
        except Busy as exc:
            raise ApiError(409, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse({"queued": True, **extra}, status_code=202)

    def opened(source, real, first):
        try:
            frames, stems, fps = read_source(source, real, first, app_config.max_frames)
        except SourceError as exc:
            raise ApiError(exc.status, str(exc)) from None
        return frames, stems, fps

    # ------------------------------------------------------------------ page
    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    async def health():
        return {"ok": True, "sessions": len(store), "worker_alive": store._worker.is_alive()}

    @app.get("/api/info")
    async def info():
        return {"model": model, "settings": settings_json(config), "roots": [r.name for r in roots],
                "limits": {"max_frames": app_config.max_frames, "max_upload_mb": app_config.max_upload_mb,
                           "max_sessions": app_config.max_sessions, "idle_seconds": app_config.idle_seconds,
                           "undo_depth": app_config.undo_depth}}

    @app.get("/api/sources")
    async def sources():
        found = await run_in_threadpool(list_sources, roots)
        return {"roots": [r.name for r in roots], "sources": [s.as_json() for s in found]}

    # -------------------------------------------------------------- sessions
    @app.post("/api/sessions", status_code=202)
    async def open_session(request: Request):
        body = await _json(request, limit)
        try:
            source, real = resolve_source(roots, body.get("root"), body.get("path"))
        except SourceError as exc:
            raise ApiError(exc.status, str(exc)) from None
        frames, stems, fps = await run_in_threadpool(opened, source, real, body.get("frames"))
        try:
            s = store.open(source, frames, stems, fps)
        except Full as exc:
            raise ApiError(503, str(exc)) from None
        return JSONResponse(s.state(), status_code=202)

    @app.post("/api/sessions/load", status_code=202)
    async def load_session(request: Request):
        doc = await _json(request, limit)
        if doc.get("format") != SESSION_FORMAT or doc.get("version") != SESSION_VERSION:
            raise ApiError(400, f"not a session file of this app (format {SESSION_FORMAT!r}, version {SESSION_VERSION})")
        if doc.get("model") != model:
            raise ApiError(422, f"the session was made with model {doc.get('model')!r}; this app runs {model!r}")
        if doc.get("settings") != settings_json(config):
            raise ApiError(422, "the session was made with other settings than this app's "
                                "(propagation, seeds or feature dtype); start the app with them")
        src = doc.get("source")
        if not isinstance(src, dict):
            raise ApiError(400, "the session file has no 'source' object")
        try:
            source, real = resolve_source(roots, src.get("root"), src.get("path"))
        except SourceError as exc:
            raise ApiError(exc.status, str(exc)) from None
        frames, stems, fps = await run_in_threadpool(opened, source, real, src.get("frames"))
        size = tuple(frames[0].shape[:2])
        if len(frames) != doc.get("num_frames") or list(size) != doc.get("size"):
            raise ApiError(422, f"{source.path!r} now has {len(frames)} frames of {size[0]}x{size[1]}, the session "
                                f"{doc.get('num_frames')} of {doc.get('size')}")
        items = doc.get("interactions")
        if not isinstance(items, list):
            raise ApiError(400, "the session file has no 'interactions' list")
        try:
            replay = [check_interaction(it, len(frames), size) for it in items]
        except ValueError as exc:
            raise ApiError(400, f"interaction: {exc}") from None
        try:
            s = store.open(source, frames, stems, fps, replay=replay)
        except Full as exc:
            raise ApiError(503, str(exc)) from None
        return JSONResponse(s.state(), status_code=202)

    @app.get("/api/sessions/{sid}")
    async def state(sid: str):
        return session(sid).state()

    @app.delete("/api/sessions/{sid}")
    async def close(sid: str):
        if not store.close(sid):
            raise ApiError(404, "no such session")
        return {"closed": True}

    @app.get("/api/sessions/{sid}/events")
    async def events(sid: str, request: Request):
        s = session(sid)

        async def stream():
            last, quiet = None, 0.0
            while not app.state.stopping:
                if await request.is_disconnected() or store.get(sid) is None:
                    break
                key = (s.version, s.status, s.progress.get("stage"), s.progress.get("done"))
                if key != last:
                    last, quiet = key, 0.0
                    yield f"data: {json.dumps(s.state())}\n\n"
                elif quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(EVENT_POLL_S)
                quiet += EVENT_POLL_S
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/sessions/{sid}/frame/{t}.jpg")
    async def frame(sid: str, t: int):
        s = session(sid)
        rgb = s.frames[_frame_index(s, t)]
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        return Response(buf.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/sessions/{sid}/mask/{t}.png")
    async def mask(sid: str, t: int):
        s = ready(sid)
        ids = s.session.mask(_frame_index(s, t))
        return Response(_png(mask_rgba(ids)), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/sessions/{sid}/annotate", status_code=202)
    async def annotate(sid: str, request: Request):
        s = ready(sid)
        body = await _json(request, limit)
        try:
            item = check_interaction({**body, "kind": "strokes"}, len(s.frames), s.session.size)
            labels = set(s.session.labels)
            bad = sorted(int(k) for k in item["scribbles"] if int(k) not in labels)
            if bad:
                raise ValueError(f"label {bad[0]} is not an object of the session {s.session.object_ids}; add it first")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return queue(store.interact, s, item)

    @app.post("/api/sessions/{sid}/mask/{t}", status_code=202)
    async def upload_mask(sid: str, t: int, request: Request):
        s = ready(sid)
        _frame_index(s, t)
        raw = await _body(request, limit)
        try:
            decode_mask(raw, s.session.size, f"uploaded mask of frame {t}")
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        item = {"kind": "mask", "frame": t, "png": base64.b64encode(raw).decode("ascii")}
        return queue(store.interact, s, item)

    @app.post("/api/sessions/{sid}/objects", status_code=202)
    async def add_object(sid: str):
        s = ready(sid)
        free = [k for k in range(1, 255) if k not in s.session.object_ids]
        if not free:
            raise ApiError(400, "254 objects already")
        return queue(store.interact, s, {"kind": "add_object", "id": free[0]}, id=free[0])

    @app.post("/api/sessions/{sid}/undo", status_code=202)
    async def undo(sid: str):
        return queue(store.undo, ready(sid))

    # ---------------------------------------------------------------- export
    def attachment(name: str) -> dict:
        return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}

    @app.get("/api/sessions/{sid}/export/masks.zip")
    async def export_masks(sid: str):
        s = ready(sid)
        data = await run_in_threadpool(masks_zip, s)
        return Response(data, media_type="application/zip", headers=attachment(f"{s.source.name}_masks.zip"))

    @app.get("/api/sessions/{sid}/export/session.json")
    async def export_session(sid: str):
        s = ready(sid)
        doc = s.session_json(model, config)
        return Response(json.dumps(doc, indent=1) + "\n", media_type="application/json",
                        headers=attachment(f"{s.source.name}_session.json"))

    @app.get("/api/sessions/{sid}/export/overlay.mp4")
    async def export_overlay(sid: str):
        s = ready(sid)
        tmp = Path(tempfile.mkdtemp(prefix="hvc-app-"))
        path = tmp / "overlay.mp4"

        def write() -> None:
            masks = s.session.masks()
            with OverlayWriter(path, s.fps or app_config.fps) as w:
                for f, m in zip(s.frames, masks):
                    w.write(f, m)
        try:
            await run_in_threadpool(write)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FileResponse(path, media_type="video/mp4", headers=attachment(f"{s.source.name}_overlay.mp4"),
                            background=BackgroundTask(shutil.rmtree, tmp, True))

    return app
