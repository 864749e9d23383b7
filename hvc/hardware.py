"""What the machine at hand can do, measured: the CPU's model and flags, the GPU's name, the matrix
product rate per dtype, and the precision that runs the encoder fastest here.

Machines of one kind differ (an AMD EPYC with AVX2 only runs bfloat16 many times slower than
float32; a Xeon with AMX runs it several times faster), so the choice of precision is made by a
short probe on the machine at hand (:func:`choose_precision`), never from the CPU's name. The
probe times the network the caller will run (a stride-8 ResNet layer3 forward) on a small input in
each candidate precision and layout, and keeps float32 unless another is clearly faster
(:data:`PROBE_MARGIN`). Float32 stays the exact mode that the fidelity tests pin.
"""
from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

#: Names of the precisions, and the autocast dtype each stands for (None: plain float32).
PRECISIONS: Dict[str, Optional[torch.dtype]] = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: ``auto`` keeps float32 unless another precision runs the probe at least this many times faster
#: (a margin against timing noise on a loaded machine; no unit).
PROBE_MARGIN = 1.2
#: CPU flags that matter for the precision choice (as /proc/cpuinfo spells them).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_fp16")


def _cpuinfo(key: str) -> Optional[str]:
    """The value of the first ``key`` line of ``/proc/cpuinfo`` (None off Linux or when absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``; ``platform.processor()`` elsewhere)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> Tuple[str, ...]:
    """Which of :data:`CPU_FLAGS` the CPU reports (empty off Linux)."""
    have = set((_cpuinfo("flags") or "").split())
    return tuple(fl for fl in CPU_FLAGS if fl in have)


def describe(device: torch.device | str = "cpu") -> Dict[str, object]:
    """The hardware a run used, for run records and benchmark headers: ``cpu`` (model),
    ``cpu_flags`` (of :data:`CPU_FLAGS`), ``threads`` (torch CPU threads) and, on CUDA, ``gpu``
    (name) and ``gpu_capability`` (``"major.minor"``)."""
    device = torch.device(device)
    out: Dict[str, object] = {"cpu": cpu_model(), "cpu_flags": list(cpu_flags()), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        out.update(gpu=torch.cuda.get_device_name(device), gpu_capability=f"{major}.{minor}")
    return out


def in_words(device: torch.device | str = "cpu") -> str:
    """The machine in words, for time-based figures: the GPU name on CUDA, else the CPU model
    with the torch thread count and the number of CPUs."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{cpu_model()}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} CPUs"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 3,
                   warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones, seconds
    (CUDA synchronised around each call)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_gflops(dtype: torch.dtype, device: torch.device | str = "cpu", shape: Tuple[int, int, int] = (6420, 256, 2048),
                repeats: int = 3) -> float:
    """Measured rate of one ``[M, K] @ [K, N]`` product in ``dtype`` on ``device``, GFLOP/s
    (``2 M K N`` floating-point operations over the median time). The default shape is a 480p
    frame's 6420 grid positions against 2048 keys of 256 channels, the engine's products."""
    device = torch.device(device)
    m, k, n = shape
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    return 2 * m * k * n / median_seconds(lambda: a @ b, device, repeats) / 1e9


@dataclass(frozen=True)
class PrecisionChoice:
    """What :func:`choose_precision` picked and why.

    Fields: ``precision`` (a :data:`PRECISIONS` name), ``channels_last`` (NHWC input and
    weights), ``requested`` (``auto`` or the name given), ``seconds`` (probe time per candidate
    ``"precision[-cl]"``, seconds; empty when nothing was probed), ``probe`` (what was timed).
    """

    precision: str
    channels_last: bool
    requested: str
    seconds: Dict[str, float] = field(default_factory=dict)
    probe: str = ""

    def record(self) -> Dict[str, object]:
        """Plain values for a run record."""
        return {"precision": self.precision, "channels_last": self.channels_last, "requested": self.requested,
                "probe_seconds": {k: round(v, 5) for k, v in self.seconds.items()}, "probe": self.probe}


