"""HDF5 point sets in PointNet's ``modelnet40_ply_hdf5_2048`` schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointssl.data.formats.validate import one_line
from pointssl.errors import DataError


def read_h5(path: Path):
    """``data`` (N, P, 3|6), ``label`` (N,) or (N, 1) and optional ``normal`` of one h5 file:
    returns ``(data (N, P, 3) float32, label (N,) int64 or None, normal or None)``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise DataError(path, f"no 'data' dataset (has: {', '.join(f.keys()) or 'none'})")
            data = np.asarray(f["data"][()])
            label = np.asarray(f["label"][()]) if "label" in f else None
            normal = np.asarray(f["normal"][()]) if "normal" in f else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"truncated or corrupt HDF5 file ({one_line(e)})") from None
    if data.ndim != 3 or data.shape[2] not in (3, 6) or data.shape[1] == 0:
        raise DataError(path, f"'data' has shape {data.shape}, expected (N, P, 3)")
    if data.shape[2] == 6 and normal is None:
        data, normal = data[..., :3], data[..., 3:]
    if not np.isfinite(data).all():
        raise DataError(path, "'data' contains NaN or Inf coordinates")
    if label is not None:
        label = label.reshape(len(label), -1)
        if label.shape != (len(data), 1):
            raise DataError(path, f"'label' has shape {label.shape}, expected ({len(data)}, 1)")
        label = label[:, 0].astype(np.int64)
    if normal is not None:
        if normal.shape != data.shape[:2] + (3,):
            raise DataError(path, f"'normal' has shape {normal.shape}, data {data.shape}")
        if not np.isfinite(normal).all():
            raise DataError(path, "'normal' contains NaN or Inf")
    return data.astype(np.float32, copy=False), label, normal
