"""Coordinate-aware random resized crops and the training normalisation.

HVC (docs/method.md, "Training data") trains on two independent random resized crops of the same
frame; the loss (docs/method.md "Loss") needs to know where each crop came from in the original image, so
each crop is returned with its box ``[x1, y1, x2, y2]`` in normalised coordinates of the
**original** image.

Coordinate convention (deliberately different from the public reference)
-------------------------------------------------------------------------
We use *pixel-edge* coordinates: pixel ``k`` covers the continuous interval ``[k, k + 1)``, and a
crop of ``w x h`` pixels whose top-left pixel is ``(row i, column j)`` of a ``W x H`` image gets::

    x1 = j / W,   y1 = i / H,   x2 = (j + w) / W,   y2 = (i + h) / H

so ``x2 - x1 = w / W`` exactly. This is the convention of the resize itself (torchvision/PIL
bilinear with ``align_corners=False``): output pixel ``u`` of an ``S``-pixel-wide crop has its
centre at normalised ``x = x1 + (u + 0.5) (x2 - x1) / S``, so a bin of 8 crop pixels
``[8c, 8c + 8)`` has its centre at ``x1 + (c + 0.5) (x2 - x1) / G`` (``G = S / 8``), the formula of
the loss (docs/method.md "Loss"). (That formula, kept from the paper, takes a feature cell to be its bin; the
receptive field of a zero-padded ResNet cell is centred near crop pixel ``8c`` instead, 3.5 pixels
earlier, in the reference as here.) The reference uses ``x1 = j / (W - 1)``,
``x2 = (j + w - 1) / (W - 1)`` (pixel *centres*, core/transform_coord.py:162), which is off by
up to half a source pixel relative to the resize. Both are normalised per axis (x by W, y by H),
so for non-square images the coordinates are anisotropic in both conventions; we keep that,
as the positive radius of the loss is defined in those units.

Normalisation (deliberately different from the public reference)
-----------------------------------------------------------------
The reference normalises training crops with **CIFAR-10** constants, mean (0.4914, 0.4822,
0.4465), std (0.2023, 0.1994, 0.2010) (train_vid.py / train_img.py), while inference uses the
ImageNet constants (docs/method.md "Label propagation"). We train with the **ImageNet** mean/std, i.e. exactly what
inference feeds the encoder, so train and test inputs have the same statistics.

Crops are produced as ``uint8`` tensors (4x less inter-process traffic from the data-loader
workers); :func:`normalize_batch` converts and normalises them on the training device.
"""
from __future__ import annotations

import math
import random
from typing import Sequence, Tuple, Union

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..config import DEFAULT_SCALE
from ..tables import IMAGENET_MEAN, IMAGENET_STD

#: Aspect ratio of the crops, log-uniform in [3/4, 4/3] (docs/method.md, "Training data"; the
#: public code's default; the area fraction's default is :data:`hvc.config.DEFAULT_SCALE`).
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)

ImageLike = Union[Image.Image, torch.Tensor]


def image_size(img: ImageLike) -> Tuple[int, int]:
    """``(width, height)`` in pixels of a PIL image or a ``[..., H, W]`` tensor.

    Raises:
        TypeError: ``img`` is neither a PIL image nor a tensor with at least 2 dimensions.
    """
    if isinstance(img, Image.Image):
        return img.size
    if isinstance(img, torch.Tensor) and img.dim() >= 2:
        return int(img.shape[-1]), int(img.shape[-2])
    raise TypeError(f"expected a PIL image or a [..., H, W] tensor, got {type(img).__name__}")


