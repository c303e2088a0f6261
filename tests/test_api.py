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
