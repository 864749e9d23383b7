"""Sharded evaluation (label_prop.shard): the split rule, the ranks' hand-over, and end to end on
CPU: the union of ``--shard I/N`` runs and a 2-process torchrun launch give the unsharded PNGs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data as skdata

from conftest import REPO_ROOT, require_data
from hvc.launch import DistContext, dist_context_from_env, resolve_rank_device
from hvc.errors import UsageError
from label_prop import run as R
from label_prop.data.io import write_palette_png
from label_prop.shard import Shard, ShardGroup, assign_shards, run_together, shard_for_run


@pytest.mark.parametrize("counts,n", [([50, 80, 84, 90, 75, 40, 104], 3), ([5, 5, 5, 5], 2), ([7], 3),
                                      (list(range(1, 21)), 4), ([], 2)])
def test_every_sequence_in_exactly_one_shard_and_balanced(counts, n):
    owner = assign_shards(counts, n)
    assert len(owner) == len(counts) and all(0 <= o < n for o in owner)
    picked = [Shard(i, n).select([f"s{k}" for k in range(len(counts))], counts) for i in range(n)]
    assert sorted(sum(picked, [])) == sorted(f"s{k}" for k in range(len(counts)))  # a partition
    assert all(p == sorted(p, key=lambda s: int(s[1:])) for p in picked)  # benchmark order kept
    loads = [sum(c for c, o in zip(counts, owner) if o == s) for s in range(n)]
    if counts:  # greedy longest-first: no shard exceeds another by more than the largest sequence
        assert max(loads) - min(loads) <= max(counts)
    assert assign_shards(counts, n) == owner  # deterministic


def test_rule_by_hand():
    # longest first, each to the lighter shard; loads: 90|0 -> 90|84 -> 90|164 -> 140|164 -> 180|164
    assert assign_shards([50, 80, 84, 90, 40], 2) == [0, 1, 1, 0, 0]
    assert assign_shards([10, 10, 10], 2) == [0, 1, 0]  # ties: benchmark order, then the lowest shard
    assert Shard(1, 2).select(["a", "b", "c"], [10, 10, 10]) == ["b"]


def test_shard_parsing_and_torchrun_environment(monkeypatch):
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse("0/1").whole and Shard(2, 3).tag == "-shard2of3"
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(bad)
    assert shard_for_run(None, DistContext()) == Shard(0, 1)
    assert shard_for_run("1/3", DistContext()) == Shard(1, 3)
    assert shard_for_run(None, DistContext(1, 2, 1, 2)) == Shard(1, 2)
    with pytest.raises(UsageError, match="torchrun"):
        shard_for_run("0/2", DistContext(0, 2, 0, 2))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert dist_context_from_env() == DistContext(1, 2, 1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK 2"):
        dist_context_from_env()
    # without GPUs every rank stays on the CPU with --device auto; cuda is refused with the reason
    if not __import__("torch").cuda.is_available():
        assert resolve_rank_device("auto", DistContext(1, 2, 1, 2)).type == "cpu"
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_rank_device("cuda", DistContext(1, 2, 1, 2))


class _FakeGroup:
    """Two ranks whose other rank reports ``other_ok`` (run_together only gathers)."""

    def __init__(self, rank: int, other_ok: bool):
        self.ctx, self.other_ok, self.gathered = DistContext(rank, 2, rank, 2), other_ok, []

    def gather(self, obj):
        self.gathered.append(obj)
        return [obj, self.other_ok] if self.ctx.rank == 0 else [self.other_ok, obj]


def test_run_together_waits_for_every_rank_and_finishes_on_rank_0_only():
    done = []
    g = _FakeGroup(0, True)
    assert run_together(g, lambda: 7, done.append) == 7 and done == [7] and g.gathered == [True]
    g = _FakeGroup(1, True)
    assert run_together(g, lambda: 8, done.append) == 8 and done == [7]  # rank 1 never finishes
    g = _FakeGroup(0, False)  # the other rank failed: no zip, an error naming it
    with pytest.raises(ValueError, match=r"shard\(s\) 1 of 2 failed"):
        run_together(g, lambda: 9, done.append)
    assert done == [7]

    def bad():
        raise FileNotFoundError("frames missing")
    g = _FakeGroup(1, True)  # a failing rank still reports to the others, then raises its error
    with pytest.raises(FileNotFoundError, match="frames missing"):
        run_together(g, bad, done.append)
    assert g.gathered == [False]
    with ShardGroup(DistContext()) as single:  # one process: no process group
        assert single.broadcast(3) == 3 and single.gather(4) == [4]


def _env():
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return env


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.png"))}


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "label_prop.run", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture
def two_short_davis16(data_root, tmp_path):
    """A DAVIS-2016 layout of car-shadow and motocross-jump cut to their first 12 and 9 frames
    (symlinks to the real JPEGs and ground truth; CI time)."""
    src = require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    root = tmp_path / "data"
    dst = root / "DAVIS2016"
    (dst / "ImageSets" / "2016").mkdir(parents=True)
    seqs = {"car-shadow": 12, "motocross-jump": 9}
    (dst / "ImageSets" / "2016" / "val.txt").write_text("".join(f"{s}\n" for s in seqs))
    for seq, n in seqs.items():
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            (dst / kind / "480p" / seq).mkdir(parents=True)
            for f in sorted((src / kind / "480p" / seq).glob(f"*.{ext}"))[:n]:
                (dst / kind / "480p" / seq / f.name).symlink_to(f)
    return root


@pytest.mark.data
@pytest.mark.slow
def test_shards_and_torchrun_equal_unsharded_run(two_short_davis16, tmp_path, one_torch_thread):
    root = two_short_davis16
    common = ["--data-root", str(root), "--input-size", "96", "--n-context", "2", "--threads", "1", "--precision", "float32"]  # identical PNGs in every process
    assert R.main(["random", "davis16", "--results-dir", str(tmp_path / "whole"), *common]) == 0
    whole = _pngs(tmp_path / "whole" / "random" / "davis16")
    assert len(whole) == 21

    shards = tmp_path / "shards"
    for i in (0, 1):  # through the script, as a user would run it
        subprocess.run(["bash", "scripts/run_test.sh", "random", "davis16", "--shard", f"{i}/2",
                        "--results-dir", str(shards), *common], cwd=REPO_ROOT, env=_env(), check=True)
    out = shards / "random" / "davis16"
    assert _pngs(out) == whole  # byte for byte
    records = {p.name: json.loads(p.read_text()) for p in out.glob("run-*.json")}
    assert sorted(n.rsplit("-", 1)[1] for n in records) == ["shard0of2.json", "shard1of2.json"]
    by_shard = {r["shard"]["index"]: r for r in records.values()}
    # longest first: car-shadow (12 frames) to shard 0, motocross-jump to shard 1
    assert by_shard[0]["shard"]["sequences"] == ["car-shadow"]
    assert by_shard[1]["shard"]["sequences"] == ["motocross-jump"]
    assert all(r["complete"] and r["shard"]["count"] == 2 for r in records.values())
    # --resume (unsharded) finds both sequences complete from the shards' records
    assert R.main(["random", "davis16", "--results-dir", str(shards), "--resume", *common]) == 0
    new = [json.loads(p.read_text()) for p in out.glob("run-*.json") if p.name not in records]
    assert len(new) == 1 and sorted(new[0]["resumed_skipped"]) == ["car-shadow", "motocross-jump"]
    assert _pngs(out) == whole

    # run_metrics.sh scores the union, with the unsharded run's numbers
    for res in (shards, tmp_path / "whole"):
        subprocess.run(["bash", "scripts/run_metrics.sh", "random", "davis16", "--data-root", str(root),
                        "--results-dir", str(res)], cwd=REPO_ROOT, env=_env(), check=True, capture_output=True)
    g_sh = pd.read_csv(out / "global_results.csv")
    pd.testing.assert_frame_equal(g_sh, pd.read_csv(tmp_path / "whole" / "random" / "davis16" / "global_results.csv"))
    assert pd.read_csv(out / "per-sequence_results.csv")["Sequence"].tolist() == ["car-shadow_1", "motocross-jump_1"]

    # torchrun, 2 processes on the CPU: one shard per rank, the same PNGs
    tr = tmp_path / "torchrun"
    proc = _torchrun(["random", "davis16", "--results-dir", str(tr), *common], REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tr / "random" / "davis16"
    assert _pngs(out) == whole
    records = [json.loads(p.read_text()) for p in sorted(out.glob("run-*.json"))]
    assert [(r["rank"], r["world_size"], r["shard"]["index"], r["device"]) for r in records] == \
        [(0, 2, 0, "cpu"), (1, 2, 1, "cpu")]
    assert len({r["started_utc"] for r in records}) == 1  # one launch, one timestamp


def _toy_dev(root: Path) -> None:
    """A DAVIS-2017 test-dev layout of two 5-frame 64x80 sequences (two objects each)."""
    bench = root / "DAVIS2017-test-dev"
    (bench / "ImageSets" / "2017").mkdir(parents=True)
    (bench / "ImageSets" / "2017" / "test-dev.txt").write_text("toy-a\ntoy-b\n")
    img = skdata.astronaut()[::4, ::4][:64, :80]
    for k, seq in enumerate(("toy-a", "toy-b")):
        (bench / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        for t in range(5):
            Image.fromarray(np.roll(img, (k + 1) * t, axis=1)).save(
                bench / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", quality=95)
        mask = np.zeros((64, 80), np.uint8)
        mask[8:30, 10:40], mask[35:60, 45:75] = 1, 2
        write_palette_png(bench / "Annotations" / "480p" / seq / "00000.png", mask)


@pytest.mark.slow
def test_torchrun_builds_the_zip_when_every_shard_is_done_and_shards_leave_it(tmp_path, capsys, one_torch_thread):
    root = tmp_path / "data"
    _toy_dev(root)
    common = ["--data-root", str(root), "--n-context", "2", "--threads", "1", "--precision", "float32"]  # identical PNGs in every process
    assert R.main(["random", "davis17dev", "--results-dir", str(tmp_path / "whole"), *common]) == 0
    with zipfile.ZipFile(tmp_path / "whole" / "random" / "davis17dev.zip") as zf:
        want = {n: zf.read(n) for n in zf.namelist()}
    assert len(want) == 10

    # --shard: no zip (a shard cannot know the others are done); the hint names the command
    sh = tmp_path / "sh"
    assert R.main(["random", "davis17dev", "--shard", "1/2", "--results-dir", str(sh), *common]) == 0
    assert "python -m label_prop.evaluation.submission random davis17dev" in capsys.readouterr().out
    assert not (sh / "random" / "davis17dev.zip").exists()

    proc = _torchrun(["random", "davis17dev", "--results-dir", str(tmp_path / "tr"), *common], REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "tr" / "random" / "davis17dev.zip") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == want
    rec0 = json.loads(next((tmp_path / "tr" / "random" / "davis17dev").glob("run-*-shard0of2.json")).read_text())
    assert rec0["submission_zip"].endswith("davis17dev.zip")
