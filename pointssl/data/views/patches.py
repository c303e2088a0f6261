"""K-means over-segmentation of a shape into K patches (MID-Net, Sec. 3.1: "we use the K-Means
algorithm to compute over-segmented patches and set K_i = 100"): the patch-instance labels of
the point-level discrimination loss (Eq. 4).

Deterministic: farthest-point initialisation from the point nearest the centroid, then Lloyd
iterations (the authors' data script runs scikit-learn's KMeans; any K-means partition serves,
the labels only have to stay fixed for a shape across epochs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans_patches", "farthest_point_init"]


def farthest_point_init(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of k points spread by farthest-point sampling (start: nearest the centroid)."""
    p = np.asarray(points, dtype=np.float64)
    first = int(np.argmin(((p - p.mean(0)) ** 2).sum(1)))
    idx = np.empty(k, dtype=np.int64)
    idx[0] = first
    dist = ((p - p[first]) ** 2).sum(1)
    for j in range(1, k):
        idx[j] = int(np.argmax(dist))
        dist = np.minimum(dist, ((p - p[idx[j]]) ** 2).sum(1))
    return idx


def kmeans_patches(points: np.ndarray, k: int = 100, iters: int = 20) -> np.ndarray:
    """(N,) int64 patch id in [0, min(k, N)) of each point of an (N, 3) cloud."""
    p = np.asarray(points[:, :3], dtype=np.float64)
    k = int(min(k, len(p)))
    if k <= 1:
        return np.zeros(len(p), dtype=np.int64)
    centres = p[farthest_point_init(p, k)]
    labels = np.full(len(p), -1, dtype=np.int64)
    p2 = (p ** 2).sum(1, keepdims=True)
    for _ in range(int(iters)):
        d = p2 - 2.0 * p @ centres.T + (centres ** 2).sum(1)[None]
        new = d.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, p)
        keep = counts > 0  # an emptied centre stays where it was
        centres[keep] = sums[keep] / counts[keep, None]
    return labels
