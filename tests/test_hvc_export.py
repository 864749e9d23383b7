"""``python -m hvc.export``: the export contract loaded strictly by label_prop.features."""
from __future__ import annotations

import pytest
import torch

from hvc.checkpoint import TRAIN_FORMAT, atomic_torch_save
from hvc.export import export_encoder, main as export_main, resnet18_keys
from hvc.model import HVCModel
from label_prop.features import CheckpointError, build_encoder


def fake_training_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    model = HVCModel(total_steps=10)
    with torch.no_grad():  # make weights distinguishable from any fresh initialisation
        for p in model.online_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        model.online_encoder.bn1.running_mean.add_(0.5)
    atomic_torch_save({"format": TRAIN_FORMAT, "model": model.state_dict(), "step": 7, "epoch": 1,
                       "args": {"lr": 1e-3, "mode": "video"}}, path)
    return model


def test_export_contract_and_strict_load(tmp_path):
    ckpt = tmp_path / "checkpoint.pth"
    model = fake_training_checkpoint(ckpt)
    out = tmp_path / "enc.pth"
    assert export_main([str(ckpt), str(out)]) == 0
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert obj["format"] == "hvc-encoder-v1" and obj["arch"] == "resnet18"
    assert set(obj["state_dict"]) == resnet18_keys()
    assert not any(k.startswith(("fc.", "online_")) for k in obj["state_dict"])
    assert any(k.startswith("layer4.") for k in obj["state_dict"])
    assert all(v.device.type == "cpu" for v in obj["state_dict"].values())
    assert obj["meta"] == {"step": 7, "epoch": 1, "args": {"lr": 1e-3, "mode": "video"}, "source": str(ckpt)}
    for k, v in model.online_encoder.state_dict().items():
        assert torch.equal(obj["state_dict"][k], v), k
    # label propagation loads it strictly and computes the same layer3 features
    enc = build_encoder(str(out))
    ref = model.online_encoder.eval()
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1((x - mean) / std))))
        y = torch.nn.functional.normalize(ref.layer3(ref.layer2(ref.layer1(y))), dim=1)
    assert torch.allclose(enc(x), y, atol=1e-5)


def test_export_refuses_overwrite_and_wrong_input(tmp_path):
    ckpt = tmp_path / "checkpoint.pth"
    fake_training_checkpoint(ckpt)
    out = tmp_path / "enc.pth"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        export_encoder(ckpt, out)
    assert export_main([str(ckpt), str(out)]) == 2
    assert out.read_bytes() == b"precious"
    assert export_main([str(ckpt), str(out), "--overwrite"]) == 0
    assert torch.load(out, weights_only=True)["format"] == "hvc-encoder-v1"
    # an exported encoder is not a training checkpoint, and vice versa
    with pytest.raises(ValueError, match="hvc-train-v1"):
        export_encoder(out, tmp_path / "again.pth")
    with pytest.raises(CheckpointError, match="training checkpoint"):
        build_encoder(str(ckpt))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
