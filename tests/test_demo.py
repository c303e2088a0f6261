"""The demo's statistics: paired differences and their ± std, on small hand-made features."""

import numpy as np
import pytest
import torch

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



def test_claim_counts_noise_units_and_says_so():
    assert demo.claim(0.05, 0.01, "std") == \
        "+5.0 ± 1.0 points (+5.0 x its std: larger than its noise)"
    assert "within its noise" in demo.claim(0.012, 0.016, "s.e.")  # the old demo's case
    assert "within its noise" in demo.claim(-0.012, 0.016, "s.e.")
    assert "smaller than its noise" in demo.claim(-0.05, 0.01, "s.e.")
    assert demo.claim(0.0, 0.0, "std").endswith("no difference)")
    assert demo.claim(0.167, 4e-18, "s.e.").endswith("larger than its noise)")  # round-off


def test_tsne_styles_are_distinct_past_twenty_classes():
    from pointssl.viz.tsne import class_style

    styles = [class_style(c) for c in range(23)]  # the synthetic collection's 23 classes
    assert len(set(styles)) == 23
    assert class_style(0)[1] == "o" and class_style(20)[1] != "o"
    with pytest.raises(ValueError):
        class_style(100)


def test_run_demo_is_seeded_and_flags_the_cap(tmp_path, monkeypatch, capsys):
    """A tiny demo end to end: a fixed step count gives the same numbers in a fresh folder; a
    wall cap that stops pre-training early is announced."""
    monkeypatch.setattr(demo, "BOOTSTRAP", 50)
    monkeypatch.setattr(demo, "TSNE_PER_CLASS", 2)
    monkeypatch.delenv("POINTSSL_THREADS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's count: the demo runs on DEMO_THREADS, then restores
    small = {"cache_dir": tmp_path / "cache",
             "data_sizes": {"train": 5, "test": 2, "num_points": 256},
             "pretrain": {"num_points": 64, "batch_size": 8},
             "fewshot": {"way": 3, "shot": 2, "query": 2, "episodes": 3}}
    keys = ("svm", "fewshot", "difference")
    a = demo.run_demo(tmp_path / "a", minutes=10, steps=2, **small)
    text = capsys.readouterr().out
    assert torch.get_num_threads() == 2
    torch.set_num_threads(threads)
    assert a["threads"] == demo.DEMO_THREADS == 1
    assert a["pretrain"]["steps"] == 2 and a["pretrain"]["stop_reason"] == "max_steps"
    assert a["data"] == {"train": 23 * 5, "test": 23 * 2, "classes": a["data"]["classes"]}
    assert "NOTE" not in text and "paired episodes" in text and "x its s.e." in text
    assert (tmp_path / "a" / "tsne.png").stat().st_size > 0
    b = demo.run_demo(tmp_path / "b", minutes=10, steps=2, **small)  # a fresh folder
    assert {k: b[k] for k in keys} == {k: a[k] for k in keys}
    capsys.readouterr()
    capped = demo.run_demo(tmp_path / "c", minutes=0, steps=2, **small)
    assert capped["pretrain"]["steps"] == 0
    assert "NOTE: the 0-minute cap stopped pre-training after 0 of 2 steps" in \
        capsys.readouterr().out
    # untrained = the random twin: every difference is exactly zero
    assert capped["difference"]["svm"]["mean"] == 0 and capped["difference"]["svm"]["std"] == 0
