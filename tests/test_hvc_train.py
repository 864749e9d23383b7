"""End-to-end CPU training on the real unlabeled video (tiny: batch 2, 64 x 64): checkpoint,
exact resume, output-dir protection, export (../shared/docs/HVC_METHOD.md sections 1-4)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from hvc.checkpoint import load_checkpoint
from hvc.export import main as export_main
from hvc.train import main as train_main
from label_prop.features import build_encoder

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
