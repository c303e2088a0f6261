"""OFF and OBJ meshes (PLY meshes are read by :mod:`.ply`), and area-weighted sampling.

:func:`read_mesh` keeps the mesh itself (vertices and triangles) for whoever needs more
than a point sample, such as a renderer; :class:`MeshFile` is a handle that reads it on
demand, so datasets can carry the mesh of every item without holding it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointssl.data.formats.validate import one_line
from pointssl.errors import DataError

MESH_EXTS = (".off", ".obj")


def triangulate(path, polys, num_vertices: int) -> np.ndarray:
    """Fan-triangulate polygons given as index sequences; checks the index range."""
    lens = np.fromiter((len(p) for p in polys), dtype=np.int64, count=len(polys))
    if len(polys) and (lens == 3).all():
        faces = np.asarray(np.stack(polys), dtype=np.int64)
    else:
        tris = []
        for p in polys:
            if len(p) < 3:
                raise DataError(path, f"face with {len(p)} vertices (need at least 3)")
            tris.extend((p[0], p[k], p[k + 1]) for k in range(1, len(p) - 1))
        faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= num_vertices):
        raise DataError(path, f"face index out of range (mesh has {num_vertices} vertices)")
    return faces


def read_off(path: Path):
    """Vertices and triangles of an OFF file, including ModelNet's fused ``OFF1234 5678 0``."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(path, "not a text OFF file (binary OFF is not supported)") from None
    lines = [ln for ln in (raw.split("#", 1)[0].strip() for raw in text.splitlines()) if ln]
    if not lines or "OFF" not in lines[0].split()[0].upper():
        raise DataError(path, "not an OFF file: first line lacks the OFF keyword")
    rest = lines[0][lines[0].upper().index("OFF") + 3 :].split()
    body = lines[1:]
    if not rest:
        if not body:
            raise DataError(path, "truncated OFF file: no vertex/face counts")
        rest, body = body[0].split(), body[1:]
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise DataError(path, f"bad OFF counts line '{' '.join(rest)}'") from None
    if len(body) < nv + nf:
        raise DataError(
            path,
            f"truncated OFF file: header declares {nv} vertices and {nf} "
            f"faces but only {len(body)} data lines follow",
        )
    try:
        verts = np.array([ln.split()[:3] for ln in body[:nv]], dtype=np.float64).reshape(nv, 3)
        ftok = [ln.split() for ln in body[nv : nv + nf]]
        polys = [[int(t) for t in tok[1 : 1 + int(tok[0])]] for tok in ftok]
    except (ValueError, IndexError) as e:
        raise DataError(path, f"malformed OFF data ({one_line(e)})") from None
    if any(len(p) != int(tok[0]) for p, tok in zip(polys, ftok, strict=True)):
        raise DataError(path, "truncated OFF face line: fewer indices than its count says")
    return verts, triangulate(path, polys, nv)


def read_obj(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
        verts = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
    except Exception as e:
        raise DataError(path, f"truncated or corrupt OBJ file ({one_line(e)})") from None
    if len(faces) == 0:
        # trimesh drops the vertices of a face-less OBJ; such a file is a plain point cloud
        rows = [
            ln.split()[1:4]
            for ln in path.read_text(errors="replace").splitlines()
            if ln.startswith("v ")
        ]
        try:
            verts = np.array(rows, dtype=np.float64).reshape(-1, 3)
        except ValueError as e:
            raise DataError(path, f"malformed OBJ vertex line ({one_line(e)})") from None
    return verts, faces


def read_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """``(verts (V, 3) float64, faces (F, 3) int64)`` of an .off, .obj or .ply mesh.

    Raises DataError for a missing or broken file, or a .ply without faces."""
    from pointssl.data.formats.ply import read_ply

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_EXTS + (".ply",):
        raise DataError(path, f"not a mesh file (supported: {' '.join(MESH_EXTS)} .ply)")
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        if ext == ".ply":
            mesh = read_ply(path).mesh
            if mesh is None:
                raise DataError(path, "PLY file has no faces: a point cloud, not a mesh")
            return mesh
        return read_off(path) if ext == ".off" else read_obj(path)
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror or one_line(e)})") from None


@dataclass(frozen=True)
class MeshFile:
    """The mesh behind a sampled cloud, read from ``path`` only when asked."""

    path: str

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        return read_mesh(self.path)


def sample_mesh(path, verts, faces, num_points: int, seed: int):
    """Area-weighted surface samples with the normals of the faces they fall on."""
    import trimesh

    if len(faces) == 0:  # a vertex-only "mesh" is a point cloud
        return verts, None
    if not np.isfinite(verts).all():
        raise DataError(path, "mesh has NaN or Inf vertex coordinates")
    if num_points < 1:
        raise DataError(path, f"num_points must be positive, got {num_points}")
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False, validate=False)
    if not mesh.area > 0:
        raise DataError(path, "mesh has zero surface area")
    pts, fidx = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    normals = np.asarray(mesh.face_normals[fidx], dtype=np.float64)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0)
    return np.asarray(pts), normals