def sample_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: Sequence[float] = DEFAULT_SCALE,
    ratio: Sequence[float] = DEFAULT_RATIO,
    attempts: int = 10,
) -> Tuple[int, int, int, int]:
    """Draw a random crop box ``(i, j, h, w)`` (top row, left column, height, width; pixels).

    Same distribution as torchvision's ``RandomResizedCrop.get_params`` and the reference
    (core/transform_coord.py:106-140): area fraction ~ U(scale), log-uniform aspect ratio in
    ``ratio``, up to ``attempts`` tries, then a centre-crop fallback. The random numbers come
    from ``rng`` only, so a crop is a pure function of the generator's state (this is what
    makes resumed runs reproducible).

    Raises:
        ValueError: non-positive image size, or ``scale``/``ratio`` not ordered ``(min, max)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if scale[0] > scale[1] or ratio[0] > ratio[1] or ratio[0] <= 0:
        raise ValueError(f"scale/ratio must be (min, max) with ratio > 0, got {scale}, {ratio}")
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = rng.uniform(scale[0], scale[1]) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = rng.randint(0, height - h)
            j = rng.randint(0, width - w)
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def box_to_coords(i: int, j: int, h: int, w: int, height: int, width: int) -> torch.Tensor:
    """Normalised pixel-edge box ``[x1, y1, x2, y2]`` (float32, shape ``[4]``) of a crop.

    ``x1 = j / width``, ``y1 = i / height``, ``x2 = (j + w) / width``, ``y2 = (i + h) / height``
    (see the module docstring for why this differs from the reference's ``j / (W - 1)``).
    """
    return torch.tensor([j / width, i / height, (j + w) / width, (i + h) / height], dtype=torch.float32)


def crop_pixel_to_source(coords: torch.Tensor, out_size: Tuple[int, int], width: int, height: int,
                         u: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map crop pixel centres back to continuous source pixel indices.

    Args:
        coords: ``[4]`` box ``[x1, y1, x2, y2]`` as returned by :func:`box_to_coords`.
        out_size: ``(out_h, out_w)`` of the resized crop, pixels.
        width, height: size of the source image, pixels.
        u, v: column / row indices in the crop (any broadcastable shape).

    Returns:
        ``(x, y)`` in source pixel-index units (pixel ``k``'s centre is at ``k``), i.e. the
        position whose bilinear sample the crop pixel ``(v, u)`` holds.
    """
    x1, y1, x2, y2 = (float(c) for c in coords)
    out_h, out_w = out_size
    x = (x1 + (u + 0.5) * (x2 - x1) / out_w) * width - 0.5
    y = (y1 + (v + 0.5) * (y2 - y1) / out_h) * height - 0.5
    return x, y


class RandomResizedCropCoord:
    """Random resized crop that also returns the crop box (docs/method.md, "Training data").

    ``crop(img, rng) -> (out, coords)``: ``img`` is a PIL image or a ``[C, H, W]`` tensor;
    ``out`` has the same type, resized to ``size`` (bilinear, antialiased when shrinking,
    aspect not preserved, no flips or colour jitter, as the reference); ``coords`` is the
    float32 ``[4]`` box ``[x1, y1, x2, y2]`` in the pixel-edge convention of this module.

    Args:
        size: output ``(height, width)`` or a single int for a square output, pixels.
        scale: range of the crop area as a fraction of the image area (default (0, 1)).
        ratio: range of the crop aspect ratio w/h (default (3/4, 4/3)).
        antialias: low-pass when shrinking (default True; tensors only -- PIL always does).
            Without it the resize is plain bilinear, whose samples sit exactly at the positions
            :func:`crop_pixel_to_source` gives; the antialiasing kernel moves the effective
            sample position of a linear ramp by up to ~0.1 source pixel.

    Raises:
        ValueError: non-positive ``size``.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], scale: Sequence[float] = DEFAULT_SCALE,
                 ratio: Sequence[float] = DEFAULT_RATIO, antialias: bool = True):
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(self.size) <= 0:
            raise ValueError(f"crop size must be positive, got {size}")
        self.scale = tuple(float(s) for s in scale)
        self.ratio = tuple(float(r) for r in ratio)
        self.antialias = bool(antialias)

    def __call__(self, img: ImageLike, rng: random.Random) -> Tuple[ImageLike, torch.Tensor]:
        width, height = image_size(img)
        i, j, h, w = sample_crop_box(width, height, rng, self.scale, self.ratio)
        out = TF.resized_crop(img, i, j, h, w, list(self.size), InterpolationMode.BILINEAR,
                               antialias=self.antialias)
        return out, box_to_coords(i, j, h, w, height, width)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio})"


def two_view_crops(img: Image.Image, crop: RandomResizedCropCoord, rng: random.Random):
    """Two independent coordinate-aware crops of one RGB image (docs/method.md "Training data").

    Returns:
        ``(view1, view2, coord1, coord2)``: ``uint8`` tensors ``[3, S_h, S_w]`` and float32
        boxes ``[4]``.
    """
    out1, c1 = crop(img, rng)
    out2, c2 = crop(img, rng)
    to_t = (lambda x: TF.pil_to_tensor(x)) if isinstance(img, Image.Image) else (lambda x: x)
    return to_t(out1), to_t(out2), c1, c2


def normalize_batch(x: torch.Tensor, device: Union[str, torch.device, None] = None,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    channels_last: bool = False) -> torch.Tensor:
    """``uint8`` images ``[..., 3, H, W]`` (0-255) -> float32 normalised, on ``device``.

    ``(x / 255 - mean) / std`` with ImageNet constants by default (see the module docstring
    for the deliberate difference from the reference's CIFAR-10 constants).

    Raises:
        ValueError: the channel dimension (``x.shape[-3]``) is not 3.
    """
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W] images, got shape {tuple(x.shape)}")
    x = x.to(device, non_blocking=True) if device is not None else x
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255.0
    out = (x.float() - m) / s
    if channels_last and out.dim() == 4:
        out = out.contiguous(memory_format=torch.channels_last)
    return out
