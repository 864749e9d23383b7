"""The short-term part of the propagation engine: local-window geometry and the local top-k.

A query position of frame ``t`` may match a position of a short-term context frame only when
their Euclidean grid distance is below the radius (:func:`within_radius`, the one place
the radius is applied). Instead of scoring every key and masking afterwards, the query grid is
cut into ``Bh x Bw`` tiles, and a tile's queries are scored against the keys of its
*disc-tight region*: ``Bh + 2P`` rows (``P`` the largest offset within the radius), each row only
as wide as the radius allows for the tile's nearest query row (808 cells for 8 x 8 tiles and
radius 12, against 900 for the bounding square).

The context frames live in a ring buffer laid out ``[rows, cols, slot, C]`` (zero-padded by
``P``; :class:`label_prop.propagation.engine.ContextMemory`), so one region row over all filled slots is a
contiguous ``[cols * slots, C]`` block: :func:`local_topk` scores the tiles of a tile row
(``tiles_per_batch`` at a time, :func:`label_prop.propagation.engine.chunk_sizes`) with one batched matrix
product per region row and no copy, then takes an exact top-k in two stages over each region
cell's maximum across the slots.
"""
from __future__ import annotations

import torch


def topk_row_length(n: int, k: int, device: torch.device) -> int:
    """Row length to give ``torch.topk``: on CPU, rows of ``32k <= n < 64k`` values are padded to
    ``64k`` (with -inf), the length from which torch's CPU top-k uses a heap (partial sort)
    instead of selection, measured faster here (one thread, 64 rows: 808 values 619 us, padded
    to 960: 364 us)."""
    return 64 * k if device.type == "cpu" and 32 * k <= n < 64 * k else n


def within_radius(dy, dx, radius: float):
    """Whether grid offsets ``(dy, dx)`` (ints or integer tensors) are within ``radius``:
    ``dy^2 + dx^2 < radius^2`` (strict, as the public code). The one place the radius is applied."""
    return dy * dy + dx * dx < radius * radius


def half_width(d: int, radius: float) -> int:
    """The largest ``wd >= 0`` with ``(d, wd)`` within ``radius`` (0 when only ``(d, 0)`` is)."""
    wd = 0
    while within_radius(d, wd + 1, radius):
        wd += 1
    return wd


def region_rows(Bh: int, Bw: int, radius: float) -> list[tuple[int, int, int, int]]:
    """The disc-tight region of a ``Bh x Bw`` tile of queries, row by row: ``(row, width, first
    column, first group)`` for each of the ``Bh + 2P`` rows (``P = half_width(0, radius)``), in
    the tile's padded frame (query ``(i, j)`` of the tile sits at ``(P + i, P + j)``); the groups
    (scored cells) are numbered row by row, so the last row's first group plus its width is the
    region's number of cells."""
    P = half_width(0, radius)
    rows, g = [], 0
    for a in range(Bh + 2 * P):
        # Row a is d = max(0, P - a, a - P - Bh + 1) rows from the tile; only its columns within the
        # radius of some query of the tile are scored: P - wd ... P + Bw - 1 + wd.
        wd = half_width(max(0, P - a, a - P - Bh + 1), radius)
        rows.append((a, Bw + 2 * wd, P - wd, g))
        g += Bw + 2 * wd
    return rows


