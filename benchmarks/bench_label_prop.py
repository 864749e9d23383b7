"""Benchmark: the local-window engine against the dense computation of the same protocol.

    python benchmarks/bench_label_prop.py [--grid 60 107] [--channels 256] [--n-context 20 50]
                                          [--repeats 3] [--device cpu cuda] [--features]

DAVIS-size features by default (854x480 frames at stride 8 give a 60x107 grid, 256 channels).
For each n_context, both implementations label the same frame in steady state: the context
holds ``n_context`` distinct short-term frames (the ring is pre-filled, so no copies of frame 0),
plus frame 0. Reported per implementation: seconds per frame (median over ``--repeats`` steps,
engine and dense steps alternating; a dense step takes 10-40 s on CPU), frames/s, peak memory
during one more, untimed step (CPU: resident-set growth sampled every 2 ms by a thread, kept
out of the timed steps; CUDA: max_memory_allocated) and, for the engine, the size of its ring
buffer of context features and labels (allocated once), and the agreement of the outputs (max
|difference| of soft labels, argmax agreement). The speed ratio dense/engine is computed in the
same process. The engine's chunk sizes are those :func:`label_prop.propagation.engine.chunk_sizes` picks for
the device (printed).

``--features`` also times the encoder (the ``random`` ResNet-18, layer3, stride 8) on one
854x480 frame (``--frame-size``) per ``--precisions`` (float32; bfloat16 and float16 autocast, in
NCHW and, with the suffix ``-cl``, channels_last; ``auto``: what ``--precision auto`` picks on
this machine, named in the row): seconds per frame (median), frames/s, peak memory, and the
features' cosine similarity to the first row's (mean and minimum over the grid).

**Roofline.** First the machine: CPU model and flags (avx2, avx512_bf16, amx_bf16, ...), GPU
name and capability, and the measured GEMM GFLOP/s per dtype on each device
(``benchmarks/_machine.py``). The engine table then gives the dot-product FLOPs per frame as the
engine computes them and the minimum (frame 0 dense plus, per context frame, only the keys
within the radius), the rate reached (computed FLOPs over the time) and its fraction of the
float32 GEMM rate; the encoder table its FLOPs per frame (torch's counter) and the fraction of
that precision's GEMM rate. Only products are counted: the top-k, softmax and label sums are
the rest of the time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from label_prop.config import PropagationConfig  # noqa: E402
from label_prop.propagation.engine import LabelPropagator, chunk_sizes  # noqa: E402
from label_prop.propagation.features import FrameEncoder, build_encoder, random_resnet18  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import encoder_flops, engine_flops, machine_header  # noqa: E402
from label_prop.propagation.reference import dense_frame  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Peak memory above the level at entry: CPU resident set (sampled) or CUDA allocations."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self.stop = _rss(), False
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop:
            self.peak = max(self.peak, _rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop = True
            self.thread.join()
            self.peak = max(self.peak, _rss() - self.base)


def _peak(fn, device):
    """Output and peak memory of one untimed run (the CPU sampler is a Python thread that competes
    for the interpreter, so no timed run has it)."""
    with PeakMemory(device) as pm:
        out = fn()
    return out, pm.peak


def _seconds(fn, device):
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench(device: torch.device, grid, C, K, n_context, repeats, dense_repeats, seed=0):
    h, w = grid
    g = torch.Generator().manual_seed(seed)
    T = n_context + 2
    feats = torch.randn(T, C, h, w, generator=g)
    feats = F.normalize(F.avg_pool2d(feats, 5, stride=1, padding=2) + 0.2 * feats, dim=1).to(device)
    labels = torch.softmax(2 * torch.randn(T, K, h, w, generator=g), dim=1).to(device)
    q = feats[-1]

    config = PropagationConfig(n_context=n_context)
    prop = LabelPropagator(feats[0], labels[0], config)
    for tau in range(1, n_context + 1):  # steady state: the ring holds frames 1..n_context
        prop.push(feats[tau], labels[tau])

    def engine_step():  # predict() leaves the context as it is: every repeat labels the same frame
        return prop.predict(q)

    def dense_step():
        keys = [f.reshape(C, h * w) for f in feats[:n_context + 1]]
        labs = [lab.reshape(K, h * w).t() for lab in labels[:n_context + 1]]
        return dense_frame(q.reshape(C, h * w), keys, labs, (h, w), config, query_chunk=256)

    engine_step()  # warm-up
    out_e, m_e = _peak(engine_step, device)
    out_d, m_d = _peak(dense_step, device)
    # Engine and dense steps alternate, so that a drift in the machine's speed hits both.
    times_e, times_d = [], []
    for i in range(max(repeats, dense_repeats)):
        if i < repeats:
            times_e.append(_seconds(engine_step, device))
        if i < dense_repeats:
            times_d.append(_seconds(dense_step, device))
    t_e, t_d = statistics.median(times_e), statistics.median(times_d)
    out_e = out_e.reshape(K, h * w).t()
    diff = (out_e - out_d).abs().max().item()
    agree = (out_e.argmax(1) == out_d.argmax(1)).float().mean().item()
    return dict(t_e=t_e, m_e=m_e, t_d=t_d, m_d=m_d, diff=diff, agree=agree, ring=prop.memory.nbytes)


def _encoder(name: str, device: torch.device) -> tuple[str, FrameEncoder]:
    """The ``random`` encoder in precision ``name`` (``NAME``, ``NAME-cl`` or ``auto``) and the
    row's label (for ``auto``: what it picked)."""
    if name == "auto":
        enc = build_encoder("random", device=device, precision="auto")
        return f"auto={enc.precision}{'-cl' if enc.channels_last else ''}", enc
    precision, cl = (name[:-3], True) if name.endswith("-cl") else (name, False)
    return name, FrameEncoder(random_resnet18(0), precision=precision, channels_last=cl).to(device)


