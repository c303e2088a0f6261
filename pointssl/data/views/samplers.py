"""The one way pointssl takes k of n points.

Uniform without replacement, with replacement only when the cloud has fewer than k points
(``rng.choice(n, k, replace=n < k)``), everywhere: pre-training views, feature extraction,
fine-tuning batches and dataset loaders.
"""

from __future__ import annotations

import numpy as np


def random_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k random indices into n points (always drawn, so a shuffle when k == n)."""
    return rng.choice(n, k, replace=n < k)


def subsample_indices(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """All n indices in order when ``k`` is None or n; else :func:`random_indices`."""
    if k is None or k == n:
        return np.arange(n)
    return random_indices(n, k, rng)
