"""The demo's statistics: paired differences and their ± std, on small hand-made features."""

import numpy as np
import pytest

from pointssl import demo
from pointssl.evaluate.svm import linear_svm_protocol


def _feats(spread, k=5, d=16, n_train=24, n_test=24):
    """(xtr, ytr, xte, yte): Gaussian classes around fixed centres, noise ``spread``."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d)) * 2
    out = []
    for n in (n_train, n_test):
        y = np.repeat(np.arange(k), n)
        out += [(centres[y] + spread * rng.normal(size=(len(y), d))).astype(np.float32), y]
    return tuple(out)


def test_paired_bootstrap_by_hand():
    a = np.ones(400, bool)
    b = np.arange(400) % 2 == 0  # right on half
    # diff is 0 or 1 with p = 1/2: the mean over n resampled shapes has std 0.5 / sqrt(n)
    assert demo.paired_bootstrap(a, b, n=4000) == pytest.approx(0.5 / 20, rel=0.08)
    assert demo.paired_bootstrap(b, b) == 0.0  # the same classifier: no noise at all


def test_refit_predictions_score_what_the_protocol_scored():
    xtr, ytr, xte, yte = _feats(spread=3.0)
    r = linear_svm_protocol(xtr, ytr, xte, yte, Cs=(0.01, 0.1, 1.0), folds=3)
    assert 0.3 < r["accuracy"] < 1.0  # a case with errors to disagree on
    pred = demo.svm_predictions(xtr, ytr, xte, r["C"])
    assert np.mean(pred == yte) == pytest.approx(r["accuracy"], abs=1.5 / len(yte))


def test_compare_differences_are_paired(monkeypatch):
    monkeypatch.setattr(demo, "BOOTSTRAP", 200)
    good, bad = _feats(spread=1.5), _feats(spread=4.0)
    fs = {"way": 3, "shot": 5, "query": 10, "episodes": 6}
    res = demo.compare({"pre": good, "rand": bad}, fewshot=fs)
    d = res["difference"]
    assert d["svm"]["mean"] == pytest.approx(res["svm"]["pre"]["accuracy"]
                                             - res["svm"]["rand"]["accuracy"])
    per = np.subtract(res["fewshot"]["pre"]["per_episode"], res["fewshot"]["rand"]["per_episode"])
    np.testing.assert_allclose(d["fewshot"]["per_episode"], per)
    assert d["fewshot"]["mean"] == pytest.approx(per.mean())
    assert d["fewshot"]["std"] == pytest.approx(per.std())
    assert d["svm"]["mean"] > 0 and d["fewshot"]["mean"] > 0  # the cleaner features win
    # one network against itself: every difference is exactly zero, with zero spread
    same = demo.compare({"a": good, "b": good}, fewshot=fs)["difference"]
    assert same["svm"]["mean"] == 0 and same["svm"]["std"] == 0
    assert same["fewshot"]["mean"] == 0 and same["fewshot"]["std"] == 0

