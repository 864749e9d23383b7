"""Static-image training data (COCO, PASCAL VOC, MSRA10k or any image folder), and the pieces
shared with the video dataset: robust decoding and two-view items.

docs/method.md, "Training data": the reference globs ``<root>/JPEGImages/COCO/*.jpg``
(MSRA10K and PASCAL commented out; and a loop bug would have kept only the last set, docs/method.md, "Differences from the public code"),
gives each image two independent coordinate-aware crops (T = 1), and **never shuffles**
(see docs/method.md, "Differences from the public code"). Here any number of folders are combined, the order is reshuffled every epoch from
``(seed, epoch)``, and a file that fails to decode is named in a warning, skipped and counted.

Every dataset item is addressed by a key ``(index, seed)``: ``seed`` drives the crops of that
item; the order and the seeds of every epoch come from :class:`hvc.data.sampler.EpochSampler`
(re-exported here), so the data of step ``k`` depends only on ``(seed, k)``.

Decoded frames can be kept in memory (``cache_bytes``): as ``uint8 [H, W, 3]`` arrays, either
filled as frames are first read (:meth:`TwoViewDataset.__getitem__`) or all at once by
:meth:`TwoViewDataset.preload` -- in the main process, before data-loader workers fork, so
the workers share the arrays' memory instead of each holding a copy. A cached frame gives
exactly the crops of a decoded one (same pixels, same PIL resize).
"""
from __future__ import annotations

import hashlib
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..config import DEFAULT_SCALE
from .crops import DEFAULT_RATIO, RandomResizedCropCoord, two_view_crops

PathLike = Union[str, os.PathLike]

#: Image file extensions read from plain folders (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: Presets: name -> (candidate folders relative to the data root, tried in order; extensions).
#: The first candidate is the reference's layout (``<root>/JPEGImages/<NAME>``, docs/method.md "Training data"); the
#: others are the official release layouts. MSRA10K keeps its ground-truth PNGs next to the
#: JPEGs, hence ``.jpg`` only.
IMAGE_PRESETS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "coco": (("JPEGImages/COCO", "train2017", "coco/train2017", "COCO/train2017", "images/train2017"),
             (".jpg", ".jpeg")),
    "voc": (("JPEGImages/PASCAL", "JPEGImages/VOC", "VOC2012/JPEGImages", "VOCdevkit/VOC2012/JPEGImages"),
            (".jpg", ".jpeg")),
    "msra10k": (("JPEGImages/MSRA10K", "MSRA10K_Imgs_GT/Imgs", "MSRA10K/Imgs"), (".jpg", ".jpeg")),
}


class CorruptImageWarning(UserWarning):
    """A training image could not be read or decoded; the item was skipped (and counted)."""


class UnreadableImageError(OSError):
    """Raised by :func:`load_rgb` when a file is missing or cannot be decoded."""


def load_rgb(path: PathLike) -> Image.Image:
    """Read and fully decode an image file as an RGB PIL image.

    Raises:
        UnreadableImageError: the file is missing, truncated or not a decodable image (the
            message names the file and the decoder's error).
    """
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() forces the full decode inside the try
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise UnreadableImageError(f"cannot decode image {os.fspath(path)}: {type(exc).__name__}: {exc}") from exc


