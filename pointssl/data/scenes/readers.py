"""Readers for the public scene layouts.

ScanNet v2 (``scans/<scene>/<scene>_vh_clean_2.ply`` with vertex x, y, z, red, green, blue;
``<scene>_vh_clean_2.labels.ply`` with the vertex property ``label`` = NYU40 id; split lists
``scannetv2_{train,val,test}.txt``). Labels map to the 20 benchmark classes
(:data:`SCANNET_CLASSES`, the official ``VALID_CLASS_IDS``); every other id is -1 (ignored).

S3DIS (``Stanford3dDataset_v1.2_Aligned_Version/Area_<k>/<room>/<room>.txt`` rows of
x y z r g b, and ``Annotations/<class>_<n>.txt`` with the same rows per object). The labelled
points are the union of the ``Annotations`` files (as every S3DIS preparation script does),
the class coming from the file name; 13 classes (:data:`S3DIS_CLASSES`). A room with no
``Annotations`` folder is read from ``<room>.txt`` with labels -1. The public release has a
stray byte inside one row (Area_5/hallway_6); bytes that no number has are deleted and the
row count is checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointssl.errors import DataError

__all__ = ["SCANNET_CLASSES", "SCANNET_IDS", "S3DIS_CLASSES", "read_scannet_ply",
           "read_s3dis_room", "read_xyzrgb_txt"]

SCANNET_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
SCANNET_CLASSES = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door",
                   "window", "bookshelf", "picture", "counter", "desk", "curtain",
                   "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
                   "otherfurniture"]
S3DIS_CLASSES = ["ceiling", "floor", "wall", "beam", "column", "window", "door", "table",
                 "chair", "sofa", "bookcase", "board", "clutter"]
_NYU_TO_SCANNET = np.full(256, -1, dtype=np.int64)
_NYU_TO_SCANNET[SCANNET_IDS] = np.arange(len(SCANNET_IDS))


def read_scannet_ply(scene_dir) -> dict:
    """A ScanNet scene folder -> points (N, 3) float32, colors (N, 3) in [0, 1], semantic
    (N,) int64 (-1 where unlabelled or without a labels file)."""
    from plyfile import PlyData

    scene_dir = Path(scene_dir)
    name = scene_dir.name
    mesh = scene_dir / f"{name}_vh_clean_2.ply"
    if not mesh.exists():
        raise DataError(scene_dir, f"no {mesh.name}")
    try:
        v = PlyData.read(str(mesh))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
        rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255
    except Exception as e:  # plyfile raises many kinds for a bad file
        raise DataError(mesh, f"unreadable ScanNet mesh ({e})") from None
    sem = np.full(len(xyz), -1, dtype=np.int64)
    lab = scene_dir / f"{name}_vh_clean_2.labels.ply"
    if lab.exists():
        try:
            ids = np.asarray(PlyData.read(str(lab))["vertex"]["label"], dtype=np.int64)
        except Exception as e:
            raise DataError(lab, f"unreadable labels ({e})") from None
        if len(ids) != len(xyz):
            raise DataError(lab, f"{len(ids)} labels for {len(xyz)} vertices")
        sem = _NYU_TO_SCANNET[np.clip(ids, 0, 255)]
    if not np.isfinite(xyz).all():
        raise DataError(mesh, "non-finite coordinates")
    return {"points": xyz, "colors": rgb, "semantic": sem}


_JUNK = bytes(b for b in range(256) if b not in b"0123456789.-+eE \t\r\n")


def read_xyzrgb_txt(path) -> np.ndarray:
    """Rows of ``x y z r g b`` (S3DIS) -> (N, 6) float32."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        arr = np.array(raw.split(), dtype=np.float32)
    except ValueError:  # a stray byte inside a row: delete every byte no number has
        try:
            arr = np.array(raw.translate(None, _JUNK).split(), dtype=np.float32)
        except ValueError as e:
            raise DataError(path, f"not rows of x y z r g b ({e})") from None
    if len(arr) == 0 or len(arr) % 6:
        raise DataError(path, f"{len(arr)} numbers: not rows of x y z r g b")
    return arr.reshape(-1, 6)


def read_s3dis_room(room_dir) -> dict:
    """An S3DIS room folder -> points, colors (in [0, 1]), semantic (13 classes)."""
    room_dir = Path(room_dir)
    ann = room_dir / "Annotations"
    parts, labels = [], []
    if ann.is_dir():
        for f in sorted(ann.glob("*.txt")):
            cls = f.stem.rsplit("_", 1)[0]
            if cls == "stairs":  # Area_2 has a few "stairs" files; the 13 classes call it clutter
                cls = "clutter"
            if cls not in S3DIS_CLASSES:
                raise DataError(f, f"unknown S3DIS class {cls!r}")
            a = read_xyzrgb_txt(f)
            parts.append(a)
            labels.append(np.full(len(a), S3DIS_CLASSES.index(cls), dtype=np.int64))
    if not parts:
        whole = room_dir / f"{room_dir.name}.txt"
        if not whole.exists():
            raise DataError(room_dir, f"neither Annotations/*.txt nor {whole.name}")
        a = read_xyzrgb_txt(whole)
        parts, labels = [a], [np.full(len(a), -1, dtype=np.int64)]
    a = np.concatenate(parts)
    if not np.isfinite(a).all():
        raise DataError(room_dir, "non-finite values")
    return {"points": np.ascontiguousarray(a[:, :3]),
            "colors": np.ascontiguousarray(a[:, 3:6] / 255, dtype=np.float32),
            "semantic": np.concatenate(labels)}
