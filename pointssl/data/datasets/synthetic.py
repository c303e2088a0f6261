"""The built-in synthetic objects as a registered dataset (``root`` is its cache folder).

Generator v3's simulated scans by default; ``options`` go to ``load_synthetic`` (e.g.
``scan=False`` for clean whole-surface samples, ``categories=V2_CATEGORIES`` as well for the
v2 collection)."""

from __future__ import annotations

from pointssl.data import synthetic
from pointssl.data.datasets.base import DATASETS
from pointssl.data.datasets.cloudset import CloudSet


@DATASETS.register("synthetic")
def load(root=None, split="train", num_points=None, seed=0, **options) -> CloudSet:
    kwargs = {"seed": seed, **options}
    if num_points is not None:
        kwargs["num_points"] = num_points
    if root is not None:
        kwargs["cache_dir"] = root
    cs = synthetic.load_synthetic(split, **kwargs)
    if cs.up_axis is None:
        cs.up_axis = "z"  # the generator builds shapes resting on z = 0 (objects.make_shape)
    return cs
