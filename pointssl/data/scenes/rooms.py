"""Synthetic indoor rooms: floor, four walls and furniture from the synthetic object
collection, placed with random poses; every point has a colour, a normal and a semantic label.

Units are metres, z up, the floor at z = 0 (like ScanNet). Room ``i`` of split ``s`` depends
only on ``(seed, s, i)`` and the generator version. Rooms are cached as one ``.npz`` each under
``cache_dir/rooms-v{ROOMS_VERSION}/<split>-s<seed>-d<density>/room_XXXX.npz``.

Colours do not give the class away: every object, wall and floor draws its base colour from
one shared palette, then gets Lambert shading from its normals and per-point noise.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pointssl.errors import PointSSLError

__all__ = ["ROOM_CLASSES", "ROOM_OBJECTS", "ROOMS_VERSION", "make_room", "load_rooms"]

ROOMS_VERSION = 1
# furniture that stands on a floor (the synthetic collection's indoor categories)
ROOM_OBJECTS = ["chair", "table", "sofa", "bed", "shelf", "desk", "cabinet", "stool", "bench",
                "lamp", "fan"]
ROOM_CLASSES = ["floor", "wall", *ROOM_OBJECTS]
_PALETTE = np.array([[0.80, 0.78, 0.72], [0.55, 0.40, 0.28], [0.35, 0.35, 0.38],
                     [0.70, 0.20, 0.18], [0.20, 0.35, 0.60], [0.85, 0.80, 0.55],
                     [0.30, 0.55, 0.35], [0.92, 0.92, 0.92], [0.15, 0.15, 0.15],
                     [0.60, 0.50, 0.65]], dtype=np.float32)
_LIGHT = np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])


def room_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index),
                                  ROOMS_VERSION, stream])


def _plane(rng, origin, u, v, density, normal):
    """Uniform samples of the rectangle origin + s u + t v, s, t in [0, 1]."""
    area = float(np.linalg.norm(np.cross(u, v)))
    n = max(int(rng.poisson(area * density)), 1)
    st = rng.random((n, 2))
    pts = origin + st[:, :1] * u + st[:, 1:] * v
    return pts, np.tile(normal, (n, 1))


def _shade(rng, base, normals, noise=0.03):
    lam = 0.55 + 0.45 * np.abs(normals @ _LIGHT)
    c = base[None] * lam[:, None] + rng.normal(0, noise, (len(normals), 3))
    return np.clip(c, 0, 1).astype(np.float32)


def make_room(seed: int = 0, split: str = "train", index: int = 0, density: float = 250.0,
              objects: tuple[int, int] = (4, 8)) -> dict:
    """One room: ``points`` (N, 3) float32, ``colors`` (N, 3) in [0, 1], ``normals`` (N, 3),
    ``semantic`` (N,) int64 indices into :data:`ROOM_CLASSES`, ``instance`` (N,) int64, and the
    surfaces they are sampled from, ``mesh_vertices`` (V, 3) float32 / ``mesh_faces`` (F, 3)
    int32 (floor and wall quads, the placed furniture meshes), for ray-cast visibility.

    ``density`` is surface samples per square metre (250: ~6 cm spacing); the room is
    4-7 m x 4-7 m x 2.6-3 m with ``objects`` (min, max) pieces of furniture.
    """
    from pointssl.data.synthetic.objects import make_shape
    from pointssl.data.synthetic.sampling import sample_surface

    rng = room_rng(seed, split, index)
    w, d, h = rng.uniform(4.0, 7.0), rng.uniform(4.0, 7.0), rng.uniform(2.6, 3.0)
    pts, nrm, sem, col, inst = [], [], [], [], []
    mesh_v, mesh_f = [], []  # the surfaces the points are sampled from (for ray casting)

    def surface(verts, faces):
        mesh_f.append(np.asarray(faces, dtype=np.int64) + sum(len(v) for v in mesh_v))
        mesh_v.append(np.asarray(verts, dtype=np.float64))

    def quad(o, u, v):
        surface([o, o + u, o + u + v, o + v], [[0, 1, 2], [0, 2, 3]])

    def add(p, n, label, base, k):
        pts.append(p)
        nrm.append(n)
        sem.append(np.full(len(p), label, dtype=np.int64))
        col.append(_shade(rng, base, n))
        inst.append(np.full(len(p), k, dtype=np.int64))

    add(*_plane(rng, np.array([0, 0, 0.0]), np.array([w, 0, 0.0]), np.array([0, d, 0.0]),
                density, np.array([0, 0, 1.0])), 0, _PALETTE[rng.integers(len(_PALETTE))], 0)
    quad(np.zeros(3), np.array([w, 0, 0.0]), np.array([0, d, 0.0]))
    wall_col = _PALETTE[rng.integers(len(_PALETTE))]
    walls = [([0, 0, 0], [w, 0, 0], [0, 1, 0]), ([0, d, 0], [w, 0, 0], [0, -1, 0]),
             ([0, 0, 0], [0, d, 0], [1, 0, 0]), ([w, 0, 0], [0, d, 0], [-1, 0, 0])]
    for o, u, n in walls:
        add(*_plane(rng, np.array(o, float), np.array(u, float), np.array([0, 0, h]), density,
                    np.array(n, float)), 1, wall_col, 1)
        quad(np.array(o, float), np.array(u, float), np.array([0, 0, h]))
    placed: list[tuple[float, float, float]] = []  # (x, y, radius) footprints
    n_obj = int(rng.integers(objects[0], objects[1] + 1))
    for k in range(n_obj):
        cat = ROOM_OBJECTS[int(rng.integers(len(ROOM_OBJECTS)))]
        mesh, _ = make_shape(cat, np.random.default_rng(int(rng.integers(2**63 - 1))))
        ext = mesh.vertices.max(0) - mesh.vertices.min(0)
        if ext[0] > w - 0.4 or ext[1] > d - 0.4:
            continue
        r = 0.5 * float(np.hypot(ext[0], ext[1]))
        for _ in range(30):  # a free spot inside the room (footprint circles do not overlap)
            x = rng.uniform(min(r, w / 2), max(w - r, w / 2))
            y = rng.uniform(min(r, d / 2), max(d - r, d / 2))
            if all(np.hypot(x - a, y - b) > r + c for a, b, c in placed):
                break
        else:
            continue
        placed.append((x, y, r))
        n = max(int(mesh.area * density), 64)
        fp = np.zeros(len(mesh.faces), dtype=np.int64)
        p, nn, _ = sample_surface(mesh, fp, n, np.random.default_rng(int(rng.integers(2**63))))
        add(p + [x, y, 0.0], nn, ROOM_CLASSES.index(cat), _PALETTE[rng.integers(len(_PALETTE))],
            2 + k)
        surface(np.asarray(mesh.vertices) + [x, y, 0.0], mesh.faces)
    return {"points": np.concatenate(pts).astype(np.float32),
            "normals": np.concatenate(nrm).astype(np.float32),
            "colors": np.concatenate(col), "semantic": np.concatenate(sem),
            "instance": np.concatenate(inst),
            "mesh_vertices": np.concatenate(mesh_v).astype(np.float32),
            "mesh_faces": np.concatenate(mesh_f).astype(np.int32)}


_ROOM_KEYS = ("points", "normals", "colors", "semantic", "instance", "mesh_vertices",
              "mesh_faces")


class RoomMesh:
    """``meshes[i]`` of the rooms: ``read()`` gives the room's (vertices, faces)."""

    def __init__(self, items, i: int):
        self.items, self.i = items, i

    def read(self):
        room = self.items.get(self.i)
        return room["mesh_vertices"], room["mesh_faces"]


