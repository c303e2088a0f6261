"""Point-cloud transforms the papers use. Each is a small class called as ``t(points, rng)``.

Points are numpy (N, 3+) float32 arrays; columns past 3 (normals) are rotated with the
coordinates where that is meaningful. All randomness comes from the ``rng`` argument.
"""

from __future__ import annotations

import numpy as np

from pointssl.data.views.crops import HalfSpaceCrop
from pointssl.data.views.samplers import random_indices

__all__ = ["AXES", "normalize_unit_sphere", "NormalizeUnitSphere", "RandomSample",
           "farthest_point_indices", "FarthestPointSample", "rotation_about", "RotateUp",
           "HalfSpaceCrop", "Jitter", "ScaleAxes", "Translate", "pca_normals", "Compose"]

AXES = {"x": 0, "y": 1, "z": 2}


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre at the centroid and scale so the farthest point lies on the unit sphere."""
    xyz = points[:, :3] - points[:, :3].mean(0)
    scale = np.linalg.norm(xyz, axis=1).max()
    out = points.copy()
    out[:, :3] = xyz / (scale if scale > 0 else 1.0)
    return out.astype(np.float32, copy=False)


class NormalizeUnitSphere:
    def __call__(self, points, rng=None):
        return normalize_unit_sphere(points)


class RandomSample:
    """Pick ``n`` points uniformly without replacement; a cloud of fewer than n gives all its
    points and duplicates only the shortfall (:func:`random_indices`).

    Always draws (a shuffle when the cloud has exactly n points), so views stay the same."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, points, rng):
        return points[random_indices(len(points), self.n, rng)]


def farthest_point_indices(xyz: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices of ``n`` farthest-point samples starting at ``start`` (fpsample, exact FPS).

    fpsample's bucket variants ignore ``start_idx`` in 1.0.x, so the plain one is used."""
    import fpsample

    if n >= len(xyz):
        return np.arange(len(xyz))
    pts = np.ascontiguousarray(xyz[:, :3], dtype=np.float32)
    return np.asarray(fpsample.fps_sampling(pts, n, start_idx=start), dtype=np.int64)


class FarthestPointSample:
    """``n`` farthest-point samples from a random start; a cloud of fewer than n points gives
    all of them, the shortfall padded with duplicates as :class:`RandomSample` does."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, points, rng):
        if len(points) <= self.n:
            pad_rng = rng if rng is not None else np.random.default_rng(0)
            return points[random_indices(len(points), self.n, pad_rng)]
        start = int(rng.integers(len(points))) if rng is not None else 0
        return points[farthest_point_indices(points, self.n, start)]


def rotation_about(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != AXES[axis]]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class RotateUp:
    """Rotate about the up axis by an angle uniform in [-max_degrees, max_degrees]."""

    def __init__(self, max_degrees: float = 180.0, up: str = "z"):
        self.max_rad = np.deg2rad(max_degrees)
        self.up = up

    def __call__(self, points, rng):
        r = rotation_about(self.up, rng.uniform(-self.max_rad, self.max_rad)).astype(np.float32)
        out = points.copy()
        out[:, :3] = points[:, :3] @ r.T
        if points.shape[1] >= 6:
            out[:, 3:6] = points[:, 3:6] @ r.T
        return out


class Jitter:
    """Add N(0, sigma²) noise per coordinate, clipped to [-clip, clip]."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.025):
        self.sigma, self.clip = sigma, clip

    def __call__(self, points, rng):
        noise = np.clip(self.sigma * rng.standard_normal((len(points), 3)), -self.clip, self.clip)
        out = points.copy()
        out[:, :3] += noise.astype(np.float32)
        return out


class ScaleAxes:
    """Independent scale per axis, uniform in [lo, hi] (anisotropic scaling)."""

    def __init__(self, lo: float = 2 / 3, hi: float = 3 / 2):
        self.lo, self.hi = lo, hi

    def __call__(self, points, rng):
        out = points.copy()
        out[:, :3] *= rng.uniform(self.lo, self.hi, size=3).astype(np.float32)
        return out


class Translate:
    def __init__(self, max_shift: float = 0.2):
        self.max_shift = max_shift

    def __call__(self, points, rng):
        out = points.copy()
        out[:, :3] += rng.uniform(-self.max_shift, self.max_shift, size=3).astype(np.float32)
        return out


def pca_normals(xyz: np.ndarray, k: int = 16) -> np.ndarray:
    """Unit normals from the smallest principal direction of each point's k neighbours.

    Orientation is made consistent by pointing away from the centroid (good for closed
    objects; sign is arbitrary in general)."""
    from pykdtree.kdtree import KDTree

    xyz = np.ascontiguousarray(xyz[:, :3], dtype=np.float64)
    k = min(k, len(xyz))
    _, idx = KDTree(xyz).query(xyz, k=k)
    nb = xyz[idx.reshape(len(xyz), k)]
    nb = nb - nb.mean(1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))
    n = vecs[:, :, 0]
    flip = np.einsum("ni,ni->n", n, xyz - xyz.mean(0)) < 0
    n[flip] *= -1
    return n.astype(np.float32)


class Compose:
    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, points, rng):
        for t in self.transforms:
            points = t(points, rng)
        return points
