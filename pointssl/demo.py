"""`pointssl demo`: ConClu-PointNet pre-trained on the built-in synthetic scans (generator v3,
23 classes), judged against the same network at its random initialisation, with the noise of
each comparison.

Both networks start from the same seeded weights, so pre-training is the only difference.
Two protocols on their frozen features:
- linear SVM (C by 5-fold CV on train), with a paired bootstrap over the test shapes for the
  difference's ± std (the test split's own noise);
- few-shot episodes (support from train, 20 queries per class from test), the same episodes
  for both networks: mean ± std over episodes, and the mean per-episode difference ± its
  standard error (s.e.: std / sqrt(episodes), the noise of that mean).
Pre-training runs a fixed number of steps (``STEPS``), so the numbers depend on the seed
only; ``minutes`` caps its wall time (a cap that stops it early is announced). No download
needed; the whole run (collection build, pre-training, both protocols, t-SNE) is meant to fit
10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# Demo-sized ConClu, the paper's recipe otherwise. Batch 32: the paper's Sec. 3.1 batch.
# 512-point views: a step costs about half a 1,024-point one. Views turn by any yaw (not Sec.
# 3.1's ±5°, which assumes aligned shapes as in ModelNet40): the synthetic scans come at any
# yaw. Both were chosen on a validation split carved from train (SVM on shapes 0-31 of each
# class, scored on 32-63; 4 CPU-minute runs): ±180° +5.4 ± 1.7 points over random init, ±5°
# +0.4; 256-point views +1.9 (only 1.3x the steps: the rest of a step does not shrink).
#
# The length is a fixed step count, so the demo depends on its seed only (a wall-time budget
# did not: on a busy 2-core machine, 2 threads ran 8-16 shapes/s where 1 thread runs 60-90,
# and the old 4-minute budget gave 60-122 steps; that, not the splits, is why its test
# difference was 0.0 / -1.2 ± 1.6 while the validation runs showed +5.4). --minutes is only a
# cap, announced when it stops pre-training early. Method, step count and pre-training data
# were chosen on validation, never on test: SVM and few-shot support on train shapes 0-63 of
# each class (the demo's train split), scored on shapes 64-191 of the TRAIN stream (2,944
# scans, never pre-trained on, never in the test split); 1 thread; random init 49.9% SVM.
# Differences over random init (SVM ± paired-bootstrap std; 10w10s ± s.e. over 20 episodes):
#   ConClu on train, 100 steps (0.5 CPU-min)     +2.1 ± 0.8    +1.1 ± 0.8
#   ConClu on train, 400 steps (~2.1 CPU-min)    +3.5 ± 0.9    +3.0 ± 0.8   <- the demo (*)
#   ConClu on train, 600 steps (3.1 CPU-min)     +4.0 ± 0.9    +5.1 ± 0.85
#   ConClu on train, 1000 steps (5.3 CPU-min)    +4.9 ± 0.9    +5.1 ± 1.0   (*)
#   ParAE (1,024 points, PointNet-seg head), 130 steps (2.1 CPU-min)  +3.6 ± 0.9  +3.3 ± 1.05
#   ConClu 600 steps on a separate unlabeled split (256 shapes / class: 5,888 more scans
#     to generate, never SVM or test shapes)    +1.7 ± 0.9    +3.9 ± 0.8
# (*) 400 = 100 steps resumed exactly to 400; 1000 = 600 resumed to 1000 (seed 0 each).
# 400 steps: the longest validated length whose gain is ~4x its noise on both protocols and
# that fits the default 4-minute cap with 1 thread on a shared, busy 2-core machine (~1.9
# steps/s there: 600 steps would take ~5.3 min and be cut short). ParAE gains about as much
# SVM per CPU-minute and less few-shot; a separate, larger pre-training split spreads 600
# steps over 3 epochs instead of 13 and gains less. The old check (shapes 32-63, pre-trained
# on) gave +5.7 at 600 steps vs +4.0 on unseen shapes: a hint, within its ± 1.7, that
# pre-trained-on shapes flatter a validation split. The test split has 128 scans per class
# (same generator and settings as train, its own random stream; the SVM difference's std
# ~0.9 points instead of ~1.7 with 32); random init scores about the same on it (51.6% on its
# first 32 per class) as on validation.
PRETRAIN = {"num_points": 512, "batch_size": 32, "epochs": 1000, "rotate_degrees": 180.0}
STEPS = 400
DATA = {"train": 64, "test": 128, "num_points": 1024}  # shapes per class, points per scan
FEWSHOT = {"way": 10, "shot": 10, "query": 20, "episodes": 20}
BOOTSTRAP = 1000  # test-set resamples for the SVM difference's std
# One torch thread whatever the machine, for reproducibility, not for its score: the thread
# count changes the order of float sums, so the same seed ends 400 steps in other weights
# (test split, seed 0: +2.1 SVM / +4.8 few-shot with 2 threads, +3.1 / +5.0 with 1; a
# reminder that one pre-training run varies by about a point beyond the ± shown, which is
# the test split's and the episodes' noise only). With one fixed count a seed gives the same
# numbers on any machine with the same torch build (checked: idle, and with one core busy).
# It is also faster wherever cores are shared: threads beyond the free cores stall each other
# at every parallel op (ConClu ran 8-27 shapes/s with 2 threads under load 4-8 on 2 cores,
# 60-94 with 1). The whole demo, fresh cache, 2 idle cores: 3.0 min with 1 thread (1.9 of
# them pre-training), 2.2 min with 2 threads.
DEMO_THREADS = 1
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


def claim(mean: float, noise: float, noise_name: str) -> str:
    """``+X.X ± Y.Y points (+Z.Z x its <noise_name>: <verdict>)``: a difference counts as
    larger than its noise only at 2 or more of them (``mean``, ``noise`` as fractions)."""
    if noise > 1e-12:  # below that, float round-off of a spread that is really zero
        z = mean / noise
        ratio = f"{z:+.1f} x its {noise_name}"
        verdict = ("larger than its noise" if z >= 2 else
                   "smaller than its noise" if z <= -2 else "within its noise")
    else:
        ratio, verdict = f"no {noise_name} to compare", (
            "no difference" if mean == 0 else "larger than its noise")
    return f"{100 * mean:+.1f} ± {100 * noise:.1f} points ({ratio}: {verdict})"


def run_demo(out: Path, minutes: float = 4.0, seed: int = 0, *, steps: int | None = None,
             cache_dir=None, data_sizes: dict | None = None, pretrain: dict | None = None,
             fewshot: dict | None = None) -> dict:
    """The demo into ``out`` (re-running resumes / reuses it). ``steps`` (default ``STEPS``)
    fixes the pre-training length, so the result depends on the seed only; ``minutes`` is a
    wall-time cap that a slow or busy machine may hit first (the printout then says so).
    ``cache_dir``, ``data_sizes``, ``pretrain``, ``fewshot`` shrink it for tests. Runs on
    ``DEMO_THREADS`` torch thread(s) whatever the machine (``POINTSSL_THREADS`` overrides)."""
    import torch

    steps = STEPS if steps is None else int(steps)
    sizes = {**DATA, **(data_sizes or {})}
    cfg = {**PRETRAIN, **(pretrain or {})}
    fs = {**FEWSHOT, **(fewshot or {})}
    out = Path(out)
    t0 = time.time()
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    threads = torch.get_num_threads()
    want = int(os.environ.get("POINTSSL_THREADS") or DEMO_THREADS)
    torch.set_num_threads(want)
    try:
        return _run(out, minutes, seed, steps, cache_dir, sizes, cfg, fs, t0, say, want)
    finally:
        torch.set_num_threads(threads)


def _run(out, minutes, seed, steps, cache_dir, sizes, cfg, fs, t0, say, threads) -> dict:
    from pointssl import api
    from pointssl.backbones import random_backbone
    from pointssl.data.synthetic import load_synthetic
    from pointssl.evaluate.features import split_features
    from pointssl.utils import write_json_atomic
    from pointssl.viz.tsne import tsne_png

    train, test = (load_synthetic(split, num_points=sizes["num_points"],
                                  shapes_per_class=sizes[split], seed=seed, cache_dir=cache_dir)
                   for split in ("train", "test"))
    build_s = time.time() - t0
    say(f"synthetic scans: {len(train)} train / {len(test)} test shapes, "
        f"{len(train.class_names)} classes ({build_s:.0f} s)")

    # The plain PointNet trunk (tnet=False): the transform nets triple a CPU step, and a
    # 4-minute budget then covers a third of the steps (measured on the v2 collection: with
    # them the short run fell below its random-init twin, 79.7% vs 86.2%).
    config = {"tnet": False}
    backbone = random_backbone("pointnet", seed, **config)  # the random twin's exact weights
    method = api.build_method("conclu", backbone, **cfg)
    t1 = time.time()
    metrics = api.pretrain(method, train, out, seed=seed, max_steps=steps, max_minutes=minutes,
                           resume=True,
                           config_to_save={"method": "conclu", "backbone": "pointnet",
                                           "backbone_config": backbone.config,
                                           "data": "synthetic", "demo": True, "steps": steps,
                                           **cfg})
    pretrain_s = time.time() - t1
    nets = {"ConClu pre-trained": method.backbone,
            "random init": random_backbone("pointnet", seed, **config)}
    t2 = time.time()
    feats = {k: split_features(net, train, test, seed=seed) for k, net in nets.items()}
    t3 = time.time()
    res = compare(feats, seed=seed, fewshot=fs)
    t4 = time.time()
    shown = np.concatenate([np.flatnonzero(test.labels == c)[:TSNE_PER_CLASS]
                            for c in np.unique(test.labels)])
    png = tsne_png({k: (f[2][shown], f[3][shown]) for k, f in feats.items()},
                   test.class_names, out / "tsne.png", seed=seed)
    t5 = time.time()

    done = int(metrics.get("steps") or 0)
    setting = f"{fs['way']}-way {fs['shot']}-shot"
    print(f"\nPointNet, plain trunk (tnet=false, for the CPU budget), {done} ConClu steps "
          f"({pretrain_s / 60:.1f} min, {threads} thread{'s' * (threads > 1)}, views of "
          f"{cfg['num_points']} points turned by any yaw); "
          f"{len(train)} train / {len(test)} test scans, {len(test.class_names)} classes")
    if done < steps:
        print(f"NOTE: the {minutes:g}-minute cap stopped pre-training after {done} of {steps} "
              f"steps (a slow or busy machine): these numbers are not the seeded demo's. "
              f"Rerun with a larger --minutes to finish the same run.")
    print(f"{'':<20}{'linear SVM':>12}{'C':>8}   {setting} "
          f"(mean ± std over {fs['episodes']} episodes)")
    for name in nets:
        s, f = res["svm"][name], res["fewshot"][name]
        print(f"{name:<20}{100 * s['accuracy']:>11.1f}%{s['C']:>8g}   "
              f"{100 * f['mean']:.1f} ± {100 * f['std']:.1f}%")
    d = res["difference"]
    print("difference, pre-trained minus random init:")
    print(f"  linear SVM  {claim(d['svm']['mean'], d['svm']['std'], 'std')}; std of "
          f"{BOOTSTRAP} paired bootstrap resamples of the {len(test)} test scans")
    print(f"  {setting}  {claim(d['fewshot']['mean'], d['fewshot']['sem'], 's.e.')}; s.e. of "
          f"the mean over {fs['episodes']} paired episodes (the per-episode differences "
          f"spread ± {100 * d['fewshot']['std']:.1f})")
    total = time.time() - t0
    summary = {
        "backbone": {"name": "pointnet", **config}, "pretrain_config": cfg,
        **res, "fewshot_setting": fs,
        "data": {"train": len(train), "test": len(test), "classes": train.class_names},
        "threads": threads,
        "pretrain": {"steps_planned": steps,
                     **{k: metrics.get(k) for k in ("steps", "epochs", "shapes_per_s",
                                                    "wall_minutes", "stop_reason")}},
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
