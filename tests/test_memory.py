"""The long-term object memory: faiss against brute force, bounded banks, the protocol unchanged
when the memory is off, and a lost object re-identified on a synthetic clip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")
from label_prop.config import MemoryConfig, PropagationConfig  # noqa: E402
from label_prop.data.synthetic import REENTRY_KINDS, reentry_clip  # noqa: E402
from label_prop.evaluation.metrics import region_similarity  # noqa: E402
from label_prop.propagation.memory import KnnIndex, ObjectMemory, brute_force_knn  # noqa: E402
from label_prop.propagation.multiref import MultiRefPropagator  # noqa: E402
from label_prop.propagation.pipeline import VideoSegmenter  # noqa: E402
from label_prop.propagation.features import build_encoder  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]


def unit(n, c, seed):
    x = torch.randn(n, c, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


@pytest.mark.parametrize("n", [50, 3000])
def test_the_exact_index_returns_the_brute_force_neighbours(n):
    keys, queries = unit(n, 64, 0), unit(200, 64, 1)
    ref_s, ref_i = brute_force_knn(queries, keys, 10)
    s, i = KnnIndex(keys.numpy(), "flat").search(queries.numpy(), 10)
    np.testing.assert_allclose(s, ref_s.numpy(), rtol=0, atol=1e-5)
    assert (i == ref_i.numpy()).mean() > 0.999  # ties at float32 rounding may swap two neighbours
    assert KnnIndex(keys.numpy(), "auto", MemoryConfig(approx_above=n)).kind == "flat"
    assert KnnIndex(keys.numpy(), "auto", MemoryConfig(approx_above=n - 1)).kind == "ivf"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_true_neighbours(kind):
    keys, queries = unit(5000, 32, 2), unit(100, 32, 3)
    _, ref = brute_force_knn(queries, keys, 10)
    _, got = KnnIndex(keys.numpy(), kind, MemoryConfig(ivf_lists=32, ivf_probe=8)).search(queries.numpy(), 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref.numpy())])
    assert recall > 0.5, recall  # 32 channels, 32 lists: far above chance (0.002); 256-channel costs: bench_memory.py


def test_banks_stay_bounded_and_reservoir_sampling_is_uniform():
    mem = ObjectMemory(2, MemoryConfig(bank_size=100, prototypes=4), seed=0)
    feat = torch.zeros(8, 10, 10)
    labels = torch.zeros(2, 10, 10)
    labels[1] = 1.0
    for t in range(50):  # 50 frames x 100 positions offered, 100 kept
        feat = torch.full((8, 10, 10), float(t))
        mem.admit(feat, labels, [1], t)
    bank = mem.banks[1]
    assert bank.shape == (100, 8) and mem.seen[1] == 5000
    frames = bank[:, 0]
    assert frames.min() < 10 and frames.max() > 40 and 15 < frames.mean() < 35  # all frames, uniformly
    assert mem.prototypes[1].shape == (4, 8) and mem.banks[0] is None
    assert mem.nbytes == 100 * 8 * 4 + 4 * 8 * 4


def test_without_the_memory_the_propagation_is_unchanged():
    feats = [torch.nn.functional.normalize(torch.randn(16, 6, 7, generator=torch.Generator().manual_seed(t)), dim=0)
             for t in range(6)]
    y0 = torch.zeros(2, 6, 7)
    y0[0], y0[1, 2:4, 2:5] = 1.0, 1.0
    y0[0, 2:4, 2:5] = 0.0
    cfg = PropagationConfig(n_context=2)
    plain, off = MultiRefPropagator(2, cfg), MultiRefPropagator(2, cfg, MemoryConfig(reid=False))
    on = MultiRefPropagator(2, cfg, MemoryConfig(reid=True, lost_ratio=0.01))  # never lost here
    outs = []
    for t, f in enumerate(feats):
        args = (f, y0, [1]) if t == 0 else (f,)
        outs.append([p.step(*args) for p in (plain, off, on)])
    for t, (a, b, c) in enumerate(outs):
        assert torch.equal(a, b), t
        assert torch.equal(a, c) or any(e[2] != "admitted" for e in on.memory.events), t
    assert off.memory is None and on.memory is not None


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("random", precision="float32")


def run(encoder, kind, reid):
    frames, gt = reentry_clip(kind, radius=42)
    seg = VideoSegmenter(encoder, PropagationConfig(n_context=20), object_ids=[1], memory=MemoryConfig(reid=reid))
    pred = np.stack([seg.step(f, gt[0] if t == 0 else None) for t, f in enumerate(frames)])
    events = seg.propagator.memory.events if seg.propagator.memory else []
    return pred, gt, [e for e in events if e[2] != "admitted"]


def test_an_object_that_jumps_past_the_radius_is_re_identified(encoder):
    pred, gt, events = run(encoder, "jump", True)
    plain, _, _ = run(encoder, "jump", False)
    half = len(gt) // 2
    j = [region_similarity(p == 1, g == 1) for p, g in zip(pred[half:], gt[half:])]
    j0 = [region_similarity(p == 1, g == 1) for p, g in zip(plain[half:], gt[half:])]
    assert ("found" in {e[2] for e in events}) and min(e[0] for e in events if e[2] == "found") <= half + 2, events
    assert np.mean(j0) < 0.05 and np.mean(j) > np.mean(j0) + 0.2, (np.mean(j), np.mean(j0))


@pytest.mark.parametrize("kind", REENTRY_KINDS)
def test_reentry_clips_have_the_stated_ground_truth(kind):
    frames, gt = reentry_clip(kind, n_frames=40)
    area = gt.reshape(40, -1).sum(1)
    assert frames.shape == (40, 240, 320, 3) and area[0] > 0
    if kind == "jump":
        assert (area > 0).all()
        c = [np.nonzero(g)[1].mean() for g in gt[19:21]]
        assert c[1] - c[0] > 12 * 8  # farther than the radius of 12 cells of 8 pixels
    else:
        assert (area == 0).sum() >= 4 and area[-1] > 0  # gone for a while, back at the end


def test_segment_re_identifies_with_reid_and_records_it(tmp_path):
    import json

    from label_prop import segment as S
    from label_prop.data.io import write_palette_png
    from PIL import Image
    frames, gt = reentry_clip("jump", n_frames=30, radius=42)
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    write_palette_png(tmp_path / "first.png", gt[0])
    runs = {}
    for name, extra in (("off", []), ("on", ["--reid"])):
        out = tmp_path / name
        assert S.main([str(folder), "--mask", str(tmp_path / "first.png"), "--out", str(out), "--no-overlay",
                       "--threads", "1", "--n-context", "10", *extra]) == 0
        runs[name] = json.loads((out / "segment.json").read_text())
    assert runs["off"]["reid_events"] == [] and runs["off"]["memory"]["reid"] is False
    assert runs["on"]["memory"]["reid"] is True and ["found"] == sorted({e[2] for e in runs["on"]["reid_events"]} - {"lost"})
