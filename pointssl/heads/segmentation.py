"""The per-point head of ParAE (J partition logits) and of the part-segmentation protocol:
the segmentation networks of PointNet and DGCNN on top of the backbone's features."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from pointssl.backbones.pointnet import PointwiseMLP
from pointssl.errors import PointSSLError

# The papers' segmentation networks after the backbone: [local features, global feature,
# category one-hot] -> shared MLP -> logits. Keyed by backbone name; others get "pointnet".
SEG_PRESETS = {
    # PointNet supp. (part segmentation net): mlp(256, 256, 128) then the part logits; the
    # released part_seg/pointnet_part_seg.py drops out (keep 0.8) after both 256 layers.
    "pointnet": {"channels": [256, 256, 128], "dropout": 0.2, "act": "relu"},
    # DGCNN Fig. 3 (segmentation): mlp{256, 256, 128}, LeakyReLU(0.2) as in every DGCNN
    # layer, dropout 0.5 after both 256 layers (dgcnn.pytorch / OcCo dgcnn_partseg.py). Their
    # code embeds the one-hot by a 16->64 conv first; a one-hot times a matrix is a lookup,
    # so feeding it straight into layer 1 learns the same per-category offsets.
    "dgcnn": {"channels": [256, 256, 128], "dropout": 0.5, "act": "leaky_relu"},
}
_ACTS = ("relu", "leaky_relu")


def _keep_mask(shape, drop: int) -> torch.Tensor:
    """Bool mask of ``shape``, each element kept with probability 1 - drop / 2^16: 16-bit
    lanes of PCG64 words (numpy's generator, 2x faster than torch's CPU randint and ~10x
    faster than ``bernoulli_``), seeded by one draw from torch's generator so that
    ``torch.manual_seed`` and a checkpointed torch RNG state reproduce it."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    raw = np.random.PCG64(seed).random_raw((n + 3) // 4)
    return torch.from_numpy(raw.view(np.int16)[:n]).view(shape) >= drop - 32768


