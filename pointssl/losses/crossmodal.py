"""The cross-modal 2D-3D paper's two losses (Section 3.3, Algorithm 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TripletLoss(nn.Module):
    """Cross-view, Eq. 1: mean over the batch of
    max(||f_a - f_p||² - ||f_a - f_n||² + α, 0), squared Euclidean distances (Algorithm 1,
    as in FaceNet [43]); anchor and positive are two views of one object, the negative a
    view of another."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        with torch.autocast(anchor.device.type, enabled=False):
            a, p, n = anchor.float(), positive.float(), negative.float()
            d_pos = (a - p).pow(2).sum(1)
            d_neg = (a - n).pow(2).sum(1)
            return F.relu(d_pos - d_neg + self.margin).mean()


class CrossModalityLoss(nn.Module):
    """Cross-modality, Eq. 2: the binary cross-entropy of F_f's prediction, summed over the
    three (image_j, points) pairs of a sample (y = 1, 1, 0 for img1, img2 of the same object
    and img3 of another) and averaged over the batch (Algorithm 1). F_f's two logits give
    the probability by softmax, so this is 2-class cross-entropy.

    ``forward(logits (B, J, 2), labels (J,) or (B, J))``."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, j, _ = logits.shape
        labels = labels.to(logits.device).long().expand(b, j)
        with torch.autocast(logits.device.type, enabled=False):
            ce = F.cross_entropy(logits.float().reshape(b * j, 2), labels.reshape(-1),
                                 reduction="sum")
        return ce / b
