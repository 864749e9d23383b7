"""End-to-end CPU training on the real unlabeled video (tiny: batch 2, 64 x 64): checkpoint,
exact resume, output-dir protection, export (docs/method.md, "Training data" to "Checkpoints and encoder files")."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from hvc.checkpoint import load_checkpoint
from hvc.export import main as export_main
from hvc.train import main as train_main
from label_prop.propagation.features import build_encoder

from conftest import require_data

pytestmark = pytest.mark.data

TINY = ["--mode", "video", "--batch-size", "2", "--img-size", "64", "--seed", "7", "--workers", "0",
        "--threads", "1", "--log-every", "1", "--ckpt-every", "100", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def video_root(data_root):
    return require_data(data_root / "unlabeled-video" / "JPEGImages", "unlabeled video").parent


@pytest.fixture(scope="module")
def runs(video_root, tmp_path_factory):
    """An uninterrupted 5-step run, and a run stopped at step 3 then resumed to step 5."""
    base = tmp_path_factory.mktemp("runs")
    full, split = base / "full", base / "split"
    common = ["--data", str(video_root), "--steps", "5", *TINY]
    assert train_main([*common, "--output-dir", str(full)]) == 0
    assert train_main([*common, "--output-dir", str(split), "--stop-at", "3"]) == 0
    stopped = load_checkpoint(split / "checkpoint.pth")
    assert train_main([*common, "--output-dir", str(split), "--resume", "auto"]) == 0
    return full, split, stopped, common


def test_five_step_run_writes_checkpoint_and_log(runs):
    full, _, _, _ = runs
    ckpt = load_checkpoint(full / "checkpoint.pth")
    assert ckpt["step"] == 5 and ckpt["total_steps"] == 5
    assert int(ckpt["model"]["ema_step"]) == 5 and int(ckpt["model"]["ema_total_steps"]) == 5
    assert ckpt["args"]["batch_size"] == 2 and ckpt["optimizer"]["state"]
    log = pd.read_csv(full / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5]
    assert log["loss"].between(-8, 8).all() and log["images_per_s"].gt(0).all()
    assert log["momentum"].iloc[0] == pytest.approx(0.99)
    assert (full / "run.json").is_file() and (full / "ytvos.csv").is_file()
    assert not list(full.glob(".*tmp*"))


def test_resumed_run_matches_uninterrupted_run(runs):
    full, split, stopped, _ = runs
    assert stopped["step"] == 3 and int(stopped["model"]["ema_step"]) == 3
    assert stopped["sampler"] == {"seed": 7, "epoch": 0, "start": 6}
    a, b = pd.read_csv(full / "log.csv"), pd.read_csv(split / "log.csv")
    assert list(b["step"]) == [1, 2, 3, 4, 5]
    for col in ("loss", "spatial", "temporal", "num_pos", "momentum"):
        assert b[col].tolist() == pytest.approx(a[col].tolist(), rel=1e-5, abs=1e-6), col
    assert load_checkpoint(split / "checkpoint.pth")["step"] == 5
    # and the final weights agree
    wa = load_checkpoint(full / "checkpoint.pth")["model"]
    wb = load_checkpoint(split / "checkpoint.pth")["model"]
    for k in ("online_encoder.conv1.weight", "target_encoder.layer4.1.conv2.weight", "flow.conv2.weight"):
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6), k


def test_refuses_to_overwrite_another_run(runs, capsys):
    full, _, _, common = runs
    before = (full / "log.csv").read_text()
    assert train_main([*common, "--output-dir", str(full)]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (full / "log.csv").read_text() == before
    # resuming with a different configuration (here --batch-size 3 instead of 2) is refused too
    assert train_main([*common[:-len(TINY)], *TINY[:3], "3", *TINY[4:], "--output-dir", str(full),
                       "--resume", "auto"]) == 2
    assert "different run configuration" in capsys.readouterr().err
    # so is a different --lr (the optimiser state would silently keep the checkpoint's)
    assert train_main([*common, "--lr", "0.5", "--output-dir", str(full), "--resume", "auto"]) == 2
    assert "--lr: checkpoint" in capsys.readouterr().err


def test_export_of_trained_run_loads_strictly(runs, tmp_path):
    full, _, _, _ = runs
    out = tmp_path / "hvc-tiny.pth"
    assert export_main([str(full / "checkpoint.pth"), str(out)]) == 0
    enc = build_encoder(str(out))
    feats = enc(torch.randint(0, 256, (1, 3, 48, 64), dtype=torch.uint8))
    assert feats.shape == (1, 256, 6, 8) and torch.isfinite(feats).all()
    assert torch.load(out, weights_only=True)["meta"]["step"] == 5


def write_video_frames(root, videos=2, frames=3, size=(40, 32)):
    """Tiny random JPEG videos in the YouTube-VOS layout, built at test time."""
    import numpy as np
    from PIL import Image

    for v in range(videos):
        folder = root / "JPEGImages" / f"v{v}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            arr = np.random.default_rng(100 * v + k).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{k:05d}.jpg", quality=90)
    return root


@pytest.mark.parametrize("paper", [True, False])
def test_start_line_and_cpu_warning(tmp_path, capsys, paper):
    """One start line (device, dtype, world size, data, steps, batch, crop); no duration is
    estimated before steps have been timed on this machine (the measured ETA follows them)."""
    data = write_video_frames(tmp_path / "data", videos=6, frames=70, size=(16, 16))
    flags = (["--batch-size", "128", "--img-size", "256"] if paper
             else ["--batch-size", "4", "--steps", "3", "--img-size", "64"])
    assert train_main(["--data", str(data), "--output-dir", str(tmp_path / "o"), "--device", "cpu", "--stop-at", "0",
                       "--no-progress", "--no-tensorboard", *flags]) == 0
    err = capsys.readouterr().err
    start = [line for line in err.splitlines() if line.startswith("hvc.train: device cpu")]
    assert len(start) == 1, err
    for part in ("dtype float32", "world size 1", "data 420 frames", "420 items per epoch",
                 "60 steps (20 epochs" if paper else "3 steps", "batch 128" if paper else "batch 4",
                 "crop 256 px" if paper else "crop 64 px"):
        assert part in start[0], (part, start[0])
    assert not [line for line in err.splitlines() if " h " in line or "ETA" in line], err


def test_snapshots_are_checkpoints_the_export_takes(tmp_path, capsys):
    """--snapshot-steps keeps step-XXXXX.pth copies; --snapshot-every-min by training time; both
    are training checkpoints (loadable, exportable); resuming refuses another --crop-scale."""
    data = write_video_frames(tmp_path / "data", videos=2, frames=4, size=(24, 20))
    small = ["--data", str(data), "--batch-size", "2", "--img-size", "16", "--workers", "0", "--threads", "1",
             "--no-progress", "--no-tensorboard", "--steps", "4"]
    out = tmp_path / "run"
    assert train_main([*small, "--output-dir", str(out), "--snapshot-steps", "1,3,9", "--crop-scale", "0.2", "1"]) == 0
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["step-00001.pth", "step-00003.pth"]
    snap = load_checkpoint(out / "snapshots" / "step-00003.pth")
    assert snap["step"] == 3 and snap["args"]["crop_scale"] == [0.2, 1.0] and snap["world_size"] == 1
    assert 0 < snap["train_time_s"] <= load_checkpoint(out / "checkpoint.pth")["train_time_s"]
    enc = tmp_path / "enc.pth"
    assert export_main([str(out / "snapshots" / "step-00001.pth"), str(enc)]) == 0
    assert torch.load(enc, weights_only=True)["meta"]["step"] == 1
    run = json.loads((out / "run.json").read_text())
    assert run["result"]["step"] == 4 and run["result"]["peak_mem_mib"] > 0 and run["world_size"] == 1
    assert run["result"]["images_per_s_median"] > 0 and run["precision"] == "float32"
    log = pd.read_csv(out / "log.csv")
    assert log["peak_mem_mib"].gt(0).all() and list(log["step"]) == [4]
    capsys.readouterr()
    assert train_main([*small, "--output-dir", str(out), "--resume", "auto", "--steps", "4"]) == 2
    assert "--crop-scale: checkpoint [0.2, 1.0] vs now [0.0, 1.0]" in capsys.readouterr().err
    # every 1e-6 minutes of training: each step is longer, so every step leaves a snapshot
    timed = tmp_path / "timed"
    assert train_main([*small, "--output-dir", str(timed), "--snapshot-every-min", "1e-6", "--steps", "2"]) == 0
    assert sorted(p.name for p in (timed / "snapshots").iterdir()) == ["step-00001.pth", "step-00002.pth"]


def test_log_written_by_an_older_version_gets_the_new_columns(tmp_path):
    from hvc.rundir import LOG_FIELDS, RunLogger

    (tmp_path / "log.csv").write_text("step,epoch,loss\n1,0.5,-1.0\n2,1.0,-2.0\n")
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log({k: 3 for k in LOG_FIELDS})
    logger.close()
    log = pd.read_csv(tmp_path / "log.csv")
    assert tuple(log.columns) == LOG_FIELDS and list(log["step"]) == [1, 2, 3]
    assert list(log["loss"]) == [-1.0, -2.0, 3] and log["peak_mem_mib"].isna().tolist() == [True, True, False]
