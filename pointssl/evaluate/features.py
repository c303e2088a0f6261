"""Frozen-backbone features: ``extract_features`` for the protocols, ``embed`` for users.

Clouds are never cut to another cloud's size: a chunk whose clouds share one size goes
through the backbone as a dense (B, N, C) tensor, any other chunk as a packed PointBatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from pointssl.backbones.base import Backbone
from pointssl.data.views import subsample_indices
from pointssl.errors import PointSSLError
from pointssl.structures import PointBatch
from pointssl.utils import resolve_device


def _batch(clouds: list[np.ndarray], device):
    """One size: a dense (B, N, C) tensor (the fast path, same as ever); else packed."""
    if len({len(c) for c in clouds}) == 1:
        return torch.from_numpy(np.stack(clouds)).to(device)
    return PointBatch.from_list(clouds).to(device)


def global_only(backbone: Backbone):
    """A context in which the backbone may skip its per-point head (``global_only``: the
    octree HRNet's), for callers that read the global feature only; else a no-op."""
    only = getattr(backbone, "global_only", None)
    return only() if only is not None else contextlib.nullcontext()


def global_feat(backbone: Backbone, x) -> torch.Tensor:
    """``backbone(x).global_feat`` (within :func:`global_only`)."""
    with global_only(backbone):
        return backbone(x).global_feat


@torch.inference_mode()
def extract_features(backbone: Backbone, data, *, num_points: int | None = None,
                     batch_size: int = 32, device=None, seed: int = 0,
                     progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Global features (n, C) float32 and labels (n,) of a frozen backbone in eval mode.

    ``data``: a dataset with ``points`` (list of (N_i, 3) arrays), ``labels`` and optional
    ``normals`` (used when the backbone takes them). ``num_points=None`` uses every point of
    every cloud, whatever the sizes; otherwise each cloud is subsampled to ``num_points``
    with :func:`subsample_indices` and a fixed seed, so features are reproducible.
    """
    device = resolve_device(device)
    rng = np.random.default_rng(seed)
    normals = getattr(data, "normals", None) if backbone.in_dim > 3 else None
    was_training = backbone.training
    backbone.eval().to(device)
    feats = []
    try:
        for start in range(0, len(data), batch_size):
            chunk = []
            for i in range(start, min(start + batch_size, len(data))):
                p = data.points[i]
                idx = subsample_indices(len(p), num_points, rng)
                c = p[idx, :3] if normals is None else \
                    np.concatenate([p[idx, :3], normals[i][idx]], axis=1)
                chunk.append(c.astype(np.float32, copy=False))
            feats.append(global_feat(backbone, _batch(chunk, device)).float().cpu().numpy())
            if progress is not None:
                progress(len(chunk))
    finally:
        backbone.train(was_training)
    return np.concatenate(feats), np.asarray(data.labels).copy()


def split_features(backbone: Backbone, train, test, *, seed: int = 0, **options):
    """``(x_train, y_train, x_test, y_test)``: :func:`extract_features` of both splits with the
    protocols' feature seeds (``seed`` for train, ``seed + 1`` for test)."""
    xtr, ytr = extract_features(backbone, train, seed=seed, **options)
    xte, yte = extract_features(backbone, test, seed=seed + 1, **options)
    return xtr, ytr, xte, yte


@torch.inference_mode()
def embed(backbone: Backbone, clouds: Sequence[np.ndarray], batch_size: int = 32,
          device=None) -> dict:
    """Features of numpy clouds ``(N_i, 3+C)`` of any sizes (columns past xyz are per-point
    features; the backbone drops those it does not take) from a frozen backbone (eval mode):
    ``{"global": (B, C) float32, "points": [(N_i, Cp) float32 per cloud]}``."""
    clouds = [np.asarray(c, dtype=np.float32) for c in clouds]
    for i, c in enumerate(clouds):
        if c.ndim != 2 or c.shape[1] < 3 or len(c) == 0:
            raise PointSSLError(f"cloud {i}: expected a non-empty (N, 3+) array, got shape "
                                f"{c.shape}")
    device = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    glob, points = [], []
    try:
        for start in range(0, len(clouds), batch_size):
            out = backbone(PointBatch.from_list(clouds[start:start + batch_size]).to(device))
            glob.append(out.global_feat.float().cpu().numpy())
            points += [p.float().cpu().numpy() for p in out.per_cloud()]
    finally:
        backbone.train(was_training)
    dim = getattr(backbone, "global_dim", 0)
    return {"global": np.concatenate(glob) if glob else np.zeros((0, dim), np.float32),
            "points": points}
