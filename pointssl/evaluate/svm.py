"""Linear-SVM protocol (OcCo / ConClu): standardise, pick C by k-fold CV on train, fit, test.

`LinearSVM` solves exactly the objective of ``sklearn.svm.LinearSVC(penalty='l2',
loss='squared_hinge', multi_class='ovr', fit_intercept=True, intercept_scaling=1)``:
for every class k,

    min_{w_k, b_k}  0.5 * ||[w_k, b_k]||^2 + C * sum_i max(0, 1 - y_ik (w_k . x_i + b_k))^2

with y_ik = +1 for class k and -1 otherwise (liblinear regularises the intercept as an extra
feature of value 1). All K classes are solved at once with a truncated Newton method
(preconditioned CG on the generalised Hessian + Armijo line search), stopping per class on
liblinear's own criterion ``||g|| <= tol * max(min(pos, neg), 1) / n * ||g(0)||``.

Two things make it fast on dense (n x 1024) features:
- the problem is rotated once by the eigenvectors V of X_aug^T X_aug. An orthogonal change of
  variables w' = V^T w leaves both the regulariser and every margin unchanged (so the optimum
  is the same), and in the rotated basis the Hessian is close to diagonal, so a Jacobi
  preconditioner cuts CG iterations several-fold;
- CG Hessian products run in float32, while gradients, margins, objective and line search run
  in float64, so the stopping test and the reported objective are exact.
"""

from __future__ import annotations

import time

import numpy as np
import torch

DEFAULT_CS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

__all__ = [
    "DEFAULT_CS",
    "LinearSVM",
    "linear_svm_protocol",
    "select_C",
    "standardize",
    "svm_objective",
]


def standardize(train, *others, eps: float = 1e-8):
    """Scale ``train`` and every array in ``others`` by the mean/std of ``train`` only.

    Constant training features (std < eps) are centred but not divided. Returns a tuple
    ``(train_s, *others_s)`` of float64 arrays.
    """
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std < eps, 1.0, std)
    return tuple((np.asarray(a, dtype=np.float64) - mean) / std for a in (train, *others))


