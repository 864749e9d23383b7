"""Names read from data never become paths: a sequence name, YouTube-VOS video id or filelist
sequence that is not one plain path component is an error naming the list file and line, and no
write or delete resolves outside the results folder (resolved paths, symlinks followed).

Table-driven: each case builds its fixture in ``tmp_path`` and gives the command, the exit code,
the words of the one error line, and the files that must be unchanged (checked by checksum).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import make_davis_dataset
from hvc import runtime as RT
from label_prop import run as R
from label_prop.data.plans import check_name
from label_prop.data.ytvos import YtvosBenchmark

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN_OPTS = ["--n-context", "2", "--threads", "1"]


def _frames_folder(folder: Path, n: int = 3) -> None:
    """``n`` JPEGs and binary PNG masks named 00000.. in ``folder`` (a victim of a hostile name)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        Image.fromarray(np.full((48, 64, 3), 30 * t, np.uint8)).save(folder / f"{t:05d}.jpg")
        m = np.zeros((48, 64), np.uint8)
        m[10:30, 10:30] = 255
        Image.fromarray(m, mode="L").save(folder / f"{t:05d}.png")


def _checksums(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (results folder excluded)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "results" not in p.relative_to(folder).parts}


@dataclass
class Case:
    """One hostile input: ``build(tmp_path) -> argv`` of ``label_prop.run``, the expected exit code
    and words of the error line."""

    name: str
    build: Callable[[Path], list[str]]
    code: int
    words: tuple[str, ...]


def _davis_with(tmp: Path, lines: str, *extra: str) -> list[str]:
    root = tmp / "data"
    make_davis_dataset(root)
    (root / "DAVIS2016" / "ImageSets" / "2016" / "val.txt").write_text(lines)
    return ["random", "davis16", "--data-root", str(root), "--results-dir", str(tmp / "results"), *RUN_OPTS, *extra]


def _traversal(tmp: Path) -> list[str]:
    # JPEGImages/480p/../../../trav is <data>/trav, and results/random/davis16/../../../trav is
    # <tmp>/trav: a victim folder with frames and masks at both places.
    _frames_folder(tmp / "data" / "trav")
    _frames_folder(tmp / "trav")
    return _davis_with(tmp, "alpha\n../../../trav\n")


def _absolute(tmp: Path) -> list[str]:
    _frames_folder(tmp / "abs" / "absseq")
    return _davis_with(tmp, f"alpha\n{tmp / 'abs' / 'absseq'}\n", "--overwrite")


def _hidden(tmp: Path) -> list[str]:
    return _davis_with(tmp, "alpha\n.alpha.partial\n")


def _filelist_parent(tmp: Path) -> list[str]:
    # The listed images lie in the data root's parent, so their folder (the sequence) is "..".
    (tmp / "data").mkdir()
    _frames_folder(tmp)
    lst = tmp / "list.txt"
    lst.write_text("".join(f"1 ../{t:05d}.jpg ../{t:05d}.png\n" for t in range(3)))
    return ["random", str(lst), "--data-root", str(tmp / "data"), "--results-dir", str(tmp / "results"), *RUN_OPTS]


def _symlinked_sequence(tmp: Path) -> list[str]:
    argv = _davis_with(tmp, "alpha\nbeta\n")
    outside = tmp / "outside"
    _frames_folder(outside)
    link = tmp / "results" / "random" / "davis16" / "alpha"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside, target_is_directory=True)
    return argv + ["--overwrite", "--sequences", "alpha"]


CASES = [
    Case("relative name leaving the results folder", _traversal, 1, ("val.txt:2", "'../../../trav'", "not a plain name")),
    Case("absolute name with --overwrite", _absolute, 1, ("val.txt:2", "absseq", "not a plain name")),
    Case("hidden name of a folder being written", _hidden, 1, ("val.txt:2", "'.alpha.partial'", "not a plain name")),
    Case("filelist sequence folder '..'", _filelist_parent, 1, ("list.txt:1", "'..'", "not a plain name")),
    Case("results sequence folder symlinked outside", _symlinked_sequence, 1, ("outside the output folder",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_name_is_one_line_and_writes_nothing_outside(case, tmp_path, capsys):
    argv = case.build(tmp_path)
    before = _checksums(tmp_path)
    code = R.main(argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{R.PROG}: error:")]
    assert len(lines) == 1, err
    for w in case.words:
        assert w in lines[0], lines[0]
    assert _checksums(tmp_path) == before  # inputs, victims and everything outside results/ unchanged


def test_ytvos_video_id_that_is_a_path_is_refused(tmp_path):
    folder = tmp_path / "ytvos" / "valid"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"videos": {"../evil": {"objects": {"1": {"frames": ["00000"]}}}}}))
    bench = YtvosBenchmark(name="yt", folder="ytvos/valid", binary=False, full_gt=False)
    with pytest.raises(ValueError, match=r"meta.json: video id: sequence name '\.\./evil' is not a plain name"):
        bench.sequences(tmp_path)


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "a\\b", ".hidden", "a\nb", "a\x00b"])
def test_check_name_refuses_what_is_not_one_plain_component(name):
    with pytest.raises(ValueError, match="not a plain name"):
        check_name(name, "list.txt:1")


