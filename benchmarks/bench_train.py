"""Training-step throughput on CPU or GPU: float32 against bfloat16 / float16, NCHW against
channels_last (and, with ``--compare loss-impl``, our sparse loss against the dense formulation).

Usage::

    python benchmarks/bench_train.py [--sizes 64 128 256] [--batch-size 8 [8 4]] [--steps 3]
        [--warmup 1] [--configs main fp32 fp32-cl bf16-cl] [--device auto|cpu|cuda] [--threads 1]
        [--data DIR] [--profile]
    python benchmarks/bench_train.py --compare loss-impl [--batch-size 8] [--sizes 128] [--loss-only]

``--compare precision`` (default). One full training step is timed (EMA update, online and
target forward passes, the symmetric loss L(1,2) + L(2,1), backward, Adam step; data loading
not included) for each configuration, on identical models (same seed) and identical inputs
(random crops, random overlapping boxes drawn like the training crops):

* ``main``: float32, NCHW, the per-tensor Adam loop -- the trainer's step before this version;
* ``fp32``: float32, NCHW, fused Adam -- the trainer's default on CPU;
* ``fp32-cl``: float32, channels_last, fused Adam (``--channels-last``);
* ``bf16`` / ``bf16-cl``: bfloat16 autocast, NCHW / channels_last, fused Adam
  (``--amp-dtype bfloat16 [--channels-last]``);
* ``fp16`` / ``fp16-cl``: float16 autocast with a grad scaler, NCHW / channels_last, fused Adam
  (CUDA only; ``fp16-cl`` is the trainer's default on CUDA);
* ``auto``: what ``--amp-dtype auto`` picks on this machine (a short probe; the row names it).

The machine comes first: CPU model and flags, GPU, the measured GEMM rate per dtype
(``benchmarks/_machine.py``). ``--steps 100`` also gives the loss's agreement over 100 steps of
identical batches (column ``max_abs_diff_all_steps_vs_fp32``).

The configurations' steps alternate (one step of each, repeated) so that a shared machine's
load affects all of them alike; per configuration the median of ``--steps`` steps after
``--warmup`` is reported as ms/step and images/s (frames/s; each frame is cropped twice),
with the ratios to the first configuration. Loss agreement: the first step's loss (same
weights, same batch) of every configuration against ``fp32``'s; the tolerance is 1e-4 for
float32 layouts and 0.05 for bfloat16/float16 (the loss lies in [-8, 8]; bfloat16 keeps 8
significant bits). On CUDA the peak memory of each configuration's steps is reported.

``--data DIR`` (a ``JPEGImages/<video>/`` folder) also times the data pipeline per frame at
each size, without workers: decoding + two crops from the JPEG files, and the two crops from
the in-memory frame cache (``--cache-mb``), with the share of a float32 step they would add.

``--profile`` prints, per size, where one more step of the first configuration (after the
measured ones) spends its time (torch.profiler, self CPU time grouped by operator).

``--compare loss-impl``: our sparse hybrid loss (:func:`hvc.loss.hybrid_loss`) against the
dense ``N x HW x HW`` formulation (docs/method.md, "Loss"), full steps in float32
with peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` during the measured steps, minus the memory
  allocated before them (model, optimiser state and inputs);
* CPU: the peak resident set size during the measured steps minus the RSS before them (freed
  heap memory is first handed back with glibc's ``malloc_trim``). The peak
  is reset between configurations through ``/proc/self/clear_refs`` (Linux); where that is not
  possible, the ``resource`` maxrss delta is reported, which only shows growth over the
  earlier high-water mark (so the second configuration may read 0).

A second measurement times the loss alone (forward + backward of L(1,2) + L(2,1) on random
normalised ``[B, 256, S/8, S/8]`` features; column ``loss_fwd_bwd_ms``), where the difference
between the two formulations is not hidden by the backbone. ``--loss-only`` runs just that
(with its peak memory), e.g. at the paper's 256 x 256 crops (32 x 32 grid) where a full CPU
step would take minutes.

Prints tables (pandas).
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _train_helpers, also when loaded by path

import torch.nn.functional as F  # noqa: E402

from _train_helpers import data_pipeline, make_batch, malloc_trim, reset_peak_rss, rss_kib  # noqa: E402
from hvc.loss import dense_hybrid_loss, hybrid_loss  # noqa: E402
from hvc.model import HVCModel  # noqa: E402
from hvc.step import resolve_precision  # noqa: E402
from _machine import machine_header  # noqa: E402


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
    malloc_trim()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = rss_kib("VmRSS")
        reset_peak_rss()
    ms = loss_only(loss_impl, args.batch_size, args.img_size // 8, device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = (rss_kib("VmHWM") - base) / 1024
    gc.collect()
    malloc_trim()
    return {"loss_impl": loss_impl, "loss_fwd_bwd_ms": ms, "peak_mem_MiB": peak,
            "images_per_s": args.batch_size / (ms / 1000)}


def run_config(loss_impl: str, args, device: torch.device) -> dict:
    """Time ``args.steps`` float32 training steps after ``args.warmup``; returns a result row."""
    torch.manual_seed(0)
    model = HVCModel(total_steps=1000, loss_impl=loss_impl).to(device).train()
    opt = torch.optim.Adam(model.online_parameters(), lr=1e-3)
    use_amp = False
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
        malloc_trim()
        base_rss = rss_kib("VmRSS")
        if reset_peak_rss() and rss_kib("VmHWM"):
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
        peak_mib = (rss_kib("VmHWM") - base_rss) / 1024
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_max) / 1024
    row = {"loss_impl": loss_impl, "images_per_s": args.batch_size * args.steps / dt,
           "ms_per_step": 1000 * dt / args.steps, "peak_mem_MiB": peak_mib, "memory": method,
           "num_pos": float(out["num_pos"]), "final_loss": loss,
           "loss_fwd_bwd_ms": loss_only(loss_impl, args.batch_size, args.img_size // 8, device)}
    del model, opt, out
    gc.collect()
    malloc_trim()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------------------------
# --compare precision
# ----------------------------------------------------------------------------------------------
#: configuration -> (autocast dtype or None, channels_last, fused Adam)
CONFIGS = {"main": (None, False, False), "fp32": (None, False, True), "fp32-cl": (None, True, True),
           "bf16": (torch.bfloat16, False, True), "bf16-cl": (torch.bfloat16, True, True),
           "fp16": (torch.float16, False, True), "fp16-cl": (torch.float16, True, True)}
#: |loss - fp32 loss| allowed at the first step (same weights and batch)
LOSS_TOLERANCE = {None: 1e-4, torch.bfloat16: 0.05, torch.float16: 0.05}


class Stepper:
    """One configuration's model, optimiser and inputs; ``step()`` runs and times one training
    step (as hvc.trainer does: EMA update, forward under autocast, backward, Adam)."""

    def __init__(self, name: str, batch: int, size: int, device: torch.device):
        self.name = name
        if name == "auto":  # what --amp-dtype auto picks on this machine (hvc.step.resolve_precision)
            chosen = resolve_precision(device, True, "auto", None)
            self.dtype, self.channels_last, fused = chosen.autocast_dtype, chosen.channels_last, True
            self.name = f"auto={chosen.name}{'-cl' if chosen.channels_last else ''}"
        else:
            self.dtype, self.channels_last, fused = CONFIGS[name]
        self.device = device
        torch.manual_seed(0)
        self.model = HVCModel(total_steps=1000).to(device).train()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.online_parameters(), lr=1e-3, fused=fused or None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16 and device.type == "cuda")
        v1, v2, self.c1, self.c2 = make_batch(batch, size, device)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.v1, self.v2 = v1.contiguous(memory_format=fmt), v2.contiguous(memory_format=fmt)
        self.times, self.losses, self.peak_mib = [], [], 0.0

    def step(self, measure: bool) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        t0 = time.perf_counter()
        self.model.momentum_update()
        with torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            out = self.model(self.v1, self.v2, self.c1, self.c2)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        loss = float(out["loss"].detach())  # synchronises
        dt = time.perf_counter() - t0
        self.losses.append(loss)
        if self.device.type == "cuda":
            self.peak_mib = max(self.peak_mib, (torch.cuda.max_memory_allocated(self.device) - base) / 2**20)
        if measure:
            self.times.append(dt)


def profile_step(stepper: Stepper, top: int = 12) -> None:
    """Print where one step's time goes (torch.profiler; self time grouped by operator)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if stepper.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        stepper.step(measure=False)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {"convolution forward": ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward",
                                      "aten::cudnn_convolution", "aten::_convolution"),
              "convolution backward": ("aten::convolution_backward", "aten::_slow_conv2d_backward",
                                       "aten::mkldnn_convolution_backward"),
              "batch norm": ("aten::native_batch_norm", "aten::native_batch_norm_backward",
                             "aten::_batch_norm_impl_index"),
              "layout/dtype copies": ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous")}
    shares = {k: 0.0 for k in groups}
    for e in events:
        for k, names in groups.items():
            if e.key in names:
                shares[k] += e.self_cpu_time_total
    shares["everything else"] = total - sum(shares.values())
    print(f"profile of one {stepper.name} step ({total / 1e6:.2f} s of self CPU time):")
    print("  " + ", ".join(f"{k} {100 * v / max(total, 1):.1f} %" for k, v in shares.items()))
    print("\n".join("  " + line for line in events.table(sort_by="self_cpu_time_total", row_limit=top).splitlines()))


