"""A synthetic clip with known ground truth, built from photographs that scikit-image ships
(no download): a disk cut from ``chelsea`` (the cat) moves over ``astronaut`` while the
background pans. Used by :mod:`label_prop.demo`."""
from __future__ import annotations

import numpy as np
from skimage import data as skdata
from skimage.transform import resize


def synthetic_clip(n_frames: int = 24, size: tuple[int, int] = (240, 320),
                   radius: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """A clip of a textured disk moving over a panning photograph, with its ground truth.

    Args:
        n_frames: number of frames T.
        size: ``(H, W)`` in pixels.
        radius: disk radius in pixels.

    Returns:
        ``(frames [T, H, W, 3] uint8, masks [T, H, W] uint8)`` with object id 1 on the disk.
    """
    H, W = size
    bg = (resize(skdata.astronaut(), (H + 40, W + 3 * n_frames + 40), anti_aliasing=True) * 255).astype(np.uint8)
    cat = skdata.chelsea()  # 300 x 451
    patch = (resize(cat[20:280, 100:360], (2 * radius, 2 * radius), anti_aliasing=True) * 255).astype(np.uint8)
    yy, xx = np.mgrid[-radius:radius, -radius:radius]
    disk = (yy + 0.5) ** 2 + (xx + 0.5) ** 2 < radius ** 2
    frames = np.empty((n_frames, H, W, 3), np.uint8)
    masks = np.zeros((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        frame = bg[20:20 + H, 3 * t:3 * t + W].copy()  # camera pans 3 px per frame
        cy = int(H / 2 + 0.15 * H * np.sin(2 * np.pi * t / max(n_frames, 1)))
        cx = int(radius + 10 + (W - 2 * radius - 20) * t / max(n_frames - 1, 1))
        y0, x0 = cy - radius, cx - radius
        region = frame[y0:y0 + 2 * radius, x0:x0 + 2 * radius]
        region[disk] = patch[disk]
        masks[t, y0:y0 + 2 * radius, x0:x0 + 2 * radius][disk] = 1
        frames[t] = frame
    return frames, masks
