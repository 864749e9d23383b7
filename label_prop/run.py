"""Segment a benchmark by label propagation and write palette PNGs (``scripts/run_test.sh``).

Usage::

    python -m label_prop.run MODEL BENCHMARK|FILELIST [--sequences a,b] [--overwrite] [--save-overlays]
        [--data-root PATH] [--results-dir results] [--checkpoints-dir checkpoints]
        [--moco FILE] [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50]
        [--device auto|cpu|cuda] [--seed 0] [--read-masks first|existing] [--max-objects 19]
        [--threads N]

BENCHMARK is davis16, davis17, davis17dev, ytvos18 or ytvos19 (:mod:`label_prop.datasets`);
FILELIST a ``.txt`` in HVC's ``<flag> <image> <mask>`` format (:mod:`label_prop.filelists`).
Each sequence becomes a :class:`~label_prop.datasets.SequencePlan`: for DAVIS, frame 0's
annotation is the only ground truth read; for YouTube-VOS, each object's first-appearance
annotation (the start PNGs are decoded once while planning, to learn which ids start where;
no later ground truth is opened). Frames are segmented one at a time by
:class:`label_prop.multiref.MultiRefPropagator` (one :class:`label_prop.engine.LabelPropagator`
per start frame; with every object at frame 0 it is exactly the single-reference engine), over
the features of :mod:`label_prop.features`.

Outputs, under ``<results-dir>/MODEL/BENCHMARK/`` (a filelist's name for filelists):

* ``<sequence>/<frame>.png``: object ids as a palette PNG (DAVIS palette) of the frame's size,
  one per written frame (DAVIS: every frame; YouTube-VOS: the meta.json frames from the first
  appearance; filelists: flag-1 lines); the first annotated frame is the given annotation, void
  turned into background;
* ``<results-dir>/MODEL/BENCHMARK.zip`` for davis17dev / ytvos18 / ytvos19 after a run over all
  sequences: the server's layout (:mod:`label_prop.submission`);
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from label_prop.datasets import data_root, get_benchmark, list_sequences, parse_sequences, plan_sequence
from label_prop.features import CheckpointError, FrameEncoder, build_encoder
from label_prop.filelists import read_filelist, resolve_filelist
from label_prop.io import VOID_ID, atomic_write, overlay, read_frame, read_mask, write_palette_png
from label_prop.multiref import MultiRefPropagator, masks_on_grid, new_object_ids
from label_prop.submission import build_submission, submission_path

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


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file; FileNotFoundError / ValueError naming the file otherwise."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"frame not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size[::-1]
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from None


def load_annotation(path: str | os.PathLike, binary: bool | None) -> np.ndarray:
    """Read an annotation as ids ``[H, W]`` uint8; ``binary=None`` detects DAVIS-2016 masks
    (values only 0 and 255) and maps 255 to object 1 (filelists do not say which format).

    Raises:
        FileNotFoundError, ValueError: see :func:`label_prop.io.read_mask`.
    """
    if binary is not None:
        return read_mask(path, binary=binary)
    m = read_mask(path)
    if (m == VOID_ID).any() and set(np.unique(m).tolist()) <= {0, VOID_ID}:
        return (m > 0).astype(np.uint8)
    return m


def segment_video(frames: Iterable[np.ndarray], annotations: Mapping[int, Callable[[], np.ndarray]],
                  encoder: FrameEncoder, *, start_ids: Mapping[int, Sequence[int]] | None = None,
                  object_ids: Sequence[int] | None = None, max_objects: int = 19,
                  sources: Mapping[int, str] | None = None, device: torch.device | str = "cpu",
                  topk: int = 15, temperature: float = 0.1, radius: float = 12, n_context: int = 50,
                  input_size: int = -1, timings: Timings | None = None) -> Iterator[np.ndarray]:
    """Segment a video whose objects may start at any frame, streaming (HVC_METHOD.md section 5).

    Uses :class:`~label_prop.multiref.MultiRefPropagator`: one reference per start frame, merged
    per object channel with renormalisation. An annotation is read (its callable called) only
    when the stream reaches its frame, and no other ground truth is touched.

    Args:
        frames: iterable of ``[H, W, 3]`` uint8 RGB frames of one size.
        annotations: frame index -> callable returning that frame's ``[H, W]`` uint8 ids
            (255 = void, treated as background).
        encoder: ``[N, 3, H, W] -> [N, C, h, w]`` L2-normalised features.
        start_ids: frame index -> ids starting there (must be in that annotation); default:
            every id of the annotation not started before (and in ``object_ids`` if given).
        object_ids: all ids to track (the channels, ``[0, *object_ids]``). Default: the ids of
            the annotation when there is only one, else ``max_objects`` channels assigned in
            order of appearance.
        max_objects: channel budget when ids are discovered (HVC: 19 objects + background).
        sources: frame index -> file name, for error messages.
        device, topk, temperature, radius, n_context: propagation settings.
        input_size: short side in pixels the frames are scaled to before feature extraction
            (-1 = full resolution); annotations stay at full resolution (their one-hot masks are
            downsampled to the grid) and predictions are upsampled to the frame's size.
        timings: optional accumulator of the seconds spent per stage.

    Yields:
        ``[H, W]`` uint8 ids per frame: 0 before the first object starts; at the first start,
        the annotation with untracked ids and void set to 0; at later starts the prediction
        with the new objects' annotated pixels pasted; elsewhere the argmax of the merged
        soft labels upsampled bilinearly (``align_corners=True``).

    Raises:
        ValueError: frame sizes differ, an annotation's size differs from the frames', a listed
            start id is absent from its annotation, or more than ``max_objects`` ids appear.
    """
    device = torch.device(device)
    timings = timings if timings is not None else Timings()
    sources = sources or {}
    fixed = [int(i) for i in object_ids] if object_ids is not None else None
    prop: MultiRefPropagator | None = None
    chan_of: dict[int, int] = {}  # started id -> channel
    slot_of: dict[int, int] = {}  # id -> channel, for every id with a channel
    chan_ids = np.zeros(1, np.uint8)  # channel -> id
    size = None
    for t, frame in enumerate(frames):
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise ValueError(f"frame {t} has size {frame.shape[:2]}, frame 0 {size}")
        mask, new = None, []
        src = sources.get(t, f"annotation of frame {t}")
        if t in annotations:
            mask = np.asarray(annotations[t]())
            if mask.shape != size:
                raise ValueError(f"{src}: size {mask.shape} differs from the frame's {size}")
            if start_ids is not None:
                new = [int(i) for i in start_ids.get(t, [])]
                absent = [i for i in new if not (mask == i).any()]
                if absent:
                    raise ValueError(f"{src}: object ids {absent} are not in this annotation")
            else:
                new = new_object_ids(mask, set(chan_of))
                if fixed is not None:
                    new = [i for i in new if i in fixed]
            new = [i for i in new if i not in chan_of]
        if prop is None and not new:
            timings.frames += 1
            yield np.zeros(size, np.uint8)
            continue
        t0 = time.perf_counter()
        feat = encoder.encode_frame(frame, device, input_size)
        _sync(device)
        t1 = time.perf_counter()
        timings.features += t1 - t0
        timings.frames += 1
        first = prop is None
        if first:
            channels = fixed if fixed is not None else (new if len(annotations) == 1 else None)
            prop = MultiRefPropagator(1 + (len(channels) if channels is not None else max_objects), topk=topk,
                                      temperature=temperature, radius=radius, n_context=n_context)
            chan_ids = np.zeros(prop.K, np.uint8)
            for c, i in enumerate(channels or [], 1):
                chan_ids[c], slot_of[i] = i, c
        started_now: dict[int, int] = {}
        for i in new:
            if i not in slot_of:
                free = [c for c in range(1, prop.K) if chan_ids[c] == 0]
                if not free:
                    raise ValueError(f"{src}: object {i} exceeds the {prop.K - 1} object channels"
                                     + (" (raise --max-objects)" if fixed is None else ""))
                chan_ids[free[0]], slot_of[i] = i, free[0]
            started_now[i] = chan_of[i] = slot_of[i]
        if started_now:
            g = masks_on_grid(mask, started_now, prop.K, tuple(feat.shape[1:]), with_background=first)
            y = prop.step(feat, g.to(device), list(started_now.values()))
        else:
            y = prop.step(feat)
        if first:
            out = np.where(np.isin(mask, list(started_now)), mask, 0).astype(np.uint8)
        else:
            out = labels_to_ids(y, size, chan_ids)
            timings.propagate += time.perf_counter() - t1
            timings.propagated += 1
            if started_now:
                pasted = np.isin(mask, list(started_now))
                out[pasted] = mask[pasted]
        yield out


def segment_frames(frames: Iterable[np.ndarray], first_mask: np.ndarray, encoder: FrameEncoder, *,
                   device: torch.device | str = "cpu", topk: int = 15, temperature: float = 0.1,
                   radius: float = 12, n_context: int = 50, object_ids: Sequence[int] | None = None,
                   input_size: int = -1, timings: Timings | None = None) -> Iterator[np.ndarray]:
    """Segment a video from its first-frame mask, streaming (memory bounded by ``n_context + 1``
    frames). :func:`segment_video` with every object starting at frame 0 (a single reference,
    bit-for-bit the single-reference engine).

    Args:
        frames: iterable of ``[H, W, 3]`` uint8 RGB frames, all of the same size; frame 0 first.
        first_mask: ``[H, W]`` object ids of frame 0 (255 = void, treated as background).
        encoder: the feature extractor (``[N, 3, H, W] -> [N, C, h, w]``, L2-normalised).
        device: where features and propagation run.
        topk, temperature, radius, n_context: the propagation protocol (see
            :class:`~label_prop.engine.LabelPropagator`).
        input_size: short side the frames are scaled to before feature extraction (-1 = full
            resolution; see :func:`segment_video`).
        object_ids: ids to track (default: all of ``first_mask``).
        timings: optional accumulator of the seconds spent per stage.

    Yields:
        ``[H, W]`` uint8 object ids per frame; frame 0 yields ``first_mask`` with untracked ids
        and void set to 0.

    Raises:
        ValueError: a frame's size differs from the first mask's, or a requested id is absent.
    """
    first_mask = np.asarray(first_mask)
    present = [int(i) for i in np.unique(first_mask) if i not in (0, VOID_ID)]
    ids = present if object_ids is None else [int(i) for i in object_ids]
    missing = [i for i in ids if i not in present]
    if missing:
        raise ValueError(f"object ids {missing} are not in the first-frame mask (present: {present})")
    size = first_mask.shape

    def checked() -> Iterator[np.ndarray]:
        for t, frame in enumerate(frames):
            if frame.shape[:2] != size:
                raise ValueError(f"frame {t} has size {frame.shape[:2]}, the first-frame mask {size}")
            yield frame

    yield from segment_video(checked(), {0: lambda: first_mask}, encoder, start_ids={0: ids}, object_ids=ids,
                             device=device, topk=topk, temperature=temperature, radius=radius,
                             n_context=n_context, input_size=input_size, timings=timings)


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


def _plans(args: argparse.Namespace):
    """(name, plans, benchmark or None) of a benchmark name or a filelist."""
    listfile = resolve_filelist(args.benchmark)
    if listfile is not None:
        if args.split:
            raise ValueError("--split applies to benchmarks, not to filelists; use --sequences")
        sequences = parse_sequences(listfile.stem, args.sequences, None)
        plans = read_filelist(listfile, args.data_root, read_masks=args.read_masks)
        if sequences:
            unknown = [s for s in sequences if s not in {p.name for p in plans}]
            if unknown:
                raise ValueError(f"{listfile}: sequences not in the list: {', '.join(unknown)}")
            plans = [p for p in plans if p.name in set(sequences)]
        return listfile.stem, plans, None
    bench = get_benchmark(args.benchmark)
    names = list_sequences(bench, args.data_root, parse_sequences(bench, args.sequences, args.split))
    return bench.name, [plan_sequence(bench, s, args.data_root) for s in names], bench


def run_benchmark(args: argparse.Namespace) -> Path:
    """Segment every requested sequence of a benchmark or filelist; returns the run record's path.

    Objects start where their first annotation is (:func:`segment_video`); for benchmarks
    scored by a server (``davis17dev``, ``ytvos18``, ``ytvos19``) a run over all sequences
    also writes ``<results-dir>/MODEL/BENCHMARK.zip`` (:mod:`label_prop.submission`).

    Raises:
        ValueError, FileNotFoundError, CheckpointError: bad benchmark, sequence, data or model.
        FileExistsError: a sequence's results (or the zip) exist and ``args.overwrite`` is False.
    """
    name, plans, bench = _plans(args)
    names = [p.name for p in plans]
    out_root = Path(args.results_dir) / args.model / name
    zip_path = None
    if bench is not None and bench.submission and not args.sequences and not args.split:
        zip_path = submission_path(args.results_dir, args.model, bench)
    ov_root = Path(args.results_dir) / args.model / "overlays" / name
    if not args.overwrite:
        existing = [str(out_root / s) for s in names if (out_root / s).exists()]
        if args.save_overlays:
            existing += [str(ov_root / s) for s in names if (ov_root / s).exists()]
        if existing:
            raise FileExistsError(
                f"results exist: {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                f"pass --overwrite to replace them"
            )
        if zip_path is not None and zip_path.exists():
            raise FileExistsError(f"{zip_path} exists; pass --overwrite to replace it")
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
    for plan in plans:
        seq, paths = plan.name, plan.frames
        t_first = min(plan.annotations)
        first_img_size = _image_size(paths[t_first])
        tmp_dir = out_root / f".{seq}.partial"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        ov_dir = ov_root / seq
        if args.save_overlays:
            shutil.rmtree(ov_dir, ignore_errors=True)  # absent, or --overwrite was given
            ov_dir.mkdir(parents=True)
        tm = Timings()
        frames_read: list[np.ndarray] = []

        def reader() -> Iterator[np.ndarray]:
            for p in paths:
                t0 = time.perf_counter()
                img = read_frame(p)
                tm.read += time.perf_counter() - t0
                frames_read[:] = [img]
                yield img

        def loader(path: Path, binary: bool | None) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                m = load_annotation(path, binary)
                if m.shape != first_img_size:
                    raise ValueError(f"{path}: size {m.shape} differs from the frame {paths[t_first]} "
                                     f"{first_img_size}")
                return m
            return load

        anns = {t: loader(p, plan.binary) for t, p in plan.annotations.items()}
        it = segment_video(reader(), anns, encoder, start_ids=plan.start_ids, object_ids=plan.object_ids,
                           max_objects=args.max_objects, sources={t: str(p) for t, p in plan.annotations.items()},
                           device=device, topk=args.topk, temperature=args.temperature, radius=args.radius,
                           n_context=args.n_context, input_size=args.input_size, timings=tm)
        try:
            for p, save, ids in tqdm(zip(paths, plan.save, it), total=len(paths), desc=seq, unit="frame",
                                     file=sys.stderr):
                if not save:
                    continue
                t0 = time.perf_counter()
                write_palette_png(tmp_dir / f"{p.stem}.png", ids)
                if args.save_overlays:
                    Image.fromarray(overlay(frames_read[0], ids)).save(ov_dir / f"{p.stem}.jpg", quality=90)
                tm.write += time.perf_counter() - t0
        except (ValueError, FileNotFoundError):
            shutil.rmtree(tmp_dir, ignore_errors=True)  # a data error: leave no partial folder
            raise
        final = out_root / seq
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_dir, final)
        total.add(tm)
        record["sequences"][seq] = {"frames": len(paths), "written": sum(plan.save), **tm.per_frame()}
        # The record is rewritten after every sequence, so an interrupted run keeps its timings.
        record["complete"] = seq == names[-1]
        record["wall_s"] = time.perf_counter() - wall0
        record["frames"] = total.frames
        record.update(total.per_frame())
        if record["complete"] and zip_path is not None:
            build_submission(bench, out_root, zip_path, overwrite=True,
                             expected={p.name: p.saved_names() for p in plans})
            record["submission_zip"] = str(zip_path)
        atomic_write(run_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    return run_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bash scripts/run_test.sh",
        description="Segment a benchmark or filelist by label propagation from the given object masks.",
    )
    p.add_argument("model", metavar="MODEL", help="'random' (seeded baseline), a name (checkpoints/MODEL.pth) or a .pth path")
    p.add_argument("benchmark", metavar="BENCHMARK",
                   help="davis16, davis17, davis17dev, ytvos18, ytvos19, or a filelist (a .txt path or a "
                        "name in data/filelists/)")
    p.add_argument("--sequences", default=None, help="comma-separated sequences (default: all)")
    p.add_argument("--split", default=None, help="a named half of the benchmark instead of --sequences: "
                   "dev (for choosing settings) or heldout (for reporting); davis16 only")
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
    p.add_argument("--input-size", type=int, default=-1,
                   help="scale frames so that their short side is this many pixels before feature extraction "
                        "(bilinear; -1 = full resolution, the default); masks are written and scored at full size")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the 'random' encoder (default 0)")
    p.add_argument("--read-masks", choices=("first", "existing"), default="first",
                   help="filelists only: read only each sequence's first mask (default), or every mask file "
                        "that exists (objects start at their first mask: YouTube-VOS valid lists)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--max-objects", type=int, default=19,
                   help="object channels when ids are discovered while streaming (default 19, as HVC)")
    return p


def call_cli(job: Callable[[argparse.Namespace], object], args: argparse.Namespace):
    """Run ``job(args)`` for a command-line entry point of this package.

    Applies ``args.threads`` (torch CPU threads, when set) first. Bad input (ValueError,
    FileNotFoundError, FileExistsError, CheckpointError) becomes one ``error: ...`` line on stderr
    and the result ``None``; anything else propagates. Returns ``job``'s result otherwise.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return job(args)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 error)."""
    run_path = call_cli(run_benchmark, build_parser().parse_args(argv))
    if run_path is None:
        return 1
    rec = json.loads(run_path.read_text())
    print(f"{rec['frames']} frames of {len(rec['sequences'])} sequences in {rec['wall_s']:.1f} s on {rec['device']}: "
          f"features {rec['features_s_per_frame']:.3f} s/frame, propagation {rec['propagate_s_per_frame']:.3f} s/frame")
    print(f"wrote {run_path.parent}/<sequence>/*.png and {run_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
