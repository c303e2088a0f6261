"""MID (MID-Net, Sec. 3): the losses against Eqs. 2 and 4-5 on hand-made memories, the
momentum update (Eqs. 6-7), no gradient into the memories, exact save / resume of the
memories, the K-means patches and the views recipe."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointssl.backbones import build_backbone
from pointssl.backbones.pointnet import PointNet
from pointssl.data.datasets import CloudSet
from pointssl.data.views.patches import kmeans_patches
from pointssl.engine.trainer import Trainer
from pointssl.errors import PointSSLError
from pointssl.losses.mid import (
    PatchInstanceLoss,
    ShapeInstanceLoss,
    momentum_update,
    patch_means,
)
from pointssl.methods import build_method, load_method
from pointssl.methods.mid import MID, MIDConfig


def _method(**over):
    bb = build_backbone("pointnet", **PointNet.test_config())
    cfg = {**MID.test_config(), **over}
    return build_method("mid", bb, cfg)[0]


def test_config_defaults_are_the_papers():
    c = MIDConfig()
    assert (c.tau_shape, c.tau_point) == (0.1, 0.1)  # Eqs. 2-4
    assert (c.shape_momentum, c.point_momentum) == (0.5, 0.5)  # Eqs. 6-7
    assert c.num_patches == 100 and c.translate == 0.25  # Sec. 3.1
    assert (c.scale_low, c.scale_high) == (0.75, 1.25)
    assert (c.optimizer, c.lr, c.weight_decay, c.batch_size) == ("sgd", 0.03, 5e-4, 32)


def test_shape_loss_equals_equation_2_by_hand():
    mem = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    feat = torch.tensor([[3.0, 4.0]])  # unit: (0.6, 0.8)
    out = ShapeInstanceLoss(0.1)(feat, mem, torch.tensor([1]))
    dots = [0.6, 0.8, -0.6]
    want = -math.log(math.exp(0.8 / 0.1) / sum(math.exp(d / 0.1) for d in dots))
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)
    assert out["accuracy"].item() == 1.0


def test_patch_loss_equals_equations_4_and_5_by_hand():
    # two shapes of different sizes, K = 2 patch vectors each; Eq. 5: mean over a shape's
    # points, then Algorithm 1: mean over the shapes
    mem = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, -1.0]]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    patch = torch.tensor([0, 1, 1])
    offset = torch.tensor([0, 2, 3])
    out = PatchInstanceLoss(0.1)(v, mem, patch, offset)

    def ce(f, m, c):
        f = np.asarray(f) / np.linalg.norm(f)
        logits = [np.dot(f, mm) / 0.1 for mm in m]
        return -(logits[c] - math.log(sum(math.exp(x) for x in logits)))

    m = mem.numpy()
    shape0 = (ce([1, 0], m[0], 0) + ce([0, 2], m[0], 1)) / 2
    shape1 = ce([1, 1], m[1], 1)
    assert out["loss"].item() == pytest.approx((shape0 + shape1) / 2, rel=1e-5)
    # uniform sizes take the batched path: same value as the per-cloud formula
    v2, p2 = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    a = PatchInstanceLoss(0.1)(v2, mem, p2, torch.tensor([0, 3, 6]))["loss"]
    b = (F.cross_entropy(F.normalize(v2[:3], dim=1) @ mem[0].t() / 0.1, p2[:3])
         + F.cross_entropy(F.normalize(v2[3:], dim=1) @ mem[1].t() / 0.1, p2[3:])) / 2
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_momentum_update_moves_toward_the_feature_and_keeps_unit_length():
    mem = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=1)
    feat = torch.tensor([[0.0, 0.0, 5.0]])
    before = mem.clone()
    momentum_update(mem, torch.tensor([0]), feat, 0.5)
    want = F.normalize(torch.tensor([0.5, 0.0, 0.5]), dim=0)  # Eq. 6, re-normalised
    assert torch.allclose(mem[0], want, atol=1e-6)
    assert mem[0].norm().item() == pytest.approx(1.0, abs=1e-6)
    assert mem[0] @ F.normalize(feat[0], dim=0) > before[0] @ F.normalize(feat[0], dim=0)
    assert torch.equal(mem[1], before[1])  # rows outside the batch stay
    # masked rows (a patch absent from the view) stay too
    pm = F.normalize(torch.randn(2, 3, 4), dim=-1)
    old = pm.clone()
    momentum_update(pm, torch.tensor([1]), torch.randn(1, 3, 4), 0.5,
                    torch.tensor([[True, False, True]]))
    assert torch.equal(pm[1, 1], old[1, 1]) and not torch.equal(pm[1, 0], old[1, 0])
    assert torch.allclose(pm.norm(dim=-1), torch.ones(2, 3), atol=1e-6)


def test_patch_means_average_unit_features_per_patch():
    v = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    means, mask = patch_means(v, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2, 4]), 3)
    s = math.sqrt(0.5)
    assert torch.allclose(means[0, 0], torch.tensor([s, s]), atol=1e-6)
    assert mask.tolist() == [[True, False, False], [False, True, False]]
    assert torch.allclose(means[1, 1], torch.tensor([s, s]), atol=1e-6)


def _batch(m, n_shapes=3, n=48, seed=0):
    rng = np.random.default_rng(seed)
    views = [m.make_views({"points": rng.normal(size=(n, 3)).astype(np.float32)},
                          np.random.default_rng(i)) for i in range(n_shapes)]
    batch = m.collate(views)
    batch["index"] = torch.arange(n_shapes) * 2  # shapes 0, 2, 4
    return batch


def test_no_gradient_reaches_the_memory_and_step_updates_it():
    m = _method()
    m.train()
    batch = _batch(m)
    out = m(batch)
    assert m.shape_memory.shape[0] == 5 and m.patch_memory.shape[:2] == (5, 4)
    out["loss"].backward()
    assert m.shape_memory.grad is None and m.patch_memory.grad is None
    assert not m.shape_memory.requires_grad and not m.patch_memory.requires_grad
    opt_params = [p for p in m.parameters() if p.requires_grad]
    assert all(p is not m.shape_memory and p is not m.patch_memory for p in opt_params)
    before_s, before_p = m.shape_memory.clone(), m.patch_memory.clone()
    m.on_after_step()
    changed = (m.shape_memory != before_s).any(1)
    assert changed.tolist() == [True, False, True, False, True]  # the batch's rows only
    norms = m.shape_memory.norm(dim=1)
    assert torch.allclose(norms[[0, 2, 4]], torch.ones(3), atol=1e-5)  # updated: unit
    assert norms[[1, 3]].max() < 0.2  # unvisited: the release's near-zero Xavier start
    assert not torch.equal(m.patch_memory[2], before_p[2])
    assert torch.equal(m.patch_memory[1], before_p[1])


def test_bind_data_sizes_the_memories_for_the_training_set_once():
    """The trainer's hook gives N = the training set size before the first step; rows are
    the same seeded start as lazily grown ones, and a batch does not resize them."""
    m, lazy = _method(), _method()
    m.bind_data(9)
    assert m.shape_memory.shape[0] == 9 and m.patch_memory.shape[:2] == (9, 4)
    lazy.grow(9)
    assert torch.equal(m.shape_memory, lazy.shape_memory)
    m.train()
    m(_batch(m))  # indices 0, 2, 4
    assert m.shape_memory.shape[0] == 9


def test_memory_rows_depend_on_the_row_only():
    a, b = _method(), _method()
    a.grow(3)
    a.grow(7)
    b.grow(7)
    assert torch.equal(a.shape_memory, b.shape_memory)
    assert torch.equal(a.patch_memory, b.patch_memory)
    c = _method(num_instances=7)
    assert torch.equal(c.shape_memory, b.shape_memory)


def test_first_update_of_a_xavier_row_all_but_copies_the_feature():
    m = _method()
    m.grow(2)
    feat = F.normalize(torch.randn(1, m.shape_memory.shape[1]), dim=1)
    momentum_update(m.shape_memory.data, torch.tensor([1]), feat, 0.5)
    assert (m.shape_memory[1] @ feat[0]).item() > 0.99
    u = _method(memory_init="unit")
    u.grow(2)
    assert torch.allclose(u.shape_memory.norm(dim=1), torch.ones(2), atol=1e-5)


def test_loss_switches_and_fp16_memory():
    s = _method(loss="shape")
    out = s(_batch(s))
    assert "point_loss" not in out and s.patch_memory.numel() == 0
    p = _method(loss="point")
    out = p(_batch(p))
    assert "shape_loss" not in out and p.shape_memory.numel() == 0
    h = _method(memory_dtype="fp16")
    h(_batch(h))
    assert h.shape_memory.dtype == torch.float16
    with pytest.raises(PointSSLError, match="loss"):
        _method(loss="points")


def _data(n=8, pts=40):
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(pts, 3)).astype(np.float32) for _ in range(n)]
    return CloudSet(points=clouds, labels=np.zeros(n, dtype=np.int64))


def test_checkpoint_resume_restores_the_memory_exactly(tmp_path):
    torch.manual_seed(0)
    m = _method(batch_size=4, epochs=2)
    Trainer(m, _data(), tmp_path / "run", progress=False, seed=1, max_steps=3).fit()
    assert m.shape_memory.shape[0] == 8
    again = load_method(tmp_path / "run" / "checkpoints" / "last.pt")
    assert torch.equal(again.shape_memory, m.shape_memory)
    assert torch.equal(again.patch_memory, m.patch_memory)
    # a resumed run continues from the saved memory and ends where the uninterrupted one does
    torch.manual_seed(0)
    full = _method(batch_size=4, epochs=2)
    Trainer(full, _data(), tmp_path / "full", progress=False, seed=1).fit()
    torch.manual_seed(5)
    resumed = _method(batch_size=4, epochs=2)
    Trainer(resumed, _data(), tmp_path / "run", progress=False, seed=1, resume=True).fit()
    assert torch.equal(resumed.shape_memory, full.shape_memory)
    assert torch.equal(resumed.patch_memory, full.patch_memory)


def test_kmeans_patches_are_deterministic_and_cover_k_clusters():
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(c, 0.01, size=(30, 3)) for c in np.eye(3) * 5])
    lab = kmeans_patches(blobs, 3)
    assert len(set(lab[:30])) == len(set(lab[30:60])) == len(set(lab[60:])) == 1
    assert len(set(lab)) == 3
    assert np.array_equal(lab, kmeans_patches(blobs, 3))
    assert kmeans_patches(blobs[:5], 100).max() <= 4  # K capped by the points


def test_views_recipe_transforms_and_caches(tmp_path):
    m = _method(prep_cache=str(tmp_path / "cache"), num_patches=8, rotation="so3")
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(64, 3)).astype(np.float32)
    v = m.make_views({"points": pts}, np.random.default_rng(1))
    assert v["points"].shape == (64, 6) and v["patch"].shape == (64,)
    assert np.allclose(np.linalg.norm(v["points"][:, 3:], axis=1), 1.0, atol=1e-5)
    assert v["patch"].max() < 8
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    w = m.make_views({"points": pts}, np.random.default_rng(2))  # a cache hit
    assert np.array_equal(v["patch"], w["patch"])
    # the augmentation's range (Sec. 3.1): centred unit sphere -> |x| <= 1.25 * 1 + 0.25 * 3^.5
    assert np.linalg.norm(v["points"][:, :3], axis=1).max() < 1.25 * 1.0 + 0.25 * 3 ** 0.5
    # up rotation keeps the up coordinate up to scale and shift
    up = _method(prep_cache="", rotation="up", up_axis="z", scale_low=1.0, scale_high=1.0,
                 translate=0.0)
    u = up.make_views({"points": pts}, np.random.default_rng(3))["points"]
    from pointssl.data.views.transforms import normalize_unit_sphere

    assert np.allclose(u[:, 2], normalize_unit_sphere(pts)[:, 2], atol=1e-5)


def test_mid_trains_the_octree_backbone_on_packed_clouds():
    bb = build_backbone("octree_hrnet", depth=5, channels=8, resblocks=1, global_dim=16,
                        point_dim=8)
    m = build_method("mid", bb, {**MID.test_config()})[0]
    rng = np.random.default_rng(0)
    views = [m.make_views({"points": rng.normal(size=(n, 3)).astype(np.float32)},
                          np.random.default_rng(i)) for i, n in enumerate([30, 50])]
    batch = m.collate(views)
    batch["index"] = torch.tensor([0, 1])
    out = m(batch)
    out["loss"].backward()
    m.on_after_step()
    assert torch.isfinite(out["loss"]) and m.patch_memory.shape == (2, 4, 8)


def test_shape_loss_reads_a_linear_head_over_the_backbone_global_feature():
    """The release's fc2 (128-d) feeds Eq. 2 and the memory; the backbone's global feature
    (fc1, what the protocols read) sits under it and the head is trained by the loss."""
    bb = build_backbone("octree_hrnet", depth=5, channels=8, resblocks=1, point_dim=8)
    assert bb.global_dim == 64  # 8c: the pooled fc1
    m = build_method("mid", bb, {**MID.test_config(), "shape_dim": 12})[0]
    assert m.shape_memory.shape[1] == 12 and m.shape_head.in_features == 64
    m.train()
    rng = np.random.default_rng(0)
    views = [m.make_views({"points": rng.normal(size=(40, 3)).astype(np.float32)},
                          np.random.default_rng(i)) for i in range(2)]
    batch = m.collate(views)
    batch["index"] = torch.tensor([0, 1])
    out = m(batch)
    out["loss"].backward()
    assert m.shape_head.weight.grad is not None and m.shape_head.weight.grad.abs().sum() > 0
    assert out["embedding"].shape == (2, 64)
    m.on_after_step()
    with torch.no_grad():
        m.eval()
        want = F.normalize(m.shape_head(m.backbone(batch["points"]).global_feat), dim=1)
    m.train()
    # the memory row moved toward the head's (not the backbone's) feature
    assert (F.cosine_similarity(m.shape_memory[:2], want) > 0.5).all()
    assert MIDConfig().shape_dim == 128  # release nouts 128,64
    with pytest.raises(PointSSLError):
        build_method("mid", bb, {**MID.test_config(), "shape_dim": -1})
    # shape_dim 0: Eq. 2 on the global feature itself
    m0 = build_method("mid", build_backbone("pointnet", **PointNet.test_config()),
                      {**MID.test_config(), "shape_dim": 0})[0]
    assert m0.shape_memory.shape[1] == m0.backbone.global_dim