def list_images(folder: PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                recursive: bool = False) -> List[Path]:
    """Sorted image files in ``folder`` (by relative path), matching ``extensions`` (any case).

    Raises:
        FileNotFoundError: ``folder`` is not a directory (the message names it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    exts = tuple(e.lower() for e in extensions)
    if recursive:
        files = [Path(dp) / f for dp, _, fs in os.walk(folder) for f in fs if f.lower().endswith(exts)]
    else:
        with os.scandir(folder) as it:
            files = [Path(e.path) for e in it if e.name.lower().endswith(exts) and e.is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def resolve_preset(root: PathLike, name: str) -> Tuple[Path, Tuple[str, ...]]:
    """Folder and extensions of an image preset (``coco``, ``voc``, ``msra10k``) under ``root``.

    Raises:
        ValueError: unknown preset name.
        FileNotFoundError: none of the preset's candidate folders exists (all are listed).
    """
    key = name.lower()
    if key not in IMAGE_PRESETS:
        raise ValueError(f"unknown image set {name!r}; known: {', '.join(IMAGE_PRESETS)}")
    candidates, exts = IMAGE_PRESETS[key]
    for rel in candidates:
        if (Path(root) / rel).is_dir():
            return Path(root) / rel, exts
    tried = ", ".join(str(Path(root) / c) for c in candidates)
    raise FileNotFoundError(f"image set {name!r} not found under {root}; tried: {tried}")


def fingerprint(lines: Sequence[str]) -> str:
    """Short SHA-1 of a list of strings (used to detect a changed dataset on resume)."""
    h = hashlib.sha1()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()[:16]


class TwoViewDataset(Dataset):
    """Base class: items of ``T`` frames, each frame cropped twice (docs/method.md, "Training data").

    Subclasses implement :meth:`num_items`, :meth:`item_paths`, :meth:`epoch_indices` and
    :meth:`epoch_length`. ``dataset[(index, seed)]`` (or ``dataset[index]``, seed = index)
    returns a dict:

    * ``view1``, ``view2``: ``uint8 [T, 3, S, S]`` crops (normalise with
      :func:`hvc.data.crops.normalize_batch`);
    * ``coord1``, ``coord2``: ``float32 [T, 4]`` boxes ``[x1, y1, x2, y2]`` (pixel-edge
      convention, see :mod:`hvc.data.crops`); both crops of frame ``t`` come from frame ``t``;
    * ``index``: the item actually returned; ``skipped``: how many unreadable items were
      skipped to get it (each one is named in a :class:`CorruptImageWarning`).

    An unreadable item is replaced by the next one (``index + 1``, wrapping), deterministically.

    Args:
        size: crop side ``S``, pixels.
        scale: range of the crop area as a fraction of the frame area (paper: (0, 1)).
        ratio: range of the crop aspect ratio w/h (paper: (3/4, 4/3)).
        max_skips: give up after this many consecutive unreadable items.
        cache_bytes: keep decoded frames in memory up to this many bytes of ``uint8`` RGB
            (0: no cache). Frames are added as they are first read, or by :meth:`preload`.

    Raises (from ``__getitem__``):
        RuntimeError: ``max_skips`` consecutive items were unreadable (the files are named).
    """

    def __init__(self, size: int = 256, scale: Sequence[float] = DEFAULT_SCALE,
                 ratio: Sequence[float] = DEFAULT_RATIO, max_skips: int = 32, cache_bytes: int = 0):
        self.crop = RandomResizedCropCoord(size, scale, ratio)
        self.max_skips = int(max_skips)
        self.num_skipped = 0  # in this process (workers count separately; see "skipped")
        self.cache_bytes = max(0, int(cache_bytes))
        self._cache: Dict[str, np.ndarray] = {}
        self._cache_used = 0

    # -- interface for subclasses -------------------------------------------------------------
    def num_items(self) -> int:
        """Number of addressable items (images or clips)."""
        raise NotImplementedError

    def item_paths(self, index: int) -> List[Path]:
        """Frame files of item ``index`` (length T)."""
        raise NotImplementedError

    def epoch_length(self) -> int:
        """Number of items one epoch visits."""
        raise NotImplementedError

    def epoch_indices(self, rng: np.random.Generator) -> np.ndarray:
        """The item indices of one epoch, in training order (``int64 [epoch_length]``)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A string that changes when the dataset's item list changes."""
        raise NotImplementedError

    def frame_paths(self) -> List[Path]:
        """Every distinct frame file the items read (what :meth:`preload` decodes)."""
        raise NotImplementedError

    # -- frame cache ---------------------------------------------------------------------------
    @property
    def cached_frames(self) -> int:
        """Number of decoded frames held in memory (in this process)."""
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded frames held in memory (in this process)."""
        return self._cache_used

    def _keep(self, key: str, arr: np.ndarray) -> None:
        if key not in self._cache and self._cache_used + arr.nbytes <= self.cache_bytes:
            self._cache[key] = arr
            self._cache_used += arr.nbytes

    def read_frame(self, path: PathLike) -> Image.Image:
        """The RGB frame at ``path``: from the cache, or decoded (:func:`load_rgb`) and cached
        while the cache has room.

        Raises:
            UnreadableImageError: see :func:`load_rgb`.
        """
        key = os.fspath(path)
        arr = self._cache.get(key)
        if arr is not None:
            return Image.fromarray(arr)
        img = load_rgb(path)
        if self.cache_bytes:
            self._keep(key, np.asarray(img))
        return img

    def preload(self, threads: int = 1) -> Tuple[int, int]:
        """Decode every frame of :meth:`frame_paths` into the cache, until ``cache_bytes`` is
        reached (call it before data-loader workers start, so they share the memory).

        Unreadable files are left out (they are warned about and skipped when an item reads
        them). ``threads`` decoder threads (PIL releases the GIL while decoding).

        Returns:
            ``(frames cached, bytes cached)``.
        """
        if not self.cache_bytes:
            return 0, 0
        todo = [os.fspath(p) for p in self.frame_paths() if os.fspath(p) not in self._cache]

        def decode(path: str) -> Optional[np.ndarray]:
            try:
                return np.asarray(load_rgb(path))
            except UnreadableImageError:
                return None

        chunk = max(1, 4 * max(1, threads))
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for start in range(0, len(todo), chunk):
                if self._cache_used >= self.cache_bytes:
                    break
                part = todo[start:start + chunk]
                for path, arr in zip(part, pool.map(decode, part)):
                    if arr is not None:
                        self._keep(path, arr)
        return len(self._cache), self._cache_used

    # -- shared --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_items()

    def __getitem__(self, key) -> Dict[str, torch.Tensor]:
        index, seed = (key if isinstance(key, tuple) else (int(key), int(key)))
        n = self.num_items()
        if not 0 <= index < n:
            raise IndexError(f"item {index} out of range for {n} items")
        rng = random.Random(seed)
        failures: List[str] = []
        for attempt in range(min(self.max_skips, n)):
            idx = (index + attempt) % n
            try:
                frames = [self.read_frame(p) for p in self.item_paths(idx)]
            except UnreadableImageError as exc:
                self.num_skipped += 1
                failures.append(str(exc))
                warnings.warn(f"skipping unreadable training item: {exc}", CorruptImageWarning, stacklevel=2)
                continue
            v1, v2, c1, c2 = zip(*(two_view_crops(f, self.crop, rng) for f in frames))
            return {
                "view1": torch.stack(v1), "view2": torch.stack(v2),
                "coord1": torch.stack(c1), "coord2": torch.stack(c2),
                "index": torch.tensor(idx), "skipped": torch.tensor(attempt),
            }
        raise RuntimeError(f"{len(failures)} consecutive unreadable items from item {index}:\n  "
                           + "\n  ".join(failures))


class StaticImageDataset(TwoViewDataset):
    """Images from any list of folders, each item one image (T = 1), docs/method.md, "Training data".

    Args:
        root: the data root; presets and relative ``image_dirs`` are resolved against it.
        image_sets: preset names (``coco``, ``voc``, ``msra10k``; see :data:`IMAGE_PRESETS`).
        image_dirs: extra folders (relative to ``root`` or absolute), searched recursively for
            :data:`IMAGE_EXTENSIONS`.
        size, scale, ratio, max_skips, cache_bytes: see :class:`TwoViewDataset`.

    Raises:
        ValueError: no folder given, or no image found (the folders are named).
        FileNotFoundError: a preset or folder does not exist.
    """

    def __init__(self, root: PathLike, image_sets: Sequence[str] = ("coco",), image_dirs: Sequence[PathLike] = (),
                 size: int = 256, scale: Sequence[float] = DEFAULT_SCALE, ratio: Sequence[float] = DEFAULT_RATIO,
                 max_skips: int = 32, cache_bytes: int = 0):
        super().__init__(size, scale, ratio, max_skips, cache_bytes)
        self.root = Path(root)
        sources: List[Tuple[Path, Tuple[str, ...], bool]] = []
        for name in image_sets:
            folder, exts = resolve_preset(self.root, name)
            sources.append((folder, exts, False))
        for d in image_dirs:
            d = Path(d)
            sources.append((d if d.is_absolute() else self.root / d, IMAGE_EXTENSIONS, True))
        if not sources:
            raise ValueError("StaticImageDataset needs at least one image set or image folder")
        self.files: List[Path] = []
        self.sources: List[Tuple[str, int]] = []
        for folder, exts, recursive in sources:
            found = list_images(folder, exts, recursive)
            self.sources.append((str(folder), len(found)))
            self.files.extend(found)
        if not self.files:
            raise ValueError("no images found in " + ", ".join(s for s, _ in self.sources))

    def num_items(self) -> int:
        return len(self.files)

    def item_paths(self, index: int) -> List[Path]:
        return [self.files[index]]

    def frame_paths(self) -> List[Path]:
        return list(self.files)

    def epoch_length(self) -> int:
        return len(self.files)

    def epoch_indices(self, rng: np.random.Generator) -> np.ndarray:
        """A fresh permutation of all images every epoch (the reference never shuffles: docs/method.md, "Differences from the public code")."""
        return rng.permutation(len(self.files)).astype(np.int64)

    def fingerprint(self) -> str:
        return fingerprint([os.path.relpath(p, self.root) for p in self.files])


def pick_image_sets(image_sets: Optional[Sequence[str]], image_dirs: Sequence[PathLike]) -> List[str]:
    """Default image sets: ``["coco"]`` when neither sets nor folders are given; ``[]`` for
    ``["none"]``."""
    if image_sets is None:
        return [] if image_dirs else ["coco"]
    return [s for s in image_sets if s.lower() != "none"]
