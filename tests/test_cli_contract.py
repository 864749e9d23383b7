"""What every command line promises, whatever it does: no abbreviated flags (``--overwrit`` is an
error, not ``--overwrite``), defaults in the help, and one clear line for the inputs a new user
gets wrong (a truncated or code-bearing weights file, an unset data root), naming the file and
what to do. Also: ``segment.json`` records the seed and the code's revision; the wrapper scripts
answer ``--help``.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_davis_dataset
from hvc.checkpoint import CheckpointError, load_weights_file
from hvc.train import main as train_main
from label_prop import run as R
from label_prop import segment as S
from label_prop.data.io import write_palette_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
PARSER_MODULES = ["label_prop.run", "label_prop.segment", "label_prop.evaluate", "label_prop.demo",
                  "label_prop.interactive.run", "hvc.train"]


def _parser_calls():
    for folder in ("hvc", "label_prop", "scripts", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
                    yield path.relative_to(REPO), node


def test_no_parser_accepts_abbreviated_flags():
    calls = list(_parser_calls())
    assert len(calls) >= 10
    lax = [f"{p}:{n.lineno}" for p, n in calls
           if not any(k.arg == "allow_abbrev" and getattr(k.value, "value", True) is False for k in n.keywords)]
    assert not lax, f"ArgumentParser without allow_abbrev=False: {lax}"


@pytest.mark.parametrize("main, argv, flag", [
    (R.main, ["random", "davis16", "--overwrit"], "--overwrit"),
    (train_main, ["--data", "x", "--output-dir", "o", "--step", "5"], "--step"),
])
def test_a_flag_prefix_is_an_error(main, argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("module", PARSER_MODULES)
def test_every_option_with_a_default_states_it_in_the_help(module):
    parser = importlib.import_module(module).build_parser()
    if parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter:
        return  # argparse appends "(default: X)" to every help
    silent = [a.option_strings[0] for a in parser._actions
              if a.option_strings and a.help not in (None, argparse.SUPPRESS)
              and a.default not in (None, False, argparse.SUPPRESS) and "default" not in a.help.lower()]
    assert not silent, f"{module}: help without the default: {silent}"


def _weights_case(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.pth"
    torch.save({"w": torch.zeros(4096)}, path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "code":
        torch.save({"w": _Payload()}, path)
    return path


class _Payload:
    """Unpickling it would call ``os.getcwd``: a harmless stand-in for code in a weights file."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("kind, words", [
    ("truncated", ("truncated or incomplete", "copy it again")),
    ("code", ("not loaded", "run code", "posix.getcwd", "state_dict", "hvc.export")),
])
def test_bad_weights_files_are_named_with_what_to_do(kind, words, tmp_path, capsys):
    path = _weights_case(tmp_path, kind)
    with pytest.raises(CheckpointError) as exc:
        load_weights_file(path)
    message = str(exc.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert all(w in message for w in words), message
    assert "weights_only=False" not in message  # never the advice to run the code
    make_davis_dataset(tmp_path / "data")
    code = R.main([kind, "davis16", "--checkpoints-dir", str(tmp_path), "--data-root", str(tmp_path / "data"),
                   "--results-dir", str(tmp_path / "results"), "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("env, words", [
    (None, ("$HVC_DATA_ROOT is not set", "./data", "set HVC_DATA_ROOT")),
    ("elsewhere", ("$HVC_DATA_ROOT=elsewhere",)),
])
def test_a_missing_data_root_says_where_it_looked_and_how_to_set_it(env, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if env is None:
        monkeypatch.delenv("HVC_DATA_ROOT", raising=False)
    else:
        monkeypatch.setenv("HVC_DATA_ROOT", env)
    assert R.main(["random", "davis16", "--threads", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DAVIS2016" in err[0] and str(tmp_path.resolve()) in err[0], err
    assert all(w in err[0] for w in words), err[0]
    assert not (tmp_path / "results").exists()


def test_segment_json_records_the_seed_and_the_revision(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * t, np.uint8)).save(folder / f"{t:05d}.jpg")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    write_palette_png(tmp_path / "m.png", mask)
    out = tmp_path / "out"
    assert S.main([str(folder), "--mask", str(tmp_path / "m.png"), "--out", str(out), "--no-overlay",
                   "--seed", "7", "--threads", "1"]) == 0
    record = json.loads((out / "segment.json").read_text())
    assert record["seed"] == 7 and "git_revision" in record
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no lock or partial folder left


@pytest.mark.parametrize("script, words", [
    ("run_interactive.sh", ("--interactions", "--frame-choice")),
    ("run_app.sh", ("--root", "--max-upload-mb", "--idle-seconds", "default 240)")),
    ("run_train.sh", ("--nproc-per-node", "--batch-size")),
    ("run_test.sh", ("--n-context", "--results-dir")),
])
def test_wrapper_scripts_answer_help(script, words):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / script), "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps help lines
    assert all(w in text for w in words), proc.stdout[:500]


@pytest.mark.parametrize("cls_path", ["label_prop.config.MemoryConfig", "label_prop.app.config.AppConfig"])
def test_settings_stated_once_give_the_command_line_its_options_and_defaults(cls_path):
    import argparse
    import dataclasses
    import importlib
    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    parsed = parser.parse_args([])
    d = cls()
    assert cls.from_mapping(vars(parsed)) == d
    helps = {a.dest: a.help for a in parser._actions}
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            assert f.name in helps and "default" in helps[f.name], f.name
