"""S3DIS (``--data s3dis``): ``root`` is ``Stanford3dDataset_v1.2_Aligned_Version`` (or a
folder holding it) with ``Area_<k>/<room>/``. The standard split: ``test_area`` (5) is the
test set, the other areas train. Per-point ``semantic`` labels in 13 classes. Read lazily."""

from __future__ import annotations

import numpy as np

from pointssl.data.datasets.base import DATASETS, require_root
from pointssl.data.datasets.cloudset import CloudSet, LazyItems
from pointssl.data.datasets.rooms import subsample_scenes
from pointssl.errors import DataError


def load_s3dis(root, split="train", num_points=None, seed=0, test_area: int = 5) -> CloudSet:
    from pointssl.data.scenes.readers import S3DIS_CLASSES, read_s3dis_room

    inner = root / "Stanford3dDataset_v1.2_Aligned_Version"
    base = inner if inner.is_dir() else root
    areas = sorted(d for d in base.glob("Area_*") if d.is_dir())
    if not areas:
        raise DataError(base, "no Area_* folders (S3DIS layout)")
    test = f"Area_{int(test_area)}"
    if split == "train":
        areas = [a for a in areas if a.name != test]
    elif split in ("test", "val"):
        areas = [a for a in areas if a.name == test]
    elif split != "all":
        raise DataError(base, f"split {split!r}: train, test (= {test}) or all")
    rooms = [r for a in areas for r in sorted(a.iterdir()) if r.is_dir()]
    if not rooms:
        raise DataError(base, f"no rooms in the {split} areas")
    items = LazyItems(lambda i: read_s3dis_room(rooms[i]), len(rooms))
    cs = CloudSet(points=items.field("points"), colors=items.field("colors"),
                  semantic=items.field("semantic"), labels=np.full(len(rooms), -1),
                  class_names=list(S3DIS_CLASSES),
                  sources=[f"{r.parent.name}/{r.name}" for r in rooms], up_axis="z")
    return subsample_scenes(cs, num_points, seed)


@DATASETS.register("s3dis")
def s3dis(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    return load_s3dis(require_root("s3dis", root), split, num_points, seed, **options)
