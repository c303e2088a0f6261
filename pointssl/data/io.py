"""Readers for point-cloud files and benchmark layouts, each validating what it reads.

Every problem with a file becomes a ``DataError(path, problem)``: one line naming the file,
never a library traceback. Readers return float32 ``(N, 3)`` points and optional normals;
dataset loaders return a :class:`~pointssl.data.dataset.CloudSet`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from pointssl.data.dataset import CloudSet
from pointssl.data.transforms import normalize_unit_sphere
from pointssl.errors import DataError, PointSSLError

CLOUD_EXTS = (".ply", ".pcd", ".xyz", ".txt", ".npy", ".npz", ".off", ".obj")
MESH_EXTS = (".off", ".obj")
CHECK_EXTS = CLOUD_EXTS + (".h5", ".hdf5", ".bin")
# Files that live beside data in the standard layouts and are not data themselves.
SIDE_EXTS = (".json", ".md", ".rst", ".yaml", ".yml", ".log", ".cfg", ".ini")
SIDE_NAMES = re.compile(
    r"(.*_files|.*shape_names|filelist|modelnet\d+_(train|test|val)|(train|test|val)(_split)?)"
    r"\.txt$|(readme|license|licence)(\..*)?$",
    re.IGNORECASE,
)
DATASETS = ("modelnet40", "modelnet10", "modelnet_off", "modelnet_normal", "shapenetpart",
            "folder", "synthetic")
_CACHE_VERSION = "1"  # bump when mesh sampling changes so stale cache entries are not reused


class DataWarning(UserWarning):
    """A data file that was skipped or a layout fallback; the message is one line."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- validation


def _check_points(path, points, normals=None, min_points: int = 1):
    """Shape, finiteness and size checks shared by every reader; returns float32 copies."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(path, f"wrong array shape {points.shape}: expected (N, 3)")
    n = len(points)
    if n == 0:
        raise DataError(path, "empty cloud: no points")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} of {n} points have NaN or Inf coordinates")
    if n < min_points:
        raise DataError(path, f"only {n} points, fewer than min_points={min_points}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    if normals is not None:
        normals = np.asarray(normals)
        if normals.shape != (n, 3):
            raise DataError(
                path, f"normals have shape {normals.shape} but points have shape {(n, 3)}"
            )
        if not np.isfinite(normals).all():
            raise DataError(path, "normals contain NaN or Inf")
        normals = np.ascontiguousarray(normals, dtype=np.float32)
    return points, normals


def _looks_like_normals(v: np.ndarray) -> bool:
    # Columns 4-6 of a text/npy cloud may be colours (xyzrgb) rather than normals.
    norms = np.linalg.norm(v, axis=1)
    return bool(np.isfinite(norms).all()) and 0.9 <= float(np.median(norms)) <= 1.1


def _split_columns(path, arr):
    """(N, 3) -> xyz; (N, 6+) -> xyz + columns 3:6 as normals when they are unit vectors."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise DataError(path, f"array has dtype {arr.dtype}, expected numbers")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise DataError(path, f"wrong array shape {arr.shape}: expected (N, 3) or (N, 6)")
    normals = None
    if arr.shape[1] >= 6 and len(arr) and _looks_like_normals(arr[:, 3:6]):
        normals = arr[:, 3:6]
    return arr[:, :3], normals


# --------------------------------------------------------------------------- file formats


def _read_text(path: Path):
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(path, "not a text file (binary content in a text cloud)") from None
    rows = (ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    first = next(rows, "")
    delimiter = "," if "," in first else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            arr = np.loadtxt(io.StringIO(text), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as e:
        # numpy appends advice about `usecols` that does not apply to a cloud file
        raise DataError(path, f"malformed text cloud: {_one_line(e).split(';')[0]}") from None
    if arr.size == 0:
        raise DataError(path, "empty cloud: no points")
    return _split_columns(path, arr)


def _read_npy(path: Path):
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(path, f"truncated or corrupt .npy file ({_one_line(e)})") from None
    return _split_columns(path, arr)


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.files)
            key = next((k for k in ("points", "xyz") if k in keys), None)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None:
                found = ", ".join(keys) or "nothing"
                raise DataError(path, f"no 'points' or 'xyz' array (found: {found})")
            arr = f[key]
            normals = f["normals"] if "normals" in keys else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"truncated or corrupt .npz file ({_one_line(e)})") from None
    points, col_normals = _split_columns(path, arr)
    return points, normals if normals is not None else col_normals


