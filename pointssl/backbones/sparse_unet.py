"""Sparse residual U-Net (PointContrast Sec. 3.5, the SR-UNet of MinkowskiNet / Choy et al.),
in plain PyTorch on a sparse voxel grid, so it trains on a CPU.

Why not a library: MinkowskiEngine no longer builds, ``spconv``'s CPU backward calls
``torch.cuda.current_stream()`` and fails on a CPU-only torch (DESIGN.md), and ``ocnn``'s
octree U-Net sizes its cells by octree depth over a fixed box rather than by a metric voxel
size. Here the sparse convolutions run on a hashed voxel grid (sorted 64-bit keys,
``searchsorted`` neighbour lookup), the same maths as Minkowski's: 3x3x3 submanifold
convolutions (outputs on the input's voxels), 2x2x2 stride-2 convolutions down and transposed
convolutions up; one GEMM per kernel offset over the occupied voxel pairs.

Layout (Res16UNet): a stem conv at the input voxels, ``len(enc_planes)`` levels each entered
by a stride-2 conv and holding ``enc_layers[l]`` ResNet basic blocks, then as many decoder
levels: a stride-2 transposed conv, concatenation with the encoder's features of that
resolution (the skip), ``dec_layers[l]`` basic blocks. Every conv is followed by BN and ReLU
(the block's second BN before the residual sum). The per-point output (``point_dim`` =
``dec_planes[-1]``) is the feature of the voxel each input point falls in, so it is at full
input resolution and aligned row by row with the input points; the global feature is the
max over each cloud's coarsest voxels.

Presets: ``"small"`` (default; trains on 2 CPU cores) and ``"res16unet34c"`` (the paper's
34-layer network: planes 32-64-128-256 / 256-128-96-96, blocks 2-3-4-6 / 2-2-2-2, as
Res16UNet34C of the authors' release; its final 1x1 conv to 32 is the method's head).

Input: one constant channel per voxel (occupancy), plus the mean of the points' extra feature
columns when ``in_dim`` > 3 (``in_dim=6``: colours). Voxel size in the input's units (default
2.5 cm for metric scenes).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from pointssl.backbones.base import BACKBONES, Backbone, autocast_operands, segment_max
from pointssl.errors import PointSSLError
from pointssl.structures import BackboneOutput

__all__ = ["SparseUNet", "SparseGrid", "PRESETS"]

PRESETS = {
    "small": {"init_dim": 16, "enc_planes": (16, 32, 64, 128), "enc_layers": (1, 1, 1, 1),
              "dec_planes": (64, 48, 32, 32), "dec_layers": (1, 1, 1, 1)},
    "res16unet34c": {"init_dim": 32, "enc_planes": (32, 64, 128, 256),
                     "enc_layers": (2, 3, 4, 6), "dec_planes": (256, 128, 96, 96),
                     "dec_layers": (2, 2, 2, 2)},
}
_OFFSETS = torch.tensor([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                         for dz in (-1, 0, 1)], dtype=torch.long)


class SparseGrid:
    """The occupied voxels of every level: sorted keys, neighbour maps, parent links."""

    def __init__(self, coord: torch.Tensor, batch: torch.Tensor, voxel_size: float, levels: int):
        v = torch.floor(coord / voxel_size).long()
        step = 2 ** levels
        # shift by a multiple of 2^levels (keeps the grid's alignment, so a translation by
        # whole coarsest cells gives the same grouping), leaving every coordinate >= 1
        shift = torch.div(v.min(0).values, step, rounding_mode="floor") * step - step
        v = v - shift
        self.R = int(v.max()) + 2
        nb = int(batch.max()) + 1 if len(batch) else 1
        if self.R ** 3 * nb >= 2 ** 62:
            raise PointSSLError(f"sparse grid of {self.R} voxels a side and {nb} clouds: too "
                                "large for 64-bit keys; increase voxel_size")
        b = batch.long()
        keys = self._key(b, v)
        uk, inv = torch.unique(keys, return_inverse=True)
        self.point_voxel = inv  # input point -> level-0 voxel
        self.keys = [uk]
        self.parent, self.child_slot = [], []
        for _ in range(levels):
            bb, c = self._decode(self.keys[-1])
            pk = self._key(bb, torch.div(c, 2, rounding_mode="floor"))
            up, pinv = torch.unique(pk, return_inverse=True)
            self.parent.append(pinv)
            self.child_slot.append(((c[:, 0] & 1) << 2) | ((c[:, 1] & 1) << 1) | (c[:, 2] & 1))
            self.keys.append(up)
        self._nbr: dict[int, torch.Tensor] = {}
        self._pairs: dict[tuple, tuple] = {}

    def _key(self, b, c):
        r = self.R
        return ((b * r + c[:, 0]) * r + c[:, 1]) * r + c[:, 2]

    def _decode(self, k):
        r = self.R
        z = k % r
        y = (k // r) % r
        x = (k // (r * r)) % r
        return k // (r ** 3), torch.stack([x, y, z], 1)

    def batch_of(self, level: int) -> torch.Tensor:
        return self.keys[level] // (self.R ** 3)

    def size(self, level: int) -> int:
        return len(self.keys[level])

    def neighbours(self, level: int) -> torch.Tensor:
        """(M, 27) index of each voxel's 3x3x3 neighbours at ``level``; M where empty."""
        if level not in self._nbr:
            k = self.keys[level]
            r = self.R
            off = _OFFSETS.to(k.device)
            delta = (off[:, 0] * r + off[:, 1]) * r + off[:, 2]
            q = k[:, None] + delta[None]
            pos = torch.searchsorted(k, q).clamp_max(len(k) - 1)
            self._nbr[level] = torch.where(k[pos] == q, pos, torch.full_like(pos, len(k)))
        return self._nbr[level]

    def sub_pairs(self, level: int):
        """(out index, in index, per-offset bounds (28,)) of the occupied 3x3x3 pairs,
        grouped by kernel offset, the centre (offset 13, each voxel with itself: one dense
        GEMM in :class:`SparseConv`) left out: its group is empty."""
        key = ("sub", level)
        if key not in self._pairs:
            nbr = self.neighbours(level)
            occ = nbr < len(nbr)
            occ[:, 13] = False
            kk, ii = occ.T.nonzero(as_tuple=True)  # ordered by offset
            self._pairs[key] = (ii, nbr[ii, kk], _bounds(kk, 27))
        return self._pairs[key]

    def down_pairs(self, level: int):
        """(parent, child, bounds (9,)) by child slot: level -> level + 1."""
        key = ("down", level)
        if key not in self._pairs:
            slot = self.child_slot[level]
            order = torch.argsort(slot, stable=True)
            self._pairs[key] = (self.parent[level][order], order, _bounds(slot[order], 8))
        return self._pairs[key]

    def up_pairs(self, level: int):
        """(child, parent, bounds (9,)) by child slot: level + 1 -> level."""
        key = ("up", level)
        if key not in self._pairs:
            par, child, b = self.down_pairs(level)
            self._pairs[key] = (child, par, b)
        return self._pairs[key]


