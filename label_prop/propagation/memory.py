"""A long-term object memory and the re-identification of lost objects (docs/reid.md).

Label propagation (the CRW / HVC protocol) looks at frame 0 and at the last ``n_context`` frames
within a radius. An object that is occluded, leaves the view or jumps farther than the radius is
lost, and nothing brings it back: its soft labels have turned to background in the short-term
context, which outvotes frame 0. VS-ReID (Li et al., "Video Object Segmentation with
Re-identification", DAVIS challenge 2017, arXiv:1708.00197) re-identifies lost objects anywhere
in later frames and restarts propagation there. We do the same on our correspondence features,
without a re-identification network:

* **Memory** (:class:`ObjectMemory`): per label (each object and the background) a bank of at
  most ``bank_size`` feature vectors, reservoir-sampled from the positions of reference frames
  whose soft label for it is at least ``admit_confidence``: the first annotated frame, frames
  where the object is re-identified, and every ``admit_every`` frames where the object is tracked
  and its mass is stable (within a factor 2 of its median). A bounded bank keeps memory flat for
  any video length (the long-term memory of XMem, Cheng and Schwing ECCV 2022, is bounded the
  same way, by consolidation).
* **Descriptors**: ``prototypes`` k-means centres of each bank (faiss), standing for the object
  as a few vectors, after HODOR's object descriptors (Athar et al. CVPR 2022), here computed
  from the features rather than learned.
* **Global search** (:class:`KnnIndex`): every position of a frame searches the whole memory
  (no radius) for its ``knn`` nearest vectors by inner product (the features are unit vectors:
  cosine similarity), with faiss: exact (``IndexFlatIP``) by default, IVF or HNSW when the
  memory is large (``index``). :func:`brute_force_knn` is the torch reference it is tested against.
* **Lost**: an object whose mass (the grid cells where its soft label is the largest) falls below
  ``lost_ratio`` times its median mass over the last ``history`` tracked frames.
* **Found**: for a lost object, the positions where at least ``vote`` of the neighbours carry
  its label and that are closer to its nearest prototype than to the background's nearest
  prototype by ``margin`` (cosine similarity) make the core; the 4-connected region of positions
  with half those votes (and the same margin) that holds the most core positions is the object,
  if it has at least 2 core positions and covers at least ``found_ratio`` of the object's median
  mass. There its labels are re-seeded (one-hot) and the frame becomes a
  new reference that owns the object (:class:`label_prop.propagation.multiref.MultiRefPropagator`,
  the machinery of objects that start mid-video).

Not done yet (docs/reid.md): the offline mode of VS-ReID (propagating backwards from each
re-identification to fill the frames where the object was lost).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from label_prop.config import MemoryConfig

try:
    import faiss
except ImportError:  # pragma: no cover - faiss-cpu is a dependency (setup.cfg)
    faiss = None


def _require_faiss():
    if faiss is None:  # pragma: no cover
        raise ImportError("re-identification needs faiss: pip install faiss-cpu (or faiss-gpu on CUDA)")
    return faiss


def brute_force_knn(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact inner-product kNN in torch, the reference of :class:`KnnIndex`.

    Args:
        queries: ``[Q, C]``; keys: ``[N, C]`` (float32).
        k: neighbours per query (at most ``N``).

    Returns:
        ``(scores [Q, k], indices [Q, k])``, best first.
    """
    return torch.topk(queries @ keys.T, min(k, keys.shape[0]), dim=1)


