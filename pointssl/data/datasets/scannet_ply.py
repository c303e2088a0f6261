"""ScanNet v2 in its public layout (``--data scannet_ply``): ``root/scans/<scene>/`` (or
``root/<scene>/``) with ``<scene>_vh_clean_2.ply`` and ``<scene>_vh_clean_2.labels.ply``;
``scannetv2_{split}.txt`` under ``root`` picks the split (ScanNet names its held-out split
``val``; ``test`` reads ``scannetv2_val.txt`` when there is no labelled test list). Per-point
``semantic`` labels in the 20 benchmark classes, -1 ignored. Read lazily."""

from __future__ import annotations

import numpy as np

from pointssl.data.datasets.base import DATASETS, read_names, require_root
from pointssl.data.datasets.cloudset import CloudSet, LazyItems
from pointssl.data.datasets.rooms import subsample_scenes
from pointssl.errors import DataError


def load_scannet_ply(root, split="train", num_points=None, seed=0) -> CloudSet:
    from pointssl.data.scenes.readers import SCANNET_CLASSES, read_scannet_ply

    scans = root / "scans" if (root / "scans").is_dir() else root
    dirs = sorted(d for d in scans.iterdir() if (d / f"{d.name}_vh_clean_2.ply").exists())
    if not dirs:
        raise DataError(scans, "no ScanNet scenes (<scene>/<scene>_vh_clean_2.ply)")
    names = {"train": ["train"], "val": ["val"], "test": ["test", "val"]}.get(split, [split])
    for n in names:
        listing = root / f"scannetv2_{n}.txt"
        if listing.exists():
            wanted = set(read_names(listing))
            dirs = [d for d in dirs if d.name in wanted]
            break
    else:
        if split != "all":
            raise DataError(root, f"no scannetv2_{split}.txt: cannot tell which scenes are "
                                  f"{split} (use split 'all' for every scene)")
    if not dirs:
        raise DataError(root, f"no scene of the {split} list is present")
    items = LazyItems(lambda i: read_scannet_ply(dirs[i]), len(dirs))
    cs = CloudSet(points=items.field("points"), colors=items.field("colors"),
                  semantic=items.field("semantic"), labels=np.full(len(dirs), -1),
                  class_names=list(SCANNET_CLASSES), sources=[str(d) for d in dirs],
                  up_axis="z")
    return subsample_scenes(cs, num_points, seed)


@DATASETS.register("scannet_ply")
def scannet_ply(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    return load_scannet_ply(require_root("scannet_ply", root), split, num_points, seed,
                            **options)
