import numpy as np
import pytest

from pointssl.data.views.crops import HalfSpaceCrop
from pointssl.data.views.transforms import (
    FarthestPointSample,
    Jitter,
    RandomSample,
    RotateUp,
    ScaleAxes,
    Translate,
    farthest_point_indices,
    normalize_unit_sphere,
    pca_normals,
)

RNG = np.random.default_rng


def cloud(n=500, seed=0):
    return RNG(seed).normal(size=(n, 3)).astype(np.float32) * [1, 2, 3] + 5


def test_normalize_unit_sphere():
    out = normalize_unit_sphere(cloud())
    assert np.allclose(out.mean(0), 0, atol=1e-5)
    assert np.linalg.norm(out, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_random_sample_replaces_only_when_short():
    pts = cloud(100)
    out = RandomSample(50)(pts, RNG(0))
    assert len(np.unique(out, axis=0)) == 50
    short = RandomSample(150)(pts, RNG(0))
    assert short.shape == (150, 3)
    assert len(np.unique(short, axis=0)) == 100  # every point kept, only 50 duplicates
    # (drawing all 150 with replacement kept ~78 distinct points)


def test_sampler_draws_without_replacement_and_pads_only_the_shortfall():
    from pointssl.data.views.samplers import random_indices, subsample_indices

    # enough points: exactly numpy's draw without replacement (the same draws as before)
    assert np.array_equal(random_indices(10, 4, RNG(3)), RNG(3).choice(10, 4, replace=False))
    assert sorted(random_indices(7, 7, RNG(0))) == list(range(7))  # k == n: a shuffle
    # short: all n in a random order first, then k - n of them, as evenly as possible
    idx = random_indices(5, 13, RNG(1))
    assert sorted(idx[:5]) == list(range(5))
    assert sorted(np.bincount(idx, minlength=5)) == [2, 2, 3, 3, 3]
    assert len(set(idx[5:10])) == 5  # the first round of duplicates repeats no point
    assert np.bincount(random_indices(1, 3000, RNG(0))).tolist() == [3000]  # no recursion
    assert np.array_equal(subsample_indices(6, None, RNG(0)), np.arange(6))


def test_fps_spreads_points_better_than_random():
    pts = cloud(2000)
    idx = farthest_point_indices(pts, 64, start=5)
    assert len(set(idx.tolist())) == 64 and 5 in idx

    def min_gap(sel):
        d = np.linalg.norm(sel[:, None] - sel[None], axis=-1)
        return d[~np.eye(len(sel), dtype=bool)].min()

    assert min_gap(pts[idx]) > 2 * min_gap(RandomSample(64)(pts, RNG(0)))
    assert FarthestPointSample(64)(pts, RNG(0)).shape == (64, 3)
    short = FarthestPointSample(64)(pts[:40], RNG(0))  # short: all 40, 24 duplicates
    assert short.shape == (64, 3) and len(np.unique(short, axis=0)) == 40


def test_rotate_up_keeps_height_and_norms_and_respects_range():
    pts = np.concatenate([cloud(), cloud(seed=1)], axis=1)  # xyz + "normals" columns
    out = RotateUp(5.0, up="z")(pts, RNG(3))
    assert np.allclose(out[:, 2], pts[:, 2]) and np.allclose(out[:, 5], pts[:, 5])
    assert np.allclose(np.linalg.norm(out[:, :3], axis=1), np.linalg.norm(pts[:, :3], axis=1),
                       rtol=1e-5)
    ang = np.arctan2(out[0, 1], out[0, 0]) - np.arctan2(pts[0, 1], pts[0, 0])
    assert abs((ang + np.pi) % (2 * np.pi) - np.pi) <= np.deg2rad(5.0) + 1e-6
    y_up = RotateUp(90, up="y")(pts, RNG(0))
    assert np.allclose(y_up[:, 1], pts[:, 1])


def test_half_space_crop_fraction_and_plane():
    pts = cloud(1000)
    assert len(HalfSpaceCrop(0.85)(pts, RNG(0))) == 850


def test_jitter_is_clipped():
    pts = np.zeros((5000, 3), np.float32)
    out = Jitter(0.01, 0.025)(pts, RNG(0))
    assert np.abs(out).max() <= 0.025 + 1e-7
    assert 0.008 < out.std() < 0.0105  # clipping at 2.5σ trims the spread a little


def test_scale_and_translate():
    pts = cloud()
    s = ScaleAxes(0.5, 2.0)(pts, RNG(0))
    ratio = s / pts
    assert np.allclose(ratio, ratio[0]) and np.all((ratio[0] >= 0.5) & (ratio[0] <= 2.0))
    t = Translate(0.2)(pts, RNG(0)) - pts
    assert np.allclose(t, t[0]) and np.all(np.abs(t[0]) <= 0.2)


def test_pca_normals_on_a_sphere_point_outwards():
    p = RNG(0).normal(size=(2000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    n = pca_normals(p, k=12)
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert np.mean(np.einsum("ij,ij->i", n, p)) > 0.98