def _read_ply(path: Path, num_points: int, seed: int):
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
        names = [el.name for el in ply.elements]
        if "vertex" not in names:
            raise DataError(path, "PLY file has no 'vertex' element")
        v = ply["vertex"].data
        faces = None
        if "face" in names and ply["face"].count > 0:
            fdata = ply["face"].data
            props = [p for p in ("vertex_indices", "vertex_index") if p in fdata.dtype.names]
            if props:
                faces = list(fdata[props[0]])
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"truncated or corrupt PLY file ({_one_line(e)})") from None
    fields = v.dtype.names or ()
    if not {"x", "y", "z"} <= set(fields):
        raise DataError(path, f"PLY vertices lack x, y, z properties (have: {', '.join(fields)})")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    if faces is not None:
        return _sample_mesh(path, xyz, _triangulate(path, faces, len(xyz)), num_points, seed)
    normals = None
    if {"nx", "ny", "nz"} <= set(fields):
        normals = np.stack([v["nx"], v["ny"], v["nz"]], axis=1)
    return xyz, normals


_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}


def _lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF, as PCL's ``binary_compressed`` PCD files use it (no tiny library exists)."""
    out = bytearray(out_len)
    i = o = 0
    n = len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            length = ctrl + 1
            if i + length > n or o + length > out_len:
                raise ValueError("LZF literal run past the end")
            out[o : o + length] = data[i : i + length]
            i += length
            o += length
            continue
        length = ctrl >> 5
        if length == 7:
            if i >= n:
                raise ValueError("LZF stream ends inside a back reference")
            length += data[i]
            i += 1
        if i >= n:
            raise ValueError("LZF stream ends inside a back reference")
        ref = o - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        length += 2
        if ref < 0 or o + length > out_len:
            raise ValueError("LZF back reference out of range")
        if ref + length <= o:
            out[o : o + length] = out[ref : ref + length]
            o += length
        else:  # overlapping copy repeats a short pattern byte by byte
            for _ in range(length):
                out[o] = out[ref]
                o += 1
                ref += 1
    if o != out_len:
        raise ValueError(f"LZF data decompresses to {o} bytes, header says {out_len}")
    return bytes(out)


def _read_pcd(path: Path):
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DataError(path, "truncated PCD header: no DATA line")
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = [t.upper() for t in header.get("TYPE", ["F"] * len(fields))]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        width = int(header.get("WIDTH", ["0"])[0])
        height = int(header.get("HEIGHT", ["1"])[0])
        points_n = int(header["POINTS"][0]) if "POINTS" in header else width * height
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as e:
        raise DataError(path, f"bad PCD header ({_one_line(e)})") from None
    if not len(fields) == len(sizes) == len(types) == len(counts):
        raise DataError(path, "bad PCD header: FIELDS, SIZE, TYPE and COUNT differ in length")
    if width * height != points_n:
        raise DataError(
            path, f"PCD header POINTS {points_n} disagrees with WIDTH*HEIGHT {width}*{height}"
        )
    if not {"x", "y", "z"} <= set(fields):
        raise DataError(path, f"PCD has no x, y, z fields (FIELDS {' '.join(fields)})")
    names = [f if f != "_" else f"_pad{i}" for i, f in enumerate(fields)]
    try:
        dtype = np.dtype(
            [
                (nm, _PCD_TYPES[(t, s)], (c,)) if c > 1 else (nm, _PCD_TYPES[(t, s)])
                for nm, t, s, c in zip(names, types, sizes, counts, strict=True)
            ]
        )
    except (KeyError, ValueError):
        raise DataError(path, f"unsupported PCD field types {types} / sizes {sizes}") from None
    body = raw[pos:]
    if mode == "ascii":
        rows = [ln for ln in body.decode("ascii", "replace").splitlines() if ln.strip()]
        if len(rows) != points_n:
            raise DataError(
                path,
                f"PCD header says POINTS {points_n} but the data has "
                f"{len(rows)} rows (truncated or wrong count)",
            )
        try:
            table = np.array([r.split() for r in rows], dtype=np.float64)
        except ValueError as e:
            raise DataError(path, f"malformed PCD ascii data ({_one_line(e)})") from None
        if table.ndim != 2 or table.shape[1] != sum(counts):
            raise DataError(path, f"PCD rows do not have {sum(counts)} values each")
        offsets = np.cumsum([0] + counts)
        col = {f: table[:, offsets[i]] for i, f in enumerate(fields)}
    elif mode in ("binary", "binary_compressed"):
        need = points_n * dtype.itemsize
        if mode == "binary_compressed":
            if len(body) < 8:
                raise DataError(path, "truncated binary_compressed PCD data")
            csize, usize = np.frombuffer(body[:8], "<u4")
            if 8 + int(csize) > len(body):
                raise DataError(
                    path,
                    f"truncated: compressed PCD data needs {csize} bytes, file has {len(body) - 8}",
                )
            if usize != need:
                raise DataError(
                    path,
                    f"PCD header says POINTS {points_n} ({need} bytes) but "
                    f"the compressed data holds {usize} bytes",
                )
            try:
                body = _lzf_decompress(body[8 : 8 + int(csize)], int(usize))
            except ValueError as e:
                raise DataError(path, f"corrupt compressed PCD data ({e})") from None
            # compressed PCD stores each field contiguously (column-major)
            col, off = {}, 0
            for f, t, s, c in zip(fields, types, sizes, counts, strict=True):
                arr = np.frombuffer(body, _PCD_TYPES[(t, s)], points_n * c, off)
                col[f] = arr.reshape(points_n, c)[:, 0]
                off += points_n * c * s
        else:
            if len(body) < need or len(body) >= need + dtype.itemsize:
                held = len(body) // dtype.itemsize
                raise DataError(
                    path,
                    f"PCD header says POINTS {points_n} but the binary data "
                    f"holds {held} points (truncated or wrong count)",
                )
            rec = np.frombuffer(body, dtype, points_n)
            col = {
                f: (rec[nm] if rec[nm].ndim == 1 else rec[nm][:, 0])
                for nm, f in zip(names, fields, strict=True)
            }
    else:
        raise DataError(path, f"unknown PCD DATA mode '{mode}'")
    xyz = np.stack([col["x"], col["y"], col["z"]], axis=1)
    normals = None
    if {"normal_x", "normal_y", "normal_z"} <= set(fields):
        normals = np.stack([col["normal_x"], col["normal_y"], col["normal_z"]], axis=1)
    return xyz, normals


