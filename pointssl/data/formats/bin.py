"""ScanNet-style ``.bin`` scenes: rows of float32 x, y, z, r, g, b (colours 0-255)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointssl.data.formats.validate import Cloud, check_points
from pointssl.errors import DataError


def read_scannet_bin(path):
    """``(xyz (N, 3), rgb (N, 3))`` float32 as stored (rgb 0-255).

    Raises DataError for a missing or empty file, a size that is not a multiple of 24
    bytes, or NaN/Inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    size = path.stat().st_size
    if size % 24:
        raise DataError(
            path,
            f"size {size} bytes is not a multiple of 24 (6 float32 per "
            "point): truncated or not x,y,z,r,g,b rows",
        )
    arr = np.fromfile(path, dtype="<f4").reshape(-1, 6)
    if not np.isfinite(arr).all():
        raise DataError(path, "contains NaN or Inf values")
    xyz, _ = check_points(path, arr[:, :3])
    return xyz, np.ascontiguousarray(arr[:, 3:])


def read_bin(path: Path) -> Cloud:
    """A .bin scene as a :class:`Cloud` with colours scaled to [0, 1]."""
    xyz, rgb = read_scannet_bin(path)
    if rgb.min() < 0 or rgb.max() > 255:
        raise DataError(path, "colour values outside 0-255: not x,y,z,r,g,b rows")
    return Cloud(xyz, colors=rgb / np.float32(255))
