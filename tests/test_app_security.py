"""The app's safety: paths stay inside the roots, bodies and videos have limits, unknown sessions
and malformed strokes get a 4xx with a one-line reason, and the server stays up after each."""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from label_prop.app.config import AppConfig  # noqa: E402
from label_prop.app.server import create_app  # noqa: E402
from label_prop.config import PropagationConfig  # noqa: E402
from label_prop.interactive.session import InteractiveConfig  # noqa: E402
from label_prop.propagation.features import build_encoder  # noqa: E402

CONFIG = InteractiveConfig(propagation=PropagationConfig(n_context=4))
MODEL = {"name": "random", "seed": 0}


def write_frames(folder, n=5, size=(48, 64), seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for t in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{t:05d}.jpg")
    return folder


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("random", precision="float32")


@pytest.fixture
def roots(tmp_path):
    root = tmp_path / "root"
    write_frames(root / "clip")
    write_frames(root / "long", n=7)
    outside = write_frames(tmp_path / "outside" / "secret")
    os.symlink(outside, root / "escape")  # leaves the root: refused
    os.symlink(root / "clip", root / "alias")  # stays inside: allowed
    (tmp_path / "outside" / "film.mp4").write_bytes(b"not listed")
    os.symlink(tmp_path / "outside" / "film.mp4", root / "film.mp4")  # a file that leaves: not listed, refused
    return root


def client(encoder, root, **limits):
    app = create_app(encoder, MODEL, CONFIG, AppConfig(roots=(root,), **{"max_frames": 6, **limits}))
    return TestClient(app)


def wait_ready(c, sid, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = c.get(f"/api/sessions/{sid}").json()
        if st["status"] not in ("loading", "busy"):
            return st
        time.sleep(0.05)
    raise AssertionError(f"session {sid} still busy after {timeout} s")


def assert_refused(r, status, words):
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert "\n" not in msg and words in msg, msg


@pytest.mark.parametrize("path, status, words", [
    ("../outside/secret", 403, "'..' is refused"),
    ("clip/../../outside/secret", 403, "'..' is refused"),
    ("/etc", 403, "absolute paths are refused"),
    ("escape", 403, "outside root 0"),
    ("nothing-here", 404, "no such file"),
    ("", 400, "non-empty string"),
])
def test_paths_outside_a_root_are_refused(encoder, roots, path, status, words):
    c = client(encoder, roots)
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": path}), status, words)
    assert c.get("/api/health").json()["ok"]


def test_absolute_path_to_a_real_folder_and_a_bad_root_index_are_refused(encoder, roots):
    c = client(encoder, roots)
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": str(roots / "clip")}), 403, "absolute")
    assert_refused(c.post("/api/sessions", json={"root": 3, "path": "clip"}), 400, "root must be an index")
    assert_refused(c.post("/api/sessions", json={"root": "0", "path": "clip"}), 400, "root must be an index")


def test_listing_skips_symlinks_that_leave_and_opens_those_that_stay(encoder, roots):
    c = client(encoder, roots)
    paths = {s["path"] for s in c.get("/api/sources").json()["sources"]}
    assert {"clip", "long"} <= paths and not {"escape", "escape/secret", "film.mp4"} & paths
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": "film.mp4"}), 403, "outside root 0")
    r = c.post("/api/sessions", json={"root": 0, "path": "alias"})
    assert r.status_code == 202, r.text
    assert wait_ready(c, r.json()["id"])["status"] == "ready"


def test_oversized_bodies_and_long_videos_are_refused(encoder, roots):
    c = client(encoder, roots, max_upload_mb=0.01)  # 10 KiB
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": "long"}), 413, "more than the limit of 6")
    r = c.post("/api/sessions", json={"root": 0, "path": "long", "frames": 6})
    assert r.status_code == 202, r.text  # its first frames can be opened
    sid = r.json()["id"]
    assert wait_ready(c, sid)["num_frames"] == 6
    big = np.random.default_rng(1).integers(0, 2, (48, 64), dtype=np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(big).resize((480, 640)).save(buf, format="PNG", compress_level=0)
    assert len(buf.getvalue()) > 10 * 1024
    assert_refused(c.post(f"/api/sessions/{sid}/mask/0", content=buf.getvalue(), headers={"content-type": "image/png"}),
                   413, "over the limit")
    assert_refused(c.post(f"/api/sessions/{sid}/annotate", content=b"[" * 20000,
                          headers={"content-type": "application/json"}), 413, "over the limit")
    assert c.get("/api/health").json()["ok"]


def test_unknown_sessions_are_404(encoder, roots):
    c = client(encoder, roots)
    for method, url in [("GET", "/api/sessions/nope"), ("POST", "/api/sessions/nope/annotate"),
                        ("GET", "/api/sessions/nope/mask/0.png"), ("GET", "/api/sessions/nope/export/masks.zip"),
                        ("POST", "/api/sessions/nope/undo"), ("DELETE", "/api/sessions/nope")]:
        assert_refused(c.request(method, url, json={}), 404, "no such session")
    assert c.get("/api/health").json()["ok"]


@pytest.mark.parametrize("body, words", [
    ({"frame": 0, "scribbles": {"1": [[1, 2, 3]]}}, "must be [N, 2]"),
    (b'{"frame": 0, "scribbles": {"1": [[[1, NaN]]]}}', "non-finite"),
    ({"frame": 0, "scribbles": {"x": [[[1, 2]]]}}, "not an integer"),
    ({"frame": 0, "scribbles": {"7": [[[1, 2]]]}}, "not an object of the session"),
    ({"frame": 0, "scribbles": {"255": [[[1, 2]]]}}, "not allowed"),
    ({"frame": 0, "scribbles": {"1": "abc"}}, "must be a list"),
    ({"frame": 0, "scribbles": [[1, 2]]}, "must be an object"),
    ({"frame": 0, "scribbles": {"1": []}}, "no stroke"),
    ({"frame": 9, "scribbles": {"1": [[[1, 2]]]}}, "frame must be an integer in 0..4"),
    ({"frame": 0, "scribbles": {"1": [[[1, 2]]]}, "width": 0}, "width must be an integer"),
])
def test_malformed_strokes_are_400_and_the_session_still_works(encoder, roots, body, words):
    c = client(encoder, roots)
    sid = c.post("/api/sessions", json={"root": 0, "path": "clip"}).json()["id"]
    wait_ready(c, sid)
    if isinstance(body, bytes):
        r = c.post(f"/api/sessions/{sid}/annotate", content=body, headers={"content-type": "application/json"})
    else:
        r = c.post(f"/api/sessions/{sid}/annotate", json=body)
    assert_refused(r, 400, words)
    assert_refused(c.post(f"/api/sessions/{sid}/annotate", content=b"{not json",
                          headers={"content-type": "application/json"}), 400, "not valid JSON")
    good = {"frame": 1, "scribbles": {"1": [[[30, 20], [34, 24]]], "0": [[[2, 2], [2, 40]]]}, "width": 3}
    assert c.post(f"/api/sessions/{sid}/annotate", json=good).status_code == 202
    st = wait_ready(c, sid)
    assert st["message"] == "" and st["annotated_frames"] == [1]


def test_first_annotation_without_background_is_reported_not_fatal(encoder, roots):
    c = client(encoder, roots)
    sid = c.post("/api/sessions", json={"root": 0, "path": "clip"}).json()["id"]
    wait_ready(c, sid)
    assert c.post(f"/api/sessions/{sid}/annotate", json={"frame": 0, "scribbles": {"1": [[[5, 5]]]}}).status_code == 202
    st = wait_ready(c, sid)
    assert st["status"] == "ready" and "background" in st["message"] and st["annotated_frames"] == []
    assert_refused(c.post(f"/api/sessions/{sid}/undo"), 400, "nothing to undo")


def test_session_ids_are_unguessable_bounded_and_freed_when_idle(encoder, roots):
    c = client(encoder, roots, max_sessions=2, idle_seconds=0.5)
    ids = [c.post("/api/sessions", json={"root": 0, "path": "clip"}).json()["id"] for _ in range(2)]
    assert len(set(ids)) == 2 and all(len(i) >= 32 for i in ids)
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": "clip"}), 503, "--max-sessions")
    for sid in ids:
        wait_ready(c, sid)
    time.sleep(0.7)
    assert_refused(c.get(f"/api/sessions/{ids[0]}"), 404, "no such session")
    assert c.post("/api/sessions", json={"root": 0, "path": "clip"}).status_code == 202


def test_a_session_file_of_another_model_or_settings_is_refused(encoder, roots):
    c = client(encoder, roots)
    sid = c.post("/api/sessions", json={"root": 0, "path": "clip"}).json()["id"]
    wait_ready(c, sid)
    doc = c.get(f"/api/sessions/{sid}/export/session.json").json()
    assert_refused(c.post("/api/sessions/load", json={**doc, "model": {"name": "other"}}), 422, "made with model")
    settings = {**doc["settings"], "feature_dtype": "float32"}
    assert_refused(c.post("/api/sessions/load", json={**doc, "settings": settings}), 422, "other settings")
    assert_refused(c.post("/api/sessions/load", json={**doc, "format": "x"}), 400, "not a session file")
    bad = {**doc, "interactions": [{"kind": "strokes", "frame": 99, "scribbles": {}}]}
    assert_refused(c.post("/api/sessions/load", json=bad), 400, "frame must be")
    assert_refused(c.post("/api/sessions/load", json={**doc, "source": {"root": 0, "path": "../x"}}), 403, "'..'")


def test_undo_restores_the_masks_and_the_history(encoder, roots):
    c = client(encoder, roots)
    sid = c.post("/api/sessions", json={"root": 0, "path": "clip"}).json()["id"]
    wait_ready(c, sid)
    c.post(f"/api/sessions/{sid}/annotate", json={"frame": 0, "scribbles": {"1": [[[30, 20], [40, 25]]],
                                                                            "0": [[[2, 2], [2, 40]]]}, "width": 4})
    wait_ready(c, sid)
    first = c.get(f"/api/sessions/{sid}/export/masks.zip").content
    r = c.post(f"/api/sessions/{sid}/objects")
    assert r.json()["id"] == 2
    wait_ready(c, sid)
    c.post(f"/api/sessions/{sid}/annotate", json={"frame": 3, "scribbles": {"2": [[[10, 10], [14, 30]]]}, "width": 6})
    st = wait_ready(c, sid)
    assert st["object_ids"] == [1, 2] and st["annotated_frames"] == [0, 3]
    assert c.get(f"/api/sessions/{sid}/export/masks.zip").content != first
    for _ in range(2):
        assert c.post(f"/api/sessions/{sid}/undo").status_code == 202
        st = wait_ready(c, sid)
    assert st["object_ids"] == [1] and st["annotated_frames"] == [0] and st["interactions"] == 1
    assert c.get(f"/api/sessions/{sid}/export/masks.zip").content == first
    doc = c.get(f"/api/sessions/{sid}/export/session.json").json()
    loaded = c.post("/api/sessions/load", json=doc).json()["id"]
    st = wait_ready(c, loaded)
    assert st["interactions"] == 1 and st["can_undo"]  # a replayed session can be undone too
    assert c.get(f"/api/sessions/{loaded}/export/masks.zip").content == first


def test_a_video_file_opens_and_its_length_is_limited(encoder, roots):
    import cv2
    rng = np.random.default_rng(2)
    w = cv2.VideoWriter(str(roots / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for _ in range(8):
        w.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    w.release()
    c = client(encoder, roots)
    listed = {s["path"]: s["kind"] for s in c.get("/api/sources").json()["sources"]}
    assert listed["clip.mp4"] == "video"
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": "clip.mp4"}), 413, "more than 6 frames")
    r = c.post("/api/sessions", json={"root": 0, "path": "clip.mp4", "frames": 4})
    assert r.status_code == 202, r.text
    st = wait_ready(c, r.json()["id"])
    assert st["status"] == "ready" and st["num_frames"] == 4 and st["size"] == [48, 64]
    (roots / "notes.txt").write_text("x")
    assert_refused(c.post("/api/sessions", json={"root": 0, "path": "notes.txt"}), 400, "not a video file")


def test_the_command_line_warns_off_loopback_and_refuses_a_missing_root(tmp_path):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "label_prop.app", "--threads", "1", "--precision", "float32", "--port", "0"]
    bad = subprocess.run(cmd + ["--root", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a folder" in bad.stderr
    p = subprocess.Popen(cmd + ["--root", str(tmp_path), "--host", "0.0.0.0"], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stderr:
            lines.append(line)
            if line.startswith("serving"):
                break
        text = "".join(lines)
        assert "reachable from other machines" in text and "serving random" in text, text
    finally:
        p.terminate()
        p.wait(30)
