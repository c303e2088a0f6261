"""Per-shape random streams and area-weighted sampling of the visible surface."""

from __future__ import annotations

import zlib

import numpy as np
import trimesh


def _key(text: str) -> int:
    # crc32 rather than hash(): Python salts str hashes per process.
    return zlib.crc32(text.encode())


def shape_rng(seed: int, split: str, category: str, index: int, stream: int = 0):
    """The generator that shape ``index`` of ``(split, category)`` is drawn from."""
    return np.random.default_rng([int(seed), _key(split), _key(category), int(index), stream])


def _hidden(mesh: trimesh.Trimesh, pts: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Which samples no one could see: inside another convex piece, or on a face pressed
    against an opposite face of one (a mattress bottom on a frame top)."""
    pieces, convex = mesh.metadata["pieces"], mesh.metadata["convex"]
    nrm = mesh.face_normals
    scale = float(np.ptp(mesh.vertices, axis=0).max())
    eps = 1e-7 * scale
    hidden = np.zeros(len(pts), dtype=bool)
    own = pieces[face]
    tri = mesh.triangles
    for k in np.flatnonzero(convex):
        fk = np.flatnonzero(pieces == k)
        lo, hi = tri[fk].min((0, 1)) - eps, tri[fk].max((0, 1)) + eps
        cand = np.flatnonzero((own != k) & ~hidden & np.all((pts >= lo) & (pts <= hi), axis=1))
        if len(cand) == 0:
            continue
        nk = nrm[fk]
        d = pts[cand] @ nk.T - np.einsum("ij,ij->i", tri[fk, 0], nk)
        dmax = d.max(1)
        inside = dmax < -eps
        touching = (d >= -eps) & (nrm[face[cand]] @ nk.T < -0.99)
        hidden[cand] = inside | ((dmax <= eps) & touching.any(1))
    return hidden


def sample_surface(mesh: trimesh.Trimesh, face_parts: np.ndarray, num_points: int, rng):
    """Area-weighted sample of the visible surface in mesh coordinates: points ``(N, 3)`` and
    unit face normals ``(N, 3)`` float64, part ids ``(N,)`` int64.

    Meshes from :func:`make_shape` carry their pieces, so surface hidden inside or under
    other pieces is not sampled; other meshes are sampled everywhere.
    """
    gen = np.random.default_rng(int(rng.integers(2**63 - 1)))
    filtered = "pieces" in mesh.metadata and "convex" in mesh.metadata
    got_pts, got_face, have, keep_rate = [], [], 0, 0.75
    for attempt in range(20):
        last = not filtered or attempt == 19
        want = num_points - have
        if not last:
            want = int(want / keep_rate * 1.1) + 16
        pts, face = trimesh.sample.sample_surface(mesh, want, seed=gen)
        if not last:
            keep = ~_hidden(mesh, pts, face)
            keep_rate = max(0.05, float(keep.mean()))
            pts, face = pts[keep], face[keep]
        got_pts.append(pts)
        got_face.append(face)
        have += len(pts)
        if have >= num_points:
            break
    pts = np.concatenate(got_pts)[:num_points]
    face = np.concatenate(got_face)[:num_points]
    tri = mesh.triangles[face]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return pts, nrm, face_parts[face].astype(np.int64)


def normalize_cloud(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(pts - centre) / scale`` centred on the mean, in the unit sphere; also centre, scale."""
    centre = pts.mean(0)
    out = pts - centre
    scale = np.linalg.norm(out, axis=1).max()
    out /= scale
    return out, centre, float(scale)


def sample_shape(
    mesh: trimesh.Trimesh, face_parts: np.ndarray, num_points: int, rng, normalize: bool = True
):
    """:func:`sample_surface`, centred and scaled into the unit sphere (unless
    ``normalize=False``, which keeps mesh coordinates), as float32 points and normals."""
    pts, nrm, parts = sample_surface(mesh, face_parts, num_points, rng)
    if normalize:
        pts = normalize_cloud(pts)[0]
    return pts.astype(np.float32), nrm.astype(np.float32), parts
