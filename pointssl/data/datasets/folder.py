"""Users' own data: every cloud or mesh file under a folder, classes from sub-folders."""

from __future__ import annotations

import warnings

import numpy as np

from pointssl.data.datasets.base import DATASETS, require_dir, require_root
from pointssl.data.datasets.cloudset import CloudSet
from pointssl.data.formats import (
    CLOUD_EXTS,
    MESH_EXTS,
    DataWarning,
    MeshFile,
    data_files,
    is_name_list,
    is_side_file,
    read_cached,
)
from pointssl.data.views.transforms import normalize_unit_sphere
from pointssl.errors import DataError


def load_folder(
    root,
    num_points: int = 2048,
    seed: int = 0,
    min_points: int = 1,
    normalize: bool = True,
    cache_dir=None,
) -> CloudSet:
    """Every cloud/mesh file under ``root`` (recursively), for users' own data.

    The class is the first-level sub-folder; files directly in ``root`` are unlabeled
    (-1). Clouds are scaled to the unit sphere unless ``normalize`` is False; mesh files
    keep a handle to their mesh. Bad files are skipped, each reported as one DataWarning
    line, and listed as DataErrors in the returned set's ``errors``. Raises DataError when
    root is missing or no file is readable.
    """
    root = require_dir(root)
    files, other = data_files(root, CLOUD_EXTS)
    files = [f for f in files if not (f.suffix.lower() == ".txt" and is_name_list(f))]
    other = [f for f in other if not is_side_file(f)]
    if other:
        exts = " ".join(sorted({f.suffix or f.name for f in other}))
        warnings.warn(
            f"{root}: ignored {len(other)} files with unsupported extensions ({exts})",
            DataWarning,
            stacklevel=2,
        )
    if not files:
        raise DataError(root, f"no point-cloud files ({' '.join(CLOUD_EXTS)}) found")
    subdir = [
        f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else None for f in files
    ]
    class_names = sorted({s for s in subdir if s is not None})
    index = {c: i for i, c in enumerate(class_names)}
    points, normals, labels, sources, meshes, errors = [], [], [], [], [], []
    for f, s in zip(files, subdir, strict=True):
        try:
            p, n = read_cached(f, num_points, seed, cache_dir, min_points)
        except DataError as e:
            errors.append(e)
            warnings.warn(str(e), DataWarning, stacklevel=2)
            continue
        points.append(normalize_unit_sphere(p) if normalize else p)
        normals.append(n)
        labels.append(index[s] if s is not None else -1)
        sources.append(str(f))
        meshes.append(MeshFile(str(f)) if f.suffix.lower() in MESH_EXTS else None)
    if not points:
        raise DataError(
            root, f"none of the {len(files)} files is readable (first problem: {errors[0]})"
        )
    has_normals = all(n is not None for n in normals)
    return CloudSet(
        points=points,
        labels=np.array(labels, dtype=np.int64),
        class_names=class_names,
        normals=normals if has_normals else None,
        sources=sources,
        meshes=meshes if any(m is not None for m in meshes) else None,
        errors=errors,
    )


@DATASETS.register("folder")
def folder(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    """``root/split`` when that folder exists, else all of ``root``."""
    root = require_root("folder", root)
    if split and (root / split).is_dir():
        root = root / split
    return load_folder(root, num_points or 2048, seed, **options)
