"""The app end to end in a real browser: headless Chromium (Debian's package) driven by Playwright.

It serves the app on a free loopback port with the ``random`` encoder, opens the first frames of
a DAVIS-2016 sequence, draws a stroke on the object and one on the background with the mouse on
the page's canvas, applies, waits for the progress to finish, steps to a later frame and checks
that a mask is shown there; then the exported masks equal the Python API's for the same strokes,
their J beats an empty mask's, and loading the exported session file gives the same masks.
A screenshot of the page is written (``$HVC_APP_SCREENSHOT``, else the test's temporary folder).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import in_ci
from label_prop.data.io import read_frame, read_mask
from label_prop.evaluation.metrics import region_similarity

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from label_prop.app.config import AppConfig  # noqa: E402
from label_prop.app.server import create_app  # noqa: E402
from label_prop.config import PropagationConfig  # noqa: E402
from label_prop.interactive.session import InteractiveConfig, InteractiveSession  # noqa: E402
from label_prop.propagation.features import build_encoder  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]

SEQ, FRAMES, LATER = "blackswan", 8, 6
CONFIG = InteractiveConfig(propagation=PropagationConfig(input_size=240, n_context=20))


def chromium() -> str:
    path = os.environ.get("HVC_CHROMIUM") or shutil.which("chromium")
    if not path:
        msg = "no chromium binary (apt-get install -y chromium; or set HVC_CHROMIUM)"
        pytest.fail(msg) if in_ci() else pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("random", precision="float32")


@pytest.fixture
def server(encoder, data_root):
    app = create_app(encoder, {"name": "random", "seed": 0}, CONFIG, AppConfig(roots=(data_root / "DAVIS2016",)))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        timeout_graceful_shutdown=1))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    end = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < end and th.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    app.state.stopping = True
    srv.should_exit = True
    th.join(10)


def stroke_points(gt: np.ndarray) -> tuple[list, list]:
    """A horizontal stroke through the object's middle row (inside it), and a background stroke
    around it as a user draws one: its bounding box grown by 30 pixels (clipped to the frame);
    ``(x, y)`` frame pixels."""
    ys, xs = np.nonzero(gt)
    row = int(np.median(ys))
    inside = np.nonzero(gt[row])[0]
    lo, hi = np.percentile(inside, [25, 75])
    obj = [(float(x), float(row)) for x in np.linspace(lo, hi, 12)]
    h, w = gt.shape
    x0, x1 = max(xs.min() - 30, 5), min(xs.max() + 30, w - 6)
    y0, y1 = max(ys.min() - 30, 5), min(ys.max() + 30, h - 6)
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    bg = [(float(xa + (xb - xa) * f), float(ya + (yb - ya) * f))
          for (xa, ya), (xb, yb) in zip(corners, corners[1:]) for f in np.linspace(0, 1, 8, endpoint=False)]
    bg.append(bg[0])
    assert not gt[[int(y) for _, y in bg], [int(x) for x, _ in bg]].any()
    return obj, bg


def draw(page, box, size, points):
    sx, sy = box["width"] / size[1], box["height"] / size[0]
    to_page = [(box["x"] + x * sx, box["y"] + y * sy) for x, y in points]
    page.mouse.move(*to_page[0])
    page.mouse.down()
    for p in to_page[1:]:
        page.mouse.move(*p, steps=2)
    page.mouse.up()


def wait_ready(page, after_version: int, timeout_ms: int = 120_000) -> int:
    page.wait_for_function(f"document.body.dataset.status === 'ready' && +document.body.dataset.version > {after_version}",
                           timeout=timeout_ms)
    return int(page.evaluate("+document.body.dataset.version"))


def zip_masks(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        return {n: _png(z.read(n)) for n in sorted(z.namelist())}


def _png(data: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P"
        return np.asarray(im).copy()


def download(page, selector: str, folder: Path) -> Path:
    with page.expect_download() as d:
        page.click(selector)
    out = folder / d.value.suggested_filename
    d.value.save_as(out)
    return out


def test_scribble_apply_step_export_and_replay_in_chromium(server, encoder, data_root, tmp_path, one_torch_thread):
    url, app = server
    root = data_root / "DAVIS2016"
    frame_paths = sorted((root / "JPEGImages/480p" / SEQ).glob("*.jpg"))[:FRAMES]
    gt = np.stack([read_mask(root / "Annotations/480p" / SEQ / f"{p.stem}.png", binary=True) for p in frame_paths])
    size = gt.shape[1:]
    obj, bg = stroke_points(gt[0])

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#source option').length > 0")
            page.select_option("#source", json.dumps({"root": 0, "path": f"JPEGImages/480p/{SEQ}"},
                                                     separators=(",", ":")))
            page.fill("#first-frames", str(FRAMES))
            page.click("#open")
            version = wait_ready(page, -1)
            assert page.evaluate("hvcApp.st.num_frames") == FRAMES

            box = page.locator("#canvas").bounding_box()
            draw(page, box, size, obj)  # object 1 is the brush when a session opens
            page.click("#label-0")
            draw(page, box, size, bg)
            page.click("#apply")
            version = wait_ready(page, version)
            assert {"busy", "ready"} <= set(page.evaluate("[...hvcApp.seen]")), "no progress was streamed"
            assert page.evaluate("hvcApp.st.annotated_frames") == [0]
            assert page.evaluate("hvcApp.st.message") == ""

            page.click("header")
            for _ in range(LATER):
                page.keyboard.press("ArrowRight")
            assert page.evaluate("hvcApp.t") == LATER
            page.wait_for_function("hvcApp.maskPixelsShown() > 0 && hvcApp.frameShown()",
                                   timeout=30_000)  # (a) a mask is shown there, over the frame
            shot = Path(os.environ.get("HVC_APP_SCREENSHOT") or tmp_path / "app.png")
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            zip_path = download(page, "#export-masks", tmp_path)
            session_path = download(page, "#export-session", tmp_path)
            masks = zip_masks(zip_path)
            assert list(masks) == [f"{SEQ}/{p.stem}.png" for p in frame_paths]
            doc = json.loads(session_path.read_text())
            assert doc["model"] == {"name": "random", "seed": 0} and len(doc["interactions"]) == 1

            # (b) the Python API, given the same strokes on the same frames, gives the same masks
            session = InteractiveSession([read_frame(p) for p in frame_paths], encoder, (1,), CONFIG)
            for it in doc["interactions"]:
                session.annotate(it["frame"], it["scribbles"], width=it["width"])
            api = session.masks()
            for t, m in enumerate(masks.values()):
                np.testing.assert_array_equal(m, api[t], err_msg=f"frame {t}")
            drawn = doc["interactions"][0]["scribbles"]
            assert set(drawn) == {"0", "1"} and len(drawn["1"][0]) >= 10

            # (c) better than an empty mask against the ground truth
            j = np.mean([region_similarity(api[t] == 1, gt[t] == 1) for t in range(1, FRAMES)])
            j_empty = np.mean([region_similarity(np.zeros(size, bool), gt[t] == 1) for t in range(1, FRAMES)])
            assert j > j_empty + 0.2, (j, j_empty)

            # (d) the exported session, loaded again, replays to the same masks
            old = page.evaluate("hvcApp.sid")
            page.set_input_files("#load-file", str(session_path))
            page.wait_for_function(f"hvcApp.sid !== {json.dumps(old)}")
            wait_ready(page, -1)
            assert page.evaluate("hvcApp.st.interactions") == 1
            again = zip_masks(download(page, "#export-masks", tmp_path / "again"))
            assert list(again) == list(masks)
            for k in masks:
                np.testing.assert_array_equal(again[k], masks[k], err_msg=k)
            assert not errors, errors
        finally:
            browser.close()
