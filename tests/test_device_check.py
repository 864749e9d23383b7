"""The prepared GPU check (scripts/device_check.sh): its smoke mode runs every stage end to end on
the CPU and writes the summary and files the GPU run will return; the packing script fits."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, require_data
from label_prop.propagation.features import build_encoder

MiB = 2 ** 20


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_device_check_refuses_missing_data(tmp_path, capsys):
    assert _load("device_check").main(["--data", str(tmp_path / "nothing")]) == 2
    assert "pack_device_data.sh" in capsys.readouterr().err


@pytest.fixture
def small_device_data(data_root, tmp_path):
    """The packed layout, small: 3 unlabeled videos and the first 6 frames of two DAVIS-2016 val
    sequences with their ground truth (symlinks to the shared data)."""
    src = require_data(data_root / "unlabeled-video", "unlabeled video")
    dav = require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    data = tmp_path / "device_data"
    jpegs = data / "unlabeled-video" / "JPEGImages"
    jpegs.mkdir(parents=True)
    for video in sorted((src / "JPEGImages").iterdir())[:3]:
        (jpegs / video.name).symlink_to(video, target_is_directory=True)
    seqs = {"car-shadow": 7, "motocross-jump": 6}
    (data / "DAVIS2016" / "ImageSets" / "2016").mkdir(parents=True)
    (data / "DAVIS2016" / "ImageSets" / "2016" / "val.txt").write_text("".join(f"{s}\n" for s in seqs))
    for seq, n in seqs.items():
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            (data / "DAVIS2016" / kind / "480p" / seq).mkdir(parents=True)
            for f in sorted((dav / kind / "480p" / seq).glob(f"*.{ext}"))[:n]:
                (data / "DAVIS2016" / kind / "480p" / seq / f.name).symlink_to(f)
    return data


@pytest.mark.data
@pytest.mark.slow
def test_device_check_smoke_runs_every_stage(small_device_data, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "scripts/device_check.sh", "--smoke", "--data", str(small_device_data),
                           "--work", str(tmp_path / "work")], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    st = s["stages"]
    assert s["mode"] == "smoke" and s["device"] == "cpu" and s["torch"] == torch.__version__
    assert {k: v["status"] for k, v in st.items()} == {
        "env": "ok", "tests": "ok", "train": "ok", "export": "ok", "score": "ok", "bench": "ok",
        "score_random": "skipped"}
    assert st["tests"]["skipped"] >= 1 and "tests/test_gpu_inference.py" in st["tests"]["files"]  # cuda tests skip here
    tr = st["train"]
    assert tr["steps"] >= 3 and tr["stop_at"] >= 4 and math.isfinite(tr["loss_last"]) and tr["batch_size"] == 4
    assert tr["calibration"]["rc"] == 0 and tr["main"]["rc"] == 0  # the resumed run ran
    sc = st["score"]
    assert sc["model"] == "device-check" and sc["sequences"] == ["motocross-jump"] and sc["frames"] == 6
    assert 0 <= sc["J&F-Mean"] <= 1 and sc["frames_per_s"] > 0 and sc["input_size"] == 96
    assert st["bench"]["engine"][0]["argmax_agreement"] == 1.0 and st["bench"]["features"][0]["precision"] == "float32"
    assert all(v["seconds"] <= v["box_s"] + 20 for v in st.values())
    files = {f.name: f.stat().st_size for f in out.iterdir()}
    assert set(files) == {"summary.json", "train_log.csv", "train_run.json", "encoder.pth", "per-sequence_results.csv",
                          "bench.json", "device_check.log"}
    assert len(files) <= 8 and max(files.values()) < 16 * MiB
    enc = build_encoder(str(out / "encoder.pth"))  # the returned encoder scores on the CPU
    assert enc(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 256, 4, 4)
    assert "device check (smoke" in proc.stdout and "wrote 7 files" in proc.stdout


@pytest.mark.data
def test_pack_device_data_fits(data_root, tmp_path):
    """The packing script on a subset (one video's frames, one sequence): layout and sizes printed."""
    src = require_data(data_root / "unlabeled-video", "unlabeled video")
    require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    root = tmp_path / "shared"
    video = sorted((src / "JPEGImages").iterdir())[0]
    (root / "unlabeled-video" / "JPEGImages").mkdir(parents=True)
    (root / "unlabeled-video" / "JPEGImages" / video.name).symlink_to(video, target_is_directory=True)
    (root / "DAVIS2016").symlink_to(data_root / "DAVIS2016", target_is_directory=True)
    out = tmp_path / "packed"
    proc = subprocess.run(["bash", "scripts/pack_device_data.sh", "--data-root", str(root), "--out", str(out),
                           "--sequences", "motocross-jump"], cwd=REPO_ROOT, env=dict(os.environ, PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n = len(list(video.glob("*.jpg")))
    packed = sorted((out / "unlabeled-video" / "JPEGImages" / video.name).glob("*.jpg"))
    assert len(packed) == n
    assert sum(p.stat().st_size for p in packed) < sum(p.stat().st_size for p in video.glob("*.jpg"))
    assert (out / "DAVIS2016" / "ImageSets" / "2016" / "val.txt").read_text() == "motocross-jump\n"
    assert len(list((out / "DAVIS2016" / "Annotations" / "480p" / "motocross-jump").glob("*.png"))) == 40
    assert "of 64 MiB" in proc.stdout and (out / "README.txt").is_file()
    assert not (tmp_path / "packed.partial").exists()
    # too small a limit: exit 1 with the reason
    proc = subprocess.run(["bash", "scripts/pack_device_data.sh", "--data-root", str(root), "--out", str(out),
                           "--sequences", "motocross-jump", "--limit-mib", "1"], cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "--limit-mib" in proc.stderr
    assert len(list((out / "unlabeled-video" / "JPEGImages" / video.name).glob("*.jpg"))) == n  # the old folder kept
    assert not (tmp_path / "packed.partial").exists()
