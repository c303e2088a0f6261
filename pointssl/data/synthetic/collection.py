"""The collection: every shape of a split, sampled, as a CloudSet; cached as one npz per
option set under ``pointssl.utils.cache_dir("synthetic")``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointssl.data.datasets.cloudset import CloudSet
from pointssl.data.synthetic.objects import (
    _BUILDERS,
    CATEGORIES,
    GENERATOR_VERSION,
    PART_NAMES,
    make_shape,
)
from pointssl.data.synthetic.sampling import normalize_cloud, sample_surface, shape_rng
from pointssl.data.synthetic.scan import OVERSAMPLE, scan_settings, simulate_scan
from pointssl.errors import PointSSLError
from pointssl.utils import atomic_savez
from pointssl.utils import cache_dir as default_cache

DEFAULT_SHAPES_PER_CLASS = {"train": 64, "test": 32}


def shape_cloud(seed, split, category, index, num_points, rotate_deg=360.0, tilt_deg=0.0,
                scan=True):
    """Shape ``index`` of ``(split, category)``: ``(points, normals, parts, mesh, centre,
    scale)``, the cloud being ``(mesh points - centre) / scale`` up to scan noise.

    ``scan=False`` is the v2 cloud: ``num_points`` samples of the visible surface. ``scan=True``
    draws ``OVERSAMPLE`` times as many and hands them to :func:`scan.simulate_scan` (its own
    random stream), so the mesh and the dense sample are the same with or without the scan.
    """
    mesh, fp = make_shape(category, shape_rng(seed, split, category, index), rotate_deg, tilt_deg)
    if not scan:
        p, n, q = sample_surface(mesh, fp, num_points, shape_rng(seed, split, category, index, 1))
        p, centre, scale = normalize_cloud(p)
        return p, n, q, mesh, centre, scale
    dense = sample_surface(mesh, fp, num_points * OVERSAMPLE,
                           shape_rng(seed, split, category, index, 1))
    p, n, q, info = simulate_scan(*dense, num_points, shape_rng(seed, split, category, index, 2))
    return p, n, q, mesh, info["centre"], info["scale"]


def _generate(split, num_points, per_class, seed, categories, rotate_deg, tilt_deg, scan):
    pts, nrm, parts, labels = [], [], [], []
    for label, cat in enumerate(categories):
        for i in range(per_class):
            p, n, q = shape_cloud(seed, split, cat, i, num_points, rotate_deg, tilt_deg,
                                  scan)[:3]
            pts.append(p.astype(np.float32))
            nrm.append(n.astype(np.float32))
            parts.append(q)
            labels.append(label)
    return {
        "points": np.stack(pts),
        "normals": np.stack(nrm),
        "parts": np.stack(parts).astype(np.int16),
        "labels": np.asarray(labels, dtype=np.int64),
    }


def _read_cache(path: Path, expect: dict) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("points", "normals", "parts", "labels")}
            meta = json.loads(str(z["meta"]))
    except Exception:  # a truncated/garbled file of any kind: regenerate
        return None
    m = len(arrays["labels"])
    ok = (
        meta == expect
        and arrays["points"].shape == (m, expect["num_points"], 3)
        and arrays["normals"].shape == arrays["points"].shape
        and arrays["parts"].shape == (m, expect["num_points"])
    )
    return arrays if ok else None


def _write_cache(path: Path, arrays: dict, meta: dict) -> None:
    try:
        atomic_savez(path, meta=np.array(json.dumps(meta)), **arrays)
    except OSError as e:  # read-only or full disk: still usable, just not cached
        warnings.warn(f"could not cache synthetic data at {path}: {e}", stacklevel=3)


@dataclass(frozen=True)
class SyntheticMesh:
    """The mesh a synthetic cloud was sampled from, rebuilt on ``read()`` from its key and
    moved into the cloud's frame (centred, unit sphere; to float32 precision, and but for
    the scan's jitter and outliers where ``scan``)."""

    seed: int
    split: str
    category: str
    index: int
    num_points: int
    rotate_deg: float = 360.0
    tilt_deg: float = 0.0
    scan: bool = True

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        # the cloud was normalised by its own sample: redraw it to recover the same map
        _, _, _, mesh, centre, scale = shape_cloud(
            self.seed, self.split, self.category, self.index, self.num_points,
            self.rotate_deg, self.tilt_deg, self.scan)
        return (np.asarray(mesh.vertices) - centre) / scale, np.asarray(mesh.faces, np.int64)


