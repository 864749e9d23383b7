"""Label propagation by kNN over frame features (the CRW / DUL / HVC inference protocol).

The protocol (Jabri et al. 2020, "Space-Time Correspondence as a Contrastive Random Walk",
as used unchanged by Araslanov et al. 2021 and HVC, Pei et al. arXiv 2404.13505; see
HVC_METHOD.md section 5): to label frame ``t`` the *context* is

* frame 0 as long-term memory, every key position (no spatial limit), and
* one short-term entry for each ``tau`` in ``t - n_context ... t - 1``, the entry being frame
  ``max(tau, 0)`` (so early frames see repeated copies of frame 0), restricted to key positions
  at Euclidean grid distance ``< radius`` from the query.

Each query position takes the ``topk`` highest dot products over all candidates of all entries;
its soft label is ``sum_i softmax(score / temperature)_i * label_i`` over those ``topk``. The
predicted soft labels (not the argmax) are the context labels of later frames.

The public reference computes each query's affinity to every position of all
``n_context + 1`` entries and masks the short-term ones afterwards. Here only the local windows
are computed (tiles of queries against their disc-tight key regions, as batched matrix
products, then an exact two-stage top-k), the long-term frame stays dense, and the duplicate
copies of frame 0 enter the top-k by *multiplicity* instead of as copies, which gives the same
result as the dense computation (a candidate repeated m times takes up to m of the top-k slots,
each with the same weight).
"""
from __future__ import annotations

import math

import torch


def _check_inputs(first_feat: torch.Tensor, first_labels: torch.Tensor, topk: int,
                  temperature: float, radius: float, n_context: int) -> None:
    if first_feat.ndim != 3:
        raise ValueError(f"features must be [C, h, w], got shape {tuple(first_feat.shape)}")
    if first_labels.ndim != 3:
        raise ValueError(f"labels must be [K, h, w], got shape {tuple(first_labels.shape)}")
    if first_labels.shape[1:] != first_feat.shape[1:]:
        raise ValueError(
            f"labels grid {tuple(first_labels.shape[1:])} differs from features grid "
            f"{tuple(first_feat.shape[1:])}"
        )
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0 (grid cells), got {radius}")
    if n_context < 0:
        raise ValueError(f"n_context must be >= 0, got {n_context}")