def _candidates(device: torch.device, requested: str) -> Sequence[str]:
    if requested != "auto":
        return (requested,)
    if device.type == "cuda":
        return ("float32", "bfloat16") if torch.cuda.is_bf16_supported() else ("float32", "float16")
    return ("float32", "bfloat16")  # float16 autocast on CPU has no fast kernels worth probing


def choose_precision(requested: str, device: torch.device | str, make_net: Callable[[], nn.Module],
                     size: int = 128, repeats: int = 3) -> PrecisionChoice:
    """The precision and memory layout to run ``make_net()`` in on ``device``.

    ``requested`` ``float32`` is the exact mode: no probe, the default layout. ``bfloat16`` or
    ``float16`` fixes the precision and probes only the layout (channels_last or not, keeping the
    faster); ``auto`` also probes the precisions
    (float32 and bfloat16; float16 on a GPU without bfloat16) and keeps float32 unless another is
    at least :data:`PROBE_MARGIN` times faster. Each candidate is timed as the median of
    ``repeats`` forwards of a ``[1, 3, size, size]`` input (``size`` pixels) after a warm-up; at
    the default 128 px this takes well under a second per candidate on a CPU with fast bfloat16
    and a few seconds on one without.

    Args:
        requested: ``auto`` or a :data:`PRECISIONS` name.
        device: where the network will run.
        make_net: builds the network to time (its weights do not matter).

    Raises:
        ValueError: an unknown ``requested``, or bfloat16 asked for on a GPU without it.
    """
    device = torch.device(device)
    if requested != "auto" and requested not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16; use float16")
    if requested == "float32":
        return PrecisionChoice("float32", False, requested)
    net = make_net().to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    seconds: Dict[str, float] = {}
    with torch.no_grad():
        for name in _candidates(device, requested):
            for cl in ((False,) if name == "float32" else (False, True)):
                layout = torch.channels_last if cl else torch.contiguous_format
                net_l, x_l = net.to(memory_format=layout), x.contiguous(memory_format=layout)
                dtype = PRECISIONS[name]

                def forward():
                    if dtype is None:
                        return net_l(x_l)
                    with torch.autocast(device_type=device.type, dtype=dtype):
                        return net_l(x_l)

                seconds[name + ("-cl" if cl else "")] = median_seconds(forward, device, repeats)
    net.to(memory_format=torch.contiguous_format)
    pick, channels_last = decide(requested, seconds)
    probe = f"{type(net).__name__} forward, 1x3x{size}x{size}, {torch.get_num_threads()} threads, median of {repeats}"
    return PrecisionChoice(pick, channels_last, requested, seconds, probe)


def decide(requested: str, seconds: Dict[str, float]) -> Tuple[str, bool]:
    """The rule of :func:`choose_precision`: ``(precision, channels_last)`` from the probe times
    ``seconds`` (``"NAME"`` and ``"NAME-cl"`` per probed precision, seconds). float32 is judged in
    its exact default layout, the others in their faster one; ``auto`` keeps float32 unless one
    is at least :data:`PROBE_MARGIN` times faster (the fastest such one wins)."""
    names = [k for k in seconds if not k.endswith("-cl")]
    best = {n: (seconds[n], False) if n == "float32" or n + "-cl" not in seconds
            else min((seconds[n], False), (seconds[n + "-cl"], True)) for n in names}
    if requested != "auto":
        return requested, best[requested][1] if requested in best else False
    pick = "float32"
    for n, (t, _) in sorted(best.items(), key=lambda kv: kv[1][0]):
        if n != "float32" and t * PROBE_MARGIN <= best["float32"][0]:
            pick = n
            break
    return pick, best[pick][1]


@functools.lru_cache(maxsize=None)
def _cached_encoder_choice(requested: str, device: str, threads: int) -> PrecisionChoice:
    from hvc.backbone import ResNetStride8
    return choose_precision(requested, device, lambda: ResNetStride8("layer3"))


def encoder_precision(requested: str, device: torch.device | str = "cpu") -> PrecisionChoice:
    """:func:`choose_precision` for the stride-8 ResNet-18 to layer3 (the inference encoder and
    the trainer's backbone), probed once per process, device and thread count.

    Raises:
        ValueError: see :func:`choose_precision`.
    """
    return _cached_encoder_choice(requested, str(torch.device(device)), torch.get_num_threads())
