"""PLY clouds (x, y, z; optional nx, ny, nz and red, green, blue) and PLY meshes (faces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointssl.data.formats.mesh import triangulate
from pointssl.data.formats.validate import Cloud, as_colors, one_line
from pointssl.errors import DataError


def read_ply(path: Path) -> Cloud:
    """Vertices with their normals and colours; ``mesh`` is set when the file has faces."""
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
        names = [el.name for el in ply.elements]
        if "vertex" not in names:
            raise DataError(path, "PLY file has no 'vertex' element")
        v = ply["vertex"].data
        faces = None
        if "face" in names and ply["face"].count > 0:
            fdata = ply["face"].data
            props = [p for p in ("vertex_indices", "vertex_index") if p in fdata.dtype.names]
            if props:
                faces = list(fdata[props[0]])
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"truncated or corrupt PLY file ({one_line(e)})") from None
    fields = set(v.dtype.names or ())
    if not {"x", "y", "z"} <= fields:
        have = ", ".join(v.dtype.names or ())
        raise DataError(path, f"PLY vertices lack x, y, z properties (have: {have})")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    if faces is not None:
        return Cloud(xyz, mesh=(xyz, triangulate(path, faces, len(xyz))))
    normals = colors = None
    if {"nx", "ny", "nz"} <= fields:
        normals = np.stack([v["nx"], v["ny"], v["nz"]], axis=1)
    if {"red", "green", "blue"} <= fields:
        colors = as_colors(np.stack([v["red"], v["green"], v["blue"]], axis=1))
    return Cloud(xyz, normals, colors)
