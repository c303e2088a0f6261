"""Scan simulation (generator v3): what a depth sensor would return of a sampled surface.

From a dense visible-surface sample (``sampling.sample_surface``) of one shape, in order:

1. **view**: a camera direction ``d`` (azimuth uniform, elevation in ``ELEVATION``). With
   probability ``1 - FULL_VIEW`` only the surface that camera sees is kept: back faces
   (``n . d <= 0``) are culled and a z-buffer (orthographic, ``ZBUF_PIXELS`` across the
   object, each pixel compared with its 3x3 neighbourhood) drops occluded samples. Else the
   whole visible surface stays (a fused multi-view scan).
2. **occluder**: with probability ``OCCLUDER`` a random half-space removes
   ``OCCLUDER_CUT`` of what is left (a frustum edge or a nearer object).
3. **density**: ``N`` points drawn without replacement (Gumbel top-k) with weight
   ``|n . d| ** GRAZING * exp(beta * p . u)``: grazing surfaces are sparse and a random
   gradient ``u`` makes one side denser, as range falls off. Duplicates fill a shortfall only.
4. **centre, unit sphere**, then **jitter** (Gaussian, sigma per shape in ``JITTER``) and
   **outliers**: a fraction (per shape in ``OUTLIERS``) of points thrown along the view ray
   by up to ``FLYING`` (flying pixels at depth edges), then centred and scaled again.

Labels: every point, outliers included, keeps the part id and normal of the surface sample
it was made from (a flying pixel is a misplaced measurement of that part); normals are the
true face normals, never re-estimated from the noisy points.
"""

from __future__ import annotations

import numpy as np

from pointssl.data.synthetic.sampling import normalize_cloud

FULL_VIEW = 0.25  # share of shapes kept whole (fused scans); the rest are single views
ELEVATION = (-0.15, 0.9)  # camera elevation, radians above the horizon (mostly from above)
ZBUF_PIXELS = 40  # z-buffer resolution across the object's largest extent on the image
ZBUF_TOL = 0.03  # depth tolerance, in object extents: samples this close to the front pass
OCCLUDER = 0.2
OCCLUDER_CUT = (0.1, 0.3)
GRAZING = 1.0
DENSITY_BETA = (0.0, 2.5)
JITTER = (0.003, 0.015)  # in unit-sphere units, the frame every cloud is delivered in
OUTLIERS = (0.0, 0.02)
FLYING = 0.15
OVERSAMPLE = 5  # dense samples per delivered point: enough left after a single view


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def scan_settings() -> dict:
    """The simulator's constants, for the cache key."""
    names = ("FULL_VIEW", "ELEVATION", "ZBUF_PIXELS", "ZBUF_TOL", "OCCLUDER", "OCCLUDER_CUT",
             "GRAZING", "DENSITY_BETA", "JITTER", "OUTLIERS", "FLYING", "OVERSAMPLE")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in
            ((k, globals()[k]) for k in names)}


def visible_from(points: np.ndarray, normals: np.ndarray, d: np.ndarray,
                 pixels: int = ZBUF_PIXELS, tol: float = ZBUF_TOL) -> np.ndarray:
    """Mask of the samples a camera looking along ``-d`` sees: front-facing and within
    ``tol`` (in object extents) of the nearest sample in their own or a neighbouring pixel."""
    front = normals @ d > 0
    e1 = _unit(np.cross(d, [0.0, 0.0, 1.0]) if abs(d[2]) < 0.99 else np.cross(d, [1.0, 0, 0]))
    e2 = np.cross(d, e1)
    uv = points @ np.stack([e1, e2], 1)
    ext = float(np.ptp(uv, axis=0).max()) or 1.0  # the object's extent on the image
    ij = np.minimum(np.floor((uv - uv.min(0)) / ext * pixels), pixels).astype(np.int64) + 1
    depth = points @ d  # larger = nearer the camera
    zbuf = np.full((pixels + 3, pixels + 3), -np.inf)
    np.maximum.at(zbuf, (ij[front, 0], ij[front, 1]), depth[front])
    near = zbuf.copy()  # 3x3 max: a sample is hidden by a nearer one in the next pixel too
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            near[1:-1, 1:-1] = np.maximum(near[1:-1, 1:-1], zbuf[1 + di:pixels + 2 + di,
                                                                  1 + dj:pixels + 2 + dj])
    return front & (depth >= near[ij[:, 0], ij[:, 1]] - tol * ext)


def simulate_scan(points: np.ndarray, normals: np.ndarray, parts: np.ndarray,
                  num_points: int, rng: np.random.Generator):
    """One scan of a dense surface sample (mesh frame, float64): ``(points (N, 3), normals
    (N, 3), parts (N,), info)``, points centred in the unit sphere. ``info`` has the view
    direction, whether the view was partial, the indices of the outliers and the map
    ``cloud = (mesh - centre) / scale`` (exact but for jitter and outliers)."""
    p = np.asarray(points, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(*ELEVATION)
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    partial = rng.random() >= FULL_VIEW
    keep = visible_from(p, n, d) if partial else np.ones(len(p), dtype=bool)
    if rng.random() < OCCLUDER:
        s = _unit(rng.normal(size=3))
        proj = p @ s
        cut = np.quantile(proj[keep], rng.uniform(*OCCLUDER_CUT)) if keep.any() else -np.inf
        keep &= proj >= cut
    idx = np.flatnonzero(keep)
    if len(idx) == 0:  # degenerate view: fall back to everything the sampler gave
        idx = np.arange(len(p))
    u, beta = _unit(rng.normal(size=3)), rng.uniform(*DENSITY_BETA)
    q, _, _ = normalize_cloud(p[idx])
    w = np.maximum(np.abs(n[idx] @ d), 1e-3) ** GRAZING * np.exp(beta * (q @ u))
    keys = np.log(w) + rng.gumbel(size=len(idx))
    pick = idx[np.argsort(-keys, kind="stable")[:num_points]]
    if len(pick) < num_points:  # too few visible samples: duplicates fill the shortfall
        pick = np.concatenate([pick, rng.choice(pick, num_points - len(pick))])
    out, c1, s1 = normalize_cloud(p[pick])
    out = out + rng.normal(size=out.shape) * rng.uniform(*JITTER)
    k = int(round(rng.uniform(*OUTLIERS) * num_points))
    flying = rng.choice(num_points, k, replace=False)
    out[flying] += rng.uniform(-FLYING, FLYING, (k, 1)) * d
    out, c2, s2 = normalize_cloud(out)
    # cloud = (mesh point - centre) / scale, up to the noise: the map SyntheticMesh needs
    info = {"view": d, "partial": bool(partial), "outliers": np.sort(flying),
            "centre": c1 + s1 * c2, "scale": s1 * s2}
    return out, n[pick], np.asarray(parts)[pick], info
