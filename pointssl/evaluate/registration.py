"""Shape registration with per-point features (MID-Net, Sec. 4.5, Fig. 2).

Each test shape (unit sphere) is paired with a copy under a random rigid transform: rotation
angles about x, y and z each in [0, 360) degrees, translation per axis in [-0.25, 0.25]. The
backbone's per-point features of both clouds give correspondences (mutual nearest neighbours
in feature space), RANSAC estimates a rigid transform from them and point-to-point ICP refines
it. The metric is the symmetric Hausdorff distance between the registered source and the
target; the output is the success rate (Hausdorff <= d) over a range of d for

- ``features``: the backbone's features + RANSAC + ICP,
- ``icp``: plain ICP from the identity (the lower bound),
- ``ground_truth``: the true transform (the upper bound; zero when both clouds hold the same
  points, above zero with ``num_points``, which draws each cloud's points independently).

Each cloud is centred at its centroid before the backbone sees it (the features of a rigid
copy should not depend on where it sits; the transform is estimated on the real coordinates).
numpy + scipy only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from pointssl.data.views.transforms import normalize_unit_sphere
from pointssl.errors import PointSSLError
from pointssl.structures import PointBatch

__all__ = ["euler_rotation", "random_rigid", "kabsch", "mutual_nearest", "ransac_rigid", "icp",
           "hausdorff", "register", "success_curve", "registration_eval", "write_curve"]

METHODS = ("features", "icp", "ground_truth")


def euler_rotation(angles) -> np.ndarray:
    """R = Rz(c) Ry(b) Rx(a) for angles (a, b, c) in radians."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_rigid(rng: np.random.Generator, max_degrees: float = 360.0,
                 max_translation: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(R, t): angles per axis in [0, max_degrees), t per axis in [-max_t, max_t] (Sec. 4.5)."""
    r = euler_rotation(np.deg2rad(rng.uniform(0.0, max_degrees, size=3)))
    return r, rng.uniform(-max_translation, max_translation, size=3)


def kabsch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rigid (R, t) minimising sum ||R a_i + t - b_i||^2. Batched: a, b (..., M, 3)."""
    ca, cb = a.mean(-2, keepdims=True), b.mean(-2, keepdims=True)
    h = np.swapaxes(a - ca, -1, -2) @ (b - cb)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    fix = np.ones(h.shape[:-2] + (3,))
    fix[..., 2] = d
    r = np.swapaxes(vt, -1, -2) @ (fix[..., :, None] * np.swapaxes(u, -1, -2))
    t = cb[..., 0, :] - (r @ ca[..., 0, :, None])[..., 0]
    return r, t


