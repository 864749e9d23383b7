"""The prepared GPU check: one run of at most 9 minutes on a GPU machine where python3 already has
torch, torchvision, opencv, scikit-image, pandas and tqdm, nothing can be installed or
downloaded, and only this source tree (with ``device_data/`` from ``bash scripts/pack_device_data.sh``)
arrives. Run it as ``bash scripts/device_check.sh [--smoke]`` (from the source tree, with
``PYTHONPATH`` set to it; never installs anything).

Stages, in order, each a subprocess with its own time box (killed with its process group when
the box or the overall budget runs out; a failing stage is recorded and the later ones still run):

1. ``env``: GPU, CUDA and torch versions, CPU count (in a subprocess: this driver never touches
   the GPU).
2. ``tests``: ``python -m pytest -q -m cuda`` on the test files holding tests marked ``cuda``
   (skipped, with a note, when pytest is not installed).
3. ``train``: ``python -m hvc.train`` on ``DATA/unlabeled-video`` at the paper's batch 128 and
   256 px crops with AMP (float16, grad scaler), the paper's 20-epoch schedule, for a time
   budget: a first run stops at step ``CALIBRATION_STEPS`` (in ``scripts/device_stages.py``,
   where the stages are); the step time measured between its log rows sets ``--stop-at`` of a
   second run that resumes it (``--resume auto``) so that the stage ends inside its box (planned on 80 % of the time left); both runs checkpoint every
   ``--ckpt-every`` steps, so a second run killed at the box keeps its last checkpoint (the stage
   then counts as done, with a note).
4. ``export``: ``python -m hvc.export --inference-only`` (conv1..layer3, 11 MB).
5. ``score``: ``python -m label_prop.run`` on the packed DAVIS-2016 sequences on the GPU with the
   exported encoder (``random`` if the export failed), the default protocol at full
   resolution, then ``python -m label_prop.evaluate``: J&F and frames/s.
6. ``bench``: ``benchmarks/bench_label_prop.py --device cuda --n-context 20 50 --features``
   (engine against dense at 480p; encoder per autocast dtype).
7. ``score_random``: the ``random`` baseline on the same sequences, when time is left (not in
   the smoke run).

Written to ``$OUT`` (default ``./device_out``; at most 8 files, each under 16 MiB):
``summary.json`` (rewritten after every stage: GPU, torch, images/s, peak GPU memory, loss, J&F,
frames/s, the benchmark's rows, each stage's status, seconds, command and output tail),
``train_log.csv`` and ``train_run.json`` (the trainer's log and run record), ``encoder.pth``,
``per-sequence_results.csv``, ``bench.json`` and ``device_check.log`` (every stage's output).

``--smoke``: the same stages on the CPU with a tiny budget (batch 4 of 64 px crops, a few
steps, the shortest packed sequence at ``--input-size 96``, a small benchmark grid), so that the one GPU
run does not fail on a typo; a few minutes here.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # run as a script it is sys.path[0]; loaded by file path (the tests) it is not
    sys.path.insert(0, _HERE)
from device_stages import REPO, STAGES, Check, MiB, Settings  # noqa: E402  (the sibling module)

#: Largest file written to $OUT, bytes (the log is cut in the middle beyond it).
MAX_FILE = 15 * MiB


GPU = Settings(
    device="cuda", budget_s=510,
    boxes={"env": (40, 10), "tests": (120, 0), "train": (200, 60), "export": (30, 15), "score": (90, 40),
           "bench": (60, 30), "score_random": (45, 0)},
    # The paper's setting: batch 128, 256 px crops, 20 epochs, AMP float16 (run_train.sh defaults).
    train=["--batch-size", "128", "--img-size", "256", "--amp", "--amp-dtype", "float16", "--epochs", "20"],
    score=[],  # the default protocol: n_context 50, full resolution
    bench=["--n-context", "20", "50", "--repeats", "5", "--features"],
    ckpt_every=50, log_every=5)
SMOKE = Settings(
    device="cpu", budget_s=450,
    boxes={"env": (40, 10), "tests": (90, 0), "train": (120, 30), "export": (30, 15), "score": (120, 30),
           "bench": (60, 20), "score_random": (45, 0)},
    train=["--batch-size", "4", "--img-size", "64", "--steps", "40", "--workers", "0", "--threads", "2"],
    score=["--input-size", "96", "--n-context", "2", "--threads", "2"],
    bench=["--grid", "14", "17", "--channels", "16", "--n-context", "3", "--repeats", "1", "--features",
           "--precisions", "float32", "--frame-size", "64", "96", "--threads", "2"],
    ckpt_every=20, log_every=1, skip=("score_random",), max_steps=5, min_resumed_steps=2)



def main(argv: list[str] | None = None) -> int:
    """Run the stages; returns 0 when every stage that ran succeeded, else 1."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="bash scripts/device_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run of every stage (a few minutes)")
    p.add_argument("--data", type=Path, default=REPO / "device_data",
                   help="the packed data (default: device_data/ from scripts/pack_device_data.sh)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"seconds for the whole run (default {GPU.budget_s:g}, smoke {SMOKE.budget_s:g})")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for the run (default: a new temporary one)")
    args = p.parse_args(argv)
    settings = SMOKE if args.smoke else GPU
    out = Path(os.environ.get("OUT") or REPO / "device_out").resolve()
    data = args.data.resolve()
    for need in ("unlabeled-video/JPEGImages", "DAVIS2016/ImageSets/2016/val.txt"):
        if not (data / need).exists():
            print(f"device_check: error: {data / need} not found; run bash scripts/pack_device_data.sh first "
                  f"(or give --data)", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="hvc-device-check-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or settings.budget_s
    c = Check(settings, args.smoke, data, out, work, os.environ.get("PYTHON", sys.executable),
              time.monotonic() + budget)
    c.summary.update(_t0=time.monotonic(), mode="smoke" if args.smoke else "gpu", device=settings.device,
                     started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), budget_s=budget,
                     host=platform.node(), python=platform.python_version(), data=str(data),
                     data_readme=(data / "README.txt").read_text() if (data / "README.txt").is_file() else None,
                     stages={})
    print(f"device check ({c.summary['mode']}, budget {budget:.0f} s): output in {out}, scratch in {work}", flush=True)
    with open(out / "device_check.log", "w") as c.log:
        for i, (name, fn) in enumerate(STAGES):
            box = c.box(name, [n for n, _ in STAGES[i + 1:]])
            t0 = time.monotonic()
            if name in settings.skip:
                status, facts = "skipped", {"note": f"not run in {c.summary['mode']} mode"}
            elif box < max(settings.boxes[name][1], 20):
                status, facts = "skipped", {"note": f"no time left ({max(box, 0):.0f} s of the budget)"}
            else:
                try:
                    status, facts = fn(c, box)
                except Exception as exc:  # a bug in a stage must not stop the others
                    status, facts = "failed", {"error": f"{type(exc).__name__}: {exc}"}
            facts.update(status=status, seconds=round(time.monotonic() - t0, 1), box_s=round(max(box, 0), 1))
            c.summary["stages"][name] = facts
            c.save()
            print(f"  {name:13s} {status:8s} {facts['seconds']:6.1f} s  {_headline(name, facts)}", flush=True)
    _cap_log(out / "device_check.log")
    c.summary["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    c.save()
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    files = sorted(f.name for f in out.iterdir() if f.is_file())
    print(f"wrote {len(files)} files to {out}: {', '.join(files)}")
    bad = [n for n, s in c.summary["stages"].items() if s["status"] in ("failed", "timeout")]
    return 1 if bad else 0


def _headline(name: str, f: dict) -> str:
    """One line of the stage's main figures, and its note (a failure: its last output line)."""
    last = (f.get("tail") or f.get("table") or (f.get("main") or f.get("calibration") or {}).get("tail")
            or "").strip().splitlines()
    line = f.get("error") or (last[-1][:160] if last and f.get("status") in ("failed", "timeout") else "")
    if name == "env":
        line = f"{f.get('gpu') or 'no GPU'}, torch {f.get('torch')}, CUDA {f.get('cuda')}"
    elif name == "tests":
        line = ", ".join(f"{f[k]} {k}" for k in ("passed", "failed", "skipped") if k in f)
    elif name == "train" and "steps" in f:
        line = (f"{f['steps']} steps ({f['epochs']:.2f} epochs), loss {f['loss_first']:.3f} -> {f['loss_last']:.3f}, "
                f"{f.get('images_per_s_median')} images/s, peak {f.get('peak_mem_mib')} MiB")
    elif name.startswith("score") and "J&F-Mean" in f:
        line = f"{f['model']}: J&F {f['J&F-Mean']:.3f} on {len(f['sequences'])} sequences, {f['frames_per_s']} frames/s"
    elif name == "bench" and f.get("engine"):
        line = "; ".join(f"n{r['n_context']}: engine {1 / r['engine_s_per_frame']:.1f} frames/s, "
                         f"{r['speed_up']:.1f}x dense" for r in f["engine"])
    elif name == "export" and "mib" in f:
        line = f"{f['mib']} MiB"
    return "; ".join(x for x in (line, f.get("note")) if x)


def _cap_log(path: Path) -> None:
    """Keep the log under :data:`MAX_FILE`: its head and tail, the middle cut out."""
    if path.stat().st_size <= MAX_FILE:
        return
    data = path.read_bytes()
    half = MAX_FILE // 2
    path.write_bytes(data[:half] + b"\n[... cut ...]\n" + data[-half:])


if __name__ == "__main__":
    sys.exit(main())