def run_precision(args, device: torch.device) -> int:
    import pandas as pd

    configs = [c for c in args.configs if device.type == "cuda" or not c.startswith("fp16")]
    if len(configs) != len(args.configs):
        print("fp16 autocast is CUDA-only; skipped on CPU")
    ref = "fp32" if "fp32" in configs else configs[0]
    batches = args.batch_size if len(args.batch_size) == len(args.sizes) else [args.batch_size[0]] * len(args.sizes)
    rows = []
    for size, batch in zip(args.sizes, batches):
        steppers = [Stepper(c, batch, size, device) for c in configs]
        for rep in range(args.warmup + args.steps):
            for s in steppers:
                s.step(measure=rep >= args.warmup)
        if args.profile:  # a warm step (one more, after the measured ones)
            profile_step(steppers[0])
        data = data_pipeline(args.data, size) if args.data else {}
        ref_stepper = next(s for s in steppers if s.name == ref)
        ref_loss = ref_stepper.losses[0]
        base_ms = 1000 * statistics.median(steppers[0].times)
        for s in steppers:
            ms = 1000 * statistics.median(s.times)
            diff = abs(s.losses[0] - ref_loss)
            row = {"size": size, "batch": batch, "config": s.name, "ms_per_step": ms,
                   "images_per_s": batch / (ms / 1000),
                   f"speed_vs_{steppers[0].name}": base_ms / ms, "first_loss": s.losses[0],
                   f"abs_diff_vs_{ref}": diff, "tolerance": LOSS_TOLERANCE[s.dtype],
                   "loss_agrees": diff <= LOSS_TOLERANCE[s.dtype], "last_loss": s.losses[-1],
                   f"max_abs_diff_all_steps_vs_{ref}": max(abs(a - b) for a, b in zip(s.losses, ref_stepper.losses)),
                   "steps_ms": " ".join(f"{1000 * t:.0f}" for t in s.times)}
            if device.type == "cuda":
                row["peak_mem_MiB"] = s.peak_mib
            if data:
                row.update(data)
                row["data_share_jpeg"] = data["data_jpeg_ms_per_frame"] / (ms / batch)
            rows.append(row)
        del steppers
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    ok = bool(table["loss_agrees"].all())
    print(f"loss agreement at the first step: {'all within' if ok else 'NOT all within'} tolerance "
          f"(1e-4 float32 layouts, 0.05 bfloat16/float16; loss range [-8, 8])")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", choices=("precision", "loss-impl"), default="precision",
                   help="precision: float32 / bfloat16 / float16 and memory layouts; loss-impl: sparse vs dense loss")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="crop sides, pixels "
                   "(grid = size / 8); loss-impl uses the first")
    p.add_argument("--batch-size", type=int, nargs="+", default=[8], help="frames per step: one value, or one per size")
    p.add_argument("--steps", type=int, default=3, help="measured steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    p.add_argument("--configs", nargs="+", default=["main", "fp32", "fp32-cl", "bf16-cl", "auto"],
                   choices=list(CONFIGS) + ["auto"],
                   help="precision configurations, in order (ratios are against the first); auto: what "
                        "--amp-dtype auto picks here (a probe)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    p.add_argument("--data", default=None, help="precision: also time the data pipeline on this video folder "
                   "(JPEGImages/<video>/...), e.g. $HVC_DATA_ROOT/unlabeled-video")
    p.add_argument("--profile", action="store_true", help="precision: profile one step of the first configuration")
    p.add_argument("--impls", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"],
                   help="loss-impl: configurations to run, in order")
    p.add_argument("--loss-only", action="store_true", help="loss-impl: time only the loss (forward + backward on "
                   "random features of the grid size), not the whole step: cheap at the paper's 32 x 32 grid on CPU")
    args = p.parse_args(argv)
    import pandas as pd

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    machine_header([str(device)])
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPUs'}), torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {args.steps} measured steps after {args.warmup} warm-up")
    if args.compare == "precision":
        return run_precision(args, device)
    args.batch_size, args.img_size = args.batch_size[0], args.sizes[0]
    grid = args.img_size // 8
    print(f"loss-impl: batch {args.batch_size}, {args.img_size}x{args.img_size} (grid {grid}x{grid}, dense mask "
          f"{args.batch_size}x{grid * grid}x{grid * grid}), float32")
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
