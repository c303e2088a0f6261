"""ParAE figures (paper Fig. 3): the implicit GMM's 1-σ ellipsoids, and the distance from one
point in 3-D versus in learned point-feature space."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pointssl.errors import PointSSLError
from pointssl.losses.gmm import fit_gmm
from pointssl.utils import atomic_path, load_checkpoint

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless; never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _component_colors(j: int) -> np.ndarray:
    plt = _pyplot()
    base = np.concatenate([plt.get_cmap("tab20")(np.arange(20)),
                           plt.get_cmap("tab20b")(np.arange(20))])
    return base[np.arange(j) % len(base)]


def _axes3d(fig, pos, pts, title):
    ax = fig.add_subplot(*pos, projection="3d")
    # equal scale on all axes with a box fitted to the data (no empty cube around flat shapes)
    c, half = (pts.max(0) + pts.min(0)) / 2, (pts.max(0) - pts.min(0)) / 2
    half = np.maximum(half, 0.05 * half.max() + 1e-9) * 1.02
    for setter, ci, hi in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), c, half, strict=True):
        setter(ci - hi, ci + hi)
    ax.set_box_aspect(tuple(half), zoom=1.0)
    ax.view_init(elev=20, azim=-60)
    ax.computed_zorder = False  # draw in call order so p0's marker stays on top
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return ax


def _ellipsoid(mu: np.ndarray, sigma: np.ndarray, res: int = 14):
    """Surface of {x : (x-μ)ᵀ Σ⁻¹ (x-μ) = 1} as three (res, res) grids."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, res), np.linspace(0, np.pi, res))
    sphere = np.stack([np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v)], -1)
    w, vecs = np.linalg.eigh(sigma)
    xyz = sphere @ (vecs * np.sqrt(np.clip(w, 0, None))).T + mu
    return xyz[..., 0], xyz[..., 1], xyz[..., 2]


def _unpack(model, head):
    """(backbone, head or None, eps) from a ParAE method or a (backbone, head) pair."""
    if hasattr(model, "head") and hasattr(model, "backbone"):
        return model.backbone, model.head, float(model.cfg.eps)
    return model, head, 1e-4


@torch.no_grad()
def viz_gmm(backbone_or_method, head_or_none, points: np.ndarray, out_dir, name: str = "shape",
            point_index: int | None = None, seed: int = 0, eps: float | None = None,
            note: str | None = None, max_points: int | None = 4096) -> list[Path]:
    """Fig. 3 of the ParAE paper for one shape; returns the PNG paths written.

    - ``{name}_gmm.png`` (only with a head): points coloured by their most likely component
      and each component's 1-σ ellipsoid of Θ = ξ(P, S) (Fig. 3 top).
    - ``{name}_featdist.png``: points coloured by 3-D distance and by point-feature distance
      from one point p0 (Fig. 3 bottom). Features are the head's last hidden layer when a head
      is given (they see the global context, as the paper's f_ψ does), else the backbone's
      per-point features.

    ``points`` (N, 3) are fed as they are (normalise them like the training data); clouds
    larger than ``max_points`` are randomly subsampled (seeded) first, since DGCNN's kNN is
    O(N²) in memory. p0 is ``point_index`` (into the points used) or a seeded random point.
    Networks run in eval mode and are restored.
    """
    backbone, head, default_eps = _unpack(backbone_or_method, head_or_none)
    eps = default_eps if eps is None else eps
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) < 2 or not np.isfinite(pts).all():
        raise PointSSLError(f"viz gmm needs a finite (N, 3) cloud with N >= 2, got {pts.shape}")
    pts = np.ascontiguousarray(pts[:, :3])
    rng = np.random.default_rng(seed)
    if max_points is not None and len(pts) > max_points:
        pts = pts[np.sort(rng.choice(len(pts), max_points, replace=False))]
    i0 = int(rng.integers(len(pts))) if point_index is None else int(point_index)
    if not 0 <= i0 < len(pts):
        raise PointSSLError(f"point_index {i0} out of range for {len(pts)} points")
    out_dir = Path(out_dir)
    plt = _pyplot()
    modules = [m for m in (backbone, head) if m is not None]
    modes = [m.training for m in modules]
    device = next(backbone.parameters()).device
    try:
        for m in modules:
            m.eval()
        p = torch.from_numpy(pts).to(device)[None]
        out = backbone(p)
        feats = out.point_feat
        logits = None
        if head is not None:
            feats = head.hidden(out.point_feat, out.global_feat, offset=out.offset)
            logits = head.out(feats)
    finally:
        for m, t in zip(modules, modes, strict=True):
            m.train(t)
    paths = []
    if logits is not None:
        paths.append(_plot_gmm(plt, pts, p, logits, eps, out_dir / f"{name}_gmm.png"))
    f = feats[0].float().cpu().numpy()
    paths.append(_plot_featdist(plt, pts, f, i0, out_dir / f"{name}_featdist.png",
                                "head" if head is not None else "backbone", note))
    return paths


