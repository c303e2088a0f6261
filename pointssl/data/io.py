"""Shim: moved to :mod:`pointssl.data.formats` and :mod:`pointssl.data.datasets`."""

from pointssl.data.datasets import DATASETS, load_dataset  # noqa: F401
from pointssl.data.formats import DataWarning, check_root, read_cloud  # noqa: F401
