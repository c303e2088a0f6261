"""Shim: moved to :mod:`pointssl.data.datasets.cloudset`."""

from pointssl.data.datasets.cloudset import CloudSet  # noqa: F401
