"""DGCNN encoder (Wang et al. 2019): EdgeConv 64-64-128-256 on a dynamic kNN graph -> 1024."""

from __future__ import annotations

import torch
from torch import nn

from pointssl.backbones.base import BACKBONES, Backbone, BackboneOutput
from pointssl.backbones.pointnet import PointwiseMLP

# Clouds up to this size get their whole (B, N, N) distance matrix at once (today's fast
# path); larger ones go in row blocks of at most _BLOCK_ELEMS distances (128 MB of float32),
# so a 40k-point scene never builds its 6.4 GB N x N matrix.
_FULL_MAX_N = 4096
_BLOCK_ELEMS = 1 << 25


def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, C) -> (B, N, k) indices of each point's k nearest neighbours (itself included).

    A cloud of fewer than k points repeats its neighbours cyclically: the max over
    neighbours that EdgeConv takes is unchanged by repeats."""
    with torch.no_grad():
        b, n, _ = x.shape
        kk = min(k, n)
        # |x_i - x_j|² = |x_i|² - 2 x_i·x_j + |x_j|²; the |x_i|² term is constant along a row,
        # so it cannot change row i's ranking and is left out (one fused baddbmm).
        sq = (x * x).sum(-1).unsqueeze(1)
        xt = x.transpose(1, 2)
        rows = n if n <= _FULL_MAX_N else max(1, _BLOCK_ELEMS // (b * n))
        if rows >= n:
            idx = torch.baddbmm(sq, x, xt, alpha=-2).topk(kk, dim=-1, largest=False).indices
        else:
            idx = torch.empty((b, n, kk), dtype=torch.long, device=x.device)
            for s in range(0, n, rows):
                d = torch.baddbmm(sq, x[:, s:s + rows], xt, alpha=-2)
                idx[:, s:s + rows] = d.topk(kk, dim=-1, largest=False).indices
        if kk < k:
            idx = idx[..., torch.arange(k, device=x.device) % kk]
        return idx


def knn_packed(x: torch.Tensor, offset: torch.Tensor, k: int) -> torch.Tensor:
    """Packed (P, C) -> (P, k) indices into the P rows of each point's k nearest neighbours
    within its own cloud (cloud by cloud, each as :func:`knn_indices` of one cloud)."""
    idx = torch.empty((len(x), k), dtype=torch.long, device=x.device)
    for lo, hi in zip(offset[:-1].tolist(), offset[1:].tolist()):
        idx[lo:hi] = knn_indices(x[lo:hi].unsqueeze(0), k)[0] + lo
    return idx


def gather_neighbors(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, N, k) -> (B, N, k, C)."""
    b, n, k = idx.shape
    flat = (idx + torch.arange(b, device=x.device).view(b, 1, 1) * x.shape[1]).reshape(-1)
    return x.reshape(b * x.shape[1], -1)[flat].view(b, n, k, -1)


def gather_max(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """max_j x[idx[b, i, j]]: (B, N, C) -> (B, N, C), gathering at most _BLOCK_ELEMS edge
    values at a time (a max needs no edge tensor, so a large scene never holds all of it)."""
    b, n, k = idx.shape
    rows = max(1, _BLOCK_ELEMS // (b * k * x.shape[-1]))
    if rows >= n:
        return gather_neighbors(x, idx).max(dim=2).values
    return torch.cat([gather_neighbors(x, idx[:, s:s + rows]).max(dim=2).values
                      for s in range(0, n, rows)], dim=1)


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
            return self.act(gather_max(a, idx) + c)
        a = x @ w1.t()  # neighbour term
        c = x @ (w2 - w1).t()  # centre term
        e = gather_neighbors(a, idx) + c.unsqueeze(2)  # (B, N, k, C)
        e = self.bn(e.permute(0, 3, 1, 2))  # BN over all edges, per channel
        return self.act(e).max(dim=-1).values.transpose(1, 2).contiguous()


@BACKBONES.register("dgcnn")
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
        self.in_dim = in_dim

    @classmethod
    def test_config(cls) -> dict:
        return {"k": 4, "channels": (8, 16), "emb_dim": 32}

    def forward_dense(self, points: torch.Tensor) -> BackboneOutput:
        x = points
        feats = []
        for conv in self.convs:
            # the first graph is built on coordinates, later ones on features (dynamic graph)
            x = conv(x, knn_indices(x[..., :3] if not feats else x, self.k))
            feats.append(x)
        pf = torch.cat(feats, dim=-1)
        return BackboneOutput(global_feat=self.last.forward_maxpool(pf), point_feat=pf)

    def forward_packed(self, points: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        # the packed batch is one (1, P, C) "cloud" whose kNN graph never crosses clouds, so
        # EdgeConv runs unchanged and its train-mode BN sees every edge of every cloud
        x = points.unsqueeze(0)
        feats = []
        for conv in self.convs:
            x = conv(x, knn_packed(x[0, :, :3] if not feats else x[0], offset, self.k)[None])
            feats.append(x)
        pf = torch.cat(feats, dim=-1)[0]
        return BackboneOutput(global_feat=self.last.forward_maxpool(pf, offset), point_feat=pf,
                              offset=offset)
