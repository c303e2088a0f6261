"""The backbone seam: every backbone takes a :class:`PointBatch` (or a dense ``(B, N, 3+C)``
tensor / array) and returns a :class:`BackboneOutput`. Backbones register themselves with
``@BACKBONES.register("name")``; adding one is one new file in this package."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pointssl.errors import PointSSLError
from pointssl.structures import BackboneOutput, as_point_batch
from pointssl.utils import Registry

__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "segment_max", "autocast_operands"]

BACKBONES = Registry("backbone", "pointssl.backbones")

# what the input columns past xyz mean, for the error naming what a batch lacks
_CHANNEL_NAMES = {3: "xyz", 6: "xyz + normals"}


def autocast_operands(*ts):
    """The tensors in autocast's matmul dtype when autocast is on (a custom autograd function
    is not cast by it; its outputs then match what a plain matmul would give)."""
    dev = ts[0].device.type
    if not torch.is_autocast_enabled(dev):
        return ts
    dt = torch.get_autocast_dtype(dev)
    return tuple(t.to(dt) for t in ts)


def segment_max(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(P, C) packed rows, offset (B + 1,) -> (B, C) max over each cloud's rows."""
    sizes = (offset[1:] - offset[:-1]).to(x.device)
    seg = torch.repeat_interleave(torch.arange(len(sizes), device=x.device), sizes,
                                  output_size=len(x))
    out = x.new_zeros(len(sizes), x.shape[1])
    return out.scatter_reduce(0, seg[:, None].expand_as(x), x, "amax", include_self=False)


class Backbone(nn.Module):
    """Base class. ``forward(x)`` takes a PointBatch, a dense ``(B, N, 3+C)`` tensor or numpy
    array, or a list of clouds, and returns ``BackboneOutput`` with ``point_feat`` in the
    input's form ((B, N, Cp) dense, (P, Cp) packed).

    Subclasses set ``global_dim``, ``point_dim`` and ``in_dim`` (input channels: 3 = xyz,
    6 = xyz + normals; feature columns past ``in_dim`` are dropped, missing ones are an
    error), keep their constructor kwargs in ``self.config`` (an export rebuilds them from
    it) and implement ``forward_dense`` (same-size clouds), ``forward_packed`` (any sizes), or
    both. With only one, the other is derived: dense from packed exactly; packed from dense by
    running each cloud alone (exact in eval mode; train-mode BN then sees one cloud at a time).
    A backbone with a training-only regulariser returns it as ``BackboneOutput.aux_loss``.
    """

    name: str = "backbone"
    in_dim: int = 3
    global_dim: int
    point_dim: int

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)

    @classmethod
    def test_config(cls) -> dict:
        """Small constructor kwargs that keep the contract tests fast."""
        return {}

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """A config read from a file written by an older version -> today's kwargs that
        rebuild the same network (a changed default must not change an old file's network)."""
        return dict(config)

    # ------------------------------------------------------------------ dispatch
    def forward(self, x) -> BackboneOutput:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._device())
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            return self.forward_dense(self._columns(x, x.shape[-1] - 3))
        pb = as_point_batch(x)
        if isinstance(x, (list, tuple)):
            pb = pb.to(self._device())
        self._columns(None, pb.num_feat)
        n = pb.uniform_size
        if n is not None and self._has("forward_dense"):  # one size: the dense fast path
            out = self.forward_dense(pb.dense(self.in_dim))
            return BackboneOutput(out.global_feat, out.point_feat.reshape(len(pb.coord), -1),
                                  pb.offset, out.aux_loss)
        return self.forward_packed(pb.points(self.in_dim), pb.offset)

    def forward_dense(self, x: torch.Tensor) -> BackboneOutput:
        """x (B, N, in_dim) -> global (B, C), point (B, N, Cp)."""
        self._needs_one()
        b, n, c = x.shape
        out = self.forward_packed(x.reshape(b * n, c),
                                  torch.arange(b + 1, device=x.device) * n)
        return BackboneOutput(out.global_feat, out.point_feat.reshape(b, n, -1),
                              aux_loss=out.aux_loss)

    def forward_packed(self, x: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        """x (P, in_dim) of B clouds, offset (B + 1,) -> global (B, C), point (P, Cp)."""
        self._needs_one()
        outs = [self.forward_dense(x[int(lo):int(hi)].unsqueeze(0))
                for lo, hi in zip(offset[:-1].tolist(), offset[1:].tolist())]
        aux = [o.aux_loss for o in outs if o.aux_loss is not None]
        return BackboneOutput(torch.cat([o.global_feat for o in outs]),
                              torch.cat([o.point_feat[0] for o in outs]), offset,
                              torch.stack(aux).mean() if aux else None)  # mean over clouds

    # ------------------------------------------------------------------ helpers
    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _has(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(Backbone, method)

    def _needs_one(self) -> None:
        if not (self._has("forward_dense") or self._has("forward_packed")):
            raise NotImplementedError(f"{type(self).__name__} implements neither "
                                      "forward_dense nor forward_packed")

    def _columns(self, x: torch.Tensor | None, num_feat: int) -> torch.Tensor | None:
        """Check the input carries the ``in_dim - 3`` feature columns this backbone takes;
        drop extra columns of a dense tensor (a contiguous copy, so the maths is unchanged)."""
        if 3 + num_feat < self.in_dim:
            want = _CHANNEL_NAMES.get(self.in_dim, f"xyz + {self.in_dim - 3} features")
            have = _CHANNEL_NAMES.get(3 + num_feat, f"xyz + {num_feat} features")
            raise PointSSLError(f"backbone {self.name!r} takes {self.in_dim} input channels "
                                f"({want}) but the points carry {3 + num_feat} ({have}); "
                                f"give the missing per-point features or build it with "
                                f"in_dim={3 + num_feat}")
        if x is not None and x.shape[-1] > self.in_dim:
            x = x[..., :self.in_dim].contiguous()
        return x