def _ints(v) -> list[int]:
    """A list of ints from a list or a ``--set`` string like ``"16,32,64"``."""
    if isinstance(v, str):
        v = [t for t in v.replace(" ", "").split(",") if t]
    return [int(c) for c in v]


def _bounds(sorted_groups: torch.Tensor, n: int) -> list[int]:
    counts = torch.bincount(sorted_groups, minlength=n)
    return [0] + torch.cumsum(counts, 0).tolist()


class _OffsetConv(torch.autograd.Function):
    """out = x @ w[centre] (or zeros) + sum over offsets k of scatter_dst(gather_src(x) @ w[k]).

    The pairs (``src`` -> ``dst``) come grouped by offset (``bounds``), the centre excluded.
    One gather, one GEMM per offset into one buffer, one ``index_add_``; backward the same
    in reverse, the gathered inputs recomputed rather than kept. Autograd through
    ``x[src] @ w[k]`` per offset instead made a zero-filled (N, C_in) gradient and an
    out-of-place scatter per offset (27 per convolution): ~2/3 of a PointContrast step."""

    @staticmethod
    def forward(ctx, x, w, src, dst, bounds, centre, n_out):
        xs = x.index_select(0, src)
        ys = x.new_empty(len(src), w.shape[2])
        for k in range(len(bounds) - 1):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                torch.mm(xs[lo:hi], w[k], out=ys[lo:hi])
        out = x @ w[centre] if centre is not None else x.new_zeros(n_out, w.shape[2])
        out.index_add_(0, dst, ys)
        ctx.save_for_backward(x, w, src, dst)
        ctx.bounds, ctx.centre = bounds, centre
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, w, src, dst = ctx.saved_tensors
        bounds, centre = ctx.bounds, ctx.centre
        need_x, need_w = ctx.needs_input_grad[:2]
        g = g.contiguous()
        gys = g.index_select(0, dst)
        xs = x.index_select(0, src) if need_w else None
        gw = torch.zeros_like(w) if need_w else None
        gxs = x.new_empty(len(src), x.shape[1]) if need_x else None
        for k in range(len(bounds) - 1):
            lo, hi = bounds[k], bounds[k + 1]
            if hi == lo:
                continue
            if need_w:
                torch.mm(xs[lo:hi].T, gys[lo:hi], out=gw[k])
            if need_x:
                torch.mm(gys[lo:hi], w[k].T, out=gxs[lo:hi])
        gx = None
        if need_x:
            gx = g @ w[centre].T if centre is not None else torch.zeros_like(x)
            gx.index_add_(0, src, gxs)
        if need_w and centre is not None:
            torch.mm(x.T, g, out=gw[centre])
        return gx, gw, None, None, None, None, None