class KnnIndex:
    """Inner-product kNN over a fixed set of keys with faiss.

    Args:
        keys: ``[N, C]`` float32 vectors (unit vectors for cosine similarity).
        kind: ``"flat"`` (exact), ``"ivf"`` (``IndexIVFFlat``, ``ivf_lists`` lists, ``ivf_probe``
            probed), ``"hnsw"`` (``IndexHNSWFlat``, ``hnsw_m`` neighbours per node), or ``"auto"``:
            flat up to ``approx_above`` keys, ivf beyond.
        config: the memory's settings (for the index parameters).
        gpu: put the index on GPU ``gpu`` when the installed faiss is a GPU build (``faiss-gpu``;
            the ``gpu`` extra); None, or a CPU build: on the CPU (not run on a GPU yet).

    Raises:
        ValueError: no key, or keys not ``[N, C]``.
    """

    def __init__(self, keys: np.ndarray, kind: str = "flat", config: MemoryConfig = MemoryConfig(),
                 gpu: int | None = None):
        fs = _require_faiss()
        keys = np.ascontiguousarray(keys, dtype=np.float32)
        if keys.ndim != 2 or not len(keys):
            raise ValueError(f"keys must be [N, C] with N >= 1, got {keys.shape}")
        n, c = keys.shape
        if kind == "auto":
            kind = "flat" if n <= config.approx_above else "ivf"
        self.kind = kind
        if kind == "flat":
            self.index = fs.IndexFlatIP(c)
        elif kind == "ivf":
            lists = max(1, min(config.ivf_lists, n // 39))  # faiss wants >= 39 training points per list
            self.index = fs.IndexIVFFlat(fs.IndexFlatIP(c), c, lists, fs.METRIC_INNER_PRODUCT)
            self.index.train(keys)
            self.index.nprobe = min(config.ivf_probe, lists)
        elif kind == "hnsw":
            self.index = fs.IndexHNSWFlat(c, config.hnsw_m, fs.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        self.on_gpu = gpu is not None and hasattr(fs, "StandardGpuResources") and kind != "hnsw"
        if self.on_gpu:  # pragma: no cover - needs faiss-gpu and a GPU
            self._res = fs.StandardGpuResources()
            self.index = fs.index_cpu_to_gpu(self._res, gpu, self.index)
        self.index.add(keys)
        self.size = n

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], indices [Q, k])`` of the ``k`` best keys per query, best first
        (approximate indexes may return -1 where they found fewer)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index.search(q, min(k, self.size))


@dataclass
class _Track:
    masses: list = field(default_factory=list)  # mass of the last tracked frames, cells
    lost: bool = False

    def median(self) -> float:
        return float(np.median(self.masses)) if self.masses else 0.0


class ObjectMemory:
    """Banks of feature vectors per label, their prototypes, and the lost / found rules
    (module docstring).

    Args:
        num_channels: ``K`` labels (0 = background).
        config: the memory's settings.
        seed: seed of the reservoir sampling and k-means (results are repeatable).

    Attributes:
        events: ``(frame, channel, "lost" | "found" | "admitted")`` in order, for reports and tests.
    """

    def __init__(self, num_channels: int, config: MemoryConfig = MemoryConfig(), seed: int = 0):
        self.K, self.config = num_channels, config
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.banks: list[np.ndarray | None] = [None] * num_channels
        self.seen = [0] * num_channels  # positions offered to each bank so far (reservoir)
        self.prototypes: list[np.ndarray | None] = [None] * num_channels
        self.tracks = [_Track() for _ in range(num_channels)]
        self.events: list[tuple[int, int, str]] = []
        self._index: KnnIndex | None = None
        self._labels: np.ndarray | None = None
        self.gpu: int | None = None  # the CUDA device of the features, set by admit()

    # -------------------------------------------------------------- the banks
    @property
    def nbytes(self) -> int:
        """Bytes of the banks and prototypes (the faiss index holds one more copy of the banks)."""
        return sum(b.nbytes for b in self.banks if b is not None) + sum(p.nbytes for p in self.prototypes
                                                                          if p is not None)

    def admit(self, feat: torch.Tensor, labels: torch.Tensor, channels, frame: int) -> None:
        """Offer the confident positions of a frame to the banks of ``channels``.

        Args:
            feat: ``[C, h, w]`` unit features; labels: ``[K, h, w]`` soft labels of the frame.
            channels: the labels whose banks take positions (background 0 included when given).
            frame: the frame index (for :attr:`events`).
        """
        if feat.device.type == "cuda":
            self.gpu = feat.device.index or 0
        f = feat.detach().float().flatten(1).T.cpu().numpy()  # [h*w, C]
        y = labels.detach().float().flatten(1).cpu().numpy()  # [K, h*w]
        changed = False
        for c in channels:
            rows = f[y[c] >= self.config.admit_confidence]
            if len(rows):
                self._reservoir(c, rows)
                changed = True
                self.events.append((frame, c, "admitted"))
        if changed:
            self._index = None

    def _reservoir(self, c: int, rows: np.ndarray) -> None:
        """Algorithm R (Vitter 1985) over every row ever offered to bank ``c``, vectorised."""
        m = self.config.bank_size
        bank = self.banks[c]
        start = self.seen[c]
        self.seen[c] += len(rows)
        if bank is None:
            bank = np.empty((0, rows.shape[1]), np.float32)
        room = max(0, m - len(bank))
        bank = np.concatenate([bank, rows[:room]])
        rest = rows[room:]
        if len(rest):
            pos = start + room + np.arange(len(rest))  # 0-based position of each row in the stream
            slot = (self.rng.random(len(rest)) * (pos + 1)).astype(np.int64)
            keep = slot < m
            bank[slot[keep]] = rest[keep]  # later rows win where two pick one slot, as in the sequential rule
        self.banks[c] = np.ascontiguousarray(bank, dtype=np.float32)
        k = min(self.config.prototypes, len(bank))
        if k == len(bank):
            self.prototypes[c] = bank.copy()
        else:
            km = _require_faiss().Kmeans(bank.shape[1], k, niter=10, seed=self.seed + c, spherical=True,
                                         min_points_per_centroid=1, verbose=False)
            km.train(bank)
            self.prototypes[c] = km.centroids.copy()

    def index(self) -> tuple[KnnIndex, np.ndarray]:
        """The kNN index over every bank and the label of each of its rows (built when stale)."""
        if self._index is None:
            rows = [(b, c) for c, b in enumerate(self.banks) if b is not None and len(b)]
            self._index = KnnIndex(np.concatenate([b for b, _ in rows]), self.config.index, self.config, self.gpu)
            self._labels = np.concatenate([np.full(len(b), c, np.int64) for b, c in rows])
        return self._index, self._labels

    # ----------------------------------------------------------- lost / found
    def update(self, feat: torch.Tensor, labels: torch.Tensor, objects, frame: int) -> dict[int, np.ndarray]:
        """Track the objects' masses, admit stable frames, and search for the lost objects.

        Args:
            feat: ``[C, h, w]`` unit features of the frame; labels: its ``[K, h, w]`` soft labels
                (after propagation, before they enter the context).
            objects: the channels of the objects started so far (not the background).
            frame: the frame index.

        Returns:
            ``{channel: [h, w] bool}``: the region where each lost object is found in this frame
            (empty when none is); the caller re-seeds its labels there.
        """
        cfg = self.config
        mass = np.bincount(labels.detach().argmax(0).flatten().cpu().numpy(), minlength=self.K)  # cells won
        lost = []
        for c in objects:
            tr = self.tracks[c]
            med = tr.median()
            if not tr.lost and tr.masses and mass[c] < cfg.lost_ratio * med:
                tr.lost = True
                self.events.append((frame, c, "lost"))
            if tr.lost:
                lost.append(c)
            else:
                tr.masses = (tr.masses + [float(mass[c])])[-cfg.history:]
        if frame % cfg.admit_every == 0:
            stable = [c for c in objects if not self.tracks[c].lost and self.banks[c] is not None
                      and 0.5 * self.tracks[c].median() <= mass[c] <= 2 * self.tracks[c].median()]
            if stable:
                self.admit(feat, labels, stable + ([0] if not lost else []), frame)
        if not lost:
            return {}
        return self._find(feat, lost, frame)

    def _find(self, feat: torch.Tensor, lost, frame: int) -> dict[int, np.ndarray]:
        cfg = self.config
        h, w = feat.shape[1:]
        q = feat.detach().float().flatten(1).T.cpu().numpy()
        index, row_labels = self.index()
        _, nn = index.search(q, cfg.knn)
        nn_labels = np.where(nn >= 0, row_labels[np.clip(nn, 0, None)], -1)
        found = {}
        bg = (q @ self.prototypes[0].T).max(1) if self.prototypes[0] is not None else np.full(len(q), -np.inf)
        for c in lost:
            if self.prototypes[c] is None:
                continue
            votes = (nn_labels == c).mean(1).reshape(h, w)
            closer = ((q @ self.prototypes[c].T).max(1) - bg).reshape(h, w) >= cfg.margin
            high = (votes >= cfg.vote) & closer
            if not high.any():
                continue
            low = ((votes >= cfg.vote / 2) & closer).astype(np.uint8)  # hysteresis: grown around the core
            n, comp = cv2.connectedComponents(low, connectivity=4)
            cores = np.bincount(comp[high], minlength=n)
            best = int(np.argmax(cores[1:])) + 1
            region = comp == best
            if cores[best] >= 2 and region.sum() >= cfg.found_ratio * self.tracks[c].median():
                found[c] = region
                self.tracks[c].lost = False
                self.tracks[c].masses = []
                self.events.append((frame, c, "found"))
        return found
