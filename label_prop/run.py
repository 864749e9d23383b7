"""Segment a benchmark by label propagation and write palette PNGs (``scripts/run_test.sh``).

Usage::

    python -m label_prop.run MODEL BENCHMARK|FILELIST [--sequences a,b | --split dev|heldout] [--overwrite]
        [--resume] [--save-overlays] [--data-root PATH] [--results-dir results] [--read-masks first|existing]
        [--topk 15] [--temperature 0.1] [--radius 12] [--n-context 50] [--input-size -1] [--max-objects 19]
        [--checkpoints-dir checkpoints] [--moco FILE] [--seed 0] [--device auto|cpu|cuda] [--threads N]
        [--precision auto|float32|bfloat16|float16] [--shard I/N]
    torchrun --nproc_per_node N -m label_prop.run MODEL BENCHMARK ...     # one shard per rank

This module parses the command line and writes files; the work is done by the library:
:func:`label_prop.data.filelists.open_benchmark` (a benchmark of :mod:`label_prop.data.datasets` or a
filelist) gives one :class:`~label_prop.data.plans.SequencePlan` per sequence, and
:func:`label_prop.propagation.pipeline.segment_plan` segments it frame by frame
(:class:`~label_prop.propagation.pipeline.VideoSegmenter`) with the encoder of :mod:`label_prop.propagation.features`
and the settings of :class:`~label_prop.config.PropagationConfig`.

MODEL is ``random``, a name (``checkpoints/NAME.pth``) or a weights file path; results go under
``<results-dir>/<model name>/BENCHMARK/`` (a filelist's name for filelists), where a file path's
model name is its stem (:func:`label_prop.evaluation.results.model_name`; ``run_metrics.sh`` maps MODEL the
same way). Outputs there:

* ``<sequence>/<frame>.png``: object ids as a palette PNG (DAVIS palette) of the frame's size,
  one per written frame (DAVIS: every frame; YouTube-VOS: the meta.json frames from the first
  appearance; filelists: flag-1 lines); the first annotated frame is the given annotation, void
  turned into background;
* ``<results-dir>/<model name>/BENCHMARK.zip`` for davis17dev / ytvos18 / ytvos19 after a run over all
  sequences: the server's layout (:mod:`label_prop.evaluation.submission`); under torchrun rank 0 writes it
  when every rank is done; shards run with ``--shard`` leave it to ``python -m label_prop.evaluation.submission``;
* ``run-<UTC timestamp>.json`` (``run-<UTC timestamp>-shardIofN.json`` for a shard): the exact
  command, arguments, git revision, device, versions, the model (name and the weights file's full
  path), the settings that determine the PNGs (:func:`label_prop.evaluation.results.run_settings`), the
  encoder's input normalisation, the shard (index, count, its sequences; rank and world size
  under torchrun) and the measured seconds per frame (frame reading, feature extraction,
  propagation, writing) of each completed sequence (rewritten after each one);
* with ``--save-overlays``: ``<results-dir>/<model name>/overlays/BENCHMARK/<sequence>/<frame>.jpg``.

A sequence (and its overlays) is written into a hidden ``.<sequence>.partial`` folder that
replaces the old folder only when complete (:func:`hvc.runtime.staged_dir`), so an interrupted or
failed run (Ctrl-C, bad data, a full disk) never leaves a half-written sequence and never damages
an earlier result. An existing sequence folder is never replaced without ``--overwrite``;
``--resume`` skips the sequences whose results are complete according to the run records
(:func:`label_prop.evaluation.results.completed_sequences`) and redoes the rest; sequences made with other
settings are an error, unless ``--overwrite`` is given too (then they are redone: the way to
finish an interrupted ``--overwrite`` with new settings is the same command with ``--resume``). Score tables
(``global_results*.csv``, ``per-sequence_results*.csv``) that summarise a rewritten sequence are
removed when it is replaced. One progress bar counts the frames of the whole run, with the
remaining time. Sharding (``--shard I/N`` or torchrun: which sequences each shard gets, and when
the zip is built) is :mod:`label_prop.shard`. Exit status: 0, 1 (bad data, or a folder that
cannot be written), 2 (usage error), 130 (interrupted), :mod:`hvc.runtime`.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from hvc.launch import DistContext, dist_context_from_env, resolve_rank_device
from hvc.output_lock import hold_output
from hvc.hardware import describe
from hvc.runtime import atomic_write, clean_stale_temporaries, git_revision, run_cli, staged_dir
from label_prop.config import MemoryConfig, PropagationConfig
from label_prop.data.datasets import parse_sequences
from label_prop.propagation.features import (FrameEncoder, add_encoder_arguments, build_encoder, choose_encoder_precision,
                                 resolve_model)
from label_prop.data.filelists import READ_MASKS, open_benchmark
from label_prop.data.io import overlay, write_jpeg, write_palette_png
from label_prop.propagation.pipeline import Timings, segment_plan
from label_prop.data.plans import Benchmark, SequencePlan, data_root
from label_prop.evaluation.results import (completed_sequences, model_name, overlays_root, remove_stale_summaries,
                                results_root, run_settings)
from label_prop.shard import RULE, Shard, ShardGroup, run_together, shard_for_run
from label_prop.evaluation.submission import build_submission, submission_path

PROG = "bash scripts/run_test.sh"


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, 
        prog=PROG, description="Segment a benchmark or filelist by label propagation from the given object masks.")
    p.add_argument("model", metavar="MODEL", help="'random' (seeded baseline), a name (checkpoints/MODEL.pth) or a .pth path")
    p.add_argument("benchmark", metavar="BENCHMARK",
                   help="davis16, davis17, davis17dev, ytvos18, ytvos19, or a filelist (a .txt path or a "
                        "name in data/filelists/)")
    p.add_argument("--sequences", default=None, help="comma-separated sequences (default: all)")
    p.add_argument("--split", default=None, help="a named half of the benchmark instead of --sequences: "
                   "dev (for choosing settings) or heldout (for reporting); davis16 only")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing results (each sequence when its new results are complete)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: skip the sequences whose results are complete according to "
                        "the run records (run-*.json) made with the same settings, redo the others; a sequence "
                        "made with other settings is an error, or, with --overwrite too, redone")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="segment only shard I of N (0 <= I < N) of the sequences, split by frame count "
                        "(label_prop/shard.py); under torchrun each rank runs shard RANK/WORLD_SIZE without it")
    p.add_argument("--save-overlays", action="store_true", help="also write JPEG overlays")
    p.add_argument("--data-root", default=None, help="data root (default: $HVC_DATA_ROOT, else ./data)")
    p.add_argument("--results-dir", default="results", type=Path, help="results root (default: results)")
    p.add_argument("--read-masks", choices=READ_MASKS, default="first",
                   help="filelists only: read only each sequence's first mask (default), or every mask file "
                        "that exists (objects start at their first mask: YouTube-VOS valid lists)")
    PropagationConfig.add_arguments(p)
    MemoryConfig.add_arguments(p)
    add_encoder_arguments(p)
    return p


def _check_outputs(args: argparse.Namespace, names: list[str], out_root: Path, ov_root: Path,
                   zip_path: Path | None) -> None:
    """FileExistsError naming what exists, unless ``--overwrite`` (or ``--resume``: the
    sequences in ``names`` are the incomplete ones, which it replaces)."""
    if args.overwrite or args.resume:
        return
    existing = [str(out_root / s) for s in names if (out_root / s).exists()]
    if args.save_overlays:
        existing += [str(ov_root / s) for s in names if (ov_root / s).exists()]
    if existing:
        raise FileExistsError(f"results exist: {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                              f"pass --overwrite to replace them, or --resume to keep the complete ones")
    if zip_path is not None and zip_path.exists():
        raise FileExistsError(f"{zip_path} exists; pass --overwrite to replace it")


def _resume(plans: list[SequencePlan], out_root: Path, ov_root: Path | None,
            settings: dict, overwrite: bool) -> tuple[list[SequencePlan], dict[str, str]]:
    """``--resume``: ``(plans still to do, {skipped sequence: the run record that lists it})``.

    A sequence is skipped when :func:`label_prop.evaluation.results.completed_sequences` says its results
    are complete and, with ``--save-overlays`` (``ov_root``), its overlays are all there too.
    With ``overwrite`` a sequence made with other settings is redone instead of refused.

    Raises:
        UsageError: a sequence's results were made with other settings (named), without ``overwrite``.
    """
    done = completed_sequences(out_root, plans, settings, redo_other_settings=overwrite)
    if ov_root is not None:
        done = {p.name: done[p.name] for p in plans if p.name in done
                and {f.stem for f in (ov_root / p.name).glob("*.jpg")} == set(p.saved_names())}
    todo = [p for p in plans if p.name not in done]
    print(f"--resume: {len(done)} of {len(plans)} sequences are complete in {out_root}; "
          f"{len(todo)} to do{': ' + ', '.join(p.name for p in todo[:5]) if todo else ''}"
          f"{' ...' if len(todo) > 5 else ''}", file=sys.stderr)
    return todo, {k: v.name for k, v in done.items()}


def _write_sequence(plan: SequencePlan, encoder: FrameEncoder, config: PropagationConfig, memory: MemoryConfig,
                    out_root: Path, ov_dir: Path | None, bar: tqdm) -> Timings:
    """Segment one sequence into hidden folders (PNGs; overlays) that replace ``<name>`` when
    complete; the score tables that summarise the old results are removed just before."""
    tm = Timings()
    bar.set_postfix_str(plan.name)
    with staged_dir(out_root / plan.name, within=out_root) as tmp, \
            (staged_dir(ov_dir, within=ov_dir.parent) if ov_dir is not None else nullcontext()) as ov:
        for r in segment_plan(plan, encoder, config, tm, memory):
            bar.update()
            if not r.save:
                continue
            t0 = time.perf_counter()
            write_palette_png(tmp / f"{r.path.stem}.png", r.ids)
            if ov is not None:
                write_jpeg(ov / f"{r.path.stem}.jpg", overlay(r.image, r.ids))
            tm.write += time.perf_counter() - t0
        removed = remove_stale_summaries(out_root, [plan.name])
        if removed:
            tqdm.write(f"removed {', '.join(p.name for p in removed)}: they scored the earlier {plan.name} "
                       f"results; run run_metrics.sh again", file=sys.stderr)
    return tm


def _run(args: argparse.Namespace) -> int:
    """Segment this process's shard of the requested sequences (all of them unsharded), writing
    the PNGs and the run record; the zip when the whole benchmark is complete."""
    ctx = dist_context_from_env()
    shard = shard_for_run(args.shard, ctx)
    with ShardGroup(ctx) as group, ExitStack() as locks:
        # One timestamp (to the microsecond: two runs started within one second must not share a
        # record) for all the shards of a torchrun launch: their records sit side by side.
        started = group.broadcast(datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f"))
        run_together(group, lambda: _segment_shard(args, shard, ctx, started, locks), _finish)
    return 0


@dataclass
class _ShardJob:
    """What a shard's run leaves for :func:`_finish`: the benchmark, every plan of the run (all
    shards), the results folder, the zip to build (None: not this process's job) and this
    process's run record with its path."""

    bench: Benchmark
    plans: list[SequencePlan]
    out_root: Path
    zip_path: Path | None
    record: dict
    run_path: Path


def _segment_shard(args: argparse.Namespace, shard: Shard, ctx: DistContext, started: str,
                   locks: ExitStack) -> _ShardJob:
    """Segment ``shard``'s sequences (those not complete with ``--resume``), writing the PNGs and
    the run record. The lock of the results folder (:func:`hvc.output_lock.hold_output`: one
    whole run, or the shards of one count) is entered into ``locks``, which the caller closes
    after the zip."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PropagationConfig.from_mapping(vars(args))
    memory = MemoryConfig.from_mapping(vars(args))
    bench: Benchmark = open_benchmark(args.benchmark, args.read_masks)
    names = bench.sequences(args.data_root, parse_sequences(bench, args.sequences, args.split))
    all_plans = [bench.plan(s, args.data_root) for s in names]
    if not all_plans:
        raise ValueError(f"{bench.name}: no sequences to segment")
    mine = set(shard.select(names, [len(p.frames) for p in all_plans]))
    plans = [p for p in all_plans if p.name in mine]
    out_root = results_root(args.results_dir, args.model, bench.name)
    ov_root = overlays_root(args.results_dir, args.model, bench.name)
    locks.enter_context(hold_output(out_root, PROG, tag="run" if shard.whole else f"shard-{shard.index}-of-{shard.count}"))
    whole = bench.submission and not args.sequences and not args.split
    # The zip needs every shard: built here unsharded, by rank 0 under torchrun, else by label_prop.evaluation.submission.
    zip_path = submission_path(args.results_dir, args.model, bench) if whole and (shard.whole or ctx.distributed) \
        else None
    model_path = resolve_model(args.model, args.checkpoints_dir)
    device = resolve_rank_device(args.device, ctx)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # so that nothing lands on cuda:0 by default under torchrun
    choice = choose_encoder_precision(args.precision, device)  # probed once; build_encoder reuses it
    settings = run_settings(model_path, config, seed=args.seed, moco=args.moco, read_masks=args.read_masks,
                            precision=choice.precision, channels_last=choice.channels_last, memory=memory)
    todo, skipped = (_resume(plans, out_root, ov_root if args.save_overlays else None, settings, args.overwrite) if args.resume
                     else (plans, {}))
    _check_outputs(args, [p.name for p in todo], out_root, ov_root, zip_path)
    encoder = build_encoder(args.model, checkpoints_dir=args.checkpoints_dir, moco=args.moco, seed=args.seed,
                            device=device, precision=args.precision)
    # Temporaries of killed processes are found by PID, which only this machine's processes have:
    # shards that may run on other machines (--shard, several nodes) leave them, rank 0 of a
    # one-node launch cleans for all.
    if shard.whole or (ctx.is_main and ctx.world_size == ctx.local_world_size):
        clean_stale_temporaries(out_root, PROG)
    record = _new_record(args, model_path, settings, device, encoder, skipped, started)
    record.update(shard={"index": shard.index, "count": shard.count, "rule": RULE, "sequences": [p.name for p in plans],
                         "all_sequences": len(all_plans)}, world_size=ctx.world_size, rank=ctx.rank)
    job = _ShardJob(bench, all_plans, out_root, zip_path, record, out_root / f"run-{started}{shard.tag}.json")
    _segment_all(todo, encoder, config, memory, out_root, ov_root if args.save_overlays else None, record, job.run_path,
                 bench.name if shard.whole else f"{bench.name} {shard.index}/{shard.count}")
    record["complete"] = True
    _write_record(job.run_path, record)
    prefix = "" if shard.whole else f"shard {shard.index}/{shard.count}: "
    print(f"{prefix}{record['frames']} frames of {len(todo)} sequences in {record['wall_s']:.1f} s on {device}: "
          f"features {record['features_s_per_frame']:.3f} s/frame, "
          f"propagation {record['propagate_s_per_frame']:.3f} s/frame"
          + (f" ({len(skipped)} complete sequences skipped)" if skipped else ""))
    print(f"wrote {out_root}/<sequence>/*.png and {job.run_path}")
    if whole and zip_path is None:
        print(f"when all {shard.count} shards are done: python -m label_prop.evaluation.submission {args.model} {bench.name}"
              f"{f' --results-dir {args.results_dir}' if str(args.results_dir) != 'results' else ''}")
    return job


def _finish(job: _ShardJob) -> None:
    """Rank 0 (or the unsharded run), every shard complete: the server zip of a whole submission
    benchmark, noted in this process's run record."""
    if job.zip_path is None:
        return
    build_submission(job.bench, job.out_root, job.zip_path, overwrite=True,
                     expected={p.name: p.saved_names() for p in job.plans})
    job.record["submission_zip"] = str(job.zip_path)
    _write_record(job.run_path, job.record)
    print(f"wrote {job.zip_path}")


def _new_record(args: argparse.Namespace, model_path: Path | None, settings: dict, device: torch.device,
                encoder: FrameEncoder, skipped: dict[str, str], started: str) -> dict:
    """The run record before any sequence is done (see the module docstring)."""
    return {
        "command": shlex.join([sys.executable, "-m", "label_prop.run", *sys.argv[1:]]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {"name": model_name(args.model), "argument": args.model,
                  "path": str(model_path.resolve()) if model_path is not None else None},
        "settings": settings,
        "data_root": str(data_root(args.data_root).resolve()), "git_revision": git_revision(),
        "started_utc": started,
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "host": platform.node(), "normalization": encoder.normalization.name,
        "precision": encoder.precision_choice.record(), "hardware": describe(device),
        "resumed_skipped": skipped,
        "sequences": {}, "complete": False, "wall_s": 0.0, "frames": 0, **Timings().per_frame(),
    }


def _write_record(path: Path, record: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))


def _segment_all(todo: list[SequencePlan], encoder: FrameEncoder, config: PropagationConfig, memory: MemoryConfig,
                 out_root: Path, ov_root: Path | None, record: dict, run_path: Path, desc: str) -> None:
    """Segment ``todo`` under one progress bar over all their frames; the run record is rewritten
    after every sequence, so an interrupted run keeps its timings and ``--resume`` knows which
    sequences are complete."""
    total, wall0 = Timings(), time.perf_counter()
    with tqdm(total=sum(len(p.frames) for p in todo), desc=desc, unit="frame", file=sys.stderr,
              dynamic_ncols=True) as bar:
        for plan in todo:
            tm = _write_sequence(plan, encoder, config, memory, out_root, ov_root / plan.name if ov_root else None,
                                 bar)
            total.add(tm)
            record["sequences"][plan.name] = {"frames": len(plan.frames), "written": sum(plan.save), **tm.per_frame()}
            record.update(wall_s=time.perf_counter() - wall0, frames=total.frames, **total.per_frame())
            _write_record(run_path, record)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 bad data, 2 usage error)."""
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args),
                   interrupted="completed sequences are kept and the one in progress was discarded; "
                               "add --resume to the same command to continue")


if __name__ == "__main__":
    sys.exit(main())