class SparseConv(nn.Module):
    """3x3x3 submanifold conv (``kind="sub"``), 2x2x2 stride-2 conv (``"down"``) or its
    transpose (``"up"``), all without bias (BN follows).

    Computed per kernel offset over the occupied (input, output) voxel pairs only — one GEMM
    per offset — so the cost follows the grid's occupancy (7-40% of the 27 neighbours of a
    voxel in indoor frames at 2.5 cm) rather than the full kernel (:class:`_OffsetConv`)."""

    def __init__(self, cin: int, cout: int, kind: str = "sub"):
        super().__init__()
        self.kind, self.cin, self.cout = kind, cin, cout
        self.k = 27 if kind == "sub" else 8
        self.weight = nn.Parameter(torch.empty(self.k * cin, cout))
        fan_in = (self.k if kind != "up" else 1) * cin
        bound = math.sqrt(3.0 / fan_in)  # kaiming-uniform (a = 1), as nn.Linear's scale
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, grid: SparseGrid, level: int) -> torch.Tensor:
        w = self.weight.view(self.k, self.cin, self.cout)
        if self.kind == "sub":  # every voxel is its own centre neighbour: one dense GEMM
            n_out, centre = len(x), 13
            dst, src, off = grid.sub_pairs(level)
        elif self.kind == "down":  # level -> level + 1: child -> parent
            n_out, centre = grid.size(level + 1), None
            dst, src, off = grid.down_pairs(level)
        else:  # up: level + 1 -> level: parent -> child
            n_out, centre = grid.size(level), None
            dst, src, off = grid.up_pairs(level)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # autocast does not cast a custom function's inputs
            # CPU: fp32; its small per-offset GEMMs and scatter ran a PointContrast step 3.4x
            # slower in bf16 (benchmarks/bench_recipes.py --precisions fp32 bf16)
            x, w = (x.float(), w) if dev == "cpu" else autocast_operands(x, w)
        with torch.autocast(dev, enabled=False):
            return _OffsetConv.apply(x, w, src, dst, off, centre, n_out)


class ConvBnRelu(nn.Module):
    def __init__(self, cin, cout, kind="sub"):
        super().__init__()
        self.conv, self.bn, self.relu = SparseConv(cin, cout, kind), nn.BatchNorm1d(cout), \
            nn.ReLU(inplace=True)

    def forward(self, x, grid, level):
        return self.relu(self.bn(self.conv(x, grid, level)))


