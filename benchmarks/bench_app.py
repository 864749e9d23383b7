"""Benchmark: how long a person waits in the browser app, measured through its HTTP API.

    python benchmarks/bench_app.py [--sequence blackswan] [--frames 50] [--repeats 3]
        [--input-size 240] [--n-context 20] [--threads 1] [--model random]

The app (:mod:`label_prop.app`) is served by uvicorn on a free loopback port in this process, and
a client in another thread does what the page does, with the local robot's strokes
(:func:`label_prop.interactive.robot.robot_scribbles`) in place of a person's: it opens the first
``--frames`` frames of a DAVIS-2016 sequence (``$HVC_DATA_ROOT/DAVIS2016``), annotates frame 0,
then corrects the recommended frame, undoes that, and exports the masks and the overlay video.
Reported per step (median over ``--repeats`` sessions, each a fresh one, seconds): open until
frame 0's JPEG is received (the page can draw it), open until the features are ready, each
interaction from the request until the state says ready and the current frame's mask PNG is
received (what the page repaints first), undo, and each export; then the resident memory a
session adds (VmRSS after it, less before the first one) and its cached features. The machine
(CPU model and flags, torch threads) is printed first. A browser adds its drawing time, which is
not measured here.
"""
from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_helpers import rss_kib  # noqa: E402  (the sibling module)
from hvc.hardware import describe  # noqa: E402
from label_prop.app.config import AppConfig  # noqa: E402
from label_prop.app.server import create_app  # noqa: E402
from label_prop.app.store import decode_mask  # noqa: E402
from label_prop.config import PropagationConfig  # noqa: E402
from label_prop.data.io import read_mask  # noqa: E402
from label_prop.data.plans import data_root  # noqa: E402
from label_prop.interactive.robot import robot_scribbles  # noqa: E402
from label_prop.interactive.scribbles import scribbles_to_json  # noqa: E402
from label_prop.interactive.session import InteractiveConfig  # noqa: E402
from label_prop.propagation.features import build_encoder  # noqa: E402


def rss_mib() -> float:
    """Resident memory of this process now, MiB (``_train_helpers.rss_kib``)."""
    return rss_kib("VmRSS") / 1024


class Client:
    def __init__(self, base: str):
        self.base = base

    def call(self, method: str, path: str, body=None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, r.read()

    def json(self, method: str, path: str, body=None) -> dict:
        return json.loads(self.call(method, path, body)[1])

    def wait(self, sid: str) -> dict:
        while True:
            st = self.json("GET", f"/api/sessions/{sid}")
            if st["status"] not in ("loading", "busy"):
                if st["message"]:
                    raise RuntimeError(st["message"])
                return st
            time.sleep(0.02)


def one_session(c: Client, seq: str, frames: int, gt: np.ndarray) -> dict:
    out = {}
    t0 = time.perf_counter()
    st = c.json("POST", "/api/sessions", {"root": 0, "path": f"JPEGImages/480p/{seq}", "frames": frames})
    sid = st["id"]
    c.call("GET", f"/api/sessions/{sid}/frame/0.jpg")
    out["open -> frame 0 shown"] = time.perf_counter() - t0
    c.wait(sid)
    out["open -> features ready"] = time.perf_counter() - t0

    def interact(name: str, frame: int, scribbles: dict) -> dict:
        t = time.perf_counter()
        c.json("POST", f"/api/sessions/{sid}/annotate", {"frame": frame, "scribbles": scribbles, "width": 3})
        st = c.wait(sid)
        c.call("GET", f"/api/sessions/{sid}/mask/{frame}.png?v={st['version']}")
        out[name] = time.perf_counter() - t
        out[name + " frames"] = len(st["changed_frames"])
        return st

    st = interact("1st interaction (frame 0)", 0, scribbles_to_json(robot_scribbles(None, gt[0], [0, 1])))
    r = st["recommended"]
    z = zipfile.ZipFile(io.BytesIO(c.call("GET", f"/api/sessions/{sid}/export/masks.zip")[1]))
    pred = decode_mask(z.read(sorted(z.namelist())[r]), gt.shape[1:])
    fix = robot_scribbles(pred, gt[r], [0, 1]) or {1: [np.array([[5.0, 5.0]])]}
    interact("2nd interaction (recommended frame)", r, scribbles_to_json(fix))
    t = time.perf_counter()
    c.json("POST", f"/api/sessions/{sid}/undo")
    c.wait(sid)
    out["undo"] = time.perf_counter() - t
    for what in ("masks.zip", "overlay.mp4", "session.json"):
        t = time.perf_counter()
        c.call("GET", f"/api/sessions/{sid}/export/{what}")
        out[f"export {what}"] = time.perf_counter() - t
    out["sid"] = sid
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--sequence", default="blackswan", help="DAVIS-2016 val sequence (default blackswan)")
    p.add_argument("--frames", type=int, default=50, help="its first N frames (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="sessions timed, median reported (default 3)")
    p.add_argument("--input-size", type=int, default=240, help="the app's default (240)")
    p.add_argument("--n-context", type=int, default=20, help="the app's default (20)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--model", default="random", help="encoder (default random)")
    p.add_argument("--precision", default="float32", help="encoder precision (default float32)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    hw = describe("cpu")
    print(f"# CPU {hw['cpu']}, flags {' '.join(hw['cpu_flags']) or '(none of interest)'}, {args.threads} torch threads")
    root = data_root(None) / "DAVIS2016"
    paths = sorted((root / "JPEGImages/480p" / args.sequence).glob("*.jpg"))[:args.frames]
    gt = np.stack([read_mask(root / "Annotations/480p" / args.sequence / f"{q.stem}.png", binary=True) for q in paths])
    config = InteractiveConfig(propagation=PropagationConfig(input_size=args.input_size, n_context=args.n_context))
    encoder = build_encoder(args.model, precision=args.precision)
    app = create_app(encoder, {"name": args.model}, config,
                     AppConfig(roots=(root,), max_sessions=args.repeats + 1, max_frames=max(args.frames, 1)))
    import uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    c = Client(f"http://127.0.0.1:{port}")
    base = rss_mib()
    rows = []
    for i in range(args.repeats):
        rows.append(one_session(c, args.sequence, args.frames, gt))
        rows[-1]["rss"] = rss_mib() - base
        print(f"# session {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()
                                                if isinstance(v, float) and k != "rss"), file=sys.stderr)
    s0 = app.state.store.get(rows[0]["sid"]).session
    print(f"{args.sequence}, {len(paths)} frames of {gt.shape[2]}x{gt.shape[1]}, model {args.model} ({args.precision}), "
          f"input size {args.input_size}, n-context {args.n_context}, {args.repeats} sessions")
    print("| step | seconds (median) | min | max |")
    print("|---|---|---|---|")
    for k in rows[0]:
        if k in ("sid", "rss") or k.endswith(" frames"):
            continue
        v = [r[k] for r in rows]
        extra = f" ({rows[0][k + ' frames']} frames recomputed)" if k + " frames" in rows[0] else ""
        print(f"| {k}{extra} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |")
    per = np.diff([0.0] + [r["rss"] for r in rows])
    print(f"resident memory added per session: {', '.join(f'{m:.0f}' for m in per)} MiB "
          f"(frames {sum(f.nbytes for f in s0.frames) / 2**20:.0f} MiB, cached features "
          f"{s0.feature_bytes_per_frame * s0.num_frames / 2**20:.1f} MiB)")
    srv.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
