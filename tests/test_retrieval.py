"""Cross-modal protocols: top-K retrieval on hand-checked distances, image features
max-pooled over views, the 2D-recognition SVM, and the pretext pairs (Table 1)."""

import numpy as np
import pytest
import torch
from torch import nn

from pointssl.backbones import build_backbone
from pointssl.backbones.resnet import build_image_encoder
from pointssl.data.datasets import CloudSet
from pointssl.data.render import RenderCache, RenderConfig, render_key
from pointssl.errors import PointSSLError
from pointssl.evaluate.retrieval import (
    image_features,
    image_svm_eval,
    pretext_eval,
    retrieval_eval,
    topk_retrieval,
)
from pointssl.methods import build_method
from pointssl.methods.crossmodal import CrossModal


def test_topk_by_hand():
    gallery, gy = np.array([[0.0], [1.0], [2.0], [10.0]]), np.array([0, 0, 1, 1])
    query, qy = np.array([[0.1], [9.0]]), np.array([1, 1])
    # query 0.1: order 0, 1, 2, 10 -> classes 0, 0, 1, 1: miss at K=1, hit at K=3 (1 of 3)
    # query 9: order 10, 2, 1, 0 -> classes 1, 1, 0, 0: hit at K=1 and K=3 (2 of 3)
    r = topk_retrieval(query, qy, gallery, gy, ks=(1, 3, 50))
    assert r["top_k"] == {1: 0.5, 3: 1.0}  # K = 50 > gallery: left out
    assert r["precision_at_k"][1] == 0.5 and r["precision_at_k"][3] == pytest.approx(0.5)
    with pytest.raises(PointSSLError, match="do not match"):
        topk_retrieval(query, qy, np.zeros((4, 2)), gy)


class _Mean(nn.Module):
    """Image 'encoder': the mean pixel value in [0, 255] (undoing images_to_input)."""

    def forward(self, x):
        return ((x * 0.5 + 0.5) * 255).mean((1, 2, 3))[:, None]


def _data_with_renders(tmp_path, n=6, views=4, size=8):
    rng = np.random.default_rng(0)
    data = CloudSet(points=[rng.normal(size=(30, 3)).astype(np.float32) for _ in range(n)],
                    labels=np.arange(n) % 2, sources=[f"s{i}" for i in range(n)])
    cache = RenderCache(tmp_path / "r", RenderConfig(views=views, size=size))
    for i in range(n):  # view j of shape i: constant 10 i + j
        imgs = np.stack([np.full((size, size), 10 * i + j, np.uint8) for j in range(views)])
        cache.save(render_key(data[i]), imgs, np.zeros((views, 2)), f"s{i}")
    return data


def test_image_features_max_pool_the_drawn_views(tmp_path):
    data = _data_with_renders(tmp_path)
    f_all = image_features(_Mean(), data, tmp_path / "r", views=4, batch_size=5)
    assert np.allclose(f_all[:, 0], 10 * np.arange(6) + 3)  # max over all four views
    f_one = image_features(_Mean(), data, tmp_path / "r", views=1, seed=3)
    j = np.round(f_one[:, 0] - 10 * np.arange(6), 3)
    assert set(j) <= {0, 1, 2, 3} and len(set(j)) > 1  # one random view each
    assert np.array_equal(f_one, image_features(_Mean(), data, tmp_path / "r", 1, seed=3))
    with pytest.raises(PointSSLError, match="holds 4"):
        image_features(_Mean(), data, tmp_path / "r", views=5)


def test_retrieval_and_image_svm_protocols(tmp_path):
    data = _data_with_renders(tmp_path, n=12)
    train, test = data.subset(range(8)), data.subset(range(8, 12))
    bb = build_backbone("pointnet", channels=(8,), emb_dim=8)
    r = retrieval_eval(train, test, backbone=bb, image_encoder=_Mean(),
                       render_dir=tmp_path / "r", views=2, ks=(1, 5))
    assert set(r) >= {"points", "images", "definition"}
    assert r["images"]["n_query"] == 4 and r["images"]["n_gallery"] == 8
    assert r["images"]["views"] == 2 and 0 <= r["points"]["top_k"][1] <= 1
    with pytest.raises(PointSSLError, match="also in train"):
        retrieval_eval(train, train, backbone=bb)
    res = image_svm_eval(_Mean(), train, test, tmp_path / "r", views=2, folds=2, Cs=[0.1])
    enc = build_image_encoder("resnet18", widths=(4, 4, 8, 8))
    twin = image_svm_eval(enc, train, test, tmp_path / "r", views=2, folds=2, Cs=[0.1],
                          baseline=True)
    assert "random_init_baseline" in twin and 0 <= twin["random_init_baseline"]["accuracy"] <= 1
    assert res["n_test"] == 4 and res["views"] == 2 and 0 <= res["accuracy"] <= 1


def test_pretext_pairs(tmp_path):
    data = _data_with_renders(tmp_path, n=5, views=3, size=16)
    torch.manual_seed(0)
    bb = build_backbone("pointnet", channels=(8,), emb_dim=8)
    m = build_method("crossmodal", bb, CrossModal.test_config())[0]
    r = pretext_eval(m, data, tmp_path / "r", pairs_per_shape=10)
    assert r["pairs"] == 50 and r["positive_fraction"] == 0.5
    assert 0 <= r["cross_modality_accuracy"] <= 1
    # views of one shape differ by 1-2 grey levels, of two shapes by >= 8: farther apart
    assert r["positive_distance"]["mean"] < r["negative_distance"]["mean"]
    assert m.training  # restored


def test_cli_wiring():
    from pointssl.cli import build_parser, cmd_eval_pretext, cmd_eval_retrieval, cmd_eval_svm

    p = build_parser()
    a = p.parse_args(["eval", "retrieval", "--checkpoint", "b.pt", "--image-checkpoint",
                      "i.pt", "--views", "12", "--renders", "R", "--data", "synthetic"])
    assert a.func is cmd_eval_retrieval and a.views == 12 and str(a.renders) == "R"
    a = p.parse_args(["eval", "svm", "--image-checkpoint", "i.pt", "--views", "3",
                      "--renders", "R", "--data", "synthetic"])
    assert a.func is cmd_eval_svm and a.views == 3
    a = p.parse_args(["eval", "pretext", "--checkpoint", "last.pt", "--renders", "R",
                      "--data", "synthetic"])
    assert a.func is cmd_eval_pretext
    a = p.parse_args(["data", "render", "--data", "synthetic", "--views", "4", "--out", "D"])
    assert a.views == 4 and a.size == 224 and a.splits == "train,test"
