"""``python -m hvc.export CKPT OUT.pth [--overwrite]``: the online encoder of a training checkpoint
as a plain torchvision ResNet-18 state dict, for label propagation (label_prop/features.py).

Output (the export contract; written atomically, tmp file + ``os.replace``)::

    torch.save({
        "format": "hvc-encoder-v1",
        "arch": "resnet18",
        "state_dict": {conv1.*, bn1.*, layer1.* .. layer4.*},   # torchvision keys, no fc, no prefix, CPU
        "meta": {"step": int, "epoch": int, "args": dict, "source": str(CKPT)},
    }, OUT)

This replaces the reference's ``core/convert_pretrain.py`` (../shared/docs/HVC_METHOD.md
section 4), which keeps ``online_encoder.*`` with the prefix stripped. Here the key set is
checked strictly against torchvision's ResNet-18 (minus ``fc``), so a wrong file is an error,
never a silently random encoder (section 7, bug 6). ``layer4`` (trained by the loss) is kept;
the inference side ignores it (it cuts the network after layer3, section 2).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from torchvision.models import resnet18

from .checkpoint import ENCODER_FORMAT, TRAIN_FORMAT, atomic_torch_save, load_checkpoint, plain

PathLike = Union[str, os.PathLike]
ENCODER_PREFIX = "online_encoder."


def resnet18_keys() -> set:
    """State-dict keys of a torchvision ResNet-18 without ``fc.*`` (the exported key set)."""
    return {k for k in resnet18(weights=None).state_dict() if not k.startswith("fc.")}


def encoder_state_dict(model_state: Dict[str, torch.Tensor], source: PathLike = "<state dict>") -> Dict[str, torch.Tensor]:
    """The online encoder of an :class:`hvc.model.HVCModel` state dict, as plain ResNet-18 keys.

    Args:
        model_state: ``HVCModel.state_dict()`` (keys ``online_encoder.conv1.weight`` ...).
        source: name used in error messages.

    Returns:
        ``{conv1.weight: [64, 3, 7, 7], ..., layer4.1.bn2.num_batches_tracked: []}``: detached,
        contiguous CPU tensors, no ``fc``.

    Raises:
        ValueError: the keys are not exactly those of torchvision's ResNet-18 minus ``fc``
            (missing / unexpected keys are listed).
    """
    state = {k[len(ENCODER_PREFIX):]: v.detach().cpu().clone().contiguous()
             for k, v in model_state.items() if k.startswith(ENCODER_PREFIX)}
    expected = resnet18_keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{source}: the online encoder is not a torchvision ResNet-18: missing keys {missing[:6]} "
                         f"({len(missing)}), unexpected keys {unexpected[:6]} ({len(unexpected)})")
    return state


def export_encoder(ckpt_path: PathLike, out_path: PathLike, overwrite: bool = False) -> Path:
    """Write the online encoder of training checkpoint ``ckpt_path`` to ``out_path`` (contract above).

    Raises:
        FileExistsError: ``out_path`` exists and ``overwrite`` is False.
        FileNotFoundError: ``ckpt_path`` does not exist.
        ValueError: ``ckpt_path`` is not an ``hvc-train-v1`` checkpoint or its encoder keys are wrong.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    ckpt = load_checkpoint(ckpt_path, TRAIN_FORMAT)
    state = encoder_state_dict(ckpt["model"], ckpt_path)
    payload = {
        "format": ENCODER_FORMAT,
        "arch": "resnet18",
        "state_dict": state,
        "meta": {"step": int(ckpt["step"]), "epoch": int(ckpt["epoch"]), "args": plain(ckpt.get("args", {})),
                 "source": str(ckpt_path)},
    }
    return atomic_torch_save(payload, out_path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns 0, or 2 with a one-line message on bad input."""
    p = argparse.ArgumentParser(prog="python -m hvc.export",
                                description="Export the online encoder of an HVC training checkpoint "
                                            "(format hvc-encoder-v1, loaded by label_prop.features).")
    p.add_argument("checkpoint", help="training checkpoint (e.g. runs/NAME/checkpoint.pth)")
    p.add_argument("output", help="encoder file to write (e.g. checkpoints/NAME.pth)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    try:
        out = export_encoder(args.checkpoint, args.output, args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"hvc.export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
