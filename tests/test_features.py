import numpy as np
import pytest
import torch

from pointssl.backbones import random_backbone
from pointssl.data.views import subsample_indices
from pointssl.errors import PointSSLError
from pointssl.evaluate.features import embed, extract_features

SMALL = {"pointnet": dict(channels=(8, 16), emb_dim=32), "dgcnn": dict(k=4, channels=(8, 16),
                                                                       emb_dim=32)}


class Clouds:
    """The attributes extract_features reads (points, labels, normals)."""

    def __init__(self, points, normals=None):
        self.points, self.normals = points, normals
        self.labels = np.arange(len(points))

    def __len__(self):
        return len(self.points)


def rand_clouds(sizes, seed=0, cols=3):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, cols)).astype(np.float32) for n in sizes]


def bb(name="pointnet", **cfg):
    return random_backbone(name, 0, **{**SMALL[name], **cfg})


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_variable_sizes_give_each_clouds_own_features(name):
    m = bb(name)
    pts = rand_clouds([30, 45, 30, 12, 60])
    x, y = extract_features(m, Clouds(pts), batch_size=3, device="cpu")
    alone = np.concatenate([extract_features(m, Clouds([p]), device="cpu")[0] for p in pts])
    assert x.shape == (5, 32) and y.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(x, alone, rtol=1e-4, atol=1e-5)


def test_uniform_data_goes_through_the_dense_path_unchanged():
    m = bb().eval()
    pts = rand_clouds([40] * 6)
    x, _ = extract_features(m, Clouds(pts), batch_size=4, device="cpu")
    with torch.no_grad():
        ref = [m(torch.from_numpy(np.stack(pts[s:s + 4]))).global_feat.numpy() for s in (0, 4)]
    assert np.array_equal(x, np.concatenate(ref))  # bit for bit: the same (B, N, 3) batches


def test_num_points_subsamples_each_cloud_with_the_shared_sampler():
    m = bb().eval()
    pts = rand_clouds([50, 20, 32])
    x, _ = extract_features(m, Clouds(pts), num_points=32, seed=7, device="cpu")
    rng = np.random.default_rng(7)  # the same draws, in the same order (none for 32 of 32)
    sub = np.stack([p[subsample_indices(len(p), 32, rng)] for p in pts])
    with torch.no_grad():
        ref = m(torch.from_numpy(sub)).global_feat.numpy()
    assert np.array_equal(x, ref)


def test_sizes_500_and_1000_are_not_cut_to_500():
    m = bb()
    pts = rand_clouds([500, 1000])
    out = embed(m, pts)
    assert [p.shape for p in out["points"]] == [(500, 24), (1000, 24)]
    big_alone = embed(m, pts[1:])
    np.testing.assert_allclose(out["global"][1], big_alone["global"][0], rtol=1e-4, atol=1e-5)
    x, _ = extract_features(m, Clouds(pts), device="cpu")
    np.testing.assert_allclose(x, out["global"], rtol=1e-4, atol=1e-5)
    # a 500-point subset of the big cloud would give another descriptor
    cut = embed(m, [pts[1][:500]])["global"][0]
    assert not np.allclose(cut, out["global"][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["pointnet", "dgcnn"])
def test_embed_shapes_dtypes_and_per_cloud_points(name):
    m = bb(name).train()
    pts = rand_clouds([17, 9, 17, 25], cols=5)  # two extra columns: dropped by the backbone
    out = embed(m, pts, batch_size=3)
    assert m.training  # the caller's mode is restored
    assert out["global"].shape == (4, 32) and out["global"].dtype == np.float32
    assert [p.shape for p in out["points"]] == [(17, 24), (9, 24), (17, 24), (25, 24)]
    assert all(p.dtype == np.float32 for p in out["points"])
    xyz = embed(m, [p[:, :3] for p in pts], batch_size=1)
    np.testing.assert_allclose(out["global"], xyz["global"], rtol=1e-4, atol=1e-5)
    for a, b in zip(out["points"], xyz["points"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_normals_feed_a_six_channel_backbone_and_their_absence_is_named():
    m = bb(in_dim=6).eval()
    pts = rand_clouds([20, 30])
    nrm = rand_clouds([20, 30], seed=1)
    x, _ = extract_features(m, Clouds(pts, nrm), device="cpu")
    ref = embed(m, [np.concatenate([p, n], 1) for p, n in zip(pts, nrm)])["global"]
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(PointSSLError, match="normals"):
        extract_features(m, Clouds(pts), device="cpu")
    with pytest.raises(PointSSLError, match="cloud 1"):
        embed(m, [np.zeros((4, 6)), np.zeros((4, 2))])
