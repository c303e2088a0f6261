import numpy as np
import pytest
import torch

from pointssl.backbones import build_backbone, save_backbone
from pointssl.data.datasets import CloudSet
from pointssl.errors import PointSSLError
from pointssl.evaluate import finetune as ft
from pointssl.evaluate.finetune import (
    REGIMES,
    ClassificationTask,
    FeatureScaler,
    PartSegTask,
    Protocol,
    finetune_classification,
    finetune_partseg,
    parse_fraction,
    run_finetune,
    stratified_fraction,
)

TINY = {"channels": [16, 16], "emb_dim": 32}


N = 64


def tiny_backbone(seed=0):
    torch.manual_seed(seed)
    return build_backbone("pointnet", **TINY)


def _sphere(rng):
    p = rng.normal(size=(N, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _disk(rng):
    r, a = np.sqrt(rng.random(N)), rng.uniform(0, 2 * np.pi, N)
    return np.stack([r * np.cos(a), r * np.sin(a), 0.01 * rng.normal(size=N)], 1)


def toy_cls(n_per_class, seed):
    """Spheres (class 0) versus flat disks (class 1): trivially separable."""
    rng = np.random.default_rng(seed)
    pts = [(_sphere if c == 0 else _disk)(rng).astype(np.float32)
           for c in (0, 1) for _ in range(n_per_class)]
    return CloudSet(points=pts, labels=[0] * n_per_class + [1] * n_per_class,
                    class_names=["sphere", "disk"])


def toy_partseg(n_per_class, seed):
    """'stick' (parts 0/1: sign of x) and 'disk' (parts 2/3/4: angular sector)."""
    rng = np.random.default_rng(seed)
    pts, parts = [], []
    for _ in range(n_per_class):
        x = rng.uniform(-1, 1, N)
        p = np.stack([x, 0.05 * rng.normal(size=N), 0.05 * rng.normal(size=N)], 1)
        pts.append(p.astype(np.float32))
        parts.append((x > 0).astype(np.int64))
    for _ in range(n_per_class):
        p = _disk(rng)
        ang = np.arctan2(p[:, 1], p[:, 0]) + np.pi
        pts.append(p.astype(np.float32))
        parts.append(2 + np.minimum((ang / (2 * np.pi / 3)).astype(np.int64), 2))
    return CloudSet(points=pts, labels=[0] * n_per_class + [1] * n_per_class,
                    class_names=["stick", "disk"], parts=parts)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- label fractions


def test_stratified_fraction_sizes_presence_determinism_nesting():
    labels = np.array([0] * 100 + [1] * 30 + [2] * 3 + [3] * 1 + [-1] * 5)
    sub = stratified_fraction(labels, 0.05, seed=3)
    counts = np.bincount(labels[sub], minlength=4)
    assert counts.tolist() == [5, 2, 1, 1]  # max(1, round(0.05 * n_c)); 1.5 rounds up
    assert (labels[sub] >= 0).all()  # unlabeled items are never drawn
    np.testing.assert_array_equal(sub, stratified_fraction(labels, 0.05, seed=3))
    assert not np.array_equal(sub, stratified_fraction(labels, 0.05, seed=4))
    chain = [set(stratified_fraction(labels, f, seed=3).tolist()) for f in (0.01, 0.05, 0.2, 1)]
    assert all(a < b for a, b in zip(chain, chain[1:]))  # nested for one seed
    assert len(chain[-1]) == 134


def test_parse_fraction():
    assert parse_fraction("5%") == pytest.approx(0.05)
    assert parse_fraction("0.2") == 0.2 and parse_fraction(1) == 1.0
    for bad in ("5", "0", "-1%", "abc", 1.5):
        with pytest.raises(PointSSLError):
            parse_fraction(bad)


# ----------------------------------------------------------------------------- regimes


def test_regimes_fix_keeps_weights_finetune_changes_scratch_reinitialises():
    train, test = toy_cls(8, 0), toy_cls(4, 1)
    bb = tiny_backbone()
    before = state(bb)
    kw = dict(epochs=2, batch_size=8, lr=1e-2, seed=0, num_points=N, log=None,
              return_model=True)
    _, (fixed, _) = finetune_classification(bb, train, test, "fix", 1.0, **kw)
    assert same(before, state(fixed))  # weights and BN running statistics untouched
    _, (tuned, _) = finetune_classification(bb, train, test, "finetune", 1.0, **kw)
    assert not same(before, state(tuned))
    assert same(before, state(bb))  # the caller's module is never modified
    # Same seed as the one the "checkpoint" was built with, still a different start.
    fresh = REGIMES["scratch"].prepare(bb, seed=0)
    assert type(fresh) is type(bb) and fresh.config == bb.config
    assert not same(before, state(fresh))
    assert same(state(fresh), state(REGIMES["scratch"].prepare(bb, seed=0)))
    _, (scratch, _) = finetune_classification(bb, train, test, "scratch", 1.0, **kw)
    assert not same(before, state(scratch))


def test_cls_finetune_learns_toy_problem():
    train, test = toy_cls(16, 0), toy_cls(10, 1)
    for mode in ("finetune", "fix"):
        r = finetune_classification(tiny_backbone(), train, test, mode, 1.0, epochs=12,
                                    batch_size=8, lr=1e-2, seed=0, num_points=N, log=None)
        assert r["accuracy"] >= 0.9 and r["class_mean_accuracy"] >= 0.9, (mode, r)
        assert r["task"] == "cls" and r["n_labeled"] == 32 and r["epochs"] == 12


def test_cls_fraction_and_validation_split():
    train, test = toy_cls(20, 0), toy_cls(4, 1)
    logs = []
    r = finetune_classification(tiny_backbone(), train, test, "fix", 0.5, epochs=3,
                                batch_size=4, lr=1e-2, seed=0, num_points=N, val_fraction=0.2,
                                min_steps=12, log=logs.append)
    assert r["n_labeled"] == 20 and r["n_val"] == 4 and r["n_train"] == 16
    assert r["epochs"] == 3 and len(logs) == 3 and "val_acc" in logs[0]
    assert 1 <= r["selected"]["epoch"] <= 3 and 0 <= r["selected"]["accuracy"] <= 1
    r = finetune_classification(tiny_backbone(), train, test, "fix", 0.5, epochs=1,
                                batch_size=4, lr=1e-2, seed=0, num_points=N, min_steps=12,
                                log=None)
    assert r["epochs"] == 3 and "selected" not in r  # 4 steps per epoch -> 3 epochs


# ----------------------------------------------------------------------------- part segmentation


def test_partseg_learns_and_restricts_to_category_parts():
    train, test = toy_partseg(12, 0), toy_partseg(4, 1)
    r, (bb, head) = finetune_partseg(tiny_backbone(), train, test, "finetune", 1.0, epochs=10,
                                     batch_size=8, lr=3e-3, seed=0, num_points=N, log=None,
                                     return_model=True)
    for key in ("task", "mode", "fraction", "n_labeled", "accuracy", "instance_miou",
                "class_miou", "per_category", "epochs", "seconds"):
        assert key in r
    assert r["task"] == "partseg" and set(r["per_category"]) == {"stick", "disk"}
    assert r["instance_miou"] > 0.6 and r["accuracy"] > 0.7  # chance is ~0.4 / 0.5


@pytest.mark.parametrize("mode", ["fix", "scratch"])
def test_partseg_other_regimes_and_fraction(mode):
    train, test = toy_partseg(10, 0), toy_partseg(3, 1)
    r = finetune_partseg(tiny_backbone(), train, test, mode, 0.2, epochs=2, batch_size=4,
                         seed=0, num_points=N, log=None,
                         category_parts={0: [0, 1], 1: [2, 3, 4]})
    assert r["n_labeled"] == 4 and r["mode"] == mode
    assert 0 <= r["class_miou"] <= 1 and 0 <= r["instance_miou"] <= 1


# ----------------------------------------------------------------------------- dispatcher


def test_run_finetune_dispatch(tmp_path):
    train, test = toy_cls(6, 0), toy_cls(3, 1)
    ckpt = tmp_path / "backbone.pt"
    save_backbone(ckpt, tiny_backbone(), method="test")
    kw = dict(train=train, test=test, epochs=1, batch_size=4, num_points=N, log=None)
    r = run_finetune("cls", "fix", "50%", checkpoint=ckpt, **kw)
    assert r["checkpoint"] == str(ckpt) and r["fraction"] == 0.5 and r["n_labeled"] == 6
    assert r["checkpoint_meta"]["method"] == "test"
    r = run_finetune("cls", "scratch", 1.0, backbone_name="pointnet", backbone_config=TINY, **kw)
    assert r["checkpoint"] is None and r["backbone"] == "pointnet"
    with pytest.raises(PointSSLError, match="--checkpoint"):
        run_finetune("cls", "fix", 1.0, backbone_name="pointnet", **kw)
    with pytest.raises(PointSSLError, match="not dgcnn"):
        run_finetune("cls", "finetune", 1.0, checkpoint=ckpt, backbone_name="dgcnn", **kw)
    with pytest.raises(PointSSLError, match="unknown fine-tuning task"):
        run_finetune("seg", "fix", 1.0, checkpoint=ckpt, **kw)


def test_run_finetune_random_init_twin_is_seeded_and_exclusive(tmp_path):
    train, test = toy_cls(6, 0), toy_cls(3, 1)
    kw = dict(train=train, test=test, epochs=1, batch_size=4, num_points=N, log=None,
              backbone_name="pointnet", backbone_config=TINY)
    a = run_finetune("cls", "fix", 1.0, random_init=True, seed=3, **kw)
    b = run_finetune("cls", "fix", 1.0, random_init=True, seed=3, **kw)
    assert a["random_init"] is True and a["checkpoint"] is None
    assert a["accuracy"] == b["accuracy"]  # same seed, same random backbone, same head
    ckpt = tmp_path / "backbone.pt"
    save_backbone(ckpt, tiny_backbone(), method="test")
    assert run_finetune("cls", "fix", 1.0, checkpoint=ckpt, train=train, test=test, epochs=1,
                        batch_size=4, num_points=N, log=None)["random_init"] is False
    with pytest.raises(PointSSLError, match="exclude"):
        run_finetune("cls", "fix", 1.0, checkpoint=ckpt, random_init=True, train=train,
                     test=test, epochs=1, batch_size=4, num_points=N, log=None)


@pytest.mark.parametrize("task", ["cls", "partseg"])
def test_augment_switch_controls_the_augmentation(task, monkeypatch):
    calls = []
    real = ft._augment
    monkeypatch.setattr(ft, "_augment", lambda x, g: calls.append(1) or real(x, g))
    if task == "cls":
        train, test = toy_cls(6, 0), toy_cls(3, 1)
        fn = ft.finetune_classification
    else:
        train, test = toy_partseg(6, 0), toy_partseg(3, 1)
        fn = ft.finetune_partseg
    kw = dict(epochs=1, batch_size=4, seed=0, num_points=N, log=None)
    r = fn(tiny_backbone(), train, test, "finetune", 1.0, augment=False, **kw)
    assert calls == [] and r["augment"] is False
    r = fn(tiny_backbone(), train, test, "scratch", 1.0, **kw)
    assert calls and r["augment"] is True
    calls.clear()
    r = fn(tiny_backbone(), train, test, "fix", 1.0, **kw)  # fixed features: never augmented
    assert calls == [] and r["augment"] is False


# ----------------------------------------------------------------------------- frozen features


def _make_task(task, n_train=6, n_test=3):
    if task == "cls":
        return ClassificationTask(toy_cls(n_train, 0), toy_cls(n_test, 1), num_points=48)
    return PartSegTask(toy_partseg(n_train, 0), toy_partseg(n_test, 1), num_points=48)


def _frozen_protocol(task, seed=2, **kw):
    p = Protocol(_make_task(task), REGIMES["fix"], epochs=1, batch_size=4, seed=seed, log=None,
                 **kw)
    p.run(tiny_backbone(), 1.0)
    return p


@pytest.mark.parametrize("task", ["cls", "partseg"])
def test_fix_standardises_every_frozen_feature_with_training_statistics(task):
    """The one rule, for both tasks (``fix_features="standardise"``): each channel of each
    frozen feature the head reads is (f - mean) / std with statistics of the labelled
    training features (one seeded sample per shape, seed + 3); finetune/scratch read raw
    features."""
    seed = 2
    p = _frozen_protocol(task, seed, fix_features="standardise")
    train, bb, model = p.task.train, p.model.bb, p.model
    # Independent recomputation of the frozen training features.
    rng = np.random.default_rng(seed + 3)
    x = torch.from_numpy(np.stack([train.points[i][rng.choice(N, 48, replace=False)]
                                   for i in p.tr_idx]).astype(np.float32))
    with torch.no_grad():
        out = bb.eval()(x)
    feats = {"global": out.global_feat, "point": out.point_feat.reshape(-1, bb.point_dim)}
    scalers = {"global": model.scale_global, "point": model.scale_point}
    assert (scalers["point"] is None) == (task == "cls")
    for name, f in feats.items():
        if scalers[name] is None:
            continue
        torch.testing.assert_close(scalers[name].mean, f.mean(0))
        torch.testing.assert_close(scalers[name].std, f.std(0, unbiased=False).clamp_min(1e-6))
    cached = p.cache[0]
    torch.testing.assert_close(cached.global_feat.mean(0), torch.zeros(bb.global_dim),
                               atol=1e-5, rtol=0)
    if task == "partseg":
        flat = cached.point_feat.reshape(-1, bb.point_dim)
        torch.testing.assert_close(flat.mean(0), torch.zeros(bb.point_dim), atol=1e-5, rtol=0)
        live = flat.std(0, unbiased=False) > 0
        torch.testing.assert_close(flat.std(0, unbiased=False)[live], torch.ones(int(live.sum())))
    # Test-time features go through the same map (training statistics, not their own).
    xt = x[:2] * 1.5
    with torch.no_grad():
        raw = bb(xt)
    seen = model.features(xt)
    torch.testing.assert_close(seen.global_feat, (raw.global_feat - scalers["global"].mean)
                               / scalers["global"].std)
    if task == "partseg":
        torch.testing.assert_close(seen.point_feat, (raw.point_feat - scalers["point"].mean)
                                   / scalers["point"].std)
    # Regimes that train the backbone read its raw output.
    q = Protocol(_make_task(task), REGIMES["finetune"], epochs=1, batch_size=4, log=None)
    q.run(tiny_backbone(), 1.0)
    assert q.model.scale_global is None and q.cache is None
    q.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(q.model.features(xt).global_feat, q.model.bb(xt).global_feat)


@pytest.mark.parametrize("task", ["cls", "partseg"])
def test_fix_whitens_the_global_feature_with_the_training_map_by_default(task):
    """Default ``fix``: the standardised global feature times the shrunk whitening map fitted
    on the labelled training features; test-time features go through that same map;
    per-point features stay only standardised; the result records the choice."""
    p = _frozen_protocol(task)
    model, bb = p.model, p.model.bb
    s = model.scale_global
    assert s.whiten is not None and p.fix_features == "whiten"
    assert model.scale_point is None or model.scale_point.whiten is None
    # The cached training features are exactly standardise-then-map of the raw ones.
    z = p.cache[0].global_feat
    n = len(p.tr_idx)
    raw_z = z @ torch.linalg.inv(s.whiten.double()).float()  # undo the map: standardised
    torch.testing.assert_close(raw_z.mean(0), torch.zeros(bb.global_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(s.whiten, ft.shrunk_whitening(raw_z), atol=1e-4, rtol=1e-4)
    assert n == len(z)
    xt = torch.randn(2, 48, 3)
    with torch.no_grad():
        raw = bb(xt)
        seen = model.features(xt)
    torch.testing.assert_close(seen.global_feat,
                               ((raw.global_feat - s.mean) / s.std) @ s.whiten)
    r = Protocol(_make_task(task), REGIMES["fix"], epochs=1, batch_size=4, log=None
                 ).run(tiny_backbone(), 1.0)
    assert r["fix_features"] == "whiten"
    q = Protocol(_make_task(task), REGIMES["scratch"], epochs=1, batch_size=4, log=None
                 ).run(tiny_backbone(), 1.0)
    assert "fix_features" not in q  # only the frozen regime maps features


def test_shrunk_whitening_on_a_hand_example():
    """Covariance V diag(ev) V^T -> V diag(ev (1 + lam) / (ev + lam)) V^T with
    lam = 1 + C / n: a dominant direction is brought down to ~1 + lam, a unit-variance one
    stays at 1."""
    n, c = 400, 4
    rot = torch.linalg.qr(torch.randn(c, c, generator=torch.Generator().manual_seed(0)
                                      ).double())[0]
    # rows with covariance exactly diag(ev) in the rotated basis: +-sqrt(ev) on each axis
    ev = torch.tensor([900.0, 4.0, 1.0, 0.01], dtype=torch.float64)
    base = torch.zeros(n, c, dtype=torch.float64)
    for k in range(c):
        base[k * 100:k * 100 + 50, k] = (ev[k] * n / 100).sqrt()
        base[k * 100 + 50:k * 100 + 100, k] = -(ev[k] * n / 100).sqrt()
    z = base @ rot.T
    lam = 1 + c / n
    w = ft.shrunk_whitening(z)
    torch.testing.assert_close(w, w.T)
    out = z @ w
    got = torch.linalg.eigvalsh(out.T @ out / n)
    want = torch.sort(ev * (1 + lam) / (ev + lam)).values
    torch.testing.assert_close(got, want)
    assert float(want[-1]) < 1 + lam + 1e-9 and abs(float(want[1]) - 1.0) < 1e-12
    # n = C, covariance I: every direction is a unit one, the map is the identity
    eye_rows = torch.eye(c, dtype=torch.float64) * c ** 0.5  # covariance I, n = 4
    torch.testing.assert_close(ft.shrunk_whitening(eye_rows), torch.eye(c, dtype=torch.float64))


def test_unknown_fix_features_is_an_error():
    with pytest.raises(PointSSLError, match="fix_features 'pca'"):
        Protocol(_make_task("cls"), REGIMES["fix"], fix_features="pca")


def test_streamed_statistics_equal_the_cached_ones(monkeypatch):
    """Frozen per-point features too large to cache: the scaler comes from float64 running
    moments over the same sample and equals the one fitted on all features at once."""
    cached = _frozen_protocol("partseg").model
    monkeypatch.setattr(ft, "_PRECOMPUTE_BYTES", 0)
    p = _frozen_protocol("partseg")
    assert p.cache is None
    for a, b in ((cached.scale_global, p.model.scale_global),
                 (cached.scale_point, p.model.scale_point)):
        torch.testing.assert_close(a.mean, b.mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.std, b.std, atol=1e-6, rtol=1e-5)


def test_feature_scaler_on_a_hand_example():
    f = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    s = FeatureScaler.fit(f)
    torch.testing.assert_close(s.mean, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(s.std, torch.tensor([1.0, 1e-6]))  # constant channel: clamped
    torch.testing.assert_close(s(f), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    m = FeatureScaler.fit_moments(f.double().sum(0), (f.double() ** 2).sum(0), 2, torch.float32)
    torch.testing.assert_close(m.mean, s.mean)
    torch.testing.assert_close(m.std, s.std)


def test_a_test_class_unknown_to_training_is_an_error():
    from pointssl.evaluate.finetune import finetune_classification

    rng = np.random.default_rng(0)
    pts = [rng.normal(size=(32, 3)).astype("f4") for _ in range(6)]
    train = CloudSet(points=pts[:4], labels=[0, 0, 1, 1], class_names=["a", "b"])
    test = CloudSet(points=pts[4:], labels=[1, 2], class_names=["a", "b", "c"])
    bb = build_backbone("pointnet", tnet=False)
    with pytest.raises(PointSSLError, match="test classes c are not among the 2 training"):
        finetune_classification(bb, train, test, "fix", epochs=1, num_points=16, log=None)
