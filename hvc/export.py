"""Encoder files: ``python -m hvc.export CKPT OUT.pth [--overwrite] [--inference-only]`` writes
them, :func:`read_encoder` and :func:`load_encoder` read them (label propagation loads its encoders through these).

The file (format ``hvc-encoder-v1``, written atomically, loadable with ``weights_only=True``)::

    torch.save({
        "format": "hvc-encoder-v1",
        "arch": "resnet18",
        "state_dict": {conv1.*, bn1.*, layer1.* .. layer4.*},   # torchvision keys, no fc, no prefix, CPU
        "normalization": {"name": "imagenet" | "cifar10", "mean": [r, g, b], "std": [r, g, b]},
        "meta": {"step": int, "epoch": int, "args": dict, "source": str(CKPT), "git_revision": str | None},
    }, OUT)

``normalization`` is the input mean/std the encoder was trained with (``--normalization`` of
``hvc.train``, :data:`hvc.tables.NORMALIZATION`; RGB in [0, 1]); loading applies it, so an
encoder trained with the CIFAR-10 constants is evaluated with them. ``meta`` records the
training run: its step and epoch, all its arguments, the checkpoint it came from and the git
revision of the code that trained it (None when unknown).

Files :func:`read_encoder` accepts:

* ``hvc-encoder-v1`` files as above; older ones without ``normalization`` were all trained with
  the ImageNet constants (the only choice then) and load with them;
* a plain torchvision-layout ResNet-18 state dict (the official HVC release encoders, the
  output of the public code's ``core/convert_pretrain.py``), with the ImageNet constants the
  public code evaluates with.

The key set is checked strictly (a wrong file is an error naming the missing and unexpected
keys, never a silently random encoder; docs/method.md, "Differences from the public code").
``layer4`` (trained by the loss) is kept in the file; inference cuts the network after layer3.
With ``--inference-only`` the file holds only ``conv1`` .. ``layer3``, what label propagation
uses (11 MB instead of 45 MB; ``meta`` gets ``"inference_only": True``); it loads for inference
like a full file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torchvision.models import resnet18

from .backbone import RESNET18_STAGES, ResNetStride8
from .checkpoint import (ENCODER_FORMAT, TRAIN_FORMAT, CheckpointError, atomic_torch_save, load_checkpoint,
                         load_weights_file)
from .records import plain
from .tables import NORMALIZATION
from .runtime import run_cli

PathLike = Union[str, os.PathLike]
ENCODER_PREFIX = "online_encoder."


@dataclass(frozen=True)
class Normalization:
    """Input normalisation of an encoder: ``x' = (x - mean) / std`` per RGB channel, ``x`` in [0, 1]."""

    name: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]

    @classmethod
    def named(cls, name: str, source: PathLike = "<arguments>") -> "Normalization":
        """The constants of ``hvc.train --normalization NAME``.

        Raises:
            CheckpointError: unknown name (names ``source`` and the known names).
        """
        if name not in NORMALIZATION:
            raise CheckpointError(f"{source}: unknown input normalization {name!r}; known: {', '.join(NORMALIZATION)}")
        mean, std = NORMALIZATION[name]
        return cls(name, tuple(float(v) for v in mean), tuple(float(v) for v in std))


#: What official HVC encoders, old ``hvc-encoder-v1`` files and ImageNet-pretrained nets expect.
IMAGENET = Normalization.named("imagenet")


@dataclass(frozen=True)
class EncoderFile:
    """The contents of an encoder file (see the module docstring).

    Attributes:
        path: the file.
        arch: ``"resnet18"``.
        state_dict: torchvision ResNet-18 keys (``layer4.*`` present in exported files).
        normalization: the input mean/std to apply.
        meta: the training run (empty for a plain state dict).
    """

    path: Path
    arch: str
    state_dict: Dict[str, torch.Tensor] = field(repr=False)
    normalization: Normalization
    meta: Dict[str, Any]


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


def _training_git_revision(ckpt: Dict[str, Any], ckpt_path: Path) -> Optional[str]:
    """The git revision of the run that wrote ``ckpt``: its own entry, else the ``run.json`` beside it."""
    if ckpt.get("git_revision"):
        return str(ckpt["git_revision"])
    run_json = ckpt_path.parent / "run.json"
    try:
        rev = json.loads(run_json.read_text()).get("git_revision")
    except (OSError, ValueError, AttributeError):
        return None
    return str(rev) if rev else None


