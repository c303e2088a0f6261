"""PointContrast: the two losses against hand computations, matches through the transforms and
the sparse U-Net's voxelisation, and pre-training end to end on built pairs (API and CLI)."""

import json
import math

import numpy as np
import pytest
import torch
from test_pairs import box_room
from torch.nn import functional as F

from pointssl.backbones import build_backbone
from pointssl.cli import main
from pointssl.data.datasets import CloudSet
from pointssl.data.pairs import PairConfig, PairSet, build_pairs
from pointssl.engine.trainer import Trainer
from pointssl.losses.pointcontrast import HardestContrastive, PointInfoNCE, sample_matches
from pointssl.methods import build_method
from pointssl.structures import PointBatch

SMALL_UNET = {"voxel_size": 0.1, "init_dim": 8, "enc_planes": [8, 16], "enc_layers": [1, 1],
              "dec_planes": [16, 8], "dec_layers": [1, 1]}


# ----------------------------------------------------------------------------- losses
def test_infonce_on_a_hand_example():
    eye = torch.eye(3)
    m = torch.tensor([[0, 0], [1, 1], [2, 2]])
    out = PointInfoNCE(temperature=0.4)(eye, eye, m)
    # logits: 1/0.4 on the diagonal, 0 elsewhere -> -log(e^2.5 / (e^2.5 + 2))
    assert out["loss"].item() == pytest.approx(math.log(1 + 2 * math.exp(-2.5)), rel=1e-6)


def test_infonce_equals_cross_entropy_over_the_similarity_matrix():
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(7, 5, generator=g), torch.randn(6, 5, generator=g)
    m = torch.tensor([[0, 3], [2, 0], [4, 5], [6, 1]])
    loss = PointInfoNCE(temperature=0.4)(f1, f2, m, torch.Generator().manual_seed(1))["loss"]
    q, k = F.normalize(f1[m[:, 0]], dim=1), F.normalize(f2[m[:, 1]], dim=1)
    sim = q @ k.T / 0.4
    want = -(sim.diagonal() - sim.logsumexp(1)).mean()  # rows: queries; the diagonal: positives
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert PointInfoNCE(temperature=0.1)(f1, f2, m)["loss"].item() != pytest.approx(loss.item())


def test_sample_matches_caps_and_keeps_indices_unique():
    m = torch.tensor([[0, 0], [0, 1], [1, 1], [2, 2], [3, 4], [4, 4]])
    s = sample_matches(m, 100, torch.Generator().manual_seed(0))
    assert len(set(s[:, 0].tolist())) == len(s) and len(set(s[:, 1].tolist())) == len(s)
    assert {tuple(r) for r in s.tolist()} <= {tuple(r) for r in m.tolist()}
    assert len(sample_matches(torch.stack([torch.arange(50)] * 2, 1), 8)) == 8


def test_hardest_contrastive_is_zero_when_both_margins_hold():
    g = torch.Generator().manual_seed(0)
    f = torch.eye(16)  # unmatched points sqrt(2) = 1.414 > m_n = 1.4 apart
    f2 = F.normalize(f + 0.002 * torch.randn(16, 16, generator=g), dim=1)  # d < m_p = 0.1
    m = torch.stack([torch.arange(16)] * 2, 1)
    loss = HardestContrastive()(f, f2, m, g)
    assert loss["loss"].item() == 0.0
    # a positive partner is never the hardest negative: point 0 matches rows 0 and 16 of
    # view 2, both equal to it
    f2b = torch.cat([f, f[:1]])
    m2 = torch.cat([m, torch.tensor([[0, 16]])])
    assert HardestContrastive()(f, f2b, m2, g)["loss"].item() == 0.0
    # ... while the same row unmatched is a negative inside the margin: 0.5 * 1.4^2 / pairs
    out = HardestContrastive()(f, f2b, m, g)
    assert out["neg"].item() == pytest.approx(0.5 * 1.4**2 / 16, rel=1e-5)


def test_hardest_contrastive_hand_values():
    f = torch.ones(4, 3)  # collapsed: positives at distance 0, hardest negatives at 0
    m = torch.stack([torch.arange(4)] * 2, 1)
    out = HardestContrastive()(f, f, m)
    assert out["pos"].item() == 0.0 and out["neg"].item() == pytest.approx(1.4**2, rel=1e-6)
    # positives apart by 0.5: [0.5 - 0.1]^2 each
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[math.cos(0.5), math.sin(0.5)]])
    d = torch.linalg.vector_norm(a - b).item()
    out = HardestContrastive(neg_margin=0.0)(a, b, torch.tensor([[0, 0]]))
    assert out["loss"].item() == pytest.approx((d - 0.1) ** 2, rel=1e-5)


# ----------------------------------------------------------------------------- matches
def _umeyama_residual(a, b):
    """Max residual of the best similarity transform a -> b."""
    ma, mb = a.mean(0), b.mean(0)
    u, s, vt = np.linalg.svd((b - mb).T @ (a - ma))
    d = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / ((a - ma) ** 2).sum()
    return np.abs(scale * (a - ma) @ r.T + mb - b).max(), scale


