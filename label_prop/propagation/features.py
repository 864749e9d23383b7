"""Frame encoders for inference: ResNet-18 (stride 8, layer3) from our trainer, an official HVC
release, or random initialisation; optionally merged with a MoCo-v1 ResNet-50.

HVC's test-time embedding (docs/method.md, "Label propagation"): ``h = L2(R18-layer3(x))`` (256
channels), optionally ``m = L2(R50-layer3(x))`` (1024 channels), merged as
``e = L2(concat(lambda*h, m))`` with ``lambda = 1.05``. Frames are full resolution unless an
input size is given, normalised with the mean/std the encoder was trained with (recorded in the
encoder file, :mod:`hvc.export`; ImageNet for the random baseline, official releases and MoCo).

Precision (``--precision``, :func:`hvc.hardware.encoder_precision`): ``float32`` is the
reference's and exact. With ``bfloat16`` or ``float16`` the networks run under ``torch.autocast``
of that dtype on the encoder's device, in the memory layout (channels_last or not) that a short
probe shows faster; ``auto`` (the command lines' default) picks bfloat16 where the probe shows
it faster than float32 (CPUs with AVX512-BF16 or AMX, GPUs with bfloat16 tensor cores) and
float32 elsewhere. The outputs are cast back to float32 before the L2 normalisation and the
merge, so propagation always gets float32 unit vectors. What was picked goes in the run record.

Loading is strict: a state dict whose keys do not match the network is an error that names the
missing and unexpected keys (the public code silently loads what matches, which turns a wrong
file into a random encoder; docs/method.md, "Differences from the public code").
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet50

from hvc.backbone import ResNetStride8, set_stride_one
from hvc.checkpoint import load_weights_file
from hvc.export import IMAGENET, CheckpointError, Normalization, load_encoder, load_state_strict
from hvc.errors import UsageError
from hvc.hardware import PRECISIONS, PrecisionChoice, encoder_precision
from label_prop.evaluation.results import is_model_path, model_name

__all__ = ["MERGE_LAMBDA", "CheckpointError", "FrameEncoder", "ResNet50Layer3", "add_encoder_arguments",
           "build_encoder", "choose_encoder_precision", "load_mocov1", "load_resnet18", "random_resnet18", "resolve_model", "scaled_size"]

#: HVC's weight of the ResNet-18 features in the merged embedding.
MERGE_LAMBDA = 1.05


class ResNet50Layer3(nn.Module):
    """Torchvision ResNet-50 cut after layer3, layer3 stride 1: ``[N, 3, H, W] -> [N, 1024, H/8, W/8]``."""

    def __init__(self):
        super().__init__()
        net = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        set_stride_one(self.layer3)
        self.out_channels = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` normalised images -> ``[N, 1024, ceil(H/8), ceil(W/8)]`` (layer3, stride 8)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class FrameEncoder(nn.Module):
    """Frames to L2-normalised features, on the device the module was moved to.

    Args:
        encoder: the main network, ``[N, 3, H, W] -> [N, C, h, w]``.
        second: optional second network (MoCo-v1 ResNet-50), merged as
            ``L2(concat(merge_lambda * L2(encoder(x)), L2(second(x))))``; it always gets the
            ImageNet mean/std it was trained with.
        merge_lambda: weight of the main features in the merge (HVC: 1.05).
        normalization: input mean/std of ``encoder`` (what it was trained with; default ImageNet).
        precision: ``float32`` (default, exact), ``bfloat16`` or ``float16``: the networks
            run under autocast of that dtype on :attr:`device` (module docstring).
        channels_last: run the networks on NHWC tensors (a speed choice; float32 results
            may differ in rounding).

    Input of :meth:`forward`: ``[N, 3, H, W]`` uint8 RGB or float in [0, 1]; output
    ``[N, C, ceil(H/8), ceil(W/8)]`` float32, unit L2 norm over C. Always in eval mode.

    Raises:
        UsageError: an unknown ``precision``.
    """

    def __init__(self, encoder: nn.Module, second: nn.Module | None = None, merge_lambda: float = MERGE_LAMBDA, *,
                 normalization: Normalization = IMAGENET, precision: str = "float32", channels_last: bool = False):
        super().__init__()
        if precision not in PRECISIONS:
            raise UsageError(f"--precision must be auto or one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.encoder, self.second, self.merge_lambda = encoder, second, merge_lambda
        self.normalization, self.precision, self.channels_last = normalization, precision, channels_last
        #: what chose the precision (:func:`build_encoder` sets it; None when given directly)
        self.precision_choice: PrecisionChoice | None = None
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
            if second is not None:
                second.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(normalization.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("second_mean", torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("second_std", torch.tensor(IMAGENET.std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the networks (and therefore the features) are."""
        return self.mean.device

    def train(self, mode: bool = True) -> "FrameEncoder":  # inference only: BN stats stay frozen
        return super().train(False)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` uint8 RGB or float in [0, 1] -> ``[N, C, ceil(H/8), ceil(W/8)]``, unit L2 norm over C."""
        x = frames.float()
        if frames.dtype == torch.uint8:
            x = x / 255.0
        h = F.normalize(self._run(self.encoder, (x - self.mean) / self.std), dim=1)
        if self.second is None:
            return h
        m = F.normalize(self._run(self.second, (x - self.second_mean) / self.second_std), dim=1)
        return F.normalize(torch.cat([self.merge_lambda * h, m], dim=1), dim=1)

    def _run(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``net(x)`` under autocast of :attr:`precision` (none for float32), as contiguous float32."""
        dtype = PRECISIONS[self.precision]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if dtype is None:
            out = net(x)
        else:
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                out = net(x)
        return out.float().contiguous()

    @torch.no_grad()
    def encode_frame(self, frame: np.ndarray, input_size: int = -1) -> torch.Tensor:
        """One ``[H, W, 3]`` uint8 RGB frame to features ``[C, h, w]`` on :attr:`device`.

        ``input_size > 0`` first scales the frame so that its short side is ``input_size`` pixels
        (bilinear, ``align_corners=True``, as the public code's ``INPUT_SIZE``); ``-1`` keeps the full
        resolution. The grid is then ``ceil(H' / 8) x ceil(W' / 8)`` of the scaled frame.

        Raises:
            ValueError: ``input_size`` is 0 or below -1 (:func:`scaled_size`).
        """
        x = torch.from_numpy(np.array(frame, dtype=np.uint8, copy=True)).to(self.device).permute(2, 0, 1).unsqueeze(0)
        size = scaled_size(x.shape[-2:], input_size)
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x.float() / 255.0, size=size, mode="bilinear", align_corners=True).clamp_(0.0, 1.0)
        return self(x)[0]


def scaled_size(size: tuple[int, int], input_size: int) -> tuple[int, int]:
    """``(H, W)`` scaled so that the short side is ``input_size`` pixels (rounded; ``-1`` = unchanged).

    Raises:
        ValueError: ``input_size`` is 0 or below -1.
    """
    h, w = int(size[0]), int(size[1])
    if input_size == -1:
        return h, w
    if input_size < 1:
        raise ValueError(f"input size must be -1 (full resolution) or >= 1 pixels, got {input_size}")
    s = input_size / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def load_resnet18(path: str | os.PathLike) -> ResNetStride8:
    """Inference ResNet-18 (layer3, stride 8) of an encoder file: an ``python -m hvc.export`` file
    or a plain torchvision-layout ResNet-18 state dict (official HVC releases); ``layer4.*`` and
    ``fc.*`` keys are ignored. Use :func:`build_encoder` to get the file's normalisation applied.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not loadable, a raw training checkpoint, or keys do not match.
    """
    return load_encoder(path)[0]


def load_mocov1(path: str | os.PathLike) -> ResNet50Layer3:
    """MoCo-v1 ResNet-50 (``module.encoder_q.*`` keys; the official release's ``state_dict``
    entry or a bare state dict) cut after layer3 with stride 1 (1024 channels).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not loadable or keys do not match.
    """
    path = Path(path)
    obj = load_weights_file(path, "MoCo weights file")
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a MoCo checkpoint dict")
    prefix = "module.encoder_q."
    if not any(k.startswith(prefix) for k in state):
        raise CheckpointError(f"{path}: no '{prefix}*' keys: not a MoCo-v1 checkpoint")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    net = ResNet50Layer3()
    load_state_strict(net, state, path, ignore_prefixes=("layer4.", "fc."))
    return net.eval()


def random_resnet18(seed: int = 0) -> ResNetStride8:
    """The baseline: torchvision's default initialisation of ResNet-18 (layer3, stride 8), seeded."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return ResNetStride8("layer3").eval()
    finally:
        torch.random.set_rng_state(gen_state)


def resolve_model(model: str, checkpoints_dir: str | os.PathLike = "checkpoints") -> Path | None:
    """The weights file of a MODEL argument: ``random`` -> None; a weights file path (suffix
    ``.pth``/``.pt``/``.tar``, :func:`label_prop.evaluation.results.is_model_path`) -> that path; a name
    -> ``<checkpoints_dir>/NAME.pth``.

    Raises:
        FileNotFoundError: the file does not exist (names it; for a name, also how to make one).
        UsageError: a name that is not a plain folder name (:func:`label_prop.evaluation.results.model_name`).
    """
    if model == "random":
        return None
    if is_model_path(model):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path.resolve()} not found")
        return path
    path = Path(checkpoints_dir) / f"{model_name(model)}.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"model {model!r}: {path.resolve()} not found (train and export one, give a .pth path, or use 'random')"
        )
    return path


def choose_encoder_precision(precision: str, device: torch.device | str) -> PrecisionChoice:
    """:func:`hvc.hardware.encoder_precision` (probed once per process, device and thread count)
    with its errors as command-line errors.

    Raises:
        UsageError: an unknown ``precision``, or bfloat16 on a GPU without it.
    """
    try:
        return encoder_precision(precision, device)
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None


def build_encoder(model: str, *, checkpoints_dir: str | os.PathLike = "checkpoints",
                  moco: str | os.PathLike | None = None, seed: int = 0,
                  device: torch.device | str = "cpu", precision: str = "float32") -> FrameEncoder:
    """The inference encoder for ``model`` (``random`` or a checkpoint name/path), optionally
    merged with a MoCo-v1 ResNet-50 file, in eval mode on ``device``, with the input
    normalisation its file records (ImageNet for ``random``) and the precision ``precision``
    (``auto`` or a name of :data:`hvc.hardware.PRECISIONS`, resolved with its memory layout by
    :func:`hvc.hardware.encoder_precision`; the choice is kept as ``precision_choice``).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`resolve_model` and the loaders.
        UsageError: an unknown ``precision``, or bfloat16 on a GPU without it.
    """
    device = torch.device(device)
    choice = choose_encoder_precision(precision, device)
    path = resolve_model(model, checkpoints_dir)
    if path is None:
        net, norm = random_resnet18(seed), IMAGENET
    else:
        net, enc_file = load_encoder(path)
        norm = enc_file.normalization
    second = load_mocov1(moco) if moco is not None else None
    enc = FrameEncoder(net, second, normalization=norm, precision=choice.precision,
                       channels_last=choice.channels_last).to(device)
    enc.precision_choice = choice
    return enc


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of :func:`build_encoder` other than the model (``--checkpoints-dir``,
    ``--moco``, ``--seed``, ``--device``, ``--precision``) and ``--threads`` (torch CPU threads)."""
    g = parser.add_argument_group("encoder")
    g.add_argument("--checkpoints-dir", default="checkpoints", type=Path,
                   help="where a MODEL name is looked up as NAME.pth (default: checkpoints)")
    g.add_argument("--moco", default=None,
                   help="optional MoCo-v1 ResNet-50 file merged with the encoder (HVC's MERGE; default: none)")
    g.add_argument("--seed", type=int, default=0, help="seed of the 'random' encoder (default 0)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, usually one per core)")
    g.add_argument("--precision", choices=("auto",) + tuple(PRECISIONS), default="auto",
                   help="precision of the encoder: auto (default: bfloat16 where a short probe at start shows it "
                        "faster than float32 on this machine, else float32), float32 (exact, the reference's), "
                        "or autocast to bfloat16 / float16; propagation always runs in float32")
