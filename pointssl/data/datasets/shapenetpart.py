"""ShapeNetPart readers (Yi et al. 2016): 16 categories, 50 globally numbered parts.

Two public layouts are read, both into a :class:`CloudSet` whose ``labels`` index
``class_names`` (the category file's order) and whose ``parts`` are global part ids 0..49:

- ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` (PointNet++):
  ``synsetoffset2category.txt``, ``<synset>/<id>.txt`` rows ``x y z nx ny nz part``, and
  ``train_test_split/shuffled_{train,val,test}_file_list.json``.
- ``hdf5_data`` (PointNet): ``ply_data_{train,val,test}*.h5`` with ``data`` (N, 2048, 3),
  ``label`` (N, 1) and ``pid`` (N, 2048), listed by ``{split}_hdf5_file_list.txt``, plus
  ``all_object_categories.txt``.

Every problem becomes a ``DataError`` that names the offending file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from pointssl.data.datasets.base import DATASETS, require_root
from pointssl.data.datasets.cloudset import CloudSet
from pointssl.data.views.samplers import subsample_indices
from pointssl.data.views.transforms import normalize_unit_sphere
from pointssl.errors import DataError

CATEGORIES: tuple[str, ...] = (
    "Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife",
    "Lamp", "Laptop", "Motorbike", "Mug", "Pistol", "Rocket", "Skateboard", "Table",
)
SYNSETS: dict[str, str] = dict(zip(CATEGORIES, (
    "02691156", "02773838", "02954340", "02958343", "03001627", "03261776", "03467517",
    "03624134", "03636649", "03642806", "03790512", "03797390", "03948459", "04099429",
    "04225987", "04379243",
)))
_PART_COUNTS = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)
CATEGORY_PARTS: dict[str, list[int]] = {}
_start = 0
for _cat, _n in zip(CATEGORIES, _PART_COUNTS):
    CATEGORY_PARTS[_cat] = list(range(_start, _start + _n))
    _start += _n
NUM_PARTS = _start  # 50
del _cat, _n, _start
# The benchmark ships no part names; "<category>/<k>" keeps them readable and unambiguous.
PART_NAMES: list[str] = [f"{c}/{k}" for c in CATEGORIES for k in range(len(CATEGORY_PARTS[c]))]

NORMAL_DIR = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
HDF5_DIR = "hdf5_data"
SPLITS = ("train", "val", "test", "trainval")
LAYOUTS = ("auto", "normal", "hdf5")


def category_parts_by_label(class_names) -> dict[int, list[int]]:
    """Map label index -> global part ids for a list of ShapeNetPart category names."""
    out = {}
    for i, name in enumerate(class_names):
        if name not in CATEGORY_PARTS:
            raise KeyError(f"{name!r} is not a ShapeNetPart category")
        out[i] = list(CATEGORY_PARTS[name])
    return out


def read_category_file(path) -> list[tuple[str, str]]:
    """``Name<TAB>synset`` lines -> [(standard name, synset)]; names must be the 16
    ShapeNetPart categories (matched case-insensitively)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read category list ({type(e).__name__})") from None
    canon = {c.lower(): c for c in CATEGORIES}
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(path, f"line {lineno}: expected 'Name synset', got {line.strip()!r}")
        name, synset = fields
        if name.lower() not in canon:
            raise DataError(path, f"line {lineno}: {name!r} is not a ShapeNetPart category")
        out.append((canon[name.lower()], synset))
    if not out:
        raise DataError(path, "no categories listed")
    names = [n for n, _ in out]
    if len(set(names)) != len(names) or len({s for _, s in out}) != len(out):
        raise DataError(path, "a category or synset is listed twice")
    return out


def find_layout(root) -> tuple[str, Path]:
    """('normal' | 'hdf5', folder) for ``root`` or a folder of that layout inside it."""
    root = Path(root)
    for base in (root, root / NORMAL_DIR, root / HDF5_DIR):
        if (base / "synsetoffset2category.txt").is_file():
            return "normal", base
        if (base / "all_object_categories.txt").is_file() or any(base.glob("ply_data_*.h5")):
            return "hdf5", base
    if not root.exists():
        raise DataError(root, "ShapeNetPart folder not found")
    raise DataError(root, f"not a ShapeNetPart folder: expected {NORMAL_DIR} "
                          f"(synsetoffset2category.txt) or {HDF5_DIR} (ply_data_*.h5)")


def _allowed_table(names: list[str]) -> np.ndarray:
    allowed = np.zeros((len(names), NUM_PARTS), dtype=bool)
    for i, n in enumerate(names):
        allowed[i, CATEGORY_PARTS[n]] = True
    return allowed


