"""`pointssl demo`: ConClu-PointNet pre-trained on the built-in synthetic scans (generator v3,
23 classes), judged against the same network at its random initialisation, with the noise of
each comparison.

Both networks start from the same seeded weights, so pre-training is the only difference.
Two protocols on their frozen features:
- linear SVM (C by 5-fold CV on train), with a paired bootstrap over the test shapes for the
  difference's ± std (the test split's own noise);
- few-shot episodes (support from train, 20 queries per class from test), the same episodes
  for both networks: mean ± std over episodes, and the per-episode difference's mean ± std.
No download needed; the whole run (collection build, pre-training, both protocols, t-SNE)
fits 10 minutes on 2 CPU cores with the default 4-minute pre-training budget.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

# Demo-sized ConClu, the paper's recipe otherwise; the budget is wall time (--minutes), never
# test accuracy. Batch 32: the paper's Sec. 3.1 batch. 512-point views: a step costs about
# half a 1,024-point one. Views turn by any yaw (not Sec. 3.1's ±5°, which assumes aligned
# shapes as in ModelNet40): the synthetic scans come at any yaw. Both choices were made on a
# validation split carved from train (SVM on shapes 0-31 of each class, scored on 32-63;
# v3 collection, 4 CPU-minute runs): ±180° +5.4 ± 1.7 points over random init, ±5° +0.4;
# 256-point views +1.9 (only 1.3x the steps: the rest of a step does not shrink).
PRETRAIN = {"num_points": 512, "batch_size": 32, "epochs": 1000, "rotate_degrees": 180.0}
FEWSHOT = {"way": 10, "shot": 10, "query": 20, "episodes": 20}
BOOTSTRAP = 1000  # test-set resamples for the SVM difference's std
TSNE_PER_CLASS = 12  # test shapes per class in the figure (t-SNE time grows fast with n)


def svm_predictions(xtr, ytr, xte, C: float) -> np.ndarray:
    """Test predictions of the protocol's final SVM at its chosen ``C`` (refit: the protocol
    returns accuracies only; the fit is deterministic, so this is the same classifier up to
    the solver's tolerance)."""
    from pointssl.evaluate.svm import LinearSVM, standardize

    xs, xq = standardize(xtr, xte)
    return LinearSVM(C=C).fit(xs, ytr).predict(xq)


def paired_bootstrap(correct_a, correct_b, n: int = BOOTSTRAP, seed: int = 0) -> float:
    """Std of ``mean(a) - mean(b)`` over test sets resampled with replacement (the same
    resample for both: the comparison is paired)."""
    diff = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    idx = np.random.default_rng(seed).integers(0, len(diff), (n, len(diff)))
    return float(diff[idx].mean(1).std())


def compare(feats: dict, seed: int = 0, fewshot: dict = FEWSHOT) -> dict:
    """Both protocols on ``feats`` = {name: (xtr, ytr, xte, yte)} for exactly two names,
    pre-trained first: per network SVM accuracy and C, few-shot mean ± std; and the
    differences (first minus second) with their ± std."""
    from pointssl.evaluate.fewshot import fewshot_protocol
    from pointssl.evaluate.svm import linear_svm_protocol

    (a, fa), (b, fb) = feats.items()
    out = {"svm": {}, "fewshot": {}, "difference": {}}
    correct = {}
    for name, (xtr, ytr, xte, yte) in feats.items():
        r = linear_svm_protocol(xtr, ytr, xte, yte, seed=seed)
        correct[name] = svm_predictions(xtr, ytr, xte, r["C"]) == yte
        out["svm"][name] = {"accuracy": r["accuracy"], "C": r["C"],
                            "cv_accuracy": r["cv_accuracy"]}
        out["fewshot"][name] = fewshot_protocol(xtr, ytr, xte, yte, seed=seed, **fewshot)
    out["difference"]["svm"] = {
        "mean": out["svm"][a]["accuracy"] - out["svm"][b]["accuracy"],
        "std": paired_bootstrap(correct[a], correct[b], seed=seed),
        "std_of": f"{BOOTSTRAP} paired bootstrap resamples of the test shapes"}
    per = np.subtract(out["fewshot"][a]["per_episode"], out["fewshot"][b]["per_episode"])
    out["difference"]["fewshot"] = {
        "mean": float(per.mean()), "std": float(per.std()),
        "sem": float(per.std(ddof=1) / np.sqrt(len(per))), "per_episode": per.tolist(),
        "std_of": f"{len(per)} paired episodes"}
    return out


