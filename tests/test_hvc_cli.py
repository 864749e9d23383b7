"""Command-line behaviour that needs no data: flags, output-dir protection, the shell wrapper."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hvc.train import build_parser, main as train_main

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers():
    args = build_parser().parse_args(["--data", "d", "--output-dir", "o"])
    assert (args.lr, args.batch_size, args.img_size, args.epochs, args.pos_radius, args.ema_base) == \
        (1e-3, 128, 256, 20, 0.1, 0.99)
    assert args.steps is None and args.amp is True and args.mode == "video" and args.seed == 42


def test_amp_is_a_real_boolean_flag():
    p = build_parser()
    assert p.parse_args(["--data", "d", "--output-dir", "o", "--no-amp"]).amp is False
    assert p.parse_args(["--data", "d", "--output-dir", "o", "--amp"]).amp is True
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "d", "--output-dir", "o", "--amp", "False"])


def test_refuses_an_output_dir_holding_another_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.csv").write_text("step,loss\n1,0.5\n")
    assert train_main(["--data", str(tmp_path / "nodata"), "--output-dir", str(out)]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (out / "log.csv").read_text() == "step,loss\n1,0.5\n"
    # --resume of a missing explicit checkpoint is an error naming it (a missing input file: bad data)
    assert train_main(["--data", "x", "--output-dir", str(out), "--resume", str(tmp_path / "none.pth")]) == 1
    assert "none.pth" in capsys.readouterr().err


def test_bad_values_are_rejected(tmp_path, capsys):
    assert train_main(["--data", "x", "--output-dir", str(tmp_path / "a"), "--img-size", "100"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert train_main(["--data", "x", "--output-dir", str(tmp_path / "b"), "--batch-size", "0"]) == 2


def run_wrapper(args, env_extra):
    env = {**os.environ, "PYTHON": "echo", **env_extra}
    return subprocess.run(["bash", str(REPO / "scripts" / "run_train.sh"), *args], env=env, capture_output=True,
                          text=True, check=True, cwd=REPO).stdout.split()


def test_run_train_sh_defaults_data_and_passes_arguments(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    out = run_wrapper(["--output-dir", "runs/x", "--steps", "5"], {"HVC_DATA_ROOT": str(root)})
    assert out == ["-m", "hvc.train", "--data", f"{root}/unlabeled-video", "--output-dir", "runs/x", "--steps", "5"]
    out = run_wrapper(["--data", "/else", "--output-dir", "o"], {"HVC_DATA_ROOT": str(root)})
    assert out == ["-m", "hvc.train", "--data", "/else", "--output-dir", "o"]
    env = {k: v for k, v in os.environ.items() if k != "HVC_DATA_ROOT"}
    res = subprocess.run(["bash", str(REPO / "scripts" / "run_train.sh"), "--output-dir", "o"],
                         env={**env, "PYTHON": "echo"}, capture_output=True, text=True, check=True, cwd=REPO)
    assert res.stdout.split()[2:4] == ["--data", "./data/unlabeled-video"]
