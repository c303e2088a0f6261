"""Crops: views that keep part of a cloud."""

from __future__ import annotations

import numpy as np


class HalfSpaceCrop:
    """Keep the points on one side of a plane with a random normal s ∈ S², shifted so that
    ``keep`` of the points survive (ConClu Sec. 3.1: ~85%)."""

    def __init__(self, keep: float = 0.85):
        self.keep = keep

    def __call__(self, points, rng):
        s = rng.normal(size=3)
        s /= np.linalg.norm(s)
        proj = points[:, :3] @ s
        n_keep = max(1, int(round(self.keep * len(points))))
        return points[np.argsort(proj, kind="stable")[:n_keep]]
