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


#: Kinds of :func:`reentry_clip`.
REENTRY_KINDS = ("exit", "occlusion", "jump")


def reentry_clip(kind: str, n_frames: int = 40, size: tuple[int, int] = (240, 320),
                 radius: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A clip where the object of :func:`synthetic_clip` (a disk cut from ``chelsea``) is lost and
    comes back, with its ground truth: the test data of re-identification.

    Args:
        kind: ``"exit"``: it moves right, leaves the frame for about a quarter of the clip and
            re-enters on the far left (at half the speed); ``"occlusion"``: a wall of ``coffee`` slides over it and hides it
            fully for a quarter of the clip, then slides away; ``"jump"``: it jumps across the
            frame (farther than the propagation radius) at mid-clip.
        n_frames: number of frames T (>= 8).
        size: ``(H, W)`` in pixels.
        radius: disk radius in pixels.

    Returns:
        ``(frames [T, H, W, 3] uint8, masks [T, H, W] uint8)``, object id 1 where the disk is
        visible (frames where it is absent or hidden have an empty mask).

    Raises:
        ValueError: an unknown ``kind`` or ``n_frames < 8``.
    """
    if kind not in REENTRY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REENTRY_KINDS)}, got {kind!r}")
    if n_frames < 8:
        raise ValueError(f"n_frames must be >= 8, got {n_frames}")
    H, W = size
    bg = (resize(skdata.astronaut(), (H + 40, W + 2 * n_frames + 40), anti_aliasing=True) * 255).astype(np.uint8)
    cat = skdata.chelsea()
    patch = (resize(cat[20:280, 100:360], (2 * radius, 2 * radius), anti_aliasing=True) * 255).astype(np.uint8)
    wall = (resize(skdata.coffee(), (H, W // 2), anti_aliasing=True) * 255).astype(np.uint8)
    yy, xx = np.mgrid[-radius:radius, -radius:radius]
    disk = (yy + 0.5) ** 2 + (xx + 0.5) ** 2 < radius ** 2
    q = n_frames // 4
    frames = np.empty((n_frames, H, W, 3), np.uint8)
    masks = np.zeros((n_frames, H, W), np.uint8)
    for t in range(n_frames):
        frame = bg[20:20 + H, 2 * t:2 * t + W].copy()  # camera pans 2 px per frame
        cy = H // 2 + int(0.1 * H * np.sin(2 * np.pi * t / n_frames))
        if kind == "exit":  # right edge at frame q+..., gone, back on the left
            step = (W + 2 * radius) / (2 * q)
            cx = int(W / 2 + step * t) if t < 2 * q else int(-radius + step / 2 * (t - 2 * q))
        elif kind == "jump":
            cx = int(W * 0.25 + t) if t < n_frames // 2 else int(W * 0.75 + (t - n_frames // 2))
        else:
            cx = int(W * 0.3 + t)
        obj = np.zeros((H, W), bool)
        y0, x0 = cy - radius, cx - radius
        ys, xs = slice(max(y0, 0), min(y0 + 2 * radius, H)), slice(max(x0, 0), min(x0 + 2 * radius, W))
        if ys.start < ys.stop and xs.start < xs.stop:
            d = disk[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            p = patch[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            frame[ys, xs][d] = p[d]
            obj[ys, xs] = d
        if kind == "occlusion":  # the wall's left edge sweeps from the right edge over the disk and back
            centre = n_frames / 2
            left = int(W - (W * 0.85) * max(0.0, 1 - abs(t - centre) / (centre - 2)))
            if left < W:
                frame[:, left:] = wall[:, :W - left] if W - left <= wall.shape[1] else \
                    np.pad(wall, ((0, 0), (0, W - left - wall.shape[1]), (0, 0)), mode="edge")
                obj[:, left:] = False
        masks[t][obj] = 1
        frames[t] = frame
    return frames, masks
