"""Training-step throughput and peak memory: our sparse hybrid loss vs the dense formulation.

Usage::

    python benchmarks/bench_train.py [--batch-size 8] [--img-size 128] [--steps 2] [--warmup 1]
                                     [--device auto|cpu|cuda] [--amp/--no-amp] [--threads 0]

One full training step is timed (EMA update, online and target forward passes, the symmetric
loss L(1,2) + L(2,1), backward, Adam step) on random crops with random but overlapping boxes,
for ``loss_impl="sparse"`` (:func:`hvc.loss.hybrid_loss`) and ``loss_impl="dense"`` (the
N x HW x HW formulation of ../shared/docs/HVC_METHOD.md section 3), in the same process,
with identical models, inputs and seeds. Data loading is not included.

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` during the measured steps, minus the memory
  allocated before them (model, optimiser state and inputs);
* CPU: the peak resident set size during the measured steps minus the RSS before them (freed
  heap memory is first handed back with glibc's ``malloc_trim``). The peak
  is reset between configurations through ``/proc/self/clear_refs`` (Linux); where that is not
  possible, the ``resource`` maxrss delta is reported, which only shows growth over the
  earlier high-water mark (so the second configuration may read 0).

A second measurement times the loss alone (forward + backward of L(1,2) + L(2,1) on random
normalised ``[B, 256, S/8, S/8]`` features; column ``loss_fwd_bwd_ms``), where the difference
between the two formulations is not hidden by the backbone.

``--loss-only`` runs just that (with its peak memory), e.g. at the paper's 256 x 256 crops
(32 x 32 grid) where a full CPU step would take minutes.

Prints a table (pandas) with images/s (frames per second; each frame is cropped twice), ms per
step, peak memory in MiB and the dense/sparse ratios.
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch.nn.functional as F  # noqa: E402

from hvc.data.crops import box_to_coords, sample_crop_box  # noqa: E402
from hvc.loss import dense_hybrid_loss, hybrid_loss  # noqa: E402
from hvc.model import HVCModel  # noqa: E402


def _rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB from /proc (0 when unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS deltas are not hidden by memory a
    previous configuration freed but the allocator kept."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0):
    """Random views ``[B, 3, S, S]`` and boxes ``[B, 4]`` drawn like the training crops
    (:func:`hvc.data.crops.sample_crop_box` on a 640 x 480 image, two independent crops)."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    v1 = torch.randn(batch, 3, size, size, generator=g)
    v2 = torch.randn(batch, 3, size, size, generator=g)
    c1 = torch.stack([box_to_coords(*sample_crop_box(640, 480, rng), 480, 640) for _ in range(batch)])
    c2 = torch.stack([box_to_coords(*sample_crop_box(640, 480, rng), 480, 640) for _ in range(batch)])
    return [t.to(device) for t in (v1, v2, c1, c2)]


def loss_only(loss_impl: str, batch: int, grid: int, device: torch.device, reps: int = 3) -> float:
    """Milliseconds of one loss forward + backward (both directions) on ``[B, 256, g, g]`` inputs
    (best of ``reps`` after one warm-up)."""
    fn = hybrid_loss if loss_impl == "sparse" else dense_hybrid_loss
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(batch, 256, grid, grid, generator=g), dim=1).to(device).requires_grad_(True)
    k = F.normalize(torch.randn(batch, 256, grid, grid, generator=g), dim=1).to(device)
    ff = F.normalize(torch.randn(batch, 2, grid, grid, generator=g), dim=1).to(device).requires_grad_(True)
    fb = F.normalize(torch.randn(batch, 2, grid, grid, generator=g), dim=1).to(device).requires_grad_(True)
    _, _, c1, c2 = make_batch(batch, 8, device, seed=2)
    times = []
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        (fn(q, k, ff, fb, c1, c2) + fn(q, k, fb, ff, c2, c1)).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1000 * min(times[1:])


