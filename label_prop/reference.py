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
    dev = feats.device
    keys = feats.float().reshape(T, C, hw)
    labels = torch.zeros(T, hw, K, device=dev)
    labels[0] = first_labels.float().reshape(K, hw).t()
    yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    last = T if frames is None else min(T, frames)
    for t in range(1, last):
        entries = [0] + [max(tau, 0) for tau in range(t - n_context, t)]
        ctx_keys = torch.cat([keys[e] for e in entries], dim=1)  # [C, E*hw]
        ctx_lab = torch.cat([labels[e] for e in entries], dim=0)  # [E*hw, K]
        E = len(entries)
        q = keys[t].t()  # [hw, C]
        for s in range(0, hw, query_chunk):
            qs = slice(s, min(s + query_chunk, hw))
            aff = (q[qs] @ ctx_keys).view(-1, E, hw)
            far = ((yy[qs, None] - yy[None]) ** 2 + (xx[qs, None] - xx[None]) ** 2) >= radius * radius
            aff[:, 1:].masked_fill_(far.unsqueeze(1), -1e10)
            val, idx = aff.view(aff.shape[0], E * hw).topk(min(topk, E * hw), dim=1)
            wgt = torch.softmax(val / temperature, dim=1)
            labels[t, qs] = (wgt.unsqueeze(-1) * ctx_lab[idx]).sum(1)
    return labels.view(T, h, w, K).permute(0, 3, 1, 2).contiguous()
