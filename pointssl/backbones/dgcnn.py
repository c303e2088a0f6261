"""DGCNN encoder (Wang et al. 2019): EdgeConv 64-64-128-256 on a dynamic kNN graph -> 1024."""

from __future__ import annotations

import torch
from torch import nn

from pointssl.backbones.base import Backbone, BackboneOutput
from pointssl.backbones.pointnet import PointwiseMLP


def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, C) -> (B, N, k) indices of each point's k nearest neighbours (itself included)."""
    with torch.no_grad():
        # |x_i - x_j|² = |x_i|² - 2 x_i·x_j + |x_j|²; the |x_i|² term is constant along a row,
        # so it cannot change row i's ranking and is left out (one fused baddbmm).
        sq = (x * x).sum(-1).unsqueeze(1)
        d = torch.baddbmm(sq, x, x.transpose(1, 2), alpha=-2)
        return d.topk(k, dim=-1, largest=False).indices


def gather_neighbors(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, N, k) -> (B, N, k, C)."""
    b, n, k = idx.shape
    flat = (idx + torch.arange(b, device=x.device).view(b, 1, 1) * x.shape[1]).reshape(-1)
    return x.reshape(b * x.shape[1], -1)[flat].view(b, n, k, -1)


class EdgeConv(nn.Module):
    """h_i = max_j LeakyReLU(BN(W [x_j - x_i, x_i])) over the k nearest neighbours j.

    W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i: both products are per point, so the
    k-times larger edge tensor is only gathered, never multiplied (DESIGN.md).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.w = nn.Linear(2 * c_in, c_out, bias=False)  # same parameters as the paper's conv
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.c_in = c_in

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.w.weight[:, : self.c_in], self.w.weight[:, self.c_in:]
        if not self.training:
            # eval: BN is a per-channel affine map folded into W; LeakyReLU is monotone, so
            # max_j act(W1' x_j + c_i) = act(max_j W1' x_j + c_i): no BN or act on edges
            bn = self.bn
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            a = x @ (w1 * s[:, None]).t()
            c = x @ ((w2 - w1) * s[:, None]).t() + (bn.bias - bn.running_mean * s)
            return self.act(gather_neighbors(a, idx).max(dim=2).values + c)
        a = x @ w1.t()  # neighbour term
        c = x @ (w2 - w1).t()  # centre term
        e = gather_neighbors(a, idx) + c.unsqueeze(2)  # (B, N, k, C)
        e = self.bn(e.permute(0, 3, 1, 2))  # BN over all edges, per channel
        return self.act(e).max(dim=-1).values.transpose(1, 2).contiguous()


class DGCNN(Backbone):
    """global_feat: max-pool of the 1024-d point-wise embedding; point_feat: the four EdgeConv
    outputs concatenated (64+64+128+256 = 512), as DGCNN's segmentation head uses them."""

    name = "dgcnn"

    def __init__(self, k: int = 20, channels=(64, 64, 128, 256), emb_dim: int = 1024,
                 in_dim: int = 3):
        super().__init__(k=k, channels=list(channels), emb_dim=emb_dim, in_dim=in_dim)
        self.k = k
        dims = [in_dim, *channels]
        self.convs = nn.ModuleList(EdgeConv(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = PointwiseMLP(sum(channels), emb_dim, act=nn.LeakyReLU(0.2, inplace=True))
        self.global_dim = emb_dim
        self.point_dim = sum(channels)

    def forward(self, points: torch.Tensor) -> BackboneOutput:
        x = points
        feats = []
        for conv in self.convs:
            # the first graph is built on coordinates, later ones on features (dynamic graph)
            x = conv(x, knn_indices(x[..., :3] if not feats else x, self.k))
            feats.append(x)
        pf = torch.cat(feats, dim=-1)
        return BackboneOutput(global_feat=self.last.forward_maxpool(pf), point_feat=pf)
