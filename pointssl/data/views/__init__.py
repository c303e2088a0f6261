"""What a method's views recipe is built from: samplers, transforms and crops (pairs and
renders later)."""

from pointssl.data.views.crops import HalfSpaceCrop
from pointssl.data.views.samplers import random_indices, subsample_indices

__all__ = ["HalfSpaceCrop", "random_indices", "subsample_indices"]
