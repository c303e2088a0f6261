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
from torch.autograd.function import once_differentiable

from pointssl.backbones.base import BACKBONES, Backbone, BackboneOutput, segment_max

# Score elements (fp32) one block of the fused max-pool writes. CPU, 1 thread: 4 MB (one
# 1,024-point cloud x 1,024 channels) measured fastest (8 MB: ~25% slower ranking). CPU, more
# threads: fewer, larger blocks, as each op is a thread barrier: ConClu-PointNet step at 2
# threads on the shared 2-core box (load ~9) took 27 s with 4 MB blocks, 20 s with 16 MB,
# 17-22 s with 64 MB and 19-22 s with 256 MB (1 thread, same box: ~2.7 s). GPU: large blocks.
_BLOCK_ELEMS = {"cpu": 2**20, "cpu_threads": 2**22, "cuda": 2**26}


def _block_elems(device: torch.device) -> int:
    if device.type != "cpu":
        return _BLOCK_ELEMS["cuda"]
    return _BLOCK_ELEMS["cpu" if torch.get_num_threads() == 1 else "cpu_threads"]


def _monotone(act: nn.Module) -> bool:
    """Does the activation commute with max (non-decreasing)?"""
    return isinstance(act, nn.ReLU) or (isinstance(act, nn.LeakyReLU)
                                        and act.negative_slope >= 0)


