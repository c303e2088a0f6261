"""The cross-modal method's correspondence head F_f (Section 3.2 of the cross-modal 2D-3D
paper): concat(image feature, point feature) -> FC 256 -> FC 2 (same object or not)."""

from __future__ import annotations

import torch
from torch import nn


class CorrespondenceHead(nn.Module):
    """``forward(image_feat (B, Ci), point_feat (B, Cp))`` -> (B, 2) logits, class 1 = the
    image and the points show the same object. The activation between the two layers is not
    stated in the paper: ReLU."""

    def __init__(self, image_dim: int = 512, point_dim: int = 512, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(image_dim + point_dim, hidden)  # Sec. 3.2: 1024 -> 256
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 2)  # Sec. 3.2: -> 2 (binary)

    def forward(self, image_feat: torch.Tensor, point_feat: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(torch.cat([image_feat, point_feat], dim=1))))
