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


# ----------------------------------------------------------------------------- packed seam
def test_knn_row_blocks_bound_the_distance_matrix_and_match_kdtree(monkeypatch):
    import pointssl.backbones.dgcnn as dg

    monkeypatch.setattr(dg, "_FULL_MAX_N", 64)
    monkeypatch.setattr(dg, "_BLOCK_ELEMS", 2 * 300 * 37)  # 37 rows a block, a ragged last one
    sizes, real = [], torch.baddbmm

    def spy(*a, **kw):
        out = real(*a, **kw)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch, "baddbmm", spy)
    x = torch.randn(2, 300, 3)
    idx = dg.knn_indices(x, 6)
    assert len(sizes) == 9 and max(sizes) <= 2 * 300 * 37  # never the (2, 300, 300) matrix
    for b in range(2):
        _, ref = cKDTree(x[b].numpy()).query(x[b].numpy(), k=6)
        assert np.array_equal(np.sort(idx[b].numpy(), 1), np.sort(ref, 1))


def test_knn_packed_stays_in_each_cloud_and_repeats_when_a_cloud_is_below_k():
    from pointssl.backbones.dgcnn import knn_packed

    a, b, c = torch.randn(40, 3), torch.randn(25, 3), torch.randn(3, 3)
    x, offset = torch.cat([a, b, c]), torch.tensor([0, 40, 65, 68])
    idx = knn_packed(x, offset, 5)
    assert idx.shape == (68, 5)
    for cloud, lo in ((a, 0), (b, 40)):
        _, ref = cKDTree(cloud.numpy()).query(cloud.numpy(), k=5)
        assert np.array_equal(np.sort(idx[lo:lo + len(cloud)].numpy() - lo, 1), np.sort(ref, 1))
    # 3 points, k = 5: all three neighbours, then repeats (max over them is unchanged)
    assert all(set(r) == {65, 66, 67} for r in idx[65:].tolist())


def test_segment_max_equals_per_cloud_max_with_gradients():
    from pointssl.backbones.base import segment_max

    x = torch.randn(30, 4, requires_grad=True)
    offset = torch.tensor([0, 7, 19, 30])
    out = segment_max(x, offset)
    ref = torch.stack([x[lo:hi].max(0).values for lo, hi in [(0, 7), (7, 19), (19, 30)]])
    assert torch.equal(out, ref)
    g1 = torch.autograd.grad(out.sum(), x)[0]
    g2 = torch.autograd.grad(ref.sum(), x)[0]
    assert torch.equal(g1, g2)


def test_packed_edgeconv_train_bn_runs_over_all_edges_of_all_clouds():
    from pointssl.backbones.dgcnn import knn_packed

    torch.manual_seed(0)
    conv = EdgeConv(3, 6).train()
    a, b = torch.randn(12, 3), torch.randn(20, 3)
    x, offset = torch.cat([a, b]), torch.tensor([0, 12, 32])
    idx = knn_packed(x, offset, 4)
    out = conv(x[None], idx[None])[0]
    # explicit edges [x_j - x_i, x_i] of both clouds, one BN (batch statistics) over all of them
    xj = x[idx]
    e = conv.w(torch.cat([xj - x[:, None], x[:, None].expand_as(xj)], -1))  # (P, k, C)
    flat = e.reshape(-1, 6)
    e = (e - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + conv.bn.eps)
    ref = conv.act(e * conv.bn.weight + conv.bn.bias).max(1).values
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_missing_input_channels_is_one_clear_error(name):
    from pointssl.structures import PointBatch

    m = build_backbone(name, in_dim=6, **({"k": 4} if name == "dgcnn" else {})).eval()
    with pytest.raises(PointSSLError, match=r"6 input channels \(xyz \+ normals\).*carry 3"):
        m(torch.randn(2, 10, 3))
    with pytest.raises(PointSSLError, match="normals"):
        m(PointBatch.from_list([torch.randn(10, 3), torch.randn(7, 3)]))
    with torch.no_grad():  # with normals it runs, packed or dense
        assert m(PointBatch.from_list([torch.randn(10, 6), torch.randn(7, 6)])).point_feat \
            .shape[0] == 17


