"""Tests of the DAVIS metrics (label_prop.evaluation.metrics) and the metrics CLI (label_prop.evaluate)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO_ROOT, make_davis_dataset, require_data
from label_prop import evaluate as ev
from label_prop.evaluation import metrics as M
from label_prop.data.io import read_mask, write_palette_png

H, W = 480, 854  # DAVIS 480p: boundary tolerance ceil(0.008 * 979.6) = 8 pixels


def square(h=H, w=W, y=100, x=200, size=120):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y:y + size, x:x + size] = 1
    return m


# --------------------------------------------------------------------------- J (region)


def test_j_identical_disjoint_half():
    gt = square()
    assert M.region_similarity(gt, gt) == 1.0
    assert M.region_similarity(square(x=500), gt) == 0.0
    # prediction = left half of the GT square: |inter| = half, |union| = all -> 1/2
    half = gt.copy()
    half[:, 260:] = 0
    assert M.region_similarity(half, gt) == pytest.approx(0.5, abs=1e-12)
    # two equal squares overlapping by half their area: 1/2 / (3/2) = 1/3
    assert M.region_similarity(square(x=260), gt) == pytest.approx(1 / 3, abs=1e-12)


def test_empty_masks():
    empty = np.zeros((H, W), np.uint8)
    assert M.region_similarity(empty, empty) == 1.0
    assert M.boundary_f_measure(empty, empty) == 1.0
    assert M.region_similarity(empty, square()) == 0.0
    assert M.boundary_f_measure(empty, square()) == 0.0
    assert M.region_similarity(square(), empty) == 0.0
    assert M.boundary_f_measure(square(), empty) == 0.0


def test_void_pixels_ignored():
    gt = square()
    void = np.zeros_like(gt, dtype=bool)
    void[80:240, 180:340] = True
    void[gt > 0] = False  # a void ring around the object, as DAVIS-2017 draws it
    pred = gt.copy()
    pred[85:235, 185:335] = 1  # the prediction differs from the GT on void pixels only
    assert M.region_similarity(pred, gt) < 1.0 and M.boundary_f_measure(pred, gt) < 1.0
    assert M.region_similarity(pred, gt, void) == 1.0
    assert M.boundary_f_measure(pred, gt, void) == 1.0
    # same through the sequence function: 255 in the GT ids is void
    gt_ids = np.where(void, 255, gt).astype(np.uint8)
    scores = M.evaluate_sequence(np.stack([pred] * 3), np.stack([gt_ids] * 3))
    assert scores.object_ids == [1]
    assert np.all(scores.j == 1.0) and np.all(scores.f == 1.0)
    # without void handling (what the official semi-supervised driver does) it is not perfect
    scores = M.evaluate_sequence(np.stack([pred] * 3), np.stack([gt_ids] * 3), ignore_void=False)
    assert np.all(scores.j < 1.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        M.region_similarity(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="shape"):
        M.boundary_f_measure(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="shape"):
        M.evaluate_sequence(np.zeros((3, 4, 5)), np.zeros((3, 5, 4)))


# --------------------------------------------------------------------------- F (boundary)


def test_seg2bmap_hand_made():
    seg = np.zeros((4, 4), np.uint8)
    seg[1:3, 1:3] = 1
    expected = np.array(
        [[1, 1, 1, 0],
         [1, 0, 1, 0],
         [1, 1, 1, 0],
         [0, 0, 0, 0]], dtype=bool)  # fmt: skip
    np.testing.assert_array_equal(M.seg2bmap(seg), expected)
    # an object in the bottom-right corner: last row / last column rules, corner never set
    seg = np.zeros((3, 3), np.uint8)
    seg[2, 2] = 1
    expected = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(M.seg2bmap(seg), expected)


def test_boundary_tolerance():
    assert M.boundary_tolerance((480, 854)) == 8  # ceil(7.837)
    assert M.boundary_tolerance((100, 100)) == 2  # ceil(1.131)
    assert M.boundary_tolerance((100, 100), bound_th=3) == 3


def _f_brute_force(pred, gt, radius):
    """F with explicit Euclidean matching of boundary pixels (no morphology)."""
    bp = np.argwhere(M.seg2bmap(pred))
    bg = np.argwhere(M.seg2bmap(gt))
    d2 = ((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1)
    precision = np.mean(d2.min(1) <= radius**2)
    recall = np.mean(d2.min(0) <= radius**2)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("dx,dy", [(3, 0), (8, 0), (0, 8), (5, 6)])
def test_f_shift_within_tolerance_is_perfect(dx, dy):
    gt = square()
    pred = square(x=200 + dx, y=100 + dy)
    assert M.region_similarity(pred, gt) < 1.0
    assert M.boundary_f_measure(pred, gt) == 1.0


@pytest.mark.parametrize("dx,dy", [(9, 0), (0, 9), (20, 0), (7, 7)])
def test_f_shift_beyond_tolerance(dx, dy):
    gt = square()
    pred = square(x=200 + dx, y=100 + dy)
    f = M.boundary_f_measure(pred, gt)
    assert 0.0 < f < 1.0  # (7, 7) is 9.9 px away: only part of the boundary matches
    assert f == pytest.approx(_f_brute_force(pred, gt, 8), abs=1e-12)


def test_f_far_shift_is_zero():
    assert M.boundary_f_measure(square(x=500), square()) == 0.0


# --------------------------------------------------------------------------- statistics


def test_decay_bins_official_binning():
    # edges round(linspace(1, n, 5) + 1e-10) - 1, bins inclusive of their end edge
    assert M.decay_bins(8) == [(0, 3), (2, 5), (4, 6), (5, 8)]
    assert M.decay_bins(4) == [(0, 2), (1, 3), (2, 3), (2, 4)]
    assert M.decay_bins(38) == [(0, 10), (9, 20), (19, 29), (28, 38)]  # 10.25, 19.5, 28.75
    with pytest.raises(ValueError):
        M.decay_bins(0)


def test_recall_and_decay_hand_made():
    v = np.array([1.0, 1.0, 1.0, 0.2, 0.2, 0.2, 0.4, 0.6])
    s = M.db_statistics(v)
    assert s.mean == pytest.approx(4.6 / 8)
    assert s.recall == pytest.approx(4 / 8)  # 1, 1, 1, 0.6 are > 0.5
    assert s.decay == pytest.approx(1.0 - (0.2 + 0.4 + 0.6) / 3)  # frames 0-2 vs frames 5-7

    s = M.db_statistics([0.5, 0.5, 0.9, 0.1])  # exactly 0.5 is not a success
    assert s.recall == pytest.approx(0.25)
    assert s.decay == pytest.approx(0.5 - 0.5)  # frames 0-1 vs frames 2-3
    s = M.db_statistics([0.2, 0.4, 0.6, 0.8, 1.0])  # improving: negative decay
    assert s.decay == pytest.approx((0.2 + 0.4) / 2 - (0.8 + 1.0) / 2)
    with pytest.raises(ValueError):
        M.db_statistics([])


def test_summarize_means_over_objects():
    s1 = (M.Statistics(1.0, 1.0, 0.0), M.Statistics(0.5, 0.0, 0.2))
    s2 = (M.Statistics(0.0, 0.0, 0.4), M.Statistics(0.5, 1.0, 0.0))
    out = M.summarize([s1, s2])
    assert out == pytest.approx(
        {"J&F-Mean": 0.5, "J-Mean": 0.5, "J-Recall": 0.5, "J-Decay": 0.2,
         "F-Mean": 0.5, "F-Recall": 0.5, "F-Decay": 0.1}  # fmt: skip
    )
    assert list(out) == ev.GLOBAL_COLUMNS


# --------------------------------------------------------------------------- sequences


def test_first_and_last_frames_excluded():
    gt = np.stack([square(x=200 + 10 * t) for t in range(6)])
    pred = gt.copy()
    pred[0] = 0
    pred[-1] = square(x=600)
    scores = M.evaluate_sequence(pred, gt)
    assert scores.frames == [1, 2, 3, 4]
    assert scores.j.shape == scores.f.shape == (1, 4)
    assert np.all(scores.j == 1.0) and np.all(scores.f == 1.0)
    full = M.evaluate_sequence(pred, gt, skip_first_last=False)
    assert full.j[0, 0] == 0.0 and full.j[0, -1] == 0.0 and full.f.mean() < 1.0
    with pytest.raises(ValueError, match="3 frames"):
        M.evaluate_sequence(pred[:2], gt[:2])


def test_multi_object_sequence_objects_from_first_frame():
    gt = np.zeros((4, 60, 80), np.uint8)
    gt[:, 5:20, 5:20] = 1
    gt[:, 30:50, 40:70] = 3  # ids 1 and 3: official scores 1..max = 1, 2, 3
    gt[2:, 40:45, 5:10] = 4  # appears after the first frame: not scored (as official)
    pred = gt.copy()
    pred[pred == 4] = 0
    pred[1:3, 30:50, 40:55] = 0  # object 3 half missing in the scored frames 1 and 2
    scores = M.evaluate_sequence(pred, gt)
    assert scores.object_ids == [1, 2, 3]
    np.testing.assert_array_equal(scores.j[0], [1.0, 1.0])
    np.testing.assert_array_equal(scores.j[1], [1.0, 1.0])  # empty in both: J = 1
    np.testing.assert_allclose(scores.j[2], [0.5, 0.5])
    pred[1, 0, 0] = 5  # an id that is not an object of the sequence
    with pytest.raises(ValueError, match=r"\[5\]"):
        M.evaluate_sequence(pred, gt)


def test_single_object_binarises():
    gt = np.stack([square(h=60, w=80, y=10, x=10, size=20)] * 3) * 255  # DAVIS-2016 values
    pred = np.stack([square(h=60, w=80, y=10, x=10, size=20)] * 3) * 7
    scores = M.evaluate_sequence(pred, gt, single_object=True)
    assert scores.object_ids == [1] and np.all(scores.j == 1.0) and np.all(scores.f == 1.0)
    with pytest.raises(ValueError):  # without single_object, 7 is not an object of the GT
        M.evaluate_sequence(pred, gt)


# --------------------------------------------------------------------------- CLI on synthetic data

SEQS = ["alpha", "beta"]
T, SH, SW = 6, 48, 64


def _make_dataset(root: Path, folder="DAVIS2016", imageset="ImageSets/2016/val.txt", multi=False):
    """A tiny dataset in the official DAVIS layout; returns {seq: GT ids [T, H, W]}."""
    return make_davis_dataset(root, folder, imageset, multi=multi, seqs=SEQS, frames=T, size=(SH, SW))


@pytest.fixture
def synth(tmp_path):
    """Synthetic davis16 data root + predictions (GT with frame 2 shifted) for model 'm'."""
    root = tmp_path / "data"
    gts = _make_dataset(root)
    results = tmp_path / "results"
    for seq, gt in gts.items():
        for t, ids in enumerate(gt):
            pred = np.roll(ids, 3, axis=1) if t == 2 else ids
            write_palette_png(results / "m" / "davis16" / seq / f"{t:05d}.png", pred)
    return root, results, gts


def _cli(root, results, *extra):
    return ev.main(["m", "davis16", "--results-dir", str(results), "--data-root", str(root), *extra])


def test_cli_writes_official_csvs(synth, capsys):
    root, results, gts = synth
    assert _cli(root, results) == 0
    out_dir = results / "m" / "davis16"
    g = pd.read_csv(out_dir / "global_results.csv")
    s = pd.read_csv(out_dir / "per-sequence_results.csv")
    assert list(g.columns) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert list(s.columns) == ["Sequence", "J-Mean", "F-Mean"]
    assert s["Sequence"].tolist() == ["alpha_1", "beta_1"]
    # expected: the only imperfect scored frame is 2 (frames 1..4 are scored)
    for row, seq in zip(s.itertuples(index=False), SEQS):
        gt = gts[seq]
        pred2 = np.roll(gt[2], 3, axis=1)
        j2 = M.region_similarity(pred2, gt[2])
        assert 0 < j2 < 1
        assert row[1] == pytest.approx((3 + j2) / 4, abs=1e-9)
        assert row[2] == pytest.approx((3 + M.boundary_f_measure(pred2, gt[2])) / 4, abs=1e-9)
    assert g["J-Mean"][0] == pytest.approx(s["J-Mean"].mean(), abs=1e-9)
    assert g["J&F-Mean"][0] == pytest.approx((g["J-Mean"][0] + g["F-Mean"][0]) / 2, abs=1e-9)
    assert g["J-Recall"][0] == 1.0
    out = capsys.readouterr().out
    assert "J&F-Mean" in out and "alpha_1" in out
    # second run: refuses without --overwrite (a usage error), works with it
    assert _cli(root, results) == 2
    err = capsys.readouterr().err
    assert "global_results.csv" in err and "--overwrite" in err
    assert _cli(root, results, "--overwrite") == 0


def test_evaluate_benchmark_function_and_sequences(synth):
    root, results, _ = synth
    g, s = ev.evaluate_benchmark(results / "m" / "davis16", "davis16", root, sequences=["beta"])
    assert s["Sequence"].tolist() == ["beta_1"]
    assert g["J-Mean"][0] == pytest.approx(s["J-Mean"][0])


def _expect_error(root, results, needle, capsys):
    with pytest.raises(ValueError) as exc:
        ev.evaluate_benchmark(results / "m" / "davis16", "davis16", root)
    assert needle in str(exc.value)
    assert _cli(root, results) == 1
    assert needle in capsys.readouterr().err
    assert not (results / "m" / "davis16" / "global_results.csv").exists()


def test_cli_missing_frame(synth, capsys):
    root, results, _ = synth
    victim = results / "m" / "davis16" / "beta" / "00003.png"
    victim.unlink()
    _expect_error(root, results, str(victim), capsys)


def test_cli_extra_frame(synth, capsys):
    root, results, _ = synth
    extra = results / "m" / "davis16" / "alpha" / "00006.png"
    write_palette_png(extra, np.zeros((SH, SW), np.uint8))
    _expect_error(root, results, str(extra), capsys)


def test_cli_size_mismatch(synth, capsys):
    root, results, _ = synth
    victim = results / "m" / "davis16" / "alpha" / "00004.png"
    write_palette_png(victim, np.zeros((SH, SW + 1), np.uint8))
    _expect_error(root, results, str(victim), capsys)


def test_cli_unknown_object_id(synth, capsys):
    root, results, _ = synth
    victim = results / "m" / "davis16" / "beta" / "00001.png"
    ids = read_mask(victim)
    ids[0, 0] = 2
    write_palette_png(victim, ids)
    _expect_error(root, results, str(victim), capsys)


def test_davis16_prediction_may_use_255(synth):
    root, results, _ = synth
    pred_dir = results / "m" / "davis16"
    g1, s1 = ev.evaluate_benchmark(pred_dir, "davis16", root)
    for png in pred_dir.glob("*/*.png"):  # DAVIS-2016 style: object = 255
        write_palette_png(png, read_mask(png) * 255)
    g2, s2 = ev.evaluate_benchmark(pred_dir, "davis16", root)
    pd.testing.assert_frame_equal(g1, g2)
    pd.testing.assert_frame_equal(s1, s2)


def test_cli_benchmark_without_full_gt(tmp_path, capsys):
    with pytest.raises(ValueError, match="first frame only"):
        ev.evaluate_benchmark(tmp_path, "davis17dev", tmp_path)
    assert ev.main(["m", "davis17dev", "--results-dir", str(tmp_path), "--data-root", str(tmp_path)]) == 2
    assert "cannot be scored" in capsys.readouterr().err


def test_multi_object_benchmark_with_void(tmp_path):
    root = tmp_path / "data"
    gts = _make_dataset(root, folder="DAVIS2017", imageset="ImageSets/2017/val.txt", multi=True)
    pred_dir = tmp_path / "results" / "m" / "davis17"
    for seq, gt in gts.items():
        for t, ids in enumerate(gt):
            pred = np.where(ids == 255, 0, ids)  # void predicted as background
            if t == 3:
                pred = np.where(pred == 1, 0, pred)  # object 1 lost in frame 3
            write_palette_png(pred_dir / seq / f"{t:05d}.png", pred)
    g, s = ev.evaluate_benchmark(pred_dir, "davis17", root)
    assert s["Sequence"].tolist() == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    np.testing.assert_allclose(s["J-Mean"], [0.75, 1.0, 0.75, 1.0])
    np.testing.assert_allclose(s["F-Mean"], [0.75, 1.0, 0.75, 1.0])
    # per object: recall 0.75, 1, 0.75, 1; decay (bins of 4 frames: 0-1 vs 2-3) 0.5, 0, 0.5, 0
    assert g["J-Recall"][0] == pytest.approx(0.875) and g["F-Recall"][0] == pytest.approx(0.875)
    assert g["J-Decay"][0] == pytest.approx(0.25) and g["F-Decay"][0] == pytest.approx(0.25)
    assert g["J&F-Mean"][0] == pytest.approx(0.875)
    # As the official semi-supervised evaluation (no void mask, void = background in the GT),
    # predicting an object on void pixels costs J.
    for seq, gt in gts.items():
        for t, ids in enumerate(gt):
            write_palette_png(pred_dir / seq / f"{t:05d}.png", np.where(ids == 255, 2, ids))
    _, s2 = ev.evaluate_benchmark(pred_dir, "davis17", root)
    assert (s2["J-Mean"][[1, 3]] < 1.0).all() and (s2["J-Mean"][[0, 2]] == 1.0).all()


def test_run_metrics_sh(synth):
    script = REPO_ROOT / "scripts" / "run_metrics.sh"
    res = subprocess.run(["bash", str(script), "m"], capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr
    root, results, _ = synth
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run(
        ["bash", str(script), "m", "davis16", "--results-dir", str(results), "--data-root", str(root)],
        capture_output=True, text=True, env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "J&F-Mean" in res.stdout
    assert (results / "m" / "davis16" / "per-sequence_results.csv").is_file()


# --------------------------------------------------------------------------- real data vs vos-benchmark

CROSS_SEQS = ["car-shadow", "motocross-jump"]


def _perturb(ids: np.ndarray, t: int) -> np.ndarray:
    """Deterministic damage so that the scores are far from trivially 1."""
    k = t % 6
    if k == 0:
        return ids
    if k == 1:
        return cv2.erode(ids, np.ones((9, 9), np.uint8))
    if k == 2:
        return cv2.dilate(ids, np.ones((15, 15), np.uint8))
    if k == 3:
        return np.roll(ids, (6, 14), axis=(0, 1))  # partly beyond the 8 px F tolerance
    if k == 4:
        return np.zeros_like(ids) if t % 12 == 4 else np.roll(ids, -5, axis=1)  # dropped frame
    out = ids.copy()
    out[40:90, 60:200] = 1  # a false-positive blob
    return out


@pytest.mark.data
def test_cross_check_with_vos_benchmark(data_root, tmp_path):
    """Our J/F agree with the vos-benchmark package (hkchengrex) on real DAVIS-2016 masks.

    vos-benchmark vs official / ours, and why the comparison below is still exact:
    * it reports percents: we compare our fraction with its value / 100;
    * it computes only per-object J and F means (no Recall / Decay), and its global J (F) is the
      mean over objects, as the official J-Mean (F-Mean): those are what is compared;
    * it skips the first and last frame by default, as the official protocol (kept on);
    * it has no void handling and no single-object mode: every distinct non-zero value is an
      object id, found by ``np.unique`` in GT and prediction. The DAVIS-2016 GT stores the object
      as 255 while our predictions use id 1, so (a) for the prediction folder the CLI scores, it
      gets a copy of the GT relabelled 255 -> 1 (what ``read_mask(binary=True)`` does), and
      (b) on the original GT folder it scores a second prediction folder written with 255;
    * it scores the objects seen in the GT of the scored frames, from their first appearance,
      while official scores 1..max id of the first-frame GT over all frames; identical here since
      the object is present in every frame of these sequences (asserted).
    """
    import vos_benchmark.benchmark as vb

    davis = require_data(data_root / "DAVIS2016", "DAVIS-2016 val")
    gt_root = davis / "Annotations" / "480p"
    pred_dir = tmp_path / "results" / "m" / "davis16"
    pred255_dir = tmp_path / "pred255"
    gt01_dir = tmp_path / "gt01"
    ours_raw = {}
    for seq in CROSS_SEQS:
        pngs = sorted((gt_root / seq).glob("*.png"))
        gt_raw = np.stack([np.asarray(Image.open(p)) for p in pngs])
        assert set(np.unique(gt_raw).tolist()) == {0, 255}
        assert all((g > 0).any() for g in gt_raw)  # object present in every frame
        preds = []
        for t, p in enumerate(pngs):
            gt01 = read_mask(p, binary=True)
            pred = _perturb(gt01, t)
            preds.append(pred)
            write_palette_png(pred_dir / seq / p.name, pred)
            write_palette_png(pred255_dir / seq / p.name, pred * 255)
            write_palette_png(gt01_dir / seq / p.name, gt01)
        ours_raw[seq] = M.evaluate_sequence(np.stack(preds) * 255, gt_raw, single_object=True)

    g, s = ev.evaluate_benchmark(pred_dir, "davis16", data_root, sequences=CROSS_SEQS)
    assert s["Sequence"].tolist() == [f"{q}_1" for q in CROSS_SEQS]
    assert (s["J-Mean"] < 0.9).all() and (s["F-Mean"] < 0.9).all() and (s["J-Mean"] > 0.3).all()

    vj, vjj, vf, vobj = vb.benchmark([str(gt01_dir)], [str(pred_dir)], strict=True, num_processes=1, verbose=False)
    _, _, _, vobj255 = vb.benchmark(
        [str(gt_root)], [str(pred255_dir)], strict=False, num_processes=1, verbose=False
    )
    diffs = []
    for seq in CROSS_SEQS:
        row = s[s["Sequence"] == f"{seq}_1"].iloc[0]
        iou, bf = vobj[0][seq]
        assert list(iou) == [1]
        diffs += [abs(row["J-Mean"] - iou[1] / 100), abs(row["F-Mean"] - bf[1] / 100)]
        iou255, bf255 = vobj255[0][seq]
        assert list(iou255) == [255]
        diffs += [abs(ours_raw[seq].j.mean() - iou255[255] / 100), abs(ours_raw[seq].f.mean() - bf255[255] / 100)]
    diffs += [
        abs(g["J-Mean"][0] - vjj[0] / 100),
        abs(g["F-Mean"][0] - vf[0] / 100),
        abs(g["J&F-Mean"][0] - vj[0] / 100),
    ]
    print(f"max |ours - vos-benchmark| = {max(diffs):.3e}")
    assert max(diffs) <= 1e-6
