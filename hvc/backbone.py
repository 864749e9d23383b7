"""ResNet-18 backbone with reduced strides, shared by the trainer and the inference encoders.

HVC (Pei et al., arXiv 2404.13505) and its ancestors (CRW, SFC) use a torchvision ResNet-18
whose later stages keep their stride at 1, so that the output has stride 8 instead of 32:

* training: layer3 and layer4 with stride 1 -> ``[N, 512, H/8, W/8]``;
* inference: the network cut after layer3, layer3 with stride 1 -> ``[N, 256, H/8, W/8]``.

Strides are set to 1 with no dilation, as the public HVC code does (docs/method.md, "Model").
Key names are those of torchvision, so a torchvision or official HVC ResNet-18 state dict
loads without renaming.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torchvision.models import resnet18

#: State-dict key prefixes of a torchvision ResNet-18 without its classifier, in forward order.
RESNET18_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def set_stride_one(layer: nn.Module) -> None:
    """Set the stride of every Conv2d in ``layer`` (downsample included) to 1, in place."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)


class ResNetStride8(nn.Module):
    """Torchvision ResNet-18 truncated after ``last_layer`` with output stride 8.

    Args:
        last_layer: ``"layer3"`` (inference: 256 channels) or ``"layer4"`` (training:
            512 channels). Layers after it are not built.
        zero_init_residual: start the last BN gamma of every BasicBlock at 0, as HVC's
            initialisation does (docs/method.md, "Model").

    Input ``[N, 3, H, W]`` (normalised RGB); output ``[N, C, ceil(H/8), ceil(W/8)]``,
    C = 256 for layer3 and 512 for layer4.

    Raises:
        ValueError: ``last_layer`` is not ``"layer3"`` or ``"layer4"``.
    """

    def __init__(self, last_layer: str = "layer3", *, zero_init_residual: bool = False):
        super().__init__()
        if last_layer not in ("layer3", "layer4"):
            raise ValueError(f"last_layer must be 'layer3' or 'layer4', got {last_layer!r}")
        net = resnet18(weights=None, zero_init_residual=zero_init_residual)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        set_stride_one(self.layer3)
        self.last_layer = last_layer
        if last_layer == "layer4":
            self.layer4 = net.layer4
            set_stride_one(self.layer4)
        self.out_channels = 512 if last_layer == "layer4" else 256
        self.stride = 8

    def stages(self) -> Iterable[str]:
        """Names of the state-dict prefixes this network owns, e.g. ``('conv1', ..., 'layer3')``."""
        return RESNET18_STAGES[: RESNET18_STAGES.index(self.last_layer) + 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` normalised images -> features ``[N, 256 (layer3) or 512 (layer4), H/8, W/8]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.last_layer == "layer4":
            x = self.layer4(x)
        return x
