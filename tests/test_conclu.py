"""ConClu equations pinned on small hand-checked inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointssl.backbones import build_backbone
from pointssl.losses.clustering import (
    OrthogonalityLoss,
    SwappedClustering,
    code_stats,
    sinkhorn,
)
from pointssl.losses.contrastive import NegativeCosine, SymmetricNegativeCosine
from pointssl.methods.conclu import ConClu, ConCluConfig


def test_negative_cosine_values_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    d = NegativeCosine()(p, z)
    # pair 1: identical direction -> 0; pair 2: orthogonal -> 2 (Eq. 2); mean = 1
    assert d.item() == pytest.approx(1.0)
    d.backward()
    assert z.grad is None  # Eq. 3: sg(z) receives no gradient
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_symmetric_loss_is_sum_of_both_directions():
    g = torch.Generator().manual_seed(0)
    qa, za, qb, zb = (torch.randn(4, 8, generator=g) for _ in range(4))
    d = lambda p, z: (2 - 2 * F.cosine_similarity(p, z)).mean()  # noqa: E731
    expect = d(qa, zb) + d(qb, za)
    assert SymmetricNegativeCosine()(qa, za, qb, zb).item() == pytest.approx(expect.item())


def test_sinkhorn_marginals_eq7():
    cost = torch.rand(12, 4, generator=torch.Generator().manual_seed(1)) * 2
    s = sinkhorn(cost, eps=0.1, iters=200)
    assert torch.allclose(s.sum(1), torch.full((12,), 1 / 12), atol=1e-6)
    assert torch.allclose(s.sum(0), torch.full((4,), 1 / 4), atol=1e-5)
    # cheaper cells get more mass: each row's argmax is its lowest-cost... on average
    assert (s * cost).sum() < (torch.full_like(s, 1 / 48) * cost).sum()


def test_sinkhorn_equipartitions_a_collapsed_batch():
    s = sinkhorn(torch.zeros(8, 4), iters=3)
    assert torch.allclose(s, torch.full((8, 4), 1 / 32, dtype=s.dtype))


def test_orthogonality_loss_zero_for_orthonormal_and_l1_otherwise():
    orth = OrthogonalityLoss()
    q, _ = torch.linalg.qr(torch.randn(16, 5))
    assert orth(q.t() * 3.0).item() == pytest.approx(0.0, abs=1e-5)  # scale is normalised away
    same = torch.ones(3, 4)  # three identical prototypes: off-diagonal cosines are 1
    assert orth(same).item() == pytest.approx(6.0, abs=1e-5)


def test_collapsed_batch_gives_expected_clustering_loss():
    """All q and z equal the first prototype: codes are uniform (equipartition), so the
    swapped CE is 2 * mean_j(-log γ_j) with γ from cos/τ on orthonormal prototypes."""
    j, d, tau = 4, 6, 0.1
    clu = SwappedClustering(d, num_prototypes=j, tau=tau, sinkhorn_iters=3)
    protos, _ = torch.linalg.qr(torch.randn(d, j))
    with torch.no_grad():
        clu.prototypes.weight.copy_(protos.t())
    x = protos.t()[0].repeat(5, 1)
    out = clu(x, x, x, x)
    log_gamma = torch.log_softmax(torch.tensor([1.0, 0, 0, 0]) / tau, 0)
    expect = 2 * (-log_gamma.mean())
    assert out["swap_ce"].item() == pytest.approx(expect.item(), rel=1e-5)
    assert out["orth"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["clu"].item() == pytest.approx(expect.item(), rel=1e-4)


def test_codes_carry_no_gradient_but_predictions_do():
    clu = SwappedClustering(8, num_prototypes=4)
    q = torch.randn(6, 8, requires_grad=True)
    z = torch.randn(6, 8, requires_grad=True)
    clu(q, z, q, z)["swap_ce"].backward()
    assert z.grad is None
    assert q.grad.abs().sum() > 0
    assert clu.prototypes.weight.grad.abs().sum() > 0


def tiny_conclu(**kw):
    cfg = ConCluConfig(**{"num_points": 64, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 8,
                          **kw})
    return ConClu(build_backbone("pointnet", channels=(8, 8), emb_dim=32), cfg)


def test_views_follow_the_paper_recipe():
    m = tiny_conclu(crop_keep=0.5, jitter_sigma=0.0)
    pts = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    v = m.make_views({"points": pts}, np.random.default_rng(1))
    assert v["view_a"].shape == (64, 3) and v["view_b"].shape == (64, 3)
    assert not np.allclose(v["view_a"], v["view_b"])  # two different crops
    # rotation is only about z by ≤ 5°, so heights are preserved exactly without jitter
    zs = np.sort(pts[:, 2])
    assert np.all(np.isin(np.round(v["view_a"][:, 2], 5), np.round(zs, 5)))
    v2 = m.make_views({"points": pts}, np.random.default_rng(1))
    assert np.array_equal(v["view_a"], v2["view_a"])  # deterministic by rng


def test_half_space_crop_keeps_85_percent():
    from pointssl.data.views import HalfSpaceCrop

    pts = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    out = HalfSpaceCrop(0.85)(pts, np.random.default_rng(0))
    assert len(out) == 850
    # the dropped points are all on one side of a plane: a linear separator exists
    kept = {tuple(p) for p in out}
    dropped = np.array([p for p in pts if tuple(p) not in kept])
    from sklearn.svm import LinearSVC

    x = np.concatenate([out, dropped])
    y = np.r_[np.zeros(len(out)), np.ones(len(dropped))]
    assert LinearSVC(C=100, max_iter=20000).fit(x, y).score(x, y) > 0.99


def test_conclu_forward_backward_and_gradients_reach_backbone():
    torch.manual_seed(0)
    m = tiny_conclu()
    rng = np.random.default_rng(0)
    views = [m.make_views({"points": rng.normal(size=(80, 3)).astype(np.float32)}, rng)
             for _ in range(6)]
    batch = {k: torch.from_numpy(np.stack([v[k] for v in views])) for k in views[0]}
    out = m(batch)
    assert set(out) >= {"loss", "con", "clu", "orth", "swap_ce", "embedding", "reg",
                        "code_entropy", "proto_usage"}
    assert math.isfinite(out["loss"].item())
    # Eq. 10 plus PointNet's feature-transform regulariser (zero at the identity init)
    assert torch.allclose(out["loss"], out["con"] + out["clu"] + out["reg"])
    out["loss"].backward()
    assert all(p.grad is not None for p in m.backbone.parameters())
    assert m.cluster.prototypes.weight.grad is not None


def test_clustering_ablation_switch():
    m = tiny_conclu(clustering=False)
    x = torch.randn(4, 64, 3)
    out = m({"view_a": x, "view_b": x + 0.01})
    assert "clu" not in out and torch.equal(out["loss"], out["con"])


def test_pointnet_regulariser_reaches_the_loss_as_the_mean_over_both_views():
    torch.manual_seed(0)
    m = tiny_conclu()
    with torch.no_grad():  # a feature transform 2I: ||I - 4I||_F^2 = 9 * 8 per cloud
        m.backbone.ftnet.fc[-1].weight.zero_()
        m.backbone.ftnet.fc[-1].bias.copy_(torch.eye(8).reshape(-1))
    x = torch.randn(4, 64, 3)
    out = m({"view_a": x, "view_b": x + 0.01})
    assert out["reg"].item() == pytest.approx(0.001 * 72, rel=1e-5)
    assert out["loss"].item() == pytest.approx((out["con"] + out["clu"]).item() + 0.072,
                                               rel=1e-5)
    out["loss"].backward()
    assert m.backbone.ftnet.fc[-1].bias.grad.abs().sum() > 0
    plain = ConClu(build_backbone("pointnet", channels=(8, 8), emb_dim=32, tnet=False),
                   m.cfg)
    assert "reg" not in plain({"view_a": x, "view_b": x + 0.01})


def test_crop_then_sample_keeps_85_percent_distinct_points():
    """2,048-point data, crop_keep 0.85, 2,048-point views: the crop's 1,741 points are all
    kept (85%), only the 307-point shortfall repeats; drawing with replacement kept ~59%."""
    m = ConClu(build_backbone("pointnet", channels=(8,), emb_dim=8),
               ConCluConfig(jitter_sigma=0.0))  # paper defaults, no jitter: rows comparable
    pts = np.random.default_rng(0).normal(size=(2048, 3)).astype(np.float32)
    for seed in range(3):
        v = m.make_views({"points": pts}, np.random.default_rng(seed))["view_a"]
        assert v.shape == (2048, 3)
        assert len(np.unique(v, axis=0)) == 1741  # round(0.85 * 2048)


def _fixed_axis(views, pts):
    """The coordinate axes each view leaves unchanged (no jitter: exactly the input's)."""
    vals = {a: set(np.round(pts[:, a], 5)) for a in range(3)}
    return [a for a in range(3) if set(np.round(views[:, a], 5)) <= vals[a]]


def test_rotation_uses_the_datasets_up_axis_unless_the_config_names_one():
    from pointssl.errors import DataError, PointSSLError

    pts = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    rng = np.random.default_rng
    auto = tiny_conclu(jitter_sigma=0.0, crop_keep=1.0, num_points=200)
    assert auto.cfg.up_axis == "auto"
    assert _fixed_axis(auto.make_views({"points": pts, "up_axis": "y"}, rng(1))["view_a"],
                       pts) == [1]
    assert _fixed_axis(auto.make_views({"points": pts}, rng(1))["view_a"], pts) == [2]  # z
    x = tiny_conclu(jitter_sigma=0.0, crop_keep=1.0, num_points=200, up_axis="x")
    assert _fixed_axis(x.make_views({"points": pts, "up_axis": "y"}, rng(1))["view_a"],
                       pts) == [0]  # an explicit axis overrides the dataset's
    with pytest.raises(PointSSLError, match="up_axis"):
        tiny_conclu(up_axis="up")
    with pytest.raises(DataError, match="sample 4.*up_axis"):
        auto.make_views({"points": pts, "up_axis": "w", "index": 4}, rng(0))


def test_code_stats_on_hand_made_codes():
    hard = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]])
    st = code_stats(hard)
    assert st["code_entropy"].item() == pytest.approx(0.0, abs=1e-9)
    assert st["proto_usage"].item() == pytest.approx(2 / 4)  # prototypes 0 and 1 of 4
    uniform = torch.full((3, 4), 0.25)
    assert code_stats(uniform)["code_entropy"].item() == pytest.approx(math.log(4))
    mixed = torch.tensor([[0.5, 0.5, 0, 0]])
    assert code_stats(mixed)["code_entropy"].item() == pytest.approx(math.log(2))
