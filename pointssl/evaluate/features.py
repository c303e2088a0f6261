"""Frozen-backbone feature extraction shared by the protocols."""

from __future__ import annotations

import numpy as np
import torch

from pointssl.backbones.base import Backbone
from pointssl.data.dataset import CloudSet


def fixed_size(points: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """All points when n is None or equal; a seeded random subset (or resample) otherwise."""
    m = len(points)
    if n is None or n == m:
        return points
    return points[rng.choice(m, n, replace=m < n)]


@torch.inference_mode()
def extract_features(backbone: Backbone, data: CloudSet, *, num_points: int | None = None,
                     batch_size: int = 32, device=None, seed: int = 0,
                     progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Global features (n, C) float32 and labels (n,) of a frozen backbone in eval mode.

    Clouds are used whole when they all share one size and ``num_points`` is None;
    otherwise each is subsampled to ``num_points`` with a fixed seed, so features are
    reproducible.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = {len(p) for p in data.points}
    if num_points is None and len(sizes) > 1:
        num_points = min(sizes)
    rng = np.random.default_rng(seed)
    was_training = backbone.training
    backbone.eval().to(device)
    feats = []
    try:
        for start in range(0, len(data), batch_size):
            chunk = [fixed_size(p[:, :3], num_points, rng)
                     for p in data.points[start:start + batch_size]]
            x = torch.from_numpy(np.stack(chunk).astype(np.float32)).to(device)
            feats.append(backbone(x).global_feat.float().cpu().numpy())
            if progress is not None:
                progress(len(chunk))
    finally:
        backbone.train(was_training)
    return np.concatenate(feats), data.labels.copy()
