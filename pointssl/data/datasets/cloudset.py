"""The one type every dataset returns: clouds with optional per-point fields, eager or lazy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from pointssl.errors import PointSSLError

# Optional per-point fields, in the order ``__getitem__`` adds them to an item.
POINT_FIELDS = ("normals", "parts", "colors", "semantic")
UP_AXES = ("x", "y", "z")


def check_up_axis(axis: str | None) -> str | None:
    """``axis`` when it is "x", "y", "z" or None; PointSSLError otherwise."""
    if axis not in (None, *UP_AXES):
        raise PointSSLError(f"up_axis must be one of {UP_AXES} or None, not {axis!r}")
    return axis


class LazyItems:
    """Items read on access: ``read(i)`` returns a dict of per-item fields for item ``i``.

    The last item read is kept, so ``points[i]`` then ``colors[i]`` reads the file once.
    """

    def __init__(self, read: Callable[[int], dict], n: int):
        self.read, self.n = read, n
        self._last: tuple[int, dict] | None = None

    def get(self, i: int) -> dict:
        if self._last is None or self._last[0] != i:
            self._last = (i, self.read(i))
        return self._last[1]

    def field(self, key: str) -> LazyField:
        return LazyField(self, key, np.arange(self.n))


class LazyField(Sequence):
    """One field of :class:`LazyItems` as a read-only sequence (ints, slices, iteration)."""

    def __init__(self, items: LazyItems, key: str, index: np.ndarray):
        self.items, self.key, self.index = items, key, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.items.get(int(self.index[i]))[self.key]

    def take(self, idx) -> LazyField:
        """The items ``idx`` as a lazy field too (nothing is read)."""
        return LazyField(self.items, self.key, self.index[np.asarray(idx, dtype=np.int64)])


@dataclass
class CloudSet(Dataset):
    """Point clouds with optional per-point fields, class labels and where each came from.

    points[i]: (N_i, 3) float32 (clouds may differ in size); normals[i], colors[i]: (N_i, 3)
    float32 (colours in [0, 1]); parts[i], semantic[i]: (N_i,) int64 per-point part /
    semantic labels; labels: (M,) int64 class per cloud, -1 for unlabeled; sources[i]: the
    file (or synthetic id) for messages; meshes[i]: a handle whose ``read()`` gives the
    ``(verts, faces)`` the cloud was sampled from, or None; errors: the DataErrors of files
    that were skipped. Any per-item field may be a :class:`LazyField` (read on access).
    origins[i]: where the points are stored when that is not a file of their own
    (``"/abs/file.h5#row"``), for the leak check; up_axis: "x", "y" or "z" when the layout
    fixes it, None when unknown; split_info: how the split was made when pointssl made it
    (e.g. ``{"holdout": 0.2, "seed": 0}``), for the protocols to report.
    """

    points: Sequence[np.ndarray]
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list)
    normals: Sequence[np.ndarray] | None = None
    parts: Sequence[np.ndarray] | None = None
    sources: list[str] | None = None
    part_names: list[str] | None = None
    colors: Sequence[np.ndarray] | None = None
    semantic: Sequence[np.ndarray] | None = None
    meshes: Sequence | None = None
    errors: list = field(default_factory=list)
    origins: list[str] | None = None
    up_axis: str | None = None
    split_info: dict | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.points)} clouds but {len(self.labels)} labels")
        if self.sources is None:
            self.sources = [f"#{i}" for i in range(len(self.points))]
        check_up_axis(self.up_axis)
        for name in POINT_FIELDS + ("sources", "meshes", "origins"):
            xs = getattr(self, name)
            if xs is not None and len(xs) != len(self.points):
                raise ValueError(f"{len(self.points)} clouds but {len(xs)} {name}")

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> dict:
        """``points``, ``label``, ``index`` and each optional field present; ``mesh`` (a
        handle, see ``meshes``) where the cloud has one; ``up_axis`` when the set knows it."""
        item = {"points": self.points[i], "label": int(self.labels[i]), "index": i}
        for name in POINT_FIELDS:
            xs = getattr(self, name)
            if xs is not None:
                item[name] = xs[i]
        if self.meshes is not None and self.meshes[i] is not None:
            item["mesh"] = self.meshes[i]
        if self.up_axis is not None:
            item["up_axis"] = self.up_axis
        return item

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    def subset(self, idx) -> CloudSet:
        """Clouds ``idx`` with every field (lazy fields stay lazy)."""
        idx = [int(i) for i in idx]

        def pick(xs):
            if xs is None:
                return None
            return xs.take(idx) if isinstance(xs, LazyField) else [xs[i] for i in idx]

        return CloudSet(
            points=pick(self.points),
            labels=self.labels[idx],
            class_names=list(self.class_names),
            normals=pick(self.normals),
            parts=pick(self.parts),
            sources=pick(self.sources),
            part_names=self.part_names,
            colors=pick(self.colors),
            semantic=pick(self.semantic),
            meshes=pick(self.meshes),
            errors=list(self.errors),
            origins=pick(self.origins),
            up_axis=self.up_axis,
            split_info=None if self.split_info is None else dict(self.split_info),
        )
