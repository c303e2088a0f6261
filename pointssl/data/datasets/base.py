"""The dataset registry and ``load_dataset``.

Each dataset file registers a loader ``(root, split, num_points, seed, **options) ->
CloudSet`` with ``@DATASETS.register("name")``; the CLI's choices come from the registry.
"""

from __future__ import annotations

from pathlib import Path

from pointssl.data.datasets.cloudset import CloudSet
from pointssl.errors import DataError, PointSSLError
from pointssl.utils import Registry

DATASETS = Registry("dataset", "pointssl.data.datasets")


def load_dataset(
    name: str,
    root=None,
    split: str = "train",
    num_points: int | None = None,
    seed: int = 0,
    **options,
) -> CloudSet:
    """Load a registered dataset (``DATASETS.names()``); extra options go to its loader.

    Raises PointSSLError for an unknown name or a missing root, DataError for bad data.
    """
    return DATASETS.get(name)(root, split, num_points, seed, **options)


def require_root(name: str, root) -> Path:
    """``root`` as an existing folder; a dataset needs one."""
    if root is None:
        raise PointSSLError(f"dataset '{name}' needs a data folder (root)")
    return require_dir(root)


def require_dir(root) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(root, "no such folder")
    if not root.is_dir():
        raise DataError(root, "is a file, not a folder")
    return root


def read_names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def subfolders(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