def load_synthetic(
    split: str = "train",
    num_points: int = 1024,
    shapes_per_class: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    *,
    categories: list[str] | None = None,
    rotate_deg: float = 360.0,
    tilt_deg: float = 0.0,
    scan: bool = True,
) -> CloudSet:
    """The synthetic collection for ``split`` as a :class:`CloudSet` with normals and parts.

    ``scan=True`` (the benchmark): every cloud is a simulated scan (:mod:`.scan`: partial
    view, occluder, uneven density, jitter, flying-pixel outliers); ``scan=False``: clean
    samples of the whole visible surface. ``scan=False, categories=V2_CATEGORIES`` gives
    generator v2's collection, byte for byte. ``shapes_per_class`` defaults to 64 for train
    and 32 otherwise. Results are cached as one npz per option set in ``cache_dir`` (default
    ``pointssl.utils.cache_dir("synthetic")``); ``cache_dir=False`` disables caching. Each
    item keeps a :class:`SyntheticMesh` handle.
    """
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise PointSSLError(f"synthetic split must be a plain name like 'train', got {split!r}")
    if shapes_per_class is None:
        shapes_per_class = DEFAULT_SHAPES_PER_CLASS.get(split, 32)
    if int(num_points) < 1 or int(shapes_per_class) < 1:
        raise PointSSLError(
            f"synthetic data needs num_points >= 1 and shapes_per_class >= 1, got "
            f"{num_points} and {shapes_per_class}"
        )
    cats = list(CATEGORIES if categories is None else categories)
    bad = [c for c in cats if c not in _BUILDERS]
    if bad or not cats:
        raise PointSSLError(f"unknown synthetic categories {bad}; choose from {CATEGORIES}")
    meta = {
        "version": GENERATOR_VERSION,
        "split": split,
        "num_points": int(num_points),
        "shapes_per_class": int(shapes_per_class),
        "seed": int(seed),
        "categories": cats,
        "rotate_deg": float(rotate_deg),
        "tilt_deg": float(tilt_deg),
        # the simulator's constants too, so that editing one cannot reuse a stale cache
        "scan": scan_settings() if scan else False,
    }
    args = (split, int(num_points), int(shapes_per_class), int(seed), cats, rotate_deg,
            tilt_deg, bool(scan))
    arrays = None
    path = None
    if cache_dir is not False:
        digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{split}_n{num_points}_k{shapes_per_class}_s{seed}_v{GENERATOR_VERSION}"
        path = Path(cache_dir or default_cache("synthetic")) / f"{name}_{digest}.npz"
        if path.exists():
            arrays = _read_cache(path, meta)
    if arrays is None:
        arrays = _generate(*args)
        if path is not None:
            _write_cache(path, arrays, meta)
    k = int(shapes_per_class)
    return CloudSet(
        points=list(arrays["points"].astype(np.float32)),
        labels=arrays["labels"],
        class_names=cats,
        normals=list(arrays["normals"].astype(np.float32)),
        parts=list(arrays["parts"].astype(np.int64)),
        sources=[f"synthetic/{c}/{split}/{i:04d}" for c in cats for i in range(k)],
        meshes=[SyntheticMesh(int(seed), split, c, i, int(num_points), rotate_deg, tilt_deg,
                              bool(scan)) for c in cats for i in range(k)],
        part_names=list(PART_NAMES),
    )
