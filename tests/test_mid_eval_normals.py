"""Normals of clouds without them in the protocols: computed once per cloud (cached by
content), and exactly the normals a MID training view of the same points gets."""

import numpy as np
import torch

from pointssl.backbones import build_backbone
from pointssl.backbones import octree_hrnet as oh
from pointssl.data.views.transforms import pca_normals
from pointssl.methods import build_method
from pointssl.methods.mid import MID


def _shape(seed, n=300):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3)) * np.array([1.0, 0.6, 0.3])
    p = p / np.linalg.norm(p, axis=1, keepdims=True).max()
    return p.astype(np.float32)


def test_eval_normals_equal_the_training_views():
    shape = _shape(0)
    m = build_method("mid", build_backbone("pointnet", **{"tnet": False}),
                     {**MID.test_config(), "rotation": "none", "translate": 0.0,
                      "scale_low": 1.0, "scale_high": 1.0})[0]
    view = m.make_views({"points": shape}, np.random.default_rng(0))
    train_n = view["points"][:, 3:6]
    coord = torch.from_numpy(shape)
    eval_n = oh.estimate_normals(coord, torch.tensor([0, len(shape)]), 16).numpy()
    np.testing.assert_allclose(eval_n, train_n, atol=2e-6)
    # not the raw float32 estimate: the training views' float16-stored normals
    raw = pca_normals(shape, 16)
    assert np.abs(raw - eval_n).max() > 1e-6
    # and the backbone gives the same features from xyz alone as from xyz + those normals
    bb = build_backbone("octree_hrnet", depth=5, channels=8, resblocks=1, point_dim=8).eval()
    with torch.no_grad():
        a = bb(coord[None])
        b = bb(torch.cat([coord, torch.from_numpy(train_n)], 1)[None])
    assert torch.allclose(a.global_feat, b.global_feat, atol=1e-5)
    assert torch.allclose(a.point_feat, b.point_feat, atol=1e-5)


def test_normals_are_estimated_once_per_cloud(monkeypatch):
    calls = []

    def counting(xyz, k=16):
        calls.append(len(xyz))
        return pca_normals(xyz, k)

    monkeypatch.setattr(oh, "pca_normals", counting)
    monkeypatch.setattr(oh, "_NORMALS", type(oh._NORMALS)())
    monkeypatch.setattr(oh, "_normals_bytes", 0)
    bb = build_backbone("octree_hrnet", depth=5, channels=8, resblocks=1, point_dim=8).eval()
    clouds = torch.from_numpy(np.stack([_shape(1), _shape(2)]))
    with torch.no_grad():
        first = bb(clouds).global_feat
        assert len(calls) == 2
        again = bb(clouds).global_feat  # same clouds: no new estimate, same features
        assert len(calls) == 2 and torch.equal(first, again)
        bb(clouds[:1])  # one of them alone (another batch layout): still cached
        assert len(calls) == 2
        moved = clouds.clone()
        moved[0, 0, 0] += 0.01  # different content: estimated
        bb(moved)
        assert len(calls) == 3
    # the cache is bounded: past the limit the oldest entries go
    monkeypatch.setattr(oh, "_NORMALS_LIMIT_BYTES", 2 * 300 * 3 * 2)
    for s in range(3, 7):
        oh.shape_normals(_shape(s), 16)
    assert len(oh._NORMALS) == 2 and oh._normals_bytes <= 2 * 300 * 3 * 2


def test_global_only_skips_the_point_head_and_keeps_the_global_feature():
    from pointssl.evaluate.features import extract_features

    bb = build_backbone("octree_hrnet", depth=5, channels=8, resblocks=1, point_dim=8).eval()
    clouds = torch.from_numpy(np.stack([_shape(1), _shape(2)]))
    with torch.no_grad():
        full = bb(clouds)
        with bb.global_only():
            short = bb(clouds)
        after = bb(clouds)
    assert torch.equal(full.global_feat, short.global_feat)
    assert short.point_feat.shape == (2, 300, 0) and full.point_feat.shape == (2, 300, 8)
    assert after.point_feat.shape == (2, 300, 8)  # the switch ends with the block

    class _Data:
        points, labels, normals = list(clouds.numpy()), np.array([3, 5]), None

        def __len__(self):
            return 2

    feats, labels = extract_features(bb, _Data(), batch_size=2)
    np.testing.assert_allclose(feats, full.global_feat.numpy(), atol=1e-6)
    assert labels.tolist() == [3, 5] and bb(clouds).point_feat.shape[-1] == 8
