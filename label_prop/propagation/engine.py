"""Label propagation by kNN over frame features (the CRW / DUL / HVC inference protocol).

The protocol (Jabri et al. 2020, "Space-Time Correspondence as a Contrastive Random Walk", as
used unchanged by Araslanov et al. 2021 and HVC, Pei et al. arXiv 2404.13505; docs/method.md,
"Label propagation"; its dense statement is :mod:`label_prop.propagation.reference`): to label frame ``t`` the
*context* is

* frame 0 as long-term memory, every key position (no spatial limit), and
* one short-term entry for each ``tau`` in ``t - n_context ... t - 1``, the entry being frame
  ``max(tau, 0)`` (so early frames see repeated copies of frame 0), restricted to key positions
  within the radius of the query (:func:`label_prop.propagation.window.within_radius`).

Each query position takes the ``topk`` highest dot products over all candidates of all entries;
its soft label is ``sum_i softmax(score / temperature)_i * label_i`` over those ``topk``. The
predicted soft labels (not the argmax) are the context labels of later frames.

Here only the local windows are computed (:mod:`label_prop.propagation.window`), frame 0 is scored densely,
and the duplicate copies of frame 0 enter the top-k by *multiplicity* instead of as copies
(:func:`weighted_topk_labels`), which gives the dense computation's result (a candidate repeated
``m`` times takes up to ``m`` of the top-k slots, each with the same weight).

**Chunk sizes** (:func:`chunk_sizes`; speed and memory knobs only, the result does not depend on
them, tested): on CPU 8 x 8 query tiles (other shapes measured within noise, README
"Benchmarks"), up to 16 tiles of a tile row per batch and 1024 queries per chunk of the frame-0
affinity, the sizes the CPU engine was developed and benchmarked with. On CUDA the two
scratch buffers may each take a budget of 1/32 of the GPU's memory (:data:`CUDA_BUDGET_FRACTION`:
512 MiB on a 16 GB GPU): the frame-0 affinity takes as many queries per chunk as fit (a whole
480p frame, 6420 x 6420 floats = 157 MiB, in one product) and a batch as many tiles of a tile
row as fit (all 14 tiles of a 480p row at n_context 50 take 138 MiB), so that each product is
as large as the budget allows; the tile stays 8 x 8.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from label_prop.config import PropagationConfig
from label_prop.propagation.window import TileScratch, WindowGeometry, local_topk, region_rows

#: Fraction of a GPU's memory each of the engine's two scratch buffers (frame-0 affinity chunk,
#: scores of a batch of tiles) may take (module docstring, "Chunk sizes").
CUDA_BUDGET_FRACTION = 1 / 32


@dataclass(frozen=True)
class ChunkSizes:
    """The engine's speed/memory knobs (module docstring, "Chunk sizes").

    Fields: ``query_tile`` (query tile side, grid cells), ``tiles_per_batch`` (tiles of a tile
    row scored in one batch), ``query_chunk`` (queries per chunk of the frame-0 affinity).
    """

    query_tile: int = 8
    tiles_per_batch: int = 16
    query_chunk: int = 1024


def chunk_sizes(grid: tuple[int, int], n_context: int, radius: float, device: torch.device | str,
                budget_bytes: int | None = None) -> ChunkSizes:
    """The chunk sizes for a ``grid = (h, w)`` engine on ``device`` (module docstring's rule).

    Args:
        grid: feature grid, cells.
        n_context: short-term context frames (ring slots).
        radius: the protocol's radius, cells (sets the tiles' region size).
        device: CPU: the fixed CPU sizes; CUDA: sized to ``budget_bytes``.
        budget_bytes: bytes each scratch buffer may take on CUDA (default:
            :data:`CUDA_BUDGET_FRACTION` of the device's memory).

    Returns:
        :class:`ChunkSizes`; on CUDA ``query_chunk * h * w * 4 <= budget_bytes`` and
        ``tiles_per_batch * n_groups * n_context * 64 * 4 <= budget_bytes``, each at least 1.
    """
    device = torch.device(device)
    cpu = ChunkSizes()
    if device.type != "cuda":
        return cpu
    if budget_bytes is None:
        budget_bytes = int(torch.cuda.get_device_properties(device).total_memory * CUDA_BUDGET_FRACTION)
    h, w = grid
    Bh, Bw = min(cpu.query_tile, h), min(cpu.query_tile, w)
    rows = region_rows(Bh, Bw, radius)
    n_groups = rows[-1][3] + rows[-1][1]
    per_tile = 4 * n_groups * max(n_context, 1) * Bh * Bw
    ntx = -(-w // Bw)
    return ChunkSizes(query_tile=cpu.query_tile, tiles_per_batch=max(1, min(ntx, budget_bytes // per_tile)),
                      query_chunk=max(1, min(h * w, budget_bytes // (4 * h * w))))


class ContextMemory:
    """The context of one propagation: frame 0 (long-term) and a ring buffer of the last
    ``n_context`` frames (short-term), features and soft labels, allocated once.

    Args:
        first_feat: ``[C, h, w]`` features of frame 0.
        first_labels: ``[K, h, w]`` soft labels of frame 0.
        n_context: ring slots.
        geom: the window geometry (the ring is padded by ``geom.P`` for the local windows).

    Attributes:
        key0: ``[C, h*w]``; lab0: ``[h*w, K]``: frame 0.
        ring_key: ``[Hpad, Wpad, n_context, C]``; ring_lab: ``[Hpad, Wpad, n_context, K]``:
            short-term frames, zero outside the image (float32, on ``first_feat.device``).
        n_filled: slots holding a frame; t: index of the last frame added (frame 0 = 0).

    Memory: ``n_context * Hpad * Wpad * (C + K)`` float32 values (``Hpad = h + 2P`` rounded up to
    whole tiles): about 0.6 GB for 480p, C = 256, K = 3, n_context = 50.
    """

    def __init__(self, first_feat: torch.Tensor, first_labels: torch.Tensor, n_context: int, geom: WindowGeometry):
        C, h, w = first_feat.shape
        K, dev = first_labels.shape[0], first_feat.device
        self.n_context, self.geom = n_context, geom
        self.key0 = first_feat.float().reshape(C, h * w).contiguous()
        self.lab0 = first_labels.to(dev, torch.float32).reshape(K, h * w).t().contiguous()
        self.ring_key = torch.zeros(geom.Hpad, geom.Wpad, n_context, C, device=dev)
        self.ring_lab = torch.zeros(geom.Hpad, geom.Wpad, n_context, K, device=dev)
        self.n_filled, self.next_slot, self.t = 0, 0, 0

    @property
    def nbytes(self) -> int:
        """Bytes of the ring buffer (features and labels)."""
        return sum(x.numel() * x.element_size() for x in (self.ring_key, self.ring_lab))

    def push(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        """Add frame ``t + 1`` (``[C, h, w]`` features, ``[K, h, w]`` labels), replacing the oldest slot."""
        self.t += 1
        if self.n_context == 0:
            return
        P, h, w, s = self.geom.P, self.geom.h, self.geom.w, self.next_slot
        self.ring_key[P:P + h, P:P + w, s] = feat.permute(1, 2, 0)
        self.ring_lab[P:P + h, P:P + w, s] = labels.permute(1, 2, 0)
        self.next_slot = (s + 1) % self.n_context
        self.n_filled = min(self.n_filled + 1, self.n_context)

    def first_copies(self, t: int) -> int:
        """Short-term entries of frame ``t`` that are copies of frame 0 (``tau <= 0``)."""
        return max(0, self.n_context - t + 1)


def dense_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``min(k, N)`` dot products of each query ``[C, Q]`` over all keys ``[C, N]``, ``chunk``
    queries at a time (bounds the ``chunk x N`` affinity): ``([Q, k'] scores, [Q, k'] key indices)``."""
    Q, kg = queries.shape[1], min(k, keys.shape[1])
    val = torch.empty(Q, kg, device=queries.device)
    idx = torch.empty(Q, kg, dtype=torch.int64, device=queries.device)
    for s in range(0, Q, chunk):
        sl = slice(s, min(s + chunk, Q))
        val[sl], idx[sl] = (queries[:, sl].t() @ keys).topk(kg, dim=1)
    return val, idx


def weighted_topk_labels(val: torch.Tensor, mult: torch.Tensor, lab: torch.Tensor, topk: int,
                         temperature: float) -> torch.Tensor:
    """Top-k with multiplicities, softmax over the top-k, weighted label sum.

    Args:
        val, mult: ``[Q, n]`` distinct candidates' scores (-inf = none) and multiplicities.
        lab: ``[Q, n, K]`` their labels.

    Returns:
        ``[Q, K]``: the top-k of the expanded list (each candidate repeated ``mult`` times) is made
        of the first candidates in descending score order, the last one possibly cut short.
    """
    order = val.argsort(dim=-1, descending=True)
    val = torch.gather(val, -1, order)
    mult = torch.gather(mult, -1, order)
    before = mult.cumsum(-1) - mult
    eff = torch.minimum(mult, (topk - before).clamp(min=0)).to(val.dtype)
    wgt = eff * torch.exp((val - val[..., :1]) / temperature).nan_to_num(0.0)
    wgt = wgt / wgt.sum(-1, keepdim=True)
    lab = torch.gather(lab, -2, order.unsqueeze(-1).expand_as(lab))
    return (wgt.unsqueeze(-1) * lab).sum(-2)


class LabelPropagator:
    """Streaming label propagation: feed one frame's features at a time.

    Memory is bounded by ``n_context + 1`` frames of features and soft labels
    (:class:`ContextMemory`), whatever the video length. All tensors live on
    ``first_feat.device`` (CUDA when the caller put the features there), in float32.

    Args:
        first_feat: frame 0 features ``[C, h, w]``, L2-normalised over C (cosine affinity).
        first_labels: frame 0 soft labels ``[K, h, w]`` (channel 0 = background; channels
            should sum to 1 at each position; not enforced).
        config: the protocol (topk, temperature, radius, n_context; default HVC's).
        query_tile: query tile size in grid cells (:class:`~label_prop.propagation.window.WindowGeometry`);
            a speed knob only, the result does not depend on it.
        query_chunk: queries per chunk of the dense frame-0 affinity (bounds its memory:
            ``query_chunk * h * w * 4`` bytes).
        tiles_per_batch: tiles of a tile row scored together (bounds the scores' memory).
            Each knob left None comes from :func:`chunk_sizes` for the features' device.

    Besides the ring buffer the engine holds the scores of a batch of tiles,
    ``tiles_per_batch * n_groups * n_context * Bh*Bw`` floats (145 MB at 480p and n_context 50
    with the 14 tiles of a row), and a per-tile mask of ``h * w * n_groups`` bools (6 MB at 480p).

    Raises:
        ValueError: shapes disagree or a speed knob is out of range.
    """

    def __init__(self, first_feat: torch.Tensor, first_labels: torch.Tensor,
                 config: PropagationConfig = PropagationConfig(), *, query_tile: int | tuple[int, int] | None = None,
                 query_chunk: int | None = None, tiles_per_batch: int | None = None):
        if first_feat.ndim != 3 or first_labels.ndim != 3 or first_labels.shape[1:] != first_feat.shape[1:]:
            raise ValueError(f"features must be [C, h, w] and labels [K, h, w] on the same grid, got shapes "
                             f"{tuple(first_feat.shape)} and {tuple(first_labels.shape)}")
        self.C, self.h, self.w = first_feat.shape
        self.K = first_labels.shape[0]
        self.device = first_feat.device
        auto = chunk_sizes((self.h, self.w), config.n_context, config.radius, self.device)
        query_chunk = auto.query_chunk if query_chunk is None else query_chunk
        if query_chunk < 1:
            raise ValueError(f"query_chunk must be >= 1, got {query_chunk}")
        self.config, self.query_chunk = config, query_chunk
        self.geom = WindowGeometry((self.h, self.w), config.radius,
                                   auto.query_tile if query_tile is None else query_tile, self.device,
                                   auto.tiles_per_batch if tiles_per_batch is None else tiles_per_batch)
        self.memory = ContextMemory(first_feat, first_labels, config.n_context, self.geom)
        yy, xx = torch.meshgrid(torch.arange(self.h, device=self.device), torch.arange(self.w, device=self.device),
                                indexing="ij")
        self._grid_y, self._grid_x = yy.reshape(-1), xx.reshape(-1)
        self._scratch: TileScratch | None = None

    @property
    def t(self) -> int:
        """Index of the last frame whose labels are in the context (frame 0 = 0)."""
        return self.memory.t

    @torch.no_grad()
    def step(self, feat: torch.Tensor) -> torch.Tensor:
        """Label the next frame from ``feat`` ``[C, h, w]`` and add it to the context with its
        prediction: :meth:`predict` + :meth:`push`. Returns ``[K, h, w]`` float32 soft labels.

        Raises:
            ValueError: ``feat`` has the wrong shape.
        """
        labels = self.predict(feat)
        self.push(feat, labels)
        return labels

    @torch.no_grad()
    def predict(self, feat: torch.Tensor) -> torch.Tensor:
        """Soft labels ``[K, h, w]`` (float32, on the engine's device) of frame ``t + 1`` from its
        features ``[C, h, w]``, without adding it to the context (the protocol; module docstring).

        Raises:
            ValueError: ``feat`` has the wrong shape.
        """
        self._check("features", feat, self.C)
        q = feat.to(self.device, torch.float32).reshape(self.C, self.h * self.w)
        cfg, mem = self.config, self.memory
        # Long-term frame 0: every position; it also stands first_copies(t) times among the
        # short-term entries, where it is within the radius.
        val0, idx0 = dense_topk(q, mem.key0, cfg.topk, self.query_chunk)
        mult0, copies = torch.ones_like(idx0), mem.first_copies(self.t + 1)
        if copies > 0:
            near = self.geom.within(self._grid_y[idx0] - self._grid_y.unsqueeze(1),
                                    self._grid_x[idx0] - self._grid_x.unsqueeze(1))
            mult0 += copies * near.to(torch.int64)
        val, mult, lab = [val0], [mult0], [mem.lab0[idx0]]
        if mem.n_filled > 0:  # short-term frames: local windows
            if self._scratch is None:
                self._scratch = TileScratch(self.geom, cfg.n_context, cfg.topk, self.device)
            lval, lidx = local_topk(q.view(self.C, self.h, self.w), mem.ring_key, mem.n_filled, self.geom,
                                    cfg.topk, self._scratch)
            val.append(lval)
            mult.append(torch.isfinite(lval).to(torch.int64))
            lab.append(mem.ring_lab.view(-1, self.K)[lidx])
        out = weighted_topk_labels(torch.cat(val, 1), torch.cat(mult, 1), torch.cat(lab, 1), cfg.topk,
                                   cfg.temperature)
        return out.t().reshape(self.K, self.h, self.w)

    @torch.no_grad()
    def push(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        """Add frame ``t + 1`` to the short-term context with the given soft labels ``[K, h, w]``
        (its prediction, labels merged over several references, or corrected by a new mask).

        Raises:
            ValueError: ``feat`` or ``labels`` has the wrong shape.
        """
        self._check("features", feat, self.C)
        self._check("labels", labels, self.K)
        self.memory.push(feat.to(self.device, torch.float32), labels.to(self.device, torch.float32))

    def _check(self, what: str, x: torch.Tensor, channels: int) -> None:
        if tuple(x.shape) != (channels, self.h, self.w):
            raise ValueError(f"expected {what} of shape {(channels, self.h, self.w)}, got {tuple(x.shape)}")


@torch.no_grad()
def propagate(feats: torch.Tensor, first_labels: torch.Tensor, config: PropagationConfig = PropagationConfig(),
              **engine_kwargs) -> torch.Tensor:
    """Propagate the first frame's soft labels through a whole video.

    Args:
        feats: ``[T, C, h, w]`` frame features, L2-normalised over C.
        first_labels: ``[K, h, w]`` soft labels of frame 0 (channel 0 = background).
        config: the protocol.
        **engine_kwargs: speed/memory knobs of :class:`LabelPropagator`.

    Returns:
        ``[T, K, h, w]`` soft labels; frame 0 is ``first_labels`` unchanged.

    Raises:
        ValueError: shapes disagree or a knob is out of range.
    """
    if feats.ndim != 4:
        raise ValueError(f"feats must be [T, C, h, w], got shape {tuple(feats.shape)}")
    prop = LabelPropagator(feats[0], first_labels, config, **engine_kwargs)
    out = torch.empty(feats.shape[0], *first_labels.shape, device=prop.device)
    out[0] = first_labels
    for t in range(1, feats.shape[0]):
        out[t] = prop.step(feats[t])
    return out
