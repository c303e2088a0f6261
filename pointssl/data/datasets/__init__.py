"""Datasets: layouts and splits, each registered in ``DATASETS``; all return a CloudSet."""

from pointssl.data.datasets.base import DATASETS, load_dataset
from pointssl.data.datasets.cloudset import CloudSet, LazyField, LazyItems

__all__ = ["DATASETS", "load_dataset", "CloudSet", "LazyField", "LazyItems"]