class _ActDropout(torch.autograd.Function):
    """dropout(act(x)) for ReLU / LeakyReLU as x times one factor per element (0, or the
    slope or 1, times the keep scale): one mask pass and one multiply, and backward is the
    gradient times that same factor (no activation or dropout backward of its own)."""

    @staticmethod
    def forward(ctx, x, slope, drop):
        keep = _keep_mask(x.shape, drop)
        scale = 65536 / (65536 - drop)
        pos = x > 0
        if slope == 0:  # a uint8 0/1 factor (x.mul(bool) is 2.5x slower), the scale apart
            f = pos.logical_and_(keep).view(torch.uint8)
            ctx.scale = scale
        else:  # the factor itself: 0, slope * scale or scale
            f = pos.to(x.dtype).mul_((1 - slope) * scale).add_(slope * scale)
            f.mul_(keep.view(torch.uint8))
            ctx.scale = None
        ctx.save_for_backward(f)
        y = x.mul(f)
        return y if ctx.scale is None else y.mul_(ctx.scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (f,) = ctx.saved_tensors
        gx = g.mul(f)
        return (gx if ctx.scale is None else gx.mul_(ctx.scale)), None, None


class ActDropout(nn.Module):
    """Activation (ReLU, or LeakyReLU of ``slope``) then dropout of probability ``p``.

    In training on the CPU the two are one op (:class:`_ActDropout`) with the keep
    probability rounded to a multiple of 2^-16 and the kept elements scaled by its exact
    inverse: CPU ``bernoulli_`` dropout took ~60 ms per (32 x 1,024, 256) activation of
    ParAE-PointNet, ~25% of its head. Elsewhere: the activation, then torch's dropout."""

    def __init__(self, p: float, slope: float = 0.0):
        super().__init__()
        self.p, self.slope = float(p), float(slope)

    def extra_repr(self) -> str:
        return f"p={self.p}, slope={self.slope}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drop = round(self.p * 65536)
        if self.training and x.device.type == "cpu" and 0 < drop < 65536:
            return _ActDropout.apply(x, self.slope, drop)
        y = F.leaky_relu(x, self.slope) if self.slope else torch.relu(x)
        return F.dropout(y, self.p, self.training)


class SegmentationHead(nn.Module):
    """Per-point logits from [point feature f_i, global feature g, onehot(category)].

    Layer 1 is one Linear on that concatenation, computed as W_p f_i + W_c [g, onehot]: the
    context term is one product per shape, gathered to its points, never a broadcast
    (B, N, C) tensor (same maths and parameters; ~4x fewer FLOPs in that layer with
    PointNet). Then BN + activation, a PointwiseMLP over ``channels[1:]`` and a Linear to
    ``num_out``; dropout (identity when 0) after every hidden layer but the last.

    The papers' networks: :meth:`for_backbone` (PointNet-seg / DGCNN-seg, ``SEG_PRESETS``).
    A light custom head: ``SegmentationHead(point_dim, global_dim, [512, 256, 128], J)``.
    """

    def __init__(self, point_dim: int, global_dim: int, channels, num_out: int,
                 num_categories: int = 0, dropout: float = 0.0, act: str = "relu"):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels:
            raise PointSSLError("the segmentation head needs at least one hidden layer")
        if act not in _ACTS:
            raise PointSSLError(f"segmentation head activation {act!r}: expected one of "
                                f"{', '.join(_ACTS)}")
        c0 = channels[0]
        self.num_categories = int(num_categories)
        self.config = {"channels": channels, "num_out": int(num_out),
                       "num_categories": self.num_categories, "dropout": float(dropout),
                       "act": act}
        # Creation order point_proj, ctx_proj, bn0, mlp, out = both former heads' order, so
        # a seeded init is unchanged.
        self.point_proj = nn.Linear(point_dim, c0, bias=False)
        self.ctx_proj = nn.Linear(global_dim + self.num_categories, c0, bias=False)
        self.bn0 = nn.BatchNorm1d(c0)
        self.drop = ActDropout(dropout, 0.2 if act == "leaky_relu" else 0.0) \
            if dropout > 0 else nn.Identity()
        leaky = self.leaky = act == "leaky_relu"
        self.mlp = nn.Sequential(*(PointwiseMLP(a, b, nn.LeakyReLU(0.2, True) if leaky else None)
                                   for a, b in zip(channels[:-1], channels[1:], strict=True)))
        self.out = nn.Linear(channels[-1], num_out)

    @classmethod
    def for_backbone(cls, backbone, num_out: int, num_categories: int = 0
                     ) -> SegmentationHead:
        """The paper's segmentation network for ``backbone`` (by its name, SEG_PRESETS) on
        its point and global features: ParAE's J logits (no categories) or the part logits
        of the part-segmentation protocol (``num_categories`` = K one-hot)."""
        preset = SEG_PRESETS.get(getattr(backbone, "name", ""), SEG_PRESETS["pointnet"])
        return cls(backbone.point_dim, backbone.global_dim, preset["channels"], num_out,
                   num_categories=num_categories, dropout=preset["dropout"],
                   act=preset["act"])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # ParAE checkpoints written before this head existed name ctx_proj "global_proj".
        old = prefix + "global_proj.weight"
        if old in state_dict and prefix + "ctx_proj.weight" not in state_dict:
            state_dict[prefix + "ctx_proj.weight"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _context(self, global_feat, category) -> torch.Tensor:
        """W_c [g, onehot(category)]: (B, c0), one row per shape."""
        if self.num_categories == 0:
            return self.ctx_proj(global_feat)
        if category is None:
            raise PointSSLError("this segmentation head conditions on the shape category: "
                                "pass category (B,)")
        onehot = F.one_hot(category.long(), self.num_categories).to(global_feat.dtype)
        return self.ctx_proj(torch.cat([global_feat, onehot], dim=-1))

    def act0(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2) if self.leaky else torch.relu(x)

    def _act_drop(self, x: torch.Tensor) -> torch.Tensor:
        """Activation then dropout (``drop`` does both when there is dropout)."""
        return self.drop(x) if isinstance(self.drop, ActDropout) else self.act0(x)

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """From layer 1's pre-activation: dropout after every hidden layer but the last."""
        x = self._act_drop(x)
        last = len(self.mlp) - 1
        for i, layer in enumerate(self.mlp):
            x = layer(x) if i == last else self._act_drop(layer.pre_act(x))
        return x

    def hidden(self, point_feat: torch.Tensor, global_feat: torch.Tensor, category=None,
               offset=None) -> torch.Tensor:
        """Last hidden per-point features, (B, N, channels[-1]) or packed (P, channels[-1])."""
        ctx = self._context(global_feat, category)
        if point_feat.ndim == 3:  # dense: every shape has N points
            x = self.point_proj(point_feat) + ctx.unsqueeze(1)
            b, n, c = x.shape
            return self._tail(self.bn0(x.reshape(b * n, c)).reshape(b, n, c))
        if point_feat.ndim != 2:
            raise PointSSLError(f"point features must be (B, N, C) or packed (P, C), got "
                                f"{tuple(point_feat.shape)}")
        if offset is None:
            raise PointSSLError("packed (P, C) point features need offset (B + 1,)")
        sizes = (offset[1:] - offset[:-1]).to(ctx.device)
        index = torch.repeat_interleave(torch.arange(len(sizes), device=ctx.device), sizes)
        x = self.point_proj(point_feat) + ctx[index]
        return self._tail(self.bn0(x))

    def forward(self, point_feat: torch.Tensor, global_feat: torch.Tensor, category=None,
                offset=None) -> torch.Tensor:
        """Per-point logits in the form of ``point_feat``: (B, N, num_out) or (P, num_out)."""
        return self.out(self.hidden(point_feat, global_feat, category, offset))
