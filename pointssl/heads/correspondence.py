"""The cross-modal method's correspondence head F_f (Section 3.2 of the cross-modal 2D-3D
paper): concat(image feature, point feature) -> FC 256 -> FC 2 (same object or not)."""

from __future__ import annotations

import torch
from torch import nn

from pointssl.errors import PointSSLError

INPUT_NORMS = ("none", "bn")


class CorrespondenceHead(nn.Module):
    """``forward(image_feat (B, Ci), point_feat (B, Cp))`` -> (B, 2) logits, class 1 = the
    image and the points show the same object. The activation between the two layers is not
    stated in the paper: ReLU.

    ``input_norm`` (not stated in the paper, which only says the two features are
    concatenated): ``"none"`` feeds the raw features; ``"bn"`` standardises each feature of
    each modality over the batch first (``BatchNorm1d`` without affine parameters; running
    statistics at eval), so neither modality's scale drowns the other. The raw ResNet
    feature (ReLU + average pool) is a large constant plus a small image-dependent part, and
    the triplet loss shrinks that part further; without the normalisation F_f sees almost
    only the point feature and stays at the label prior."""

    def __init__(self, image_dim: int = 512, point_dim: int = 512, hidden: int = 256,
                 input_norm: str = "none"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise PointSSLError(f"correspondence head input_norm {input_norm!r}: expected "
                                f"{' or '.join(INPUT_NORMS)}")
        self.input_norm = input_norm
        if input_norm == "bn":
            self.norm_image = nn.BatchNorm1d(image_dim, affine=False)
            self.norm_point = nn.BatchNorm1d(point_dim, affine=False)
        self.fc1 = nn.Linear(image_dim + point_dim, hidden)  # Sec. 3.2: 1024 -> 256
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 2)  # Sec. 3.2: -> 2 (binary)

    def forward(self, image_feat: torch.Tensor, point_feat: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "bn":
            image_feat, point_feat = self.norm_image(image_feat), self.norm_point(point_feat)
        return self.fc2(self.relu(self.fc1(torch.cat([image_feat, point_feat], dim=1))))
