"""PointContrast's two losses (Xie et al., Sec. 3.4) over the per-point features of two views
and their matches ``(K, 2)`` (row i of view 1, row j of view 2).

- :class:`PointInfoNCE`: softmax over the sampled matched pairs (Sec. 3.4's equation): for
  ``num_pairs`` (4,096) sampled matches, query f1_i and keys f2_k of every sampled match;
  the positive is the key of its own match. Temperature 0.4 (authors' released config,
  ``nceT``). Only matched points take part ("we only consider points that have at least one
  match"). Sampling keeps each view-1 and each view-2 point at most once so no key is a
  duplicate of the positive.
- :class:`HardestContrastive`: FCGF's loss, Sec. 3.4's equation: positives
  ``[d(f_i, f_j) - m_p]_+^2`` averaged over sampled pairs, plus for both directions
  ``0.5 [m_n - min_k d(f_i, f_k)]_+^2`` with the hardest negative searched in a random
  subset of the other view's points (``num_hn_samples``); a candidate that is itself a
  positive partner of the anchor is not counted. m_p = 0.1, m_n = 1.4 (Sec. 3.4). Pairs
  and negative-subset sizes (1,024 and 256) are the FCGF / PointContrast release defaults.

Features are L2-normalised first (``normalize=True``: the release's normalize_feature and
Sec. 3.4's "L2 normalized feature space").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PointInfoNCE", "HardestContrastive", "sample_matches"]


def sample_matches(matches: torch.Tensor, n: int, generator: torch.Generator | None = None,
                   unique: bool = True) -> torch.Tensor:
    """Up to ``n`` rows of ``matches`` at random; with ``unique`` no view-1 or view-2 index
    appears twice (later duplicates are dropped)."""
    m = matches
    if len(m) == 0:
        return m
    perm = torch.randperm(len(m), generator=generator, device="cpu").to(m.device)
    m = m[perm]
    if unique:
        for col in (0, 1):
            _, inv = torch.unique(m[:, col], return_inverse=True)
            first = torch.full((int(inv.max()) + 1,), len(m), dtype=torch.long, device=m.device)
            first.scatter_reduce_(0, inv, torch.arange(len(m), device=m.device), "amin")
            m = m[torch.sort(first).values]  # the first row of each index, in sampled order
    return m[:n]


class PointInfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.4, num_pairs: int = 4096, normalize: bool = True):
        super().__init__()
        self.temperature, self.num_pairs, self.normalize = temperature, num_pairs, normalize

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, matches: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = sample_matches(matches, self.num_pairs, generator)
        if self.normalize:
            f1, f2 = F.normalize(f1, dim=1), F.normalize(f2, dim=1)
        q, k = f1[m[:, 0]], f2[m[:, 1]]
        logits = q @ k.T / self.temperature
        target = torch.arange(len(m), device=logits.device)
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            acc = (logits.argmax(1) == target).float().mean()
        return {"loss": loss, "nce_acc": acc, "pairs": torch.tensor(float(len(m)))}


class HardestContrastive(nn.Module):
    def __init__(self, pos_margin: float = 0.1, neg_margin: float = 1.4, num_pairs: int = 1024,
                 num_hn_samples: int = 256, normalize: bool = True):
        super().__init__()
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.num_pairs, self.num_hn_samples, self.normalize = num_pairs, num_hn_samples, normalize

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, matches: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if self.normalize:
            f1, f2 = F.normalize(f1, dim=1), F.normalize(f2, dim=1)
        m = sample_matches(matches, self.num_pairs, generator, unique=False)
        dev = f1.device
        sel1 = torch.randperm(len(f1), generator=generator)[: self.num_hn_samples].to(dev)
        sel2 = torch.randperm(len(f2), generator=generator)[: self.num_hn_samples].to(dev)
        i, j = m[:, 0], m[:, 1]
        p1, p2 = f1[i], f2[j]
        pos = (torch.linalg.vector_norm(p1 - p2, dim=1) - self.pos_margin).clamp_min(0).pow(2)
        d12 = torch.cdist(p1, f2[sel2])  # anchors of view 1 vs negatives of view 2
        d21 = torch.cdist(p2, f1[sel1])
        # a candidate that is a positive partner of the anchor is no negative
        width = max(len(f1), len(f2)) + 1
        pos_keys = matches[:, 0] * width + matches[:, 1]
        bad12 = torch.isin(i[:, None] * width + sel2[None, :], pos_keys)
        bad21 = torch.isin(sel1[None, :] * width + j[:, None], pos_keys)
        big = torch.finfo(d12.dtype).max
        n12 = (self.neg_margin - d12.masked_fill(bad12, big).min(1).values).clamp_min(0).pow(2)
        n21 = (self.neg_margin - d21.masked_fill(bad21, big).min(1).values).clamp_min(0).pow(2)
        pos_loss = pos.mean()
        neg_loss = 0.5 * n12.mean() + 0.5 * n21.mean()
        return {"loss": pos_loss + neg_loss, "pos": pos_loss.detach(), "neg": neg_loss.detach()}
