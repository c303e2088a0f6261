"""The documented Python API: import cost, embed on clouds of any sizes, pre-train on arrays."""

import subprocess
import sys

import numpy as np
import pytest

import pointssl
from pointssl.errors import PointSSLError


def test_import_pointssl_does_not_import_torch():
    code = "import sys, pointssl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_surface_is_documented():
    for name in pointssl.__all__:
        obj = getattr(pointssl, name)
        assert name == "__version__" or obj.__doc__, name


def test_embed_keeps_every_point_of_every_cloud():
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(n, 3)).astype("f4") for n in (40, 90, 65)]
    bb = pointssl.build_backbone("pointnet", seed=0)
    out = pointssl.embed(bb, clouds)
    assert out["global"].shape == (3, bb.global_dim)
    assert [p.shape for p in out["points"]] == [(n, bb.point_dim) for n in (40, 90, 65)]
    alone = pointssl.embed(bb, clouds[1:2])
    np.testing.assert_allclose(out["global"][1], alone["global"][0], rtol=1e-5, atol=1e-5)


def test_build_backbone_seed_is_reproducible():
    a = pointssl.build_backbone("pointnet", seed=3).state_dict()
    b = pointssl.build_backbone("pointnet", seed=3).state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_pretrain_on_arrays_exports_a_loadable_backbone(tmp_path):
    rng = np.random.default_rng(1)
    clouds = [rng.normal(size=(int(rng.integers(80, 120)), 3)).astype("f4") for _ in range(8)]
    method = pointssl.build_method("conclu", "pointnet", num_points=32, batch_size=4,
                                   proj_hidden=16, proj_dim=8, pred_hidden=4)
    m = pointssl.pretrain(method, clouds, tmp_path / "r", epochs=1, progress=False)
    assert m["steps"] == 2 and m["stop_reason"] == "completed"
    bb = pointssl.load_backbone(tmp_path / "r" / "backbone.pt")
    assert bb.meta["method"] == "conclu"
    x = rng.normal(size=(50, 3)).astype("f4")
    np.testing.assert_allclose(pointssl.embed(bb, [x])["global"],
                               pointssl.embed(method.backbone, [x])["global"], atol=1e-6)
    again = pointssl.load_method(tmp_path / "r" / "checkpoints" / "last.pt")
    assert type(again).__name__ == "ConClu" and again.cfg == method.cfg


def test_as_dataset_rejects_nothing_and_labels_unlabelled():
    ds = pointssl.as_dataset([np.zeros((5, 3)), np.ones((7, 3))])
    assert len(ds) == 2 and (ds.labels == -1).all()
    with pytest.raises(PointSSLError):
        pointssl.as_dataset([])


def _two_class_sets():
    """Flat vs tall blobs: any sane feature separates them."""
    rng = np.random.default_rng(2)

    def blobs(n):
        pts = [rng.normal(size=(64, 3)) * s for s in [(1, 1, .1)] * n + [(.2, .2, 1)] * n]
        return pointssl.as_dataset([p.astype("f4") for p in pts], labels=[0] * n + [1] * n)

    return blobs(10), blobs(5)


def test_linear_svm_reports_the_random_init_twin():
    train, test = _two_class_sets()
    bb = pointssl.build_backbone("pointnet", seed=1)
    res = pointssl.linear_svm(bb, train, test, folds=2, Cs=[0.1], seed=1)
    base = res["random_init_baseline"]
    # the same seed builds the same random backbone: the twin of a random-init model is itself
    assert res["accuracy"] == base["accuracy"] and res["accuracy"] >= 0.9
    assert "random_init_baseline" not in pointssl.linear_svm(bb, train, test, folds=2,
                                                              Cs=[0.1], baseline=False)


def test_finetune_accepts_a_module_a_path_and_a_name(tmp_path):
    from pointssl.backbones import save_backbone

    train, test = _two_class_sets()
    bb = pointssl.build_backbone("pointnet", seed=0)
    save_backbone(tmp_path / "b.pt", bb)
    kw = dict(task="cls", mode="fix", epochs=2, num_points=32, batch_size=8, log=None)
    by_module = pointssl.finetune(bb, train, test, **kw)
    by_path = pointssl.finetune(tmp_path / "b.pt", train, test, **kw)
    by_name = pointssl.finetune("pointnet", train, test, **kw)  # seeded random twin, seed 0
    assert by_module["accuracy"] == by_path["accuracy"] == by_name["accuracy"]
    assert by_name["random_init"] is True and by_path["checkpoint"].endswith("b.pt")