@torch.no_grad()
def segment_argmax_linear(x: torch.Tensor, w: torch.Tensor, sizes: list[int]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cloud (consecutive rows of ``x`` (P, C_in), ``sizes``) and output channel: max and
    row index (into ``x``) of ``x @ w.T`` -> (B, C_out) each, never holding the (P, C_out)
    scores: one cache-sized block of rows at a time, scored as (C_out, rows) so the max
    runs along contiguous memory."""
    cout, b = w.shape[0], len(sizes)
    w = w.to(x.dtype)
    rows = max(1, _block_elems(x.device) // cout)
    n = sizes[0]
    if all(s == n for s in sizes) and n <= rows:  # same-size clouds: whole clouds per matmul
        xd, c = x.view(b, n, -1), max(1, rows // n)
        # bmm, not matmul (no transposed copy of the scores); few ops per block
        blocks = [torch.bmm(w.expand(len(xs), -1, -1), xs.transpose(1, 2)).max(-1)
                  for xs in torch.split(xd, c)]
        idx = torch.cat([j for _, j in blocks])
        return (torch.cat([v for v, _ in blocks]),
                idx.add_(torch.arange(0, b * n, n, device=x.device)[:, None]))
    val = x.new_empty(b, cout)
    idx = torch.empty(b, cout, dtype=torch.long, device=x.device)
    lo = 0
    for k, s in enumerate(sizes):
        for r in range(lo, lo + s, rows):
            v, j = (w @ x[r:min(r + rows, lo + s)].T).max(-1)
            if r == lo:
                val[k], idx[k] = v, j + r
            else:
                better = v > val[k]
                val[k] = torch.where(better, v, val[k])
                idx[k] = torch.where(better, j + r, idx[k])
        lo += s
    return val, idx


class _MaxScore(torch.autograd.Function):
    """(B, C_out) per-cloud max over rows of x @ w.T (x (P, C_in), clouds = ``sizes``).

    Forward keeps only the winning row of each output; backward routes each output's
    gradient to it: a gather and a scatter of (B, C_out, C_in), not two GEMMs over every
    row. ``rank_dtype`` (autocast's) only ranks the rows; the winners are scored again in
    x's precision."""

    @staticmethod
    def forward(ctx, x, w, sizes, rank_dtype):
        val, idx = segment_argmax_linear(x if rank_dtype is None else x.to(rank_dtype), w,
                                         sizes)
        if rank_dtype is not None:
            val = (x.index_select(0, idx.flatten()).view(*idx.shape, -1) * w).sum(-1)
        ctx.save_for_backward(x, w, idx)
        return val

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, w, idx = ctx.saved_tensors
        flat = idx.flatten()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.zeros_like(x).index_add_(0, flat, (g[..., None] * w).view(-1, x.shape[1]))
        if ctx.needs_input_grad[1]:
            # (B, C_out, C_in) product summed over B: einsum ran it as C_out tiny bmms
            gw = (g[..., None] * x.index_select(0, flat).view(*idx.shape, -1)).sum(0)
        return gx, gw, None, None


class _Moments(torch.autograd.Function):
    """Mean and biased variance over the rows of y = x @ w.T (x (P, C_in)) from x's mean and
    covariance: W mean(x) and diag(W cov(x) Wᵀ), without forming y."""

    @staticmethod
    def forward(ctx, x, w):
        mu = x.mean(0)
        xc = x - mu
        wc = w @ ((xc.T @ xc) / len(x))
        ctx.save_for_backward(x, w, mu, wc)
        return w @ mu, (wc * w).sum(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mean, g_var):
        x, w, mu, wc = ctx.saved_tensors
        n = len(x)
        # d/dx_n = Wᵀ g_mean / n + (2 / n) M (x_n - mu),  M = Wᵀ diag(g_var) W
        m = (w.T * g_var) @ w
        row = (w.T @ g_mean - 2 * (mu @ m)) / n
        gx = torch.addmm(row.expand_as(x), x, m, alpha=2 / n)
        return gx, g_mean[:, None] * mu + 2 * g_var[:, None] * wc


class PointwiseMLP(nn.Module):
    """Shared per-point Linear + BatchNorm + activation on channels-last (B, N, C) tensors.

    Linear on channels-last runs ~1.5x faster than Conv1d on CPU (DESIGN.md). BatchNorm is
    folded into the Linear: with running statistics (eval), and in train mode with the
    batch's own statistics computed exactly from the input's mean and covariance
    (:meth:`batch_folded`), for :meth:`forward_maxpool` always and for :meth:`forward`
    when C_in < C_out (where the (C_in, C_in) covariance is cheaper than BN's passes over
    (P, C_out)). ``fused`` (a runtime switch, not part of the config; on by default) off
    gives the plain Linear -> BN -> act path everywhere, the reference the tests compare to.
    """

    fused = True

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

    def batch_folded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train-mode BN folded into the linear map for the rows x (P, C_in): BN(W x) =
        W' x + b' with this batch's statistics (exact up to float reassociation; gradients
        flow through them as through BN's). Updates the running statistics as BN does."""
        bn, w = self.bn, self.lin.weight
        n = len(x)
        with torch.autocast(x.device.type, enabled=False):  # statistics in >= fp32
            mean, var = _Moments.apply(x.to(torch.promote_types(x.dtype, w.dtype)), w)
        if bn.training and bn.track_running_stats:
            with torch.no_grad():  # as F.batch_norm: unbiased variance in the running estimate
                bn.num_batches_tracked.add_(1)
                f = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                bn.running_mean.mul_(1 - f).add_(mean * f)
                bn.running_var.mul_(1 - f).add_(var * (f * n / (n - 1)))
        scale = bn.weight * torch.rsqrt(var + bn.eps)
        return w * scale[:, None], bn.bias - mean * scale

    def _batch_stats(self) -> bool:
        return self.bn.training or self.bn.running_mean is None

    def _foldable(self, n_rows: int) -> bool:
        bn = self.bn
        return self.fused and type(bn) is nn.BatchNorm1d and bn.affine and n_rows > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pre_act(x))

    def pre_act(self, x: torch.Tensor) -> torch.Tensor:
        """BN(W x), before the activation (for a caller that fuses it with what follows)."""
        if not self._batch_stats():
            return F.linear(x, *self.folded())
        shape, c_out = x.shape, self.lin.out_features
        xf = x.reshape(-1, shape[-1])
        if self._foldable(len(xf)) and shape[-1] < c_out:
            w, b = self.batch_folded(xf)
            y = F.linear(xf, w, b)
        else:
            y = self.bn(self.lin(xf))
        return y.reshape(*shape[:-1], c_out)

    def forward_maxpool(self, x: torch.Tensor, offset: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """Per-cloud max of forward(x): over dim 1 of (B, N, C), or over each cloud's rows of
        packed (P, C) given ``offset``.

        BN folded into the Linear is a per-channel affine map and the activation is
        monotone, so the max of act(BN(W x)) is act(max of the folded scores + bias): the
        (P, C_out) activations are never stored (:class:`_MaxScore`)."""
        sizes = ([x.shape[1]] * x.shape[0] if offset is None
                 else (offset[1:] - offset[:-1]).tolist())
        xf = x.reshape(-1, x.shape[-1])
        if not (self._foldable(len(xf)) and _monotone(self.act) and min(sizes) > 0):
            return self._plain_maxpool(x, offset)
        dev = x.device.type
        rank_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        w, b = self.batch_folded(xf) if self._batch_stats() else self.folded()
        with torch.autocast(dev, enabled=False):
            val = _MaxScore.apply(xf.to(w.dtype), w, sizes, rank_dtype)
        return self.act(val + b)

    def _plain_maxpool(self, x: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        pool = (lambda y: y.max(dim=1).values) if offset is None \
            else (lambda y: segment_max(y, offset))
        if self.training:
            return pool(self.forward(x))
        w, b = self.folded()
        return self.act(pool(F.linear(x, w)) + b)


def set_fused(module: nn.Module, on: bool = True) -> nn.Module:
    """Switch the fused paths of every PointwiseMLP in ``module`` (off = the plain reference
    path, for tests and benchmarks); returns ``module``."""
    for m in module.modules():
        if isinstance(m, PointwiseMLP):
            m.fused = bool(on)
    return module


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
                 transform_reg: float = 0.001,  # PointNet Sec. 4.2: weight 0.001
                 # PointNet regularises only the feature transform; > 0 adds the same
                 # ||I - A A^T||^2 penalty on the 3 x 3 input transform (not in the papers)
                 input_transform_reg: float = 0.0):
        ft = bool(tnet) if feature_transform is None else bool(feature_transform)
        super().__init__(channels=list(channels), emb_dim=emb_dim, tnet=bool(tnet),
                         in_dim=in_dim, feature_transform=ft,
                         transform_reg=float(transform_reg),
                         input_transform_reg=float(input_transform_reg))
        self.tnet = TNet(3) if tnet else None
        dims = [in_dim, *channels]
        self.layers = nn.ModuleList(PointwiseMLP(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last = PointwiseMLP(dims[-1], emb_dim)
        # after mlp(64, 64), i.e. the second layer (Fig. 2); created last so that a trunk
        # without it keeps the seeded init of the former network
        self.ft_at = min(1, len(channels) - 1)
        self.ftnet = TNet(dims[self.ft_at + 1]) if ft else None
        self.transform_reg = float(transform_reg)
        self.input_transform_reg = float(input_transform_reg)
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

    def _reg(self, a: torch.Tensor, weight: float | None = None) -> torch.Tensor | None:
        weight = self.transform_reg if weight is None else weight
        if not self.training or weight == 0:
            return None
        return weight * orthogonality_penalty(a)

    def _input_transform(self, xyz: torch.Tensor, offset=None):
        """(transform of the xyz columns, its regulariser or None)."""
        t = self.tnet(xyz, offset)
        return t, self._reg(t, self.input_transform_reg)

    @staticmethod
    def _add(a, b):
        return b if a is None else a if b is None else a + b

    def forward_dense(self, x: torch.Tensor) -> BackboneOutput:
        aux = None
        if self.tnet is not None:
            t, aux = self._input_transform(x[..., :3])
            x = torch.cat([x[..., :3] @ t, x[..., 3:]], dim=-1)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.ft_at and self.ftnet is not None:
                a = self.ftnet(x)
                x = torch.bmm(x, a)
                aux = self._add(aux, self._reg(a))
            feats.append(x)
        g = self.last.forward_maxpool(x)
        return BackboneOutput(global_feat=g, point_feat=torch.cat(feats, dim=-1), aux_loss=aux)

    def forward_packed(self, x: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        # per-point layers see (P, C): train-mode BN normalises over all P points
        aux = None
        if self.tnet is not None:
            t, aux = self._input_transform(x[:, :3], offset)
            x = torch.cat([transform_packed(x[:, :3], t, offset), x[:, 3:]], dim=-1)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.ft_at and self.ftnet is not None:
                a = self.ftnet(x, offset)
                x = transform_packed(x, a, offset)
                aux = self._add(aux, self._reg(a))
            feats.append(x)
        g = self.last.forward_maxpool(x, offset)
        return BackboneOutput(global_feat=g, point_feat=torch.cat(feats, dim=-1), offset=offset,
                              aux_loss=aux)