class BasicBlock(nn.Module):
    """ResNet basic block on the sparse grid (1x1 projection shortcut when widths differ)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.bn1 = SparseConv(cin, cout), nn.BatchNorm1d(cout)
        self.conv2, self.bn2 = SparseConv(cout, cout), nn.BatchNorm1d(cout)
        self.short = None if cin == cout else nn.Sequential(nn.Linear(cin, cout, bias=False),
                                                            nn.BatchNorm1d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, grid, level):
        h = self.relu(self.bn1(self.conv1(x, grid, level)))
        h = self.bn2(self.conv2(h, grid, level))
        return self.relu(h + (x if self.short is None else self.short(x)))


class _Stage(nn.ModuleList):
    def forward(self, x, grid, level):
        for blk in self:
            x = blk(x, grid, level)
        return x


@BACKBONES.register("sparse_unet")
class SparseUNet(Backbone):
    """Sparse residual U-Net: point (P, ``point_dim``) at the input points, global
    (B, ``global_dim``) = max over each cloud's coarsest voxels."""

    name = "sparse_unet"

    def __init__(self, preset: str = "small", voxel_size: float = 0.025, in_dim: int = 3,
                 init_dim: int | None = None, enc_planes: list | None = None,
                 enc_layers: list | None = None, dec_planes: list | None = None,
                 dec_layers: list | None = None):
        # voxel_size 2.5 cm: Sec. 4 / the release's ScanNet and S3DIS configs
        if preset not in PRESETS:
            raise PointSSLError(f"sparse_unet preset {preset!r}: one of {sorted(PRESETS)}")
        p = PRESETS[preset]
        init_dim = int(init_dim if init_dim is not None else p["init_dim"])
        enc_planes = _ints(enc_planes or p["enc_planes"])
        enc_layers = _ints(enc_layers or p["enc_layers"])
        dec_planes = _ints(dec_planes or p["dec_planes"])
        dec_layers = _ints(dec_layers or p["dec_layers"])
        super().__init__(preset=preset, voxel_size=float(voxel_size), in_dim=int(in_dim),
                         init_dim=init_dim, enc_planes=enc_planes, enc_layers=enc_layers,
                         dec_planes=dec_planes, dec_layers=dec_layers)
        if not (len(enc_planes) == len(enc_layers) == len(dec_planes) == len(dec_layers) >= 1):
            raise PointSSLError("sparse_unet: enc_planes, enc_layers, dec_planes and "
                                "dec_layers need one entry per level")
        if voxel_size <= 0 or in_dim < 3:
            raise PointSSLError("sparse_unet: voxel_size > 0 and in_dim >= 3")
        self.in_dim, self.voxel_size = int(in_dim), float(voxel_size)
        self.levels = len(enc_planes)
        self.stem = ConvBnRelu(self.in_dim - 2, init_dim)
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        c = init_dim
        skips = [init_dim]
        for cp, n in zip(enc_planes, enc_layers):
            self.down.append(ConvBnRelu(c, cp, "down"))
            self.enc.append(_Stage(BasicBlock(cp, cp) for _ in range(n)))
            c = cp
            skips.append(cp)
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        for k, (cp, n) in enumerate(zip(dec_planes, dec_layers)):
            skip = skips[self.levels - 1 - k]
            self.up.append(ConvBnRelu(c, cp, "up"))
            self.dec.append(_Stage([BasicBlock(cp + skip, cp)] +
                                   [BasicBlock(cp, cp) for _ in range(n - 1)]))
            c = cp
        self.point_dim, self.global_dim = dec_planes[-1], enc_planes[-1]

    @classmethod
    def test_config(cls) -> dict:
        return {"voxel_size": 0.5, "init_dim": 8, "enc_planes": [8, 16], "enc_layers": [1, 1],
                "dec_planes": [8, 8], "dec_layers": [1, 1]}

    def forward_packed(self, x: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        coord = x[:, :3].float()
        sizes = (offset[1:] - offset[:-1]).to(x.device)
        batch = torch.repeat_interleave(torch.arange(len(sizes), device=x.device), sizes,
                                        output_size=len(x))
        grid = SparseGrid(coord.detach(), batch, self.voxel_size, self.levels)
        m = grid.size(0)
        inp = torch.cat([torch.ones_like(coord[:, :1]), x[:, 3:self.in_dim].float()], 1)
        vox = inp.new_zeros(m, inp.shape[1]).index_add_(0, grid.point_voxel, inp)
        cnt = torch.bincount(grid.point_voxel, minlength=m).clamp_min(1).to(vox.dtype)
        h = self.stem(vox / cnt[:, None], grid, 0)
        feats = [h]
        for lvl in range(self.levels):
            h = self.down[lvl](h, grid, lvl)
            h = self.enc[lvl](h, grid, lvl + 1)
            feats.append(h)
        bottom = h
        for k in range(self.levels):
            lvl = self.levels - 1 - k  # from lvl + 1 up to lvl
            h = self.up[k](h, grid, lvl)
            h = self.dec[k](torch.cat([h, feats[lvl]], 1), grid, lvl)
        point = h[grid.point_voxel]
        gb = grid.batch_of(self.levels)
        gsizes = torch.bincount(gb, minlength=len(sizes))
        goff = torch.cat([gsizes.new_zeros(1), torch.cumsum(gsizes, 0)])
        return BackboneOutput(segment_max(bottom, goff), point, offset)
