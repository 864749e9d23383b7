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
are computed (tiles of queries against their key regions, as batched matrix products), the
long-term frame stays dense, and the duplicate copies of frame 0 enter the top-k by
*multiplicity* instead of as copies, which gives the same result as the dense computation (a
candidate repeated m times takes up to m of the top-k slots, each with the same weight).
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

    How the short-term part is computed: the query grid is cut into ``B x B`` tiles; the keys a
    tile can reach lie in an ``R x R`` region, ``R = B + 2P``, ``P = ceil(radius) - 1``. The
    ring buffer is laid out ``[rows, slot, cols, C]`` so that a tile's region over all filled
    slots is a uniform-stride batch of ``[R, C]`` key blocks: one batched matrix product per
    tile, with no copy, then the radius mask and the top-k. Frame 0 is scored densely once
    per frame; its copies among the short-term entries count as multiplicities in the top-k.

    Args:
        first_feat: frame 0 features ``[C, h, w]``, L2-normalised over C (cosine affinity).
        first_labels: frame 0 soft labels ``[K, h, w]`` (channel 0 = background; channels
            should sum to 1 at each position; not enforced).
        topk: number of nearest candidates per query (CRW/HVC: 15).
        temperature: softmax temperature over the top-k dot products (0.1).
        radius: short-term spatial limit in grid cells; a key is kept when its Euclidean grid
            distance to the query is ``< radius`` (12 cells = 96 pixels at stride 8).
        n_context: number of short-term context entries (50).
        query_tile: side ``B`` of the square query tiles (grid cells); a speed knob only, the
            result does not depend on it.
        query_chunk: queries per chunk of the dense frame-0 affinity (bounds its memory:
            ``query_chunk * h * w * 4`` bytes).

    Memory: the ring buffer holds ``n_context * (h + 2P + B) * (w + 2P + B) * (C + K)`` float32
    values (about 0.6 GB for 480p, C = 256, K = 3, n_context = 50), plus per-tile scores of
    ``B*B * R*R * n_context`` floats. All tensors live on ``first_feat.device`` (CUDA when the
    caller put the features there), in float32.

    Raises:
        ValueError: shapes disagree or a hyperparameter is out of range.
    """

    def __init__(self, first_feat: torch.Tensor, first_labels: torch.Tensor, *, topk: int = 15,
                 temperature: float = 0.1, radius: float = 12, n_context: int = 50,
                 query_tile: int = 8, query_chunk: int = 1024):
        _check_inputs(first_feat, first_labels, topk, temperature, radius, n_context)
        if query_tile < 1 or query_chunk < 1:
            raise ValueError("query_tile and query_chunk must be >= 1")
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
        B = max(1, min(query_tile, max(h, w)))
        P = math.ceil(radius) - 1  # largest integer offset d with d < radius
        R = B + 2 * P
        nty, ntx = math.ceil(h / B), math.ceil(w / B)
        self.B, self.P, self.R, self.nty, self.ntx = B, P, R, nty, ntx
        self.Hpad, self.Wpad = nty * B + 2 * P, ntx * B + 2 * P
        # Ring buffer [rows, slot, cols, C] (and labels [rows, slot, cols, K]), zero-padded by P.
        n = n_context
        self.ring_key = torch.zeros(self.Hpad, n, self.Wpad, C, device=dev)
        self.ring_lab = torch.zeros(self.Hpad, n, self.Wpad, K, device=dev)
        self.n_filled = 0
        self.next_slot = 0
        # allowed[a, b, q]: key (a, b) of a region is within the radius of the tile's query q.
        ra = torch.arange(R, device=dev)
        qa = torch.arange(B, device=dev).repeat_interleave(B)
        qb = torch.arange(B, device=dev).repeat(B)
        dy = ra.view(R, 1, 1) - (qa + P).view(1, 1, B * B)
        dx = ra.view(1, R, 1) - (qb + P).view(1, 1, B * B)
        self.in_radius = (dy * dy + dx * dx) < radius * radius  # [R, R, B*B]
        valid = torch.zeros(self.Hpad, self.Wpad, dtype=torch.bool, device=dev)
        valid[P:P + h, P:P + w] = True
        self.pad_valid = valid

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
        self.ring_key[P:P + h, s, P:P + w] = feat.permute(1, 2, 0)
        self.ring_lab[P:P + h, s, P:P + w] = labels.permute(1, 2, 0)
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
            lval, lflat = self._local_topk(feat)
            val.append(lval)
            mult.append(torch.isfinite(lval).to(torch.int64))
            lab.append(self.ring_lab.view(-1, K)[lflat])
        out = self._combine(torch.cat(val, 1), torch.cat(mult, 1), torch.cat(lab, 1))  # [hw, K]
        return out.t().reshape(K, h, w)

    def _local_topk(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k over the short-term local windows: ([h*w, k] scores, [h*w, k] flat ring indices)."""
        C, h, w, B, R, k = self.C, self.h, self.w, self.B, self.R, self.topk
        n, S, Wpad = self.n_context, self.n_filled, self.Wpad
        qpad = feat.new_zeros(C, self.nty * B, self.ntx * B)
        qpad[:, :h, :w] = feat
        # [nty, ntx, C, B*B]: each tile's queries as columns.
        qtiles = qpad.view(C, self.nty, B, self.ntx, B).permute(1, 3, 0, 2, 4).reshape(self.nty, self.ntx, C, B * B)
        kl = min(k, R * S * R)
        vals = feat.new_empty(self.nty * B, self.ntx * B, kl)
        idxs = torch.empty(self.nty * B, self.ntx * B, kl, dtype=torch.int64, device=self.device)
        st = self.ring_key.stride()
        # Flat ring index of region cell (a, s, b) relative to the region origin.
        rel = ((torch.arange(R, device=self.device).view(R, 1, 1) * n
                + torch.arange(S, device=self.device).view(1, S, 1)) * Wpad
               + torch.arange(R, device=self.device).view(1, 1, R)).reshape(-1)
        scores = feat.new_empty(R, S, R, B * B)
        slot_scores = feat.new_empty(R, R, B * B)
        for ty in range(self.nty):
            for tx in range(self.ntx):
                y0, x0 = ty * B, tx * B  # padded coordinates of the region origin
                qt = qtiles[ty, tx]
                base = y0 * st[0] + x0 * st[2]
                if S == n:  # batch index a * n + s has the uniform stride Wpad * C
                    keys = self.ring_key.as_strided((R * n, R, C), (st[1], st[2], 1), base)
                    torch.bmm(keys, qt.expand(R * n, C, B * B), out=scores.view(R * n, R, B * B))
                elif S <= R:  # few filled slots: one product per slot, batched over region rows
                    for s in range(S):
                        keys = self.ring_key.as_strided((R, R, C), (st[0], st[2], 1), base + s * st[1])
                        torch.bmm(keys, qt.expand(R, C, B * B), out=slot_scores)
                        scores[:, s] = slot_scores
                else:  # one product per region row, batched over the filled slots
                    for a in range(R):
                        keys = self.ring_key.as_strided((S, R, C), (st[1], st[2], 1), base + a * st[0])
                        torch.bmm(keys, qt.expand(S, C, B * B), out=scores[a])
                allowed = self.in_radius & self.pad_valid[y0:y0 + R, x0:x0 + R].unsqueeze(-1)
                scores.masked_fill_(~allowed.unsqueeze(1), float("-inf"))
                v, i = scores.view(-1, B * B).topk(kl, dim=0)  # [kl, B*B]
                vals[y0:y0 + B, x0:x0 + B] = v.t().reshape(B, B, kl)
                idxs[y0:y0 + B, x0:x0 + B] = (rel[i] + (y0 * n * Wpad + x0)).t().reshape(B, B, kl)
        return vals[:h, :w].reshape(h * w, kl), idxs[:h, :w].reshape(h * w, kl)

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
