"""HVC model: EMA schedule, gradient flow, shapes (docs/method.md, "Model")."""
from __future__ import annotations

import math

import pytest
import torch

from hvc.backbone import ResNetStride8
from hvc.model import HVCModel, ema_momentum


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared: avoid thread contention
    yield
    torch.set_num_threads(n)


def test_ema_schedule_values():
    K = 1000
    assert ema_momentum(0, K) == pytest.approx(0.99, abs=1e-12)
    assert ema_momentum(K, K) == pytest.approx(1.0, abs=1e-12)
    assert ema_momentum(K // 2, K) == pytest.approx(0.995, abs=1e-12)
    assert ema_momentum(K // 4, K) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-12)
    assert ema_momentum(2 * K, K) == pytest.approx(1.0)  # clamped after K
    values = [ema_momentum(k, K) for k in range(K + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))  # non-decreasing
    with pytest.raises(ValueError):
        ema_momentum(0, 0)


def test_momentum_update_uses_m_k_then_increments_k():
    torch.manual_seed(0)
    model = HVCModel(total_steps=4)
    with torch.no_grad():
        for p in model.online_encoder.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in model.target_encoder.parameters()]
    o = [p.clone() for p in model.online_encoder.parameters()]
    m = model.momentum_update()
    assert m == pytest.approx(0.99) and int(model.ema_step) == 1
    for a, b, t in zip(t0, o, model.target_encoder.parameters()):
        assert torch.allclose(t, 0.99 * a + 0.01 * b, atol=1e-6)
    assert model.momentum_update() == pytest.approx(ema_momentum(1, 4))
    # the step counter k and K are part of the state dict (hence of the checkpoint)
    sd = model.state_dict()
    assert int(sd["ema_step"]) == 2 and int(sd["ema_total_steps"]) == 4
    other = HVCModel(total_steps=4)
    other.load_state_dict(sd)
    assert int(other.ema_step) == 2 and other.momentum() == pytest.approx(ema_momentum(2, 4))


def test_backbone_output_stride_8():
    x = torch.randn(1, 3, 64, 48)
    assert ResNetStride8("layer4")(x).shape == (1, 512, 8, 6)
    assert ResNetStride8("layer3")(x).shape == (1, 256, 8, 6)


@pytest.mark.parametrize("zero_init", [False, True])
def test_gradients_reach_every_online_parameter_and_not_the_target(zero_init):
    torch.manual_seed(0)
    model = HVCModel(total_steps=10, zero_init_residual=zero_init).train()
    v1, v2 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    c1 = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.7, 0.9]])
    c2 = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.12, 0.2, 0.72, 0.88]])
    model.momentum_update()
    target_before = {n: p.clone() for n, p in model.named_parameters() if n.startswith("target_")}
    out = model(v1, v2, c1, c2)
    assert out["num_pos"] > 0
    out["loss"].backward()
    online = dict(model.named_parameters())
    trainable = {n for n, p in online.items() if p.requires_grad}
    expected_prefixes = ("online_encoder.", "online_space_projector.", "space_predictor.", "flow.")
    assert trainable == {n for n in online if n.startswith(expected_prefixes)}
    for name in trainable:
        g = online[name].grad
        assert g is not None, name
        assert torch.isfinite(g).all(), name
        if not zero_init:  # with zero-init residual BN the conv2 of each block starts with zero grad
            assert g.abs().sum() > 0, name
    for name, p in model.named_parameters():
        if name.startswith("target_"):
            assert not p.requires_grad and p.grad is None, name
    # the target's parameters only move by the EMA update, never through the forward/backward pass
    changed = [n for n, p in model.named_parameters() if n.startswith("target_") and not torch.equal(p, target_before[n])]
    assert changed == []


def test_forward_accepts_clips_and_rejects_bad_shapes():
    torch.manual_seed(0)
    model = HVCModel(total_steps=10)
    v = torch.randn(1, 2, 3, 32, 32)
    c = torch.tensor([[[0.0, 0.0, 1.0, 1.0]] * 2])
    out = model(v, v.clone(), c, c.clone())
    assert out["loss"].dim() == 0 and -8 <= float(out["loss"].detach()) <= 8
    with pytest.raises(ValueError, match="views"):
        model(v[:, 0], v, c, c)
    with pytest.raises(ValueError, match="boxes"):
        model(v[:, 0], v[:, 0], c[0], c[0])  # 2 boxes for 1 view


def test_momentum_update_with_a_known_step_equals_reading_the_buffer():
    """The trainer passes k (its step count) so the GPU buffers need not be read; same update."""
    torch.manual_seed(0)
    a = HVCModel(total_steps=5)
    b = HVCModel(total_steps=5)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for m in (a, b):
            for p in m.online_encoder.parameters():
                p.add_(0.5)
    for k in range(3):
        assert a.momentum_update() == b.momentum_update(k) == pytest.approx(ema_momentum(k, 5))
    assert int(a.ema_step) == int(b.ema_step) == 3
    for pa, pb in zip(a.target_encoder.parameters(), b.target_encoder.parameters()):
        assert torch.equal(pa, pb)
