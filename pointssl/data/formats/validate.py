"""What every reader returns (:class:`Cloud`) and the checks every cloud passes.

Every problem with a file becomes a ``DataError(path, problem)``: one line naming the file,
never a library traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pointssl.errors import DataError


class DataWarning(UserWarning):
    """A data file that was skipped or a layout fallback; the message is one line."""


@dataclass
class Cloud:
    """One file's points ``(N, 3)`` float32 and optional per-point fields, also ``(N, 3)``
    float32: unit ``normals``, ``colors`` in [0, 1]. ``mesh`` is ``(verts (V, 3) float64,
    faces (F, 3) int64)`` when the points were sampled from a mesh."""

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    mesh: tuple[np.ndarray, np.ndarray] | None = None


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_points(path, points, normals=None, min_points: int = 1):
    """Shape, finiteness and size checks shared by every reader; returns float32 copies."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(path, f"wrong array shape {points.shape}: expected (N, 3)")
    n = len(points)
    if n == 0:
        raise DataError(path, "empty cloud: no points")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} of {n} points have NaN or Inf coordinates")
    if n < min_points:
        raise DataError(path, f"only {n} points, fewer than min_points={min_points}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    return points, _check_field(path, "normals", normals, n)


def _check_field(path, name: str, values, n: int):
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape != (n, 3):
        raise DataError(path, f"{name} have shape {values.shape} but points have shape {(n, 3)}")
    if not np.isfinite(values).all():
        raise DataError(path, f"{name} contain NaN or Inf")
    return np.ascontiguousarray(values, dtype=np.float32)


def check_cloud(path, cloud: Cloud, min_points: int = 1) -> Cloud:
    """:func:`check_points` on a reader's raw :class:`Cloud`, colours checked alike."""
    points, normals = check_points(path, cloud.points, cloud.normals, min_points)
    colors = _check_field(path, "colors", cloud.colors, len(points))
    return Cloud(points, normals, colors, cloud.mesh)


def looks_like_normals(v: np.ndarray) -> bool:
    # Columns 4-6 of a text/npy cloud may be colours (xyzrgb) rather than normals.
    norms = np.linalg.norm(v, axis=1)
    return bool(np.isfinite(norms).all()) and 0.9 <= float(np.median(norms)) <= 1.1


def as_colors(v) -> np.ndarray | None:
    """Colour columns as float32 in [0, 1]: values in [0, 1] are kept, values up to 255 are
    divided by 255; anything else (negative, larger, NaN) is not a colour: None."""
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all() or v.min() < 0 or v.max() > 255:
        return None
    return (v / 255.0 if v.max() > 1 else v).astype(np.float32)


def split_columns(path, arr) -> Cloud:
    """(N, 3) -> xyz; (N, 6+) -> xyz + columns 3:6 as normals when they are unit vectors,
    else as colours when they look like colours (0-1 or 0-255)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise DataError(path, f"array has dtype {arr.dtype}, expected numbers")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise DataError(path, f"wrong array shape {arr.shape}: expected (N, 3) or (N, 6)")
    normals = colors = None
    if arr.shape[1] >= 6 and len(arr):
        if looks_like_normals(arr[:, 3:6]):
            normals = arr[:, 3:6]
        else:
            colors = as_colors(arr[:, 3:6])
    return Cloud(arr[:, :3], normals, colors)
