"""The HVC hybrid loss (docs/method.md, "Loss"; Pei et al., arXiv 2404.13505), sparse and dense formulations.

For a query view ``a`` and a key view ``b`` of the same frame (``N`` samples, an ``H x W``
feature grid each) with crop boxes ``[x1, y1, x2, y2]`` in the original image's normalised
coordinates:

* bin size ``w = (x2 - x1) / W``, ``h = (y2 - y1) / H``; cell centres
  ``c_ij = (x1 + (j + 0.5) w, y1 + (i + 0.5) h)``; ``diag = sqrt(w^2 + h^2)``;
* ``d_pq = ||c^a_p - c^b_q|| / max(diag_a, diag_b)``; positives ``M_pq = [d_pq < pos_radius]``;
* spatial term ``S = sum_pq M_pq <q_p, k_q> / (sum M + 1e-6)`` per sample;
* temporal term ``T = sum_pq M_pq <F_f,p, F_b,q> / (sum M + 1e-6)`` per sample;
* ``L(a, b) = -2 (w_s mean_N S + w_t mean_N T)`` with the term weights ``w_s = w_t = 1`` in the
  paper (``--spatial-weight`` / ``--temporal-weight`` of the trainer, for ablations); samples
  without positives contribute 0 but count in the mean. ``q`` (predictor output of ``a``), ``k``
  (target projection of ``b``), ``F_f`` and ``F_b`` (flow head outputs) are expected
  L2-normalised over channels; ``k`` is detached.

The model sums ``L(1, 2) + L(2, 1)`` (:class:`hvc.model.HVCModel`).

:func:`hybrid_loss` never builds the ``N x HW x HW`` tensors of the reference (model.py:154-171,
about 0.5 GB each at N = 128 for ~48 positives per sample). Positives follow from the crop
geometry: ``|dx| < R`` and ``|dy| < R`` (``R = pos_radius * max_diag``) are necessary, and for
a query column ``j`` the key columns satisfying the first lie in an index range computable
from the boxes (likewise rows). The candidate pairs are the per-sample Cartesian products of
these row and column ranges (enumerated with vectorised index arithmetic, no Python loop over
samples); the exact test of the dense formula, evaluated with the same floating-point
operations, keeps the positives; only their features are gathered. Memory is proportional to
the number of candidates (about 4 HW per sample for typical crops), not to ``(HW)^2``.

:func:`dense_hybrid_loss` is the direct transcription of the dense formula, kept as the
reference for tests and benchmarks.

Precision: both formulations accumulate in float32 (float64 for float64 inputs) and run with
autocast disabled, so under mixed precision (CUDA float16/bfloat16, CPU bfloat16) the dot
products, the per-sample sums over up to ~50 k positive pairs (which would lose digits, or
overflow past 65504, in float16) and the ``1e-6`` guard of the denominators are float32; half
precision inputs (the network's activations under autocast) are upcast first.
:func:`normalized` likewise upcasts before the L2 norm, whose squares underflow in float16 for
feature magnitudes below ~2e-4 (float16's smallest subnormal is ~6e-8).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

import torch
import torch.nn.functional as F

from .config import DEFAULT_POS_RADIUS

_EPS = 1e-6


def _check_inputs(q, k, flow_f, flow_b, coord_q, coord_k) -> None:
    """Shape/consistency checks shared by both formulations (raises ValueError)."""
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [N, C, H, W] with equal shapes, got {tuple(q.shape)} "
                         f"and {tuple(k.shape)}")
    n, _, h, w = q.shape
    for name, f in (("flow_f", flow_f), ("flow_b", flow_b)):
        if f.dim() != 4 or f.shape[0] != n or f.shape[2:] != (h, w):
            raise ValueError(f"{name} must be [N, D, H, W] = [{n}, D, {h}, {w}], got {tuple(f.shape)}")
    if flow_f.shape != flow_b.shape:
        raise ValueError(f"flow_f and flow_b shapes differ: {tuple(flow_f.shape)} vs {tuple(flow_b.shape)}")
    for name, c in (("coord_q", coord_q), ("coord_k", coord_k)):
        if c.shape != (n, 4):
            raise ValueError(f"{name} must be [N, 4] = [{n}, 4] boxes [x1, y1, x2, y2], got {tuple(c.shape)}")
        if not torch.isfinite(c).all() or (c[:, 2] < c[:, 0]).any() or (c[:, 3] < c[:, 1]).any():
            raise ValueError(f"{name} holds a non-finite box or one with x2 < x1 or y2 < y1")


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype of the loss: float32, or float64 when the inputs are float64."""
    return torch.promote_types(x.dtype, torch.float32)


