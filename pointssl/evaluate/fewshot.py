"""Few-shot protocol: N-way K-shot linear SVM on frozen global features.

The protocol of Sharma & Kaul (NeurIPS 2020), followed by CrossPoint and Point-BERT: an
episode draws ``way`` classes, ``shot`` support shapes per class from the TRAIN split and
``query`` (20) query shapes per class that the support never saw; a linear SVM is fit on the
support (standardised with the support's own statistics) and scored on the queries; 10
episodes per setting, reported as mean ± std (population std, as CrossPoint prints it).

Where the queries come from: the papers say "unseen" shapes; CrossPoint's released
``eval_fewshot.py`` takes them from the train split minus the support. We take them from the
TEST split, so a query is never a shape that pre-training or a train-split protocol saw
(``test_labels=None`` gives the released code's same-split draw, support and queries still
disjoint).
"""

from __future__ import annotations

import time

import numpy as np

from pointssl.errors import PointSSLError
from pointssl.evaluate.features import split_features
from pointssl.evaluate.splits import check_disjoint
from pointssl.evaluate.svm import LinearSVM, standardize

__all__ = ["DEFAULT_SETTINGS", "FEWSHOT_C", "fewshot_episodes", "fewshot_protocol",
           "fewshot_eval"]

# 5w10s 5w20s 10w10s 10w20s: the four ModelNet40 settings the papers' few-shot tables report.
DEFAULT_SETTINGS = ((5, 10), (5, 20), (10, 10), (10, 20))

# Fixed, never chosen on queries (a support set of 50-200 shapes is too small to cross-
# validate). 1.0 is the C of CrossPoint's eval_fewshot.py (sklearn SVC default, linear kernel;
# ours is LinearSVC's squared-hinge one-vs-rest objective). 1024-d supports are separable, so
# C hardly matters: random-PointNet ModelNet40 5w10s mean 89.5 / 89.3 / 89.3% at C 0.1 / 1 / 10.
FEWSHOT_C = 1.0


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def fewshot_episodes(train_labels, test_labels, way: int, shot: int, query: int = 20,
                     episodes: int = 10, seed: int = 0) -> list[dict]:
    """Seeded N-way K-shot episodes over label arrays (indices only, no features).

    Each episode is ``{"classes", "support", "support_labels", "query", "query_labels"}``;
    ``support`` indexes ``train_labels`` and ``query`` indexes ``test_labels`` (or
    ``train_labels``, disjoint from the support, when ``test_labels`` is None). A class is
    eligible when it has ``shot`` train shapes and ``query`` test shapes (``shot + query``
    train shapes when ``test_labels`` is None); negative labels mean unlabelled.

    Episode ``e`` depends only on ``(seed, e)``: classes are the first eligible ones of a
    permutation drawn from ``(seed, e)``, and each class's shapes from ``(seed, e, class)``,
    so settings share their draws (5-way classes are the first five of the 10-way ones, the
    10-shot support is the first ten of the 20-shot one) whatever order they run in.
    """
    for name, v, lo in (("way", way, 2), ("shot", shot, 1), ("query", query, 1),
                        ("episodes", episodes, 1)):
        if int(v) != v or v < lo:
            raise PointSSLError(f"few-shot: {name} must be an integer >= {lo}, got {v}")
    ytr = np.asarray(train_labels).reshape(-1)
    same = test_labels is None
    yte = ytr if same else np.asarray(test_labels).reshape(-1)
    classes = np.unique(np.concatenate([ytr[ytr >= 0], yte[yte >= 0]]))
    n_tr = np.array([np.sum(ytr == c) for c in classes], dtype=int)
    n_te = np.array([np.sum(yte == c) for c in classes], dtype=int)
    ok = n_tr >= shot + query if same else (n_tr >= shot) & (n_te >= query)
    if ok.sum() < way:
        need = f"{shot + query} train" if same else f"{shot} train and {query} test"
        raise PointSSLError(f"few-shot {way}-way {shot}-shot: needs {way} classes with {need} "
                            f"shapes each; {int(ok.sum())} of {len(classes)} have them")
    out = []
    for e in range(episodes):
        order = _rng(seed, e, 0).permutation(len(classes))
        chosen = [k for k in order if ok[k]][:way]
        sup, qry = [], []
        for k in chosen:
            c = classes[k]
            # Key by class value (not by position among the eligible ones) so a class's
            # shapes are the same in every setting.
            key = int(c) if np.issubdtype(classes.dtype, np.integer) else int(k)
            pool = np.flatnonzero(ytr == c)[_rng(seed, e, 1, key).permutation(n_tr[k])]
            sup.append(pool[:shot])
            if same:
                qry.append(pool[shot:shot + query])
            else:
                tpool = np.flatnonzero(yte == c)
                qry.append(tpool[_rng(seed, e, 2, key).permutation(n_te[k])[:query]])
        sup, qry = np.concatenate(sup), np.concatenate(qry)
        out.append({"classes": classes[chosen], "support": sup, "support_labels": ytr[sup],
                    "query": qry, "query_labels": yte[qry]})
    return out