def bench_features(device: torch.device, dtypes, repeats: int, size=(480, 854)):
    """Rows ``(label, s/frame, peak bytes, mean cosine, min cosine)`` of the encoder on one frame."""
    g = torch.Generator().manual_seed(0)
    frame = (F.avg_pool2d(torch.rand(1, 3, *size, generator=g), 9, stride=1, padding=4)[0] * 255).to(torch.uint8)
    frame = frame.permute(1, 2, 0).numpy()
    ref, rows = None, []
    for name in dtypes:
        if name.startswith("bfloat16") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        name, enc = _encoder(name, device)
        enc.encode_frame(frame)  # warm-up (cudnn autotuning, allocator)
        feat, peak = _peak(lambda: enc.encode_frame(frame), device)
        t = statistics.median(_seconds(lambda: enc.encode_frame(frame), device) for _ in range(repeats))
        ref = feat if ref is None else ref
        cos = (feat * ref).sum(0)
        rows.append((name, t, peak, cos.mean().item(), cos.min().item()))
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, nargs=2, default=(60, 107), metavar=("H", "W"))
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--objects", type=int, default=3, help="label channels K (background included)")
    p.add_argument("--n-context", type=int, nargs="+", default=(20, 50))
    p.add_argument("--repeats", type=int, default=3, help="timed engine steps (median)")
    p.add_argument("--dense-repeats", type=int, default=None, help="timed dense steps (default: --repeats)")
    p.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--features", action="store_true", help="also time the encoder per precision on one frame")
    p.add_argument("--precisions", nargs="+", default=("float32", "bfloat16", "bfloat16-cl", "float16", "auto"),
                   help="with --features: float32, bfloat16, float16, with -cl for channels_last, or auto "
                        "(the first is the reference of the cosine columns; default: all but float16-cl)")
    p.add_argument("--frame-size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"),
                   help="with --features: the frame size, pixels")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    return p


