"""The seam between data, backbones and methods: packed point batches and backbone outputs.

A batch of clouds of any sizes travels as one :class:`PointBatch` — coordinates ``(P, 3)``,
optional per-point features ``(P, C)`` (normals, colours, intensity) and ``offset``
``(B + 1,)`` cumulative counts — the form Pointcept and ``ocnn`` use; never padded. A batch
whose clouds all have N points is the special case ``offset = [0, N, 2N, ...]``, and
:meth:`PointBatch.dense` gives it back as ``(B, N, 3 + C)`` at no cost (a view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pointssl.errors import PointSSLError

__all__ = ["PointBatch", "BackboneOutput", "as_point_batch"]


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    return t.to(dtype) if t.dtype != dtype else t


@dataclass
class PointBatch:
    """B clouds packed along one axis.

    coord:  (P, 3) float xyz of all points, cloud after cloud.
    feat:   (P, C) optional per-point input features (``None``: coordinates only).
    offset: (B + 1,) int64 cumulative counts; cloud b is rows ``offset[b]:offset[b + 1]``.
    """

    coord: torch.Tensor
    offset: torch.Tensor
    feat: torch.Tensor | None = None

    def __post_init__(self):
        if self.coord.ndim != 2 or self.coord.shape[1] != 3:
            raise PointSSLError(f"PointBatch.coord must be (P, 3), got {tuple(self.coord.shape)}")
        if self.offset.ndim != 1 or len(self.offset) < 1 or int(self.offset[0]) != 0 \
                or int(self.offset[-1]) != len(self.coord):
            raise PointSSLError(f"PointBatch.offset must run from 0 to P={len(self.coord)}, "
                                f"got {self.offset.tolist()}")
        if self.feat is not None and (self.feat.ndim != 2 or len(self.feat) != len(self.coord)):
            raise PointSSLError(f"PointBatch.feat must be (P, C) with P={len(self.coord)}, "
                                f"got {tuple(self.feat.shape)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_list(cls, clouds: Sequence, feats: Sequence | None = None) -> PointBatch:
        """Pack clouds ``(N_i, 3 + C)`` (numpy or torch; columns past 3 become ``feat``), or
        ``(N_i, 3)`` clouds with a separate list ``feats`` of ``(N_i, C)``."""
        if len(clouds) == 0:
            raise PointSSLError("cannot pack an empty list of clouds")
        arrs = [_tensor(c) for c in clouds]
        for i, a in enumerate(arrs):
            if a.ndim != 2 or a.shape[1] < 3 or len(a) == 0:
                raise PointSSLError(f"cloud {i}: expected a non-empty (N, 3+) array, got "
                                    f"shape {tuple(a.shape)}")
        widths = {a.shape[1] for a in arrs}
        if len(widths) > 1:
            raise PointSSLError(f"clouds have different column counts {sorted(widths)}")
        sizes = torch.tensor([0] + [len(a) for a in arrs], dtype=torch.long)
        allp = torch.cat(arrs)
        feat = allp[:, 3:] if allp.shape[1] > 3 else None
        if feats is not None:
            if feat is not None:
                raise PointSSLError("give per-point features either as columns or as feats")
            feat = torch.cat([_tensor(f).reshape(len(a), -1) for f, a in zip(feats, arrs,
                                                                             strict=True)])
        return cls(allp[:, :3].contiguous(), torch.cumsum(sizes, 0),
                   None if feat is None else feat.contiguous())

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> PointBatch:
        """``(B, N, 3 + C)`` -> PointBatch (views, no copy when ``x`` is contiguous)."""
        if x.ndim != 3 or x.shape[-1] < 3:
            raise PointSSLError(f"expected (B, N, 3+) points, got {tuple(x.shape)}")
        b, n, c = x.shape
        flat = x.reshape(b * n, c)
        offset = torch.arange(b + 1, device=x.device, dtype=torch.long) * n
        return cls(flat[:, :3], offset, flat[:, 3:] if c > 3 else None)

    # ------------------------------------------------------------------ views
    @property
    def batch_size(self) -> int:
        return len(self.offset) - 1

    @property
    def sizes(self) -> torch.Tensor:
        """(B,) points per cloud."""
        return self.offset[1:] - self.offset[:-1]

    @property
    def uniform_size(self) -> int | None:
        """N when every cloud has N points (the dense fast path applies), else None."""
        s = self.sizes
        return int(s[0]) if len(s) and bool((s == s[0]).all()) else None

    @property
    def batch_index(self) -> torch.Tensor:
        """(P,) index of the cloud each point belongs to."""
        return torch.repeat_interleave(torch.arange(self.batch_size, device=self.coord.device),
                                       self.sizes.to(self.coord.device))

    @property
    def num_feat(self) -> int:
        return 0 if self.feat is None else self.feat.shape[1]

    def points(self, channels: int | None = None) -> torch.Tensor:
        """(P, 3 + C') coordinates followed by the first ``channels - 3`` feature columns
        (all of them when ``channels`` is None)."""
        if channels is None:
            channels = 3 + self.num_feat
        if channels == 3:
            return self.coord
        if channels - 3 > self.num_feat:
            raise PointSSLError(f"the network takes {channels} input channels but the points "
                                f"carry {3 + self.num_feat} (x, y, z + {self.num_feat} features)")
        return torch.cat([self.coord, self.feat[:, :channels - 3]], dim=1)

    def dense(self, channels: int | None = None) -> torch.Tensor:
        """(B, N, channels) when all clouds have N points; a PointSSLError otherwise."""
        n = self.uniform_size
        if n is None:
            raise PointSSLError("clouds differ in size: no dense (B, N, C) form")
        p = self.points(channels)
        return p.reshape(self.batch_size, n, p.shape[1])

    def split(self, per_point: torch.Tensor) -> list[torch.Tensor]:
        """Cut a per-point tensor (P, ...) into one view per cloud."""
        return list(torch.split(per_point, self.sizes.tolist()))

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, b: int) -> torch.Tensor:
        """Cloud b as (N_b, 3 + C)."""
        lo, hi = int(self.offset[b]), int(self.offset[b + 1])
        return self.points()[lo:hi]

    def to(self, device, non_blocking: bool = False) -> PointBatch:
        mv = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return PointBatch(mv(self.coord), mv(self.offset), mv(self.feat))

    def pin_memory(self) -> PointBatch:
        """Lets a DataLoader with ``pin_memory=True`` carry PointBatches."""
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return PointBatch(pin(self.coord), pin(self.offset), pin(self.feat))


def as_point_batch(x) -> PointBatch:
    """PointBatch from a PointBatch, a dense ``(B, N, 3+C)`` tensor or array, or a list of
    clouds of any sizes."""
    if isinstance(x, PointBatch):
        return x
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return PointBatch.from_dense(_tensor(x) if isinstance(x, np.ndarray) else x)
    if isinstance(x, (list, tuple)):
        return PointBatch.from_list(x)
    raise PointSSLError(f"cannot make a PointBatch from {type(x).__name__}")


@dataclass
class BackboneOutput:
    """What every backbone returns.

    global_feat: (B, C) one descriptor per cloud (what the shape-level protocols use).
    point_feat:  per-point features aligned with the input points, in the input's form:
                 (B, N, Cp) for a dense (B, N, 3+) tensor, (P, Cp) packed for a PointBatch.
    offset:      (B + 1,) the clouds' cumulative counts (set for packed outputs).
    aux_loss:    scalar tensor a training objective must add to its loss (PointNet's
                 feature-transform regulariser, already weighted), or None. Set in train mode
                 only; every method and fine-tuning regime adds it when present.
    """

    global_feat: torch.Tensor
    point_feat: torch.Tensor
    offset: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None

    def per_cloud(self) -> list[torch.Tensor]:
        """Per-point features as one (N_b, Cp) tensor per cloud, whatever the form."""
        if self.point_feat.ndim == 3:
            return list(self.point_feat.unbind(0))
        if self.offset is None:
            raise PointSSLError("packed point features need their offsets")
        return list(torch.split(self.point_feat, (self.offset[1:] - self.offset[:-1]).tolist()))
