"""NumPy clouds: .npy (N, 3+) arrays and .npz archives (``points``/``xyz``, ``normals``,
``colors``). Never unpickles (``allow_pickle=False``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointssl.data.formats.validate import Cloud, as_colors, one_line, split_columns
from pointssl.errors import DataError


def read_npy(path: Path) -> Cloud:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(path, f"truncated or corrupt .npy file ({one_line(e)})") from None
    return split_columns(path, arr)


def read_npz(path: Path) -> Cloud:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.files)
            key = next((k for k in ("points", "xyz") if k in keys), None)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None:
                found = ", ".join(keys) or "nothing"
                raise DataError(path, f"no 'points' or 'xyz' array (found: {found})")
            arr = f[key]
            normals = f["normals"] if "normals" in keys else None
            colors = f["colors"] if "colors" in keys else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"truncated or corrupt .npz file ({one_line(e)})") from None
    cloud = split_columns(path, arr)
    if normals is not None:
        cloud.normals = normals
    if colors is not None:
        cloud.colors = as_colors(colors)
        if cloud.colors is None:
            raise DataError(path, "'colors' are not colours (expected values in 0-1 or 0-255)")
    return cloud