class LabelPropagator:
    """Streaming label propagation: feed one frame's features at a time with :meth:`step`.

    Memory is bounded by ``n_context + 1`` frames of features and soft labels (frame 0 plus a
    ring buffer of the last ``n_context`` frames), whatever the video length.

    How the short-term part is computed: the query grid is cut into ``Bh x Bw`` tiles. A tile's
    keys lie in its disc-tight region: ``Bh + 2P`` rows (``P = ceil(radius) - 1``), each row only
    as wide as the radius allows for the tile's nearest query row (808 cells for 8 x 8 tiles and
    radius 12, against 900 for the bounding square). The ring buffer is laid out
    ``[rows, cols, slot, C]``, so one region row over all filled slots is a contiguous
    ``[cols * slots, C]`` block: one batched matrix product per region row for all the tiles of a
    tile row (up to ``tiles_per_batch`` = 16 at a time), with no copy. The top-k is then taken
    in two exact stages over each cell's maximum across the slots (see :func:`_local_topk`), so
    the radius mask and the first top-k touch only ``n_groups x Bh*Bw`` values per tile instead
    of all the scores. Frame 0 is scored densely once per
    frame; its copies among the short-term entries count as multiplicities in the top-k.

    Args:
        first_feat: frame 0 features ``[C, h, w]``, L2-normalised over C (cosine affinity).
        first_labels: frame 0 soft labels ``[K, h, w]`` (channel 0 = background; channels
            should sum to 1 at each position; not enforced).
        topk: number of nearest candidates per query (CRW/HVC: 15).
        temperature: softmax temperature over the top-k dot products (0.1).
        radius: short-term spatial limit in grid cells; a key is kept when its Euclidean grid
            distance to the query is ``< radius`` (12 cells = 96 pixels at stride 8).
        n_context: number of short-term context entries (50).
        query_tile: query tile size in grid cells, ``B`` (square) or ``(Bh, Bw)``; a speed knob
            only, the result does not depend on it.
        query_chunk: queries per chunk of the dense frame-0 affinity (bounds its memory:
            ``query_chunk * h * w * 4`` bytes).

    Memory: the ring buffer holds ``n_context * (h + 2P + Bh) * (w + 2P + Bw) * (C + K)``
    float32 values (about 0.6 GB for 480p, C = 256, K = 3, n_context = 50), plus the scores of a
    batch of tiles, ``tiles_per_batch * n_groups * n_context * Bh*Bw`` floats (145 MB at 480p and
    n_context 50), and a per-tile mask of ``h * w * n_groups`` bools (6 MB at 480p). All tensors
    live on ``first_feat.device`` (CUDA when the caller put the features there), in float32.

    Raises:
        ValueError: shapes disagree or a hyperparameter is out of range.
    """

    def __init__(self, first_feat: torch.Tensor, first_labels: torch.Tensor, *, topk: int = 15,
                 temperature: float = 0.1, radius: float = 12, n_context: int = 50,
                 query_tile: int | tuple[int, int] = 8, query_chunk: int = 1024):
        _check_inputs(first_feat, first_labels, topk, temperature, radius, n_context)
        tiles = (query_tile, query_tile) if isinstance(query_tile, int) else tuple(query_tile)
        if len(tiles) != 2 or min(tiles) < 1 or query_chunk < 1:
            raise ValueError("query_tile must be an int or (rows, cols), all >= 1, and query_chunk >= 1; "
                             f"got {query_tile!r}, {query_chunk}")
        C, h, w = first_feat.shape
        K = first_labels.shape[0]
        dev = first_feat.device
        self.C, self.h, self.w, self.K = C, h, w, K
        self.topk, self.temperature, self.radius, self.n_context = topk, temperature, radius, n_context
        self.query_chunk = query_chunk
        self.device = dev
        self.t = 0  # index of the last frame whose labels are known
        # Long-term memory: frame 0, keys [C, h*w] and labels [h*w, K].
        self.key0 = first_feat.float().reshape(C, h * w).contiguous()
        self.lab0 = first_labels.to(dev, torch.float32).reshape(K, h * w).t().contiguous()
        yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        self.grid_y, self.grid_x = yy.reshape(-1), xx.reshape(-1)

        # Tiling of the query grid.
        Bh, Bw = min(tiles[0], h), min(tiles[1], w)
        P = math.ceil(radius) - 1  # largest integer offset d with d < radius
        R = Bh + 2 * P
        nty, ntx = math.ceil(h / Bh), math.ceil(w / Bw)
        self.Bh, self.Bw, self.P, self.nty, self.ntx = Bh, Bw, P, nty, ntx
        Hpad, Wpad = nty * Bh + 2 * P, ntx * Bw + 2 * P
        # Ring buffer [rows, cols, slot, C] (and labels [rows, cols, slot, K]), zero-padded by P:
        # one region row's keys over all slots are one contiguous [cols * slots, C] block.
        n = n_context
        self.ring_key = torch.zeros(Hpad, Wpad, n, C, device=dev)
        self.ring_lab = torch.zeros(Hpad, Wpad, n, K, device=dev)
        self.n_filled = 0
        self.next_slot = 0
        # Region row a (0 <= a < R) is d = max(0, P - a, a - P - Bh + 1) rows from the tile; only
        # its columns within the radius of some query of the tile are scored: P - wd ... P + Bw - 1
        # + wd, wd the largest integer with d^2 + wd^2 < radius^2 (the disc-tight region).
        # Groups: one per scored region cell, holding its scores over all slots, row by row.
        r2 = radius * radius
        self.region_rows = []  # (row, width, first column, first group)
        g = 0
        for a in range(R):
            d = max(0, P - a, a - P - Bh + 1)
            wd = 0
            while d * d + (wd + 1) ** 2 < r2:
                wd += 1
            self.region_rows.append((a, Bw + 2 * wd, P - wd, g))
            g += Bw + 2 * wd
        self.n_groups = g
        width = torch.tensor([W for _, W, _, _ in self.region_rows], device=dev)
        row_start = torch.tensor([g0 for _, _, _, g0 in self.region_rows], device=dev).repeat_interleave(width)
        gcol = torch.arange(g, device=dev) - row_start  # cell's place in its row
        ga = torch.arange(R, device=dev).repeat_interleave(width)
        gb = torch.tensor([c0 for _, _, c0, _ in self.region_rows], device=dev).repeat_interleave(width) + gcol
        # Tiles of one tile row are scored together, at most this many at a time (bounds the scores).
        self.tiles_per_batch = T = min(ntx, 16)
        # Scores of a batch of tiles: row a is a [T, W_a, S, Bh*Bw] block; cell g's scores for
        # tile t start at (group_offset[g] + t * group_width[g]) * S * Bh*Bw.
        self.group_width = width.repeat_interleave(width)
        self.group_offset = T * row_start + gcol
        # in_radius[g, q]: group g's cell is within the radius of the tile's query q.
        qa = torch.arange(Bh, device=dev).repeat_interleave(Bw)
        qb = torch.arange(Bw, device=dev).repeat(Bh)
        dy = ga.view(-1, 1) - (qa + P).view(1, Bh * Bw)
        dx = gb.view(-1, 1) - (qb + P).view(1, Bh * Bw)
        in_radius = (dy * dy + dx * dx) < r2  # [n_groups, Bh*Bw]
        valid = torch.zeros(Hpad, Wpad, dtype=torch.bool, device=dev)
        valid[P:P + h, P:P + w] = True
        # Per tile: its cells' padded-grid indices [nty, ntx, n_groups], and which (cell, query)
        # pairs are out of the radius or off the image [nty, ntx, n_groups, Bh*Bw].
        origin = (torch.arange(nty, device=dev) * Bh * Wpad).view(nty, 1, 1) \
            + (torch.arange(ntx, device=dev) * Bw).view(1, ntx, 1)
        self.tile_cells = origin + (ga * Wpad + gb).view(1, 1, -1)
        self.tile_blocked = ~(in_radius & valid.reshape(-1)[self.tile_cells].unsqueeze(-1))
        self._scratch_set: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def step(self, feat: torch.Tensor) -> torch.Tensor:
        """Propagate labels to the next frame and add it to the context.

        Args:
            feat: the next frame's features ``[C, h, w]``, L2-normalised over C.

        Returns:
            Soft labels ``[K, h, w]`` (float32, on the engine's device).

        Raises:
            ValueError: ``feat`` has the wrong shape.
        """
        labels = self.predict(feat)
        self.push(feat, labels)
        return labels

    @torch.no_grad()
    def predict(self, feat: torch.Tensor) -> torch.Tensor:
        """Soft labels ``[K, h, w]`` of the next frame from ``feat`` ``[C, h, w]``, without adding
        it to the context (follow with :meth:`push`). :meth:`step` is ``predict`` + ``push``.

        Raises:
            ValueError: ``feat`` has the wrong shape.
        """
        self._check_feat(feat)
        return self._predict(feat.to(self.device, torch.float32), self.t + 1)

    @torch.no_grad()
    def push(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the next frame to the short-term context with the given soft labels ``[K, h, w]``
        (e.g. labels merged over several references, or corrected by a new object's mask).

        Raises:
            ValueError: ``feat`` or ``labels`` has the wrong shape.
        """
        self._check_feat(feat)
        if tuple(labels.shape) != (self.K, self.h, self.w):
            raise ValueError(f"expected labels of shape {(self.K, self.h, self.w)}, got {tuple(labels.shape)}")
        self._push(feat.to(self.device, torch.float32), labels.to(self.device, torch.float32))
        self.t += 1

    def _check_feat(self, feat: torch.Tensor) -> None:
        if tuple(feat.shape) != (self.C, self.h, self.w):
            raise ValueError(f"expected features of shape {(self.C, self.h, self.w)}, got {tuple(feat.shape)}")

    # ----------------------------------------------------------------- helpers
    def _push(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        if self.n_context == 0:
            return
        P, h, w, s = self.P, self.h, self.w, self.next_slot
        self.ring_key[P:P + h, P:P + w, s] = feat.permute(1, 2, 0)
        self.ring_lab[P:P + h, P:P + w, s] = labels.permute(1, 2, 0)
        self.next_slot = (s + 1) % self.n_context
        self.n_filled = min(self.n_filled + 1, self.n_context)

    def _predict(self, feat: torch.Tensor, t: int) -> torch.Tensor:
        C, h, w, K, k = self.C, self.h, self.w, self.K, self.topk
        hw = h * w
        q = feat.reshape(C, hw)
        # Long-term frame 0: dense scores, top-k distinct candidates per query.
        kg = min(k, hw)
        gval = torch.empty(hw, kg, device=self.device)
        gidx = torch.empty(hw, kg, dtype=torch.int64, device=self.device)
        for s in range(0, hw, self.query_chunk):
            sl = slice(s, min(s + self.query_chunk, hw))
            gval[sl], gidx[sl] = (q[:, sl].t() @ self.key0).topk(kg, dim=1)
        # Frame 0 also stands m0 times among the short-term entries (tau <= 0), within the radius.
        m0 = max(0, self.n_context - t + 1)
        gmult = torch.ones_like(gidx)
        if m0 > 0:
            dy = self.grid_y[gidx] - self.grid_y.unsqueeze(1)
            dx = self.grid_x[gidx] - self.grid_x.unsqueeze(1)
            gmult += m0 * ((dy * dy + dx * dx) < self.radius * self.radius).to(torch.int64)
        val, mult, lab = [gval], [gmult], [self.lab0[gidx]]
        if self.n_filled > 0:
            lval, lflat = _local_topk(self, feat)
            val.append(lval)
            mult.append(torch.isfinite(lval).to(torch.int64))
            lab.append(self.ring_lab.view(-1, K)[lflat])
        out = self._combine(torch.cat(val, 1), torch.cat(mult, 1), torch.cat(lab, 1))  # [hw, K]
        return out.t().reshape(K, h, w)

    def _scratch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scratch buffers for a batch of ``T = tiles_per_batch`` tiles (allocated once): flat
        scores ``[T * n_groups * n_context * Bh*Bw + 1]`` ending with a -inf sentinel, and cell
        maxima ``[T, n_groups (padded for the top-k), Bh*Bw]`` with -inf padding rows."""
        if self._scratch_set is None:
            BB, G, T = self.Bh * self.Bw, self.n_groups, self.tiles_per_batch
            flat = torch.empty(T * G * max(self.n_context, 1) * BB + 1, device=self.device)
            flat[-1] = float("-inf")
            gmax = torch.full((T, _topk_len(G, min(self.topk, G), self.device), BB), float("-inf"),
                              device=self.device)
            self._scratch_set = (flat, gmax)
        return self._scratch_set

    def _combine(self, val: torch.Tensor, mult: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """Top-k with multiplicities, softmax over the top-k, weighted label sum.

        val, mult: ``[Q, n]`` distinct candidates' scores and multiplicities; lab: ``[Q, n, K]``.
        The top-k of the expanded list (each candidate repeated ``mult`` times) is made of the
        first candidates in descending score order, the last one possibly cut short. Returns
        ``[Q, K]``.
        """
        order = val.argsort(dim=-1, descending=True)
        val = torch.gather(val, -1, order)
        mult = torch.gather(mult, -1, order)
        before = mult.cumsum(-1) - mult
        eff = torch.minimum(mult, (self.topk - before).clamp(min=0)).to(val.dtype)
        wgt = eff * torch.exp((val - val[..., :1]) / self.temperature).nan_to_num(0.0)
        wgt = wgt / wgt.sum(-1, keepdim=True)
        lab = torch.gather(lab, -2, order.unsqueeze(-1).expand_as(lab))
        return (wgt.unsqueeze(-1) * lab).sum(-2)


def _topk_len(n: int, k: int, device: torch.device) -> int:
    """Row length to give ``torch.topk``: on CPU, rows of ``32k <= n < 64k`` values are padded to
    ``64k`` (with -inf), the length from which torch's CPU top-k uses a heap (partial sort)
    instead of selection, measured faster here (one thread, 64 rows: 808 values 619 us, padded
    to 960: 364 us)."""
    return 64 * k if device.type == "cpu" and 32 * k <= n < 64 * k else n


def _local_topk(prop: LabelPropagator, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the short-term local windows of ``feat`` ``[C, h, w]``: ``([h*w, k'] scores,
    [h*w, k'] flat ring indices)``, ``k' = min(k, candidates)``, -inf where a query has fewer.

    The tiles of a tile row are scored together (at most ``tiles_per_batch``), one batched
    product per region row (batched over the tiles): scores ``[tiles, n_groups, S, Bh*Bw]`` for
    the ``n_groups`` region cells over the ``S`` filled slots. Each cell's maximum over the slots
    is kept and the top-k taken in two exact stages: first the ``k`` cells with the highest maxima
    within the radius, then the top-k of those cells' ``k * S`` scores. A cell left out has ``k``
    chosen cells whose maxima, each a real candidate, are at least as high as any of its scores,
    so the result is the top-k over all candidates. The radius mask is constant over the slots,
    so it is applied to the cell maxima only.
    """
    C, h, w, Bh, Bw, k = prop.C, prop.h, prop.w, prop.Bh, prop.Bw, prop.topk
    n, S, G, T, dev = prop.n_context, prop.n_filled, prop.n_groups, prop.tiles_per_batch, prop.device
    BB = Bh * Bw
    qpad = feat.new_zeros(C, prop.nty * Bh, prop.ntx * Bw)
    qpad[:, :h, :w] = feat
    # [nty, ntx, C, Bh*Bw]: each tile's queries as columns.
    qtiles = qpad.view(C, prop.nty, Bh, prop.ntx, Bw).permute(1, 3, 0, 2, 4).reshape(prop.nty, prop.ntx, C, BB)
    kg = min(k, G)
    L = kg * S  # second-stage candidates per query
    kl = min(k, L)
    vals = feat.new_empty(prop.nty * Bh, prop.ntx * Bw, kl)
    idxs = torch.empty(prop.nty * Bh, prop.ntx * Bw, kl, dtype=torch.int64, device=dev)
    flat, gmax = prop._scratch()
    sentinel = flat.numel() - 1  # holds -inf
    # Score (tile t, cell g, slot s, query q) is at gbase[g] + t * tstride[g] + s * B*B + q.
    gbase = prop.group_offset * (S * BB)
    tstride = prop.group_width * (S * BB)
    offs = torch.arange(BB, device=dev).view(BB, 1, 1) + torch.arange(S, device=dev).view(1, 1, S) * BB
    # Second-stage candidate indices; columns past kg * S point to the sentinel.
    cand_idx = torch.full((T, BB, _topk_len(L, kl, dev)), sentinel, dtype=torch.int64, device=dev)
    tile_no = torch.arange(T, device=dev).view(T, 1, 1)
    st = prop.ring_key.stride()
    for ty in range(prop.nty):
        y0 = ty * Bh  # padded row of the region origins
        for t0 in range(0, prop.ntx, T):
            nt = min(T, prop.ntx - t0)
            qt = qtiles[ty, t0:t0 + nt]  # [nt, C, B*B]
            for a, W, c0, g in prop.region_rows:
                base = (y0 + a) * st[0] + (t0 * Bw + c0) * st[1]
                out = flat[T * S * BB * g:T * S * BB * g + nt * W * S * BB].view(nt, W * S, BB)
                if S == n:  # a row's keys over all slots: one contiguous [W * n, C] block per tile
                    keys = prop.ring_key.as_strided((nt, W * n, C), (Bw * st[1], st[2], 1), base)
                    torch.bmm(keys, qt, out=out)
                else:
                    for t in range(nt):
                        keys = prop.ring_key.as_strided((W, S, C), (st[1], st[2], 1), base + t * Bw * st[1])
                        torch.bmm(keys, qt[t].expand(W, C, BB), out=out[t].view(W, S, BB))
                torch.amax(out.view(nt, W, S, BB), dim=2, out=gmax[:nt, g:g + W])
            gm = gmax[:nt]
            gm[:, :G].masked_fill_(prop.tile_blocked[ty, t0:t0 + nt], float("-inf"))
            gv, gi = gm.topk(kg, dim=1)  # [nt, kg, B*B] best cells per query
            gi = gi.transpose(1, 2).clamp_(max=G - 1)  # [nt, B*B, kg]; rows past G are -inf padding
            idx = cand_idx[:nt, :, :L].view(nt, BB, kg, S)
            torch.add(offs, (gbase[gi] + tile_no[:nt] * tstride[gi]).unsqueeze(-1), out=idx)
            idx.masked_fill_(torch.isneginf(gv).transpose(1, 2).unsqueeze(-1), sentinel)
            v, pos = flat[cand_idx[:nt]].topk(kl, dim=2)  # [nt, B*B, kl]
            g_best = gi.gather(2, (pos // S).clamp_(max=kg - 1))
            cell = prop.tile_cells[ty, t0:t0 + nt].gather(1, g_best.view(nt, -1)).view(nt, BB, kl)
            x0, x1 = t0 * Bw, (t0 + nt) * Bw
            vals[y0:y0 + Bh, x0:x1] = v.view(nt, Bh, Bw, kl).transpose(0, 1).reshape(Bh, nt * Bw, kl)
            idxs[y0:y0 + Bh, x0:x1] = (cell * n + pos % S).view(nt, Bh, Bw, kl).transpose(0, 1).reshape(Bh, nt * Bw, kl)
    return vals[:h, :w].reshape(h * w, kl), idxs[:h, :w].reshape(h * w, kl)


@torch.no_grad()
def propagate(feats: torch.Tensor, first_labels: torch.Tensor, *, topk: int = 15,
              temperature: float = 0.1, radius: float = 12, n_context: int = 50,
              **engine_kwargs) -> torch.Tensor:
    """Propagate the first frame's soft labels through a whole video (CRW/HVC protocol).

    Args:
        feats: ``[T, C, h, w]`` frame features, L2-normalised over C.
        first_labels: ``[K, h, w]`` soft labels of frame 0 (channel 0 = background).
        topk, temperature, radius, n_context: see :class:`LabelPropagator`.
        **engine_kwargs: speed/memory knobs of :class:`LabelPropagator`.

    Returns:
        ``[T, K, h, w]`` soft labels; frame 0 is ``first_labels`` unchanged.

    Raises:
        ValueError: shapes disagree or a hyperparameter is out of range.
    """
    if feats.ndim != 4:
        raise ValueError(f"feats must be [T, C, h, w], got shape {tuple(feats.shape)}")
    prop = LabelPropagator(feats[0], first_labels, topk=topk, temperature=temperature,
                           radius=radius, n_context=n_context, **engine_kwargs)
    out = torch.empty(feats.shape[0], *first_labels.shape, device=prop.device)
    out[0] = first_labels
    for t in range(1, feats.shape[0]):
        out[t] = prop.step(feats[t])
    return out
