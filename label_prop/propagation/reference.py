"""The propagation protocol, stated densely: the specification the engine is tested against.

This is the public code's computation (CRW's ``labelprop/crw.py``, used by DUL and HVC;
docs/method.md, "Label propagation"), written to be read rather than run on long videos. To label
frame ``t`` (``t >= 1``) from features ``[C, h*w]`` and soft labels ``[h*w, K]``:

1. the context entries are frame 0 and, for ``tau = t - n_context .. t - 1``, frame
   ``max(tau, 0)`` (:func:`context_entries`; copies of frame 0 stand in for ``tau < 0``);
2. each query scores *every* position of every entry by dot product;
3. positions of the short-term entries (all but the first) at grid distance ``>= radius`` from
   the query get ``-1e10`` (the long-term frame 0 has no spatial limit);
4. the ``topk`` best scores over all entries and positions are kept, weighted by
   ``softmax(score / temperature)``, and the soft label is the weighted sum of their labels;
5. frame ``t``'s predicted soft labels become its context labels.

Time and memory grow with ``(n_context + 1) * (h*w)^2``; :func:`label_prop.propagation.engine.propagate`
computes the same result with local windows.
"""
from __future__ import annotations

import torch

from label_prop.config import PropagationConfig


def context_entries(t: int, n_context: int) -> list[int]:
    """Frame indices of the context of frame ``t``: ``[0, max(t - n_context, 0), ..., t - 1]``
    (``n_context + 1`` entries; the first is the long-term frame)."""
    return [0] + [max(tau, 0) for tau in range(t - n_context, t)]


@torch.no_grad()
def propagate_dense(feats: torch.Tensor, first_labels: torch.Tensor, config: PropagationConfig = PropagationConfig(),
                    *, query_chunk: int = 256, frames: int | None = None) -> torch.Tensor:
    """Dense label propagation, same protocol and result as :func:`label_prop.propagation.engine.propagate`.

    Args:
        feats: ``[T, C, h, w]`` features, L2-normalised over C.
        first_labels: ``[K, h, w]`` soft labels of frame 0.
        config: the protocol (topk, temperature, radius, n_context).
        query_chunk: queries per affinity chunk (the public code uses 100).
        frames: stop after this many frames (default all ``T``); the rest of the output is 0.

    Returns:
        ``[T, K, h, w]`` soft labels, frame 0 = ``first_labels``.
    """
    T, C, h, w = feats.shape
    K = first_labels.shape[0]
    keys = feats.float().reshape(T, C, h * w)
    labels = torch.zeros(T, h * w, K, device=feats.device)
    labels[0] = first_labels.float().reshape(K, h * w).t()
    for t in range(1, T if frames is None else min(T, frames)):
        entries = context_entries(t, config.n_context)
        labels[t] = dense_frame(keys[t], [keys[e] for e in entries], [labels[e] for e in entries], (h, w), config,
                                query_chunk=query_chunk)
    return labels.view(T, h, w, K).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def dense_frame(query: torch.Tensor, ctx_keys: list[torch.Tensor], ctx_labels: list[torch.Tensor],
                grid: tuple[int, int], config: PropagationConfig = PropagationConfig(), *,
                query_chunk: int = 256) -> torch.Tensor:
    """One frame of the dense protocol (steps 2-4 of the module docstring).

    Args:
        query: ``[C, h*w]`` features of the frame to label.
        ctx_keys: ``E`` tensors ``[C, h*w]``, the context entries (entry 0 = long-term frame).
        ctx_labels: ``E`` tensors ``[h*w, K]``, their soft labels.
        grid: ``(h, w)``.
        config: the protocol (topk, temperature, radius).

    Returns:
        ``[h*w, K]`` soft labels.
    """
    val, idx = dense_frame_topk(query, ctx_keys, grid, config, query_chunk=query_chunk)
    wgt = torch.softmax(val / config.temperature, dim=1)
    lab = torch.cat(ctx_labels, dim=0)  # [E*hw, K]
    return (wgt.unsqueeze(-1) * lab[idx]).sum(1)


@torch.no_grad()
def dense_frame_topk(query: torch.Tensor, ctx_keys: list[torch.Tensor], grid: tuple[int, int],
                     config: PropagationConfig = PropagationConfig(), *,
                     query_chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-4 of the module docstring up to the top-k: each query's best scores and where they are.

    Args: as :func:`dense_frame` (without the labels).

    Returns:
        ``(val [h*w, k], idx [h*w, k])``: the ``k = min(topk, E*h*w)`` best dot products of each
        query (descending) and their indices into the concatenated context ``[E*h*w]`` (entry
        ``idx // (h*w)``, position ``idx % (h*w)``). The soft label's weights are
        ``softmax(val / temperature)``.
    """
    h, w = grid
    hw = h * w
    dev = query.device
    yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    keys = torch.cat(ctx_keys, dim=1)  # [C, E*hw]
    E = len(ctx_keys)
    q = query.t()
    k = min(config.topk, E * hw)
    vals = torch.empty(hw, k, device=dev)
    idxs = torch.empty(hw, k, dtype=torch.long, device=dev)
    for s in range(0, hw, query_chunk):
        qs = slice(s, min(s + query_chunk, hw))
        aff = (q[qs] @ keys).view(-1, E, hw)
        far = ((yy[qs, None] - yy[None]) ** 2 + (xx[qs, None] - xx[None]) ** 2) >= config.radius * config.radius
        aff[:, 1:].masked_fill_(far.unsqueeze(1), -1e10)
        vals[qs], idxs[qs] = aff.view(aff.shape[0], E * hw).topk(k, dim=1)
    return vals, idxs