def _triangulate(path, polys, num_vertices: int) -> np.ndarray:
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


def _parse_off(path: Path):
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
        raise DataError(path, f"malformed OFF data ({_one_line(e)})") from None
    if any(len(p) != int(tok[0]) for p, tok in zip(polys, ftok, strict=True)):
        raise DataError(path, "truncated OFF face line: fewer indices than its count says")
    return verts, _triangulate(path, polys, nv)


def _read_obj(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
        verts = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
    except Exception as e:
        raise DataError(path, f"truncated or corrupt OBJ file ({_one_line(e)})") from None
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
            raise DataError(path, f"malformed OBJ vertex line ({_one_line(e)})") from None
    return verts, faces


def _sample_mesh(path, verts, faces, num_points: int, seed: int):
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


def read_cloud(path, num_points: int = 2048, seed: int = 0, min_points: int = 1):
    """Read one cloud file: ``(points (N, 3) float32, normals (N, 3) float32 or None)``.

    Point formats (.ply, .pcd, .xyz, .txt, .npy, .npz) return every point in the file;
    meshes (.off, .obj, and .ply with faces) return ``num_points`` area-weighted surface
    samples (seeded) with face normals. Text/npy columns 4-6 are normals only when they
    are unit vectors (xyzrgb colours are ignored). Raises DataError for a missing,
    truncated or corrupt file, an unknown extension, a wrong array shape, NaN/Inf values,
    an empty cloud or fewer than ``min_points`` points.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in CLOUD_EXTS:
        raise DataError(
            path, f"unknown extension '{path.suffix}' (supported: {' '.join(CLOUD_EXTS)})"
        )
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a folder, not a file")
    try:
        if ext == ".ply":
            points, normals = _read_ply(path, num_points, seed)
        elif ext == ".pcd":
            points, normals = _read_pcd(path)
        elif ext in (".xyz", ".txt"):
            points, normals = _read_text(path)
        elif ext == ".npy":
            points, normals = _read_npy(path)
        elif ext == ".npz":
            points, normals = _read_npz(path)
        else:
            verts, faces = _parse_off(path) if ext == ".off" else _read_obj(path)
            if len(verts) == 0:
                raise DataError(path, "empty mesh: no vertices")
            points, normals = _sample_mesh(path, verts, faces, num_points, seed)
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror or _one_line(e)})") from None
    return _check_points(path, points, normals, min_points)


# --------------------------------------------------------------------------- mesh cache


def default_cache_dir() -> Path:
    """``$POINTSSL_CACHE`` or ``$XDG_CACHE_HOME/pointssl`` (``~/.cache/pointssl``)."""
    if os.environ.get("POINTSSL_CACHE"):
        return Path(os.environ["POINTSSL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pointssl"


def _read_cached(path: Path, num_points: int, seed: int, cache_dir, min_points: int = 1):
    """read_cloud for meshes with an on-disk npz cache keyed by file, mtime, size, n, seed."""
    if cache_dir is None or path.suffix.lower() not in MESH_EXTS:
        return read_cloud(path, num_points, seed, min_points)
    cache_dir = Path(default_cache_dir() / "meshes" if cache_dir == "auto" else cache_dir)
    try:
        st = path.stat()
    except OSError:
        return read_cloud(path, num_points, seed, min_points)  # reports the missing file
    key = f"{_CACHE_VERSION}|{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{num_points}|{seed}"
    entry = cache_dir / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"
    if entry.exists():
        try:
            with np.load(entry, allow_pickle=False) as f:
                normals = f["normals"] if "normals" in f.files else None
                return _check_points(path, f["points"], normals, min_points)
        except DataError:
            raise
        except Exception:
            pass  # an unreadable entry is resampled and overwritten below
    points, normals = read_cloud(path, num_points, seed, min_points)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                arrays = (
                    {"points": points}
                    if normals is None
                    else {"points": points, "normals": normals}
                )
                np.savez(fh, **arrays)
            os.replace(tmp, entry)  # atomic: readers never see a half-written entry
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        warnings.warn(
            f"{cache_dir}: cannot write mesh cache ({_one_line(e)})", DataWarning, stacklevel=3
        )
    return points, normals


# --------------------------------------------------------------------------- layouts


def _require_dir(root) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(root, "no such folder")
    if not root.is_dir():
        raise DataError(root, "is a file, not a folder")
    return root


def _read_names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _subfolders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _is_side_file(path: Path) -> bool:
    return path.suffix.lower() in SIDE_EXTS or bool(SIDE_NAMES.fullmatch(path.name))


def _is_name_list(path: Path) -> bool:
    """A .txt of names (split lists, shape names) rather than a cloud of numbers."""
    if SIDE_NAMES.fullmatch(path.name):
        return True
    try:
        with open(path, errors="replace") as fh:
            lines = [ln.strip() for ln in itertools.islice(fh, 50) if ln.strip()]
    except OSError:
        return False
    if not lines or any(len(re.split(r"[\s,]+", ln)) != 1 for ln in lines):
        return False

    def is_number(tok):
        try:
            float(tok)
            return True
        except ValueError:
            return False

    return not all(is_number(ln) for ln in lines)


def _read_h5(path: Path):
    """``data`` (N, P, 3|6), ``label`` (N,) or (N, 1) and optional ``normal`` of one h5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise DataError(path, f"no 'data' dataset (has: {', '.join(f.keys()) or 'none'})")
            data = np.asarray(f["data"][()])
            label = np.asarray(f["label"][()]) if "label" in f else None
            normal = np.asarray(f["normal"][()]) if "normal" in f else None
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"truncated or corrupt HDF5 file ({_one_line(e)})") from None
    if data.ndim != 3 or data.shape[2] not in (3, 6) or data.shape[1] == 0:
        raise DataError(path, f"'data' has shape {data.shape}, expected (N, P, 3)")
    if data.shape[2] == 6 and normal is None:
        data, normal = data[..., :3], data[..., 3:]
    if not np.isfinite(data).all():
        raise DataError(path, "'data' contains NaN or Inf coordinates")
    if label is not None:
        label = label.reshape(len(label), -1)
        if label.shape != (len(data), 1):
            raise DataError(path, f"'label' has shape {label.shape}, expected ({len(data)}, 1)")
        label = label[:, 0].astype(np.int64)
    if normal is not None:
        if normal.shape != data.shape[:2] + (3,):
            raise DataError(path, f"'normal' has shape {normal.shape}, data {data.shape}")
        if not np.isfinite(normal).all():
            raise DataError(path, "'normal' contains NaN or Inf")
    return data.astype(np.float32, copy=False), label, normal


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
    root = _require_dir(root)
    listing = root / f"{split}_files.txt"
    if not listing.exists():
        raise DataError(listing, f"no such file (the h5 layout lists its {split} files here)")
    files = []
    for entry in _read_names(listing):
        cand = root / Path(entry).name
        if not cand.exists():
            cand = root / entry
        if not cand.exists():
            raise DataError(cand, f"no such file (listed in {listing.name})")
        files.append(cand)
    if not files:
        raise DataError(listing, "lists no h5 files")
    names_file = root / "shape_names.txt"
    class_names = _read_names(names_file) if names_file.exists() else []
    points, normals, labels, sources = [], [], [], []
    for h5 in files:
        data, label, normal = _read_h5(h5)
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
                raise DataError(jpath, f"corrupt JSON ({_one_line(e)})") from None
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
    has_normals = all(n is not None for n in normals)
    return CloudSet(
        points=points,
        labels=np.concatenate(labels),
        class_names=class_names,
        normals=[n for block in normals for n in block] if has_normals else None,
        sources=sources,
    )