def _room_cached(path: Path, seed, split, index, density) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in _ROOM_KEYS}
    except Exception:  # missing, truncated, garbled or without meshes: (re)generate
        pass
    from pointssl.utils import atomic_savez

    room = make_room(seed, split, index, density)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(path, **room)
    return room


def room_path(cache_dir, seed: int, split: str, index: int, density: float) -> Path:
    return (Path(cache_dir) / f"rooms-v{ROOMS_VERSION}" / f"{split}-s{seed}-d{density:g}"
            / f"room_{index:04d}.npz")


def load_rooms(split: str = "train", rooms: int | None = None, seed: int = 0,
               density: float = 250.0, cache_dir=None, lazy: bool = True):
    """``rooms`` synthetic rooms of ``split`` (train 32, test 8 by default) as a CloudSet
    (colours, normals, per-point ``semantic`` labels; ``class_names`` = the semantic
    classes; per-cloud labels -1). Each room is generated once and cached."""
    from pointssl.data.datasets.cloudset import CloudSet, LazyItems
    from pointssl.utils import cache_dir as default_cache

    if split not in ("train", "test", "val"):
        raise PointSSLError(f"synthetic rooms: split {split!r} is not train, val or test")
    n = rooms if rooms is not None else {"train": 32, "val": 8, "test": 8}[split]
    base = Path(cache_dir) if cache_dir is not None else default_cache()
    paths = [room_path(base, seed, split, i, density) for i in range(n)]
    items = LazyItems(lambda i: _room_cached(paths[i], seed, split, i, density), n)
    if lazy:
        fields = {k: items.field(k) for k in ("points", "normals", "colors", "semantic")}
    else:
        got = [items.read(i) for i in range(n)]
        fields = {k: [g[k] for g in got] for k in ("points", "normals", "colors", "semantic")}
    return CloudSet(labels=np.full(n, -1), class_names=list(ROOM_CLASSES),
                    meshes=[RoomMesh(items, i) for i in range(n)],
                    sources=[f"synthetic_rooms/{split}-s{seed}/room_{i:04d}" for i in range(n)],
                    up_axis="z", **fields)
