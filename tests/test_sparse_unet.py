"""The sparse residual U-Net's convolutions against dense torch convolutions on the same grid."""

import pytest
import torch
import torch.nn.functional as F

from pointssl.backbones.sparse_unet import SparseConv, SparseGrid


def _grid(seed=0, levels=2):
    g = torch.Generator().manual_seed(seed)
    # two clouds of points in a 12-voxel box, so many voxels have some but not all neighbours
    coord = torch.rand(400, 3, generator=g) * 12
    batch = torch.arange(2).repeat_interleave(200)
    return SparseGrid(coord, batch, 1.0, levels)


def _dense(values, grid, level):
    """(B, C, R, R, R) with each voxel of ``level`` holding its row of ``values``."""
    b, c = grid._decode(grid.keys[level])
    r = grid.R
    out = values.new_zeros(int(b.max()) + 1, r, r, r, values.shape[1])
    out = out.index_put((b, c[:, 0], c[:, 1], c[:, 2]), values)
    return out.permute(0, 4, 1, 2, 3), (b, c)


def _at(dense, bc):
    b, c = bc
    return dense.permute(0, 2, 3, 4, 1)[b, c[:, 0], c[:, 1], c[:, 2]]


@pytest.mark.parametrize("kind", ["sub", "down", "up"])
def test_sparse_conv_equals_the_dense_convolution_and_its_gradients(kind):
    torch.manual_seed(0)
    grid = _grid()
    cin, cout = 5, 7
    conv = SparseConv(cin, cout, kind).double()
    lvl_in, lvl_out = {"sub": (1, 1), "down": (0, 1), "up": (1, 0)}[kind]
    x = torch.randn(grid.size(lvl_in), cin, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(grid.size(lvl_out), cout, dtype=torch.float64)
    out = conv(x, grid, 1 if kind == "sub" else 0)
    (out * probe).sum().backward()
    gx, gw = x.grad.clone(), conv.weight.grad.clone()

    x2 = x.detach().clone().requires_grad_()
    w = conv.weight.detach().clone().requires_grad_()
    dense_x, _ = _dense(x2, grid, lvl_in)
    if kind == "sub":  # kernel index (dx+1)*9 + (dy+1)*3 + (dz+1) = conv3d's (a, b, c)
        wd = w.view(3, 3, 3, cin, cout).permute(4, 3, 0, 1, 2)
        dense_out = F.conv3d(dense_x, wd, padding=1)
    elif kind == "down":  # child slot (x&1)*4 + (y&1)*2 + (z&1) = kernel (a, b, c)
        wd = w.view(2, 2, 2, cin, cout).permute(4, 3, 0, 1, 2)
        dense_out = F.conv3d(dense_x, wd, stride=2)
    else:
        wd = w.view(2, 2, 2, cin, cout).permute(3, 4, 0, 1, 2)
        dense_out = F.conv_transpose3d(dense_x, wd, stride=2)
    b, c = grid._decode(grid.keys[lvl_out])
    pad = [0, 0] * 3
    if kind == "up":  # the transposed conv's output can stop short of the last odd voxel
        r = grid.R
        pad = [0, r - dense_out.shape[-1], 0, r - dense_out.shape[-2], 0, r - dense_out.shape[-3]]
    ref = _at(F.pad(dense_out, pad), (b, c))
    torch.testing.assert_close(out, ref)
    (ref * probe).sum().backward()
    torch.testing.assert_close(gx, x2.grad)
    torch.testing.assert_close(gw, w.grad)
    assert out.shape == (grid.size(lvl_out), cout)


def test_sparse_conv_without_input_gradient_still_trains_its_weight():
    grid = _grid(1)
    conv = SparseConv(3, 4, "sub")
    x = torch.randn(grid.size(0), 3)  # the stem's input: no gradient wanted
    conv(x, grid, 0).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