def load_modelnet_off(
    root, split: str = "train", num_points: int = 2048, seed: int = 0, cache_dir="auto"
) -> CloudSet:
    """``<class>/{train,test}/*.off`` meshes, sampled with normals, scaled to the unit sphere.

    Classes are the sorted sub-folders of ``root`` (so train and test agree on indices).
    Samples are cached as npz under ``cache_dir`` ("auto": :func:`default_cache_dir`,
    None: no cache). Raises DataError for a missing root, no .off files for the split, or
    the first unreadable mesh (a benchmark split must be complete).
    """
    root = _require_dir(root)
    class_names = _subfolders(root)
    files = [
        (f, c)
        for c, name in enumerate(class_names)
        for f in sorted((root / name / split).glob("*.off"))
    ]
    if not files:
        raise DataError(root, f"no .off files under <class>/{split}/")
    points, normals, labels = [], [], []
    for f, c in files:
        p, n = _read_cached(f, num_points, seed, cache_dir)
        points.append(normalize_unit_sphere(p))
        normals.append(n)
        labels.append(c)
    return CloudSet(
        points=points,
        labels=np.array(labels),
        class_names=class_names,
        normals=normals,
        sources=[str(f) for f, _ in files],
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
    root = _require_dir(root)
    names_file = root / f"modelnet{classes}_shape_names.txt"
    split_file = root / f"modelnet{classes}_{split}.txt"
    if names_file.exists():
        class_names = _read_names(names_file)
    else:
        class_names = _subfolders(root)
    index = {c: i for i, c in enumerate(class_names)}
    if split_file.exists():
        files = []
        for name in _read_names(split_file):
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
        p, n = read_cloud(f, min_points=num_points or 1)
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
    )