@contextmanager
def _full_precision(x: torch.Tensor) -> Iterator[None]:
    """Disable autocast on ``x``'s device type (CUDA/CPU mixed precision) inside the block."""
    if x.device.type in ("cuda", "cpu"):
        with torch.autocast(device_type=x.device.type, enabled=False):
            yield
    else:
        yield


def _centres(coord: torch.Tensor, h: int, w: int):
    """Cell centres and bin diagonals of ``[N, 4]`` boxes, exactly as the dense formula.

    Returns ``cx [N, W]``, ``cy [N, H]`` and ``diag [N]`` in normalised image coordinates.
    """
    xs = torch.arange(0.0, float(w), dtype=coord.dtype, device=coord.device)
    ys = torch.arange(0.0, float(h), dtype=coord.dtype, device=coord.device)
    bw = ((coord[:, 2] - coord[:, 0]) / w).view(-1, 1)
    bh = ((coord[:, 3] - coord[:, 1]) / h).view(-1, 1)
    cx = (xs.view(1, -1) + 0.5) * bw + coord[:, 0].view(-1, 1)
    cy = (ys.view(1, -1) + 0.5) * bh + coord[:, 1].view(-1, 1)
    diag = torch.sqrt(bw ** 2 + bh ** 2).view(-1)
    return cx, cy, diag


def _index_ranges(c_q: torch.Tensor, start_k: torch.Tensor, bin_k: torch.Tensor, radius: torch.Tensor, n: int):
    """For each query centre, the key indices ``t`` (of ``n``) with ``|c_q - c_k(t)| < radius``
    possibly true: ``lo [N, n_q]`` (inclusive) and ``count [N, n_q]`` (0 when none).

    Computed in float64 with a small margin, so the range is a superset of the exact set."""
    c = c_q.double()
    s = start_k.double().view(-1, 1)
    b = bin_k.double().view(-1, 1).clamp_min(1e-12)
    r = radius.double().view(-1, 1)
    margin = 1e-4 * torch.clamp(c.abs().amax(), min=1.0)
    lo = torch.ceil((c - r - margin - s) / b - 0.5).clamp(0, n)
    hi = torch.floor((c + r + margin - s) / b - 0.5).clamp(-1, n - 1)
    return lo.long(), (hi - lo + 1).clamp_min(0).long()


def _expand_ranges(lo: torch.Tensor, count: torch.Tensor):
    """Flatten ranges: for ``lo, count [N, n_q]`` return, per element of every range, the flat
    range id (``n * n_q + query``) and the key index ``lo + offset`` (both ``int64 [sum count]``)."""
    flat_cnt = count.reshape(-1)
    total = int(flat_cnt.sum())
    rid = torch.repeat_interleave(torch.arange(flat_cnt.numel(), device=lo.device), flat_cnt, output_size=total)
    starts = torch.cumsum(flat_cnt, 0) - flat_cnt
    offset = torch.arange(total, device=lo.device) - starts[rid]
    return rid, lo.reshape(-1)[rid] + offset


