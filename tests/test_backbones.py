import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch import nn

from pointssl.backbones import build_backbone, load_backbone, random_backbone, save_backbone
from pointssl.backbones.dgcnn import EdgeConv, gather_neighbors, knn_indices
from pointssl.errors import PointSSLError


def reference_eval(model, x):
    """Eval-mode output computed the plain way: train-mode code path, BN on running stats."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    with torch.no_grad():
        out = model(x)
    model.eval()
    return out


def randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g))  # negative scales too
                m.bias.copy_(torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("name,pdim", [("pointnet", 320), ("dgcnn", 512)])
def test_shapes_and_folded_eval_equals_plain_eval(name, pdim):
    torch.manual_seed(0)
    m = build_backbone(name, **({"k": 8} if name == "dgcnn" else {}))
    randomize_bn(m)
    x = torch.randn(3, 64, 3)
    m.eval()
    with torch.no_grad():
        fast = m(x)
    ref = reference_eval(m, x)
    assert fast.global_feat.shape == (3, 1024) and fast.point_feat.shape == (3, 64, pdim)
    assert torch.allclose(fast.global_feat, ref.global_feat, atol=1e-4, rtol=1e-4)
    assert torch.allclose(fast.point_feat, ref.point_feat, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_global_feature_is_permutation_invariant(name):
    m = build_backbone(name, **({"k": 8} if name == "dgcnn" else {})).eval()
    x = torch.randn(2, 50, 3)
    perm = torch.randperm(50)
    with torch.no_grad():
        a, b = m(x), m(x[:, perm])
    assert torch.allclose(a.global_feat, b.global_feat, atol=1e-5)
    assert torch.allclose(a.point_feat[:, perm], b.point_feat, atol=1e-5)


def test_knn_matches_kdtree():
    x = torch.randn(2, 100, 3)
    idx = knn_indices(x, 7)
    for b in range(2):
        _, ref = cKDTree(x[b].numpy()).query(x[b].numpy(), k=7)
        assert np.array_equal(np.sort(idx[b].numpy(), 1), np.sort(ref, 1))


def test_edgeconv_factorisation_equals_explicit_edge_features_with_gradients():
    torch.manual_seed(0)
    conv = EdgeConv(5, 7).train()
    x = torch.randn(2, 30, 5, requires_grad=True)
    idx = knn_indices(x, 4)
    out = conv(x, idx)
    # explicit [x_j - x_i, x_i] edge features, as in the DGCNN paper
    xj = gather_neighbors(x, idx)
    xi = x.unsqueeze(2).expand_as(xj)
    e = conv.w(torch.cat([xj - xi, xi], dim=-1))
    ref = conv.act(conv.bn(e.permute(0, 3, 1, 2))).max(dim=-1).values.transpose(1, 2)
    assert torch.allclose(out, ref, atol=1e-5)
    g1 = torch.autograd.grad(out.sum(), x, retain_graph=True)[0]
    g2 = torch.autograd.grad(ref.sum(), x)[0]
    assert torch.allclose(g1, g2, atol=1e-4)


def test_export_round_trip_and_bad_checkpoint(tmp_path):
    m = build_backbone("pointnet", channels=(8, 16), emb_dim=32)
    save_backbone(tmp_path / "b.pt", m, method="conclu")
    m2, meta = load_backbone(tmp_path / "b.pt")
    assert meta["method"] == "conclu" and meta["pointssl_version"]
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert m2.config == m.config and m2.global_dim == 32
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PointSSLError, match="bad.pt"):
        load_backbone(tmp_path / "bad.pt")
    with pytest.raises(PointSSLError, match="not found"):
        load_backbone(tmp_path / "missing.pt")


def test_random_backbone_is_a_function_of_its_seed():
    cfg = dict(channels=(8, 16), emb_dim=32)
    a, b = random_backbone("pointnet", 5, **cfg), random_backbone("pointnet", 5, **cfg)
    torch.manual_seed(123)  # the global state before the call must not matter
    c = random_backbone("pointnet", 5, **cfg)
    d = random_backbone("pointnet", 6, **cfg)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and torch.equal(pa, pc)
    assert any(not torch.equal(pa, pd) for pa, pd in zip(a.parameters(), d.parameters()))
