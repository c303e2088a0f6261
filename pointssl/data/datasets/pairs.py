"""Partial-view pairs written by ``pointssl data pairs`` (``--data pairs --root DIR``): a
:class:`pointssl.data.pairs.PairSet`, not a CloudSet (items are two views and their matches).
Pairs built from a split other than ``split`` are refused."""

from __future__ import annotations

from pointssl.data.datasets.base import DATASETS, require_root


@DATASETS.register("pairs")
def pairs(root, split="train", num_points=None, seed=0, **options):
    from pointssl.data.pairs import PairSet

    return PairSet(require_root("pairs", root), split, **options)
