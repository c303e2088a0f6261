"""EdgeConv's aggregation without the (B, N, k, C) edge tensor.

EdgeConv (dgcnn.py) computes h_i = max_j act(BN(e_ij)) with e_ij = a_{n(i,j)} + c_i, where
a and c are per-point projections (P, C) and n(i, j) is row i's j-th neighbour. Two facts
make the edge tensor unnecessary:

- LeakyReLU and BN's per-channel affine map are monotone, so the max over j of
  act(s (e_ij - mu) + beta) is act(s (e* - mu) + beta) with e* = c_i + max_j a_{n(i,j)}
  where s = gamma / sqrt(var + eps) >= 0, and the min where s < 0 (a negative gamma).
- BN's batch statistics over the P k edges follow from per-point sums: with
  cnt_p = how often p is a neighbour, mu = cnt . a / (P k) + mean c, and with ah, ch the
  deviations of a, c from those two shares and S'_i = sum_j ah_{n(i,j)} (a sparse product),
  sum (e - mu)^2 = sum_p cnt_p ah_p^2 + sum_i ch_i (2 S'_i + k ch_i).

The backward is BN's backward specialised to a gradient that is non-zero on one edge per
(point, channel) -- the arg-max, kept as a row index -- plus the dense terms through the
mean and variance, again per-point sums: sum_j (e_ij - mu) over each point's edges and over
the edges into each neighbour (the transposed sparse product). Saved for backward: those two
sums, the normalised extreme and its source row, 4 (P, C) tensors per layer instead of ~3
(P, k, C) ones. Both passes peak at a few (P, C) tensors: the neighbour max runs one
neighbour slot at a time, so no (P, k, C) block is ever built.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["edge_rows", "neighbour_max", "edge_bn_act_max", "fused_ok"]

# float64 keys and sparse CSR products: the devices that have both
_DEVICES = ("cpu", "cuda")


def fused_ok(a: torch.Tensor) -> bool:
    """Can :func:`edge_bn_act_max` and the arg-max of :func:`neighbour_max` take the rows
    of ``a`` (..., C)?"""
    return (a.device.type in _DEVICES and a.numel() < MAX_ROWS * a.shape[-1]
            and a.dtype != torch.float64)


def edge_rows(idx: torch.Tensor) -> torch.Tensor:
    """(B, N, k) per-cloud neighbour indices -> (B N, k) row indices into (B N, C) tables."""
    b, n, k = idx.shape
    return (idx + (torch.arange(b, device=idx.device) * n).view(b, 1, 1)).reshape(b * n, k)


# A neighbour-max block on a CPU: ~256 KB per thread, so its running max stays in L2 across
# the k slots (1.3-1.7x faster than 128 KB or 4 MB blocks at C = 64-256, 1 and 2 threads)
_BLOCK_BYTES = 1 << 18


def _slot_max(a: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """max_j a[cols[j]] over neighbour slots j: k gathers of (P, C) rows, never (P, k, C);
    on a CPU in row blocks whose running max stays in cache across the k slots."""
    p = cols.shape[1]
    out = a.new_empty((p, a.shape[1]))
    block = _BLOCK_BYTES * torch.get_num_threads()
    rows = max(64, block // (a.shape[1] * a.element_size())) if a.device.type == "cpu" else p
    buf = a.new_empty((min(rows, p), a.shape[1]))
    for s in range(0, p, rows):
        best, g = out[s:s + rows], buf[: min(rows, p - s)]
        torch.index_select(a, 0, cols[0, s:s + rows], out=best)
        for j in range(1, len(cols)):
            torch.index_select(a, 0, cols[j, s:s + rows], out=g)
            torch.maximum(best, g, out=best)
    return out


_ROW_BITS = 29  # a float32 in a float64 leaves 29 low mantissa bits zero: room for a row
MAX_ROWS = 1 << _ROW_BITS


def _slot_argmax(a: torch.Tensor, cols: torch.Tensor, sign: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, source row) of max_j sign * a[cols[j]] for float32 ``a`` of < MAX_ROWS rows, in
    one pass: each value becomes a float64 key carrying its row in the 29 mantissa bits that
    float32 -> float64 leaves zero; they sit below float32's resolution, so the key order is
    the value order (ties go to either row) and one float max carries the arg-max along.
    (Keys of exact zeros are subnormal: this needs torch.set_flush_denormal off, the default.)"""
    keys = a.double()
    if sign is not None:
        keys.mul_(sign)
    bits = keys.view(torch.int64)
    bits |= torch.arange(len(a), device=a.device).unsqueeze(1)
    best = _slot_max(keys, cols).view(torch.int64)
    return (best & -MAX_ROWS).view(torch.float64).float(), best & (MAX_ROWS - 1)


class _NeighbourMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, cols):
        val, src = _slot_argmax(a, cols)
        ctx.save_for_backward(src)
        ctx.rows = len(a)
        return val

    @staticmethod
    def backward(ctx, g):
        (src,) = ctx.saved_tensors
        return g.new_zeros(ctx.rows, g.shape[1]).scatter_add_(0, src, g), None