def test_a_backbone_with_one_path_gets_the_other():
    """forward_dense only: packed runs cloud by cloud; forward_packed only: dense reshapes."""
    from pointssl.backbones.base import Backbone, BackboneOutput, segment_max
    from pointssl.structures import PointBatch

    class DenseOnly(Backbone):
        def __init__(self):
            super().__init__()
            self.global_dim = self.point_dim = 4
            self.lin = nn.Linear(3, 4)

        def forward_dense(self, x):
            f = self.lin(x)
            return BackboneOutput(f.max(1).values, f)

    class PackedOnly(DenseOnly):
        forward_dense = Backbone.forward_dense

        def forward_packed(self, x, offset):
            f = self.lin(x)
            return BackboneOutput(segment_max(f, offset), f, offset)

    torch.manual_seed(0)
    cs = [torch.randn(5, 3), torch.randn(9, 3)]
    d, p = DenseOnly(), PackedOnly()
    p.load_state_dict(d.state_dict())
    a, b = d(PointBatch.from_list(cs)), p(PointBatch.from_list(cs))
    assert torch.allclose(a.global_feat, b.global_feat, atol=1e-6)
    assert torch.allclose(a.point_feat, b.point_feat, atol=1e-6) and b.point_feat.shape == (14, 4)
    x = torch.randn(2, 6, 3)
    assert torch.allclose(d(x).point_feat, p(x).point_feat, atol=1e-6)
    with pytest.raises(NotImplementedError):
        Backbone()(x)


