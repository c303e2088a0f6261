"""Shim: moved to :mod:`pointssl.data.datasets.shapenetpart`."""

from pointssl.data.datasets.shapenetpart import (  # noqa: F401
    CATEGORIES,
    CATEGORY_PARTS,
    NORMAL_DIR,
    NUM_PARTS,
    PART_NAMES,
    SYNSETS,
    category_parts_by_label,
    load_shapenetpart,
)
