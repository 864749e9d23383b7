"""Inference encoders: strict loading of each accepted file kind, MoCo merge, random baseline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import resnet18, resnet50

from label_prop.propagation import features as FE


def _official_r18_state():
    """A file in the official HVC release layout: a plain torchvision ResNet-18 state dict."""
    torch.manual_seed(3)
    return resnet18(weights=None).state_dict()


def test_plain_resnet18_state_dict_loads_and_matches(tmp_path):
    state = _official_r18_state()
    path = tmp_path / "hvc_release.pth"
    torch.save(state, path)
    net = FE.load_resnet18(path)
    assert torch.equal(net.state_dict()["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    enc = FE.FrameEncoder(net)
    out = enc(torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8))
    assert out.shape == (1, 256, 8, 12)  # stride 8
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 8, 12), atol=1e-5)


def test_key_mismatch_names_missing_and_unexpected(tmp_path):
    state = _official_r18_state()
    state.pop("layer2.0.conv1.weight")
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(FE.CheckpointError) as err:
        FE.load_resnet18(path)
    msg = str(err.value)
    assert "bad.pth" in msg and "layer2.0.conv1.weight" in msg and "head.weight" in msg


def test_prefixed_keys_are_rejected(tmp_path):
    state = {f"module.{k}": v for k, v in _official_r18_state().items()}
    path = tmp_path / "prefixed.pth"
    torch.save(state, path)
    with pytest.raises(FE.CheckpointError, match="missing keys"):
        FE.load_resnet18(path)


def test_training_checkpoint_is_refused_with_export_hint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {}, "optimizer": {}, "step": 3}, path)
    with pytest.raises(FE.CheckpointError, match="hvc.export"):
        FE.load_resnet18(path)


def test_missing_file_and_resolution(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        FE.resolve_model("nope", tmp_path)
    assert FE.resolve_model("random", tmp_path) is None
    path = tmp_path / "mine.pth"
    torch.save(_official_r18_state(), path)
    assert FE.resolve_model("mine", tmp_path) == path
    assert FE.resolve_model(str(path), "elsewhere") == path


def test_random_encoder_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b, c = FE.random_resnet18(0), FE.random_resnet18(0), FE.random_resnet18(1)
    assert torch.equal(torch.random.get_rng_state(), before)
    wa, wb, wc = (n.state_dict()["layer1.0.conv1.weight"] for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_mocov1_merge(tmp_path):
    torch.manual_seed(4)
    r50 = resnet50(weights=None).state_dict()
    path = tmp_path / "moco_v1_200ep_pretrain.pth.tar"
    torch.save({"epoch": 200, "state_dict": {f"module.encoder_q.{k}": v for k, v in r50.items()}}, path)
    moco = FE.load_mocov1(path)
    r18 = FE.random_resnet18(0)
    enc = FE.FrameEncoder(r18, moco)
    frame = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    e = enc.encode_frame(frame)
    assert e.shape == (256 + 1024, 8, 10)
    assert torch.allclose(e.norm(dim=0), torch.ones(8, 10), atol=1e-5)
    # e = L2(concat(1.05 h, m)) with unit h and m: the R18 part carries 1.05 / sqrt(1 + 1.05^2)
    share = e[:256].norm(dim=0)
    assert torch.allclose(share, torch.full((8, 10), 1.05 / (1 + 1.05 ** 2) ** 0.5), atol=1e-5)
    # a non-MoCo file is refused
    torch.save({"state_dict": r50}, tmp_path / "plain50.pth")
    with pytest.raises(FE.CheckpointError, match="module.encoder_q"):
        FE.load_mocov1(tmp_path / "plain50.pth")
