"""The one way pointssl takes k of n points, everywhere: pre-training views, feature
extraction, fine-tuning batches and dataset loaders.

Without replacement whenever the cloud has enough points (k <= n: ``rng.choice(n, k,
replace=False)``). A cloud short of points gives all n of them, in a random order, and pads
only the shortfall with duplicates, spread as evenly as possible: k = 2048 of a 1741-point
crop keeps all 1741 distinct points (85%), where drawing all k with replacement kept ~59%.
"""

from __future__ import annotations

import numpy as np


def random_indices(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k random indices into n points (always drawn, so a shuffle when k == n). k > n: a
    permutation of all n, then the k - n others drawn the same way (each point ceil(k / n)
    or floor(k / n) times)."""
    if k <= n:
        return rng.choice(n, k, replace=False)
    if n <= 0:
        raise ValueError(f"cannot take {k} points of an empty cloud")
    reps, rest = divmod(k, n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)]
                          + [rng.choice(n, rest, replace=False)])


def subsample_indices(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """All n indices in order when ``k`` is None or n; else :func:`random_indices`."""
    if k is None or k == n:
        return np.arange(n)
    return random_indices(n, k, rng)
