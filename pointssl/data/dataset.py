"""In-memory point-cloud collections: the one type every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset


@dataclass
class CloudSet(Dataset):
    """A list of point clouds with optional normals, class labels and per-point part labels.

    points[i]: (N_i, 3) float32 (clouds may differ in size); normals[i]: (N_i, 3) or None;
    labels: (M,) int64, -1 for unlabeled; parts[i]: (N_i,) int64 or None;
    sources[i]: where cloud i came from (file path or a synthetic id), for error messages.
    """

    points: list[np.ndarray]
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list)
    normals: list[np.ndarray] | None = None
    parts: list[np.ndarray] | None = None
    sources: list[str] | None = None
    part_names: list[str] | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.points):
            raise ValueError(f"{len(self.points)} clouds but {len(self.labels)} labels")
        if self.sources is None:
            self.sources = [f"#{i}" for i in range(len(self.points))]

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> dict:
        item = {"points": self.points[i], "label": int(self.labels[i]), "index": i}
        if self.normals is not None:
            item["normals"] = self.normals[i]
        if self.parts is not None:
            item["parts"] = self.parts[i]
        return item

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    def subset(self, idx) -> CloudSet:
        idx = [int(i) for i in idx]

        def pick(xs):
            return None if xs is None else [xs[i] for i in idx]

        return CloudSet(
            points=pick(self.points),
            labels=self.labels[idx],
            class_names=list(self.class_names),
            normals=pick(self.normals),
            parts=pick(self.parts),
            sources=pick(self.sources),
            part_names=self.part_names,
        )
