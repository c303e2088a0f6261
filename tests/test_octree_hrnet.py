"""Octree HRNet (MID-Net, Sec. 3.2): outputs per input point and per shape on clouds of
different sizes, normals given or estimated, the fusion switches, and the ocnn import that
leaves no torchvision stand-in behind. (The generic backbone contract covers it too.)"""

import sys

import numpy as np
import pytest
import torch

from pointssl.backbones import build_backbone
from pointssl.backbones.octree_hrnet import OctreeHRNet, estimate_normals, import_ocnn
from pointssl.errors import PointSSLError
from pointssl.structures import PointBatch

SMALL = dict(depth=5, channels=8, resblocks=1, global_dim=16, point_dim=8)


def sphere(n, seed):
    g = np.random.default_rng(seed).normal(size=(n, 3))
    return (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)


def test_import_leaves_no_torchvision_stand_in():
    import_ocnn()
    assert "ocnn" in sys.modules
    mod = sys.modules.get("torchvision")
    assert mod is None or getattr(mod, "__spec__", None) is not None


@pytest.mark.parametrize("fusion", [2, 1, 0])
def test_outputs_per_point_and_per_shape_on_clouds_of_different_sizes(fusion):
    torch.manual_seed(0)
    m = build_backbone("octree_hrnet", fusion=fusion, **SMALL).eval()
    clouds = [sphere(n, i) for i, n in enumerate([100, 37, 260])]
    with torch.no_grad():
        out = m(PointBatch.from_list(clouds))
    assert out.global_feat.shape == (3, 16)
    assert out.point_feat.shape == (397, 8)
    assert [t.shape[0] for t in out.per_cloud()] == [100, 37, 260]
    assert torch.isfinite(out.point_feat).all()
    # points of one cloud differ in feature (the interpolation is per point, not per cloud)
    assert out.per_cloud()[0].std(0).mean() > 0


def test_fusion_variants_differ_in_parameters():
    n = [sum(p.numel() for p in build_backbone("octree_hrnet", fusion=f, **SMALL).parameters())
         for f in (2, 1, 0)]
    assert n[0] > n[1] > n[2]


def test_given_normals_are_used_and_absent_ones_estimated():
    torch.manual_seed(0)
    m = build_backbone("octree_hrnet", **SMALL).eval()
    p = torch.from_numpy(sphere(200, 0))
    est = estimate_normals(p, torch.tensor([0, 200]))
    # on a sphere PCA normals, oriented outward, are the positions
    assert (est * p).sum(1).min() > 0.95
    with torch.no_grad():
        a = m(p[None])
        b = m(torch.cat([p, est], 1)[None])
        c = m(torch.cat([p, -est], 1)[None])  # signal_abs: the sign is moot
        d = m(torch.cat([p, torch.roll(est, 1, dims=1)], 1)[None])
    assert torch.allclose(a.global_feat, b.global_feat, atol=1e-5)
    assert torch.allclose(b.point_feat, c.point_feat, atol=1e-5)
    assert not torch.allclose(b.point_feat, d.point_feat, atol=1e-4)


def test_points_outside_the_box_are_kept():
    m = build_backbone("octree_hrnet", **SMALL).eval()
    p = torch.from_numpy(sphere(50, 1)) * 1.6
    with torch.no_grad():
        out = m(p[None])
    assert out.point_feat.shape == (1, 50, 8) and torch.isfinite(out.point_feat).all()


def test_default_size_and_bad_options():
    m = OctreeHRNet()
    n = sum(p.numel() for p in m.parameters())
    assert 2.5e6 < n < 3.2e6  # the release's factor-2 widths (see the module docstring)
    # the global feature is the release's fc1 (8c, what its linear classifier reads); its
    # 128-d fc2 is MID's shape head
    assert (m.global_dim, m.point_dim, m.depth) == (1024, 64, 6)
    assert isinstance(m.cls_fc, torch.nn.Identity)
    old = OctreeHRNet(depth=5, channels=8, resblocks=1, global_dim=16, point_dim=8).eval()
    with torch.no_grad():  # global_dim > 0: an FC inside (older checkpoints)
        assert old(torch.from_numpy(sphere(40, 2))[None]).global_feat.shape == (1, 16)
    with pytest.raises(PointSSLError):
        OctreeHRNet(depth=4)
    with pytest.raises(PointSSLError):
        OctreeHRNet(fusion=3)


