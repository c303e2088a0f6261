import numpy as np
import pytest
import torch

from pointssl.backbones import random_backbone
from pointssl.data.datasets import CloudSet
from pointssl.errors import PointSSLError
from pointssl.evaluate import fewshot as fs
from pointssl.evaluate.features import extract_features
from pointssl.evaluate.svm import LinearSVM, standardize


def _labels(n_classes, per_class):
    return np.repeat(np.arange(n_classes), per_class)


def test_episode_counts_and_sources():
    ytr, yte = _labels(12, 30), _labels(12, 25)
    eps = fs.fewshot_episodes(ytr, yte, way=5, shot=10, query=20, episodes=4, seed=3)
    assert len(eps) == 4
    for ep in eps:
        assert len(set(ep["classes"].tolist())) == 5
        assert np.array_equal(ytr[ep["support"]], ep["support_labels"])
        assert np.array_equal(yte[ep["query"]], ep["query_labels"])
        for c in ep["classes"]:
            assert np.sum(ep["support_labels"] == c) == 10
            assert np.sum(ep["query_labels"] == c) == 20
        assert set(ep["support_labels"]) == set(ep["classes"]) == set(ep["query_labels"])
        assert len(set(ep["support"])) == 50 and len(set(ep["query"])) == 100


def test_same_split_support_never_a_query():
    # Queries from the train split (CrossPoint's released draw): the only case where one
    # index could be both; 25 shapes per class and 10 + 15 drawn forces every shape in use.
    y = _labels(6, 25)
    for ep in fs.fewshot_episodes(y, None, way=6, shot=10, query=15, episodes=5):
        assert not set(ep["support"]) & set(ep["query"])
        assert np.array_equal(y[ep["query"]], ep["query_labels"])
    with pytest.raises(PointSSLError, match="with 26 train shapes each; 0 of 6"):
        fs.fewshot_episodes(y, None, way=6, shot=10, query=16)


def test_episodes_seeded_and_order_free():
    ytr, yte = _labels(20, 40), _labels(20, 30)
    a = fs.fewshot_episodes(ytr, yte, 5, 10, episodes=6, seed=7)
    b = fs.fewshot_episodes(ytr, yte, 5, 10, episodes=6, seed=7)
    for x, y in zip(a, b):
        for k in x:
            assert np.array_equal(x[k], y[k])
    # Episode e depends on (seed, e) only: asking for fewer episodes, or another setting
    # first, changes nothing; the 5-way classes head the 10-way ones, 10 shots head 20.
    fs.fewshot_episodes(ytr, yte, 10, 20, episodes=3, seed=7)
    c = fs.fewshot_episodes(ytr, yte, 5, 10, episodes=2, seed=7)
    assert np.array_equal(c[1]["support"], a[1]["support"])
    big = fs.fewshot_episodes(ytr, yte, 10, 20, episodes=6, seed=7)
    for small, large in zip(a, big):
        assert set(small["classes"]) <= set(large["classes"])
        s = set(small["support"])
        assert s <= set(large["support"])
    # different episode index -> different classes; different seed -> different episodes
    assert len({tuple(sorted(ep["classes"])) for ep in a}) == 6
    d = fs.fewshot_episodes(ytr, yte, 5, 10, episodes=6, seed=8)
    assert any(set(x["classes"]) != set(y["classes"]) for x, y in zip(a, d))


def test_ineligible_classes_and_bad_args_are_one_line_errors():
    ytr = np.concatenate([_labels(4, 12), np.full(5, 4), np.full(12, -1)])  # class 4: 5 shapes
    yte = _labels(5, 20)
    eps = fs.fewshot_episodes(ytr, yte, way=4, shot=10, query=20, episodes=5)
    assert all(4 not in ep["classes"] and -1 not in ep["classes"] for ep in eps)
    with pytest.raises(PointSSLError) as e:
        fs.fewshot_episodes(ytr, yte, way=5, shot=10, query=20)
    assert "\n" not in str(e.value) and "4 of 5 have them" in str(e.value)
    with pytest.raises(PointSSLError, match="way must be"):
        fs.fewshot_episodes(ytr, yte, way=1, shot=1)


def _toy(n_classes, per_class, dim, rng, sep=10.0):
    centres = rng.normal(size=(n_classes, dim)) * sep
    y = _labels(n_classes, per_class)
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_separable_is_perfect_and_random_labels_are_chance():
    rng = np.random.default_rng(0)
    xtr, ytr = _toy(8, 30, 16, rng)
    xte, yte = _toy(8, 25, 16, np.random.default_rng(0))  # same centres, new noise
    xte = xte + rng.normal(size=xte.shape) * 0.1
    res = fs.fewshot_protocol(xtr, ytr, xte, yte, way=5, shot=10, episodes=5)
    assert res["mean"] == 1.0 and res["std"] == 0.0 and res["per_episode"] == [1.0] * 5
    assert {k: res[k] for k in ("way", "shot", "query", "episodes", "C", "seed")} == \
        {"way": 5, "shot": 10, "query": 20, "episodes": 5, "C": fs.FEWSHOT_C, "seed": 0}
    # labels unrelated to the features: accuracy at chance, 1/way (2,000 queries: sd 0.009)
    r = fs.fewshot_protocol(rng.normal(size=(240, 16)), ytr, rng.normal(size=(200, 16)),
                            yte, way=5, shot=10, episodes=20)
    assert abs(r["mean"] - 0.2) < 0.05


