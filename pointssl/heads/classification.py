"""Shape classifier of the fine-tuning protocol."""

from __future__ import annotations

from torch import nn


class ClassificationHead(nn.Sequential):
    """PointNet/DGCNN classification head on a global feature: FC 512-256-K, BN + ReLU and
    dropout after the two hidden layers."""

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.5):
        super().__init__(
            nn.Linear(c_in, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )
