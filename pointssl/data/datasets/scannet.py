"""ScanNet scenes: a folder of ``.bin`` scenes (rows of float32 x, y, z, r, g, b), or of
sub-folders holding one each. Variable-size clouds in metres with colours, no class
labels (-1); read lazily, one scene when it is asked for."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pointssl.data.datasets.base import DATASETS, read_names, require_dir, require_root
from pointssl.data.datasets.cloudset import CloudSet, LazyItems
from pointssl.data.formats import DataWarning, read_bin
from pointssl.data.views.samplers import subsample_indices
from pointssl.errors import DataError


def _scene_name(root: Path, f: Path) -> str:
    return f.parent.name if f.parent != root else f.stem


def load_scannet(root, split: str = "train", num_points: int | None = None, seed: int = 0,
                 lazy: bool = True) -> CloudSet:
    """Scenes under ``root`` (``root/split`` when that folder exists): ``*.bin`` and
    ``*/*.bin``. ``scannetv2_{split}.txt`` (scene names, i.e. sub-folder names or file
    stems) picks the split when present; without it every scene is used (a DataWarning
    says so). ``num_points`` takes that many points of each scene (seeded per scene, so
    any access order gives the same clouds); None keeps all. ``lazy`` reads a scene only
    when an item is accessed; ``lazy=False`` reads and checks every scene now.
    """
    root = require_dir(root)
    if split and (root / split).is_dir():
        root = root / split
    files = sorted(root.glob("*.bin")) + sorted(root.glob("*/*.bin"))
    if not files:
        raise DataError(root, "no ScanNet scenes (*.bin or <scene>/*.bin)")
    listing = root / f"scannetv2_{split}.txt"
    if listing.exists():
        wanted = set(read_names(listing))
        files = [f for f in files if _scene_name(root, f) in wanted]
        if not files:
            raise DataError(listing, f"none of its {len(wanted)} scenes is under {root}")
    else:
        warnings.warn(f"{root}: no {listing.name}; using all {len(files)} scenes for split "
                      f"'{split}'", DataWarning, stacklevel=2)

    def read(i: int) -> dict:
        c = read_bin(files[i])
        idx = subsample_indices(len(c.points), num_points, np.random.default_rng([seed, i]))
        return {"points": c.points[idx], "colors": c.colors[idx]}

    items = LazyItems(read, len(files))
    if lazy:
        points, colors = items.field("points"), items.field("colors")
    else:
        got = [read(i) for i in range(len(files))]
        points, colors = [g["points"] for g in got], [g["colors"] for g in got]
    # ScanNet scenes are z up (the shared scene: floor at z = 0, ceiling at 3 m)
    return CloudSet(points=points, labels=np.full(len(files), -1), colors=colors,
                    sources=[str(f) for f in files], up_axis="z")


@DATASETS.register("scannet")
def scannet(root, split="train", num_points=None, seed=0, **options) -> CloudSet:
    return load_scannet(require_root("scannet", root), split, num_points, seed, **options)