def mutual_nearest(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """(M, 2) index pairs (i, j): b_j is a_i's nearest feature and a_i is b_j's."""
    ta, tb = cKDTree(fb), cKDTree(fa)
    _, ab = ta.query(fa)
    _, ba = tb.query(fb)
    i = np.arange(len(fa))
    keep = ba[ab] == i
    return np.stack([i[keep], ab[keep]], axis=1)


def ransac_rigid(src: np.ndarray, dst: np.ndarray, pairs: np.ndarray,
                 rng: np.random.Generator, iters: int = 2000,
                 threshold: float = 0.05) -> tuple[np.ndarray, np.ndarray, int]:
    """(R, t, inliers): the 3-pair hypothesis with the most pairs within ``threshold``,
    refitted on its inliers. Fewer than 3 pairs: the identity."""
    if len(pairs) < 3:
        return np.eye(3), np.zeros(3), 0
    a, b = src[pairs[:, 0]], dst[pairs[:, 1]]
    best_n, best = -1, (np.eye(3), np.zeros(3))
    for start in range(0, iters, 500):  # hypotheses in chunks: bounded memory
        n = min(500, iters - start)
        pick = np.stack([rng.choice(len(pairs), 3, replace=False) for _ in range(n)])
        r, t = kabsch(a[pick], b[pick])
        err = np.linalg.norm(np.einsum("hij,mj->hmi", r, a) + t[:, None] - b[None], axis=-1)
        counts = (err < threshold).sum(1)
        h = int(counts.argmax())
        if counts[h] > best_n:
            best_n, best = int(counts[h]), (r[h], t[h])
    r, t = best
    inl = np.linalg.norm(a @ r.T + t - b, axis=1) < threshold
    if inl.sum() >= 3:
        r, t = kabsch(a[inl], b[inl])
    return r, t, int(inl.sum())


def icp(src: np.ndarray, dst: np.ndarray, r: np.ndarray | None = None,
        t: np.ndarray | None = None, iters: int = 50, tol: float = 1e-7
        ) -> tuple[np.ndarray, np.ndarray]:
    """Point-to-point ICP refining (R, t) (identity when not given) so R src + t ~ dst."""
    r = np.eye(3) if r is None else np.asarray(r, dtype=np.float64)
    t = np.zeros(3) if t is None else np.asarray(t, dtype=np.float64)
    tree = cKDTree(dst)
    prev = np.inf
    for _ in range(int(iters)):
        moved = src @ r.T + t
        dist, j = tree.query(moved)
        err = float(np.mean(dist ** 2))
        r, t = kabsch(src, dst[j])
        if prev - err < tol:
            break
        prev = err
    return r, t


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two point sets."""
    return float(max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max()))


def register(src: np.ndarray, dst: np.ndarray, f_src: np.ndarray, f_dst: np.ndarray, *,
             rng: np.random.Generator, ransac_iters: int = 2000,
             ransac_threshold: float = 0.05, icp_iters: int = 50) -> dict:
    """Features -> mutual NN -> RANSAC -> ICP: {"R", "t", "pairs", "inliers"}."""
    fa = f_src / np.maximum(np.linalg.norm(f_src, axis=1, keepdims=True), 1e-12)
    fb = f_dst / np.maximum(np.linalg.norm(f_dst, axis=1, keepdims=True), 1e-12)
    pairs = mutual_nearest(fa, fb)
    r, t, inl = ransac_rigid(src, dst, pairs, rng, ransac_iters, ransac_threshold)
    r, t = icp(src, dst, r, t, icp_iters)
    return {"R": r, "t": t, "pairs": int(len(pairs)), "inliers": inl}


def success_curve(dists: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of pairs with Hausdorff distance <= each threshold."""
    d = np.asarray(dists, dtype=np.float64)
    return (d[None, :] <= np.asarray(thresholds)[:, None]).mean(1)


@torch.no_grad()
def _point_features(backbone, clouds: list[np.ndarray], device, batch_size: int
                    ) -> list[np.ndarray]:
    out = []
    for s in range(0, len(clouds), batch_size):
        chunk = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
                 for c in clouds[s:s + batch_size]]
        res = backbone(PointBatch.from_list(chunk).to(device))
        out += [p.float().cpu().numpy() for p in res.per_cloud()]
    return out


