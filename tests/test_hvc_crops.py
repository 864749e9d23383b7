"""Coordinate-aware crops map back to the pixels they came from (docs/method.md, "Training data"; convention in hvc.data.crops)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from hvc.data.crops import (RandomResizedCropCoord, crop_pixel_to_source, normalize_batch, sample_crop_box,
                            two_view_crops)


def ramp_image(height: int, width: int) -> torch.Tensor:
    """``[2, H, W]`` float64 image whose channels are the pixel's column and row index."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([xs, ys])


@pytest.mark.parametrize("antialias,atol", [(False, 1e-3), (True, 0.15)])
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("size,out", [((240, 427), 64), ((97, 61), 32), ((300, 300), 48)])
def test_crop_pixels_come_from_the_box(seed, size, out, antialias, atol):
    """Every interior crop pixel holds the (bilinear) source value at the position the box
    predicts; a linear ramp is reproduced exactly by bilinear / antialiased resampling."""
    height, width = size
    img = ramp_image(height, width)
    crop = RandomResizedCropCoord(out, scale=(0.02, 1.0), antialias=antialias)
    res, box = crop(img, random.Random(seed))
    assert res.shape == (2, out, out) and box.shape == (4,) and box.dtype == torch.float32
    x1, y1, x2, y2 = box.tolist()
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
    # exact integer box in the source (pixel-edge convention)
    j, i = round(x1 * width), round(y1 * height)
    w, h = round((x2 - x1) * width), round((y2 - y1) * height)
    assert (j + w) / width == pytest.approx(x2, abs=1e-6) and (i + h) / height == pytest.approx(y2, abs=1e-6)
    # interior pixels: away from the crop border by the resampling support (+1 pixel)
    v, u = torch.meshgrid(torch.arange(out, dtype=torch.float64), torch.arange(out, dtype=torch.float64),
                          indexing="ij")
    xs, ys = crop_pixel_to_source(box, (out, out), width, height, u, v)
    mx = int(np.ceil(out / w)) + 1 + int(np.ceil(w / out))
    my = int(np.ceil(out / h)) + 1 + int(np.ceil(h / out))
    inner = (slice(my, out - my), slice(mx, out - mx))
    if res[0][inner].numel() == 0:
        pytest.skip("crop too small for an interior")
    # plain bilinear: exact up to float32 box rounding; antialiased: its kernel shifts a ramp's
    # samples by < 0.1 px. The reference's j / (W - 1) convention is off by up to ~1 px.
    assert torch.allclose(res[0][inner], xs[inner], atol=atol), (res[0][inner] - xs[inner]).abs().max()
    assert torch.allclose(res[1][inner], ys[inner], atol=atol), (res[1][inner] - ys[inner]).abs().max()
    # and the predicted source positions lie inside the box
    assert xs.min() >= j - 0.5 - 1e-6 and xs.max() <= j + w - 0.5 + 1e-6


def test_identity_crop_pixels_equal_source():
    """With the crop the size of the output, the crop is a plain copy of the box's pixels."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    img = Image.fromarray(arr)

    class Fixed(random.Random):  # force a 16 x 16 crop at (i=5, j=9)
        pass

    crop = RandomResizedCropCoord(16)
    import hvc.data.crops as crops_mod
    orig = crops_mod.sample_crop_box
    crops_mod.sample_crop_box = lambda *a, **k: (5, 9, 16, 16)
    try:
        out, box = crop(img, Fixed(0))
    finally:
        crops_mod.sample_crop_box = orig
    assert torch.allclose(box, torch.tensor([9 / 50, 5 / 40, 25 / 50, 21 / 40]))
    got = np.asarray(out)
    j, i = round(float(box[0]) * 50), round(float(box[1]) * 40)
    assert np.array_equal(got, arr[i:i + 16, j:j + 16])


def test_sample_crop_box_is_valid_and_reproducible():
    for seed in range(50):
        i, j, h, w = sample_crop_box(427, 240, random.Random(seed))
        assert 0 <= i and 0 <= j and 1 <= h and 1 <= w and i + h <= 240 and j + w <= 427
        assert sample_crop_box(427, 240, random.Random(seed)) == (i, j, h, w)
    with pytest.raises(ValueError):
        sample_crop_box(0, 10, random.Random(0))


def test_two_view_crops_and_normalisation():
    img = Image.fromarray(np.full((30, 40, 3), 128, dtype=np.uint8))
    v1, v2, c1, c2 = two_view_crops(img, RandomResizedCropCoord(16), random.Random(1))
    assert v1.dtype == torch.uint8 and v1.shape == (3, 16, 16) and v2.shape == (3, 16, 16)
    assert not torch.equal(c1, c2)  # independent crops
    x = normalize_batch(torch.stack([v1, v2]))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    assert torch.allclose(x[0, 0], torch.full((16, 16), (128 / 255 - 0.485) / 0.229), atol=1e-5)
    with pytest.raises(ValueError):
        normalize_batch(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