def fewshot_protocol(train_feats, train_labels, test_feats, test_labels, way: int,
                     shot: int, query: int = 20, episodes: int = 10, seed: int = 0,
                     C: float = FEWSHOT_C) -> dict:
    """Run :func:`fewshot_episodes`: per episode a :class:`LinearSVM` (fixed ``C``) on the
    support features standardised with the support's statistics only, accuracy on the
    queries (same map). ``test_feats``/``test_labels`` None: queries from the train split.
    Returns ``{"way", "shot", "query", "episodes", "mean", "std", "per_episode", "C",
    "seed"}`` (accuracies as fractions; std over episodes, ddof 0)."""
    xtr = np.asarray(train_feats)
    xte = xtr if test_feats is None else np.asarray(test_feats)
    if len(xtr) != len(np.asarray(train_labels)) or (
            test_feats is not None and len(xte) != len(np.asarray(test_labels))):
        raise PointSSLError("few-shot: features and labels differ in length")
    accs = []
    for ep in fewshot_episodes(train_labels, None if test_feats is None else test_labels,
                               way, shot, query, episodes, seed):
        xs, xq = standardize(xtr[ep["support"]], xte[ep["query"]])
        svm = LinearSVM(C=C).fit(xs, ep["support_labels"])
        accs.append(svm.score(xq, ep["query_labels"]))
    accs = np.asarray(accs)
    return {"way": int(way), "shot": int(shot), "query": int(query),
            "episodes": int(episodes), "mean": float(accs.mean()), "std": float(accs.std()),
            "per_episode": [float(a) for a in accs], "C": float(C), "seed": int(seed)}


def fewshot_eval(backbone, train, test, settings=DEFAULT_SETTINGS, episodes: int = 10,
                 query: int = 20, seed: int = 0, num_points=None, batch_size: int = 32,
                 device=None, baseline: bool = True, C: float = FEWSHOT_C) -> dict:
    """The few-shot protocol for one backbone: frozen global features of ``train`` and
    ``test`` once (feature seeds ``seed`` / ``seed + 1``, as :func:`svm_eval`), then every
    ``(way, shot)`` of ``settings``. With ``baseline`` the seeded random-init twin of the same
    architecture runs the identical episodes, under ``"random_init_baseline"`` per setting.
    Refuses a ``test`` that shares a file with ``train`` (:func:`check_disjoint`).

    Returns ``{"settings": [fewshot_protocol result (+ baseline) per setting], "n_train",
    "n_test", "feature_seconds", "total_seconds"}``.
    """
    from pointssl.backbones import random_backbone

    check_disjoint(train, test, "few-shot")
    t0 = time.time()
    nets = [backbone]
    if baseline:
        nets.append(random_backbone(backbone.name, seed, **backbone.config))
    feats = [split_features(net, train, test, seed=seed, num_points=num_points,
                            batch_size=batch_size, device=device) for net in nets]
    feat_s = time.time() - t0
    results = []
    for way, shot in settings:
        res = fewshot_protocol(*feats[0], way, shot, query, episodes, seed, C)
        if baseline:
            base = fewshot_protocol(*feats[1], way, shot, query, episodes, seed, C)
            res["random_init_baseline"] = {k: base[k] for k in ("mean", "std", "per_episode")}
        results.append(res)
    return {"settings": results, "n_train": len(feats[0][0]), "n_test": len(feats[0][2]),
            "feature_seconds": round(feat_s, 2), "total_seconds": round(time.time() - t0, 2)}