def _ovr_targets(y_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """±1 target matrix (n, K); binary problems use one column for classes_[1], as liblinear."""
    if n_classes == 2:
        return np.where(y_idx == 1, 1.0, -1.0)[:, None]
    Y = -np.ones((len(y_idx), n_classes))
    Y[np.arange(len(y_idx)), y_idx] = 1.0
    return Y


def svm_objective(X, y, coef, intercept, C: float, classes=None, intercept_scaling=1.0):
    """Primal LinearSVC objective summed over the OvR classes, for any (coef, intercept).

    ``coef`` is (K, d) and ``intercept`` (K,), as in sklearn; the intercept is regularised as
    the weight ``b / intercept_scaling`` of a constant feature, which is what liblinear does.
    """
    X = np.asarray(X, dtype=np.float64)
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    Y = _ovr_targets(np.searchsorted(classes, y), len(classes))
    margin = np.maximum(0.0, 1.0 - Y * (X @ coef.T + intercept))
    b = intercept / intercept_scaling
    return float(0.5 * (np.sum(coef**2) + np.sum(b**2)) + C * np.sum(margin**2))


class _Rotated:
    """X_aug = [X, 1] rotated by the eigenvectors of X_aug^T X_aug (exact change of basis)."""

    def __init__(self, X: np.ndarray, device):
        Xt = torch.as_tensor(np.asarray(X, dtype=np.float64), device=device)
        Xa = torch.cat([Xt, torch.ones(len(Xt), 1, dtype=Xt.dtype, device=device)], dim=1)
        _, V = torch.linalg.eigh(Xa.T @ Xa)
        self.V = V
        self.Z = Xa @ V  # float64: margins and gradients
        self.Z32 = self.Z.float()  # float32: CG Hessian products only
        self.Zsq32 = self.Z32.square()


def _newton(R: _Rotated, Y, C, W, S, rtol, max_iter: int, cg_max: int = 200):
    """Truncated Newton for all columns of W (p, K) at once.

    Returns (W, Newton iterations per column, total lock-step CG iterations).

    Y (n, K) ±1 targets, C (K,) per-column costs, S (n, K) 0/1 sample masks or None,
    rtol (K,) relative gradient tolerances.
    """
    Z, Z32, Zsq32 = R.Z, R.Z32, R.Zsq32
    K = Y.shape[1]
    YS = Y if S is None else Y * S
    # Reference gradient at w = 0 (liblinear's start), so warm starts keep the same stop test.
    thresh = rtol * (2.0 * C * (Z.T @ YS)).norm(dim=0)
    n_iter = torch.zeros(K, dtype=torch.long, device=Z.device)
    z = Z @ W
    cols = torch.arange(K, device=Z.device)
    n_cg = 0
    while True:
        Yc, Cc, zc, Wc = Y[:, cols], C[cols], z[:, cols], W[:, cols]
        Sc = None if S is None else S[:, cols]
        m = 1.0 - Yc * zc
        act = (m > 0).to(Z.dtype)
        if Sc is not None:
            act = act * Sc
        g = Wc + 2.0 * Cc * (Z.T @ (act * (zc - Yc)))
        gn = g.norm(dim=0)
        keep = (gn > thresh[cols]) & (n_iter[cols] < max_iter)
        if not bool(keep.any()):
            break
        cols, g, gn, m, act = cols[keep], g[:, keep], gn[keep], m[:, keep], act[:, keep]
        Yc, Cc, zc, Wc = Yc[:, keep], Cc[keep], zc[:, keep], Wc[:, keep]
        Sc = None if Sc is None else Sc[:, keep]

        # Inexact Newton step: PCG on (I + 2C Z^T D Z) d = -g, Jacobi preconditioner.
        act32, C32 = act.float(), Cc.float()
        diag = 1.0 + 2.0 * C32 * (Zsq32.T @ act32)
        d, it = _pcg(Z32, act32, C32, -g.float(), diag, cg_max)
        d = d.double()
        n_cg += it
        zd = Z @ d
        loss = m.clamp_min(0).square()
        f0 = 0.5 * Wc.square().sum(0) + Cc * (loss if Sc is None else loss * Sc).sum(0)
        t = _armijo(f0, (g * d).sum(0), Wc, d, zc, zd, Yc, Cc, Sc)
        W[:, cols] = Wc + t * d
        z[:, cols] = zc + t * zd
        n_iter[cols] += 1
    return W, n_iter, n_cg


def _pcg(Z32, act32, C32, b, diag, max_iter: int, eta: float = 0.1):
    """Lock-step preconditioned CG for K independent systems; ||r_k|| <= eta ||b_k|| each."""
    x = torch.zeros_like(b)
    r = b.clone()
    stop = eta * b.norm(dim=0)
    zr = r / diag
    p = zr.clone()
    rz = (r * zr).sum(0)
    on = torch.ones(b.shape[1], dtype=torch.bool, device=b.device)
    it = 0
    while it < max_iter:
        it += 1
        idx = on.nonzero().squeeze(1)
        pa = p[:, idx]
        Hp = pa + 2.0 * C32[idx] * (Z32.T @ (act32[:, idx] * (Z32 @ pa)))
        alpha = rz[idx] / (pa * Hp).sum(0)
        x[:, idx] += alpha * pa
        r[:, idx] -= alpha * Hp
        on[idx] = r[:, idx].norm(dim=0) > stop[idx]
        if not bool(on.any()):
            break
        zr = r / diag
        rz_new = (r * zr).sum(0)
        p = torch.where(on, zr + (rz_new / rz) * p, p)
        rz = torch.where(on, rz_new, rz)
    return x, it


def _armijo(f0, gd, W, d, z, zd, Y, C, S, c1: float = 0.01, max_halvings: int = 30):
    """Per-column backtracking from t = 1 (liblinear's rule); each trial costs O(n K)."""
    ww, wd, dd = W.square().sum(0), (W * d).sum(0), d.square().sum(0)
    t = torch.ones_like(f0)
    todo = torch.ones_like(f0, dtype=torch.bool)
    for _ in range(max_halvings):
        m = (1.0 - Y * (z + t * zd)).clamp_min(0).square()
        if S is not None:
            m = m * S
        f = 0.5 * (ww + 2 * t * wd + t * t * dd) + C * m.sum(0)
        todo = todo & (f > f0 + c1 * t * gd)
        if not bool(todo.any()):
            break
        t = torch.where(todo, 0.5 * t, t)
    return t


class LinearSVM:
    """OvR squared-hinge linear SVM, same objective and stop rule as sklearn's LinearSVC."""

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 1000,
                 device: str | torch.device = "cpu"):
        if C <= 0:
            raise ValueError(f"C must be positive, got {C}")
        self.C, self.tol, self.max_iter, self.device = float(C), float(tol), max_iter, device

    def fit(self, X, y, init=None, _rotated: _Rotated | None = None):
        """Fit on (n, d) features and (n,) labels; ``init=(coef, intercept)`` warm-starts."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError("LinearSVM needs at least two classes")
        R = _rotated or _Rotated(X, self.device)
        Y = _ovr_targets(np.searchsorted(self.classes_, y), len(self.classes_))
        K = Y.shape[1]
        W0 = torch.zeros(X.shape[1] + 1, K, dtype=torch.float64, device=self.device)
        if init is not None:
            W0 = torch.as_tensor(np.vstack([np.atleast_2d(init[0]).T,
                                            np.reshape(init[1], (1, -1))]),
                                 dtype=torch.float64, device=self.device)
            W0 = R.V.T @ W0
        pos = Y.clip(0).sum(0)
        rtol = self.tol * np.maximum(np.minimum(pos, len(y) - pos), 1) / len(y)
        W, n_iter, self.n_cg_ = _newton(
            R, torch.as_tensor(Y, device=self.device),
            torch.full((K,), self.C, dtype=torch.float64, device=self.device), W0, None,
            torch.as_tensor(rtol, device=self.device), self.max_iter)
        Wa = (R.V @ W).cpu().numpy()
        self.coef_, self.intercept_ = Wa[:-1].T.copy(), Wa[-1].copy()
        self.n_iter_ = int(n_iter.max())
        return self

    def decision_function(self, X):
        """(n, K) OvR scores; (n,) for a binary problem, as sklearn."""
        s = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s

    def predict(self, X):
        s = self.decision_function(X)
        idx = (s > 0).astype(int) if s.ndim == 1 else s.argmax(axis=1)
        return self.classes_[idx]

    def score(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def objective(self, X, y) -> float:
        """Primal objective summed over classes at the fitted (coef_, intercept_)."""
        return svm_objective(X, y, self.coef_, self.intercept_, self.C, self.classes_)


def select_C(X, y, Cs=DEFAULT_CS, folds: int = 5, seed: int = 0, tol: float = 1e-4,
             max_iter: int = 1000, device="cpu"):
    """Pick C by stratified k-fold CV accuracy on the training split only.

    All folds are solved together as one batch of columns (fold f masks out its held-out
    rows), warm-started from the previous, smaller C. Ties go to the smaller C.
    Returns ``(best_C, {C: mean_cv_accuracy})``.

    The rotation is computed on all training rows: it is a change of basis only, so each
    fold's solution is identical to fitting that fold alone.
    """
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes = np.unique(y)
    y_idx = np.searchsorted(classes, y)
    Y1 = _ovr_targets(y_idx, len(classes))
    n, K = Y1.shape
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y_idx))
    S = np.zeros((n, folds * K))
    rtol = np.zeros(folds * K)
    for f, (tr, _) in enumerate(splits):
        S[tr, f * K:(f + 1) * K] = 1.0
        pos = (Y1[tr] > 0).sum(0)
        rtol[f * K:(f + 1) * K] = tol * np.maximum(np.minimum(pos, len(tr) - pos), 1) / len(tr)
    R = _Rotated(X, device)
    Yt = torch.as_tensor(np.tile(Y1, folds), device=device)
    St = torch.as_tensor(S, device=device)
    rt = torch.as_tensor(rtol, device=device)
    W = torch.zeros(R.Z.shape[1], folds * K, dtype=torch.float64, device=device)
    scores = {}
    for C in sorted(float(c) for c in Cs):
        Ct = torch.full((folds * K,), C, dtype=torch.float64, device=device)
        W, _, _ = _newton(R, Yt, Ct, W, St, rt, max_iter)
        accs = []
        for f, (_, te) in enumerate(splits):
            s = (R.Z[te] @ W[:, f * K:(f + 1) * K]).cpu().numpy()
            pred = (s[:, 0] > 0).astype(int) if K == 1 else s.argmax(1)
            accs.append(np.mean(pred == y_idx[te]))
        scores[C] = float(np.mean(accs))
    best = max(scores.values())
    return min(c for c, a in scores.items() if a == best), scores


def linear_svm_protocol(train_X, train_y, test_X, test_y, Cs=None, folds: int = 5,
                        seed: int = 0, device="cpu") -> dict:
    """Standardise with train stats, choose C by CV on train, fit, report test accuracy."""
    Xtr, Xte = standardize(train_X, test_X)
    t0 = time.perf_counter()
    C, cv = select_C(Xtr, train_y, DEFAULT_CS if Cs is None else Cs, folds, seed,
                     device=device)
    t1 = time.perf_counter()
    svm = LinearSVM(C=C, device=device).fit(Xtr, train_y)
    t2 = time.perf_counter()
    return {
        "accuracy": svm.score(Xte, test_y),
        "train_accuracy": svm.score(Xtr, train_y),
        "C": C,
        "cv_accuracy": cv,
        "n_train": len(Xtr),
        "n_test": len(Xte),
        "n_iter": svm.n_iter_,
        "select_seconds": t1 - t0,
        "fit_seconds": t2 - t1,
    }