def test_standardised_with_support_statistics_only(monkeypatch):
    # Two classes along feature 0 at -1 / +1; the queries sit at the same places + 6. With
    # the support's statistics the shift survives and every query falls on class 1's side;
    # statistics taken from the queries (or from support + queries) would undo it.
    rng = np.random.default_rng(1)
    ytr, yte = _labels(2, 10), _labels(2, 20)
    xtr = np.c_[np.where(ytr == 0, -1.0, 1.0) + 0.05 * rng.normal(size=20),
                rng.normal(size=20)]
    xte = np.c_[np.where(yte == 0, -1.0, 1.0), rng.normal(size=40)]
    seen = []

    class Spy(LinearSVM):
        def fit(self, X, y, init=None):
            seen.append(np.asarray(X))
            return super().fit(X, y, init)

    monkeypatch.setattr(fs, "LinearSVM", Spy)
    assert fs.fewshot_protocol(xtr, ytr, xte, yte, 2, 10, episodes=1)["mean"] == 1.0
    shifted = fs.fewshot_protocol(xtr, ytr, xte + [6.0, 0.0], yte, 2, 10, episodes=1)
    assert shifted["mean"] == 0.5  # class 0's queries all cross the boundary
    for X in seen:  # the SVM saw the support standardised on itself, queries regardless
        assert np.allclose(X.mean(0), 0) and np.allclose(X.std(0), 1)
    assert np.allclose(seen[0], seen[1])
    # and the fit matches a hand run of the same map
    ep = fs.fewshot_episodes(ytr, yte, 2, 10, episodes=1)[0]
    xs, xq = standardize(xtr[ep["support"]], xte[ep["query"]] + [6.0, 0.0])
    hand = LinearSVM(C=fs.FEWSHOT_C).fit(xs, ep["support_labels"]).score(xq, ep["query_labels"])
    assert hand == shifted["mean"]


def test_fewshot_eval_reports_the_random_init_twin(monkeypatch):
    rng = np.random.default_rng(0)
    # 4 classes of box-shaped clouds with distinct aspect ratios
    def clouds(n, tag):
        y = _labels(4, n)
        pts = [(rng.uniform(-1, 1, size=(64, 3)) * [1, 1 + c, 3 - 0.5 * c]).astype(np.float32)
               for c in y]
        return CloudSet(points=pts, labels=y, sources=[f"{tag}{i}" for i in range(len(y))])

    train, test = clouds(8, "train/"), clouds(6, "test/")
    bb = random_backbone("pointnet", 5, channels=[16, 16, 16, 32], emb_dim=64)
    nets = []

    def spy(net, data, **kw):
        nets.append(net)
        return extract_features(net, data, **kw)

    import pointssl.evaluate.features as feats_module

    monkeypatch.setattr(feats_module, "extract_features", spy)  # what split_features calls
    res = fs.fewshot_eval(bb, train, test, settings=((3, 4), (4, 2)), episodes=3, query=5)
    # features once per network and split; the twin is random_backbone(name, seed, **config)
    assert len(nets) == 4 and nets[0] is nets[1] is bb and nets[2] is nets[3]
    want = random_backbone("pointnet", 0, **bb.config).state_dict()
    got = nets[2].state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    mine = bb.state_dict()
    assert not all(torch.equal(got[k], mine[k]) for k in mine)
    assert [(r["way"], r["shot"]) for r in res["settings"]] == [(3, 4), (4, 2)]
    assert res["n_train"] == 32 and res["n_test"] == 24
    for r in res["settings"]:
        base = r["random_init_baseline"]
        assert set(base) == {"mean", "std", "per_episode"} and len(base["per_episode"]) == 3
        assert 0 <= r["mean"] <= 1
    # The twin is random_backbone(name, seed, **config): with the same seed (5) as the
    # backbone's, the two columns are the very same network, hence equal.
    same = fs.fewshot_eval(bb, train, test, settings=((3, 4),), episodes=3, query=5, seed=5)
    r = same["settings"][0]
    assert r["per_episode"] == r["random_init_baseline"]["per_episode"]
    solo = fs.fewshot_eval(bb, train, test, settings=((3, 4),), episodes=3, query=5,
                           baseline=False)
    assert "random_init_baseline" not in solo["settings"][0]
    assert solo["settings"][0]["per_episode"] == res["settings"][0]["per_episode"]
    # the test split must not hold a training shape: one clear error before any work
    with pytest.raises(PointSSLError) as e:
        fs.fewshot_eval(bb, train, train, settings=((3, 4),), episodes=1, query=5)
    assert "few-shot" in str(e.value) and "\n" not in str(e.value)
