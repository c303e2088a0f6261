"""ParAE method (views, head, loss wiring, checkpoint rebuild) and the `viz gmm` figures."""

import numpy as np
import pytest
import torch

from pointssl.backbones import build_backbone, save_backbone
from pointssl.errors import DataError, PointSSLError
from pointssl.heads import SegmentationHead
from pointssl.losses.gmm import gmm_nll
from pointssl.methods import method_spec
from pointssl.methods.conclu import ConClu
from pointssl.methods.parae import ParAE, ParAEConfig
from pointssl.viz.gmm import load_parae, viz_gmm, viz_gmm_from_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




def _shapes(b, n, seed=0):
    """Anisotropic blobs: a cloud whose GMM fit has something to learn."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(b, 4, 3, generator=g)
    which = torch.randint(0, 4, (b, n), generator=g)
    pts = centres.gather(1, which.unsqueeze(-1).expand(b, n, 3))
    return pts + 0.15 * torch.randn(b, n, 3, generator=g) * torch.tensor([1.0, 0.4, 0.1])


def test_config_carries_paper_settings():
    cfg = ParAEConfig()
    assert (cfg.num_components, cfg.num_points, cfg.epochs) == (32, 1024, 25)
    assert cfg.head_channels == "auto"  # the backbone's segmentation network


def test_default_head_is_the_backbones_segmentation_network():
    pn = ParAE(build_backbone("pointnet", channels=(8, 16), emb_dim=32))
    assert pn.head.config == {"channels": [256, 256, 128], "num_out": 32,
                              "num_categories": 0, "dropout": 0.2, "act": "relu"}
    dg = ParAE(build_backbone("dgcnn", k=4, channels=(8, 16), emb_dim=32))
    assert dg.head.config["act"] == "leaky_relu" and dg.head.config["dropout"] == 0.5
    light = ParAE(build_backbone("pointnet", channels=(8, 16), emb_dim=32),
                  ParAEConfig(head_channels="512,256,128"))  # the former default, kept
    assert light.head.config["channels"] == [512, 256, 128]
    assert light.head.config["dropout"] == 0.0
    with pytest.raises(PointSSLError, match="head_channels"):
        ParAE(build_backbone("pointnet", channels=(8,), emb_dim=8),
              ParAEConfig(head_channels="big"))


def test_train_loss_adds_the_pointnet_regulariser():
    torch.manual_seed(0)
    bb = build_backbone("pointnet", channels=(8, 4), emb_dim=16)
    with torch.no_grad():  # feature transform 2I: 0.001 * ||I - 4I||_F^2 = 0.001 * 9 * 4
        bb.ftnet.fc[-1].weight.zero_()
        bb.ftnet.fc[-1].bias.copy_(torch.eye(4).reshape(-1))
    m = ParAE(bb, ParAEConfig(num_components=4, head_channels="16")).train()
    out = m({"points": _shapes(3, 40)})
    assert out["reg"].item() == pytest.approx(0.036, rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["nll"].item() + 0.036, rel=1e-5)
    assert "reg" not in m.eval()({"points": _shapes(3, 40)})  # eval: no regulariser


def test_make_views_subsamples_without_replacement_and_is_seeded():
    m = ParAE(build_backbone("pointnet"), ParAEConfig(num_points=256))
    cloud = np.random.default_rng(0).normal(size=(1000, 3))
    v1 = m.make_views({"points": cloud, "index": 0}, np.random.default_rng(7))
    v2 = m.make_views({"points": cloud, "index": 0}, np.random.default_rng(7))
    v3 = m.make_views({"points": cloud, "index": 0}, np.random.default_rng(8))
    assert set(v1) == {"points"}
    assert v1["points"].shape == (256, 3) and v1["points"].dtype == np.float32
    np.testing.assert_array_equal(v1["points"], v2["points"])
    assert not np.array_equal(v1["points"], v3["points"])
    rows = {tuple(r) for r in cloud.astype(np.float32)}
    assert all(tuple(r) in rows for r in v1["points"])  # a subset of the cloud's points...
    assert len({tuple(r) for r in v1["points"]}) == 256  # ...with no repeats


def test_make_views_small_cloud_repeats_and_drops_extra_columns():
    m = ParAE(build_backbone("pointnet"), ParAEConfig(num_points=64))
    cloud = np.random.default_rng(1).normal(size=(10, 6)).astype(np.float32)
    v = m.make_views({"points": cloud}, np.random.default_rng(0))["points"]
    assert v.shape == (64, 3)
    assert {tuple(r) for r in v} <= {tuple(r) for r in cloud[:, :3]}
    with pytest.raises(DataError):
        m.make_views({"points": np.zeros((0, 3)), "index": 3}, np.random.default_rng(0))


def test_seg_head_equals_linear_on_concatenated_features():
    torch.manual_seed(0)
    head = SegmentationHead(5, 7, [6, 4], 3).eval()
    pf, gf = torch.randn(2, 9, 5), torch.randn(2, 7)
    cat = torch.cat([pf, gf.unsqueeze(1).expand(2, 9, 7)], -1)
    w = torch.cat([head.point_proj.weight, head.ctx_proj.weight], 1)
    x = torch.relu(head.bn0((cat @ w.t()).reshape(18, 6))).reshape(2, 9, 6)
    torch.testing.assert_close(head(pf, gf), head.out(head.mlp(x)))


def test_forward_outputs_and_loss_is_the_gmm_nll():
    torch.manual_seed(0)
    bb = build_backbone("pointnet", channels=(32, 32), emb_dim=64)
    m = ParAE(bb, ParAEConfig(num_components=5, head_channels="32,16")).eval()
    pts = _shapes(3, 50)
    out = m({"points": pts})
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert out["embedding"].shape == (3, 64)
    assert 0 < out["min_pi"].item() <= 1 / 5
    _, s = m.logits(pts)
    assert s.shape == (3, 50, 5)
    assert out["loss"].item() == pytest.approx(gmm_nll(pts, s, m.cfg.eps).item(), rel=1e-5)


def test_gradients_reach_any_backbone():
    torch.manual_seed(0)
    bb = build_backbone("dgcnn", k=4, channels=(16, 16, 16, 16), emb_dim=32)
    m = ParAE(bb, ParAEConfig(num_components=4, head_channels="16"))
    m({"points": _shapes(2, 40)})["loss"].backward()
    grads = [p.grad for p in bb.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_loss_decreases_on_a_fixed_batch_with_pointnet():
    torch.manual_seed(0)
    m = ParAE(build_backbone("pointnet"), ParAEConfig())
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    batch = {"points": _shapes(4, 256)}
    losses = []
    for _ in range(30):
        loss = m(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < losses[0] - 1.0, losses  # ~2 nats/point in practice


def test_checkpoint_rebuild_roundtrip(tmp_path):
    torch.manual_seed(0)
    bb = build_backbone("pointnet", channels=(16, 16), emb_dim=32)
    m = ParAE(bb, ParAEConfig(num_components=6, head_channels="16,8", eps=1e-3))
    m({"points": _shapes(2, 30)})  # move BN statistics off their init
    state = {f"module.{k}": v.detach().clone() for k, v in m.state_dict().items()}
    spec = method_spec(m)  # what every trainer checkpoint carries beside the weights
    assert spec["backbone"] == {"name": "pointnet", "config": bb.config}
    assert spec["method"]["name"] == "parae" and spec["method"]["config"]["eps"] == 1e-3
    # a DDP-wrapped module's keys ("module.") load too
    torch.save({**spec, "model": state, "epoch": 1}, tmp_path / "last.pt")
    r = load_parae(tmp_path / "last.pt")
    assert r.cfg == m.cfg and r.cfg.num_components == 6 and r.cfg.eps == 1e-3
    pts = _shapes(1, 30, seed=1)
    torch.testing.assert_close(r.eval().logits(pts)[1], m.eval().logits(pts)[1])
    torch.save({"model": bb.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(PointSSLError, match="other.pt"):
        load_parae(tmp_path / "other.pt")
    c = ConClu(build_backbone("pointnet", channels=(8,), emb_dim=8))
    torch.save({**method_spec(c), "model": c.state_dict()}, tmp_path / "conclu.pt")
    with pytest.raises(PointSSLError, match="not ParAE"):
        load_parae(tmp_path / "conclu.pt")


def _is_png(path):
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_viz_writes_pngs_from_method_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    bb = build_backbone("pointnet", channels=(16, 16), emb_dim=32)
    m = ParAE(bb, ParAEConfig(num_components=4, head_channels="16")).train()
    pts = _shapes(1, 120)[0].numpy()
    paths = viz_gmm(m, None, pts, tmp_path / "a", "s", point_index=3)
    assert [p.name for p in paths] == ["s_gmm.png", "s_featdist.png"]
    assert all(_is_png(p) for p in paths)
    assert m.training and bb.training  # eval mode only for the figure
    assert not list((tmp_path / "a").glob(".*tmp"))  # atomic writes leave no temp files

    torch.save({**method_spec(m), "model": m.state_dict()}, tmp_path / "last.pt")
    paths = viz_gmm_from_checkpoint(tmp_path / "last.pt", pts, tmp_path / "b")
    assert [p.name for p in paths] == ["last_gmm.png", "last_featdist.png"]
    save_backbone(tmp_path / "backbone.pt", bb)
    paths = viz_gmm_from_checkpoint(tmp_path / "backbone.pt", pts, tmp_path / "c")
    assert [p.name for p in paths] == ["backbone_featdist.png"] and _is_png(paths[0])


def test_viz_rejects_bad_input_before_writing(tmp_path):
    bb = build_backbone("pointnet", channels=(8,), emb_dim=8)
    pts = _shapes(1, 50)[0].numpy()
    with pytest.raises(PointSSLError):
        viz_gmm(bb, None, pts, tmp_path, "s", point_index=50)
    with pytest.raises(PointSSLError):
        viz_gmm(bb, None, pts[:, :2], tmp_path, "s")
    with pytest.raises(PointSSLError):
        viz_gmm_from_checkpoint(tmp_path / "missing.pt", pts, tmp_path)
    assert not list(tmp_path.iterdir())
