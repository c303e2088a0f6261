"""Contrastive and Siamese losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NegativeCosine(nn.Module):
    """SimSiam distance with stop-gradient on the target (ConClu Eqs. 2-3).

    D(p, sg(z)) = ||p/|p| - z/|z|||² = 2 - 2 cos(p, z), averaged over the batch. Computed
    in fp32 whatever autocast does: in bf16 the cosine keeps ~3 digits, below the loss's
    own step-to-step change late in training.
    """

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(p.device.type, enabled=False):
            cos = F.cosine_similarity(p.float(), z.detach().float(), dim=-1)
        return (2 - 2 * cos).mean()


class SymmetricNegativeCosine(nn.Module):
    """L_con = D(q_a, sg(z_b)) + D(q_b, sg(z_a)) (ConClu Eq. 4)."""

    def __init__(self):
        super().__init__()
        self.d = NegativeCosine()

    def forward(self, q_a, z_a, q_b, z_b) -> torch.Tensor:
        return self.d(q_a, z_b) + self.d(q_b, z_a)
