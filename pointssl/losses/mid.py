"""Multiresolution instance discrimination (MID-Net, Sec. 3.3): shape-instance (Eq. 2) and
patch-instance (Eq. 4) classification against memory banks of unit-length class vectors, with
features and memory vectors compared by cosine at temperature tau = 0.1.

The memories are inputs here (no gradient reaches them: they are read detached); the method
that owns them moves them by momentum after each step (Eqs. 6-7, :func:`momentum_update`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ShapeInstanceLoss", "PatchInstanceLoss", "momentum_update", "patch_means"]


class ShapeInstanceLoss(nn.Module):
    """Eq. 2: ``-log exp(s_i . m_i / tau) / sum_k exp(s_i . m_k / tau)`` over the N shape
    classes, s_i normalised to unit length; the mean over the batch (Algorithm 1, line 4).

    forward(feat (B, C), memory (N, C), index (B,)) -> {"loss", "accuracy"}.
    """

    def __init__(self, tau: float = 0.1):
        super().__init__()
        self.tau = float(tau)

    def forward(self, feat: torch.Tensor, memory: torch.Tensor, index: torch.Tensor) -> dict:
        s = F.normalize(feat.float(), dim=1)
        logits = s @ memory.detach().to(s.dtype).t() / self.tau
        loss = F.cross_entropy(logits, index)
        acc = (logits.detach().argmax(1) == index).float().mean()
        return {"loss": loss, "accuracy": acc}


class PatchInstanceLoss(nn.Module):
    """Eqs. 4-5: each point's unit feature classified among its shape's K patch vectors
    (``-log exp(v_ij . m_i,c(i,j) / tau) / sum_c exp(v_ij . m_i,c / tau)``), averaged over the
    points of a shape (Eq. 5's 1/M_i), then over the shapes of the batch.

    forward(point_feat (P, C), memory_rows (B, K, C) = the batch's shapes' patch vectors,
    patch (P,) in [0, K), offset (B + 1,)) -> {"loss", "accuracy"}.
    """

    def __init__(self, tau: float = 0.1):
        super().__init__()
        self.tau = float(tau)

    def forward(self, point_feat: torch.Tensor, memory_rows: torch.Tensor,
                patch: torch.Tensor, offset: torch.Tensor) -> dict:
        v = F.normalize(point_feat.float(), dim=1)
        mem = memory_rows.detach().to(v.dtype)
        sizes = (offset[1:] - offset[:-1]).tolist()
        b = len(sizes)
        if len(set(sizes)) == 1:  # one size: one batched matmul
            n = sizes[0]
            logits = torch.bmm(v.view(b, n, -1), mem.transpose(1, 2)) / self.tau  # (B, N, K)
            ce = F.cross_entropy(logits.reshape(b * n, -1), patch.reshape(-1),
                                 reduction="none").view(b, n)
            loss = ce.mean(1).mean()
            acc = (logits.detach().argmax(-1).reshape(-1) == patch.reshape(-1)).float().mean()
            return {"loss": loss, "accuracy": acc}
        losses, hits = [], []
        for i, (vi, pi) in enumerate(zip(torch.split(v, sizes), torch.split(patch, sizes))):
            logit = vi @ mem[i].t() / self.tau
            losses.append(F.cross_entropy(logit, pi))
            hits.append((logit.detach().argmax(1) == pi).float())
        return {"loss": torch.stack(losses).mean(), "accuracy": torch.cat(hits).mean()}


@torch.no_grad()
def patch_means(point_feat: torch.Tensor, patch: torch.Tensor, offset: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, C) unit-length mean of each patch's unit point features (Eq. 7's v_i,c; the
    release re-normalises the mean) and (B, K) bool: the patch has points in this view."""
    v = F.normalize(point_feat.detach().float(), dim=1)
    b = len(offset) - 1
    sizes = (offset[1:] - offset[:-1]).to(v.device)
    cloud = torch.repeat_interleave(torch.arange(b, device=v.device), sizes,
                                    output_size=len(v))
    slot = cloud * k + patch.reshape(-1).to(v.device)
    sums = v.new_zeros(b * k, v.shape[1]).index_add_(0, slot, v)
    counts = torch.bincount(slot, minlength=b * k)
    return F.normalize(sums, dim=1).view(b, k, -1), (counts > 0).view(b, k)


@torch.no_grad()
def momentum_update(memory: torch.Tensor, index: torch.Tensor, feat: torch.Tensor,
                    momentum: float, mask: torch.Tensor | None = None) -> None:
    """Eqs. 6-7 in place: ``m_i <- normalise((1 - lambda) m_i + lambda f_i)`` for the rows
    ``index`` of ``memory`` (N, ..., C); ``mask`` (B, ...) keeps the rows where it is False."""
    old = memory[index].float()
    new = F.normalize((1.0 - momentum) * old + momentum * F.normalize(feat.float(), dim=-1),
                      dim=-1)
    if mask is not None:
        new = torch.where(mask[..., None], new, old)
    memory[index] = new.to(memory.dtype)
