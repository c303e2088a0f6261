"""PointNet encoder (Qi et al. 2017) as used by OcCo / Jigsaw3D / ConClu / ParAE."""

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
    """Spatial transformer predicting a (k x k) matrix (PointNet's input transform)."""

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


@BACKBONES.register("pointnet")
class PointNet(Backbone):
    """Per-point MLP 3-64-64-64-128-1024 then max-pool.

    global_feat: (B, 1024); point_feat: the concatenated per-point outputs of the first four
    layers (64+64+64+128 = 320), the multi-level features a segmentation head consumes.
    """

    name = "pointnet"

    def __init__(self, channels=(64, 64, 64, 128), emb_dim: int = 1024, tnet: bool = False,
                 in_dim: int = 3):
        super().__init__(channels=list(channels), emb_dim=emb_dim, tnet=tnet, in_dim=in_dim)
        self.tnet = TNet(3) if tnet else None  # OcCo's encoder has it; off by default (2x cost)
        dims = [in_dim, *channels]
        self.layers = nn.ModuleList(PointwiseMLP(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = PointwiseMLP(dims[-1], emb_dim)
        self.global_dim = emb_dim
        self.point_dim = sum(channels)
        self.in_dim = in_dim

    @classmethod
    def test_config(cls) -> dict:
        return {"channels": (8, 16), "emb_dim": 32, "tnet": True}

    def forward_dense(self, x: torch.Tensor) -> BackboneOutput:
        if self.tnet is not None:
            xyz = x[..., :3] @ self.tnet(x[..., :3])
            x = torch.cat([xyz, x[..., 3:]], dim=-1)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        g = self.last.forward_maxpool(x)
        return BackboneOutput(global_feat=g, point_feat=torch.cat(feats, dim=-1))

    def forward_packed(self, x: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        # per-point layers see (P, C): train-mode BN normalises over all P points
        if self.tnet is not None:
            t = self.tnet(x[:, :3], offset)  # (B, 3, 3)
            seg = torch.repeat_interleave(t, (offset[1:] - offset[:-1]).to(x.device), dim=0,
                                          output_size=len(x))
            xyz = torch.bmm(x[:, None, :3], seg)[:, 0]
            x = torch.cat([xyz, x[:, 3:]], dim=-1)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        g = self.last.forward_maxpool(x, offset)
        return BackboneOutput(global_feat=g, point_feat=torch.cat(feats, dim=-1), offset=offset)
