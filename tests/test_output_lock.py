"""One writer per output: a run that finds its output locked by a running process fails at once
with one line naming the lock file and the holder; a lock left by a killed process is taken over
with a message; shards of one count may run together; a failed run leaves no empty folders.

Table-driven over the commands that write outputs (``label_prop.run``, ``label_prop.segment``,
``hvc.train``): a holder process takes the lock, the command runs against it.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import make_davis_dataset
from hvc.output_lock import OutputLocked, hold_output, shards_compatible
from hvc.train import main as train_main
from label_prop import run as R
from label_prop import segment as S
from label_prop.interactive import run as I
from label_prop.data.io import write_palette_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from hvc.output_lock import hold_output
with hold_output(sys.argv[1], "holder", tag=sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """``start(target, tag)``: a process holding the lock of ``target``; killed (SIGKILL) at the end."""
    procs = []

    def start(target: Path, tag: str = "run") -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(target), tag], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mine, theirs, ok", [
    ("shard-0-of-2", "shard-1-of-2", True),
    ("shard-1-of-2", "shard-1-of-2", False),
    ("shard-0-of-2", "shard-1-of-3", False),
    ("run", "shard-0-of-2", False),
    ("shard-0-of-2", "run", False),
    ("run", "run", False),
    ("segment", "segment", False),
])
def test_which_holders_may_write_together(mine, theirs, ok):
    assert shards_compatible(mine, theirs) is ok


def test_second_holder_in_this_process_is_refused_and_files_go_when_done(tmp_path):
    target = tmp_path / "new" / "out"
    with hold_output(target, "test") as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputLocked, match=r"\.out\.lock\.run: .* is being written by pid %d" % os.getpid()):
            with hold_output(target, "test"):
                pass
        with hold_output(tmp_path / "other", "test"):
            pass  # another output is independent
    assert not (tmp_path / "new").exists()  # created for the lock, left empty: removed


def test_shards_of_one_count_run_together_a_whole_run_does_not(tmp_path):
    target = tmp_path / "out"
    with hold_output(target, "t", tag="shard-0-of-2"):
        with hold_output(target, "t", tag="shard-1-of-2"):
            with pytest.raises(OutputLocked, match=r"\.out\.lock\.shard-0-of-2: "):
                with hold_output(target, "t", tag="run"):
                    pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_killed_holders_lock_is_taken_over_with_a_message(tmp_path, holder, capsys):
    target = tmp_path / "out"
    p = holder(target)
    with pytest.raises(OutputLocked, match=f"pid {p.pid} "):
        with hold_output(target, "t"):
            pass
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / ".out.lock.run").exists()  # a killed process runs no clean-up
    with hold_output(target, "t"):
        pass
    err = capsys.readouterr().err
    assert f"t: took over the lock {tmp_path / '.out.lock.run'} of pid {p.pid}" in err and "no longer runs" in err
    assert not (tmp_path / ".out.lock.run").exists() and not (tmp_path / ".out.lock").exists()


# --- the commands, against a running holder ------------------------------------------------------------------------

@dataclass
class Case:
    """``build(tmp) -> (argv, locked target, holder tag)`` of ``main``; every case must exit 2."""

    name: str
    main: Callable[[list[str]], int]
    build: Callable[[Path], tuple[list[str], Path, str]]


def _run_case(tag: str, *extra: str):
    def build(tmp: Path):
        make_davis_dataset(tmp / "data")
        argv = ["random", "davis16", "--data-root", str(tmp / "data"), "--results-dir", str(tmp / "results"),
                "--n-context", "2", "--threads", "1", *extra]
        return argv, tmp / "results" / "random" / "davis16", tag
    return build


def _segment_case(tmp: Path):
    folder = tmp / "frames"
    folder.mkdir()
    for t in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * t, np.uint8)).save(folder / f"{t:05d}.jpg")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    write_palette_png(tmp / "m.png", mask)
    return [str(folder), "--mask", str(tmp / "m.png"), "--out", str(tmp / "out"), "--threads", "1"], tmp / "out", \
        "segment"


def _interactive_case(tmp: Path):
    make_davis_dataset(tmp / "data")
    argv = ["random", "davis16", "--data-root", str(tmp / "data"), "--results-dir", str(tmp / "results"),
            "--threads", "1"]
    return argv, tmp / "results" / "random" / "interactive" / "davis16" / "worst", "interactive"


def _train_case(tmp: Path):
    return ["--data", str(tmp / "nodata"), "--output-dir", str(tmp / "run")], tmp / "run", "train"


CASES = [
    Case("run on a folder another run writes", R.main, _run_case("run")),
    Case("run --overwrite on a folder another run writes", R.main, _run_case("run", "--overwrite")),
    Case("whole run while a shard runs", R.main, _run_case("shard-0-of-2")),
    Case("the same shard twice", R.main, _run_case("shard-1-of-2", "--shard", "1/2")),
    Case("segment on an --out another segment writes", S.main, _segment_case),
    Case("interactive run on a folder another one writes", I.main, _interactive_case),
    Case("training on a folder another training writes", train_main, _train_case),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_second_writer_fails_at_once_naming_the_lock_and_holder(case, tmp_path, holder, capsys):
    argv, target, tag = case.build(tmp_path)
    p = holder(target, tag)
    before = _checksums(tmp_path)
    assert case.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f".{target.name}.lock.{tag}" in err[0] and f"pid {p.pid} " in err[0] and "is being written by" in err[0]
    assert _checksums(tmp_path) == before


def test_shards_of_one_count_write_one_folder_together(tmp_path, holder):
    argv, target, _ = _run_case("shard-0-of-2")(tmp_path)
    holder(target, "shard-0-of-2")
    assert R.main([*argv, "--shard", "1/2"]) == 0


def test_a_failed_run_leaves_no_empty_results_folder(tmp_path, capsys):
    make_davis_dataset(tmp_path / "data")
    bad = tmp_path / "data" / "DAVIS2016" / "JPEGImages" / "480p" / "alpha" / "00002.jpg"
    bad.write_bytes(b"not a jpeg")  # fails in the first sequence, after its staged folder was made
    code = R.main(["random", "davis16", "--data-root", str(tmp_path / "data"), "--results-dir",
                   str(tmp_path / "results"), "--n-context", "2", "--threads", "1"])
    assert code == 1 and "00002.jpg" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_two_runs_started_together_never_both_succeed_over_damaged_output(tmp_path):
    make_davis_dataset(tmp_path / "data")
    argv = [sys.executable, "-m", "label_prop.run", "random", "davis16", "--data-root", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "results"), "--n-context", "2", "--threads", "1", "--overwrite"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in outs), outs
    for code, err in outs:
        assert code in (0, 2), err
        if code == 2:
            assert "is being written by" in err
    out = tmp_path / "results" / "random" / "davis16"
    for seq in (tmp_path / "data" / "DAVIS2016" / "ImageSets" / "2016" / "val.txt").read_text().split():
        jpgs = sorted(p.stem for p in (tmp_path / "data" / "DAVIS2016" / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        assert sorted(p.stem for p in (out / seq).glob("*.png")) == jpgs