def test_load_backbone_reads_the_old_format_and_refuses_bad_files(tmp_path):
    m = build_backbone("pointnet", channels=(8, 16), emb_dim=32)
    blob = {"format": "pointssl-backbone/1", "backbone": "pointnet", "config": dict(m.config),
            "state_dict": m.state_dict(), "pointssl_version": "0.1.0", "meta": {"steps": 3}}
    torch.save(blob, tmp_path / "old.pt")  # what the exporter has always written
    m2, meta = load_backbone(tmp_path / "old.pt")
    assert meta == {"steps": 3, "pointssl_version": "0.1.0"}
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m.state_dict().items())
    torch.save(dict(blob, backbone="nope"), tmp_path / "unknown.pt")
    with pytest.raises(PointSSLError, match=r"unknown.pt.*nope"):
        load_backbone(tmp_path / "unknown.pt")
    torch.save(dict(blob, meta={"obj": PointSSLError("x")}), tmp_path / "code.pt")
    with pytest.raises(PointSSLError, match="code.pt"):
        load_backbone(tmp_path / "code.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(PointSSLError, match="other.pt"):
        load_backbone(tmp_path / "other.pt")


def test_eval_neighbour_max_in_row_blocks_is_exact(monkeypatch):
    import pointssl.backbones.dgcnn as dg

    x, idx = torch.randn(2, 50, 6), torch.randint(0, 50, (2, 50, 5))
    full = dg.gather_max(x, idx)
    assert torch.equal(full, gather_neighbors(x, idx).max(dim=2).values)
    monkeypatch.setattr(dg, "_BLOCK_ELEMS", 2 * 5 * 6 * 7)  # 7 rows a block
    assert torch.equal(dg.gather_max(x, idx), full)


# ----------------------------------------------------------------------------- PointNet T-nets
def _set_feature_transform(m, a):
    """Make the feature T-net output the constant matrix ``a`` (zero weights, bias a - I)."""
    k = m.ftnet.k
    with torch.no_grad():
        m.ftnet.fc[-1].weight.zero_()
        m.ftnet.fc[-1].bias.copy_((torch.as_tensor(a, dtype=torch.float32)
                                   - torch.eye(k)).reshape(-1))


def test_pointnet_transform_nets_are_on_by_default_and_tnet_false_is_the_plain_trunk():
    m = build_backbone("pointnet")
    assert m.tnet.k == 3 and m.ftnet.k == 64  # input 3x3, feature 64x64 (PointNet Fig. 2)
    assert m.config["tnet"] is True and m.config["feature_transform"] is True
    assert m.config["transform_reg"] == 0.001
    plain = build_backbone("pointnet", tnet=False)
    assert plain.tnet is None and plain.ftnet is None
    assert plain.config["feature_transform"] is False  # recorded, not left to a default
    assert not any(k.startswith(("tnet.", "ftnet.")) for k in plain.state_dict())
    only_input = build_backbone("pointnet", feature_transform=False)
    assert only_input.tnet is not None and only_input.ftnet is None


def test_feature_transform_acts_on_the_second_layer_and_point_feat_carries_it():
    torch.manual_seed(0)
    m = build_backbone("pointnet", channels=(8, 6, 5), emb_dim=16, tnet=False,
                       feature_transform=True)
    randomize_bn(m)
    m.eval()
    x = torch.randn(2, 20, 3)
    perm = torch.eye(6)[torch.tensor([3, 0, 5, 1, 4, 2])]
    _set_feature_transform(m, torch.eye(6))
    with torch.no_grad():
        ident = m(x).point_feat
        _set_feature_transform(m, perm)
        moved = m(x).point_feat
    assert torch.equal(moved[..., :8], ident[..., :8])  # layer 1: before the transform
    torch.testing.assert_close(moved[..., 8:14], ident[..., 8:14] @ perm)  # layer 2, after it
    assert not torch.allclose(moved[..., 14:], ident[..., 14:])  # layer 3 reads the result


@pytest.mark.parametrize("packed", [False, True])
def test_feature_transform_regulariser_is_the_pointnet_penalty_in_train_mode_only(packed):
    from pointssl.structures import PointBatch

    torch.manual_seed(0)
    m = build_backbone("pointnet", channels=(8, 4), emb_dim=16)
    a = torch.tensor([[2.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
    _set_feature_transform(m, a)
    # by hand: A A^T = [[4,0,0,0],[0,1,0,0],[0,0,2,1],[0,0,1,1]]; I - A A^T has squares
    # 9 + 0 + 1 + 1 + 1 + 0 = 12; weight 0.001 -> 0.012 (same A for every cloud)
    x = [torch.randn(9, 3), torch.randn(13, 3)] if packed else torch.randn(3, 10, 3)
    batch = PointBatch.from_list(x) if packed else x
    out = m.train()(batch)
    assert out.aux_loss.item() == pytest.approx(0.012, rel=1e-6)
    out.aux_loss.backward()
    assert m.ftnet.fc[-1].bias.grad.abs().sum() > 0  # the penalty trains the T-net
    with torch.no_grad():
        assert m.eval()(batch).aux_loss is None
    assert build_backbone("pointnet", channels=(8, 4), emb_dim=16, tnet=False).train()(
        torch.randn(2, 10, 3)).aux_loss is None


@pytest.mark.parametrize("packed", [False, True])
def test_input_transform_regulariser_is_off_by_default_and_adds_the_penalty_when_set(packed):
    from pointssl.structures import PointBatch

    x = [torch.randn(9, 3), torch.randn(13, 3)] if packed else torch.randn(3, 10, 3)
    batch = PointBatch.from_list(x) if packed else x
    a = torch.tensor([[2.0, 0, 0], [0, 1, 0], [0, 0, 0.5]])  # I - A A^T: 9 + 0 + 0.5625
    losses = {}
    for w in (0.0, 0.01):
        torch.manual_seed(0)
        m = build_backbone("pointnet", channels=(8, 4), emb_dim=16, input_transform_reg=w)
        _set_feature_transform(m, torch.eye(4))  # the feature penalty is 0
        with torch.no_grad():
            m.tnet.fc[-1].weight.zero_()
            m.tnet.fc[-1].bias.copy_((a - torch.eye(3)).reshape(-1))
        out = m.train()(batch)
        losses[w] = out.aux_loss
    assert losses[0.0].item() == 0.0
    assert losses[0.01].item() == pytest.approx(0.01 * 9.5625, rel=1e-6)
    losses[0.01].backward()
    assert m.tnet.fc[-1].bias.grad.abs().sum() > 0  # the penalty trains the input T-net
    assert m.config["input_transform_reg"] == 0.01


def test_old_pointnet_files_without_the_feature_transform_still_load(tmp_path):
    """backbone.pt and training checkpoints written before the feature transform: their
    config has no ``feature_transform`` key and means the input transform only."""
    from pointssl.methods import method_from_spec

    old = build_backbone("pointnet", channels=(8, 16), emb_dim=32, feature_transform=False)
    cfg = {k: v for k, v in old.config.items() if k in ("channels", "emb_dim", "tnet",
                                                          "in_dim")}
    torch.save({"format": "pointssl-backbone/1", "backbone": "pointnet", "config": cfg,
                "state_dict": old.state_dict(), "pointssl_version": "0.1.0", "meta": {}},
               tmp_path / "old.pt")
    m, _ = load_backbone(tmp_path / "old.pt")
    assert m.tnet is not None and m.ftnet is None and m.config["feature_transform"] is False
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in old.state_dict().items())
    spec = {"method": {"name": "conclu", "config": {}},
            "backbone": {"name": "pointnet", "config": cfg}}
    assert method_from_spec(spec).backbone.ftnet is None
