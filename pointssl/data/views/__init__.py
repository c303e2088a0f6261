"""What a method's views recipe is built from: samplers (and crops, pairs, renders later)."""

from pointssl.data.views.samplers import random_indices, subsample_indices

__all__ = ["random_indices", "subsample_indices"]
