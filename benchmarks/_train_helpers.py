"""Measuring helpers of ``benchmarks/bench_train.py``: this process's memory (resident set size,
its peak and the reset of that peak, glibc's ``malloc_trim``), the random training batch, and the
per-frame time of the data pipeline. Imported by the benchmark as a sibling module (after it has
put the repository root on ``sys.path``).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import torch

from hvc.data.crops import box_to_coords, sample_crop_box


def rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB from /proc (0 when unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS deltas are not hidden by memory a
    previous configuration freed but the allocator kept."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
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



def data_pipeline(data: str, size: int, n: int = 40) -> dict:
    """ms per frame of an item (decode + two crops) from JPEG files and from the frame cache."""
    from hvc.data import VideoFrameDataset

    index = Path(data) / "ytvos.csv"
    out = {}
    for name, cache in (("jpeg", 0), ("cache", 1 << 40)):
        ds = VideoFrameDataset(data, size=size, cache_bytes=cache,
                               index_csv=index if index.is_file() else Path("/tmp") / f".bench_index_{os.getpid()}.csv")
        keys = [(int(k) * 7919 % ds.num_items(), k) for k in range(n)]
        if cache:
            ds.preload(threads=torch.get_num_threads())
        ds[keys[0]]
        t0 = time.perf_counter()
        for key in keys:
            ds[key]
        out[f"data_{name}_ms_per_frame"] = 1000 * (time.perf_counter() - t0) / n
    return out
