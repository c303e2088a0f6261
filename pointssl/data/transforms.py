"""Shim: moved to :mod:`pointssl.data.views.transforms`."""

from pointssl.data.views.transforms import *  # noqa: F401,F403