def positive_pairs(coord_q: torch.Tensor, coord_k: torch.Tensor, h: int, w: int,
                   pos_radius: float = DEFAULT_POS_RADIUS) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All positive pairs of the loss's mask (docs/method.md, "Loss"), without building it.

    Args:
        coord_q, coord_k: ``[N, 4]`` boxes ``[x1, y1, x2, y2]`` of the two views.
        h, w: feature grid size (cells).
        pos_radius: radius in units of the larger bin diagonal (default 0.1).

    Returns:
        ``(n, p, q)``: ``int64 [P]`` sample index, flat query cell ``i * w + j`` and flat key
        cell, sorted by sample. Exactly the nonzeros of :func:`dense_positive_mask`.
    """
    dev = coord_q.device
    cqx, cqy, dq = _centres(coord_q, h, w)
    ckx, cky, dk = _centres(coord_k, h, w)
    max_diag = torch.max(dq, dk)
    radius = pos_radius * max_diag
    bwk = (coord_k[:, 2] - coord_k[:, 0]) / w
    bhk = (coord_k[:, 3] - coord_k[:, 1]) / h
    # candidate key columns per (sample, query column) and key rows per (sample, query row)
    lo_x, cnt_x = _index_ranges(cqx, coord_k[:, 0], bwk, radius, w)
    lo_y, cnt_y = _index_ranges(cqy, coord_k[:, 1], bhk, radius, h)
    col_rid, col_k = _expand_ranges(lo_x, cnt_x)     # column pairs, grouped by sample
    row_rid, row_k = _expand_ranges(lo_y, cnt_y)     # row pairs, grouped by sample
    ncol = cnt_x.sum(1)                              # [N] column pairs per sample
    col_start = torch.cumsum(ncol, 0) - ncol
    # Cartesian product (per sample) of row pairs x column pairs
    row_n = torch.div(row_rid, h, rounding_mode="floor")
    reps = ncol[row_n]
    total = int(reps.sum())
    if total == 0:
        empty = torch.empty(0, dtype=torch.long, device=dev)
        return empty, empty, empty
    r_idx = torch.repeat_interleave(torch.arange(row_rid.numel(), device=dev), reps, output_size=total)
    off = torch.arange(total, device=dev) - (torch.cumsum(reps, 0) - reps)[r_idx]
    c_idx = col_start[row_n[r_idx]] + off
    n_idx = row_n[r_idx]
    iq, ik = row_rid[r_idx] - n_idx * h, row_k[r_idx]
    jq, jk = col_rid[c_idx] - n_idx * w, col_k[c_idx]
    # exact test, same arithmetic as the dense formula
    dist = torch.sqrt((cqx[n_idx, jq] - ckx[n_idx, jk]) ** 2 + (cqy[n_idx, iq] - cky[n_idx, ik]) ** 2) / max_diag[n_idx]
    keep = dist < pos_radius
    return n_idx[keep], (iq * w + jq)[keep], (ik * w + jk)[keep]


def dense_positive_mask(coord_q: torch.Tensor, coord_k: torch.Tensor, h: int, w: int,
                        pos_radius: float = DEFAULT_POS_RADIUS) -> torch.Tensor:
    """The loss's positive mask ``M`` as a dense float tensor ``[N, HW, HW]`` (reference model.py:120-161).

    Memory ``N * (HW)^2`` elements: for tests and benchmarks only.
    """
    cqx, cqy, dq = _centres(coord_q, h, w)
    ckx, cky, dk = _centres(coord_k, h, w)
    max_diag = torch.max(dq, dk).view(-1, 1, 1)
    nb = coord_q.shape[0]
    qx = cqx.view(nb, 1, w).expand(nb, h, w).reshape(nb, h * w, 1)
    qy = cqy.view(nb, h, 1).expand(nb, h, w).reshape(nb, h * w, 1)
    kx = ckx.view(nb, 1, w).expand(nb, h, w).reshape(nb, 1, h * w)
    ky = cky.view(nb, h, 1).expand(nb, h, w).reshape(nb, 1, h * w)
    dist = torch.sqrt((qx - kx) ** 2 + (qy - ky) ** 2) / max_diag
    return (dist < pos_radius).to(coord_q.dtype).detach()


def _stats(spatial, temporal, count) -> Dict[str, torch.Tensor]:
    return {"spatial": spatial.mean().detach(), "temporal": temporal.mean().detach(),
            "num_pos": count.float().mean().detach(), "no_pos_frac": (count == 0).float().mean().detach()}


def hybrid_loss(q: torch.Tensor, k: torch.Tensor, flow_f: torch.Tensor, flow_b: torch.Tensor,
                coord_q: torch.Tensor, coord_k: torch.Tensor, pos_radius: float = DEFAULT_POS_RADIUS,
                return_stats: bool = False, spatial_weight: float = 1.0, temporal_weight: float = 1.0):
    """One direction ``L(a, b)`` of the hybrid loss (docs/method.md, "Loss"), sparse.

    Args:
        q: ``[N, C, H, W]`` L2-normalised predictor output of view ``a`` (gets gradients).
        k: ``[N, C, H, W]`` L2-normalised target projection of view ``b`` (detached here).
        flow_f, flow_b: ``[N, 2, H, W]`` L2-normalised ``Flow(q, k)`` and ``Flow(k, q)``.
        coord_q, coord_k: ``[N, 4]`` crop boxes ``[x1, y1, x2, y2]`` of ``a`` and ``b`` in the
            original image's normalised coordinates.
        pos_radius: positive radius in units of the larger bin diagonal (0.1).
        return_stats: also return a dict of detached scalars ``spatial`` (mean_N S),
            ``temporal`` (mean_N T), ``num_pos`` (mean positives per sample), ``no_pos_frac``
            (unweighted).
        spatial_weight, temporal_weight: weights ``w_s``, ``w_t`` of the static (spatial) and
            dynamic (temporal) terms; the paper's loss has 1 and 1.

    Returns:
        The scalar loss ``-2 (w_s mean_N S + w_t mean_N T)`` (float32, or float64 for float64
        inputs, also under autocast; in [-4, 4] for unit weights), or
        ``(loss, stats)``. Equal to :func:`dense_hybrid_loss` up to float summation order.

    Raises:
        ValueError: inconsistent shapes, or a box with ``x2 < x1`` / ``y2 < y1``.
    """
    _check_inputs(q, k, flow_f, flow_b, coord_q, coord_k)
    nb, c, h, w = q.shape
    with _full_precision(q):
        n_idx, p_idx, k_idx = positive_pairs(coord_q, coord_k, h, w, pos_radius)
        dt = _acc_dtype(q)
        q3 = q.to(dt).flatten(2)                   # [N, C, HW]
        k3 = k.detach().to(dt).flatten(2)
        s_dot = (q3[n_idx, :, p_idx] * k3[n_idx, :, k_idx]).sum(1)                       # [P]
        t_dot = (flow_f.to(dt).flatten(2)[n_idx, :, p_idx] * flow_b.to(dt).flatten(2)[n_idx, :, k_idx]).sum(1)
        count = torch.bincount(n_idx, minlength=nb)
        denom = count.to(dt) + _EPS
        spatial = torch.zeros(nb, dtype=dt, device=q.device).index_add(0, n_idx, s_dot) / denom
        temporal = torch.zeros(nb, dtype=dt, device=q.device).index_add(0, n_idx, t_dot) / denom
        loss = -2.0 * (spatial_weight * spatial.mean() + temporal_weight * temporal.mean())
    return (loss, _stats(spatial, temporal, count)) if return_stats else loss


def dense_hybrid_loss(q: torch.Tensor, k: torch.Tensor, flow_f: torch.Tensor, flow_b: torch.Tensor,
                      coord_q: torch.Tensor, coord_k: torch.Tensor, pos_radius: float = DEFAULT_POS_RADIUS,
                      return_stats: bool = False, spatial_weight: float = 1.0, temporal_weight: float = 1.0):
    """Reference (dense) form of :func:`hybrid_loss`: builds ``N x HW x HW`` mask and logits.

    Same arguments, returns and errors as :func:`hybrid_loss`; a transcription of the public
    reference (models/model.py:120-171). Memory ``O(N (HW)^2)``: tests and benchmarks only.
    """
    _check_inputs(q, k, flow_f, flow_b, coord_q, coord_k)
    nb, c, h, w = q.shape
    with _full_precision(q):  # torch.bmm would otherwise run in float16/bfloat16 under autocast
        dt = _acc_dtype(q)
        mask = dense_positive_mask(coord_q, coord_k, h, w, pos_radius).to(dt)
        logit = torch.bmm(q.to(dt).reshape(nb, c, -1).transpose(1, 2), k.detach().to(dt).reshape(nb, c, -1))
        msum = mask.sum(-1).sum(-1)
        spatial = (logit * mask).sum(-1).sum(-1) / (msum + _EPS)
        d = flow_f.shape[1]
        tlogit = torch.bmm(flow_f.to(dt).reshape(nb, d, -1).transpose(1, 2), flow_b.to(dt).reshape(nb, d, -1))
        temporal = (tlogit * mask).sum(-1).sum(-1) / (msum + _EPS)
        loss = -2.0 * (spatial_weight * spatial.mean() + temporal_weight * temporal.mean())
    return (loss, _stats(spatial, temporal, msum.round().long())) if return_stats else loss


def normalized(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel channel L2 normalisation of ``[N, C, H, W]`` (docs/method.md, "Model"), computed in at least
    float32 with autocast disabled (float16/bfloat16 activations under AMP are upcast first, so
    neither the squares nor the ``1e-12`` floor of :func:`torch.nn.functional.normalize`
    underflow; float64 stays float64). Returns the same shape, unit norm over channels."""
    with _full_precision(x):
        return F.normalize(x.to(_acc_dtype(x)), dim=1)