def load_scannet_bin(path):
    """``(xyz (N, 3), rgb (N, 3))`` float32 from rows of float32 x, y, z, r, g, b.

    Raises DataError for a missing or empty file, a size that is not a multiple of 24
    bytes, or NaN/Inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    size = path.stat().st_size
    if size % 24:
        raise DataError(
            path,
            f"size {size} bytes is not a multiple of 24 (6 float32 per "
            "point): truncated or not x,y,z,r,g,b rows",
        )
    arr = np.fromfile(path, dtype="<f4").reshape(-1, 6)
    if not np.isfinite(arr).all():
        raise DataError(path, "contains NaN or Inf values")
    xyz, _ = _check_points(path, arr[:, :3])
    return xyz, np.ascontiguousarray(arr[:, 3:])


def _data_files(root: Path, exts) -> tuple[list[Path], list[Path]]:
    """(files with one of ``exts``, other files) under root, skipping hidden entries."""
    found, other = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            (found if p.suffix.lower() in exts else other).append(p)
    return found, other


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
    (-1). Clouds are scaled to the unit sphere unless ``normalize`` is False. Bad files are
    skipped, each reported as one DataWarning line, and listed as DataErrors in the
    returned set's ``errors`` attribute. Raises DataError when root is missing or no file
    is readable.
    """
    root = _require_dir(root)
    files, other = _data_files(root, CLOUD_EXTS)
    files = [f for f in files if not (f.suffix.lower() == ".txt" and _is_name_list(f))]
    other = [f for f in other if not _is_side_file(f)]
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
    points, normals, labels, sources, errors = [], [], [], [], []
    for f, s in zip(files, subdir, strict=True):
        try:
            p, n = _read_cached(f, num_points, seed, cache_dir, min_points)
        except DataError as e:
            errors.append(e)
            warnings.warn(str(e), DataWarning, stacklevel=2)
            continue
        points.append(normalize_unit_sphere(p) if normalize else p)
        normals.append(n)
        labels.append(index[s] if s is not None else -1)
        sources.append(str(f))
    if not points:
        raise DataError(
            root, f"none of the {len(files)} files is readable (first problem: {errors[0]})"
        )
    has_normals = all(n is not None for n in normals)
    cs = CloudSet(
        points=points,
        labels=np.array(labels, dtype=np.int64),
        class_names=class_names,
        normals=normals if has_normals else None,
        sources=sources,
    )
    cs.errors = errors
    return cs


