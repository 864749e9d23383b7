"""Command-line behaviour that needs no data: flags, output-dir protection, the shell wrapper."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hvc.train import build_parser, main as train_main
from hvc.errors import UsageError

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


def test_preset_sets_defaults_and_explicit_flags_override():
    from hvc.presets import PRESETS
    from hvc.train import parse_args

    base = ["--data", "d", "--output-dir", "o"]
    args = parse_args([*base, "--preset", "cpu-1h"])
    assert args.preset == "cpu-1h"
    for dest, value in PRESETS["cpu-1h"].items():
        assert getattr(args, dest) == value, dest
    p = PRESETS["cpu-1h"]
    assert p["img_size"] != 96 and p["batch_size"] != 8
    over = parse_args([*base, "--preset", "cpu-1h", "--img-size", "96", "--batch-size=8"])
    assert (over.img_size, over.batch_size, over.steps) == (96, 8, p["steps"])
    # --epochs without --steps replaces the preset's step count
    ep = parse_args([*base, "--preset", "cpu-1h", "--epochs", "3"])
    assert ep.steps is None and ep.epochs == 3 and ep.img_size == p["img_size"]
    assert parse_args(base).preset is None and parse_args(base).batch_size == 128
    # every preset key is a real flag destination
    dests = {a.dest for a in build_parser()._actions}
    for name, values in PRESETS.items():
        assert set(values) <= dests, name
    with pytest.raises(SystemExit):
        parse_args([*base, "--preset", "gpu-1year"])


@pytest.mark.parametrize("fast, want", [(True, "cpu-1h-bf16"), (False, "cpu-1h")])
def test_the_automatic_preset_follows_the_probe(fast, want):
    from hvc.presets import PRESETS, apply_preset, resolve_preset

    assert resolve_preset("cpu-1h-auto", bf16_fast=lambda: fast) == want
    assert resolve_preset("cpu-1h", bf16_fast=lambda: not fast) == "cpu-1h"  # a plain preset probes nothing
    out = apply_preset({"preset": "cpu-1h-auto", "img_size": 256, "steps": None}, {"steps"}, bf16_fast=lambda: fast)
    assert out["preset"] == want and out["img_size"] == PRESETS[want]["img_size"] and out["steps"] is None
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("cpu-1y")


def test_new_flags_defaults_are_the_papers_and_are_validated(tmp_path, capsys):
    args = build_parser().parse_args(["--data", "d", "--output-dir", "o"])
    assert list(args.crop_scale) == [0.0, 1.0] and (args.spatial_weight, args.temporal_weight) == (1.0, 1.0)
    assert args.amp_dtype == "float16" and args.channels_last is None and args.sync_bn is False
    assert args.workers is None and args.snapshot_steps is None and args.snapshot_every_min is None
    assert build_parser().parse_args(["--data", "d", "--output-dir", "o", "--snapshot-steps", "30,10,10"]
                                     ).snapshot_steps == [10, 30]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data", "d", "--output-dir", "o", "--snapshot-steps", "0,5"])
    cases = [(["--crop-scale", "0.5", "0.2"], "--crop-scale"), (["--crop-scale", "0", "0"], "--crop-scale"),
             (["--spatial-weight", "-1"], "--spatial-weight"),
             (["--spatial-weight", "0", "--temporal-weight", "0"], "both 0"),
             (["--snapshot-every-min", "0"], "--snapshot-every-min"), (["--cache-mb", "-1"], "--cache-mb"),
             (["--sync-bn", "--device", "cpu"], "--sync-bn needs CUDA")]
    for k, (extra, message) in enumerate(cases):
        assert train_main(["--data", "x", "--output-dir", str(tmp_path / f"o{k}"), *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra


def test_precision_and_workers_resolution():
    import torch

    from hvc.launch import DistContext
    from hvc.step import default_workers, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision(cpu, True, "float16", True).name == "float32"  # float16 autocast: CUDA only
    assert resolve_precision(cpu, True, "float16", None).channels_last is False  # auto: CUDA only
    assert resolve_precision(cpu, True, "float16", True).channels_last is True
    bf = resolve_precision(cpu, True, "bfloat16", False)
    assert bf.name == "bf16" and not bf.grad_scaler and bf.autocast_dtype == torch.bfloat16
    assert resolve_precision(cpu, False, "bfloat16", False).name == "float32"
    with bf.autocast():
        assert torch.is_autocast_enabled("cpu")
    with resolve_precision(cpu, True, "float16", False).autocast():
        assert not torch.is_autocast_enabled("cpu")
    from hvc.hardware import encoder_precision
    probe = encoder_precision("auto", cpu)
    auto = resolve_precision(cpu, True, "auto", None)  # the probe's pick and, on CPU, its layout
    assert auto.autocast_dtype == (torch.bfloat16 if probe.precision == "bfloat16" else None)
    assert auto.channels_last == (probe.precision == "bfloat16" and probe.channels_last)
    assert resolve_precision(cpu, False, "auto", None).name == "float32"  # --no-amp wins
    with pytest.raises(UsageError, match="--amp-dtype"):
        resolve_precision(cpu, True, "float64", None)
    assert default_workers(cpu, DistContext()) == 0
    assert 1 <= default_workers(torch.device("cuda", 0), DistContext(0, 2, 0, 2)) <= 8


def test_run_train_sh_starts_torchrun_with_nproc_per_node(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    env = {"HVC_DATA_ROOT": str(root)}
    out = run_wrapper(["--output-dir", "o", "--nproc-per-node", "2", "--preset", "cpu-1h"], env)
    assert out == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hvc.train",
                   "--data", f"{root}/unlabeled-video", "--output-dir", "o", "--preset", "cpu-1h"]
    multi = run_wrapper(["--nproc-per-node=4", "--data", "/d"],
                        {**env, "HVC_TORCHRUN_ARGS": "--nnodes 2 --node_rank 1 --rdzv_endpoint h:29500"})
    assert multi == ["-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--rdzv_endpoint", "h:29500",
                     "--nproc_per_node", "4", "-m", "hvc.train", "--data", "/d"]
    bad = subprocess.run(["bash", str(REPO / "scripts" / "run_train.sh"), "--nproc-per-node", "two"],
                         env={**os.environ, "PYTHON": "echo"}, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def test_config_holds_every_flag_and_stores_the_same_dict_as_the_flags():
    """The checkpoint's and run.json's ``args`` (TrainConfig.to_dict) are the parsed flags' dict,
    same keys in the same order (checkpoints of earlier versions resume against it)."""
    import dataclasses
    import inspect

    from hvc.records import plain
    from hvc.config import TrainConfig
    from hvc.train import parse_args

    base = ["--data", "d", "--output-dir", "o"]
    for extra in ([], ["--preset", "cpu-1h", "--epochs", "3"], ["--crop-scale", "0.2", "1", "--snapshot-steps", "4,2",
                                                               "--mode", "images", "--image-dirs", "a", "b", "--no-amp"]):
        args = parse_args([*base, *extra])
        stored = TrainConfig.from_mapping(vars(args)).to_dict()
        assert list(stored.items()) == list(plain(vars(args)).items()), extra
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert names == [a.dest for a in build_parser()._actions if a.dest != "help"]
    source = inspect.getsource(TrainConfig).splitlines()
    for name in names:  # every setting has its comment (meaning, unit, the paper's value) above it
        line = next(i for i, text in enumerate(source) if text.strip().startswith(f"{name}:"))
        assert source[line - 1].strip().startswith("#"), name


def test_config_checks_its_values_without_a_command_line():
    import dataclasses

    from hvc.config import TrainConfig
    from hvc.errors import UsageError

    ok = TrainConfig(data="d", output_dir="o", crop_scale=[0.2, 1.0])
    assert ok.batch_size == 128 and ok.img_size == 256 and ok.lr == 1e-3  # the paper's defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.lr = 1.0
    for bad, message in (({"img_size": 100}, "multiple of 8"), ({"mode": "audio"}, "--mode"),
                         ({"spatial_weight": 0, "temporal_weight": 0}, "both 0"), ({"steps": 0}, "--steps")):
        with pytest.raises(UsageError, match=message):
            TrainConfig.from_mapping({"data": "d", "output_dir": "o", **bad})