def run_loss_only(loss_impl: str, args, device: torch.device) -> dict:
    """``--loss-only``: the loss alone (no backbone), with its peak memory (same methods; the
    peak includes the random input features and their gradients, about 4 x B x 258 x g x g floats)."""
    _malloc_trim()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _rss_kib("VmRSS")
        _reset_peak_rss()
    ms = loss_only(loss_impl, args.batch_size, args.img_size // 8, device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = (_rss_kib("VmHWM") - base) / 1024
    gc.collect()
    _malloc_trim()
    return {"loss_impl": loss_impl, "loss_fwd_bwd_ms": ms, "peak_mem_MiB": peak,
            "images_per_s": args.batch_size / (ms / 1000)}


def run_config(loss_impl: str, args, device: torch.device) -> dict:
    """Time ``args.steps`` training steps after ``args.warmup``; returns a result row."""
    torch.manual_seed(0)
    model = HVCModel(total_steps=1000, loss_impl=loss_impl).to(device).train()
    opt = torch.optim.Adam(model.online_parameters(), lr=1e-3)
    use_amp = args.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    v1, v2, c1, c2 = make_batch(args.batch_size, args.img_size, device)

    def step():
        model.momentum_update()
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            out = model(v1, v2, c1, c2)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        scaler.step(opt)
        scaler.update()
        return out

    for _ in range(args.warmup):
        step()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        method = "cuda max_memory_allocated"
    else:
        _malloc_trim()
        base_rss = _rss_kib("VmRSS")
        if _reset_peak_rss() and _rss_kib("VmHWM"):
            method = "peak RSS (VmHWM reset)"
            base_max = None
        else:
            method = "maxrss delta"
            base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in range(args.steps):
        out = step()
    loss = float(out["loss"].detach())  # synchronises
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    elif base_max is None:
        peak_mib = (_rss_kib("VmHWM") - base_rss) / 1024
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_max) / 1024
    row = {"loss_impl": loss_impl, "images_per_s": args.batch_size * args.steps / dt,
           "ms_per_step": 1000 * dt / args.steps, "peak_mem_MiB": peak_mib, "memory": method,
           "num_pos": float(out["num_pos"]), "final_loss": loss,
           "loss_fwd_bwd_ms": loss_only(loss_impl, args.batch_size, args.img_size // 8, device)}
    del model, opt, out
    gc.collect()
    _malloc_trim()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=8, help="frames per step")
    p.add_argument("--img-size", type=int, default=128, help="crop side, pixels (grid = img_size / 8)")
    p.add_argument("--steps", type=int, default=2, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="float16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    p.add_argument("--impls", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"],
                   help="configurations to run, in order")
    p.add_argument("--loss-only", action="store_true", help="time only the loss (forward + backward on random "
                   "features of the grid size), not the whole step: cheap at the paper's 32 x 32 grid on CPU")
    args = p.parse_args(argv)
    import pandas as pd

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    grid = args.img_size // 8
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPUs'}), torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, batch {args.batch_size}, {args.img_size}x{args.img_size} "
          f"(grid {grid}x{grid}, dense mask {args.batch_size}x{grid * grid}x{grid * grid}), "
          f"amp {args.amp and device.type == 'cuda'}, {args.steps} steps after {args.warmup} warm-up")
    run = run_loss_only if args.loss_only else run_config
    rows = [run(impl, args, device) for impl in args.impls]
    table = pd.DataFrame(rows).set_index("loss_impl")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    if {"sparse", "dense"} <= set(table.index):
        s, d = table.loc["sparse"], table.loc["dense"]
        print(f"speed-up sparse/dense (images/s): {s.images_per_s / d.images_per_s:.2f}x; loss alone: "
              f"{d.loss_fwd_bwd_ms / s.loss_fwd_bwd_ms:.2f}x faster; "
              f"peak memory dense/sparse: {d.peak_mem_MiB / max(s.peak_mem_MiB, 1e-9):.2f}x "
              f"({d.peak_mem_MiB - s.peak_mem_MiB:+.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
