"""``python -m hvc.export``: the export contract loaded strictly by label_prop.propagation.features."""
from __future__ import annotations

import pytest
import torch

from hvc.checkpoint import TRAIN_FORMAT, atomic_torch_save
from hvc.tables import REFERENCE_CIFAR10_MEAN, REFERENCE_CIFAR10_STD
from hvc.export import export_encoder, main as export_main, resnet18_keys
from hvc.model import HVCModel
from label_prop.propagation.features import CheckpointError, build_encoder


def layer3_features(encoder, x, mean, std):
    """L2-normalised layer3 features of an online encoder for images ``x`` in [0, 1], by hand."""
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        y = encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1((x - mean) / std))))
        return torch.nn.functional.normalize(encoder.layer3(encoder.layer2(encoder.layer1(y))), dim=1)


def fake_training_checkpoint(path, seed=0, args=None):
    torch.manual_seed(seed)
    model = HVCModel(total_steps=10)
    with torch.no_grad():  # make weights distinguishable from any fresh initialisation
        for p in model.online_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        model.online_encoder.bn1.running_mean.add_(0.5)
    atomic_torch_save({"format": TRAIN_FORMAT, "model": model.state_dict(), "step": 7, "epoch": 1,
                       "args": args or {"lr": 1e-3, "mode": "video"}}, path)
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
    assert obj["meta"] == {"step": 7, "epoch": 1, "args": {"lr": 1e-3, "mode": "video"}, "source": str(ckpt),
                           "git_revision": None}  # no run.json beside this checkpoint
    assert obj["normalization"] == {"name": "imagenet", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    for k, v in model.online_encoder.state_dict().items():
        assert torch.equal(obj["state_dict"][k], v), k
    # label propagation loads it strictly and computes the same layer3 features
    enc = build_encoder(str(out))
    x = torch.rand(1, 3, 32, 32)
    y = layer3_features(model.online_encoder.eval(), x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.allclose(enc(x), y, atol=1e-5)


def test_inference_only_export_leaves_out_layer4_and_gives_the_same_features(tmp_path):
    ckpt = tmp_path / "checkpoint.pth"
    fake_training_checkpoint(ckpt)
    full, small = tmp_path / "full.pth", tmp_path / "small.pth"
    assert export_main([str(ckpt), str(full)]) == 0
    assert export_main([str(ckpt), str(small), "--inference-only"]) == 0
    obj = torch.load(small, map_location="cpu", weights_only=True)
    assert set(obj["state_dict"]) == {k for k in resnet18_keys() if not k.startswith("layer4.")}
    assert obj["meta"]["inference_only"] is True
    assert small.stat().st_size < 16 * 2**20 < full.stat().st_size  # fits a 16 MiB file limit
    x = torch.rand(1, 3, 40, 48)
    assert torch.equal(build_encoder(str(small))(x), build_encoder(str(full))(x))


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


def test_cifar10_trained_encoder_is_evaluated_with_cifar10_statistics(tmp_path):
    """The file records the training normalisation and loading applies it (it used to be
    ImageNet whatever the training used)."""
    ckpt = tmp_path / "checkpoint.pth"
    model = fake_training_checkpoint(ckpt, args={"lr": 1e-3, "normalization": "cifar10"})
    out = tmp_path / "enc.pth"
    assert export_main([str(ckpt), str(out)]) == 0
    norm = torch.load(out, weights_only=True)["normalization"]
    assert norm == {"name": "cifar10", "mean": list(REFERENCE_CIFAR10_MEAN), "std": list(REFERENCE_CIFAR10_STD)}
    enc = build_encoder(str(out))
    assert enc.normalization.name == "cifar10"
    x = torch.rand(1, 3, 32, 32)
    ref = model.online_encoder.eval()
    cifar = layer3_features(ref, x, REFERENCE_CIFAR10_MEAN, REFERENCE_CIFAR10_STD)
    imagenet = layer3_features(ref, x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.allclose(enc(x), cifar, atol=1e-5)
    assert not torch.allclose(enc(x), imagenet, atol=1e-3)  # the statistics make a difference here


def test_encoder_files_without_normalization_load_with_imagenet_statistics(tmp_path):
    """Older hvc-encoder-v1 files (no 'normalization' entry) and plain state dicts (official
    releases) were all trained with ImageNet statistics."""
    ckpt = tmp_path / "checkpoint.pth"
    fake_training_checkpoint(ckpt)
    out = tmp_path / "enc.pth"
    export_encoder(ckpt, out)
    obj = torch.load(out, weights_only=True)
    del obj["normalization"]
    torch.save(obj, tmp_path / "old.pth")
    torch.save(obj["state_dict"], tmp_path / "release.pth")
    for name in ("old.pth", "release.pth"):
        enc = build_encoder(str(tmp_path / name))
        assert enc.normalization.name == "imagenet"
        assert torch.allclose(enc.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    obj["normalization"] = {"name": "odd", "mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth"):
        build_encoder(str(tmp_path / "bad.pth"))
