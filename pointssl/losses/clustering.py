"""Prototype clustering with equipartition codes (ConClu Sec. 2.3, after SwAV)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def sinkhorn(cost: torch.Tensor, eps: float = 0.1, iters: int = 3) -> torch.Tensor:
    """Entropic optimal transport plan S for cost (B, J) with marginals (Eq. 7):
    S 1_J = 1/B 1_B and Sᵀ 1_B = 1/J 1_J.

    Sinkhorn-Knopp alternates column and row scaling of exp(-cost/eps); the row step comes
    last, so the row marginal holds exactly and the column marginal approximately (exactly in
    the limit of iterations). Under DDP the column sums span every rank's batch, so the
    equipartition is over the global batch. Computed in float64; returned in at least fp32.
    """
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    with torch.autocast(cost.device.type, enabled=False):  # float64, autocast or not
        logits = -cost.double() / eps
        q = torch.exp(logits - logits.max())
        b, j = q.shape
        b_total = b * world
        q = q / _all_reduce(q.sum())
        for _ in range(iters):
            q = q / (_all_reduce(q.sum(0, keepdim=True)) * j)
            q = q / (q.sum(1, keepdim=True) * b_total)
    return q.to(torch.promote_types(cost.dtype, torch.float32))  # never a bf16 plan


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


class Prototypes(nn.Module):
    """J learnable prototypes; soft assignment γ = softmax(cos(c_j, q)/τ) (Eq. 5)."""

    def __init__(self, dim: int, num: int = 32, tau: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num, dim) / dim**0.5)
        self.tau = tau

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()

    def log_assign(self, x: torch.Tensor) -> torch.Tensor:
        """log γ (B, J)."""
        return F.log_softmax(self.cosine(x) / self.tau, dim=-1)


class OrthogonalityLoss(nn.Module):
    """L_orth = ||ΓᵀΓ - I||₁ with Γ the column-normalised prototypes (Eq. 8)."""

    def forward(self, prototypes: torch.Tensor) -> torch.Tensor:
        g = F.normalize(prototypes, dim=-1)  # rows are c_j/|c_j|, so g gᵀ = ΓᵀΓ
        return (g @ g.t() - torch.eye(len(g), device=g.device, dtype=g.dtype)).abs().sum()


@torch.no_grad()
def code_stats(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagnostics of equipartition codes (B, J), rows summing to 1: ``code_entropy``, the mean
    row entropy (0 for hard codes, ln J for uniform ones, where the swapped cross-entropy cannot
    fall below 2 ln J), and ``proto_usage``, the fraction of the J prototypes that are some
    row's argmax."""
    ent = -(codes * codes.clamp_min(1e-12).log()).sum(1).mean()
    used = torch.unique(codes.argmax(1)).numel() / codes.shape[1]
    return {"code_entropy": ent, "proto_usage": torch.tensor(used, device=codes.device)}


class SwappedClustering(nn.Module):
    """Swapped prediction of equipartition codes (Eqs. 5-9).

    Codes S from the stop-gradient projections z of one view (Eqs. 6-7, cost
    D(c_j, sg(z)) = 2 - 2cos) supervise the soft assignments γ of the predictions q of the
    other view: L = -(1/B) Σ_i Σ_j (s^a_ij log γ^b_ij + s^b_ij log γ^a_ij) + L_orth.
    Eq. 9 prints the sum without its minus sign; it is a cross-entropy to minimise. The
    transport plan's rows sum to 1/B (Eq. 7); they are rescaled to sum to 1 so each s_i is
    a distribution, as in SwAV, which the paper follows. Pairing: Eq. 6 as printed computes
    S^a from z^b, which read literally with Eq. 9 pairs a view's codes with its own
    predictions; Sec. 2's text (pseudo-label s^b from z^b predicts γ^a from q^a) is a true
    swap, and that is what is implemented (tests/test_honesty.py checks it by hand).
    """

    def __init__(self, dim: int, num_prototypes: int = 32, tau: float = 0.01,
                 sinkhorn_eps: float = 0.1, sinkhorn_iters: int = 3, orth_weight: float = 1.0):
        super().__init__()
        self.prototypes = Prototypes(dim, num_prototypes, tau)
        self.orth = OrthogonalityLoss()
        self.eps, self.iters, self.orth_weight = sinkhorn_eps, sinkhorn_iters, orth_weight

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        cost = 2 - 2 * self.prototypes.cosine(z.detach()).detach()
        s = sinkhorn(cost, self.eps, self.iters)
        return s / s.sum(1, keepdim=True)

    def forward(self, q_a, z_a, q_b, z_b) -> dict[str, torch.Tensor]:
        # in >= fp32 under autocast too: cos / tau with tau = 0.01 scales bf16's ~0.4% error
        # of a cosine to logit errors of ~0.4, and Sinkhorn exponentiates cost / eps
        with torch.autocast(q_a.device.type, enabled=False):
            q_a, z_a, q_b, z_b = (t.to(torch.promote_types(t.dtype, torch.float32))
                                  for t in (q_a, z_a, q_b, z_b))
            s_a, s_b = self.codes(z_a), self.codes(z_b)
            ce = -((s_b * self.prototypes.log_assign(q_a)).sum(1).mean()
                   + (s_a * self.prototypes.log_assign(q_b)).sum(1).mean())
            orth = self.orth(self.prototypes.weight)
        return {"clu": ce + self.orth_weight * orth, "swap_ce": ce, "orth": orth,
                **code_stats(torch.cat([s_a, s_b]))}
