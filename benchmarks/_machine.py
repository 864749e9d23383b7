"""The roofline header of the benchmarks: the machine (CPU model and flags, GPU name and
capability), the measured matrix-product rate per dtype on it, and the FLOP counts that the
benchmarks compare with those rates. Imported as a sibling module by ``bench_label_prop.py`` and
``bench_train.py`` (after they have put the repository root on ``sys.path``).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from hvc.hardware import PRECISIONS, describe, gemm_gflops
from label_prop.propagation.window import WindowGeometry, within_radius

#: The dtypes whose product rate is measured (float16 on CPU too: it shows whether the CPU has
#: native float16 units, AVX512-FP16 / AMX-FP16).
GEMM_DTYPES = {name: dtype or torch.float32 for name, dtype in PRECISIONS.items()}


def machine_header(devices: list[str], repeats: int = 3) -> dict:
    """Print the machine and the measured GEMM GFLOP/s per dtype and device (a 6420x256 by
    256x2048 product: a 480p frame's grid against 2048 keys); returns
    ``{"hardware": {device: describe()}, "gemm_gflops": {device: {dtype: GFLOP/s}}}``."""
    out = {"hardware": {}, "gemm_gflops": {}}
    for dev in devices:
        hw = describe(dev)
        out["hardware"][dev] = hw
        gpu = f", GPU {hw['gpu']} (capability {hw['gpu_capability']})" if "gpu" in hw else ""
        print(f"# {dev}: CPU {hw['cpu']}, flags {' '.join(hw['cpu_flags']) or '(none of interest)'}, "
              f"{hw['threads']} torch threads{gpu}")
        rates = {name: gemm_gflops(dt, dev, repeats=repeats) for name, dt in GEMM_DTYPES.items()}
        out["gemm_gflops"][dev] = rates
        print(f"# {dev}: GEMM 6420x256 @ 256x2048, GFLOP/s: "
              + ", ".join(f"{k} {v:.0f} ({v / rates['float32']:.2f}x)" for k, v in rates.items()))
    return out


def engine_flops(grid: tuple[int, int], channels: int, n_context: int, radius: float, query_tile: int = 8) -> dict:
    """Multiply-add FLOPs (2 per multiply-add) of the dot products of one frame, ``grid = (h, w)``:

    * ``computed``: as the engine does them: frame 0 densely (``h w x h w``) and, per short-term
      frame, every tile's disc-tight region (:class:`label_prop.propagation.window.WindowGeometry`; tiles and
      regions off the image included);
    * ``minimum``: frame 0 densely plus, per short-term frame, only the key positions inside the
      image and within the radius of each query;
    * ``frame0``: the dense frame-0 part (in both);
    * ``keys_per_tile``: scored cells per tile region, ``disc``: offsets within the radius.
    """
    h, w = grid
    geom = WindowGeometry(grid, radius, query_tile)
    frame0 = 2 * channels * (h * w) ** 2
    computed_short = 2 * channels * n_context * geom.nty * geom.ntx * geom.Bh * geom.Bw * geom.n_groups
    P = geom.P
    offsets = [(dy, dx) for dy in range(-P, P + 1) for dx in range(-P, P + 1) if within_radius(dy, dx, radius)]
    # queries whose neighbour at (dy, dx) lies inside the image: (h - |dy|) (w - |dx|)
    pairs = sum(max(0, h - abs(dy)) * max(0, w - abs(dx)) for dy, dx in offsets)
    minimum_short = 2 * channels * n_context * pairs
    return {"computed": frame0 + computed_short, "minimum": frame0 + minimum_short, "frame0": frame0,
            "keys_per_tile": geom.n_groups, "disc": len(offsets)}


def encoder_flops(net: torch.nn.Module, size: tuple[int, int]) -> int:
    """FLOPs of one forward of ``net`` on a ``[1, 3, H, W]`` input (torch's FLOP counter:
    convolutions and matrix products, 2 per multiply-add)."""
    x = torch.rand(1, 3, *size, device=next(net.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())
