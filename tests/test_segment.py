"""``python -m label_prop.segment`` on a video file (and a frame folder) written from real frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import require_data
from label_prop import segment as S
from label_prop.data.io import read_mask, write_palette_png

W, H, N = 112, 64, 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def real_video(data_root, tmp_path):
    """An mp4v video of N real blackswan frames (64x112) and a 2-object first-frame mask."""
    src = require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    files = sorted((src / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:N]
    frames = [np.asarray(Image.open(f).convert("RGB").resize((W, H), Image.BILINEAR)) for f in files]
    video = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    gt = Image.open(src / "Annotations" / "480p" / "blackswan" / "00000.png").convert("L").resize((W, H), Image.NEAREST)
    mask = (np.asarray(gt) > 0).astype(np.uint8) * 3
    mask[2:30, 2:40] = 5
    write_palette_png(tmp_path / "first.png", mask)
    return video, tmp_path / "first.png", frames, mask


@pytest.mark.data
def test_segment_video_file_pngs_overlay_and_objects(real_video, tmp_path, capsys):
    video, first, frames, mask = real_video
    out = tmp_path / "out"
    common = ["--model", "random", "--n-context", "3", "--radius", "4"]
    assert S.main([str(video), "--mask", str(first), "--out", str(out), *common]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(N)]
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (W, H)
    assert np.array_equal(read_mask(pngs[0]), mask)
    assert set(np.unique(read_mask(pngs[-1])).tolist()) == {0, 3, 5}
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == N and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == W
    cap.release()
    rec = json.loads((out / "segment.json").read_text())
    assert rec["frames"] == N and rec["peak_rss_mib"] > 0
    # existing output is not written into without --overwrite (a usage error)
    assert S.main([str(video), "--mask", str(first), "--out", str(out), *common]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --objects chooses the ids; a frame folder works too
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(frames[:4]):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    out2 = tmp_path / "out2"
    assert S.main([str(folder), "--mask", str(first), "--out", str(out2), "--objects", "5", "--no-overlay",
                   *common]) == 0
    assert len(list(out2.glob("*.png"))) == 4 and not (out2 / "overlay.mp4").exists()
    assert set().union(*(np.unique(read_mask(p)).tolist() for p in out2.glob("*.png"))) == {0, 5}


def test_segment_clear_errors(tmp_path, capsys):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    write_palette_png(tmp_path / "m.png", mask)
    assert S.main([str(tmp_path / "nope.mp4"), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o")]) == 1
    assert "nope.mp4" in capsys.readouterr().err
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert S.main([str(tmp_path / "bad.mp4"), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o")]) == 1
    assert "bad.mp4" in capsys.readouterr().err
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(folder / "0.png")
    assert S.main([str(folder), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o")]) == 1
    assert "m.png" in capsys.readouterr().err and not (tmp_path / "o").exists()
