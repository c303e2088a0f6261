"""ModelNet in its public layouts: PointNet's h5, ``modelnet40_normal_resampled`` text files,
and file trees ``<class>/{train,test}/FILES`` (the raw .off meshes, or clouds of any type) or
``{train,test}/<class>/FILES``. ``modelnet10`` on a ModelNet40 folder selects the ten
ModelNet10 classes: their ModelNet40 split is the ModelNet10 benchmark (3,991 / 908)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from pointssl.data.datasets.base import (
    DATASETS,
    read_names,
    require_dir,
    require_root,
    subfolders,
)
from pointssl.data.datasets.cloudset import CloudSet, check_up_axis
from pointssl.data.datasets.folder import load_split_tree, split_layout
from pointssl.data.formats import DataWarning, MeshFile, read_cached, read_cloud, read_h5
from pointssl.data.formats.validate import one_line
from pointssl.data.views.transforms import normalize_unit_sphere
from pointssl.errors import DataError

# ModelNet10's classes in its own (alphabetical) label order.
MODELNET10 = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa",
              "table", "toilet")
# Up axes, measured on the shared data (smallest extent of airplanes, largest of bottles):
# PointNet's h5 and the raw .off meshes are z up; normal_resampled is y up.
H5_UP, OFF_UP, NORMAL_RESAMPLED_UP = "z", "z", "y"


def _id2file(h5: Path) -> Path | None:
    m = re.fullmatch(r"(.*?)_?(\d+)", h5.stem)
    names = [f"{h5.stem}_id2file.json"]
    if m:
        names.insert(0, f"{m.group(1)}_{m.group(2)}_id2file.json")
    return next((h5.parent / n for n in names if (h5.parent / n).exists()), None)


def load_modelnet_h5(root, split: str = "train", num_points: int | None = None) -> CloudSet:
    """The ``modelnet40_ply_hdf5_2048`` layout: ``{split}_files.txt`` lists h5 files.

    Listed paths are resolved by basename inside ``root``. ``num_points`` keeps the first
    points of each shape (the layout's convention); None keeps all. Raises DataError for a
    missing root/list/h5 file, bad h5 contents, labels outside ``shape_names.txt``, or
    ``num_points`` above the points stored per shape.
    """
    root = require_dir(root)
    listing = root / f"{split}_files.txt"
    if not listing.exists():
        raise DataError(listing, f"no such file (the h5 layout lists its {split} files here)")
    files = []
    for entry in read_names(listing):
        cand = root / Path(entry).name
        if not cand.exists():
            cand = root / entry
        if not cand.exists():
            raise DataError(cand, f"no such file (listed in {listing.name})")
        files.append(cand)
    if not files:
        raise DataError(listing, "lists no h5 files")
    names_file = root / "shape_names.txt"
    class_names = read_names(names_file) if names_file.exists() else []
    points, normals, labels, sources, origins = [], [], [], [], []
    for h5 in files:
        data, label, normal = read_h5(h5)
        if label is None:
            raise DataError(h5, "no 'label' dataset")
        if class_names and (label.min() < 0 or label.max() >= len(class_names)):
            raise DataError(
                h5,
                f"label {int(label.max())} outside the {len(class_names)} "
                f"classes of {names_file.name}",
            )
        if num_points is not None:
            if num_points > data.shape[1]:
                raise DataError(
                    h5, f"has {data.shape[1]} points per shape, fewer than num_points={num_points}"
                )
            data = np.ascontiguousarray(data[:, :num_points])
            normal = None if normal is None else np.ascontiguousarray(normal[:, :num_points])
        src = None
        jpath = _id2file(h5)
        if jpath is not None:
            try:
                src = [str(s) for s in json.loads(jpath.read_text())]
            except (OSError, ValueError) as e:
                raise DataError(jpath, f"corrupt JSON ({one_line(e)})") from None
            if len(src) != len(data):
                warnings.warn(
                    f"{jpath}: {len(src)} names for {len(data)} shapes; ignored",
                    DataWarning,
                    stacklevel=2,
                )
                src = None
        points.extend(data)
        labels.append(label)
        normals.append(normal)
        sources.extend(src or [f"{h5.name}#{i}" for i in range(len(data))])
        # the rows' true identity: two splits backed by one h5 file share these
        origins.extend(f"{h5.resolve()}#{i}" for i in range(len(data)))
    has_normals = all(n is not None for n in normals)
    return CloudSet(
        points=points,
        labels=np.concatenate(labels),
        class_names=class_names,
        normals=[n for block in normals for n in block] if has_normals else None,
        sources=sources,
        origins=origins,
        up_axis=H5_UP,
    )


def load_modelnet_off(
    root, split: str = "train", num_points: int = 2048, seed: int = 0, cache_dir="auto"
) -> CloudSet:
    """``<class>/{train,test}/*.off`` meshes, sampled with normals, scaled to the unit sphere.

    Classes are the sorted sub-folders of ``root`` (so train and test agree on indices).
    Samples are cached as npz under ``cache_dir`` ("auto": ``pointssl.utils.cache_dir
    ("meshes")``, None: no cache); each item keeps a handle to its mesh. Raises DataError
    for a missing root, no .off files for the split, or the first unreadable mesh (a
    benchmark split must be complete).
    """
    root = require_dir(root)
    class_names = subfolders(root)
    files = [
        (f, c)
        for c, name in enumerate(class_names)
        for f in sorted((root / name / split).glob("*.off"))
    ]
    if not files:
        raise DataError(root, f"no .off files under <class>/{split}/")
    points, normals, labels = [], [], []
    for f, c in files:
        p, n = read_cached(f, num_points, seed, cache_dir)
        points.append(normalize_unit_sphere(p))
        normals.append(n)
        labels.append(c)
    return CloudSet(
        points=points,
        labels=np.array(labels),
        class_names=class_names,
        normals=normals,
        sources=[str(f) for f, _ in files],
        meshes=[MeshFile(str(f)) for f, _ in files],
        up_axis=OFF_UP,
    )


def load_modelnet_normal_resampled(
    root, split: str = "train", num_points: int | None = None, classes: int = 40
) -> CloudSet:
    """The ``modelnet40_normal_resampled`` layout: ``<class>/<name>.txt`` rows x,y,z,nx,ny,nz.

    Uses ``modelnet{classes}_{split}.txt`` and ``modelnet{classes}_shape_names.txt`` when
    present; without split lists every file is used (a DataWarning says so). ``num_points``
    keeps the first rows of each file, as the layout's reference loader does. Raises
    DataError for a missing root, listed files that are absent, unreadable files, or files
    with fewer than ``num_points`` rows.
    """
    root = require_dir(root)
    names_file = root / f"modelnet{classes}_shape_names.txt"
    split_file = root / f"modelnet{classes}_{split}.txt"
    if names_file.exists():
        class_names = read_names(names_file)
    else:
        class_names = subfolders(root)
    index = {c: i for i, c in enumerate(class_names)}
    if split_file.exists():
        files = []
        for name in read_names(split_file):
            cls = name.rsplit("_", 1)[0]
            if cls not in index:
                raise DataError(split_file, f"'{name}' has class '{cls}' not in the class list")
            files.append((root / cls / f"{name}.txt", index[cls]))
    else:
        files = [(f, index[c]) for c in class_names for f in sorted((root / c).glob("*.txt"))]
        warnings.warn(
            f"{root}: no {split_file.name}; using all {len(files)} files for split "
            f"'{split}' (no official split)",
            DataWarning,
            stacklevel=2,
        )
    if not files:
        raise DataError(root, "no <class>/<name>.txt files")
    points, normals = [], []
    for f, _ in files:
        c = read_cloud(f, min_points=num_points or 1)
        p, n = c.points, c.normals
        if num_points is not None:
            p, n = p[:num_points], None if n is None else n[:num_points]
        points.append(p)
        normals.append(n)
    has_normals = all(n is not None for n in normals)
    return CloudSet(
        points=points,
        labels=np.array([c for _, c in files]),
        class_names=class_names,
        normals=normals if has_normals else None,
        sources=[str(f) for f, _ in files],
        up_axis=NORMAL_RESAMPLED_UP,
    )


def select_modelnet10(cs: CloudSet, where) -> CloudSet:
    """The ten ModelNet10 classes of a ModelNet40 set, relabelled 0..9 in ModelNet10's
    order; a set with ten classes or fewer is returned as it is."""
    if len(cs.class_names) <= len(MODELNET10):
        return cs
    missing = [c for c in MODELNET10 if c not in cs.class_names]
    if missing:
        raise DataError(where, f"has {len(cs.class_names)} classes but not the ModelNet10 "
                               f"class(es) {', '.join(missing)}")
    old = [cs.class_names.index(c) for c in MODELNET10]
    lut = np.full(len(cs.class_names), -1, dtype=np.int64)
    lut[old] = np.arange(len(MODELNET10))
    out = cs.subset(np.flatnonzero(np.isin(cs.labels, old)))
    out.labels = lut[out.labels]
    out.class_names = list(MODELNET10)
    return out


def _names_file(root: Path, classes: int) -> list[str] | None:
    for name in (f"modelnet{classes}_shape_names.txt", "shape_names.txt"):
        if (root / name).exists():
            return read_names(root / name)
    return None


def _detect(root: Path, split, num_points, seed, classes: int, up_axis="auto",
            **options) -> CloudSet:
    """The h5 layout when ``{split}_files.txt`` (or ``train_files.txt``) exists, else a file
    tree with train/test folders, else the normal_resampled layout. ``up_axis`` "auto": the
    layout's (h5, .off: z; normal_resampled: y; trees of other files: None, unknown)."""
    if (root / f"{split}_files.txt").exists() or (root / "train_files.txt").exists():
        cs = load_modelnet_h5(root, split, num_points, **options)
    elif split_layout(root) is not None:
        options.setdefault("cache_dir", "auto")
        cs = load_split_tree(root, split, num_points or 2048, seed, strict=True,
                             class_names=_names_file(root, classes), **options)
        if all(s.lower().endswith(".off") for s in cs.sources):
            cs.up_axis = OFF_UP
    elif any(root.glob("*/*.txt")):
        lists = classes
        if classes == 10 and not (root / f"modelnet10_{split}.txt").exists() and (
                root / f"modelnet40_{split}.txt").exists():
            lists = 40  # only ModelNet40's lists: its ten classes are selected below
        options.setdefault("classes", lists)
        cs = load_modelnet_normal_resampled(root, split, num_points, **options)
    else:
        raise DataError(
            root,
            f"no ModelNet layout found (expected {split}_files.txt, "
            f"<class>/{split}/FILES, {split}/<class>/FILES or <class>/<name>.txt)",
        )
    if up_axis != "auto":
        cs.up_axis = check_up_axis(up_axis)
    return select_modelnet10(cs, root) if classes == 10 else cs


@DATASETS.register("modelnet40")
def modelnet40(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    """ModelNet40 in whichever layout ``root`` holds (h5, file tree or normal_resampled)."""
    return _detect(require_root("modelnet40", root), split, num_points, seed, 40, **options)


@DATASETS.register("modelnet10")
def modelnet10(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    """ModelNet10 in whichever layout ``root`` holds (h5, file tree or normal_resampled);
    on a ModelNet40 folder, its ten ModelNet10 classes."""
    return _detect(require_root("modelnet10", root), split, num_points, seed, 10, **options)


@DATASETS.register("modelnet_off")
def modelnet_off(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    root = require_root("modelnet_off", root)
    return load_modelnet_off(root, split, num_points or 2048, seed, **options)


@DATASETS.register("modelnet_normal")
def modelnet_normal(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    root = require_root("modelnet_normal", root)
    return load_modelnet_normal_resampled(root, split, num_points, **options)
