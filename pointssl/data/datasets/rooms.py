"""Synthetic indoor rooms as a registered dataset (``--data synthetic_rooms``; ``root`` is
the cache folder). Options go to :func:`pointssl.data.scenes.load_rooms` (``rooms``,
``density``)."""

from __future__ import annotations

import numpy as np

from pointssl.data.datasets.base import DATASETS
from pointssl.data.datasets.cloudset import CloudSet


def subsample_scenes(cs: CloudSet, num_points: int | None, seed: int) -> CloudSet:
    """Each scene cut to at most ``num_points`` points, without repeats (seeded per scene;
    every per-point field alike)."""
    if num_points is None:
        return cs
    fields = ("points", "normals", "colors", "semantic")
    out = {k: [] for k in fields if getattr(cs, k) is not None}
    for i in range(len(cs)):
        n = len(cs.points[i])
        idx = np.arange(n) if n <= num_points else np.sort(
            np.random.default_rng([seed, i]).choice(n, num_points, replace=False))
        for k in out:
            out[k].append(getattr(cs, k)[i][idx])
    for k, v in out.items():
        setattr(cs, k, v)
    return cs


@DATASETS.register("synthetic_rooms")
def load(root=None, split="train", num_points=None, seed=0, **options) -> CloudSet:
    from pointssl.data.scenes import load_rooms

    cs = load_rooms(split, seed=seed, cache_dir=root, **options)
    return subsample_scenes(cs, num_points, seed)