def export_encoder(ckpt_path: PathLike, out_path: PathLike, overwrite: bool = False,
                   inference_only: bool = False) -> Path:
    """Write the online encoder of training checkpoint ``ckpt_path`` to ``out_path`` (contract
    above); ``inference_only`` leaves ``layer4`` out (module docstring).

    Raises:
        FileExistsError: ``out_path`` exists and ``overwrite`` is False.
        FileNotFoundError: ``ckpt_path`` does not exist.
        ValueError: ``ckpt_path`` is not an ``hvc-train-v1`` checkpoint, its encoder keys are wrong
            or its ``normalization`` argument is unknown.
    """
    out_path, ckpt_path = Path(out_path), Path(ckpt_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    ckpt = load_checkpoint(ckpt_path, TRAIN_FORMAT)
    state = encoder_state_dict(ckpt["model"], ckpt_path)
    if inference_only:
        state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    args = plain(ckpt.get("args", {}))
    norm = Normalization.named(args.get("normalization", "imagenet"), ckpt_path)
    payload = {
        "format": ENCODER_FORMAT,
        "arch": "resnet18",
        "state_dict": state,
        "normalization": {"name": norm.name, "mean": list(norm.mean), "std": list(norm.std)},
        "meta": {"step": int(ckpt["step"]), "epoch": int(ckpt["epoch"]), "args": args, "source": str(ckpt_path),
                 "git_revision": _training_git_revision(ckpt, ckpt_path)},
    }
    if inference_only:
        payload["meta"]["inference_only"] = True
    return atomic_torch_save(payload, out_path)


def _file_normalization(obj: Dict[str, Any], path: Path) -> Normalization:
    """The ``normalization`` entry of an encoder file (ImageNet when absent: files written before it existed)."""
    entry = obj.get("normalization")
    if entry is None:
        return IMAGENET
    try:
        norm = Normalization(str(entry["name"]), tuple(float(v) for v in entry["mean"]),
                             tuple(float(v) for v in entry["std"]))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: malformed 'normalization' entry {entry!r}") from None
    if len(norm.mean) != 3 or len(norm.std) != 3 or min(norm.std) <= 0:
        raise CheckpointError(f"{path}: 'normalization' needs 3 means and 3 positive stds, got {entry!r}")
    return norm


def read_encoder(path: PathLike) -> EncoderFile:
    """Read an encoder file (an ``hvc-encoder-v1`` export or a plain ResNet-18 state dict) on the CPU.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not loadable with ``weights_only=True``, a training checkpoint (the
            message says how to export it), not a dict of weights, or a malformed entry.
    """
    path = Path(path)
    obj = load_weights_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, got {type(obj).__name__}")
    if obj.get("format") == ENCODER_FORMAT:
        if obj.get("arch", "resnet18") != "resnet18":
            raise CheckpointError(f"{path}: architecture {obj.get('arch')!r} is not supported (resnet18)")
        return EncoderFile(path, "resnet18", obj["state_dict"], _file_normalization(obj, path), dict(obj.get("meta", {})))
    if "model" in obj or "optimizer" in obj:
        raise CheckpointError(
            f"{path}: this is a training checkpoint, not an encoder; export it first with "
            f"`python -m hvc.export {path} checkpoints/NAME.pth`"
        )
    return EncoderFile(path, "resnet18", obj, IMAGENET, {})


def load_state_strict(net: nn.Module, state: Dict[str, torch.Tensor], path: PathLike, *,
                      ignore_prefixes: Tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``net``; keys under ``ignore_prefixes`` (layers the net does not build)
    are dropped and BN ``num_batches_tracked`` counters may be absent.

    Raises:
        CheckpointError: anything else missing or unexpected (names ``path`` and the keys), or
            tensors whose shapes differ from the network's (names ``path``, the first mismatched
            keys and both shapes, e.g. a ResNet-34's or a wider network's weights).
    """
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = net.state_dict().keys()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state dict does not match {type(net).__name__}: "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})"
        )
    wanted = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(wanted[k].shape)) for k, v in state.items()
             if isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(wanted[k].shape)]
    if wrong:
        shown = "; ".join(f"{k}: file {list(a)} vs network {list(b)}" for k, a, b in wrong[:3])
        raise CheckpointError(f"{path}: {len(wrong)} tensors have the wrong shape for {type(net).__name__} "
                              f"(not this architecture?): {shown}{' ...' if len(wrong) > 3 else ''}")
    net.load_state_dict(state, strict=False)


def load_encoder(path: PathLike, last_layer: str = "layer3") -> Tuple[ResNetStride8, EncoderFile]:
    """The stride-8 ResNet-18 of an encoder file, cut after ``last_layer`` (inference: layer3), in
    eval mode on the CPU, and the file's contents (for its normalisation and training run).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_encoder` and :func:`load_state_strict`.
    """
    enc = read_encoder(path)
    net = ResNetStride8(last_layer)
    later = RESNET18_STAGES[RESNET18_STAGES.index(last_layer) + 1:]
    load_state_strict(net, enc.state_dict, enc.path, ignore_prefixes=tuple(f"{s}." for s in later) + ("fc.",))
    return net.eval(), enc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (:mod:`hvc.runtime`: 2 usage error, 1 bad data)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m hvc.export",
                                description="Export the online encoder of an HVC training checkpoint "
                                            "(format hvc-encoder-v1, loaded by label_prop.propagation.features).")
    p.add_argument("checkpoint", help="training checkpoint (e.g. runs/NAME/checkpoint.pth)")
    p.add_argument("output", help="encoder file to write (e.g. checkpoints/NAME.pth)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--inference-only", action="store_true",
                   help="leave out layer4, which label propagation does not use (11 MB instead of 45 MB)")
    args = p.parse_args(argv)

    def job() -> None:
        print(f"wrote {export_encoder(args.checkpoint, args.output, args.overwrite, args.inference_only)}")
    return run_cli("python -m hvc.export", job)


if __name__ == "__main__":
    sys.exit(main())
