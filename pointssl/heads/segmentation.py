"""The per-point head of ParAE (J partition logits) and of the part-segmentation protocol:
the segmentation networks of PointNet and DGCNN on top of the backbone's features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
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

    def _tail(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout after every hidden layer but the last, through the PointwiseMLPs."""
        x = self.drop(x)
        last = len(self.mlp) - 1
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            if i < last:
                x = self.drop(x)
        return x

    def hidden(self, point_feat: torch.Tensor, global_feat: torch.Tensor, category=None,
               offset=None) -> torch.Tensor:
        """Last hidden per-point features, (B, N, channels[-1]) or packed (P, channels[-1])."""
        ctx = self._context(global_feat, category)
        if point_feat.ndim == 3:  # dense: every shape has N points
            x = self.point_proj(point_feat) + ctx.unsqueeze(1)
            b, n, c = x.shape
            return self._tail(self.act0(self.bn0(x.reshape(b * n, c))).reshape(b, n, c))
        if point_feat.ndim != 2:
            raise PointSSLError(f"point features must be (B, N, C) or packed (P, C), got "
                                f"{tuple(point_feat.shape)}")
        if offset is None:
            raise PointSSLError("packed (P, C) point features need offset (B + 1,)")
        sizes = (offset[1:] - offset[:-1]).to(ctx.device)
        index = torch.repeat_interleave(torch.arange(len(sizes), device=ctx.device), sizes)
        x = self.point_proj(point_feat) + ctx[index]
        return self._tail(self.act0(self.bn0(x)))

    def forward(self, point_feat: torch.Tensor, global_feat: torch.Tensor, category=None,
                offset=None) -> torch.Tensor:
        """Per-point logits in the form of ``point_feat``: (B, N, num_out) or (P, num_out)."""
        return self.out(self.hidden(point_feat, global_feat, category, offset))
