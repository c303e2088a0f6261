"""Users' own data: every cloud or mesh file under a folder, classes from sub-folders.

Three layouts: ``{train,test}/<class>/FILES`` ("split/class"), ``<class>/{train,test}/FILES``
("class/split"; ModelNet's own), or ``<class>/FILES`` with no split. Class indices come from
class names: the sorted classes of the train split, the same in every split.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pointssl.data.datasets.base import DATASETS, require_dir, require_root, subfolders
from pointssl.data.datasets.cloudset import CloudSet, check_up_axis
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
from pointssl.errors import DataError, PointSSLError

# Folder names that mark a split; a layout is recognised by a train/ or test/ folder.
SPLIT_NAMES = ("train", "test", "val")
ALL = ("all", "", None)


def split_layout(root) -> str | None:
    """"split/class" when ``root/train`` or ``root/test`` exists, "class/split" when some
    ``root/<class>/{train,test}`` does, else None (a folder with no split)."""
    root = Path(root)
    if not root.is_dir():
        return None
    if any((root / s).is_dir() for s in ("train", "test")):
        return "split/class"
    if any((root / c / s).is_dir() for c in subfolders(root) for s in ("train", "test")):
        return "class/split"
    return None


def folder_splits(root) -> list[str]:
    """The splits a folder holds (e.g. ``["test", "train"]``); [] when it has none."""
    root = Path(root)
    layout = split_layout(root)
    if layout is None:
        return []
    if layout == "split/class":
        return [s for s in sorted(SPLIT_NAMES) if (root / s).is_dir()]
    return [s for s in sorted(SPLIT_NAMES) if any((root / c / s).is_dir()
                                                  for c in subfolders(root))]


def _scan(root: Path) -> list[Path]:
    """Data files under root; unsupported ones are reported in one DataWarning line."""
    files, other = data_files(root, CLOUD_EXTS)
    files = [f for f in files if not (f.suffix.lower() == ".txt" and is_name_list(f))]
    other = [f for f in other if not is_side_file(f)]
    if other:
        exts = " ".join(sorted({f.suffix or f.name for f in other}))
        warnings.warn(
            f"{root}: ignored {len(other)} files with unsupported extensions ({exts})",
            DataWarning,
            stacklevel=3,
        )
    return files


def _read(root: Path, files, labels, class_names, num_points, seed, min_points, normalize,
          cache_dir, strict) -> CloudSet:
    """The CloudSet of ``files`` with ``labels``; a bad file is skipped with a DataWarning
    (or raised when ``strict``: a benchmark split must be complete)."""
    points, normals, kept, sources, meshes, errors = [], [], [], [], [], []
    for f, y in zip(files, labels, strict=True):
        try:
            p, n = read_cached(f, num_points, seed, cache_dir, min_points)
        except DataError as e:
            if strict:
                raise
            errors.append(e)
            warnings.warn(str(e), DataWarning, stacklevel=3)
            continue
        points.append(normalize_unit_sphere(p) if normalize else p)
        normals.append(n)
        kept.append(y)
        sources.append(str(f))
        meshes.append(MeshFile(str(f)) if f.suffix.lower() in MESH_EXTS else None)
    if not points:
        raise DataError(
            root, f"none of the {len(files)} files is readable (first problem: {errors[0]})"
        )
    has_normals = all(n is not None for n in normals)
    return CloudSet(
        points=points,
        labels=np.array(kept, dtype=np.int64),
        class_names=list(class_names),
        normals=normals if has_normals else None,
        sources=sources,
        meshes=meshes if any(m is not None for m in meshes) else None,
        errors=errors,
    )


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
    files = _scan(root)
    if not files:
        raise DataError(root, f"no point-cloud files ({' '.join(CLOUD_EXTS)}) found")
    subdir = [
        f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else None for f in files
    ]
    class_names = sorted({s for s in subdir if s is not None})
    index = {c: i for i, c in enumerate(class_names)}
    labels = [index[s] if s is not None else -1 for s in subdir]
    return _read(root, files, labels, class_names, num_points, seed, min_points, normalize,
                 cache_dir, strict=False)


def _place(parts: tuple, layout: str):
    """(split, class or None) of a file's path parts below root; None when outside a split."""
    if layout == "split/class":
        if len(parts) >= 2 and parts[0] in SPLIT_NAMES:
            return parts[0], parts[1] if len(parts) > 2 else None
    elif len(parts) >= 3 and parts[1] in SPLIT_NAMES:
        return parts[1], parts[0]
    return None