class WindowGeometry:
    """Tiles of an ``h x w`` query grid and the disc-tight key region of a tile.

    Args:
        grid: ``(h, w)`` of the feature grid, cells.
        radius: short-term spatial limit, cells (a key is within when its distance is ``< radius``).
        query_tile: tile size in cells, ``B`` (square) or ``(Bh, Bw)``; a speed knob only.
        device: where the index tensors live.
        tiles_per_batch: tiles of one tile row scored together (at most the row's ``ntx``; default
            ``min(ntx, 16)``); a speed/memory knob only (:func:`label_prop.propagation.engine.chunk_sizes`).

    Attributes (all derived from the above): ``Bh, Bw`` (tile, clipped to the grid), ``P``
    (padding: the largest integer offset within the radius), ``nty, ntx`` (tiles per column /
    row), ``Hpad, Wpad`` (the padded grid of the ring buffer), ``region_rows`` (per region row
    ``(row, width, first column, first group)``), ``n_groups`` (scored cells of a region),
    ``tiles_per_batch``, ``group_width, group_offset`` ``[n_groups]`` (where a cell's scores lie
    in a batch's score buffer), ``tile_cells`` ``[nty, ntx, n_groups]`` (padded-grid index of each
    tile's region cells) and ``tile_blocked`` ``[nty, ntx, n_groups, Bh*Bw]`` (cell out of the
    radius of the query, or off the image).

    Raises:
        ValueError: a bad ``query_tile`` or ``tiles_per_batch``.
    """

    def __init__(self, grid: tuple[int, int], radius: float, query_tile: int | tuple[int, int] = 8,
                 device: torch.device | str = "cpu", tiles_per_batch: int | None = None):
        tiles = (query_tile, query_tile) if isinstance(query_tile, int) else tuple(query_tile)
        if len(tiles) != 2 or min(tiles) < 1:
            raise ValueError(f"query_tile must be an int or (rows, cols), all >= 1; got {query_tile!r}")
        if tiles_per_batch is not None and tiles_per_batch < 1:
            raise ValueError(f"tiles_per_batch must be >= 1, got {tiles_per_batch}")
        h, w = grid
        self.radius, self.h, self.w = radius, h, w
        self.Bh, self.Bw = Bh, Bw = min(tiles[0], h), min(tiles[1], w)
        self.P = P = half_width(0, radius)
        self.nty, self.ntx = -(-h // Bh), -(-w // Bw)
        self.Hpad, self.Wpad = self.nty * Bh + 2 * P, self.ntx * Bw + 2 * P
        # Groups: one per scored region cell, holding its scores over all slots, row by row.
        self.region_rows = region_rows(Bh, Bw, radius)  # (row, width, first column, first group)
        self.n_groups = self.region_rows[-1][3] + self.region_rows[-1][1]
        # Tiles of one tile row are scored together, at most this many at a time (bounds the scores).
        self.tiles_per_batch = min(self.ntx, 16 if tiles_per_batch is None else tiles_per_batch)
        self._index_tensors(torch.device(device))

    def within(self, dy, dx):
        """Whether grid offsets ``(dy, dx)`` are within the radius (:func:`within_radius`)."""
        return within_radius(dy, dx, self.radius)

    def half_width(self, d: int) -> int:
        """The largest ``wd >= 0`` with ``(d, wd)`` within the radius (:func:`half_width`)."""
        return half_width(d, self.radius)

    def _index_tensors(self, dev: torch.device) -> None:
        Bh, Bw, P, R, T = self.Bh, self.Bw, self.P, len(self.region_rows), self.tiles_per_batch
        width = torch.tensor([W for _, W, _, _ in self.region_rows], device=dev)
        row_start = torch.tensor([g0 for _, _, _, g0 in self.region_rows], device=dev).repeat_interleave(width)
        gcol = torch.arange(self.n_groups, device=dev) - row_start  # cell's place in its row
        ga = torch.arange(R, device=dev).repeat_interleave(width)
        gb = torch.tensor([c0 for _, _, c0, _ in self.region_rows], device=dev).repeat_interleave(width) + gcol
        # Scores of a batch of tiles: row a is a [T, W_a, S, Bh*Bw] block; cell g's scores for
        # tile t start at (group_offset[g] + t * group_width[g]) * S * Bh*Bw.
        self.group_width = width.repeat_interleave(width)
        self.group_offset = T * row_start + gcol
        qa = torch.arange(Bh, device=dev).repeat_interleave(Bw)
        qb = torch.arange(Bw, device=dev).repeat(Bh)
        in_radius = self.within(ga.view(-1, 1) - (qa + P).view(1, Bh * Bw),
                                gb.view(-1, 1) - (qb + P).view(1, Bh * Bw))  # [n_groups, Bh*Bw]
        valid = torch.zeros(self.Hpad, self.Wpad, dtype=torch.bool, device=dev)
        valid[P:P + self.h, P:P + self.w] = True
        origin = (torch.arange(self.nty, device=dev) * Bh * self.Wpad).view(self.nty, 1, 1) \
            + (torch.arange(self.ntx, device=dev) * Bw).view(1, self.ntx, 1)
        self.tile_cells = origin + (ga * self.Wpad + gb).view(1, 1, -1)
        self.tile_blocked = ~(in_radius & valid.reshape(-1)[self.tile_cells].unsqueeze(-1))


class TileScratch:
    """Buffers of :func:`local_topk` for one engine, allocated once: flat scores of a batch of
    tiles ``[tiles_per_batch * n_groups * n_slots * Bh*Bw + 1]`` ending with a -inf sentinel, and
    cell maxima ``[tiles_per_batch, n_groups (padded for the top-k), Bh*Bw]`` with -inf padding rows.

    Args:
        geom: the window geometry.
        n_slots: slots of the ring buffer (``n_context``).
        topk: the protocol's top-k.
        device: where the buffers live.
    """

    def __init__(self, geom: WindowGeometry, n_slots: int, topk: int, device: torch.device):
        BB, G, T = geom.Bh * geom.Bw, geom.n_groups, geom.tiles_per_batch
        self.flat = torch.empty(T * G * max(n_slots, 1) * BB + 1, device=device)
        self.flat[-1] = float("-inf")
        self.gmax = torch.full((T, topk_row_length(G, min(topk, G), device), BB), float("-inf"), device=device)


def local_topk(feat: torch.Tensor, ring_key: torch.Tensor, n_filled: int, geom: WindowGeometry, topk: int,
               scratch: TileScratch) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each query over the short-term local windows (exact).

    Args:
        feat: ``[C, h, w]`` query features.
        ring_key: ``[Hpad, Wpad, n, C]`` context features (padded ring buffer).
        n_filled: slots filled (``S <= n``); slots ``0 .. S-1`` are scored.
        geom: the window geometry of the grid.
        topk: ``k``.
        scratch: the engine's buffers.

    Returns:
        ``([h*w, k'] scores, [h*w, k'] flat indices into ring_key.view(-1, C))``,
        ``k' = min(k, candidates)``; -inf where a query has fewer candidates.

    Each region cell's maximum over the ``S`` slots is kept and the top-k taken in two stages:
    first the ``k`` cells with the highest maxima within the radius, then the top-k of those
    cells' ``k * S`` scores. A cell left out has ``k`` chosen cells whose maxima, each a real
    candidate, are at least as high as any of its scores, so the result is the top-k over all
    candidates. The radius mask is constant over the slots, so it is applied to the maxima only.
    """
    C, h, w = feat.shape
    Bh, Bw, T, S, dev = geom.Bh, geom.Bw, geom.tiles_per_batch, n_filled, feat.device
    BB = Bh * Bw
    qpad = feat.new_zeros(C, geom.nty * Bh, geom.ntx * Bw)
    qpad[:, :h, :w] = feat
    # [nty, ntx, C, Bh*Bw]: each tile's queries as columns.
    qtiles = qpad.view(C, geom.nty, Bh, geom.ntx, Bw).permute(1, 3, 0, 2, 4).reshape(geom.nty, geom.ntx, C, BB)
    kg = min(topk, geom.n_groups)
    kl = min(topk, kg * S)
    vals = feat.new_empty(geom.nty * Bh, geom.ntx * Bw, kl)
    idxs = torch.empty(geom.nty * Bh, geom.ntx * Bw, kl, dtype=torch.int64, device=dev)
    # Second-stage candidate indices; columns past kg * S point to the sentinel (-inf).
    cand_idx = torch.full((T, BB, topk_row_length(kg * S, kl, dev)), scratch.flat.numel() - 1, dtype=torch.int64,
                          device=dev)
    for ty in range(geom.nty):
        y0 = ty * Bh
        for t0 in range(0, geom.ntx, T):
            nt = min(T, geom.ntx - t0)
            _score_tiles(qtiles[ty, t0:t0 + nt], ring_key, S, geom, y0, t0, scratch)
            v, cell_slot = _two_stage_topk(geom, ty, t0, nt, S, ring_key.shape[2], kg, kl, scratch, cand_idx)
            x0, x1 = t0 * Bw, (t0 + nt) * Bw
            vals[y0:y0 + Bh, x0:x1] = v.view(nt, Bh, Bw, kl).transpose(0, 1).reshape(Bh, nt * Bw, kl)
            idxs[y0:y0 + Bh, x0:x1] = cell_slot.view(nt, Bh, Bw, kl).transpose(0, 1).reshape(Bh, nt * Bw, kl)
    return vals[:h, :w].reshape(h * w, kl), idxs[:h, :w].reshape(h * w, kl)


def _score_tiles(qt: torch.Tensor, ring_key: torch.Tensor, S: int, geom: WindowGeometry, y0: int, t0: int,
                 scratch: TileScratch) -> None:
    """Scores of ``nt`` tiles of one tile row (queries ``qt`` ``[nt, C, Bh*Bw]``) against their
    regions over the first ``S`` slots, into ``scratch.flat`` (region row ``a`` of the batch is a
    ``[nt, W_a, S, Bh*Bw]`` block), and each cell's maximum over the slots into ``scratch.gmax``."""
    nt, C, BB = qt.shape
    T, Bw, n = geom.tiles_per_batch, geom.Bw, ring_key.shape[2]
    st = ring_key.stride()
    for a, W, c0, g in geom.region_rows:
        base = (y0 + a) * st[0] + (t0 * Bw + c0) * st[1]
        out = scratch.flat[T * S * BB * g:T * S * BB * g + nt * W * S * BB].view(nt, W * S, BB)
        if S == n:  # a row's keys over all slots: one contiguous [W * n, C] block per tile
            keys = ring_key.as_strided((nt, W * n, C), (Bw * st[1], st[2], 1), base)
            torch.bmm(keys, qt, out=out)
        else:
            for t in range(nt):
                keys = ring_key.as_strided((W, S, C), (st[1], st[2], 1), base + t * Bw * st[1])
                torch.bmm(keys, qt[t].expand(W, C, BB), out=out[t].view(W, S, BB))
        torch.amax(out.view(nt, W, S, BB), dim=2, out=scratch.gmax[:nt, g:g + W])


def _two_stage_topk(geom: WindowGeometry, ty: int, t0: int, nt: int, S: int, n: int, kg: int, kl: int,
                    scratch: TileScratch, cand_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-k of the scored batch (see :func:`local_topk`): ``([nt, Bh*Bw, kl] scores,
    [nt, Bh*Bw, kl] ring indices cell * n + slot)``."""
    G, BB, dev = geom.n_groups, geom.Bh * geom.Bw, cand_idx.device
    sentinel = scratch.flat.numel() - 1
    # Score (tile t, cell g, slot s, query q) is at gbase[g] + t * tstride[g] + s * B*B + q.
    gbase = geom.group_offset * (S * BB)
    tstride = geom.group_width * (S * BB)
    offs = torch.arange(BB, device=dev).view(BB, 1, 1) + torch.arange(S, device=dev).view(1, 1, S) * BB
    tile_no = torch.arange(nt, device=dev).view(nt, 1, 1)
    gm = scratch.gmax[:nt]
    gm[:, :G].masked_fill_(geom.tile_blocked[ty, t0:t0 + nt], float("-inf"))
    gv, gi = gm.topk(kg, dim=1)  # [nt, kg, B*B] best cells per query
    gi = gi.transpose(1, 2).clamp_(max=G - 1)  # [nt, B*B, kg]; rows past G are -inf padding
    idx = cand_idx[:nt, :, :kg * S].view(nt, BB, kg, S)
    torch.add(offs, (gbase[gi] + tile_no * tstride[gi]).unsqueeze(-1), out=idx)
    idx.masked_fill_(torch.isneginf(gv).transpose(1, 2).unsqueeze(-1), sentinel)
    v, pos = scratch.flat[cand_idx[:nt]].topk(kl, dim=2)  # [nt, B*B, kl]
    g_best = gi.gather(2, (pos // S).clamp_(max=kg - 1))
    cell = geom.tile_cells[ty, t0:t0 + nt].gather(1, g_best.view(nt, -1)).view(nt, BB, kl)
    return v, cell * n + pos % S
