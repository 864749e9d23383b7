"""The benchmark runner (run_test.sh) end to end, on a synthetic layout and on real DAVIS data."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from conftest import REPO_ROOT, require_data
from label_prop import run as R
from label_prop.data.io import DAVIS_PALETTE, read_mask, write_palette_png
from label_prop.propagation.pipeline import first_frame_labels, labels_to_ids


def test_first_frame_labels_void_and_ids():
    mask = np.zeros((16, 16), np.uint8)
    mask[2:8, 2:8] = 3
    mask[10:14, 10:14] = 1
    mask[0, :] = 255  # void
    labels, ids = first_frame_labels(mask, (16, 16))
    assert ids.tolist() == [0, 1, 3]
    assert labels.shape == (3, 16, 16)
    assert torch.allclose(labels.sum(0), torch.ones(16, 16))
    assert labels[0, 0, 5] == 1  # void is background
    assert labels_to_ids(labels, (16, 16), ids).tolist() == np.where(mask == 255, 0, mask).tolist()
    with pytest.raises(ValueError, match=r"object ids \[2\]"):
        first_frame_labels(mask, (4, 4), object_ids=[2])


def test_labels_to_ids_upsamples_to_frame_size():
    labels = torch.zeros(2, 3, 4)
    labels[0] = 1
    labels[:, 1:, 2:] = torch.tensor([0.0, 1.0]).view(2, 1, 1)
    out = labels_to_ids(labels, (30, 37), np.array([0, 7], np.uint8))
    assert out.shape == (30, 37) and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) == {0, 7}
    assert out[-1, -1] == 7 and out[0, 0] == 0


@pytest.fixture
def tiny_davis(tmp_path):
    """A DAVIS-2017-layout benchmark of one 6-frame 72x96 sequence: two objects on an image."""
    root = tmp_path / "data"
    bench = root / "DAVIS2017-test-dev"
    img = skdata.astronaut()[::4, ::4][:72, :96]
    (bench / "ImageSets" / "2017").mkdir(parents=True)
    (bench / "ImageSets" / "2017" / "test-dev.txt").write_text("toy\n")
    for t in range(6):
        frame = np.roll(img, t, axis=1)
        (bench / "JPEGImages" / "480p" / "toy").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(bench / "JPEGImages" / "480p" / "toy" / f"{t:05d}.jpg", quality=95)
    mask = np.zeros((72, 96), np.uint8)
    mask[10:40, 20:50] = 1
    mask[45:70, 60:90] = 2
    mask[40:45, :] = 255
    write_palette_png(bench / "Annotations" / "480p" / "toy" / "00000.png", mask)
    return root, mask


def _run(argv):
    return R.main(argv)


def test_runner_writes_palette_pngs_and_record(tiny_davis, tmp_path, capsys):
    root, mask = tiny_davis
    res = tmp_path / "results"
    args = ["random", "davis17dev", "--data-root", str(root), "--results-dir", str(res),
            "--n-context", "3", "--save-overlays"]
    assert _run(args) == 0
    out = res / "random" / "davis17dev" / "toy"
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(6)]
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (96, 72)
            assert np.array_equal(np.asarray(im.getpalette()).reshape(-1, 3)[:4], DAVIS_PALETTE[:4])
        assert set(np.unique(read_mask(p)).tolist()) <= {0, 1, 2}
    assert np.array_equal(read_mask(pngs[0]), np.where(mask == 255, 0, mask))
    # a 1-pixel shift per frame: the random-feature propagation keeps both objects
    assert set(np.unique(read_mask(pngs[-1])).tolist()) == {0, 1, 2}
    assert len(list((res / "random" / "overlays" / "davis17dev" / "toy").glob("*.jpg"))) == 6
    rec = json.loads(next((res / "random" / "davis17dev").glob("run-*.json")).read_text())
    assert rec["complete"] and rec["frames"] == 6 and rec["args"]["n_context"] == 3
    assert "label_prop.run" in rec["command"] and rec["git_revision"]
    assert rec["sequences"]["toy"]["propagate_s_per_frame"] > 0
    assert not list((res / "random" / "davis17dev").glob(".*partial"))
    umask = os.umask(0)
    os.umask(umask)
    assert pngs[0].stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others, not mkstemp's 0600


def test_runner_never_overwrites_without_flag(tiny_davis, tmp_path, capsys):
    root, _ = tiny_davis
    res = tmp_path / "results"
    args = ["random", "davis17dev", "--data-root", str(root), "--results-dir", str(res), "--n-context", "1"]
    assert _run(args) == 0
    marker = res / "random" / "davis17dev" / "toy" / "00003.png"
    before = marker.read_bytes()
    assert _run(args) == 2  # a usage error: the command needs --overwrite
    err = capsys.readouterr().err
    assert "--overwrite" in err and "toy" in err
    assert marker.read_bytes() == before
    assert _run(args + ["--overwrite", "--seed", "1"]) == 0
    # overlays follow the same rule: with the masks gone, existing overlays still block a run
    ov_args = ["random", "davis17dev", "--data-root", str(root), "--results-dir", str(tmp_path / "other"),
               "--n-context", "1", "--save-overlays"]
    assert _run(ov_args) == 0
    (tmp_path / "other" / "random" / "davis17dev" / "toy").rename(tmp_path / "moved")
    assert _run(ov_args) == 2
    assert "overlays" in capsys.readouterr().err
    assert _run(ov_args + ["--overwrite"]) == 0


def test_runner_clear_errors(tiny_davis, tmp_path, capsys):
    root, _ = tiny_davis
    res = tmp_path / "results"
    assert _run(["nosuchmodel", "davis17dev", "--data-root", str(root), "--results-dir", str(res)]) == 1
    assert "nosuchmodel.pth" in capsys.readouterr().err
    assert _run(["random", "davis17dev", "--data-root", str(root), "--sequences", "nope"]) == 2  # usage
    assert "nope" in capsys.readouterr().err
    assert _run(["random", "davis17dev", "--data-root", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err
    first = root / "DAVIS2017-test-dev" / "JPEGImages" / "480p" / "toy" / "00000.jpg"
    first.write_bytes(b"not a jpeg")
    assert _run(["random", "davis17dev", "--data-root", str(root), "--results-dir", str(res)]) == 1
    assert "00000.jpg" in capsys.readouterr().err


def _env():
    env = dict(os.environ)
    env["PYTHON"] = sys.executable
    return env


@pytest.mark.data
def test_run_test_and_metrics_on_two_davis16_sequences(data_root, tmp_path):
    """run_test.sh + run_metrics.sh on two real DAVIS-2016 val sequences (short context for CI time)."""
    require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    res = tmp_path / "results"
    seqs = "blackswan,car-shadow"
    common = ["--sequences", seqs, "--data-root", str(data_root), "--results-dir", str(res)]
    subprocess.run(["bash", "scripts/run_test.sh", "random", "davis16", *common, "--n-context", "2"],
                   cwd=REPO_ROOT, env=_env(), check=True)
    out = subprocess.run(["bash", "scripts/run_metrics.sh", "random", "davis16", *common],
                         cwd=REPO_ROOT, env=_env(), check=True, capture_output=True, text=True)
    assert "J&F-Mean" in out.stdout
    g = pd.read_csv(res / "random" / "davis16" / "global_results.csv")
    s = pd.read_csv(res / "random" / "davis16" / "per-sequence_results.csv")
    assert list(g.columns) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert s["Sequence"].tolist() == ["blackswan_1", "car-shadow_1"]
    # propagation must track the object (an all-background or all-foreground output scores < 0.1)
    assert (s["J-Mean"] > 0.2).all()
    assert g["J&F-Mean"][0] == pytest.approx((g["J-Mean"][0] + g["F-Mean"][0]) / 2)
    for seq in seqs.split(","):
        n_frames = len(list((data_root / "DAVIS2016" / "JPEGImages" / "480p" / seq).glob("*.jpg")))
        assert len(list((res / "random" / "davis16" / seq).glob("*.png"))) == n_frames


@pytest.mark.data
def test_multi_object_davis17dev_sequence(data_root, tmp_path):
    """cats-car (911x480, 4 objects): palette PNGs of the frame size whose ids are frame 0's.

    The benchmark layout is rebuilt in tmp_path with symlinks to the first 8 real frames (CI time).
    """
    src = require_data(data_root / "DAVIS2017-test-dev", "DAVIS-2017 test-dev")
    root = tmp_path / "data"
    dst = root / "DAVIS2017-test-dev"
    (dst / "ImageSets" / "2017").mkdir(parents=True)
    (dst / "ImageSets" / "2017" / "test-dev.txt").write_text("cats-car\n")
    (dst / "JPEGImages" / "480p" / "cats-car").mkdir(parents=True)
    (dst / "Annotations" / "480p" / "cats-car").mkdir(parents=True)
    frames = sorted((src / "JPEGImages" / "480p" / "cats-car").glob("*.jpg"))[:8]
    for f in frames:
        (dst / "JPEGImages" / "480p" / "cats-car" / f.name).symlink_to(f)
    ann = src / "Annotations" / "480p" / "cats-car" / "00000.png"
    (dst / "Annotations" / "480p" / "cats-car" / "00000.png").symlink_to(ann)
    ids0 = set(np.unique(read_mask(ann)).tolist()) - {255}
    assert len(ids0 - {0}) >= 2

    res = tmp_path / "results"
    assert R.main(["random", "davis17dev", "--data-root", str(root), "--results-dir", str(res),
                   "--n-context", "4"]) == 0
    pngs = sorted((res / "random" / "davis17dev" / "cats-car").glob("*.png"))
    assert len(pngs) == 8
    seen = set()
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (911, 480)
        ids = set(np.unique(read_mask(p)).tolist())
        assert ids <= ids0
        seen |= ids
    assert seen == ids0