def _part_problem(part_ids: np.ndarray, cat: str) -> str:
    ok = CATEGORY_PARTS[cat]
    bad = sorted({int(p) for p in np.unique(part_ids) if p not in ok})
    return f"part ids {bad[:5]} do not belong to {cat} (parts {ok[0]}-{ok[-1]})"


def _diagnose_text(path: Path) -> str:
    """Why np.loadtxt refused a shape file (the slow path, run only on failure)."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot read ({type(e).__name__})"
    widths = {len(r) for r in rows}
    if widths != {7}:
        return f"expected 7 columns 'x y z nx ny nz part', found {sorted(widths)}"
    return "non-numeric value"


def _read_normal_file(path: Path, cat: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(path, "listed in the split file but missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on empty input; checked below
            a = np.loadtxt(path, dtype=np.float64, ndmin=2)  # C parser: ~2x a Python split
    except (ValueError, UnicodeDecodeError):
        raise DataError(path, _diagnose_text(path)) from None
    except OSError as e:
        raise DataError(path, f"cannot read ({type(e).__name__})") from None
    if a.size == 0:
        raise DataError(path, "empty file: no points")
    if a.shape[1] != 7:
        raise DataError(path, f"expected 7 columns 'x y z nx ny nz part', found {a.shape[1]}")
    if not np.isfinite(a).all():
        raise DataError(path, "NaN or Inf value")
    part = a[:, 6]
    if not np.array_equal(part, np.round(part)):
        raise DataError(path, "part column holds non-integer values")
    part = part.astype(np.int64)
    if not np.isin(part, CATEGORY_PARTS[cat]).all():
        raise DataError(path, _part_problem(part, cat))
    return a[:, :3].astype(np.float32), a[:, 3:6].astype(np.float32), part


def _load_normal(base: Path, split: str, num_points, seed, normalize) -> CloudSet:
    cats = read_category_file(base / "synsetoffset2category.txt")
    names = [n for n, _ in cats]
    label_of = {s: i for i, (_, s) in enumerate(cats)}
    entries: list[tuple[str, str, Path]] = []
    for part in ("train", "val") if split == "trainval" else (split,):
        lst = base / "train_test_split" / f"shuffled_{part}_file_list.json"
        try:
            items = json.loads(lst.read_text())
        except FileNotFoundError:
            raise DataError(lst, f"split list for '{part}' not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(lst, f"not a readable JSON list ({type(e).__name__})") from None
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise DataError(lst, "expected a JSON list of 'shape_data/<synset>/<id>' strings")
        for item in items:
            bits = item.strip("/").split("/")
            if len(bits) < 2:
                raise DataError(lst, f"entry {item!r} is not 'shape_data/<synset>/<id>'")
            synset, sid = bits[-2], bits[-1]
            if synset not in label_of:
                raise DataError(lst, f"entry {item!r}: synset {synset} is not in "
                                     "synsetoffset2category.txt")
            entries.append((synset, sid, lst))
    if not entries:
        raise DataError(base / "train_test_split", f"split '{split}' lists no shapes")
    rng = np.random.default_rng(seed)
    pts, nrm, parts, labels, sources = [], [], [], [], []
    for synset, sid, _ in entries:
        path = base / synset / f"{sid}.txt"
        lab = label_of[synset]
        p, n, q = _read_normal_file(path, names[lab])
        idx = subsample_indices(len(p), num_points, rng)
        p, n, q = p[idx], n[idx], q[idx]
        pts.append(normalize_unit_sphere(p) if normalize else p)
        nrm.append(n)
        parts.append(q)
        labels.append(lab)
        sources.append(str(path))
    return CloudSet(points=pts, labels=np.array(labels), class_names=names, normals=nrm,
                    parts=parts, sources=sources, part_names=list(PART_NAMES))


def _h5_files(base: Path, split: str) -> list[Path]:
    files = []
    for part in ("train", "val") if split == "trainval" else (split,):
        lst = base / f"{part}_hdf5_file_list.txt"
        if lst.is_file():
            try:
                lines = lst.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(lst, f"cannot read file list ({type(e).__name__})") from None
            found = []
            for line in lines:
                if not line.strip():
                    continue
                entry = Path(line.strip())
                cands = [base / entry, base / entry.name, base.parent / entry]
                hit = next((c for c in cands if c.is_file()), None)
                if hit is None:
                    raise DataError(lst, f"lists {line.strip()} but no such file exists")
                found.append(hit)
            if not found:
                raise DataError(lst, "lists no files")
        else:
            found = sorted(base.glob(f"ply_data_{part}*.h5"))
            if not found:
                raise DataError(base, f"no {lst.name} and no ply_data_{part}*.h5 files")
        files += found
    return files


def _read_h5(path: Path, n_cats: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "label", "pid") if k not in f]
            if missing:
                raise DataError(path, f"missing dataset(s) {missing}; expected data, label, pid")
            data, label, pid = f["data"][()], f["label"][()], f["pid"][()]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises OSError/KeyError/... for bad files
        raise DataError(path, f"not a readable HDF5 file ({type(e).__name__})") from None
    if data.ndim != 3 or data.shape[2] != 3 or data.shape[0] == 0:
        raise DataError(path, f"'data' has shape {data.shape}; expected (N, P, 3)")
    label = np.asarray(label).reshape(-1) if label.ndim in (1, 2) else label
    if label.ndim != 1 or len(label) != len(data):
        raise DataError(path, f"'label' has shape {label.shape}; expected ({len(data)}, 1)")
    if pid.shape != data.shape[:2]:
        raise DataError(path, f"'pid' has shape {pid.shape}; expected {data.shape[:2]}")
    if not np.isfinite(data).all():
        raise DataError(path, "'data' contains NaN or Inf")
    for key, arr in (("label", label), ("pid", pid)):
        if not np.array_equal(arr, np.round(arr)):
            raise DataError(path, f"'{key}' holds non-integer values")
    label, pid = label.astype(np.int64), pid.astype(np.int64)
    if label.min() < 0 or label.max() >= n_cats:
        raise DataError(path, f"'label' values {label.min()}..{label.max()} are outside the "
                              f"{n_cats} categories of all_object_categories.txt")
    if pid.min() < 0 or pid.max() >= NUM_PARTS:
        raise DataError(path, f"'pid' values {pid.min()}..{pid.max()} are outside 0..49")
    return data.astype(np.float32), label, pid


def _load_hdf5(base: Path, split: str, num_points, seed, normalize) -> CloudSet:
    cat_file = base / "all_object_categories.txt"
    if cat_file.is_file():
        names = [n for n, _ in read_category_file(cat_file)]
    else:
        names = list(CATEGORIES)  # PointNet's own loader assumes the standard order too
    allowed = _allowed_table(names)
    rng = np.random.default_rng(seed)
    pts, parts, labels, sources = [], [], [], []
    for path in _h5_files(base, split):
        data, label, pid = _read_h5(path, len(names))
        bad = ~allowed[label[:, None], pid].all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(path, f"shape {i}: {_part_problem(pid[i], names[label[i]])}")
        for i in range(len(data)):
            idx = subsample_indices(data.shape[1], num_points, rng)
            p = data[i, idx]
            pts.append(normalize_unit_sphere(p) if normalize else p)
            parts.append(pid[i, idx])
            labels.append(int(label[i]))
            sources.append(f"{path}#{i}")
    return CloudSet(points=pts, labels=np.array(labels), class_names=names, parts=parts,
                    sources=sources, part_names=list(PART_NAMES),
                    origins=[f"{Path(s.rsplit('#', 1)[0]).resolve()}#{s.rsplit('#', 1)[1]}"
                             for s in sources])


def load_shapenetpart(root, split: str = "train", num_points: int | None = None, seed: int = 0,
                      *, layout: str = "auto", normalize: bool = True) -> CloudSet:
    """Read one split (train, val, test or trainval) of ShapeNetPart from either layout.

    num_points: None keeps every point of a shape (the normal layout has ~1-3k per shape);
    otherwise a seeded sample, with replacement only for smaller shapes. normalize centres
    each shape and scales it into the unit sphere (PointNet++'s ``pc_normalize``).
    Use :func:`category_parts_by_label` on ``class_names`` for the label -> part-ids map.
    """
    if split not in SPLITS:
        raise DataError(root, f"unknown split {split!r}; choose one of {SPLITS}")
    if layout not in LAYOUTS:
        raise DataError(root, f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    found, base = find_layout(root)
    if layout != "auto" and layout != found:
        raise DataError(base, f"asked for the {layout} layout but found the {found} layout")
    if num_points is not None and int(num_points) < 1:
        raise DataError(root, f"num_points must be >= 1, got {num_points}")
    loader = _load_normal if found == "normal" else _load_hdf5
    cs = loader(base, split, num_points, seed, normalize)
    cs.up_axis = "y"  # ShapeNet's alignment, kept by both ShapeNetPart layouts
    return cs


@DATASETS.register("shapenetpart")
def shapenetpart(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    return load_shapenetpart(require_root("shapenetpart", root), split, num_points, seed,
                             **options)