def engine_table(devices: list[str], grid: tuple[int, int], channels: int, objects: int, n_contexts: list[int],
                 repeats: int, dense_repeats: int, gemm: dict | None = None) -> list[dict]:
    """Print the engine's chunk sizes and the engine-against-dense table (one row per device and
    n_context, printed as measured) for a ``grid`` ``(H, W)`` of ``channels`` features and
    ``objects`` label channels; returns the rows (seconds per frame, peak memory in MiB, speed-up,
    max |difference| of the soft labels, argmax agreement as a fraction) and the roofline columns
    (:func:`_machine.engine_flops`; ``gemm``: device -> dtype -> GFLOP/s, for the fraction of peak)."""
    d = PropagationConfig()
    print(f"label propagation, one frame in steady state: grid {grid[0]}x{grid[1]}, "
          f"C={channels}, K={objects}, topk {d.topk}, radius {d.radius}, temperature {d.temperature}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    header = (f"{'device':6} {'n_ctx':>5} | {'engine s/frame':>14} {'frames/s':>8} {'peak MB':>8} {'ring MB':>8} | "
              f"{'dense s/frame':>13} {'frames/s':>8} {'peak MB':>8} | {'speed-up':>8} {'max|diff|':>9} {'argmax agree':>12} | "
              f"{'GFLOP done':>10} {'GFLOP min':>9} {'done/min':>8} {'GFLOP/s':>7} {'of fp32 peak':>12}")
    for dev_name in devices:
        device = torch.device(dev_name)
        for n in n_contexts:
            c = chunk_sizes(grid, n, d.radius, device)
            print(f"# {dev_name} n_context {n}: engine chunk sizes: query tile {c.query_tile}, "
                  f"{c.tiles_per_batch} tiles per batch, {c.query_chunk} queries per frame-0 chunk")
    print(header)
    print("-" * len(header))
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        for n in n_contexts:
            r = bench(device, grid, channels, objects, n, repeats, dense_repeats)
            fl = engine_flops(grid, channels, n, d.radius, chunk_sizes(grid, n, d.radius, device).query_tile)
            rate = fl["computed"] / r["t_e"] / 1e9
            peak = (gemm or {}).get(dev_name, {}).get("float32")
            rows.append({"device": dev_name, "n_context": n, "engine_s_per_frame": r["t_e"],
                         "gflop_computed": fl["computed"] / 1e9, "gflop_minimum": fl["minimum"] / 1e9,
                         "gflop_per_s": rate, "fraction_of_fp32_gemm": rate / peak if peak else None,
                         "engine_peak_mib": r["m_e"] / 2**20, "ring_mib": r["ring"] / 2**20,
                         "dense_s_per_frame": r["t_d"], "dense_peak_mib": r["m_d"] / 2**20,
                         "speed_up": r["t_d"] / r["t_e"], "max_abs_diff": r["diff"],
                         "argmax_agreement": r["agree"]})
            print(f"{dev_name:6} {n:5d} | {r['t_e']:14.3f} {1 / r['t_e']:8.3f} {r['m_e'] / 2**20:8.0f} {r['ring'] / 2**20:8.0f} | "
                  f"{r['t_d']:13.3f} {1 / r['t_d']:8.3f} {r['m_d'] / 2**20:8.0f} | "
                  f"{r['t_d'] / r['t_e']:7.1f}x {r['diff']:9.1e} {100 * r['agree']:11.3f}% | "
                  f"{fl['computed'] / 1e9:10.1f} {fl['minimum'] / 1e9:9.1f} {fl['computed'] / fl['minimum']:7.2f}x "
                  f"{rate:7.0f} {f'{100 * rate / peak:11.0f}%' if peak else '-':>12}", flush=True)
    return rows


def features_table(devices: list[str], dtypes: list[str], repeats: int, frame_size: tuple[int, int],
                   gemm: dict | None = None) -> list[dict]:
    """Print the encoder table (one row per device and autocast dtype, on one ``frame_size``
    ``(H, W)`` frame, pixels); returns the rows (seconds per frame, peak memory in MiB, cosine
    similarity to the first dtype's features)."""
    fh, fw = frame_size
    flops = encoder_flops(random_resnet18(0), frame_size)
    print(f"\nencoder ('random' ResNet-18 layer3, stride 8), one {fw}x{fh} frame ({flops / 1e9:.1f} GFLOP), "
          f"median of {repeats}:")
    header = (f"{'device':6} {'precision':18} | {'s/frame':>8} {'frames/s':>8} {'peak MB':>8} | "
              f"{'cos mean':>8} {'cos min':>8} | {'GFLOP/s':>7} {'of its GEMM peak':>16}")
    print(header)
    print("-" * len(header))
    rows = []
    for dev_name in devices:
        for name, t, peak, cmean, cmin in bench_features(torch.device(dev_name), dtypes, repeats, frame_size):
            dtype = name.split("=")[-1].removesuffix("-cl")
            top = (gemm or {}).get(dev_name, {}).get(dtype)
            rate = flops / t / 1e9
            print(f"{dev_name:6} {name:18} | {t:8.3f} {1 / t:8.1f} {peak / 2**20:8.0f} | {cmean:8.5f} {cmin:8.5f} | "
                  f"{rate:7.0f} {f'{100 * rate / top:15.0f}%' if top else '-':>16}", flush=True)
            rows.append({"device": dev_name, "precision": name, "s_per_frame": t, "peak_mib": peak / 2**20,
                         "cos_mean": cmean, "cos_min": cmin, "gflop": flops / 1e9, "gflop_per_s": rate,
                         "fraction_of_gemm": rate / top if top else None})
    return rows


def main(argv=None):
    """Run the benchmark: the engine table, with ``--features`` the encoder table, with ``--json``
    both tables (and torch version, grid, GPU name) written to a JSON file."""
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    machine = machine_header(devices)
    rows = {"machine": machine,
            "engine": engine_table(devices, tuple(args.grid), args.channels, args.objects, args.n_context,
                                   args.repeats, args.dense_repeats or args.repeats, machine["gemm_gflops"]),
            "features": []}
    if args.features:
        rows["features"] = features_table(devices, args.precisions, args.repeats, tuple(args.frame_size),
                                          machine["gemm_gflops"])
    if args.json is not None:
        rows["torch"], rows["grid"] = torch.__version__, list(args.grid)
        if any(d.startswith("cuda") for d in devices):
            rows["gpu"] = torch.cuda.get_device_name()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")

if __name__ == "__main__":
    main()
