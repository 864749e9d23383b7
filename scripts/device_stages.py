"""The stages of the prepared GPU check (``scripts/device_check.py`` runs them in order and
describes each): the run's state (:class:`Check`: paths, deadline, summary, log, and ``run``, a
subprocess in its own process group killed at its time box) and one ``stage_*`` function per stage.

Each stage takes ``(check, box)`` (``box``: its time box, seconds) and returns ``(status, facts)``:
``status`` is ``"ok"``, ``"failed"``, ``"timeout"`` or ``"skipped"``, ``facts`` a dict for the
summary. Imported by ``scripts/device_check.py`` as a sibling module (no package needed).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]
MiB = 2 ** 20
#: Steps of the calibration run of the train stage (its step time sets the second run's --stop-at).
CALIBRATION_STEPS = 15
#: Fraction of the time left that the second training run is planned to fill (the step time can
#: drift; a run that still overruns is stopped at the box and keeps its last periodic checkpoint).
SAFETY = 0.8


@dataclass(frozen=True)
class Settings:
    """What differs between the GPU run and the smoke run (every value in one place).

    Fields: ``device`` (torch device of every stage), ``budget_s`` (the whole run, seconds),
    ``boxes`` (stage -> (time box, seconds reserved for it while earlier stages run)),
    ``train`` (``hvc.train`` flags), ``score`` (``label_prop.run`` flags), ``bench`` (benchmark
    flags), ``ckpt_every`` (checkpoint period, steps), ``log_every`` (log period, steps),
    ``skip`` (stages not run), ``max_steps`` (cap of the training steps, None: the budget decides),
    ``min_resumed_steps`` (steps the resumed training run makes at least, whatever the budget says).
    """

    device: str
    budget_s: float
    boxes: dict
    train: list
    score: list
    bench: list
    ckpt_every: int
    log_every: int
    skip: tuple = ()
    max_steps: int | None = None
    min_resumed_steps: int = 0


@dataclass
class Check:
    """The run's state: paths, deadline, the summary being filled, the log file."""

    settings: Settings
    smoke: bool
    data: Path
    out: Path
    work: Path
    python: str
    deadline: float
    summary: dict = field(default_factory=dict)
    log: object = None

    def remaining(self) -> float:
        """Seconds left of the overall budget."""
        return self.deadline - time.monotonic()

    def box(self, stage: str, later: list[str]) -> float:
        """The time box of ``stage``: its own box, cut so that the later stages keep their reserve."""
        own = self.settings.boxes[stage][0]
        reserve = sum(self.settings.boxes[s][1] for s in later)
        return min(own, self.remaining() - reserve)

    def save(self) -> None:
        """Write summary.json (atomically: a kill never leaves half a file)."""
        self.summary["wall_s"] = round(time.monotonic() - self.summary["_t0"], 1)
        data = {k: v for k, v in self.summary.items() if not k.startswith("_")}
        tmp = self.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.out / "summary.json")

    def run(self, stage: str, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        """Run ``cmd`` from the source tree with a time box; its output goes to the log.

        Returns:
            ``{"cmd", "rc", "seconds", "timed_out", "output"}`` (rc None when killed at the box).
        """
        full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                        PYTHONUNBUFFERED="1", **(env or {}))
        self.log.write(f"\n===== {stage}: {' '.join(cmd)} (box {timeout:.0f} s)\n")
        self.log.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            output, _ = proc.communicate()
        seconds = time.monotonic() - t0
        self.log.write(output)
        self.log.write(f"===== {stage}: rc {proc.returncode}{' (killed at its time box)' if timed_out else ''}, "
                       f"{seconds:.1f} s\n")
        self.log.flush()
        return {"cmd": " ".join(cmd), "rc": None if timed_out else proc.returncode, "seconds": round(seconds, 1),
                "timed_out": timed_out, "output": output}


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of ``proc`` (data-loader workers included), SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_log(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []

# ---------------------------------------------------------------------------------------------
# stages: each returns (status, facts for the summary); status "ok", "failed", "timeout", "skipped"
# ---------------------------------------------------------------------------------------------
def stage_env(c: Check, box: float) -> tuple[str, dict]:
    code = ("import json, os, torch; cuda = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda_available': cuda, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
            "'gpu': torch.cuda.get_device_name(0) if cuda else None, 'gpus': torch.cuda.device_count(), "
            "'gpu_memory_gib': round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None, "
            "'bf16': torch.cuda.is_bf16_supported() if cuda else None, 'cpus': os.cpu_count()}))")
    r = c.run("env", [c.python, "-c", code], box)
    try:
        facts = json.loads(r["output"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ("timeout" if r["timed_out"] else "failed"), {"tail": _tail(r["output"])}
    facts["python"] = platform.python_version()
    c.summary.update({k: facts[k] for k in ("gpu", "torch", "cuda", "gpu_memory_gib")})
    if c.settings.device == "cuda" and not facts["cuda_available"]:
        return "failed", {**facts, "note": "no CUDA device: the GPU stages will fail; use --smoke on a CPU"}
    return "ok", facts


def stage_tests(c: Check, box: float) -> tuple[str, dict]:
    probe = subprocess.run([c.python, "-c", "import pytest"], capture_output=True)
    if probe.returncode != 0:
        return "skipped", {"note": "pytest is not installed on this machine: the tests marked cuda were not run"}
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.cuda" in p.read_text())
    r = c.run("tests", [c.python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files], box)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", r["output"])}
    facts = {"files": files, **counts, "tail": _tail(r["output"], 25)}
    if r["timed_out"]:
        return "timeout", facts
    return ("ok" if r["rc"] == 0 else "failed"), facts


def _train_cmd(c: Check, extra: list[str]) -> list[str]:
    s = c.settings
    return [c.python, "-m", "hvc.train", "--data", str(c.data / "unlabeled-video"), "--output-dir",
            str(c.work / "train"), *s.train, "--device", s.device, "--log-every", str(s.log_every),
            "--ckpt-every", str(s.ckpt_every), "--no-progress", "--no-tensorboard", *extra]


def stage_train(c: Check, box: float) -> tuple[str, dict]:
    t0 = time.monotonic()
    calib = 2 if c.smoke else CALIBRATION_STEPS
    r1 = c.run("train (calibration)", _train_cmd(c, ["--stop-at", str(calib)]), box)
    rows = _read_log(c.work / "train" / "log.csv")
    facts: dict = {"calibration": {"rc": r1["rc"], "seconds": r1["seconds"], "tail": _tail(r1["output"], 8)}}
    if r1["rc"] != 0 or len(rows) < 2:
        return ("timeout" if r1["timed_out"] else "failed"), _train_facts(c, facts)
    # steady step time: between the log rows (the first steps' warm-up left out)
    (s0, e0), (s1, e1) = [(int(rows[i]["step"]), float(rows[i]["elapsed_s"])) for i in (0, -1)]
    step_s = (e1 - e0) / max(s1 - s0, 1)
    startup = max(r1["seconds"] - e1, 0.0)  # interpreter, data index, frame cache, CUDA context
    run_info = _read_json(c.work / "train" / "run.json") or {}
    total = int(run_info.get("total_steps", s1))
    left = box - (time.monotonic() - t0) - startup - 15  # 15 s: final checkpoint and exit
    stop_at = min(total, s1 + max(c.settings.min_resumed_steps, math.floor(SAFETY * left / max(step_s, 1e-6))),
                  c.settings.max_steps or total)
    facts.update(step_s=round(step_s, 4), startup_s=round(startup, 1), total_steps=total, stop_at=stop_at)
    status = "ok"
    if stop_at > s1:
        r2 = c.run("train", _train_cmd(c, ["--resume", "auto", "--stop-at", str(stop_at)]),
                   box - (time.monotonic() - t0))
        facts["main"] = {"rc": r2["rc"], "seconds": r2["seconds"], "tail": _tail(r2["output"], 8)}
        ckpt_step = ((_read_json(c.work / "train" / "run.json") or {}).get("result") or {}).get("step")
        if r2["timed_out"] and ckpt_step is not None and ckpt_step > s1:
            # slower than calibrated: the periodic checkpoints keep what was trained
            facts["note"] = f"stopped at its time box; checkpoint of step {ckpt_step} kept"
        elif r2["rc"] != 0:
            status = "timeout" if r2["timed_out"] else "failed"
    return status, _train_facts(c, facts)


def _train_facts(c: Check, facts: dict) -> dict:
    """Copy the trainer's log and run record to $OUT and summarise them."""
    d = c.work / "train"
    for src, dst in (("log.csv", "train_log.csv"), ("run.json", "train_run.json")):
        if (d / src).is_file():
            shutil.copyfile(d / src, c.out / dst)
    rows = _read_log(d / "log.csv")
    run = _read_json(d / "run.json") or {}
    result = run.get("result") or {}
    if rows:
        facts.update(steps=int(rows[-1]["step"]), epochs=float(rows[-1]["epoch"]), loss_first=float(rows[0]["loss"]),
                     loss_last=float(rows[-1]["loss"]), images_per_s_last=float(rows[-1]["images_per_s"]))
        peaks = [float(r["peak_mem_mib"]) for r in rows if r.get("peak_mem_mib")]
        if peaks:
            facts["peak_mem_mib_log"] = max(peaks)
    if rows and not result.get("images_per_s_median"):  # killed before its checkpoint: from the log
        result = dict(result, images_per_s_median=statistics.median(float(r["images_per_s"]) for r in rows))
    facts.update(images_per_s_median=result.get("images_per_s_median"), peak_mem_mib=result.get("peak_mem_mib"),
                 precision=run.get("precision"), channels_last=run.get("channels_last"),
                 batch_size=(run.get("args") or {}).get("batch_size"), img_size=(run.get("args") or {}).get("img_size"),
                 workers=run.get("workers"), checkpoint_step=result.get("step"))
    return facts


def stage_export(c: Check, box: float) -> tuple[str, dict]:
    ckpt = c.work / "train" / "checkpoint.pth"
    if not ckpt.is_file():
        return "skipped", {"note": "no training checkpoint"}
    enc = c.work / "checkpoints" / "device-check.pth"
    r = c.run("export", [c.python, "-m", "hvc.export", str(ckpt), str(enc), "--inference-only", "--overwrite"], box)
    if r["rc"] != 0:
        return ("timeout" if r["timed_out"] else "failed"), {"tail": _tail(r["output"])}
    shutil.copyfile(enc, c.out / "encoder.pth")
    return "ok", {"file": "encoder.pth", "mib": round(enc.stat().st_size / MiB, 2)}


def _score(c: Check, box: float, model: str, stage: str) -> tuple[str, dict]:
    t0 = time.monotonic()
    results = c.work / "results"
    seqs = []
    if c.smoke:  # the shortest sequence
        names = (c.data / "DAVIS2016" / "ImageSets" / "2016" / "val.txt").read_text().split()
        frames = {n: len(list((c.data / "DAVIS2016" / "JPEGImages" / "480p" / n).glob("*.jpg"))) for n in names}
        seqs = ["--sequences", min(names, key=lambda n: (frames[n], n))]
    common = ["--data-root", str(c.data), "--results-dir", str(results)]
    r = c.run(stage, [c.python, "-m", "label_prop.run", model, "davis16", *common, *seqs, *c.settings.score,
                      "--checkpoints-dir", str(c.work / "checkpoints"), "--device", c.settings.device,
                      "--overwrite"], box)
    facts: dict = {"model": model}
    records = sorted((results / model / "davis16").glob("run-*.json"))
    rec = _read_json(records[-1]) if records else None
    if rec:
        facts.update(sequences=list(rec["sequences"]), frames=rec["frames"], wall_s=round(rec["wall_s"], 2),
                     frames_per_s=round(rec["frames"] / max(rec["wall_s"], 1e-9), 2),
                     features_s_per_frame=rec["features_s_per_frame"],
                     propagate_s_per_frame=rec["propagate_s_per_frame"],
                     device=rec["device"], n_context=rec["args"]["n_context"], input_size=rec["args"]["input_size"])
    if r["rc"] != 0:
        return ("timeout" if r["timed_out"] else "failed"), {**facts, "tail": _tail(r["output"])}
    m = c.run(f"{stage} (metrics)", [c.python, "-m", "label_prop.evaluate", model, "davis16", *common, *seqs,
                                     "--overwrite"], box - (time.monotonic() - t0))
    out = results / model / "davis16"
    try:
        import pandas as pd
        g = pd.read_csv(out / "global_results.csv").iloc[0].to_dict()
        per = pd.read_csv(out / "per-sequence_results.csv")
    except (OSError, ValueError, ImportError):
        return ("timeout" if m["timed_out"] else "failed"), {**facts, "tail": _tail(m["output"])}
    facts.update({k: round(float(v), 4) for k, v in g.items()})
    facts["per_sequence"] = {row["Sequence"]: {"J": round(row["J-Mean"], 4), "F": round(row["F-Mean"], 4)}
                             for _, row in per.iterrows()}
    if stage == "score":
        shutil.copyfile(out / "per-sequence_results.csv", c.out / "per-sequence_results.csv")
    return "ok", facts


def stage_score(c: Check, box: float) -> tuple[str, dict]:
    trained = (c.work / "checkpoints" / "device-check.pth").is_file()
    status, facts = _score(c, box, "device-check" if trained else "random", "score")
    if not trained:
        facts["note"] = "no exported encoder: scored the random baseline instead"
    return status, facts


def stage_score_random(c: Check, box: float) -> tuple[str, dict]:
    if not (c.work / "checkpoints" / "device-check.pth").is_file():
        return "skipped", {"note": "the score stage already scored the random baseline"}
    return _score(c, box, "random", "score_random")


def stage_bench(c: Check, box: float) -> tuple[str, dict]:
    path = c.out / "bench.json"
    r = c.run("bench", [c.python, "benchmarks/bench_label_prop.py", "--device", c.settings.device,
                        *c.settings.bench, "--json", str(path)], box)
    rows = _read_json(path) or {}
    facts = {"table": _tail(r["output"], 20), **{k: rows.get(k) for k in ("engine", "features")}}
    if r["rc"] != 0:
        return ("timeout" if r["timed_out"] else "failed"), facts
    return "ok", facts


STAGES = [("env", stage_env), ("tests", stage_tests), ("train", stage_train), ("export", stage_export),
          ("score", stage_score), ("bench", stage_bench), ("score_random", stage_score_random)]
