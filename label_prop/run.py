"""Segment a benchmark by label propagation and write palette PNGs (``scripts/run_test.sh``).

Usage::

    python -m label_prop.run MODEL BENCHMARK [--sequences a,b] [--overwrite] [--save-overlays]
        [--data-root PATH] [--results-dir results] [--checkpoints-dir checkpoints]
        [--moco FILE] [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50]
        [--device auto|cpu|cuda] [--seed 0]

For every sequence, frame 0's annotation is the only ground truth read; every later frame is
segmented by :class:`label_prop.engine.LabelPropagator` over the features of
:mod:`label_prop.features`, one frame at a time (memory bounded by ``n_context + 1`` frames).

Outputs, under ``<results-dir>/MODEL/BENCHMARK/``:

* ``<sequence>/<frame>.png``: object ids as a palette PNG (DAVIS palette) of the frame's size,
  one per input frame (frame 0 is the given annotation, void turned into background);
* ``run-<UTC timestamp>.json``: the exact command, arguments, git revision, device, versions and
  the measured seconds per frame (frame reading, feature extraction, propagation, writing);
* with ``--save-overlays``: ``<results-dir>/MODEL/overlays/BENCHMARK/<sequence>/<frame>.jpg``.

A sequence is written into a hidden ``.<sequence>.partial`` folder and renamed when complete, so
an interrupted run never leaves a half-written sequence under its final name. An existing
sequence folder is never replaced without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from label_prop.datasets import annotation_path, data_root, frame_paths, get_benchmark, list_sequences
from label_prop.engine import LabelPropagator
from label_prop.features import CheckpointError, FrameEncoder, build_encoder
from label_prop.io import VOID_ID, atomic_write, overlay, read_frame, read_mask, write_palette_png

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Timings:
    """Accumulated wall-clock seconds per stage and the number of frames (propagated frames for
    ``propagate``, all frames for the others)."""

    read: float = 0.0
    features: float = 0.0
    propagate: float = 0.0
    write: float = 0.0
    frames: int = 0
    propagated: int = 0

    def per_frame(self) -> dict[str, float]:
        """Seconds per frame of each stage (propagation per propagated frame)."""
        n, m = max(self.frames, 1), max(self.propagated, 1)
        return {
            "read_s_per_frame": self.read / n,
            "features_s_per_frame": self.features / n,
            "propagate_s_per_frame": self.propagate / m,
            "write_s_per_frame": self.write / n,
        }

    def add(self, other: "Timings") -> None:
        for name in ("read", "features", "propagate", "write", "frames", "propagated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_frame_labels(mask: np.ndarray, grid: tuple[int, int],
                       object_ids: Sequence[int] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Soft labels of frame 0 on the feature grid, from its annotation.

    Args:
        mask: ``[H, W]`` object ids (0 = background, ``255`` = void, treated as background).
        grid: ``(h, w)`` of the feature grid.
        object_ids: the ids to track (default: every id present in ``mask`` except 0 and 255).

    Returns:
        ``(labels [K, h, w] float32, ids [K] uint8)``: channel 0 is the background, channel
        ``c`` the object ``ids[c]``; the one-hot ``[K, H, W]`` mask downsampled bilinearly with
        ``align_corners=True`` (as CRW/HVC, HVC_METHOD.md section 5).

    Raises:
        ValueError: ``mask`` is not 2-D, or a requested object id is absent from it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"first-frame mask must be [H, W], got shape {mask.shape}")
    present = [int(i) for i in np.unique(mask) if i not in (0, VOID_ID)]
    if object_ids is None:
        object_ids = present
    missing = [i for i in object_ids if i not in present]
    if missing:
        raise ValueError(f"object ids {missing} are not in the first-frame mask (present: {present})")
    ids = np.array([0, *object_ids], dtype=np.uint8)
    onehot = torch.from_numpy(np.stack([mask == i for i in ids]).astype(np.float32))
    onehot[0] = 1.0 - onehot[1:].sum(0)  # void and unrequested objects count as background
    labels = F.interpolate(onehot[None], size=grid, mode="bilinear", align_corners=True)[0]
    return labels, ids


def labels_to_ids(labels: torch.Tensor, size: tuple[int, int], ids: np.ndarray) -> np.ndarray:
    """Upsample soft labels ``[K, h, w]`` to ``size = (H, W)`` (bilinear, ``align_corners=True``,
    as HVC) and take the channel argmax; returns ``[H, W]`` uint8 object ids (``ids[channel]``)."""
    up = F.interpolate(labels[None].float(), size=size, mode="bilinear", align_corners=True)[0]
    return ids[up.argmax(0).cpu().numpy()]


def segment_frames(frames: Iterable[np.ndarray], first_mask: np.ndarray, encoder: FrameEncoder, *,
                   device: torch.device | str = "cpu", topk: int = 15, temperature: float = 0.1,
                   radius: float = 12, n_context: int = 50, object_ids: Sequence[int] | None = None,
                   timings: Timings | None = None) -> Iterator[np.ndarray]:
    """Segment a video frame by frame, streaming (memory bounded by ``n_context + 1`` frames).

    Args:
        frames: iterable of ``[H, W, 3]`` uint8 RGB frames, all of the same size; frame 0 first.
        first_mask: ``[H, W]`` object ids of frame 0 (255 = void, treated as background).
        encoder: the feature extractor (``[N, 3, H, W] -> [N, C, h, w]``, L2-normalised).
        device: where features and propagation run.
        topk, temperature, radius, n_context: the propagation protocol (see
            :class:`~label_prop.engine.LabelPropagator`).
        object_ids: ids to track (default: all of ``first_mask``).
        timings: optional accumulator of the seconds spent per stage.

    Yields:
        ``[H, W]`` uint8 object ids per frame; frame 0 yields ``first_mask`` with untracked ids
        and void set to 0.

    Raises:
        ValueError: a frame's size differs from the first mask's.
    """
    device = torch.device(device)
    timings = timings if timings is not None else Timings()
    first_mask = np.asarray(first_mask)
    size = first_mask.shape
    prop = None
    ids = None
    for t, frame in enumerate(frames):
        if frame.shape[:2] != size:
            raise ValueError(f"frame {t} has size {frame.shape[:2]}, the first-frame mask {size}")
        t0 = time.perf_counter()
        feat = encoder.encode_frame(frame, device)
        _sync(device)
        t1 = time.perf_counter()
        timings.features += t1 - t0
        timings.frames += 1
        if prop is None:
            labels, ids = first_frame_labels(first_mask, tuple(feat.shape[1:]), object_ids)
            prop = LabelPropagator(feat, labels.to(device), topk=topk, temperature=temperature,
                                   radius=radius, n_context=n_context)
            yield np.where(np.isin(first_mask, ids), first_mask, 0).astype(np.uint8)
            continue
        out = labels_to_ids(prop.step(feat), size, ids)
        timings.propagate += time.perf_counter() - t1
        timings.propagated += 1
        yield out


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises:
        ValueError: CUDA requested but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return dev


def run_benchmark(args: argparse.Namespace) -> Path:
    """Segment every requested sequence of a benchmark; returns the run record's path.

    Raises:
        ValueError, FileNotFoundError, CheckpointError: bad benchmark, sequence, data or model.
        FileExistsError: a sequence's results exist and ``args.overwrite`` is False.
    """
    bench = get_benchmark(args.benchmark)
    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    names = list_sequences(bench, args.data_root, sequences)
    out_root = Path(args.results_dir) / args.model / bench.name
    if not args.overwrite:
        existing = [str(out_root / s) for s in names if (out_root / s).exists()]
        if existing:
            raise FileExistsError(
                f"results exist: {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                f"pass --overwrite to replace them"
            )
    device = pick_device(args.device)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco,
                            seed=args.seed, device=device)
    started = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    record = {
        "command": shlex.join([sys.executable, "-m", "label_prop.run", *sys.argv[1:]]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data_root": str(data_root(args.data_root).resolve()),
        "git_revision": _git_revision(),
        "started_utc": started,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "sequences": {},
    }
    total = Timings()
    wall0 = time.perf_counter()
    run_path = out_root / f"run-{started}.json"
    for seq in names:
        paths = frame_paths(bench, seq, args.data_root)
        first = read_mask(annotation_path(bench, seq, paths[0].stem, args.data_root), binary=bench.binary)
        first_img_size = Image.open(paths[0]).size[::-1]
        if first.shape != first_img_size:
            raise ValueError(f"{annotation_path(bench, seq, paths[0].stem, args.data_root)}: size "
                             f"{first.shape} differs from the frame {paths[0]} {first_img_size}")
        tmp_dir = out_root / f".{seq}.partial"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        ov_dir = Path(args.results_dir) / args.model / "overlays" / bench.name / seq
        if args.save_overlays:
            ov_dir.mkdir(parents=True, exist_ok=True)
        tm = Timings()
        frames_read: list[np.ndarray] = []

        def reader() -> Iterator[np.ndarray]:
            for p in paths:
                t0 = time.perf_counter()
                img = read_frame(p)
                tm.read += time.perf_counter() - t0
                frames_read[:] = [img]
                yield img

        it = segment_frames(reader(), first, encoder, device=device, topk=args.topk,
                            temperature=args.temperature, radius=args.radius,
                            n_context=args.n_context, timings=tm)
        for p, ids in tqdm(zip(paths, it), total=len(paths), desc=seq, unit="frame", file=sys.stderr):
            t0 = time.perf_counter()
            write_palette_png(tmp_dir / f"{p.stem}.png", ids)
            if args.save_overlays:
                Image.fromarray(overlay(frames_read[0], ids)).save(ov_dir / f"{p.stem}.jpg", quality=90)
            tm.write += time.perf_counter() - t0
        final = out_root / seq
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_dir, final)
        total.add(tm)
        record["sequences"][seq] = {"frames": len(paths), **tm.per_frame()}
        # The record is rewritten after every sequence, so an interrupted run keeps its timings.
        record["complete"] = seq == names[-1]
        record["wall_s"] = time.perf_counter() - wall0
        record["frames"] = total.frames
        record.update(total.per_frame())
        atomic_write(run_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    return run_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bash scripts/run_test.sh",
        description="Segment a DAVIS benchmark by label propagation from the first-frame masks.",
    )
    p.add_argument("model", metavar="MODEL", help="'random' (seeded baseline), a name (checkpoints/MODEL.pth) or a .pth path")
    p.add_argument("benchmark", metavar="BENCHMARK", help="davis16, davis17 or davis17dev")
    p.add_argument("--sequences", default=None, help="comma-separated sequences (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument("--save-overlays", action="store_true", help="also write JPEG overlays")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--results-dir", default="results", type=Path, help="results root (default: results)")
    p.add_argument("--checkpoints-dir", default="checkpoints", type=Path, help="where MODEL.pth is looked up")
    p.add_argument("--moco", default=None, help="optional MoCo-v1 ResNet-50 file merged with the encoder (HVC's MERGE)")
    p.add_argument("--topk", type=int, default=15, help="candidates per query (default 15)")
    p.add_argument("--temperature", type=float, default=0.1, help="softmax temperature (default 0.1)")
    p.add_argument("--radius", type=float, default=12, help="short-term radius in grid cells (default 12)")
    p.add_argument("--n-context", type=int, default=50, help="short-term context frames (default 50)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the 'random' encoder (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 error)."""
    args = build_parser().parse_args(argv)
    try:
        run_path = run_benchmark(args)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rec = json.loads(run_path.read_text())
    print(f"{rec['frames']} frames of {len(rec['sequences'])} sequences in {rec['wall_s']:.1f} s on {rec['device']}: "
          f"features {rec['features_s_per_frame']:.3f} s/frame, propagation {rec['propagate_s_per_frame']:.3f} s/frame")
    print(f"wrote {run_path.parent}/<sequence>/*.png and {run_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