def run_demo(out: Path, minutes: float = 4.0, seed: int = 0) -> dict:
    from pointssl import api
    from pointssl.backbones import random_backbone
    from pointssl.data.synthetic import load_synthetic
    from pointssl.evaluate.features import split_features
    from pointssl.utils import write_json_atomic
    from pointssl.viz.tsne import tsne_png

    out = Path(out)
    t0 = time.time()
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    train, test = load_synthetic("train", seed=seed), load_synthetic("test", seed=seed)
    build_s = time.time() - t0
    say(f"synthetic scans: {len(train)} train / {len(test)} test shapes, "
        f"{len(train.class_names)} classes ({build_s:.0f} s)")

    # The plain PointNet trunk (tnet=False): the transform nets triple a CPU step, and a
    # 4-minute budget then covers a third of the steps (measured on the v2 collection: with
    # them the short run fell below its random-init twin, 79.7% vs 86.2%).
    config = {"tnet": False}
    backbone = random_backbone("pointnet", seed, **config)  # the random twin's exact weights
    method = api.build_method("conclu", backbone, **PRETRAIN)
    t1 = time.time()
    metrics = api.pretrain(method, train, out, seed=seed, max_minutes=minutes, resume=True,
                           config_to_save={"method": "conclu", "backbone": "pointnet",
                                           "backbone_config": backbone.config,
                                           "data": "synthetic", "demo": True, **PRETRAIN})
    pretrain_s = time.time() - t1
    nets = {"ConClu pre-trained": method.backbone,
            "random init": random_backbone("pointnet", seed, **config)}
    t2 = time.time()
    feats = {k: split_features(net, train, test, seed=seed) for k, net in nets.items()}
    t3 = time.time()
    res = compare(feats, seed=seed)
    t4 = time.time()
    shown = np.concatenate([np.flatnonzero(test.labels == c)[:TSNE_PER_CLASS]
                            for c in np.unique(test.labels)])
    png = tsne_png({k: (f[2][shown], f[3][shown]) for k, f in feats.items()},
                   test.class_names, out / "tsne.png", seed=seed)
    t5 = time.time()

    fs = FEWSHOT
    setting = f"{fs['way']}-way {fs['shot']}-shot"
    print(f"\nPointNet, plain trunk (tnet=false, for the CPU budget), "
          f"{metrics.get('steps')} ConClu steps ({pretrain_s / 60:.1f} min, views of "
          f"{PRETRAIN['num_points']} points turned by any yaw); {len(test)} test scans, "
          f"{len(test.class_names)} classes")
    print(f"{'':<20}{'linear SVM':>12}{'C':>8}   {setting} ({fs['episodes']} episodes)")
    for name in nets:
        s, f = res["svm"][name], res["fewshot"][name]
        print(f"{name:<20}{100 * s['accuracy']:>11.1f}%{s['C']:>8g}   "
              f"{100 * f['mean']:.1f} ± {100 * f['std']:.1f}%")
    d = res["difference"]
    print(f"{'difference':<20}{100 * d['svm']['mean']:>+11.1f} ± {100 * d['svm']['std']:.1f} "
          f"points (paired bootstrap over test shapes)")
    print(f"{'':<20}{100 * d['fewshot']['mean']:>+11.1f} ± {100 * d['fewshot']['std']:.1f} "
          f"points {setting} (std over paired episodes; s.e. "
          f"{100 * d['fewshot']['sem']:.1f})")
    total = time.time() - t0
    summary = {
        "backbone": {"name": "pointnet", **config}, "pretrain_config": PRETRAIN,
        **res, "fewshot_setting": FEWSHOT,
        "data": {"train": len(train), "test": len(test), "classes": train.class_names},
        "pretrain": {k: metrics.get(k) for k in ("steps", "epochs", "shapes_per_s",
                                                  "wall_minutes", "stop_reason")},
        "seconds": {"build": round(build_s, 1), "pretrain": round(pretrain_s, 1),
                    "features": round(t3 - t2, 1), "protocols": round(t4 - t3, 1),
                    "tsne": round(t5 - t4, 1), "total": round(total, 1)},
        "tsne": str(png),
    }
    write_json_atomic(out / "demo.json", summary)
    print(f"\nt-SNE: {png}\nresults: {out / 'demo.json'}  ({total / 60:.1f} min)")
    return summary


if __name__ == "__main__":
    print(json.dumps(run_demo(Path("runs/demo"))))