@pytest.mark.parametrize("name", ["blackswan", "car-shadow", "0a2f3b", "seq with space", "a..b"])
def test_check_name_keeps_plain_names(name):
    assert check_name(name, "list.txt:1") == name


def test_staged_dir_refuses_a_destination_outside_its_folder(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (out / "seq").symlink_to(outside, target_is_directory=True)
    for final in (out / "seq", out / ".." / "outside", out):
        with pytest.raises(ValueError, match="outside the output folder"):
            with RT.staged_dir(final, within=out):
                pass
    assert (outside / "keep.txt").read_text() == "x" and os.path.islink(out / "seq")


@pytest.mark.slow
def test_wrapper_takes_relative_paths_from_the_callers_directory(tmp_path):
    """``bash /abs/scripts/run_test.sh ck/r18.pth ... --results-dir res`` typed in another folder:
    the model and the results folder are that folder's, as with ``python -m label_prop.run``; a
    missing model is named by its absolute path."""
    import subprocess
    import sys

    import torch
    from torchvision.models import resnet18

    from conftest import REPO_ROOT

    work = tmp_path / "work"
    (work / "ck").mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), work / "ck" / "r18.pth")
    make_davis_dataset(tmp_path / "data", seqs=("alpha",), frames=3)
    env = {**os.environ, "PYTHON": sys.executable, "HVC_DATA_ROOT": "../data"}
    cmd = ["bash", str(REPO_ROOT / "scripts" / "run_test.sh"), "ck/r18.pth", "davis16", "--results-dir", "res", *RUN_OPTS]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((work / "res" / "r18" / "davis16" / "alpha").glob("*.png"))) == 3
    assert not (REPO_ROOT / "res").exists()
    missing = subprocess.run([*cmd[:2], "ck/none.pth", *cmd[3:]], cwd=work, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and str((work / "ck" / "none.pth").resolve()) in missing.stderr, missing.stderr


def test_interrupted_overwrite_with_new_settings_is_caught_by_the_metrics_and_resumable(tmp_path, monkeypatch, capsys):
    """A run with n-context 3, then an ``--overwrite`` with n-context 2 interrupted after its
    first sequence: the metrics refuse the mixed folder (naming the sequences and the setting),
    score it with a warning under ``--allow-mixed``, and the printed way out (the same command
    with ``--resume``) works and leaves one set of settings."""
    from label_prop import evaluate as ev
    from label_prop import run as run_mod

    root, res = tmp_path / "data", tmp_path / "results"
    make_davis_dataset(root)
    base = ["random", "davis16", "--data-root", str(root), "--results-dir", str(res), "--threads", "1"]
    assert R.main([*base, "--n-context", "3"]) == 0
    calls = {"n": 0}
    real = run_mod._write_sequence

    def interrupt_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "_write_sequence", interrupt_second)
    assert R.main([*base, "--n-context", "2", "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "add --resume to the same command" in err
    monkeypatch.setattr(run_mod, "_write_sequence", real)
    score = ["random", "davis16", "--results-dir", str(res), "--data-root", str(root), "--overwrite"]
    assert ev.main(score) == 2
    line = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(line) == 1 and "alpha" in line[0] and "beta" in line[0] and "n_context" in line[0], line
    assert ev.main([*score, "--allow-mixed"]) == 0
    assert "warning" in capsys.readouterr().err
    # the way out that the interrupted run printed: the same command with --resume
    assert R.main([*base, "--n-context", "2", "--overwrite", "--resume"]) == 0
    assert "1 of 2 sequences are complete" in capsys.readouterr().err
    assert ev.main(score) == 0
