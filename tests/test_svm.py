import inspect
import warnings

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from pointssl.evaluate.svm import (
    DEFAULT_CS,
    LinearSVM,
    _newton,
    _ovr_targets,
    _Problem,
    linear_svm_protocol,
    select_C,
    standardize,
    svm_objective,
)


def blobs(n, d, k, sep=0.7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return rng.normal(size=(k, d))[y] * sep + rng.normal(size=(n, d)), y


def sklearn_fit(X, y, C, tol=1e-4):
    return LinearSVC(C=C, tol=tol, max_iter=100_000).fit(X, y)


@pytest.mark.parametrize("C", [0.01, 1.0])
@pytest.mark.parametrize("shape", [(300, 20, 4), (400, 100, 5)])  # d=100 > block: CG path
def test_same_optimum_as_liblinear(C, shape):
    X, y = blobs(*shape)
    sk = sklearn_fit(X, y, C)
    ours = LinearSVM(C=C, tol=1e-6).fit(X, y)
    f_sk = svm_objective(X, y, sk.coef_, sk.intercept_, C)
    f_ours = ours.objective(X, y)
    assert f_ours <= f_sk + 1e-9 * f_sk
    # Against a tightly converged liblinear: same optimum value (not some easier objective)
    # and the same weights.
    tight = sklearn_fit(X, y, C, tol=1e-10)
    f_tight = svm_objective(X, y, tight.coef_, tight.intercept_, C)
    assert f_ours == pytest.approx(f_tight, rel=1e-8)
    w_sk = np.c_[tight.coef_, tight.intercept_]
    w_ours = np.c_[ours.coef_, ours.intercept_]
    assert np.linalg.norm(w_ours - w_sk) <= 1e-4 * np.linalg.norm(w_sk)
    assert np.mean(ours.predict(X) == sk.predict(X)) >= 0.99
    np.testing.assert_allclose(ours.decision_function(X), tight.decision_function(X),
                               atol=1e-3)


def test_default_tol_matches_liblinear_stop_rule():
    X, y = blobs(300, 20, 4, seed=1)
    sk = sklearn_fit(X, y, 0.1)
    ours = LinearSVM(C=0.1).fit(X, y)
    f_sk = svm_objective(X, y, sk.coef_, sk.intercept_, 0.1)
    assert abs(ours.objective(X, y) - f_sk) <= 1e-6 * f_sk
    assert ours.n_iter_ <= 20


def test_binary_uses_one_column_like_sklearn():
    X, y = blobs(200, 10, 2, seed=2)
    labels = np.array(["chair", "table"])[y]
    sk = sklearn_fit(X, labels, 0.5)
    ours = LinearSVM(C=0.5, tol=1e-6).fit(X, labels)
    assert ours.coef_.shape == sk.coef_.shape == (1, 10)
    assert ours.decision_function(X).shape == (200,)
    assert ours.objective(X, labels) <= svm_objective(X, labels, sk.coef_, sk.intercept_,
                                                      0.5) + 1e-9
    assert np.array_equal(ours.predict(X), sk.predict(X))


def test_intercept_is_regularised_like_liblinear():
    # With all samples in one class the data term can be zeroed by the bias alone; a
    # regularised bias must stay strictly below the unregularised answer (b = 1).
    X = np.zeros((50, 3))
    y = np.r_[np.zeros(49), 1]
    ours = LinearSVM(C=1.0, tol=1e-8).fit(X, y)
    # Bias-only problem: b minimises 0.5 b^2 + C (49 (1+b)^2 + (1-b)^2), C = 1.
    assert ours.intercept_[0] == pytest.approx((2 - 98) / (1 + 100), rel=1e-6)
    assert ours.objective(X, y) < svm_objective(X, y, ours.coef_, [-0.96], 1.0)


def test_separable_data_is_classified_perfectly():
    rng = np.random.default_rng(3)
    centres = np.eye(6, 30) * 20
    y = np.repeat(np.arange(6), 40)
    X = centres[y] + rng.normal(size=(240, 30))
    Xte = centres[y] + rng.normal(size=(240, 30))
    svm = LinearSVM(C=1.0).fit(X, y)
    assert svm.score(X, y) == 1.0 and svm.score(Xte, y) == 1.0


def test_warm_start_reaches_same_optimum_faster():
    X, y = blobs(300, 80, 4, seed=4)
    cold = LinearSVM(C=0.3, tol=1e-6).fit(X, y)
    warm = LinearSVM(C=0.3, tol=1e-6).fit(X, y, init=(cold.coef_ * 1.01, cold.intercept_))
    assert warm.n_iter_ < cold.n_iter_
    assert warm.objective(X, y) == pytest.approx(cold.objective(X, y), rel=1e-7)


def test_masked_columns_equal_fitting_the_subset_alone():
    # select_C solves every fold as a masked column of one batch: it must equal a plain fit.
    X, y = blobs(240, 90, 3, seed=5)
    keep = np.random.default_rng(0).random(240) < 0.7
    P = _Problem(X, "cpu")
    Y = torch.as_tensor(_ovr_targets(y, 3))
    S = torch.as_tensor(np.repeat(keep[:, None], 3, 1).astype(float))
    W, _, _ = _newton(P, Y, torch.full((3,), 0.2, dtype=torch.float64),
                      torch.zeros(P.p, 3, dtype=torch.float64), S,
                      torch.full((3,), 1e-9, dtype=torch.float64), 1000)
    Wa = (P.V @ W).numpy()
    alone = LinearSVM(C=0.2, tol=1e-9).fit(X[keep], y[keep])
    np.testing.assert_allclose(Wa[:-1].T, alone.coef_, atol=1e-6)
    np.testing.assert_allclose(Wa[-1], alone.intercept_, atol=1e-6)


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(6)
    train = rng.normal(3.0, 2.0, size=(500, 4))
    train[:, 3] = 7.0  # constant feature: no division by zero
    test = rng.normal(3.0, 2.0, size=(100, 4)) + 100.0
    tr, te = standardize(train, test)
    np.testing.assert_allclose(tr[:, :3].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(tr[:, :3].std(0), 1, atol=1e-12)
    assert np.all(np.isfinite(te)) and np.all(tr[:, 3] == 0)
    # The +100 shift survives as +100 / train std: test statistics were not used.
    np.testing.assert_allclose(te[:, :3].mean(0), 100.0 / train[:, :3].std(0), atol=1.0)


def test_select_C_sees_training_data_only_and_is_deterministic():
    assert list(inspect.signature(select_C).parameters)[:2] == ["X", "y"]
    assert not any("test" in p for p in inspect.signature(select_C).parameters)
    X, y = blobs(300, 20, 4, sep=0.4, seed=7)
    grid = (0.001, 0.01, 0.1, 1.0)
    best, cv = select_C(X, y, Cs=grid, folds=3, seed=1)
    assert best in grid and set(cv) == set(grid)
    assert all(0.0 <= a <= 1.0 for a in cv.values()) and cv[best] == max(cv.values())
    assert select_C(X, y, Cs=grid, folds=3, seed=1) == (best, cv)
    assert select_C(X, y, Cs=grid, folds=3, seed=2)[1] != cv  # the seed drives the folds


def test_protocol_reports_every_key():
    X, y = blobs(400, 30, 4, seed=8)
    res = linear_svm_protocol(X[:300], y[:300], X[300:], y[300:], folds=3)
    assert {"accuracy", "C", "cv_accuracy", "n_train", "n_test", "fit_seconds",
            "select_seconds", "train_accuracy"} <= set(res)
    assert 0.8 <= res["accuracy"] <= 1.0 and res["C"] in DEFAULT_CS
    assert res["n_train"] == 300 and res["n_test"] == 100
    assert set(res["cv_accuracy"]) == set(DEFAULT_CS)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        LinearSVM(C=0.0)
    with pytest.raises(ValueError):
        LinearSVM().fit(np.zeros((5, 2)), np.ones(5))
    with pytest.raises(ValueError):
        LinearSVM().fit(np.full((4, 2), np.nan), np.arange(4) % 2)


def test_unreachable_tolerance_stops_at_float64_noise():
    X, y = blobs(300, 80, 4, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no max_iter warning: it stops on its own
        svm = LinearSVM(C=0.3, tol=1e-18, max_iter=200).fit(X, y)
    assert svm.n_iter_ < 50
    ref = LinearSVM(C=0.3, tol=1e-8).fit(X, y)
    assert svm.objective(X, y) == pytest.approx(ref.objective(X, y), rel=1e-9)


def test_svm_eval_runs_the_protocol_on_frozen_features():
    """svm_eval = extract_features (train with seed, test with seed + 1) + the protocol; it
    lives in evaluate/, so the protocol needs no import of the CLI."""
    import subprocess
    import sys

    from pointssl.backbones import random_backbone
    from pointssl.data.datasets import CloudSet
    from pointssl.evaluate.features import extract_features
    from pointssl.evaluate.svm import svm_eval

    rng = np.random.default_rng(0)

    def toy(n):  # spheres vs flattened spheres, 40 points of varying count
        y = np.arange(n) % 2
        pts = [rng.normal(size=(40 + i % 3, 3)) * (1, 1, 0.1 if c else 1) for i, c in
               enumerate(y)]
        return CloudSet(points=[p.astype(np.float32) for p in pts], labels=y)

    train, test = toy(30), toy(12)
    bb = random_backbone("pointnet", 0, channels=[8, 8], emb_dim=16)
    res = svm_eval(bb, train, test, seed=4, folds=3, Cs=(0.01, 0.1), num_points=32,
                   keep_features=True, device="cpu")
    xtr, ytr = extract_features(bb, train, num_points=32, seed=4, device="cpu")
    xte, yte = extract_features(bb, test, num_points=32, seed=5, device="cpu")
    ref = linear_svm_protocol(xtr, ytr, xte, yte, Cs=(0.01, 0.1), folds=3, seed=4)
    for key in ("accuracy", "train_accuracy", "C", "cv_accuracy", "n_train", "n_test"):
        assert res[key] == ref[key], key
    np.testing.assert_array_equal(res["test_features"], xte)
    np.testing.assert_array_equal(res["test_labels"], yte)
    assert {"feature_seconds", "total_seconds"} <= set(res)
    code = "import sys, pointssl.evaluate.svm; sys.exit('pointssl.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