def registration_eval(backbone, data, *, num_shapes: int = 200, seed: int = 0,
                      num_points: int | None = None, thresholds=None, batch_size: int = 16,
                      ransac_iters: int = 2000, ransac_threshold: float = 0.05,
                      icp_iters: int = 50, device=None, out_dir=None, progress=None) -> dict:
    """The registration protocol on ``num_shapes`` seeded test shapes of ``data`` (a dataset
    with ``points`` and optional ``normals``). Returns the success rates at 0.05 and 0.1, the
    curve and per-method median Hausdorff distances; with ``out_dir`` also writes
    ``registration_curve.csv`` / ``.png`` there."""
    from pointssl.utils import resolve_device

    if not getattr(backbone, "point_dim", 0):
        raise PointSSLError(f"registration needs per-point features; {backbone.name!r} has none")
    device = resolve_device(device)
    rng = np.random.default_rng(seed)
    n = min(int(num_shapes), len(data))
    if n < 1:
        raise PointSSLError("registration: no test shapes")
    pick = np.sort(rng.permutation(len(data))[:n])
    thresholds = np.round(np.linspace(0.0, 0.5, 51), 4) if thresholds is None \
        else np.asarray(thresholds, dtype=np.float64)
    normals = getattr(data, "normals", None) if getattr(backbone, "in_dim", 3) > 3 else None
    srcs, dsts, gts, ins_s, ins_d = [], [], [], [], []
    for i in pick:
        p = np.asarray(data.points[i], dtype=np.float64)[:, :3]
        nrm = None if normals is None else np.asarray(normals[i], dtype=np.float64)[:, :3]
        p = normalize_unit_sphere(p.astype(np.float32)).astype(np.float64)
        ia = ib = np.arange(len(p))
        if num_points:
            ia = rng.choice(len(p), min(num_points, len(p)), replace=False)
            ib = rng.choice(len(p), min(num_points, len(p)), replace=False)
        r, t = random_rigid(rng)
        a, b = p[ia], p[ib] @ r.T + t
        srcs.append(a)
        dsts.append(b)
        gts.append((r, t))
        fa_in = a - a.mean(0)  # the backbone sees centred copies
        fb_in = b - b.mean(0)
        if nrm is not None:
            fa_in = np.concatenate([fa_in, nrm[ia]], axis=1)
            fb_in = np.concatenate([fb_in, nrm[ib] @ r.T], axis=1)
        ins_s.append(fa_in)
        ins_d.append(fb_in)
    was_training = backbone.training
    backbone.eval().to(device)
    try:
        feats_s = _point_features(backbone, ins_s, device, batch_size)
        feats_d = _point_features(backbone, ins_d, device, batch_size)
    finally:
        backbone.train(was_training)
    dists = {m: [] for m in METHODS}
    pairs, inliers = [], []
    for k in range(n):
        a, b = srcs[k], dsts[k]
        reg = register(a, b, feats_s[k], feats_d[k], rng=rng, ransac_iters=ransac_iters,
                       ransac_threshold=ransac_threshold, icp_iters=icp_iters)
        pairs.append(reg["pairs"])
        inliers.append(reg["inliers"])
        dists["features"].append(hausdorff(a @ reg["R"].T + reg["t"], b))
        r0, t0 = icp(a, b, iters=icp_iters)
        dists["icp"].append(hausdorff(a @ r0.T + t0, b))
        r, t = gts[k]
        dists["ground_truth"].append(hausdorff(a @ r.T + t, b))
        if progress is not None:
            progress(1)
    curves = {m: success_curve(np.asarray(v), thresholds) for m, v in dists.items()}
    res = {
        "num_shapes": n, "seed": seed, "num_points": num_points,
        "ransac_iters": ransac_iters, "ransac_threshold": ransac_threshold,
        "icp_iters": icp_iters,
        "success_at_0.05": {m: float(success_curve(np.asarray(v), [0.05])[0])
                            for m, v in dists.items()},
        "success_at_0.1": {m: float(success_curve(np.asarray(v), [0.1])[0])
                           for m, v in dists.items()},
        "median_hausdorff": {m: float(np.median(v)) for m, v in dists.items()},
        "mean_mutual_pairs": float(np.mean(pairs)), "mean_ransac_inliers": float(np.mean(inliers)),
        "curve": {"threshold": thresholds.tolist(),
                  **{m: c.tolist() for m, c in curves.items()}},
    }
    if out_dir is not None:
        res["files"] = write_curve(out_dir, thresholds, curves)
    return res


def write_curve(out_dir, thresholds: np.ndarray, curves: dict[str, np.ndarray]) -> list[str]:
    """``registration_curve.csv`` (threshold + one column per method) and ``.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "registration_curve.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hausdorff_threshold", *curves])
        for k, thr in enumerate(thresholds):
            w.writerow([f"{thr:g}", *(f"{curves[m][k]:.4f}" for m in curves)])
    files = [str(path)]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the CSV is the result
        return files
    fig, ax = plt.subplots(figsize=(5, 4))
    labels = {"features": "features + RANSAC + ICP", "icp": "ICP from identity",
              "ground_truth": "ground truth"}
    for m, c in curves.items():
        ax.plot(thresholds, c, label=labels.get(m, m))
    ax.set_xlabel("Hausdorff distance")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "registration_curve.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    files.append(str(png))
    return files