def check_root(root) -> tuple[int, list[DataError]]:
    """Validate every data file under ``root`` (or the one file ``root``).

    Returns ``(files checked, errors)``: one DataError per bad file, unknown extensions
    included. Hidden files, JSON/markdown side files and .txt name lists (split lists,
    shape names) are skipped. Raises DataError when root does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "no such file or folder")
    if root.is_file():
        files, other = ([root], []) if root.suffix.lower() in CHECK_EXTS else ([], [root])
    else:
        files, other = _data_files(root, CHECK_EXTS)
    errors = [
        DataError(
            f, f"unknown extension '{f.suffix or f.name}' (supported: {' '.join(CHECK_EXTS)})"
        )
        for f in other
        if not _is_side_file(f)
    ]
    checked = len(errors)
    for f in files:
        ext = f.suffix.lower()
        if ext == ".txt" and _is_name_list(f):
            continue
        checked += 1
        try:
            if ext in (".h5", ".hdf5"):
                _read_h5(f)
            elif ext == ".bin":
                load_scannet_bin(f)
            else:
                read_cloud(f, num_points=64)
        except DataError as e:
            errors.append(e)
    return checked, errors


def _is_off_layout(root: Path, split: str) -> bool:
    return any(True for _ in root.glob(f"*/{split}/*.off"))


def load_dataset(
    name: str,
    root=None,
    split: str = "train",
    num_points: int | None = None,
    seed: int = 0,
    **options,
) -> CloudSet:
    """Load a dataset by name (see ``DATASETS``); extra options go to the loader.

    ``modelnet40``/``modelnet10`` pick the h5 layout when ``{split}_files.txt`` exists,
    else ``<class>/{split}/*.off`` meshes, else the normal_resampled layout. ``folder``
    loads ``root/split`` when that folder exists, else all of ``root``. ``synthetic``
    uses ``root`` as its cache folder. Raises PointSSLError for an unknown name or a
    missing root, DataError for bad data.
    """
    if name == "synthetic":
        from pointssl.data.synthetic import load_synthetic

        kwargs = {"seed": seed, **options}
        if num_points is not None:
            kwargs["num_points"] = num_points
        if root is not None:
            kwargs["cache_dir"] = root
        return load_synthetic(split, **kwargs)
    if name not in DATASETS:
        raise PointSSLError(f"unknown dataset '{name}' (choose from: {', '.join(DATASETS)})")
    if root is None:
        raise PointSSLError(f"dataset '{name}' needs a data folder (root)")
    root = _require_dir(root)
    mesh_n = num_points or 2048
    if name in ("modelnet40", "modelnet10"):
        if (root / f"{split}_files.txt").exists():
            return load_modelnet_h5(root, split, num_points, **options)
        if _is_off_layout(root, split):
            return load_modelnet_off(root, split, mesh_n, seed, **options)
        if any(root.glob("*/*.txt")):
            options.setdefault("classes", int(name[len("modelnet") :]))
            return load_modelnet_normal_resampled(root, split, num_points, **options)
        raise DataError(
            root,
            f"no ModelNet layout found (expected {split}_files.txt, "
            f"<class>/{split}/*.off or <class>/<name>.txt)",
        )
    if name == "modelnet_off":
        return load_modelnet_off(root, split, mesh_n, seed, **options)
    if name == "shapenetpart":
        from pointssl.data.shapenetpart import load_shapenetpart

        return load_shapenetpart(root, split, num_points, seed, **options)
    if name == "modelnet_normal":
        return load_modelnet_normal_resampled(root, split, num_points, **options)
    if split and (root / split).is_dir():
        root = root / split
    return load_folder(root, mesh_n, seed, **options)