def test_unet_variant_reads_the_bottleneck_and_every_parameter_learns():
    """Table 8's U-Net (``arch=unet``): both heads on clouds of different sizes, the shape
    head on the coarsest encoder level (4c channels at depth - 3), the point head on the
    decoder; one backward reaches every parameter; the global-only forward gives the same
    global feature; the HRNet's fusion switch is refused."""
    torch.manual_seed(0)
    m = build_backbone("octree_hrnet", arch="unet", **SMALL)
    assert not hasattr(m, "stages") and m.cls_conv.conv.linear.in_features == 4 * 8
    clouds = [sphere(n, i) for i, n in enumerate([100, 37, 260])]
    out = m.train()(PointBatch.from_list(clouds))
    assert out.global_feat.shape == (3, 16) and out.point_feat.shape == (397, 8)
    assert out.per_cloud()[0].std(0).mean() > 0
    (out.global_feat.square().sum() + out.point_feat.square().sum()).backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    m.eval()
    with torch.no_grad():
        full = m(PointBatch.from_list(clouds)).global_feat
        with m.global_only():
            alone = m(PointBatch.from_list(clouds)).global_feat
    torch.testing.assert_close(alone, full)
    hr = sum(p.numel() for p in build_backbone("octree_hrnet", **SMALL).parameters())
    assert sum(p.numel() for p in m.parameters()) != hr
    with pytest.raises(PointSSLError, match="fusion is an HRNet option"):
        OctreeHRNet(arch="unet", fusion=1)
    with pytest.raises(PointSSLError, match="arch 'pointnet'"):
        OctreeHRNet(arch="pointnet")


@pytest.mark.parametrize("stride,nempty", [(1, True), (1, False), (2, True), (2, False)])
def test_gather_convolution_equals_ocnns_explicit_gemm_with_gradients(stride, nempty):
    from pointssl.backbones.octree_hrnet import gather_conv_class

    ocnn = import_ocnn()
    torch.manual_seed(0)
    m = build_backbone("octree_hrnet", **SMALL)
    clouds = [sphere(n, i) for i, n in enumerate([300, 170])]
    pb = PointBatch.from_list(clouds)
    octree, _ = m.build_octree(pb.coord, estimate_normals(pb.coord, pb.offset, 8),
                               pb.batch_index, 2)
    depth = 4
    h = octree.nnum_nempty[depth] if nempty else octree.nnum[depth]
    ref = ocnn.nn.OctreeConv(5, 6, [3], stride, nempty, method="explicit_gemm").double()
    mine = gather_conv_class()(5, 6, [3], stride, nempty, method="gather").double()
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(int(h), 5, dtype=torch.float64)
    outs, grads = [], []
    for conv in (ref, mine):
        xi = x.clone().requires_grad_()
        out = conv(xi, octree, depth)
        probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * probe).sum().backward()
        outs.append(out.detach())
        grads.append((xi.grad, conv.weights.grad))
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])


def test_the_backbone_runs_gather_convolutions_on_the_cpu_and_matches_explicit_gemm():
    torch.manual_seed(0)
    a = build_backbone("octree_hrnet", **SMALL)
    b = build_backbone("octree_hrnet", conv_method="explicit_gemm", **SMALL)
    b.load_state_dict(a.state_dict())
    pb = PointBatch.from_list([sphere(200, 0), sphere(90, 1)])
    res = []
    for m in (a, b):
        out = m(pb)
        (out.global_feat.sum() + out.point_feat.square().sum()).backward()
        res.append((out.global_feat.detach(), {k: p.grad for k, p in m.named_parameters()}))
    methods = {c.method for c in a.modules() if isinstance(c, import_ocnn().nn.OctreeConv)}
    assert methods == {"gather"}
    torch.testing.assert_close(res[0][0], res[1][0])
    for k, g in res[1][1].items():
        torch.testing.assert_close(res[0][1][k], g, rtol=1e-4, atol=1e-5, msg=k)
