"""Linear-SVM protocol: pointssl's Newton solver vs scikit-learn's LinearSVC.

    OMP_NUM_THREADS=2 python benchmarks/bench_svm.py [--features F.npz] [--sklearn]

Without ``--features`` it uses a synthetic Gaussian mixture shaped like ModelNet40 global
features (9,843 / 2,468 x 1,024, 40 imbalanced classes, non-negative like max-pooled ReLU
features). Prints a markdown table: time, primal objective and accuracies, side by side.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from pointssl.evaluate.svm import LinearSVM, linear_svm_protocol, standardize, svm_objective


def synthetic(n_train=9843, n_test=2468, d=1024, k=40, latent=64, noise=2.0, seed=0):
    """Class means in a low-rank latent space, lifted to d dims and rectified.

    noise=2.0 puts the test accuracy near a random PointNet's on ModelNet40 (~85%).
    """
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.2, 1.0, k)
    freq /= freq.sum()
    means = rng.normal(size=(k, latent))
    lift = rng.normal(size=(latent, d)) / np.sqrt(latent)

    def draw(n):
        y = rng.choice(k, size=n, p=freq)
        z = means[y] + noise * rng.normal(size=(n, latent))
        x = np.maximum(z @ lift + 0.5 * rng.normal(size=(n, d)), 0.0)
        return x.astype(np.float32), y

    return (*draw(n_train), *draw(n_test))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", help=".npz with train_X, train_y, test_X, test_y")
    ap.add_argument("--sklearn", action="store_true", help="also time LinearSVC (slow)")
    ap.add_argument("--C", type=float, default=0.01, help="C of the single-fit comparison")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.features:
        f = np.load(args.features)
        trX, trY, teX, teY = f["train_X"], f["train_y"].reshape(-1), f["test_X"], \
            f["test_y"].reshape(-1)
        source = args.features
    else:
        trX, trY, teX, teY = synthetic()
        source = "synthetic Gaussian mixture"
    trX, teX = standardize(trX, teX)
    print(f"# {source}: train {trX.shape}, test {teX.shape}, {len(np.unique(trY))} classes, "
          f"{torch.get_num_threads()} threads\n")

    rows = []
    t = time.perf_counter()
    ours = LinearSVM(C=args.C).fit(trX, trY)
    t_ours = time.perf_counter() - t
    rows.append(("pointssl LinearSVM (1 fit)", t_ours, ours.objective(trX, trY),
                 ours.score(trX, trY), ours.score(teX, teY), ours.n_iter_))

    if args.sklearn:
        from sklearn.svm import LinearSVC

        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning is reported via n_iter
            sk = LinearSVC(C=args.C).fit(trX, trY)
        t_sk = time.perf_counter() - t
        sk_obj = svm_objective(trX, trY, sk.coef_, sk.intercept_, args.C, sk.classes_)
        rows.append(("sklearn LinearSVC (1 fit)", t_sk, sk_obj, sk.score(trX, trY),
                     sk.score(teX, teY), int(np.max(sk.n_iter_))))
        agree = np.mean(sk.predict(teX) == ours.predict(teX))
        rel = np.linalg.norm(sk.coef_ - ours.coef_) / np.linalg.norm(sk.coef_)

    res = linear_svm_protocol(trX, trY, teX, teY)
    cv = res["cv_accuracy"]
    rows.append((f"pointssl protocol: select C (5-fold x {len(cv)}) + fit, C={res['C']:g}",
                 res["select_seconds"] + res["fit_seconds"], float("nan"),
                 res["train_accuracy"], res["accuracy"], res["n_iter"]))

    print(f"| solver (C={args.C:g} unless stated) | seconds | primal objective | train acc "
          "| test acc | Newton iters |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, sec, obj, tr, te, it in rows:
        obj = "-" if np.isnan(obj) else f"{obj:.6f}"
        print(f"| {name} | {sec:.2f} | {obj} | {tr:.4f} | {te:.4f} | {it} |")
    print(f"\nselect C: {res['select_seconds']:.2f} s, final fit: {res['fit_seconds']:.2f} s; "
          "CV accuracy: "
          + ", ".join(f"C={c:g}: {a:.4f}" for c, a in cv.items()))
    if args.sklearn:
        print(f"\nsklearn / pointssl single-fit time: {t_sk / t_ours:.1f}x; objective "
              f"(pointssl - sklearn) / sklearn = {(rows[0][2] - sk_obj) / sk_obj:+.2e}; "
              f"||coef diff|| / ||coef|| = {rel:.2e}; test predictions agree {agree:.4f}")


if __name__ == "__main__":
    main()