def neighbour_max(a: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """max_j a[rows[i, j]]: (P, C), (P, k) -> (P, C), differentiable (the gradient goes to the
    arg-max row, as torch.max's does); the (P, k, C) gather is never built."""
    cols = rows.t().contiguous()
    if torch.is_grad_enabled() and a.requires_grad:
        if a.dtype == torch.float32 and fused_ok(a):
            return _NeighbourMax.apply(a.contiguous(), cols)
        return a[rows].max(dim=1).values  # the key trick needs float32
    return _slot_max(a.contiguous(), cols)


def _adjacency(rows: torch.Tensor, dtype, transpose: bool = False) -> torch.Tensor:
    """Sparse (P, P) matrix A with A[i, rows[i, j]] += 1 (or its transpose) in CSR form."""
    p, k = rows.shape
    flat = rows.reshape(-1)
    ones = torch.ones(len(flat), dtype=dtype, device=rows.device)
    if not transpose:
        crow, col = torch.arange(0, p * k + 1, k, device=rows.device), flat
    else:
        crow = torch.zeros(p + 1, dtype=torch.long, device=rows.device)
        torch.cumsum(torch.bincount(flat, minlength=p), 0, out=crow[1:])
        # int32 keys: torch sorts them by radix, ~10x faster than an int64 argsort
        col = torch.sort(flat.int()).indices // k  # (a row's column order is immaterial)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, ones, (p, p), check_invariants=False)


class _EdgeBNActMax(torch.autograd.Function):
    """max_j LeakyReLU(gamma (e_ij - mu) / sqrt(var + eps) + beta), e_ij = a[rows[i, j]] + c_i,
    with the batch statistics of all P k edges."""

    @staticmethod
    def forward(ctx, a, c, gamma, beta, rows, eps, slope):
        p, k = rows.shape
        m = p * k
        cnt = torch.bincount(rows.reshape(-1), minlength=p).to(a.dtype)  # in-degrees
        # mu = a0 + c0 (a0 = cnt . a / m, c0 = mean c). Deviations from it are sums of the
        # centred ah, ch, so the per-point sums below add terms of the size of the
        # deviations, not of the values
        a0, c0 = (cnt @ a) / m, c.mean(0)
        ah, ch = a - a0, c - c0
        # S'_i = sum_j ah[rows[i, j]] = (A a)_i - k a0
        sh = (_adjacency(rows, a.dtype) @ a).sub_(k * a0)
        # sum_ij (ah_j + ch_i)^2 = sum_p cnt_p ah_p^2 + sum_i ch_i (2 S'_i + k ch_i)
        w = torch.add(sh, ch, alpha=k / 2)
        ss = (ah * ah).t() @ cnt + 2 * (ch * w).sum(0, dtype=torch.float64).to(a.dtype)
        mean = a0 + c0
        r = torch.rsqrt(ss / m + eps)
        neg = gamma < 0  # the max of act(s e) over neighbours is at the min of e where s < 0
        sign = (1 - 2 * neg.to(a.dtype)) if bool(neg.any()) else None
        ext, src = _slot_argmax(a, rows.t().contiguous(), sign)
        if sign is not None:
            ext.mul_(sign)
        xhat = torch.add(ext, ch).sub_(a0).mul_(r)  # (e* - mu) / sqrt(var + eps)
        out = F.leaky_relu_(torch.addcmul(beta, xhat, gamma), slope)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # what the statistics' gradients need: sum_j (e_ij - mu) per point i (q) and
            # over the edges into each neighbour p (rr)
            q = w.add_(ch, alpha=k / 2)
            rr = (_adjacency(rows, a.dtype, transpose=True) @ ch).addcmul_(cnt.unsqueeze(1), ah)
            ctx.save_for_backward(cnt, xhat, src.int(), q, rr, gamma, beta, r)
        else:
            ctx.save_for_backward(None, xhat, None, None, None, gamma, beta, r)
        ctx.slope, ctx.k = slope, k
        ctx.mark_non_differentiable(mean, ss)
        return out, mean, ss

    @staticmethod
    def backward(ctx, g, _gm, _gs):
        cnt, xhat, src, q, rr, gamma, beta, r = ctx.saved_tensors
        k, m = ctx.k, len(xhat) * ctx.k
        d = torch.ops.aten.leaky_relu_backward(g, torch.addcmul(beta, xhat, gamma), ctx.slope,
                                               False)
        dbeta, dgamma = d.sum(0), (d * xhat).sum(0)
        s = gamma * r
        k1 = s * dbeta / m  # through the batch mean
        k2 = s * r * dgamma / m  # through the batch variance
        # the edge gradient is s (d on the arg-max edge - dbeta / m - xhat_ij dgamma / m):
        # summed over each point's edges (dc) and over the edges into each neighbour (da)
        dc = torch.addcmul(-k * k1, d, s).addcmul_(q, k2, value=-1)
        da = torch.zeros_like(d).scatter_add_(0, src.long(), d).mul_(s)
        da.addr_(cnt, k1, alpha=-1).addcmul_(rr, k2, value=-1)
        return da, dc, dgamma, dbeta, None, None, None


def edge_bn_act_max(a: torch.Tensor, c: torch.Tensor, rows: torch.Tensor,
                    bn: nn.modules.batchnorm._BatchNorm, slope: float) -> torch.Tensor:
    """Train-mode ``max_j LeakyReLU(bn(a[rows[i, j]] + c_i))`` over the (P, k) neighbour rows,
    ``bn`` seeing every edge; updates bn's running statistics as nn.BatchNorm over the edges
    would (unbiased variance; momentum None = cumulative average). a, c: (P, C) with
    :func:`fused_ok`; computed in float32 (autocast's bf16 / fp16 cast up)."""
    with torch.autocast(a.device.type, enabled=False):
        out, mean, ss = _EdgeBNActMax.apply(a.float().contiguous(), c.float().contiguous(),
                                            bn.weight, bn.bias, rows, bn.eps, slope)
    if bn.training and bn.track_running_stats:
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked)
        with torch.no_grad():
            var = ss / (rows.numel() - 1)
            bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(var.to(bn.running_var.dtype), alpha=factor)
    return out
