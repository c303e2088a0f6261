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
from pointssl.data.synthetic.sampling import sample_shape, shape_rng
from pointssl.errors import PointSSLError
from pointssl.utils import atomic_savez
from pointssl.utils import cache_dir as default_cache

DEFAULT_SHAPES_PER_CLASS = {"train": 64, "test": 32}


def _generate(split, num_points, per_class, seed, categories, rotate_deg, tilt_deg):
    pts, nrm, parts, labels = [], [], [], []
    for label, cat in enumerate(categories):
        for i in range(per_class):
            mesh, fp = make_shape(cat, shape_rng(seed, split, cat, i), rotate_deg, tilt_deg)
            p, n, q = sample_shape(mesh, fp, num_points, shape_rng(seed, split, cat, i, 1))
            pts.append(p)
            nrm.append(n)
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
    moved into the cloud's frame (centred, unit sphere; to float32 precision)."""

    seed: int
    split: str
    category: str
    index: int
    num_points: int
    rotate_deg: float = 360.0
    tilt_deg: float = 0.0

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        key = (self.seed, self.split, self.category, self.index)
        mesh, fp = make_shape(self.category, shape_rng(*key), self.rotate_deg, self.tilt_deg)
        # the cloud was normalised by its own sample: redraw it to recover the same map
        raw, _, _ = sample_shape(mesh, fp, self.num_points, shape_rng(*key, 1), normalize=False)
        raw = raw.astype(np.float64)
        centre = raw.mean(0)
        scale = np.linalg.norm(raw - centre, axis=1).max()
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
) -> CloudSet:
    """The synthetic collection for ``split`` as a :class:`CloudSet` with normals and parts.

    ``shapes_per_class`` defaults to 64 for train and 32 otherwise. Results are cached as one
    npz per option set in ``cache_dir`` (default ``pointssl.utils.cache_dir("synthetic")``);
    ``cache_dir=False`` disables caching. Each item keeps a :class:`SyntheticMesh` handle.
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
    }
    args = (split, int(num_points), int(shapes_per_class), int(seed), cats, rotate_deg, tilt_deg)
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
        meshes=[SyntheticMesh(int(seed), split, c, i, int(num_points), rotate_deg, tilt_deg)
                for c in cats for i in range(k)],
        part_names=list(PART_NAMES),
    )
