"""The sparse hybrid loss equals the dense formula (docs/method.md, "Loss")."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hvc.loss import dense_hybrid_loss, dense_positive_mask, hybrid_loss, positive_pairs


def random_boxes(gen: torch.Generator, n: int, min_size: float = 0.05) -> torch.Tensor:
    """``[n, 4]`` random boxes inside [0, 1]^2 (pixel-edge convention of hvc.data.crops)."""
    wh = min_size + (1 - min_size) * torch.rand(n, 2, generator=gen, dtype=torch.float64)
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * (1 - wh)
    return torch.cat([xy, xy + wh], 1)


def make_inputs(gen, n, c, h, w, dtype, correlated=True):
    q = F.normalize(torch.randn(n, c, h, w, generator=gen, dtype=torch.float64), dim=1)
    k = F.normalize((q if correlated else 0) + 0.5 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64), dim=1)
    ff = F.normalize(torch.randn(n, 2, h, w, generator=gen, dtype=torch.float64) + 0.5, dim=1)
    fb = F.normalize(torch.randn(n, 2, h, w, generator=gen, dtype=torch.float64) + 0.5, dim=1)
    return [t.to(dtype) for t in (q, k, ff, fb)]


def disjoint_pair(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes whose cell centres are far apart: no positive at all."""
    a = torch.tensor([[0.0, 0.0, 0.3, 0.3]]).repeat(n, 1)
    b = torch.tensor([[0.6, 0.6, 1.0, 1.0]]).repeat(n, 1)
    return a, b


CONFIGS = [
    # (seed, n, c, h, w, dtype, radius)
    (0, 4, 16, 8, 8, torch.float64, 0.1),
    (1, 6, 8, 16, 16, torch.float64, 0.1),
    (2, 3, 32, 12, 20, torch.float64, 0.1),      # non-square grid
    (3, 5, 16, 16, 16, torch.float64, 0.7),      # large radius: many positives per cell
    (4, 8, 16, 16, 16, torch.float32, 0.1),
    (5, 4, 64, 32, 32, torch.float32, 0.1),      # the paper's 32 x 32 grid
    (6, 4, 16, 10, 10, torch.float32, 2.5),
]