def test_matches_survive_the_random_rigid_transforms():
    pts = box_room(0)
    method = build_method("pointcontrast", build_backbone("sparse_unet", **SMALL_UNET))[0]
    rng = np.random.default_rng(0)
    x2 = pts[::-1] + rng.normal(0, 0.002, pts.shape)  # a reversed, noisy copy
    m = np.stack([np.arange(len(pts)), len(pts) - 1 - np.arange(len(pts))], 1)
    v = method.make_views({"xyz1": pts, "xyz2": x2, "matches": m}, rng)
    mm = v["matches"]
    assert not np.allclose(v["view1"][mm[:, 0]], v["view2"][mm[:, 1]], atol=0.1)  # transformed
    res, scale = _umeyama_residual(v["view1"][mm[:, 0]].astype(np.float64),
                                   v["view2"][mm[:, 1]].astype(np.float64))
    assert res < 0.02 and 0.8 / 1.2 - 1e-6 <= scale <= 1.2 / 0.8 + 1e-6
    # a capped view keeps only matches between kept rows, still the same world points
    method.cfg.max_points = 500
    v = method.make_views({"xyz1": pts, "xyz2": x2, "matches": m}, rng)
    assert len(v["view1"]) == len(v["view2"]) == 500 and len(v["matches"]) > 0
    assert _umeyama_residual(v["view1"][v["matches"][:, 0]].astype(np.float64),
                             v["view2"][v["matches"][:, 1]].astype(np.float64))[0] < 0.02


def test_matches_survive_the_voxelisation():
    """One feature per input row, whatever the point order: a permuted copy shifted by whole
    coarsest cells gets, row for matched row, the same features."""
    torch.manual_seed(0)
    bb = build_backbone("sparse_unet", **{**SMALL_UNET, "voxel_size": 0.125}).eval()
    pts = torch.from_numpy(box_room(0)).float()
    perm = torch.randperm(len(pts))
    shifted = pts[perm] + torch.tensor([0.125 * 4 * 3, -0.125 * 4 * 2, 0.0])  # 4 = 2^levels
    with torch.no_grad():
        out = bb(PointBatch.from_list([pts, shifted]))
    f1, f2 = out.per_cloud()
    assert len(f1) == len(pts) and len(f2) == len(pts)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    assert torch.allclose(f1, f2[inv], atol=1e-5)  # row i of view 1 <-> row inv[i] of view 2
    assert not torch.allclose(f1, f2, atol=1e-3)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    cs = CloudSet(points=[box_room(s, density=80.0) for s in range(2)], labels=np.full(2, -1),
                  sources=["r/0", "r/1"])
    res = build_pairs(cs, d, PairConfig(frames=8, max_pairs=4), progress=False)
    assert res["pairs"] >= 4
    return d


@pytest.mark.parametrize("loss", ["infonce", "hardest"])
def test_pretrain_step_on_pairs(pairs_dir, tmp_path, loss):
    torch.manual_seed(0)
    bb = build_backbone("sparse_unet", **SMALL_UNET)
    method = build_method("pointcontrast", bb, {"loss": loss, "batch_size": 2, "epochs": 1,
                                                "num_pairs": 256})[0]
    before = {k: v.clone() for k, v in method.named_parameters()}
    ps = PairSet(pairs_dir)
    batch = method.collate([method.make_views(ps[i], np.random.default_rng(i))
                            for i in range(2)])
    m = batch["matches"]
    assert m[:, 0].max() < len(batch["view1"].coord) and m[:, 1].max() < len(batch["view2"].coord)
    # the second pair's matches point into the second cloud of each packed view
    n1 = int(batch["view1"].offset[1])
    assert (m[:, 0] >= n1).any()
    Trainer(method, ps, tmp_path, progress=False, log_every=1, seed=0, max_steps=2).fit()
    assert any(not torch.equal(v, before[k]) for k, v in method.named_parameters()
               if k.startswith("backbone."))
    assert (tmp_path / "backbone.pt").exists()


def test_cli_pretrain_pointcontrast_on_pairs(pairs_dir, tmp_path, capsys):
    rc = main(["pretrain", "--method", "pointcontrast", "--backbone", "sparse_unet",
               "--data", "pairs", "--root", str(pairs_dir), "--out", str(tmp_path / "run"),
               "--epochs", "1", "--batch-size", "2", "--set", "loss=hardest",
               "--set", "voxel_size=0.1", "--set", "preset=small",
               "--set", "enc_planes=8,16", "--set", "enc_layers=1,1",
               "--set", "dec_planes=16,8", "--set", "dec_layers=1,1", "--set", "init_dim=8"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)
    assert "loss: hardest" in (tmp_path / "run" / "config.yaml").read_text()
    from pointssl.backbones import load_backbone

    bb, _ = load_backbone(tmp_path / "run" / "backbone.pt")
    assert bb.name == "sparse_unet" and bb.config["enc_planes"] == [8, 16]
