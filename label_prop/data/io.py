"""Image and mask I/O: frames, DAVIS annotations, palette PNGs, atomic writes.

Masks are ``uint8`` arrays ``[H, W]`` of object ids (0 = background). Two on-disk formats are
read, as the official DAVIS releases store them:

* DAVIS-2016: single-object binary PNGs, 0 = background, 255 = object (read as ids 0/1);
* DAVIS-2017 / YouTube-VOS: palette ("P" mode) PNGs whose indices are the object ids
  1..N; 255 marks void pixels (kept as 255, ignored by the metrics).

Predictions are written as palette PNGs with the DAVIS colour palette, so that they open with
colours in any viewer and read back as ids.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from hvc.runtime import atomic_write


#: Id of void pixels in DAVIS-2017 / YouTube-VOS annotations (ignored: never an object).
VOID_ID = 255


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour palette, ``[256, 3]`` uint8 (index 0 black, 1 red, ...).

    Same bit-interleaving construction as the official DAVIS and PASCAL VOC tools.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


DAVIS_PALETTE = davis_palette()


def read_frame(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB frame, ``[H, W, 3]`` uint8.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded as an image (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises several types for corrupt files
        raise ValueError(f"cannot decode image {path}: {exc}") from exc


def read_mask(path: str | os.PathLike, *, binary: bool = False) -> np.ndarray:
    """Read an annotation or prediction as object ids, ``[H, W]`` uint8.

    Args:
        path: a PNG. Palette ("P") PNGs give their indices; greyscale PNGs give their values.
        binary: DAVIS-2016 mode: the object (255 in the official files, or 1) is object 1.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a single-channel or palette image (names the file and mode),
            or, with ``binary``, it holds values other than 0 and 255 (or 0 and 1): e.g. a
            DAVIS-2017 palette mask (ids 1..N, void 255) in a DAVIS-2016 layout, whose objects
            and void would all merge into one object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("P", "L", "1", "I;16", "I"):
                raise ValueError(f"{path}: mask must be a palette or greyscale PNG, got mode {mode}")
            arr = np.asarray(im)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot decode mask {path}: {exc}") from exc
    if binary:
        values = set(np.unique(arr).tolist())
        if not (values <= {0, 255} or values <= {0, 1}):
            raise ValueError(f"{path}: a DAVIS-2016 annotation holds only 0 (background) and 255 (the object), "
                             f"found values {sorted(values)[:8]}{' ...' if len(values) > 8 else ''}: a multi-object "
                             f"(DAVIS-2017 palette) mask? Score it as davis17 or convert it")
        return (arr > 0).astype(np.uint8)
    if arr.max(initial=0) > 255:
        raise ValueError(f"{path}: object ids must be < 256, found {int(arr.max())}")
    return arr.astype(np.uint8)


def read_annotation(path: str | os.PathLike, binary: bool | None) -> np.ndarray:
    """Read an annotation as object ids ``[H, W]`` uint8 (:func:`read_mask`); ``binary=None``
    detects DAVIS-2016 masks (values only 0 and 255) and maps 255 to object 1 (filelists and
    user masks do not say which format they are).

    Raises:
        FileNotFoundError, ValueError: see :func:`read_mask`.
    """
    if binary is not None:
        return read_mask(path, binary=binary)
    m = read_mask(path)
    if (m == VOID_ID).any() and set(np.unique(m).tolist()) <= {0, VOID_ID}:
        return (m > 0).astype(np.uint8)
    return m


def _palette_image(ids: np.ndarray, name: str) -> Image.Image:
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{name}: ids must be [H, W], got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"{name}: ids must be in 0..255")
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(DAVIS_PALETTE.ravel().tolist())
    return im


def write_palette_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write object ids ``[H, W]`` (uint8) as a palette PNG with the DAVIS palette, atomically.

    Raises:
        ValueError: ``ids`` is not 2-D or has values outside 0..255.
    """
    im = _palette_image(ids, str(path))
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


def palette_png_bytes(ids: np.ndarray) -> bytes:
    """The bytes of the palette PNG :func:`write_palette_png` writes for ids ``[H, W]`` (for a
    zip or an HTTP response).

    Raises:
        ValueError: ``ids`` is not 2-D or has values outside 0..255.
    """
    buf = io.BytesIO()
    _palette_image(ids, "mask").save(buf, format="PNG")
    return buf.getvalue()


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> None:
    """Write an ``[H, W, 3]`` uint8 RGB image as a JPEG (``quality`` 1..95), atomically."""
    im = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    atomic_write(path, lambda tmp: im.save(tmp, format="JPEG", quality=quality))


def overlay(frame: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the DAVIS colours of ``ids`` ``[H, W]`` over ``frame`` ``[H, W, 3]`` uint8.

    Background (0) pixels are left as they are; object pixels get ``alpha`` of their colour.
    Returns ``[H, W, 3]`` uint8.
    """
    out = frame.astype(np.float32).copy()
    fg = ids > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * DAVIS_PALETTE[ids[fg]].astype(np.float32)
    return out.round().clip(0, 255).astype(np.uint8)