@pytest.mark.parametrize("seed,n,c,h,w,dtype,radius", CONFIGS)
def test_sparse_equals_dense(seed, n, c, h, w, dtype, radius):
    gen = torch.Generator().manual_seed(seed)
    q, k, ff, fb = make_inputs(gen, n, c, h, w, dtype)
    cq = random_boxes(gen, n).to(dtype)
    # half the samples: second view a jittered copy of the first (many positives); rest independent
    ck = random_boxes(gen, n).to(dtype)
    jitter = (cq + 0.02 * torch.randn(n, 4, generator=gen, dtype=torch.float64).to(dtype)).clamp(0, 1)
    jitter = torch.stack([torch.minimum(jitter[:, 0], jitter[:, 2]), torch.minimum(jitter[:, 1], jitter[:, 3]),
                          torch.maximum(jitter[:, 0], jitter[:, 2]), torch.maximum(jitter[:, 1], jitter[:, 3])], 1)
    ck[: n // 2] = jitter[: n // 2]
    # one sample without positives
    far_a, far_b = disjoint_pair(1)
    cq[-1], ck[-1] = far_a[0].to(dtype), far_b[0].to(dtype)

    sparse, s_stats = hybrid_loss(q, k, ff, fb, cq, ck, radius, return_stats=True)
    dense, d_stats = dense_hybrid_loss(q, k, ff, fb, cq, ck, radius, return_stats=True)
    assert d_stats["num_pos"] > 0, "config must have positives"
    assert d_stats["no_pos_frac"] > 0, "config must include a sample without positives"
    rel = abs(float(sparse) - float(dense)) / abs(float(dense))
    assert rel < 1e-5, (float(sparse), float(dense), rel)
    for key in ("spatial", "temporal", "num_pos", "no_pos_frac"):
        assert float(s_stats[key]) == pytest.approx(float(d_stats[key]), rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_positive_pairs_are_exactly_the_dense_mask(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    n, h, w = 16, 16, 12
    cq, ck = random_boxes(gen, n).float(), random_boxes(gen, n).float()
    ck[::3] = cq[::3]  # identical boxes: every cell is its own positive
    mask = dense_positive_mask(cq, ck, h, w, 0.1)
    ni, pi, ki = positive_pairs(cq, ck, h, w, 0.1)
    sparse_mask = torch.zeros_like(mask)
    sparse_mask[ni, pi, ki] = 1
    assert mask.sum() > 0
    assert torch.equal(sparse_mask, mask)
    assert len(set(zip(ni.tolist(), pi.tolist(), ki.tolist()))) == len(ni)  # no duplicates


def test_no_positive_samples_count_as_zero_in_the_mean():
    gen = torch.Generator().manual_seed(7)
    n, c, h, w = 4, 8, 8, 8
    q, k, ff, fb = make_inputs(gen, n, c, h, w, torch.float64)
    box = torch.tensor([[0.1, 0.1, 0.9, 0.9]], dtype=torch.float64).repeat(n, 1)
    far_a, far_b = disjoint_pair(n)
    cq, ck = box.clone(), box.clone()
    cq[2:], ck[2:] = far_a[2:].double(), far_b[2:].double()
    full = hybrid_loss(q, k, ff, fb, cq, ck)
    # only the first two samples have positives (same box: cell p pairs with cell p only)
    s = (q[:2] * k[:2]).sum(1).mean((1, 2))
    t = (ff[:2] * fb[:2]).sum(1).mean((1, 2))
    expected = -2 * ((s.sum() / n) + (t.sum() / n)) * (64 / (64 + 1e-6))
    assert float(full) == pytest.approx(float(expected), rel=1e-9)
    # all samples without positives: the loss is 0 and still differentiable
    q.requires_grad_(True)
    zero = hybrid_loss(q, k, ff, fb, far_a.double(), far_b.double())
    assert float(zero.detach()) == 0.0
    zero.backward()
    assert q.grad is not None and float(q.grad.abs().sum()) == 0.0


def test_gradients_equal_dense():
    gen = torch.Generator().manual_seed(11)
    n, c, h, w = 4, 8, 8, 8
    inputs = make_inputs(gen, n, c, h, w, torch.float64)
    cq = random_boxes(gen, n)
    ck = (cq + 0.01).clamp(0, 1)
    grads = []
    for fn in (hybrid_loss, dense_hybrid_loss):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        fn(*leaves, cq, ck).backward()
        grads.append([leaf.grad for leaf in leaves])
    for gs, gd in zip(*grads):
        if gd is None:
            assert gs is None  # k is detached in both
        else:
            assert torch.allclose(gs, gd, rtol=1e-9, atol=1e-12)
    assert grads[0][1] is None


def test_sparse_loss_does_not_build_dense_tensors():
    """At a 64 x 64 grid the dense mask of 8 samples would be 8 x 4096 x 4096 (134M entries);
    the number of candidate pairs the sparse path enumerates stays proportional to HW."""
    gen = torch.Generator().manual_seed(3)
    n, h, w = 8, 64, 64
    cq, ck = random_boxes(gen, n).float(), random_boxes(gen, n).float()
    ni, _, _ = positive_pairs(cq, ck, h, w, 0.1)
    assert len(ni) < 50 * n * h * w


def test_bad_inputs_raise():
    q = torch.zeros(2, 4, 3, 3)
    f = torch.zeros(2, 2, 3, 3)
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    with pytest.raises(ValueError, match="q and k"):
        hybrid_loss(q, torch.zeros(2, 4, 3, 4), f, f, box, box)
    with pytest.raises(ValueError, match="coord_q"):
        hybrid_loss(q, q, f, f, box[:1], box)
    with pytest.raises(ValueError, match="x2 < x1"):
        hybrid_loss(q, q, f, f, torch.tensor([[0.5, 0.0, 0.1, 1.0]] * 2), box)


# ---------------------------------------------------------------------------------------------
# mixed precision: the loss is accumulated in float32 under autocast and for half inputs
# ---------------------------------------------------------------------------------------------
def overlapping_boxes(gen, n, dtype=torch.float32):
    """Boxes whose second view is a small shift of the first (many positives), last sample disjoint."""
    cq = random_boxes(gen, n, min_size=0.5)
    ck = (cq + 0.002).clamp(0, 1)
    far_a, far_b = disjoint_pair(1)
    cq[-1], ck[-1] = far_a[0].double(), far_b[0].double()
    return cq.to(dtype), ck.to(dtype)


@pytest.mark.parametrize("fn", [hybrid_loss, dense_hybrid_loss])
def test_loss_under_cpu_bfloat16_autocast_is_float32_and_unchanged(fn):
    gen = torch.Generator().manual_seed(21)
    q, k, ff, fb = make_inputs(gen, 4, 16, 8, 8, torch.float32)
    cq, ck = overlapping_boxes(gen, 4)
    ref, ref_stats = fn(q, k, ff, fb, cq, ck, return_stats=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, stats = fn(q, k, ff, fb, cq, ck, return_stats=True)
    assert got.dtype == torch.float32 and stats["spatial"].dtype == torch.float32
    # autocast is off inside the loss: the dense form's bmm would otherwise run in bfloat16
    assert float(got) == float(ref)
    assert float(stats["no_pos_frac"]) == float(ref_stats["no_pos_frac"]) == 0.25


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_accumulated_in_float32(half):
    """Half-precision activations (what the network emits under autocast): the per-sample sums
    over ~40 k positive pairs, the 1e-6 guard and the result are float32, so the loss equals the
    float64 computation on the same (rounded) inputs; a float16 accumulation would be off by
    ~1e-3 relative."""
    gen = torch.Generator().manual_seed(22)
    n, c, h, w = 3, 16, 32, 32
    inputs = [t.to(half) for t in make_inputs(gen, n, c, h, w, torch.float64)]
    cq, ck = overlapping_boxes(gen, n)
    radius = 2.5  # ~20 positives per cell, up to ~20 k per sample
    for fn in (hybrid_loss, dense_hybrid_loss):
        got, stats = fn(*inputs, cq, ck, radius, return_stats=True)
        want = fn(*[t.double() for t in inputs], cq.double(), ck.double(), radius)
        assert got.dtype == torch.float32 and torch.isfinite(got)
        assert float(stats["num_pos"]) > 10_000 and float(stats["no_pos_frac"]) == pytest.approx(1 / 3)
        assert float(got) == pytest.approx(float(want), rel=1e-5), fn.__name__


def test_normalized_upcasts_half_precision_features():
    """Tiny half-precision features (squares below float16's smallest subnormal) still give
    float32 unit vectors; under autocast the result stays float32."""
    from hvc.loss import normalized

    x = (1e-4 * torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(3))).to(torch.float16)
    for ctx in (torch.autocast("cpu", dtype=torch.bfloat16, enabled=False),
                torch.autocast("cpu", dtype=torch.bfloat16)):
        with ctx:
            y = normalized(x)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        assert torch.allclose(y.norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)
        assert torch.allclose(y, torch.nn.functional.normalize(x.double(), dim=1).float(), atol=1e-6)


@pytest.mark.parametrize("ws,wt", [(1.0, 0.0), (0.0, 1.0), (0.5, 2.0)])
def test_term_weights(ws, wt):
    """``L = -2 (w_s mean S + w_t mean T)``; (1, 1) is the paper's loss; both forms agree."""
    gen = torch.Generator().manual_seed(23)
    q, k, ff, fb = make_inputs(gen, 4, 8, 8, 8, torch.float64)
    cq, ck = overlapping_boxes(gen, 4, torch.float64)
    base, stats = hybrid_loss(q, k, ff, fb, cq, ck, return_stats=True)
    assert float(base) == pytest.approx(-2 * float(stats["spatial"] + stats["temporal"]), rel=1e-12)
    weighted = hybrid_loss(q, k, ff, fb, cq, ck, spatial_weight=ws, temporal_weight=wt)
    assert float(weighted) == pytest.approx(-2 * (ws * float(stats["spatial"]) + wt * float(stats["temporal"])),
                                            rel=1e-12)
    dense = dense_hybrid_loss(q, k, ff, fb, cq, ck, spatial_weight=ws, temporal_weight=wt)
    assert float(dense) == pytest.approx(float(weighted), rel=1e-9)
