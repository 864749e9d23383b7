"""Distributed training (torchrun / DDP) on CPU with gloo and 2 processes, on tiny frames built at
test time: a 3-step torchrun run, its checkpoint, an exact resume with the same world size, a
refused resume with another, and the first step's averaged gradients against one process
computing the same two half-batches (each half with its own BatchNorm statistics)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from hvc.checkpoint import load_checkpoint
from hvc.data import EpochSampler, VideoFrameDataset
from hvc.tables import NORMALIZATION
from hvc.model import HVCModel
from hvc.step import batch_to_device, forward_backward, make_loader, resolve_precision
from hvc.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
SEED, BATCH, SIZE = 3, 4, 32
RUN_FLAGS = ["--batch-size", str(BATCH), "--img-size", str(SIZE), "--seed", str(SEED), "--workers", "0",
             "--threads", "1", "--log-every", "1", "--no-progress", "--no-tensorboard", "--steps", "3",
             "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_frames(root: Path) -> Path:
    """Two videos of 6 random 40x32 JPEG frames, with their index (read by every rank)."""
    import numpy as np
    from PIL import Image

    for v in range(2):
        (root / "JPEGImages" / f"v{v}").mkdir(parents=True)
        for k in range(6):
            arr = np.random.default_rng(10 * v + k).integers(0, 256, (32, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "JPEGImages" / f"v{v}" / f"{k:05d}.jpg", quality=90)
    (root / "ytvos.csv").write_text("v0,0,6\nv1,0,6\n")
    return root


def first_step_grads(net, model: HVCModel, batch) -> dict:
    """Gradients of the trainer's first step (EMA update, forward, backward) on ``batch``."""
    precision = resolve_precision(torch.device("cpu"), True, "float16", True)  # float32, channels_last
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    model.momentum_update()
    out = forward_backward(net, *batch_to_device(batch, torch.device("cpu"), NORMALIZATION["imagenet"], True),
                           precision, scaler)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {"grads": grads, "loss": float(out["loss"].detach()), "index": batch["index"].clone()}


def new_model() -> HVCModel:
    torch.manual_seed(SEED)
    return HVCModel(total_steps=3).to(memory_format=torch.channels_last).train()


def _worker(rank: int, world: int, ports: list, data: str, out: str) -> None:
    """One rank: the gradient probe, then a run stopped at step 2 and its resume (hvc.train.main)."""
    import torch.distributed as dist

    from hvc.distributed import setup_distributed, wrap_model
    from hvc.launch import dist_context_from_env

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_PORT=str(ports[0]))
    ctx = dist_context_from_env()
    device = setup_distributed("cpu", ctx)
    ds = VideoFrameDataset(data, size=SIZE)
    sampler = EpochSampler(ds, SEED, rank=ctx.rank, world_size=ctx.world_size, batch_size=BATCH)
    sampler.set_epoch(0)
    batch = next(iter(make_loader(ds, sampler, 0, device)))
    model = new_model()
    torch.save(first_step_grads(wrap_model(model, device, ctx), model, batch), Path(out) / f"grads{rank}.pt")
    dist.destroy_process_group()
    split = [*RUN_FLAGS, "--data", data, "--output-dir", str(Path(out) / "split")]
    os.environ["MASTER_PORT"] = str(ports[1])
    assert train_main([*split, "--stop-at", "2"]) == 0
    os.environ["MASTER_PORT"] = str(ports[2])
    assert train_main([*split, "--resume", "auto"]) == 0


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """A 3-step torchrun run (2 processes), and the 2-process gradient probe + stopped/resumed run."""
    base = tmp_path_factory.mktemp("ddp")
    data = make_frames(base / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    full = base / "full"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "hvc.train", *RUN_FLAGS, "--data", str(data), "--output-dir", str(full)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    mp.spawn(_worker, args=(2, [free_port() for _ in range(3)], str(data), str(base)), nprocs=2, join=True)
    return base, data, full, res.stderr


def test_torchrun_three_steps_checkpoint_loads(ddp):
    base, _, full, stderr = ddp
    assert "world size 2" in stderr and "batch 4 (2 per rank)" in stderr
    ckpt = load_checkpoint(full / "checkpoint.pth")
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2 and int(ckpt["model"]["ema_step"]) == 3
    assert ckpt["replica_max_abs_diff"] == 0.0  # the EMA target (and all weights) agree on both ranks
    model = HVCModel(total_steps=3)
    model.load_state_dict(ckpt["model"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    log = pd.read_csv(full / "log.csv")
    assert list(log["step"]) == [1, 2, 3] and log["loss"].between(-8, 8).all()
    assert (full / "run.json").is_file() and '"world_size": 2' in (full / "run.json").read_text()
    assert not list(full.glob(".*tmp*"))


def test_resume_with_same_world_size_is_exact(ddp):
    base, _, full, _ = ddp
    a, b = load_checkpoint(full / "checkpoint.pth"), load_checkpoint(base / "split" / "checkpoint.pth")
    assert b["step"] == 3 and b["world_size"] == 2
    la, lb = pd.read_csv(full / "log.csv"), pd.read_csv(base / "split" / "log.csv")
    assert list(lb["step"]) == [1, 2, 3]
    for col in ("loss", "spatial", "temporal", "num_pos"):
        assert lb[col].tolist() == pytest.approx(la[col].tolist(), rel=1e-5, abs=1e-6), col
    for k in ("online_encoder.conv1.weight", "target_encoder.layer4.1.conv2.weight", "flow.conv2.weight"):
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6), k


def test_resume_with_another_world_size_is_refused(ddp, capsys):
    _, data, full, _ = ddp
    assert train_main([*RUN_FLAGS, "--data", str(data), "--output-dir", str(full), "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "world size: the checkpoint was trained by 2 process(es), this run has 1" in err


def test_first_step_gradients_are_the_mean_of_the_half_batches(ddp):
    """DDP's averaged gradients = the mean of one process's gradients on the two half-batches of
    the same global batch, each half a separate forward (own BatchNorm statistics)."""
    base, data, _, _ = ddp
    ranks = [torch.load(base / f"grads{r}.pt", weights_only=True) for r in range(2)]
    ds = VideoFrameDataset(data, size=SIZE)
    sampler = EpochSampler(ds, SEED, batch_size=BATCH)
    sampler.set_epoch(0)
    full = next(iter(make_loader(ds, sampler, 0, torch.device("cpu"))))
    halves = [{k: v[2 * h:2 * h + 2] for k, v in full.items()} for h in range(2)]
    refs = []
    for h, half in enumerate(halves):
        model = new_model()
        refs.append(first_step_grads(model, model, half))
        assert torch.equal(ranks[h]["index"], half["index"])  # rank h read half h of the global batch
        assert ranks[h]["loss"] == pytest.approx(refs[h]["loss"], rel=1e-5)
    assert refs[0]["loss"] != pytest.approx(refs[1]["loss"], rel=1e-3)  # the halves do differ
    names = list(refs[0]["grads"])
    assert names and set(names) == set(ranks[0]["grads"])
    for name in names:
        mean = (refs[0]["grads"][name] + refs[1]["grads"][name]) / 2
        scale = float(mean.abs().max()) + 1e-12
        for r in range(2):
            assert torch.allclose(ranks[r]["grads"][name], mean, rtol=1e-4, atol=1e-5 * scale), (r, name)
        assert not torch.allclose(refs[0]["grads"][name], mean, rtol=1e-3, atol=0) or float(mean.abs().max()) == 0
