"""Dense reference implementation of the propagation protocol, for tests and benchmarks.

This is the public reference's computation (CRW ``labelprop/crw.py``, used by HVC; see
HVC_METHOD.md section 5 and section 7 "Inefficient"): the affinity of each query against *every*
position of all ``n_context + 1`` context entries (frame 0 copies stacked as real copies), the
short-term entries masked with ``-1e10`` beyond the radius afterwards, then top-k, softmax and
the weighted label sum. It is slow and memory-hungry by design; use
:func:`label_prop.engine.propagate` for real work.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def propagate_dense(feats: torch.Tensor, first_labels: torch.Tensor, *, topk: int = 15,
                    temperature: float = 0.1, radius: float = 12, n_context: int = 50,
                    query_chunk: int = 256, frames: int | None = None) -> torch.Tensor:
    """Dense label propagation, same protocol and arguments as :func:`label_prop.engine.propagate`.

    Args:
        feats: ``[T, C, h, w]`` features, L2-normalised over C.
        first_labels: ``[K, h, w]`` soft labels of frame 0.
        query_chunk: queries per affinity chunk (the reference uses 100).
        frames: stop after this many frames (default all ``T``); the rest of the output is 0.

    Returns:
        ``[T, K, h, w]`` soft labels, frame 0 = ``first_labels``.
    """
    T, C, h, w = feats.shape
    K = first_labels.shape[0]
    hw = h * w
    keys = feats.float().reshape(T, C, hw)
    labels = torch.zeros(T, hw, K, device=feats.device)
    labels[0] = first_labels.float().reshape(K, hw).t()
    last = T if frames is None else min(T, frames)
    for t in range(1, last):
        entries = [0] + [max(tau, 0) for tau in range(t - n_context, t)]
        labels[t] = dense_frame(keys[t], [keys[e] for e in entries], [labels[e] for e in entries], (h, w),
                                topk=topk, temperature=temperature, radius=radius, query_chunk=query_chunk)
    return labels.view(T, h, w, K).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def dense_frame(query: torch.Tensor, ctx_keys: list[torch.Tensor], ctx_labels: list[torch.Tensor],
                grid: tuple[int, int], *, topk: int = 15, temperature: float = 0.1, radius: float = 12,
                query_chunk: int = 256) -> torch.Tensor:
    """One frame of the dense protocol: entry 0 global, entries 1.. masked beyond ``radius``.

    Args:
        query: ``[C, h*w]`` features of the frame to label.
        ctx_keys: ``E`` tensors ``[C, h*w]``, the context entries (entry 0 = long-term frame).
        ctx_labels: ``E`` tensors ``[h*w, K]``, their soft labels.
        grid: ``(h, w)``.

    Returns:
        ``[h*w, K]`` soft labels.
    """
    h, w = grid
    hw = h * w
    dev = query.device
    yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    keys = torch.cat(ctx_keys, dim=1)  # [C, E*hw]
    lab = torch.cat(ctx_labels, dim=0)  # [E*hw, K]
    E = len(ctx_keys)
    q = query.t()
    out = torch.empty(hw, lab.shape[1], device=dev)
    for s in range(0, hw, query_chunk):
        qs = slice(s, min(s + query_chunk, hw))
        aff = (q[qs] @ keys).view(-1, E, hw)
        far = ((yy[qs, None] - yy[None]) ** 2 + (xx[qs, None] - xx[None]) ** 2) >= radius * radius
        aff[:, 1:].masked_fill_(far.unsqueeze(1), -1e10)
        val, idx = aff.view(aff.shape[0], E * hw).topk(min(topk, E * hw), dim=1)
        wgt = torch.softmax(val / temperature, dim=1)
        out[qs] = (wgt.unsqueeze(-1) * lab[idx]).sum(1)
    return out
