"""benchmarks/bench_quality.py end to end at a tiny scale: train, snapshot, export, score, table, plot."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO_ROOT, require_data


@pytest.mark.data
@pytest.mark.slow
def test_learning_curve_smoke(tmp_path, data_root):
    src = require_data(data_root / "unlabeled-video" / "JPEGImages", "unlabeled training video")
    for video in sorted(p.name for p in src.iterdir())[:2]:
        dst = tmp_path / "video" / "JPEGImages" / video
        dst.mkdir(parents=True)
        for k in range(3):
            shutil.copy(src / video / f"{k:05d}.jpg", dst)
    out = tmp_path / "q"
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--output-dir", str(out), "--seeds", "1", "--points", "1",
           "--sequences", "car-shadow", "--input-size", "64", "--n-context", "2", "--",
           "--data", str(tmp_path / "video"), "--steps", "2", "--batch-size", "2", "--img-size", "32",
           "--workers", "0"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    df = pd.read_csv(out / "quality.csv")
    assert df["seed"].astype(str).tolist() == ["1", "1", "random"]
    assert df["step"].tolist() == [0, 2, 0]
    assert df["images"].tolist() == [0, 4, 0]
    assert df["JF"].between(0, 1).all()
    assert (out / "quality.png").stat().st_size > 1000
    assert "final point over 1 seeds" in res.stdout
    # a second call reuses everything (no training, no scoring) and gives the same table
    log = out / "seed-1" / "bench.log"
    before = log.read_text()
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert pd.read_csv(out / "quality.csv").equals(df)
    assert log.read_text() == before
