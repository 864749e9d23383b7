"""Learning curves: J&F of the trained encoder against training time, on video it was not trained on.

Usage::

    python benchmarks/bench_quality.py --output-dir bench_out/quality/NAME [--seeds 42 43]
        [--minutes 60] [--points 6] [--input-size 240] [--n-context 20] [--split dev] [--threads 1]
        -- TRAINING FLAGS (e.g. --preset cpu-1h, or --steps 1500 --batch-size 16 --img-size 128)

For every seed: a training run (``python -m hvc.train``, data ``$HVC_DATA_ROOT/unlabeled-video``
unless the training flags name ``--data``) is stopped at ``--points`` evenly spaced steps of its
schedule (``--stop-at``; the run resumes exactly, so the snapshots lie on one uninterrupted
schedule); each snapshot, and step 0 (the same network, untrained), is exported and scored by
label propagation on a named half of DAVIS-2016 val (``--split dev`` by default: the half for
choosing settings) with the *fast protocol* (frames scaled to a short side of ``--input-size``
pixels before feature extraction, ``--n-context`` context frames, masks scored at full size).
The torchvision-initialised ``random`` encoder (the baseline to beat) is scored once with the same
protocol. Training stops early once ``--minutes`` of training wall time are spent.

Outputs, in ``--output-dir``:

* ``quality.csv``: one row per (seed, step): ``seed, step, images, train_minutes, JF, J, F``
  (``images`` = frames seen = step x batch x clip length; ``train_minutes`` = wall time of the
  training processes up to that step, start-up included), plus a ``random`` row;
* ``quality.png``: J&F against frames seen in training, one line per seed, ``random`` dashed;
* ``seed-S/``: the run (checkpoint, log.csv, run.json), ``snapshots/``, ``encoders/`` and the
  predicted masks under ``results/``.

Everything already there is reused: an interrupted benchmark continues where it stopped. Every
step is a plain command (the same a user would type), run as a subprocess; the table printed at
the end gives the final point's mean and spread over the seeds.

Evaluation costs about 0.6 s per frame at ``--input-size 240`` on one CPU thread with the other
core busy (measured on DAVIS-2016; 645 frames in the dev half), i.e. about 7 minutes per point.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root, appending its output to ``log``; returns wall seconds.

    Raises:
        RuntimeError: the command failed (names it and the log).
    """
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"command failed (exit {rc}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def _flag(args: list[str], name: str) -> str | None:
    """Value of ``--name V`` or ``--name=V`` in a flag list (last one wins), else None."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def score(model: str, ckpt_dir: Path, results: Path, opts: argparse.Namespace, log: Path) -> dict[str, float]:
    """J&F, J and F of ``model`` on ``opts.split`` of davis16 with the fast protocol (cached in
    ``results/MODEL/davis16/global_results-SPLIT.csv``)."""
    which = ["--sequences", opts.sequences] if opts.sequences else ["--split", opts.split]
    csv = results / model / "davis16" / ("global_results.csv" if opts.sequences else f"global_results-{opts.split}.csv")
    if not csv.is_file():
        _run([PY, "-m", "label_prop.run", model, "davis16", *which, "--input-size",
              str(opts.input_size), "--n-context", str(opts.n_context), "--threads", str(opts.threads),
              "--precision", "float32",  # exact and the same on every machine, so curves compare across machines
              "--checkpoints-dir", str(ckpt_dir), "--results-dir", str(results), "--overwrite"], log)
        _run([PY, "-m", "label_prop.evaluate", model, "davis16", *which,
              "--results-dir", str(results), "--overwrite"], log)
    row = pd.read_csv(csv).iloc[0]
    return {"JF": float(row["J&F-Mean"]), "J": float(row["J-Mean"]), "F": float(row["F-Mean"])}


def snapshot_steps(total: int, points: int) -> list[int]:
    """``points`` evenly spaced steps ending at ``total``, with step 0 first (ints, increasing)."""
    return sorted({0, *(int(round(total * k / points)) for k in range(1, points + 1))})


def train_seed(seed: int, opts: argparse.Namespace, train_args: list[str], rows: list[dict]) -> None:
    """Train one seed snapshot by snapshot and score every snapshot; appends to ``rows``."""
    run = opts.output_dir / f"seed-{seed}"
    snaps, encs = run / "snapshots", run / "encoders"
    for d in (snaps, encs):
        d.mkdir(parents=True, exist_ok=True)
    log = run / "bench.log"
    data = [] if _flag(train_args, "--data") else ["--data", str(Path(os.environ.get("HVC_DATA_ROOT", "data"))
                                                                  / "unlabeled-video")]
    base = [PY, "-m", "hvc.train", *data, *train_args, "--seed", str(seed), "--output-dir", str(run),
            "--resume", "auto", "--threads", str(opts.threads), "--no-progress"]
    minutes_file = run / "train_minutes.txt"  # cumulative training wall time per snapshot step
    spent = dict(tuple(map(float, line.split())) for line in minutes_file.read_text().splitlines()) \
        if minutes_file.is_file() else {}
    step_done = 0
    # The schedule length comes from the step-0 checkpoint.
    snap0 = snaps / "step-00000.pth"
    if not snap0.is_file():
        _run(base + ["--stop-at", "0"], log)
        shutil.copyfile(run / "checkpoint.pth", snap0)
        spent[0.0] = 0.0
    import torch  # only to read the schedule length and batch from the checkpoint

    ck = torch.load(snap0, map_location="cpu", weights_only=True)
    total = int(ck["total_steps"])
    per_step = int(ck["args"]["batch_size"]) * int(ck["args"].get("clip_len", 1))
    del ck
    minutes = max(spent.values()) if spent else 0.0
    for step in snapshot_steps(total, opts.points):
        snap = snaps / f"step-{step:05d}.pth"
        if not snap.is_file():
            if minutes >= opts.minutes:
                print(f"seed {seed}: training budget of {opts.minutes} min spent at step {step_done}", file=sys.stderr)
                break
            minutes += _run(base + ["--stop-at", str(step)], log) / 60.0
            shutil.copyfile(run / "checkpoint.pth", snap)
            spent[float(step)] = minutes
            minutes_file.write_text("".join(f"{k:g} {v:.4f}\n" for k, v in sorted(spent.items())))
        step_done = step
        name = f"step-{step:05d}"
        if not (encs / f"{name}.pth").is_file():
            _run([PY, "-m", "hvc.export", str(snap), str(encs / f"{name}.pth"), "--overwrite"], log)
        s = score(name, encs, run / "results", opts, log)
        rows.append({"seed": seed, "step": step, "images": step * per_step,
                     "train_minutes": round(spent.get(float(step), float("nan")), 2), **s})
        print(f"seed {seed} step {step:6d} images {step * per_step:7d} "
              f"minutes {spent.get(float(step), float('nan')):6.1f}  J&F {s['JF']:.3f}", file=sys.stderr)


def plot(df: pd.DataFrame, path: Path, title: str) -> None:
    """J&F against frames seen in training (machine-independent; the minutes are in the CSV),
    one line per seed, the random baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    runs = df[df["seed"] != "random"]
    for seed, g in runs.groupby("seed"):
        ax.plot(g["images"], g["JF"], marker="o", label=f"seed {seed}")
    rnd = df[df["seed"] == "random"]
    if len(rnd):
        ax.axhline(float(rnd["JF"].iloc[0]), color="k", linestyle="--", label="random (torchvision init)")
    ax.set_xlabel("frames seen in training (step x batch x clip length)")
    ax.set_ylabel("J&F-Mean")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", type=Path, required=True, help="where runs, scores, CSV and plot go")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="training seeds")
    p.add_argument("--points", type=int, default=6, help="scored snapshots per run (plus step 0)")
    p.add_argument("--minutes", type=float, default=60.0, help="training wall-time budget per seed, minutes")
    p.add_argument("--split", default="dev", help="half of DAVIS-2016 val to score (dev or heldout)")
    p.add_argument("--sequences", default=None, help="comma-separated sequences instead of --split (smoke tests)")
    p.add_argument("--input-size", type=int, default=240, help="short side of frames for features, pixels")
    p.add_argument("--n-context", type=int, default=20, help="context frames of the propagation")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of training and scoring")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="flags for python -m hvc.train, after --")
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    train_args = [a for a in opts.train_args if a != "--"] if opts.train_args[:1] == ["--"] else opts.train_args
    if opts.points < 1 or opts.minutes <= 0:
        print("error: --points must be >= 1 and --minutes > 0", file=sys.stderr)
        return 2
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for seed in opts.seeds:
        train_seed(seed, opts, train_args, rows)
    s = score("random", opts.output_dir / "none", opts.output_dir / "results-random", opts,
              opts.output_dir / "bench.log")
    rows.append({"seed": "random", "step": 0, "images": 0, "train_minutes": 0.0, **s})
    df = pd.DataFrame(rows)
    csv = opts.output_dir / "quality.csv"
    tmp = csv.with_name(".quality.csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    where = f"sequences {opts.sequences}" if opts.sequences else f"{opts.split} half"
    title = (f"DAVIS-2016 val {where}, input {opts.input_size}, n-context {opts.n_context}; "
             f"train: {' '.join(train_args)}")
    plot(df, opts.output_dir / "quality.png", title)
    with pd.option_context("display.precision", 3, "display.width", 160):
        print(df.to_string(index=False))
    last = df[df["seed"] != "random"].sort_values("step").groupby("seed").tail(1)
    jf = last["JF"].to_numpy(dtype=float)
    print(f"\nfinal point over {len(jf)} seeds: J&F {jf.mean():.3f} (min {jf.min():.3f}, max {jf.max():.3f}, "
          f"std {jf.std(ddof=1) if len(jf) > 1 else 0.0:.3f}); random {s['JF']:.3f}; "
          f"difference {jf.mean() - s['JF']:+.3f}")
    print(f"wrote {csv} and {opts.output_dir / 'quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
