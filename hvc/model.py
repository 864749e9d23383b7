"""The HVC training model (docs/method.md, "Model"): online and EMA target encoders, projector,
predictor and flow head, with the hybrid loss of docs/method.md "Loss".

State-dict prefixes follow the reference (docs/method.md "Checkpoints and encoder files"): ``online_encoder.``, ``target_encoder.``,
``online_space_projector.``, ``target_space_projector.``, ``space_predictor.``, ``flow.``; the
encoders use plain torchvision ResNet-18 key names (``conv1.weight``, ``layer1.0.bn1.*``, ...).
Two buffers hold the EMA schedule, ``ema_step`` (k) and ``ema_total_steps`` (K), so a
checkpoint restores the momentum schedule (the reference does not save k: docs/method.md, "Differences from the public code").

No dummy forward pass is run to infer shapes (the reference's ``infer_dims`` pulls every BN's
running statistics towards a zero image: docs/method.md, "Differences from the public code"); channel counts are known analytically.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional

import torch
from torch import nn

from .backbone import ResNetStride8
from .config import DEFAULT_EMA_BASE, DEFAULT_POS_RADIUS
from .loss import dense_hybrid_loss, hybrid_loss, normalized



def ema_momentum(step: int, total_steps: int, base: float = DEFAULT_EMA_BASE) -> float:
    """Cosine EMA momentum ``m_k = 1 - (1 - m0) (cos(pi k / K) + 1) / 2`` (docs/method.md "Model").

    ``step`` (k) is clamped to ``[0, K]``, so m goes from ``m0`` at k = 0 to 1 at k = K and stays
    there (the reference's formula would decrease again after K).

    Raises:
        ValueError: ``total_steps`` < 1 or ``base`` outside [0, 1].
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"EMA base momentum must be in [0, 1], got {base}")
    k = min(max(int(step), 0), int(total_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


class ProjBlock(nn.Module):
    """Residual 1x1-conv head used as projector and predictor (docs/method.md "Model", reference ProjBlock).

    ``r = LeakyReLU(BN(conv1(x)))``, ``o = LeakyReLU(BN(conv2(r) + r))``, ``out = conv3(o)``;
    all convs 1x1 with bias; LeakyReLU slope 0.01. ``[N, in_dim, h, w] -> [N, out_dim, h, w]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, hidden_dim, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(hidden_dim)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(hidden_dim)
        self.conv3 = nn.Conv2d(hidden_dim, out_dim, 1, bias=True)
        self.relu = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim, h, w]`` -> ``[N, out_dim, h, w]`` (1x1 convolutions only)."""
        r = self.relu(self.bn1(self.conv1(x)))
        o = self.relu(self.bn2(self.conv2(r) + r))
        return self.conv3(o)


class FlowHead(nn.Module):
    """Pseudo-flow head (docs/method.md "Model", reference ``Flow``): 2-channel map from two feature maps.

    ``forward(q, k)``: ``q, k [N, C, h, w]`` -> ``[N, 2, h, w]`` =
    ``BN(conv1x1(ReLU(BN(conv1x1(cat(q, k))))))``, no final activation. The channel
    concatenation pairs the two maps at the same grid index (a different image location in each
    view, as the reference does).
    """

    def __init__(self, in_dim: int = 512, hidden_dim: int = 256, out_dim: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, hidden_dim, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(hidden_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(hidden_dim, out_dim, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(out_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Pseudo-flow ``[N, 2, h, w]`` from query and key features, each ``[N, C, h, w]`` (concatenated)."""
        x = torch.cat((q, k), dim=1)
        return self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))


class HVCModel(nn.Module):
    """Online/target networks and the symmetric hybrid loss (docs/method.md, "Model" and "Loss").

    Args:
        total_steps: K of the EMA schedule (steps per epoch x epochs).
        pos_radius: positive radius of the loss (0.1).
        ema_base: m0 (0.99).
        proj_dim, proj_hidden, pred_hidden: 256 / 256 / 256 (docs/method.md "Loss").
        loss_impl: ``"sparse"`` (:func:`hvc.loss.hybrid_loss`) or ``"dense"`` (the reference's
            formulation, for benchmarks).
        spatial_weight, temporal_weight: weights of the static (spatial) and dynamic (temporal)
            terms of the hybrid loss; 1 and 1 in the paper (other values are for ablations).
        zero_init_residual: start every BasicBlock's last BN gamma at 0 (docs/method.md "Model").

    Raises:
        ValueError: unknown ``loss_impl`` or ``total_steps`` < 1.
    """

    def __init__(self, total_steps: int, pos_radius: float = DEFAULT_POS_RADIUS, ema_base: float = DEFAULT_EMA_BASE,
                 proj_dim: int = 256, proj_hidden: int = 256, pred_hidden: int = 256, loss_impl: str = "sparse",
                 zero_init_residual: bool = True, spatial_weight: float = 1.0, temporal_weight: float = 1.0):
        super().__init__()
        if loss_impl not in ("sparse", "dense"):
            raise ValueError(f"loss_impl must be 'sparse' or 'dense', got {loss_impl!r}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        ema_momentum(0, total_steps, ema_base)  # validates base
        self.pos_radius = float(pos_radius)
        self.ema_base = float(ema_base)
        self.loss_impl = loss_impl
        self.spatial_weight = float(spatial_weight)
        self.temporal_weight = float(temporal_weight)
        self.online_encoder = ResNetStride8("layer4", zero_init_residual=zero_init_residual)
        feat_dim = self.online_encoder.out_channels  # 512, known without a forward pass (see docs/method.md, "Differences from the public code")
        self.online_space_projector = ProjBlock(feat_dim, proj_hidden, proj_dim)
        self.space_predictor = ProjBlock(proj_dim, pred_hidden, proj_dim)
        self.flow = FlowHead(2 * proj_dim, pred_hidden, 2)
        self.target_encoder = copy.deepcopy(self.online_encoder).requires_grad_(False)
        self.target_space_projector = copy.deepcopy(self.online_space_projector).requires_grad_(False)
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_total_steps", torch.tensor(int(total_steps), dtype=torch.long))
        self.total_steps = int(total_steps)  # K on the host (the buffer is the checkpointed copy)

    # -- parameters -------------------------------------------------------------------------------
    def online_parameters(self) -> List[nn.Parameter]:
        """Trainable parameters: online encoder, online projector, predictor, flow head."""
        return [p for p in self.parameters() if p.requires_grad]

    def _ema_pairs(self):
        t = list(self.target_encoder.parameters()) + list(self.target_space_projector.parameters())
        o = list(self.online_encoder.parameters()) + list(self.online_space_projector.parameters())
        return t, o

    def momentum(self) -> float:
        """m_k for the current ``ema_step`` (see :func:`ema_momentum`)."""
        return ema_momentum(int(self.ema_step), int(self.ema_total_steps), self.ema_base)

    @torch.no_grad()
    def momentum_update(self, step: Optional[int] = None) -> float:
        """EMA update of the target parameters, then ``k += 1``; returns the m_k used.

        ``theta_t <- m_k theta_t + (1 - m_k) theta_o`` over the encoder and projector
        *parameters* (BN buffers are not averaged, as in the reference). The reference runs it
        inside ``forward`` just before the target pass (model.py:201); the trainer calls it
        right before :meth:`forward`, which is equivalent.

        Args:
            step: k when the caller knows it (the trainer's step count, equal to the
                ``ema_step`` buffer): m_k is then computed without reading the buffers, which
                on a GPU would wait for the device (two synchronisations per step).
        """
        if step is None:
            m = self.momentum()
        else:
            m = ema_momentum(step, self.total_steps, self.ema_base)
        target, online = self._ema_pairs()
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, online, alpha=1.0 - m)
        self.ema_step += 1
        return m

    # -- forward ----------------------------------------------------------------------------------
    def _online(self, x: torch.Tensor) -> torch.Tensor:
        return normalized(self.space_predictor(self.online_space_projector(self.online_encoder(x))))

    @torch.no_grad()
    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return normalized(self.target_space_projector(self.target_encoder(x)))

    def _direction(self, q, k, coord_q, coord_k):
        flow_f = normalized(self.flow(q, k))
        flow_b = normalized(self.flow(k, q))
        fn = hybrid_loss if self.loss_impl == "sparse" else dense_hybrid_loss
        return fn(q, k, flow_f, flow_b, coord_q, coord_k, self.pos_radius, return_stats=True,
                  spatial_weight=self.spatial_weight, temporal_weight=self.temporal_weight)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, coord1: torch.Tensor,
                coord2: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Symmetric hybrid loss ``L(1, 2) + L(2, 1)`` of two views (sections 2-3).

        Args:
            view1, view2: normalised crops ``[N, 3, S, S]`` or clips ``[B, T, 3, S, S]``
                (flattened to ``N = B T``; both views of an item come from the same frame).
            coord1, coord2: boxes ``[N, 4]`` or ``[B, T, 4]`` (see :mod:`hvc.data.crops`).

        Returns:
            dict: ``loss`` (float32 scalar with grad, also under autocast; range [-8, 8] for unit
            term weights, minimised), and detached scalars
            ``spatial``/``temporal`` (mean over both directions of mean_N S / mean_N T),
            ``num_pos`` (mean positives per sample), ``no_pos_frac``.

        Raises:
            ValueError: mismatched view/box shapes.
        """
        if view1.shape != view2.shape or view1.dim() not in (4, 5):
            raise ValueError(f"views must be [N, 3, S, S] or [B, T, 3, S, S] with equal shapes, got "
                             f"{tuple(view1.shape)} and {tuple(view2.shape)}")
        if view1.dim() == 5:
            view1, view2 = view1.flatten(0, 1), view2.flatten(0, 1)
            coord1, coord2 = coord1.reshape(-1, 4), coord2.reshape(-1, 4)
        coord1, coord2 = coord1.float(), coord2.float()
        if coord1.shape != (view1.shape[0], 4) or coord2.shape != coord1.shape:
            raise ValueError(f"boxes must be [N, 4] with N = {view1.shape[0]}, got {tuple(coord1.shape)}, "
                             f"{tuple(coord2.shape)}")
        pred1, pred2 = self._online(view1), self._online(view2)
        targ1, targ2 = self._target(view1), self._target(view2)
        loss12, s12 = self._direction(pred1, targ2, coord1, coord2)
        loss21, s21 = self._direction(pred2, targ1, coord2, coord1)
        out = {"loss": loss12 + loss21}
        for key in s12:
            out[key] = (s12[key] + s21[key]) / 2
        return out
