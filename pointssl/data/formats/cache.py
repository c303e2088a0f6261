"""Mesh samples cached on disk, so a mesh is sampled once per (file, n, seed)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from pointssl.data.formats.mesh import MESH_EXTS
from pointssl.data.formats.read import read_cloud
from pointssl.data.formats.validate import Cloud, DataWarning, check_points, one_line
from pointssl.errors import DataError
from pointssl.utils import atomic_savez
from pointssl.utils import cache_dir as default_cache

_CACHE_VERSION = "1"  # bump when mesh sampling changes so stale cache entries are not reused


def read_cached(path: Path, num_points: int, seed: int, cache_dir, min_points: int = 1):
    """``(points, normals)`` of :func:`read_cloud`, with meshes' samples cached as npz under
    ``cache_dir`` ("auto": ``pointssl.utils.cache_dir("meshes")``; None: no cache), keyed by
    file, mtime, size, n and seed."""
    if cache_dir is None or path.suffix.lower() not in MESH_EXTS:
        c = read_cloud(path, num_points, seed, min_points)
        return c.points, c.normals
    cache_dir = Path(default_cache("meshes") if cache_dir == "auto" else cache_dir)
    try:
        st = path.stat()
    except OSError:  # read_cloud reports the missing file
        c = read_cloud(path, num_points, seed, min_points)
        return c.points, c.normals
    key = f"{_CACHE_VERSION}|{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{num_points}|{seed}"
    entry = cache_dir / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"
    if entry.exists():
        try:
            with np.load(entry, allow_pickle=False) as f:
                normals = f["normals"] if "normals" in f.files else None
                return check_points(path, f["points"], normals, min_points)
        except DataError:
            raise
        except Exception:
            pass  # an unreadable entry is resampled and overwritten below
    c: Cloud = read_cloud(path, num_points, seed, min_points)
    arrays = {"points": c.points} if c.normals is None else {"points": c.points,
                                                           "normals": c.normals}
    try:
        atomic_savez(entry, **arrays)  # readers never see a half-written entry
    except OSError as e:
        warnings.warn(
            f"{cache_dir}: cannot write mesh cache ({one_line(e)})", DataWarning, stacklevel=3
        )
    return c.points, c.normals
