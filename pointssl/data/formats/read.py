"""``read_cloud``: one file of any supported type -> a validated :class:`Cloud`."""

from __future__ import annotations

from pathlib import Path

from pointssl.data.formats.bin import read_bin
from pointssl.data.formats.mesh import MESH_EXTS, read_obj, read_off, sample_mesh
from pointssl.data.formats.npy import read_npy, read_npz
from pointssl.data.formats.pcd import read_pcd
from pointssl.data.formats.ply import read_ply
from pointssl.data.formats.text import read_text
from pointssl.data.formats.validate import Cloud, check_cloud, one_line
from pointssl.errors import DataError

# What folder datasets scan for. ``.bin`` is read on request only: other tools' .bin files
# (e.g. KITTI's x, y, z, intensity) are not ScanNet rows.
CLOUD_EXTS = (".ply", ".pcd", ".xyz", ".txt", ".npy", ".npz", ".off", ".obj")
READERS = {".ply": read_ply, ".pcd": read_pcd, ".xyz": read_text, ".txt": read_text,
           ".npy": read_npy, ".npz": read_npz, ".bin": read_bin}
READ_EXTS = CLOUD_EXTS + (".bin",)


def read_cloud(path, num_points: int = 2048, seed: int = 0, min_points: int = 1) -> Cloud:
    """Read one cloud file into a :class:`Cloud` (points, normals, colours, mesh).

    Point formats (.ply, .pcd, .xyz, .txt, .npy, .npz, .bin) return every point in the
    file; meshes (.off, .obj, and .ply with faces) return ``num_points`` area-weighted
    surface samples (seeded) with face normals, and the mesh. Text/npy columns 4-6 are
    normals when they are unit vectors, else colours when they lie in 0-1 or 0-255. Raises
    DataError for a missing, truncated or corrupt file, an unknown extension, a wrong array
    shape, NaN/Inf values, an empty cloud or fewer than ``min_points`` points.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READ_EXTS:
        raise DataError(
            path, f"unknown extension '{path.suffix}' (supported: {' '.join(READ_EXTS)})"
        )
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a folder, not a file")
    try:
        if ext in MESH_EXTS:
            verts, faces = read_off(path) if ext == ".off" else read_obj(path)
            if len(verts) == 0:
                raise DataError(path, "empty mesh: no vertices")
            cloud = Cloud(verts, mesh=(verts, faces) if len(faces) else None)
        else:
            cloud = READERS[ext](path)
        if cloud.mesh is not None:
            points, normals = sample_mesh(path, *cloud.mesh, num_points, seed)
            cloud = Cloud(points, normals, None, cloud.mesh)
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror or one_line(e)})") from None
    return check_cloud(path, cloud, min_points)
