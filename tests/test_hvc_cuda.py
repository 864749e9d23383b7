"""CUDA training: AMP float16 (grad scaler) and bfloat16 at the paper's batch 128 / 256 px,
channels_last, the float32 loss under autocast, and DDP with NCCL on 2 GPUs. Marked ``cuda``;
skipped without a GPU (run them on a GPU machine: ``python -m pytest -q -m cuda -s``; ``-s``
shows the peak memory and images/s, which are also in each run's run.json)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from hvc.checkpoint import load_checkpoint
from hvc.model import HVCModel
from hvc.train import main as train_main

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """3 videos x 60 random 320x240 JPEG frames (180 items: one batch of 128 per epoch)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("frames")
    for v in range(3):
        (root / "JPEGImages" / f"v{v}").mkdir(parents=True)
        for k in range(60):
            arr = np.random.default_rng(100 * v + k).integers(0, 256, (240, 320, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "JPEGImages" / f"v{v}" / f"{k:05d}.jpg", quality=85)
    (root / "ytvos.csv").write_text("".join(f"v{v},0,60\n" for v in range(3)))
    return root


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_paper_batch_under_amp(frames, tmp_path, amp_dtype):
    """Batch 128 at 256 px, 3 steps under AMP: finite losses, checkpoint, peak memory and images/s
    in log.csv and run.json (printed; the target is within 10 GB)."""
    if amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    out = tmp_path / "run"
    assert train_main(["--data", str(frames), "--output-dir", str(out), "--batch-size", "128", "--img-size", "256",
                       "--steps", "3", "--log-every", "1", "--amp", "--amp-dtype", amp_dtype, "--device", "cuda",
                       "--no-progress", "--no-tensorboard"]) == 0
    log = pd.read_csv(out / "log.csv")
    assert list(log["step"]) == [1, 2, 3] and log["loss"].between(-8, 8).all()
    run = json.loads((out / "run.json").read_text())
    assert run["precision"] == {"float16": "fp16", "bfloat16": "bf16"}[amp_dtype] and run["gpu"]
    assert run["result"]["peak_mem_mib"] > 0 and run["result"]["images_per_s_median"] > 0
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    if amp_dtype == "float16":
        assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0
    print(f"\n{run['gpu']}: batch 128 x 256 px, {amp_dtype}: peak {run['result']['peak_mem_mib']:.0f} MiB, "
          f"{log['images_per_s'].iloc[1:].median():.1f} images/s (steps 2-3)")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_loss_is_float32_and_close_to_float32(dtype):
    """Same weights and batch: the loss under autocast is float32 and within 0.05 of float32's
    (loss range [-8, 8]); gradients are finite; channels_last gives the float32 loss."""
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    v1, v2 = (torch.randn(16, 3, 128, 128, generator=g).to(dev) for _ in range(2))
    box = torch.tensor([[0.1, 0.1, 0.8, 0.9]] * 16, device=dev)
    box2 = box + 0.02
    losses = {}
    for name, cast, cl in (("fp32", None, False), ("fp32-cl", None, True), ("amp", dtype, True)):
        torch.manual_seed(0)
        model = HVCModel(total_steps=10).to(dev).train()
        a, b = v1, v2
        if cl:
            model = model.to(memory_format=torch.channels_last)
            a, b = (t.contiguous(memory_format=torch.channels_last) for t in (v1, v2))
        with torch.autocast("cuda", dtype=cast or torch.float16, enabled=cast is not None):
            out = model(a, b, box, box2)
        assert out["loss"].dtype == torch.float32
        out["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.online_parameters() if p.grad is not None)
        losses[name] = float(out["loss"].detach())
    assert losses["fp32-cl"] == pytest.approx(losses["fp32"], abs=5e-3)  # TF32 convolutions allowed
    assert losses["amp"] == pytest.approx(losses["fp32"], abs=0.05)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("sync_bn", [False, True])
def test_torchrun_nccl_two_gpus(frames, tmp_path, sync_bn):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "hvc.train", "--data", str(frames), "--output-dir", str(out), "--batch-size", "64",
                          "--img-size", "128", "--steps", "3", "--log-every", "1", "--no-progress", "--no-tensorboard",
                          *(["--sync-bn"] if sync_bn else [])], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3 and ckpt["replica_max_abs_diff"] == 0.0
    model = HVCModel(total_steps=3)
    model.load_state_dict(ckpt["model"])  # SyncBatchNorm keeps the BatchNorm key names
