"""The local-window engine against the dense protocol, and its invariants."""
from __future__ import annotations

import json
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from label_prop import LabelPropagator, PropagationConfig, propagate
from label_prop.propagation.reference import propagate_dense

P = PropagationConfig


def _inputs(T, C, h, w, K, seed, smooth=True):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(T, C, h, w, generator=g)
    if smooth:  # spatially correlated features, closer to real ones (many near-ties otherwise absent)
        feats = F.avg_pool2d(feats, 3, stride=1, padding=1) + 0.3 * feats
    feats = F.normalize(feats, dim=1)
    labels = torch.softmax(3 * torch.randn(K, h, w, generator=g), dim=0)
    return feats, labels


CONFIGS = [
    # T, C, h, w, K, topk, temperature, radius, n_context, query_tile
    (8, 16, 9, 11, 3, 5, 0.1, 3, 4, 4),      # ring full from frame 5 on
    (6, 8, 7, 13, 2, 15, 0.05, 2.5, 10, 3),  # non-integer radius, copies of frame 0 throughout
    (7, 12, 12, 10, 4, 7, 0.2, 12, 3, 8),    # radius larger than the grid
    (5, 4, 5, 6, 2, 40, 0.1, 1, 2, 2),       # radius 1: only the query's own cell; topk > candidates
    (6, 16, 10, 10, 3, 10, 0.1, 4, 0, 4),    # no short-term context: frame 0 only
    (9, 8, 6, 7, 2, 6, 0.1, 1.5, 7, 1),      # region of 3 rows < filled slots < n_context
    (8, 8, 11, 13, 3, 6, 0.1, 4, 3, (3, 5)),  # rectangular tiles
    (6, 8, 7, 37, 2, 5, 0.1, 3, 3, (2, 1)),   # 37 tiles per tile row: scored in batches of 16, 16, 5
    # topk 2 over 96 cells and up to 80 second-stage candidates: both top-k rows padded (CPU)
    (36, 4, 6, 7, 2, 2, 0.1, 4, 40, 4),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_engine_equals_dense(cfg):
    T, C, h, w, K, topk, temp, radius, n_ctx, tile = cfg
    feats, labels = _inputs(T, C, h, w, K, seed=hash(cfg) % 1000)
    cfg = P(topk=topk, temperature=temp, radius=radius, n_context=n_ctx)
    ours = propagate(feats, labels, cfg, query_tile=tile)
    dense = propagate_dense(feats, labels, cfg)
    assert ours.shape == (T, K, h, w)
    assert (ours - dense).abs().max().item() < 1e-4
    agree = (ours.argmax(1) == dense.argmax(1)).float().mean().item()
    assert agree >= 0.999


def test_result_does_not_depend_on_tiling():
    feats, labels = _inputs(6, 8, 11, 9, 3, seed=1)
    outs = [propagate(feats, labels, P(topk=6, radius=3.5, n_context=3), query_tile=b, query_chunk=c)
            for b, c in ((1, 7), (4, 1024), (16, 33), ((2, 5), 64), ((7, 1), 5))]
    for o in outs[1:]:
        assert (o - outs[0]).abs().max().item() < 1e-5


def test_soft_labels_sum_to_one_and_frame0_unchanged():
    feats, labels = _inputs(7, 8, 8, 9, 4, seed=2)
    out = propagate(feats, labels, P(topk=5, radius=3, n_context=3), query_tile=4)
    assert torch.equal(out[0], labels)
    assert torch.allclose(out.sum(1), torch.ones(7, 8, 9), atol=1e-5)
    assert (out >= 0).all()


def test_permuting_object_channels_permutes_output():
    feats, labels = _inputs(6, 8, 8, 9, 4, seed=3)
    perm = torch.tensor([0, 3, 1, 2])
    cfg = P(topk=5, radius=3, n_context=3)
    out = propagate(feats, labels, cfg, query_tile=4)
    out_p = propagate(feats, labels[perm], cfg, query_tile=4)
    assert torch.allclose(out_p, out[:, perm], atol=1e-6)


def test_streaming_step_equals_batch():
    feats, labels = _inputs(6, 8, 8, 9, 3, seed=4)
    cfg = P(topk=5, radius=3, n_context=2)
    out = propagate(feats, labels, cfg, query_tile=4)
    prop = LabelPropagator(feats[0], labels, cfg, query_tile=4)
    for t in range(1, 6):
        assert torch.allclose(prop.step(feats[t]), out[t], atol=1e-6)
    assert prop.memory.ring_key.shape[2] == 2  # memory holds n_context frames, not the whole video


def test_identical_frames_copy_labels():
    """A static video: every query's best matches are its own position, so labels persist."""
    feats, labels = _inputs(1, 32, 8, 8, 3, seed=5, smooth=False)
    hard = F.one_hot(labels.argmax(0), 3).permute(2, 0, 1).float()
    video = feats.expand(5, -1, -1, -1)
    out = propagate(video, hard, P(topk=1, radius=3, n_context=3))
    assert torch.equal(out.argmax(1), hard.argmax(0).expand(5, -1, -1))


@pytest.mark.parametrize("bad", [
    dict(feats_shape=(3, 8, 8), labels_shape=(2, 8, 8)),   # feats not 4-D
    dict(feats_shape=(4, 3, 8, 8), labels_shape=(2, 7, 8)),  # grid mismatch
])
def test_bad_shapes_raise(bad):
    with pytest.raises(ValueError):
        propagate(torch.zeros(bad["feats_shape"]), torch.zeros(bad["labels_shape"]))


@pytest.mark.parametrize("kw", [dict(topk=0), dict(temperature=0), dict(radius=0), dict(n_context=-1),
                                dict(query_tile=0), dict(query_tile=(4,)), dict(query_tile=(2, 0))])
def test_bad_hyperparameters_raise(kw):
    feats, labels = _inputs(2, 4, 5, 5, 2, seed=6)
    engine_kw = {k: v for k, v in kw.items() if k.startswith("query_")}
    with pytest.raises(ValueError):
        propagate(feats, labels, P(**{k: v for k, v in kw.items() if k not in engine_kw}), **engine_kw)


def test_step_rejects_wrong_feature_shape():
    feats, labels = _inputs(2, 4, 5, 5, 2, seed=7)
    prop = LabelPropagator(feats[0], labels, P(n_context=2))
    with pytest.raises(ValueError, match="expected features of shape"):
        prop.step(torch.zeros(4, 5, 6))


def test_predict_then_push_equals_step():
    feats, labels = _inputs(5, 8, 8, 9, 3, seed=8)
    a = LabelPropagator(feats[0], labels, P(topk=5, radius=3, n_context=2), query_tile=4)
    b = LabelPropagator(feats[0], labels, P(topk=5, radius=3, n_context=2), query_tile=4)
    for t in range(1, 5):
        pred = b.predict(feats[t])
        b.push(feats[t], pred)
        assert torch.equal(a.step(feats[t]), pred)
    assert a.t == b.t == 4
    with pytest.raises(ValueError, match="labels of shape"):
        b.push(feats[1], labels[:2])


def test_benchmark_runs_and_engine_matches_dense(capsys, tmp_path):
    """The speed benchmark stays runnable; its engine/dense agreement columns are checked (not
    its timings)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_label_prop.py"
    spec = importlib.util.spec_from_file_location("bench_label_prop", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--grid", "14", "17", "--channels", "16", "--n-context", "3", "--repeats", "1", "--device", "cpu",
                "--json", str(out)])
    assert "GEMM" in capsys.readouterr().out  # the roofline header
    row = json.loads(out.read_text())["engine"][0]
    assert (row["device"], row["n_context"]) == ("cpu", 3)
    assert row["max_abs_diff"] < 1e-4 and row["argmax_agreement"] == 1.0
    assert row["gflop_computed"] >= row["gflop_minimum"] > 0