def _few(names, k: int = 10) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def load_split_tree(
    root,
    split: str = "train",
    num_points: int = 2048,
    seed: int = 0,
    min_points: int = 1,
    normalize: bool = True,
    cache_dir=None,
    strict: bool = False,
    class_names: list[str] | None = None,
) -> CloudSet:
    """One split of a ``{train,test}/<class>/FILES`` or ``<class>/{train,test}/FILES`` tree
    (any cloud/mesh file type; "all": every split).

    Class indices come from ``class_names`` (a layout's shape-names file) or else the sorted
    classes of the train split (of every split when there is no train split), so they are
    the same in every split. Files directly in a split folder are unlabeled (-1). Raises
    PointSSLError when root has no split, DataError for a split it does not hold, a class
    unknown to the class list (naming it), or no readable file; ``strict``: for the first
    unreadable file too (otherwise it is skipped with a DataWarning, as :func:`load_folder`).
    """
    root = require_dir(root)
    layout = split_layout(root)
    if layout is None:
        raise no_split_error(root)
    placed, outside = [], 0
    for f in _scan(root):
        where = _place(f.relative_to(root).parts, layout)
        if where is None:
            outside += 1
        else:
            placed.append((f, *where))
    if outside:
        warnings.warn(
            f"{root}: ignored {outside} files outside the split folders "
            f"({'/'.join(SPLIT_NAMES)})",
            DataWarning,
            stacklevel=2,
        )
    held = sorted({s for _, s, _ in placed})
    if split not in ALL and split not in held:
        raise DataError(root, f"no '{split}' split here (this {layout} layout holds: "
                              f"{', '.join(held) or 'no data files'})")
    listed = class_names is not None
    if not listed:
        ref = "train" if "train" in held else None
        class_names = sorted({c for _, s, c in placed if c is not None and ref in (None, s)})
    index = {c: i for i, c in enumerate(class_names)}
    chosen = [(f, s, c) for f, s, c in placed if split in ALL or s == split]
    for _, s, c in chosen:
        if c is not None and c not in index:
            where = root / s / c if layout == "split/class" else root / c / s
            known = "in the layout's class list" if listed else "a class of the train split"
            raise DataError(where, f"class '{c}' is not {known} ({_few(class_names)}); "
                                   "class indices come from class names")
    if not chosen:
        raise DataError(root, f"no point-cloud files in the '{split}' split")
    labels = [index[c] if c is not None else -1 for _, _, c in chosen]
    return _read(root, [f for f, _, _ in chosen], labels, class_names, num_points, seed,
                 min_points, normalize, cache_dir, strict)


def no_split_error(root) -> PointSSLError:
    return PointSSLError(
        f"{root}: this folder has no train/test split (no train/ or test/ folder at the top "
        "or under each class); pass --holdout F to hold out a seeded, stratified fraction F "
        "as the test set (or use split 'all' for everything)"
    )


@DATASETS.register("folder")
def folder(root, split="train", num_points=None, seed=0, up_axis=None, **options) -> CloudSet:
    """One split of a split tree (:func:`load_split_tree`; "all": every split); a folder
    with no split only as "all" (:func:`load_folder`), else PointSSLError: it has no test
    split to give. ``up_axis``: the data's up axis when known (default None: unknown)."""
    root = require_root("folder", root)
    if split_layout(root) is not None:
        cs = load_split_tree(root, split, num_points or 2048, seed, **options)
    elif split in ALL:
        cs = load_folder(root, num_points or 2048, seed, **options)
    else:
        raise no_split_error(root)
    cs.up_axis = check_up_axis(up_axis)
    return cs
