"""Mesh building blocks for the synthetic shapes: affine maps, cached unit primitives and
a builder that collects closed pieces with part labels."""

from __future__ import annotations

import functools

import numpy as np
import trimesh
from trimesh import creation


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        r = [[1, 0, 0], [0, c, -s], [0, s, c]]
    elif axis == "y":
        r = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    else:
        r = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    return np.array(r, dtype=np.float64)


def _tf(t=(0.0, 0.0, 0.0), r: np.ndarray | None = None, s=(1.0, 1.0, 1.0)) -> np.ndarray:
    """4x4 affine map x -> r @ (s * x) + t."""
    m = np.eye(4)
    m[:3, :3] = (np.eye(3) if r is None else r) @ np.diag(np.broadcast_to(s, 3))
    m[:3, 3] = t
    return m


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@functools.cache
def _unit(kind: str, n: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit cube, unit cylinder (radius 1, height 1, along z) or icosphere, centred."""
    if kind == "box":
        m = creation.box()
    elif kind == "cyl":
        m = creation.cylinder(1.0, 1.0, sections=n)
    else:
        m = creation.icosphere(n)
    v, f = np.array(m.vertices, dtype=np.float64), np.array(m.faces, dtype=np.int64)
    v.flags.writeable = f.flags.writeable = False
    return v, f


def _align_z(u: np.ndarray) -> np.ndarray:
    """Rotation taking +z to the unit vector ``u``."""
    c = float(u[2])
    if c < -1 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, 0, u[0]], [0, 0, u[1]], [-u[0], -u[1], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def _is_convex(v: np.ndarray, f: np.ndarray) -> bool:
    """Whether a closed, outward-oriented piece is convex: no vertex above any face plane."""
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    height = v @ n.T - np.einsum("ij,ij->i", v[f[:, 0]], n)
    return bool(height.max() <= 1e-9 * max(1.0, float(np.ptp(v, axis=0).max())))


class _Builder:
    """Collects closed pieces, each with one local part index, into one mesh."""

    def __init__(self):
        self.verts: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.parts: list[np.ndarray] = []
        self.convex: list[bool] = []
        self.count = 0

    def add(self, part, v, f, m: np.ndarray | None = None, convex: bool | None = None) -> None:
        """``part``: a local part index, or a function of the face centroids that returns
        one per face (for one piece that spans two parts, such as a bottle's body and neck)."""
        v = np.asarray(v, dtype=np.float64)
        f = np.asarray(f, dtype=np.int64)
        if m is not None:
            v = v @ m[:3, :3].T + m[:3, 3]
        # Every piece is closed, so a negative volume means inward faces (mirrors, revolves).
        if _signed_volume(v, f) < 0:
            f = f[:, ::-1]
        self.verts.append(v)
        self.faces.append(f + self.count)
        if callable(part):
            labels = np.asarray(part(v[f].mean(1)), dtype=np.int64)
        else:
            labels = np.full(len(f), part, dtype=np.int64)
        self.parts.append(labels)
        self.convex.append(_is_convex(v, f) if convex is None else convex)
        self.count += len(v)

    def mesh(self, part, mesh: trimesh.Trimesh, m: np.ndarray | None = None) -> None:
        self.add(part, mesh.vertices, mesh.faces, m)

    # Convex primitives are affine images of cached unit meshes: building a fresh trimesh
    # object per leg costs more than the rest of the shape.
    def box(self, part, size, center=(0, 0, 0), r=None) -> None:
        self.add(part, *_unit("box"), _tf(center, r, size), convex=True)

    def cyl(self, part, p0, p1, radius, sections=12) -> None:
        """Cylinder between two points."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        length = float(np.linalg.norm(p1 - p0))
        m = _tf((p0 + p1) / 2, _align_z((p1 - p0) / length), (radius, radius, length))
        self.add(part, *_unit("cyl", sections), m, convex=True)

    def ellipse_cyl(self, part, rx, ry, height, center, sections=24) -> None:
        self.add(part, *_unit("cyl", sections), _tf(center, s=(rx, ry, height)), convex=True)

    def ellipsoid(self, part, radii, center, r=None, subdiv=2) -> None:
        self.add(part, *_unit("ico", subdiv), _tf(center, r, radii), convex=True)

    def revolve(self, part, profile, m=None, sections=24) -> None:
        """Solid of revolution about local z from an (r, z) profile that starts and ends on
        the axis."""
        self.mesh(part, creation.revolve(np.asarray(profile, float), sections=sections), m)

    def prism(self, part, poly, thickness, m=None) -> None:
        """Extrude a convex 2-D polygon (local x, y) by ``thickness`` along local z,
        centred on z = 0 (no shapely needed: convex caps are fans)."""
        p = np.asarray(poly, dtype=np.float64)
        n = len(p)
        z = np.full((n, 1), thickness / 2.0)
        v = np.vstack([np.hstack([p, -z]), np.hstack([p, z])])
        i = np.arange(n)
        j = (i + 1) % n
        fan = np.stack([np.zeros(n - 2, int), np.arange(1, n - 1), np.arange(2, n)], 1)
        f = np.vstack(
            [
                fan[:, ::-1],
                fan + n,
                np.stack([i, j, j + n], 1),
                np.stack([i, j + n, i + n], 1),
            ]
        )
        self.add(part, v, f, m)

    def tube(self, part, path, radius, sections=10) -> None:
        """Capped tube along a polyline (rotation-minimising frames)."""
        path = np.asarray(path, dtype=np.float64)
        n = len(path)
        tang = np.gradient(path, axis=0)
        tang /= np.linalg.norm(tang, axis=1, keepdims=True)
        ref = np.array([0.0, 0.0, 1.0]) if abs(tang[0, 2]) < 0.9 else np.array([1.0, 0, 0])
        normal = np.cross(tang[0], ref)
        normal /= np.linalg.norm(normal)
        ang = np.linspace(0, 2 * np.pi, sections, endpoint=False)
        rings = []
        for k in range(n):
            normal = normal - normal @ tang[k] * tang[k]
            normal /= np.linalg.norm(normal)
            binormal = np.cross(tang[k], normal)
            ring = np.cos(ang)[:, None] * normal + np.sin(ang)[:, None] * binormal
            rings.append(path[k] + radius * ring)
        v = np.vstack(rings + [path[:1], path[-1:]])
        s = sections
        i = np.arange(s)
        j = (i + 1) % s
        faces = []
        for k in range(n - 1):
            a, b = k * s, (k + 1) * s
            faces += [np.stack([a + i, a + j, b + j], 1), np.stack([a + i, b + j, b + i], 1)]
        c0, c1 = n * s, n * s + 1
        faces.append(np.stack([np.full(s, c0), j, i], 1))
        last = (n - 1) * s
        faces.append(np.stack([np.full(s, c1), last + i, last + j], 1))
        self.add(part, v, np.vstack(faces))

    def build(self) -> tuple[trimesh.Trimesh, np.ndarray]:
        v = np.vstack(self.verts)
        f = np.vstack(self.faces)
        p = np.concatenate(self.parts)
        piece = np.concatenate([np.full(len(x), i) for i, x in enumerate(self.faces)])
        area2 = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
        keep = area2 > 1e-12 * max(1.0, float(area2.max()))
        meta = {"pieces": piece[keep], "convex": np.array(self.convex)}
        return trimesh.Trimesh(v, f[keep], process=False, metadata=meta), p[keep]


def _arc(center, radius_x, radius_z, a0, a1, n=12, y=0.0) -> np.ndarray:
    """Points on an elliptic arc in the x-z plane."""
    t = np.linspace(a0, a1, n)
    return np.stack(
        [center[0] + radius_x * np.cos(t), np.full(n, y), center[1] + radius_z * np.sin(t)], 1
    )
