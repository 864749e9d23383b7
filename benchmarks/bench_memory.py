"""Benchmark: the cost of the object memory's global search, and the recall of the approximate
indexes, at bank sizes 10^4, 10^5 and 10^6 vectors.

    python benchmarks/bench_memory.py [--sizes 10000 100000 1000000] [--grid 60 107] [--channels 256]
        [--k 10] [--threads 1] [--query-fraction 0.1] [--device cpu]

Per bank size and index kind (flat = exact, ivf, hnsw; :class:`label_prop.propagation.memory.KnnIndex`
with the default :class:`label_prop.config.MemoryConfig` parameters): the seconds to build the
index, the seconds to search one 480p frame's positions (60x107 = 6420 queries of 256 channels,
``k`` neighbours; for banks above 10^5 only ``--query-fraction`` of the queries are timed and the
time is scaled up, said in the row), the bank's bytes (float32) and recall@k against the exact
search. Random unit vectors stand in for features (the search cost does not depend on their
values; recall on real features is higher, their neighbours being more distinct). The machine is
printed first; the propagation step it is compared with is timed in the same process
(:class:`label_prop.propagation.engine.LabelPropagator`, n-context 20, the same grid).

``--long N``: instead, an N-frame video (the ``jump`` re-entry clip played forwards and backwards
in turn, 240x320) segmented with the memory on, printing the resident memory (VmRSS) and the
banks' bytes every N/10 frames: flat memory means the rows stop growing once the banks are full.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_helpers import rss_kib  # noqa: E402  (the sibling module)
from hvc.hardware import describe  # noqa: E402
from label_prop.config import MemoryConfig, PropagationConfig  # noqa: E402
from label_prop.propagation.engine import LabelPropagator  # noqa: E402
from label_prop.propagation.memory import KnnIndex  # noqa: E402


def unit(n: int, c: int, rng) -> np.ndarray:
    x = rng.standard_normal((n, c), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def propagation_seconds(grid, channels, repeats=3) -> float:
    g = torch.Generator().manual_seed(0)
    f = lambda: torch.nn.functional.normalize(torch.randn(channels, *grid, generator=g), dim=0)  # noqa: E731
    y = torch.zeros(2, *grid)
    y[0] = 1
    prop = LabelPropagator(f(), y, PropagationConfig(n_context=20))
    for _ in range(20):
        prop.step(f())  # fill the context
    times = []
    for _ in range(repeats):
        x = f()
        t0 = time.perf_counter()
        prop.step(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_mib() -> float:
    """Resident memory of this process now, MiB (``_train_helpers.rss_kib``)."""
    return rss_kib("VmRSS") / 1024


def long_video(n: int) -> int:
    from label_prop.data.synthetic import reentry_clip
    from label_prop.propagation.features import build_encoder
    from label_prop.propagation.pipeline import VideoSegmenter
    frames, gt = reentry_clip("jump", n_frames=40, radius=42)
    loop = np.concatenate([frames, frames[::-1]])
    seg = VideoSegmenter(build_encoder("random", precision="float32"), PropagationConfig(n_context=20),
                         object_ids=[1], memory=MemoryConfig(reid=True))
    print(f"{n} frames of 240x320 (the jump clip looped), random, n-context 20, memory on")
    print("| frame | VmRSS MiB | banks KiB | vectors per bank | references | s/frame |")
    print("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for t in range(n):
        seg.step(loop[t % len(loop)], gt[0] if t == 0 else None)
        if (t + 1) % max(n // 10, 1) == 0:
            mem = seg.propagator.memory
            sizes = "/".join(str(len(b)) if b is not None else "0" for b in mem.banks)
            print(f"| {t + 1} | {rss_mib():.0f} | {mem.nbytes / 1024:.0f} | {sizes} | {len(seg.propagator.refs)} | "
                  f"{(time.perf_counter() - t0) / (t + 1):.3f} |", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--grid", type=int, nargs=2, default=[60, 107])
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--query-fraction", type=float, default=0.1)
    p.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    p.add_argument("--long", type=int, default=0, help="frames of the flat-memory run instead (e.g. 1000)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.long:
        return long_video(args.long)
    import faiss
    faiss.omp_set_num_threads(args.threads)
    hw = describe("cpu")
    print(f"# CPU {hw['cpu']}, flags {' '.join(hw['cpu_flags']) or '(none of interest)'}, {args.threads} thread(s), "
          f"faiss {faiss.__version__}")
    prop_s = propagation_seconds(tuple(args.grid), args.channels)
    q_all = args.grid[0] * args.grid[1]
    print(f"# propagation step (n-context 20, grid {args.grid[0]}x{args.grid[1]}, {args.channels} channels): "
          f"{prop_s:.3f} s/frame")
    rng = np.random.default_rng(0)
    cfg = MemoryConfig()
    print("| bank (vectors) | bank MiB | index | build s | search s/frame | vs propagation | recall@%d |" % args.k)
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        keys = unit(n, args.channels, rng)
        frac = 1.0 if n <= 100_000 else args.query_fraction
        queries = unit(max(1, int(q_all * frac)), args.channels, rng)
        exact = None
        for kind in args.kinds:
            if kind == "hnsw" and n > 100_000:
                continue  # building HNSW over 10^6 vectors takes longer than this benchmark's budget
            t0 = time.perf_counter()
            index = KnnIndex(keys, kind, cfg)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, nn = index.search(queries, args.k)
            search = (time.perf_counter() - t0) / frac
            if kind == "flat":
                exact = nn
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(nn, exact)]) if exact is not None else float("nan")
            scaled = "" if frac == 1 else f" (timed on {frac:.0%} of the queries, scaled)"
            print(f"| {n:,} | {keys.nbytes / 2**20:.0f} | {index.kind} | {build:.2f} | {search:.3f}{scaled} | "
                  f"{search / prop_s:.2f}x | {recall:.3f} |", flush=True)
            del index
    return 0


if __name__ == "__main__":
    sys.exit(main())
