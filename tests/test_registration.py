"""Registration protocol (MID-Net, Sec. 4.5): the pieces recover known transforms, plain ICP
from the identity fails on large rotations, and the protocol writes its curve."""

import numpy as np

from pointssl.backbones.base import Backbone
from pointssl.data.datasets import CloudSet
from pointssl.evaluate.registration import (
    euler_rotation,
    hausdorff,
    icp,
    kabsch,
    mutual_nearest,
    random_rigid,
    register,
    registration_eval,
    success_curve,
)


def shape(n=300, seed=0):
    """An asymmetric cloud (an L of three boxes of different sizes) in the unit sphere."""
    rng = np.random.default_rng(seed)
    parts = [rng.uniform([-0.8, -0.1, -0.1], [0.8, 0.1, 0.1], size=(n // 2, 3)),
             rng.uniform([0.6, 0.0, -0.1], [0.8, 0.7, 0.1], size=(n // 3, 3)),
             rng.uniform([-0.8, -0.1, 0.0], [-0.6, 0.1, 0.3], size=(n - n // 2 - n // 3, 3))]
    return np.concatenate(parts)


def test_kabsch_recovers_a_rigid_transform():
    rng = np.random.default_rng(0)
    a = shape()
    r, t = random_rigid(rng)
    r2, t2 = kabsch(a, a @ r.T + t)
    assert np.allclose(r2, r, atol=1e-8) and np.allclose(t2, t, atol=1e-8)
    assert np.isclose(np.linalg.det(r2), 1.0)


def test_ground_truth_features_recover_the_transform():
    """xyz of the source as both clouds' features: exact correspondences -> exact R, t."""
    rng = np.random.default_rng(1)
    a = shape()
    r, t = euler_rotation(np.deg2rad([170.0, 80.0, 250.0])), np.array([0.2, -0.25, 0.1])
    perm = rng.permutation(len(a))
    b = (a @ r.T + t)[perm]
    assert len(mutual_nearest(a, a[perm])) == len(a)
    res = register(a, b, a, a[perm], rng=rng)
    assert np.allclose(res["R"], r, atol=1e-6) and np.allclose(res["t"], t, atol=1e-6)
    assert hausdorff(a @ res["R"].T + res["t"], b) < 1e-6


def test_plain_icp_from_identity_fails_on_a_large_rotation():
    a = shape()
    r = euler_rotation(np.deg2rad([0.0, 0.0, 180.0]))
    b = a @ r.T
    r0, t0 = icp(a, b)
    assert hausdorff(a @ r0.T + t0, b) > 0.3
    # ... and refines a nearby start to the exact answer
    near = euler_rotation(np.deg2rad([0.0, 0.0, 175.0]))
    r1, t1 = icp(a, b, near, np.zeros(3))
    assert hausdorff(a @ r1.T + t1, b) < 1e-6


def test_success_curve_counts_at_or_below():
    assert success_curve(np.array([0.0, 0.05, 0.2]), [0.0, 0.05, 0.1, 1.0]).tolist() == \
        [1 / 3, 2 / 3, 2 / 3, 1.0]


class Oracle(Backbone):
    """A backbone with per-point features; the test swaps its features for the truth."""

    name = "oracle"
    global_dim, point_dim = 3, 3


def test_protocol_with_ground_truth_features_beats_icp(tmp_path, monkeypatch):
    import pointssl.evaluate.registration as reg

    clouds = [shape(120, s) for s in range(4)]
    data = CloudSet(points=[c.astype(np.float32) for c in clouds],
                    labels=np.zeros(4, dtype=np.int64))
    first = {}

    def truth(backbone, ins, device, batch_size):
        # the source clouds' own (centred) coordinates, for the source and, row for row,
        # for the target (same points, same order): perfect descriptors
        first.setdefault("src", [c.copy() for c in ins])
        return first["src"]

    monkeypatch.setattr(reg, "_point_features", truth)
    res = registration_eval(Oracle(), data, num_shapes=4, seed=0, out_dir=tmp_path)
    assert res["success_at_0.05"]["features"] == 1.0
    assert res["success_at_0.05"]["ground_truth"] == 1.0
    assert res["success_at_0.05"]["icp"] < 1.0
    assert (tmp_path / "registration_curve.csv").read_text().startswith(
        "hausdorff_threshold,features,icp,ground_truth")
    assert (tmp_path / "registration_curve.png").stat().st_size > 0
