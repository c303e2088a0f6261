"""DGCNN encoder (Wang et al. 2019): EdgeConv 64-64-128-256 on a dynamic kNN graph -> 1024."""

from __future__ import annotations

import torch
from torch import nn

from pointssl.backbones.base import BACKBONES, Backbone, BackboneOutput
from pointssl.backbones.edgeconv import edge_bn_act_max, edge_rows, fused_ok, neighbour_max
from pointssl.backbones.pointnet import PointwiseMLP
from pointssl.errors import PointSSLError

# The (B, N, N) distance matrix goes in row blocks. On a CPU a block holds _CACHE_ELEMS
# distances per thread (4 MB), so that the neighbour selection reads it from cache (1.5-2x
# faster than the whole matrix at 16 x 1,024 points, 1 and 2 threads). On a GPU clouds up to
# _FULL_MAX_N points get the whole matrix at once (fewer launches). Any block holds at most
# _BLOCK_ELEMS distances (128 MB of float32): a 40k-point scene never builds its 6.4 GB
# N x N matrix.
_FULL_MAX_N = 4096
_BLOCK_ELEMS = 1 << 25
_CACHE_ELEMS = 1 << 20


def _groups(n: int, k: int) -> int:
    """Number g of strided column groups for :func:`smallest_k` (0: plain topk): a power of
    two dividing n, k <= g, minimising the g + k n / g values topk has to look at."""
    cost, best = n // 2, 0  # below half a row it pays for its extra min and gathers
    g = 1 << max(k - 1, 0).bit_length()  # the least power of two >= k
    while g <= n // 2:
        if n % g == 0 and g + k * (n // g) < cost:
            cost, best = g + k * (n // g), g
        g *= 2
    return best


def smallest_k(d: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest values along the last dim of d (R..., n), in no particular
    order; the same set as ``d.topk(k, largest=False)`` up to ties.

    Column q goes to group q mod g; a group holding one of the k smallest has its min at or
    below the k-th smallest, and at most k groups do, so the k smallest lie in the k groups
    of smallest min: one topk over g group minima, then one over those groups' k n / g
    columns (160 instead of 1,024 for n = 1,024, k = 20; topk is DGCNN's costliest op)."""
    n = d.shape[-1]
    g = _groups(n, k)
    if not g:
        return d.topk(k, dim=-1, largest=False, sorted=False).indices
    lead, rows = d.shape[:-1], d.reshape(-1, n)
    r = len(rows)
    grid = rows.view(r, n // g, g)  # column q g + p is member q of group p
    pick = grid.amin(1).topk(k, dim=-1, largest=False, sorted=False).indices  # (R, k) groups
    cand = grid.gather(2, pick.unsqueeze(1).expand(r, n // g, k))  # (R, n / g, k) members
    f = cand.view(r, -1).topk(k, dim=-1, largest=False, sorted=False).indices
    return (torch.div(f, k, rounding_mode="floor") * g + pick.gather(1, f % k)).view(*lead, k)


def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, C) -> (B, N, k) indices of each point's k nearest neighbours (itself included),
    in no particular order.

    A cloud of fewer than k points repeats its neighbours cyclically: the max over
    neighbours that EdgeConv takes is unchanged by repeats."""
    with torch.no_grad():
        b, n, _ = x.shape
        kk = min(k, n)
        # |x_i - x_j|² = |x_i|² - 2 x_i·x_j + |x_j|²; the |x_i|² term is constant along a row,
        # so it cannot change row i's ranking and is left out (one fused baddbmm).
        sq = (x * x).sum(-1).unsqueeze(1)
        xt = x.transpose(1, 2)
        if x.device.type != "cpu" and n <= _FULL_MAX_N:
            rows = n
        else:
            cap = _BLOCK_ELEMS if x.device.type != "cpu" else \
                min(_BLOCK_ELEMS, _CACHE_ELEMS * torch.get_num_threads())
            rows = max(1, cap // (b * n))
        idx = torch.empty((b, n, kk), dtype=torch.long, device=x.device)
        for s in range(0, n, rows):
            d = torch.baddbmm(sq, x[:, s:s + rows], xt, alpha=-2)
            idx[:, s:s + rows] = smallest_k(d, kk)
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
    """max_j x[idx[b, i, j]]: (B, N, C) -> (B, N, C), one neighbour slot at a time (a max
    needs no edge tensor, so no (B, N, k, C) gather is ever built)."""
    b, n, k = idx.shape
    return neighbour_max(x.reshape(b * n, -1), edge_rows(idx)).view(b, n, -1)


EDGE_IMPLS = ("fused", "plain")


class EdgeConv(nn.Module):
    """h_i = max_j LeakyReLU(BN(W [x_j - x_i, x_i])) over the k nearest neighbours j.

    W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i: both products are per point, so the
    k-times larger edge tensor is only gathered, never multiplied (DESIGN.md).
    ``impl="fused"`` never builds it at all (edgeconv.py: BN statistics from per-point sums,
    max before normalise + activate, arg-max rows kept for backward); ``"plain"`` gathers
    it, normalises it with nn.BatchNorm and takes the max: the reference the fused op is
    tested against (same values, gradients and running statistics).
    """

    def __init__(self, c_in: int, c_out: int, impl: str = "fused"):
        super().__init__()
        self.w = nn.Linear(2 * c_in, c_out, bias=False)  # same parameters as the paper's conv
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.c_in = c_in
        self.impl = impl

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.w.weight[:, : self.c_in], self.w.weight[:, self.c_in:]
        bn = self.bn
        fused = self.impl == "fused"
        if not self.training or (fused and not bn.training and bn.running_mean is not None):
            # BN on running statistics is a per-channel affine map folded into W; LeakyReLU is
            # monotone, so max_j act(W1' x_j + c_i) = act(max_j W1' x_j + c_i): no BN or act
            # on edges
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            a = x @ (w1 * s[:, None]).t()
            c = x @ ((w2 - w1) * s[:, None]).t() + (bn.bias - bn.running_mean * s)
            m = gather_max(a, idx) if fused else gather_neighbors(a, idx).max(dim=2).values
            return self.act(m + c)
        a = x @ w1.t()  # neighbour term
        c = x @ (w2 - w1).t()  # centre term
        b, n, k = idx.shape
        if fused and bn.affine and b * n * k > 1 and fused_ok(a):
            out = edge_bn_act_max(a.reshape(b * n, -1), c.reshape(b * n, -1), edge_rows(idx),
                                  bn, self.act.negative_slope)
            return out.view(b, n, -1)
        e = gather_neighbors(a, idx) + c.unsqueeze(2)  # (B, N, k, C)
        e = self.bn(e.permute(0, 3, 1, 2))  # BN over all edges, per channel
        return self.act(e).max(dim=-1).values.transpose(1, 2).contiguous()


@BACKBONES.register("dgcnn")
class DGCNN(Backbone):
    """global_feat: max-pool of the 1024-d point-wise embedding; point_feat: the four EdgeConv
    outputs concatenated (64+64+128+256 = 512), as DGCNN's segmentation head uses them.

    ``edge_impl``: "fused" (default) never builds the (B, N, k, C) edge tensor (edgeconv.py;
    ~3x less memory and several times faster to train); "plain" is the edge-tensor reference
    (same results, tests/test_edgeconv.py; ``--set edge_impl=plain``)."""

    name = "dgcnn"

    def __init__(self, k: int = 20, channels=(64, 64, 128, 256), emb_dim: int = 1024,
                 in_dim: int = 3, edge_impl: str = "fused"):
        if edge_impl not in EDGE_IMPLS:
            raise PointSSLError(f"dgcnn edge_impl={edge_impl!r}: expected one of {EDGE_IMPLS}")
        super().__init__(k=k, channels=list(channels), emb_dim=emb_dim, in_dim=in_dim,
                         edge_impl=edge_impl)
        self.k = k
        dims = [in_dim, *channels]
        self.convs = nn.ModuleList(EdgeConv(a, b, edge_impl) for a, b in zip(dims[:-1], dims[1:]))
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
