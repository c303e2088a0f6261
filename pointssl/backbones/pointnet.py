"""PointNet encoder (Qi et al., CVPR 2017, Fig. 2) as used by Jigsaw3D / OcCo / ConClu / ParAE.

Both ConClu (Sec. 4, "following Jigsaw3D") and ParAE (Sec. 4, "the same two backbones" as
Jigsaw3D and OcCo) take PointNet as the cited papers built it and say nothing about its
transform nets; PointNet's Fig. 2 has both the input (3x3) and the feature (64x64) transform,
and the Jigsaw3D / OcCo PointNet (OcCo_Torch/models/pointnet_jigsaw.py: PointNetEncoder with
feature_transform=True, regulariser weight 0.001) runs with both. So both are on by default;
``tnet=False`` gives the plain trunk."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pointssl.backbones.base import BACKBONES, Backbone, BackboneOutput, segment_max


class PointwiseMLP(nn.Module):
    """Shared per-point Linear + BatchNorm + activation on channels-last (B, N, C) tensors.

    Linear on channels-last runs ~1.5x faster than Conv1d on CPU (DESIGN.md).
    """

    def __init__(self, c_in: int, c_out: int, act: nn.Module | None = None):
        super().__init__()
        self.lin = nn.Linear(c_in, c_out, bias=False)
        self.bn = nn.BatchNorm1d(c_out)
        self.act = act if act is not None else nn.ReLU(inplace=True)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode BN folded into the linear map: BN(W x) = W' x + b'."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return self.lin.weight * scale[:, None], bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.act(F.linear(x, *self.folded()))
        shape = x.shape
        y = self.bn(self.lin(x).reshape(-1, self.lin.out_features))
        return self.act(y).reshape(*shape[:-1], self.lin.out_features)

    def forward_maxpool(self, x: torch.Tensor, offset: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """Per-cloud max of forward(x): over dim 1 of (B, N, C), or over each cloud's rows of
        packed (P, C) given ``offset``. In eval mode the bias and the (monotone) activation
        commute with the max, so they run on (B, C) instead of on every point."""
        pool = (lambda y: y.max(dim=1).values) if offset is None \
            else (lambda y: segment_max(y, offset))
        if self.training:
            return pool(self.forward(x))
        w, b = self.folded()
        return self.act(pool(F.linear(x, w)) + b)


class TNet(nn.Module):
    """Spatial transformer predicting a (k x k) matrix: PointNet's input transform (k = 3) and
    feature transform (k = 64), the same net (PointNet Sec. 4.2 and supp.: mlp 64-128-1024,
    max-pool, FC 512-256, then k x k initialised to the identity)."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(PointwiseMLP(k, 64), PointwiseMLP(64, 128),
                                 PointwiseMLP(128, 1024))
        self.fc = nn.Sequential(
            nn.Linear(1024, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Linear(512, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Linear(256, k * k),
        )
        nn.init.zeros_(self.fc[-1].weight)  # start at the identity transform
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, k) -> (B, k, k); packed (P, k) with ``offset`` -> one matrix per cloud."""
        g = self.mlp[-1].forward_maxpool(self.mlp[:-1](x), offset)
        eye = torch.eye(self.k, device=x.device, dtype=x.dtype)
        return self.fc(g).view(-1, self.k, self.k) + eye


def orthogonality_penalty(a: torch.Tensor) -> torch.Tensor:
    """PointNet Eq. 2: L_reg = ||I - A A^T||_F^2, averaged over the (B, k, k) matrices."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    return (eye - a @ a.transpose(1, 2)).square().sum((1, 2)).mean()


def transform_packed(x: torch.Tensor, t: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Packed rows (P, k) of B clouds times each cloud's own (k, k) matrix -> (P, k): one bmm
    when the clouds share a size, else cloud by cloud (never a (P, k, k) copy of the
    matrices: 512 MB for 32 x 1024 points with k = 64)."""
    sizes = (offset[1:] - offset[:-1]).tolist()
    if len(set(sizes)) == 1:
        return torch.bmm(x.reshape(len(sizes), sizes[0], -1), t).reshape(len(x), -1)
    return torch.cat([xi @ ti for xi, ti in zip(torch.split(x, sizes), t)])


@BACKBONES.register("pointnet")
class PointNet(Backbone):
    """PointNet's classification trunk (Fig. 2): input transform, mlp(64, 64), feature
    transform, mlp(64, 128, 1024), max-pool.

    global_feat: (B, 1024); point_feat: the concatenated per-point outputs of the first four
    layers (64+64+64+128 = 320), the second one *after* the feature transform (as PointNet's
    segmentation network reads its local feature, Fig. 2): the multi-level local features a
    segmentation head consumes (PointNet-seg concatenates local features of every level).

    ``tnet`` switches both transform nets (``--set tnet=true|false``); ``feature_transform``
    (None = follow ``tnet``) switches the 64 x 64 one alone. In train mode with the feature
    transform, ``aux_loss`` = ``transform_reg`` * ||I - A A^T||_F^2 (Eq. 2; weight 0.001).
    """

    name = "pointnet"

    def __init__(self, channels=(64, 64, 64, 128), emb_dim: int = 1024, tnet: bool = True,
                 in_dim: int = 3, feature_transform: bool | None = None,
                 transform_reg: float = 0.001):  # PointNet Sec. 4.2: weight 0.001
        ft = bool(tnet) if feature_transform is None else bool(feature_transform)
        super().__init__(channels=list(channels), emb_dim=emb_dim, tnet=bool(tnet),
                         in_dim=in_dim, feature_transform=ft,
                         transform_reg=float(transform_reg))
        self.tnet = TNet(3) if tnet else None
        dims = [in_dim, *channels]
        self.layers = nn.ModuleList(PointwiseMLP(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = PointwiseMLP(dims[-1], emb_dim)
        # after mlp(64, 64), i.e. the second layer (Fig. 2); created last so that a trunk
        # without it keeps the seeded init of the former network
        self.ft_at = min(1, len(channels) - 1)
        self.ftnet = TNet(dims[self.ft_at + 1]) if ft else None
        self.transform_reg = float(transform_reg)
        self.global_dim = emb_dim
        self.point_dim = sum(channels)
        self.in_dim = in_dim

    @classmethod
    def test_config(cls) -> dict:
        return {"channels": (8, 16), "emb_dim": 32, "tnet": True}

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Configs written before the feature transform existed had the input one only."""
        return {"feature_transform": False, **config}

    def _reg(self, a: torch.Tensor) -> torch.Tensor | None:
        if not self.training or self.transform_reg == 0:
            return None
        return self.transform_reg * orthogonality_penalty(a)

    def forward_dense(self, x: torch.Tensor) -> BackboneOutput:
        if self.tnet is not None:
            xyz = x[..., :3] @ self.tnet(x[..., :3])
            x = torch.cat([xyz, x[..., 3:]], dim=-1)
        feats, aux = [], None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.ft_at and self.ftnet is not None:
                a = self.ftnet(x)
                x = torch.bmm(x, a)
                aux = self._reg(a)
            feats.append(x)
        g = self.last.forward_maxpool(x)
        return BackboneOutput(global_feat=g, point_feat=torch.cat(feats, dim=-1), aux_loss=aux)

    def forward_packed(self, x: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        # per-point layers see (P, C): train-mode BN normalises over all P points
        if self.tnet is not None:
            xyz = transform_packed(x[:, :3], self.tnet(x[:, :3], offset), offset)
            x = torch.cat([xyz, x[:, 3:]], dim=-1)
        feats, aux = [], None
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.ft_at and self.ftnet is not None:
                a = self.ftnet(x, offset)
                x = transform_packed(x, a, offset)
                aux = self._reg(a)
            feats.append(x)
        g = self.last.forward_maxpool(x, offset)
        return BackboneOutput(global_feat=g, point_feat=torch.cat(feats, dim=-1), offset=offset,
                              aux_loss=aux)