def _plot_gmm(plt, pts, p, logits, eps, path):
    gmm = fit_gmm(p, logits, eps)
    pi = gmm.pi[0].double().cpu().numpy()
    mu, sigma = gmm.mu[0].double().cpu().numpy(), gmm.sigma[0].double().cpu().numpy()
    j = len(pi)
    assign = logits[0].argmax(-1).cpu().numpy()
    colors = _component_colors(j)
    # a component that holds less than half a point's mass is drawn as nothing
    shown = np.flatnonzero(pi * len(pts) >= 0.5)
    fig = plt.figure(figsize=(10, 5))
    ax = _axes3d(fig, (1, 2, 1), pts, f"points by most likely component "
                 f"({len(np.unique(assign))}/{j} used)")
    ax.scatter(*pts.T, c=colors[assign], s=4, depthshade=False)
    ax = _axes3d(fig, (1, 2, 2), pts, f"1-σ ellipsoids of Θ = ξ(P, S) "
                 f"({len(shown)}/{j} with mass ≥ ½ point)")
    ax.scatter(*pts.T, c="0.6", s=1, alpha=0.5, depthshade=False)
    for k in shown:
        ax.plot_surface(*_ellipsoid(mu[k], sigma[k]), color=colors[k], alpha=0.45,
                        linewidth=0, shade=True)
    return _save_close(plt, fig, path)


def _plot_featdist(plt, pts, feats, i0, path, source, note):
    d3 = np.linalg.norm(pts - pts[i0], axis=1)
    df = np.linalg.norm(feats - feats[i0], axis=1)
    fig = plt.figure(figsize=(10, 5))
    for k, (d, title) in enumerate([(d3, "3-D distance from p0"),
                                    (df, f"point-feature distance from p0 ({source})")]):
        ax = _axes3d(fig, (1, 2, k + 1), pts, title)
        ax.scatter(*pts.T, c=d, cmap="viridis", s=4, depthshade=False)
        ax.scatter(*pts[i0], c="red", s=260, marker="*", edgecolors="black", linewidths=0.8,
                   depthshade=False)
    if note:
        fig.suptitle(note, fontsize=9, y=0.99)
    return _save_close(plt, fig, path, top=0.88 if note else 0.93)


def _save_close(plt, fig, path, top=0.93):
    fig.subplots_adjust(left=0, right=1, bottom=0, top=top, wspace=0)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def load_parae(ckpt_path, map_location="cpu"):
    """The ParAE method (head included) of a training checkpoint (``checkpoints/last.pt``)."""
    from pointssl.methods import load_method
    from pointssl.methods.parae import ParAE

    method = load_method(ckpt_path, map_location=map_location)
    if not isinstance(method, ParAE):
        raise PointSSLError(f"{ckpt_path}: a {method.name} checkpoint, not ParAE's (the GMM "
                            "figure needs ParAE's head)")
    return method


def viz_gmm_from_checkpoint(ckpt_path, points: np.ndarray, out_dir, name: str | None = None,
                            **kwargs) -> list[Path]:
    """``viz_gmm`` from a file: a ParAE training checkpoint (``checkpoints/last.pt``: both
    figures) or an exported ``backbone.pt`` (no head, so no Θ: only the feature-distance
    figure, and a warning says the ellipsoids were skipped). kwargs go to ``viz_gmm``."""
    from pointssl.backbones import FORMAT, load_backbone

    ckpt_path = Path(ckpt_path)
    name = name or ckpt_path.stem
    if load_checkpoint(ckpt_path).get("format") == FORMAT:
        backbone, _ = load_backbone(ckpt_path)
        msg = (f"{ckpt_path.name} holds only the backbone (no ParAE head, so no GMM): "
               "ellipsoids skipped; use the run's checkpoints/last.pt for them")
        log.warning(msg)
        kwargs.setdefault("note", msg)
        return viz_gmm(backbone, None, points, out_dir, name, **kwargs)
    return viz_gmm(load_parae(ckpt_path), None, points, out_dir, name, **kwargs)
